"""The clinical audit's report: ``summary.md``, its figures and a self-contained ``index.html``.

:func:`write_report` renders a finished audit's ``summary.json`` (with ``slices.csv`` and ``validation.csv``
for the curves) into ``figures/*.png`` (:mod:`brain_audit.audit.plots`), the Markdown executive summary
(:func:`executive_summary`) and ``index.html`` (:mod:`brain_audit.audit.html`, every figure embedded). It reads
only the report folder, so ``brain-audit report`` redraws a report without the model. The first line of every
page says whether the data are synthetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from markdown.extensions.toc import slugify

from brain_audit.audit.attention_evidence import attention_markdown
from brain_audit.audit.bone_study import bone_study_markdown
from brain_audit.audit.flow import flow_stages
from brain_audit.audit.html import write_html
from brain_audit.audit.source import data_line
from brain_audit.audit.plots import (
    plot_calibration,
    plot_confusion,
    plot_decision_curve,
    plot_flow,
    plot_predictive_values,
    plot_roc,
)
from brain_audit.audit.statistics import wilson_interval
from brain_audit.audit.subgroups import MIN_PATIENTS
from brain_audit.errors import ConfigError
from brain_audit.provenance import atomic_write_text
from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["FIGURES_DIR", "attention_section", "executive_summary", "write_report"]

#: Folder of the report's figures.
FIGURES_DIR = "figures"


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _ci(pair: Sequence[float], percent: bool = True) -> str:
    lo, hi = pair
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return f"{100 * lo:.1f}-{100 * hi:.1f} %" if percent else f"{lo:.3f}-{hi:.3f}"


def _chance_warning(level: dict[str, Any]) -> list[str]:
    """A loud first line when the model does not discriminate: the rest of the report then means little."""
    lo = level.get("auc_ci95", [float("nan")])[0]
    if np.isfinite(level.get("auc", float("nan"))) and np.isfinite(lo) and lo > 0.5:
        return []
    return [
        f"**Warning: the model does not discriminate bleeding from non-bleeding patients (AUC {level.get('auc', float('nan')):.3f}, "
        "95 % interval reaching 0.5 or undefined). Sensitivity, specificity and attention findings below describe a "
        "model at chance; do not deploy it.**",
        "",
    ]


def attention_section(attention: dict[str, Any]) -> list[str]:
    """The report's "Where the model looked" section (Markdown lines) from an attention audit's summary."""
    if not attention.get("slices_profiled"):
        return []
    amap, sanity, cov = attention.get("map", {}), attention.get("sanity", {}), attention.get("coverage", {})
    cell = "" if amap.get("cell_mm") is None else f", one cell {amap['cell_mm']:.1f} mm"
    lines = ["## Where the model looked", ""]
    if not attention.get("trustworthy", False):
        lines += ["**The attention results below are not trustworthy: the maps did not pass the randomisation "
                  "check (or it did not run); they may show the image rather than the model.**", ""]
    lines += [
        f"{attention['slices_profiled']} slices explained with {amap.get('method', '?')} at `{amap.get('layer', '?')}` "
        f"({amap.get('map_cells', '?')} x {amap.get('map_cells', '?')} cells{cell}): "
        + ", ".join(f"{v['profiled']} of {v['total']} {k.replace('_', ' ')}s" for k, v in cov.items()
                    if isinstance(v, dict)) + ".",
        "",
    ]
    if sanity.get("slices"):
        steps = "; ".join(f"{r['randomised']} {r['spearman_mean']:.2f}" for r in sanity.get("steps", []))
        verdict = "maps depend on the weights" if sanity.get("trustworthy") else "maps SURVIVE randomisation"
        lines += [f"Randomisation check (Adebayo et al. 2018, {sanity['slices']} fixed slices; mean Spearman rank "
                  f"correlation with the trained maps after re-drawing each block cumulatively): {steps} -> "
                  f"{verdict} (threshold {sanity.get('max_rho', float('nan')):.2f}).", ""]
    if attention.get("evidence"):
        lines += [attention_markdown(attention["evidence"]), ""]
    return lines


def _contents(lines: list[str]) -> str:
    """A line of links to the report's sections (``index.html`` gives each heading its toc slug as id)."""
    names = [line[3:].strip() for line in lines if line.startswith("## ")]
    return "Contents: " + " · ".join(f"[{n}](#{slugify(n, '-')})" for n in names)


def _rate(r: dict[str, Any] | None, detail: bool = False) -> str:
    """``"81.2 % (63.4-92.4 %), 13/16"`` for a rate dict of :mod:`brain_audit.audit.subgroups`."""
    if not r or not r.get("n"):
        return "none"
    text = f"{_pct(r['estimate'])} ({_ci(r['ci95'])}), {r['successes']}/{r['n']}"
    if detail and r.get("patients") is not None:
        text += f" in {r['patients']} patients"
    if not r.get("estimable", True):
        text += f"; not estimable (< {MIN_PATIENTS} patients)"
    return text


def _signed(x: float, ci: Sequence[float], scale: float = 100.0, unit: str = " pts") -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    lo, hi = ci
    return f"{scale * x:+.1f}{unit} ({scale * lo:+.1f} to {scale * hi:+.1f})"


def _strata_text(sa: dict[str, Any]) -> str:
    return (f"specificity {_pct(sa['specificity_with']['estimate'])} on slices with it vs "
            f"{_pct(sa['specificity_without']['estimate'])} without (difference "
            f"{_signed(sa['specificity_difference']['difference'], sa['specificity_difference']['ci95'])}), "
            f"sensitivity {_pct(sa['sensitivity_with']['estimate'])} vs {_pct(sa['sensitivity_without']['estimate'])}")


def _shortcut_lines(summary: dict[str, Any]) -> list[str]:
    """The headline's shortcut paragraph: each shortcut found with its size, or that none was."""
    sc = summary.get("shortcuts") or {}
    found, associated, phase3 = sc.get("found") or {}, sc.get("associated") or {}, sc.get("phase3") or {}
    lines = []
    if found:
        parts = []
        for mimic, e in found.items():
            bits = []
            st = e.get("study")
            if st and st.get("added_mean_change") is not None:
                ci = st.get("added_mean_change_ci95") or [float("nan")] * 2
                clean = st.get("clean_model_mean_change")
                bits.append(f"adding it to {st.get('added_slices')} audit slices raised the bleed probability by "
                            f"{st['added_mean_change']:+.2f} ({ci[0]:+.2f} to {ci[1]:+.2f}; the clean model "
                            f"{float('nan') if clean is None else clean:+.2f}) and flipped "
                            f"{_pct(st.get('added_flip_rate'))} of calls (caught by {', '.join(st['caught_by'])})")
            if e.get("strata"):
                bits.append(_strata_text(e["strata"]))
            parts.append(f"**{mimic.replace('_', ' ')}**: " + "; ".join(bits))
        lines += ["**Shortcut found: the model takes " + ", ".join(m.replace("_", " ") for m in found)
                  + " as evidence of a bleed** (the shortcut study's intervention, against a clean model), so the "
                    "overall figures below are inflated where these objects co-occur with bleeds; the headline table "
                    "gives the results on slices without them. " + ". ".join(parts) + ".", ""]
    elif sc.get("study_ran"):
        lines += ["The shortcut study caught no shortcut (an absence of evidence at its size, not proof).", ""]
    if associated:
        lines += [("Associated with bleed calls in the audit's own strata, not tested by intervention (an association "
                   "that the slice's level in the head can confound): ")
                  + "; ".join(f"{m.replace('_', ' ')}: {_strata_text(sa)}" for m, sa in associated.items()) + ".", ""]
    if phase3:
        lines += ["Phase 3's attention audit of validation slices, beside chance (a uniform map flags none): "
                  + "; ".join(f"{k.replace('_', ' ')} on {_pct(v['rate'])} ({_ci(v['ci95'])}) of {v['n']} slices"
                              for k, v in phase3.items()) + ".", ""]
    if not (found or associated or phase3):
        lines += ["No shortcut found by the mimic strata or Phase 3's attention audit (absence of evidence, not "
                  "proof).", ""]
    return lines


def _headline_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| level | AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) | missed bleeds | false alarms |",
             "|---|---|---|---|---|---|"]
    for name in ("patient_level", "slice_level"):
        r = summary[name]
        t = r["at_threshold"]
        auc_ci = _ci(r["auc_ci95"], percent=False) if "auc_ci95" in r else "n/a"
        auc = "n/a" if not np.isfinite(r["auc"]) else f"{r['auc']:.3f}"
        lines.append(
            f"| {name.replace('_level', '')} | {auc} ({auc_ci}) | {_pct(t['sensitivity'])} ({_ci(r['sensitivity_ci95'])}) | "
            f"{_pct(t['specificity'])} ({_ci(r['specificity_ci95'])}) | {t['fn']} of {t['tp'] + t['fn']} | "
            f"{t['fp']} of {t['fp'] + t['tn']} |"
        )
    clear = (summary.get("shortcuts") or {}).get("without_shortcuts")
    if clear:
        se, sp = clear["sensitivity"], clear["specificity"]
        lines.append(f"| slices without {', '.join(m.replace('_', ' ') for m in clear['mimics'])} | not computed | "
                     f"{_pct(se['estimate'])} ({_ci(se['ci95'])}) | {_pct(sp['estimate'])} ({_ci(sp['ci95'])}) | "
                     f"{se['n'] - se['successes']} of {se['n']} | {sp['n'] - sp['successes']} of {sp['n']} |")
    methods = summary["patient_level"].get("ci_methods", {})
    slice_methods = summary["slice_level"].get("ci_methods", {})
    lines += ["", "Intervals: patients " + ", ".join(f"{k} {v}" for k, v in methods.items())
              + "; slices " + ", ".join(f"{k} {v}" for k, v in slice_methods.items()) + ".", ""]
    return lines


def _sample_size_lines(summary: dict[str, Any]) -> list[str]:
    """What this audit's size buys: the half-width of a Wilson interval at the observed rates."""
    t = summary["patient_level"]["at_threshold"]
    pos, neg = t["tp"] + t["fn"], t["fp"] + t["tn"]
    out = []
    for name, k, n in (("sensitivity", t["tp"], pos), ("specificity", t["tn"], neg)):
        if n:
            lo, hi = wilson_interval(k, n)
            out.append(f"{name} on {n} patients to within +-{50 * (hi - lo):.1f} points")
    return ["Sample size: this audit measures " + " and ".join(out)
            + " (half-width of the 95 % Wilson interval at the observed rate; a target of +-5 points needs about "
              "140 patients per class at 90 %).", ""]


def _targets_lines(summary: dict[str, Any]) -> list[str]:
    rows = summary.get("targets") or []
    if not rows:
        return []
    lines = ["## Targets", "", rows[0]["rationale"], "",
             "| level | target | on validation | achieved on the audit (95 % CI) | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = r["verdict"] + ("" if r["verdict"] != "PASS" else
                                  (", demonstrated (the whole interval reaches the target)" if r["demonstrated"]
                                   else ", not demonstrated (the interval reaches below the target)"))
        lines.append(f"| {r['level']} | sensitivity >= {_pct(r['target'])} | {_pct(r.get('on_validation'))} | "
                     f"{_pct(r['achieved'])} ({_ci(r['ci95'])}) | **{verdict}** |")
    return lines + [""]


def _prevalence_lines(summary: dict[str, Any]) -> list[str]:
    lines = ["## The prevalence trap (patient level)", "",
             "Trained on balanced cohorts, deployed where few scans bleed: what a positive call is worth. Intervals "
             "carry the sensitivity and specificity intervals through Bayes' rule (each bound from both ends).", "",
             "| deployment prevalence | PPV (95 % CI) | NPV (95 % CI) | false alarms per true bleed (95 % CI) |",
             "|---|---|---|---|"]
    for d in summary["patient_level"]["deployment"]:
        fa, fa_ci = d["false_alarms_per_true_bleed"], d.get("false_alarms_per_true_bleed_ci95", [np.nan, np.nan])
        lines.append(f"| {_pct(d['prevalence'])} | {_pct(d['ppv'])} ({_ci(d.get('ppv_ci95', [np.nan] * 2))}) | "
                     f"{_pct(d['npv'])} ({_ci(d.get('npv_ci95', [np.nan] * 2))}) | {fa:.1f} "
                     f"({fa_ci[0]:.1f}-{fa_ci[1]:.1f}) |")
    lines += ["", f"![PPV and NPV against prevalence]({FIGURES_DIR}/predictive_values.png)", ""]
    ps = summary.get("prior_shift")
    if ps:
        lines += [f"Probabilities moved to the deployment prevalence (Saerens et al. 2002) after a Platt "
                  f"recalibration of the patient score on {ps['validation_patients']} validation patients "
                  f"(bleed prevalence {_pct(ps['validation_prevalence'])}):", "",
                  "| deployment prevalence | bleed probability of a patient just at the threshold | PPV: the average "
                  "positive call (Bayes) |", "|---|---|---|"]
        for r in ps["rows"]:
            lines.append(f"| {_pct(r['prevalence'])} | {_pct(r['probability_at_threshold'])} | "
                         f"{_pct(r.get('ppv_bayes'))} |")
        lines.append("")
    return lines


def _subgroup_lines(summary: dict[str, Any]) -> list[str]:
    sg = summary.get("subgroups") or {}
    lines = ["## Subgroups", "", "Sensitivity by hemorrhage subtype (a patient or slice can hold several):", "",
             "| subtype | patients called bleed (Wilson 95 % CI) | slices called bleed (95 % CI) |", "|---|---|---|"]
    for s, e in sg.get("subtypes", {}).items():
        lines.append(f"| {s} | {_rate(e['patients'])} | {_rate(e['slices'], detail=True)} |")
    mimics = sg.get("mimics") or {}
    if mimics:
        lines += ["", "Slices with and without each mimic (planted or annotated), at the slice threshold:", "",
                  "| mimic | sensitivity with | sensitivity without | specificity with | specificity without | "
                  "specificity difference (with - without) |", "|---|---|---|---|---|---|"]
        for m, e in mimics.items():
            d = e["specificity_difference"]
            lines.append(f"| {m.replace('_', ' ')} | {_rate(e['present']['sensitivity'])} | "
                         f"{_rate(e['absent']['sensitivity'])} | {_rate(e['present']['specificity'])} | "
                         f"{_rate(e['absent']['specificity'])} | {_signed(d['difference'], d['ci95'])} |")
    else:
        lines += ["", "No mimic annotations ship with these data: no mimic subgroups."]
    return lines + [""]


def _fit_text(fit: dict[str, Any] | None, key: str, digits: int = 2) -> str:
    if not fit or not fit.get(key):
        return "n/a"
    e = fit[key]
    ci = e.get("ci95") or [np.nan, np.nan]
    return f"{e['estimate']:.{digits}f} ({ci[0]:.{digits}f} to {ci[1]:.{digits}f})"


def _calibration_lines(summary: dict[str, Any]) -> list[str]:
    cal = summary.get("calibration") or {}
    if not cal.get("as_trained"):
        return []
    lines = ["## Calibration (slices)", "",
             "Logistic recalibration fit (Cox 1958): a slope under 1 means over-confident probabilities, an "
             "intercept away from 0 a shifted base rate. Intervals: patient bootstrap.", "",
             "| | calibration slope | intercept | calibration-in-the-large | Brier score | ECE |", "|---|---|---|---|---|---|"]
    for name, label in (("as_trained", "as trained"), ("recalibrated", "recalibrated (Platt, fitted on validation)")):
        fit = cal.get(name)
        if fit:
            lines.append(f"| {label} | {_fit_text(fit, 'slope')} | {_fit_text(fit, 'intercept')} | "
                         f"{_fit_text(fit, 'calibration_in_the_large')} | {_fit_text(fit, 'brier', 3)} | "
                         f"{fit['ece']:.3f} |")
    lines += ["", f"![Reliability diagram]({FIGURES_DIR}/calibration.png)", ""]
    return lines


def _decision_lines(summary: dict[str, Any]) -> list[str]:
    if not summary.get("decision_curve"):
        return []
    return ["## Decision curve (patients)", "",
            "Net benefit of acting on a patient's bleed probability (the patient score recalibrated on validation), "
            "against treating every patient and none (Vickers & Elkin 2006): on the audit's enriched case mix, and at "
            "2 % prevalence with the probabilities moved there (Saerens et al. 2002) and the sensitivity and "
            "specificity at each threshold (`summary.json` holds every deployment prevalence).", "",
            f"![Decision curve]({FIGURES_DIR}/decision_curve.png)", "",
            f"![Decision curve at 2 %]({FIGURES_DIR}/decision_curve_2pct.png)", ""]


def _dropout_lines(summary: dict[str, Any]) -> list[str]:
    dc = summary.get("dropout_comparison")
    if not dc:
        return []
    lines = ["## Dropout choice (Phase 4)", "",
             f"Chosen dropout {dc['chosen_dropout']:g} among {', '.join(f'{c:g}' for c in dc['candidates'])}; each "
             "candidate at its own validation threshold for the target sensitivity; difference chosen - other on "
             f"the same slices, paired patient bootstrap. {dc['note'].capitalize()}.", "",
             "| other dropout | cohort | specificity difference (95 % CI) | sensitivity difference (95 % CI) | verdict |",
             "|---|---|---|---|---|"]
    for row in dc["comparisons"]:
        for cohort in ("validation", "audit"):
            e = row.get(cohort)
            if not e:
                continue
            sp, se = e["specificity"], e["sensitivity"]
            verdict = "within noise" if sp.get("within_noise") else (
                "chosen better" if sp["difference"] > 0 else "chosen worse")
            lines.append(f"| {row['other_dropout']:g} | {cohort} | {_signed(sp['difference'], sp['ci95'])} | "
                         f"{_signed(se['difference'], se['ci95'])} | {verdict} |")
    return lines + [""]


def _flow_lines(summary: dict[str, Any]) -> list[str]:
    flow = summary.get("flow")
    if not flow:
        return []
    a = flow["audit"]
    ok = "the counts add up" if flow.get("adds_up") else "**the counts do not add up: a slice was lost**"
    lost = a.get("not_audited_without_reason") or []
    return ["## Flow of patients and slices (STARD 2015)", "",
            f"Audit cohort {a['cohort_slices']} slices = {a['audited_slices']} audited + {a['skipped_by_cache']} "
            f"the cache could not use ({ok}" + (f"; lost without reason: {len(lost)}" if lost else "") + ").", "",
            f"![Flow diagram]({FIGURES_DIR}/flow.png)", "",
            f"![Confusion matrices]({FIGURES_DIR}/confusion.png)", ""]


def _gallery_lines(summary: dict[str, Any]) -> list[str]:
    gallery = summary.get("gallery") or []
    lines = ["## Error gallery", ""]
    if not gallery:
        return lines + ["No missed bleed and no false-alarm patient.", ""]
    lines += ["Every missed-bleed and false-alarm patient: the most suspicious slice in the brain, subdural and bone "
              "windows, the attention map, and the truth contour where the slice holds a lesion.", ""]
    for g in gallery:
        kind = "Missed bleed" if g["outcome"] == "false_negative" else "False alarm"
        subtypes = ", ".join(g.get("subtypes_present") or []) or "no bleed"
        lines += [f"**{kind}**, patient `{g['patient_id']}` ({subtypes}), slice `{g['image_id']}`, "
                  f"p = {g['probability']:.3f}", "", f"![{kind} {g['patient_id']}]({g['file']})", ""]
    return lines


def _limits_lines(summary: dict[str, Any]) -> list[str]:
    synthetic = (summary.get("data") or {}).get("synthetic")
    prev = summary["prevalence_in_audit"]
    dep = summary["patient_level"]["deployment"]
    at_1 = next((d for d in dep if np.isclose(d["prevalence"], 0.01)), None)
    lines = ["## What this audit cannot tell you", "",
             ("- **Synthetic data.** Every image is a phantom; the numbers describe the pipeline, not a clinical "
              "performance." if synthetic else "- **One dataset.** The numbers hold for these patients and scanners."),
             f"- **Enriched case mix.** {_pct(prev['patients'])} of audit patients bleed, against 1-5 % in an "
             "emergency department: PPV and false alarms come from Bayes' rule at assumed prevalences"
             + (f" (PPV {_pct(at_1['ppv'])}, interval {_ci(at_1.get('ppv_ci95', [np.nan] * 2))}, at 1 %)" if at_1
                else "") + ", never observed.",
             ("- **Slice versus volume.** The study model reads each series in z order, but only through the slice "
              "model's embeddings (2-D features); no model sees the voxels in 3-D." if summary.get("aggregation") else
              "- **A slice-level model.** A patient's score is its most suspicious slice; no model reads the volume, "
              "so a bleed seen across slices is not combined (Phase 5, `phase5.enabled`, adds a study-level model)."),
             "- **No comparison with readers.** No radiologist read these scans; nothing here says the model helps.",
             "- **Single site, single seed.** One cohort generator or site and one training run: the intervals cover "
             "patient sampling, not training randomness or another scanner.",
             "- **Attention maps are not proof.** Where a map points beside chance is evidence, not a mechanism; "
             "the shortcut study's intervention is the stronger test.", ""]
    return lines


def _competition_lines(summary: dict[str, Any]) -> list[str]:
    """A six-label model's competition metric and per-label AUC; nothing for a one-label model."""
    comp = summary.get("competition")
    if not isinstance(comp, dict):
        return []
    lines = ["## Six labels: the competition metric", "",
             f"{comp['metric']} on the {comp['images']} audit slices of {comp['patients']} patients: "
             f"**{comp['weighted_log_loss']:.4f}** (95 % interval {_ci(comp['weighted_log_loss_ci95'], False)}, "
             f"{comp['interval']}). A model that says 0.5 everywhere scores ln 2 = 0.693. Thresholds and every "
             "other figure of this report use the `any` output.", "",
             "| label | positive slices | AUC | 95 % interval |", "|---|---|---|---|"]
    labels = comp["labels"]
    for name in sorted(labels, key=lambda n: LABEL_COLUMNS.index(n) if n in LABEL_COLUMNS else len(LABEL_COLUMNS)):
        row = labels[name]
        auc = row.get("auc", float("nan"))
        shown = f"{auc:.3f}" if auc is not None and np.isfinite(auc) else "n/a (one class)"
        lines.append(f"| {name} | {row['positives']} | {shown} | {_ci(row.get('auc_ci95', [np.nan] * 2), False)} |")
    return lines + [""]


def _aggregation_lines(summary: dict[str, Any]) -> list[str]:
    """Slice versus volume: the study model (Phase 5) against the max-slice rule, when Phase 5 ran."""
    agg = summary.get("aggregation")
    if not agg:
        return []

    def auc(r: dict[str, Any]) -> str:
        return f"{r['auc']:.3f} ({_ci(r['auc_ci95'], False)})" if np.isfinite(r.get("auc", np.nan)) else "n/a"

    def rate(r: dict[str, Any], key: str) -> str:
        value = r["at_threshold"][key]
        return f"{_pct(value)} ({_ci(r[f'{key}_ci95'])})"

    lines = ["## Slice versus volume: the study model against the max-slice rule", "",
             "The max-slice rule scores a patient by its most suspicious slice, each slice read alone (Phase 4). The "
             "study model (Phase 5) rereads each series in z order with a bidirectional GRU over the slice model's "
             "embeddings and rescores every slice from its neighbours; a patient is then its most suspicious "
             f"rescored slice. Both at their own validation thresholds, on the same {agg['patients']} audit patients "
             f"({agg['slices']} slices); differences study - max-slice with paired 95 % intervals (patients "
             f"resampled). {agg['note'].capitalize()}.", "",
             "| level | rule | AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) |", "|---|---|---|---|---|"]
    for level in ("patient_level", "slice_level"):
        e = agg[level]
        for rule, name in (("max_slice", "max-slice rule"), ("study_model", "study model")):
            r = e[rule]
            lines.append(f"| {level.split('_')[0]}s | {name} | {auc(r)} | {rate(r, 'sensitivity')} | "
                         f"{rate(r, 'specificity')} |")
        d = e["difference"]
        auc_d = d["auc"]
        auc_text = ("n/a" if not np.isfinite(auc_d["difference"]) else
                    f"{auc_d['difference']:+.3f} ({auc_d['ci95'][0]:+.3f} to {auc_d['ci95'][1]:+.3f})")
        lines.append(f"| {level.split('_')[0]}s | difference | {auc_text} | "
                     f"{_signed(d['sensitivity']['difference'], d['sensitivity']['ci95'])} | "
                     f"{_signed(d['specificity']['difference'], d['specificity']['ci95'])} |")
    lines += ["", *(f"- {v}" for v in agg["verdict"]), ""]
    if agg.get("context"):
        lines += ["Where context along z changes the calls (slices, each rule at its slice threshold; an edge is the "
                  "first or last slice of a bleed's run in z, a single bleed spans one slice; small / large split at "
                  "the median lesion area where masks exist):", "",
                  "| group | measure | slices (patients) | max-slice rule | study model | difference (95 % CI) |",
                  "|---|---|---|---|---|---|"]
        for row in agg["context"]:
            lines.append(f"| {row['group']} | {row['measure']} | {row['slices']} ({row['patients']}) | "
                         f"{_pct(row['max_slice'])} | {_pct(row['study_model'])} | "
                         f"{_signed(row['difference'], row['ci95'])}{' (within noise)' if row['within_noise'] else ''} |")
        lines.append("")
    return lines


def executive_summary(summary: dict[str, Any]) -> str:
    """The executive summary as Markdown: what a department head reads first."""
    op = summary["operating_point"]
    patient_thr = "n/a" if op.get("patient_threshold") is None else f"{op['patient_threshold']:.4f}"
    data = summary.get("data") or {}
    lines = [
        data_line(data),
        "",
        "# Clinical audit: executive summary",
        "",
        *_chance_warning(summary["patient_level"]),
        "{contents}",
        "",
        f"Held-out audit cohort: {summary['audit_patients']} patients, {summary['audit_slices']} slices "
        f"({data.get('kind', 'data of unknown kind')}), never used for training, validation or pretraining. "
        f"Bleed prevalence in the cohort: {_pct(summary['prevalence_in_audit']['patients'])} of patients, "
        f"{_pct(summary['prevalence_in_audit']['slices'])} of slices. Reference standard: the dataset's slice "
        "labels (for the phantom: the generator's truth).",
        "",
        *_shortcut_lines(summary),
        f"Operating thresholds chosen on validation for a target sensitivity of {_pct(op['target_sensitivity'])} "
        f"(dropout {op['dropout']:g}): slices {op['threshold']:.4f}, patients (most suspicious slice) {patient_thr} "
        f"on {op.get('validation_patients', '?')} validation patients; not re-tuned on the audit cohort.",
        "",
        *_headline_table(summary),
        *_sample_size_lines(summary),
        f"![ROC curves]({FIGURES_DIR}/roc.png)",
        "",
        *_targets_lines(summary),
        *_prevalence_lines(summary),
        *_subgroup_lines(summary),
        *_aggregation_lines(summary),
        *_competition_lines(summary),
        *_calibration_lines(summary),
        *_decision_lines(summary),
        *_dropout_lines(summary),
        *_flow_lines(summary),
        *_gallery_lines(summary),
    ]
    lines += attention_section(summary.get("attention") or {})
    if summary.get("bone_study"):
        body = bone_study_markdown(summary["bone_study"]).split("\n", 1)[1]  # without its own title
        body = body.replace("\n## ", "\n### ").replace("\n# ", "\n### ")
        lines += ["## Bone-removal study", "", *body.strip().split("\n"), "",
                  "Files: `bone_study/slices.csv`, `bone_study/bone_study.png`.", ""]
    lines += _limits_lines(summary)
    lines += ["Per-patient logs: `patients/<patient>.json`; every slice: `slices.csv`; every number: "
              "`summary.json`.", ""]
    return "\n".join(_contents(lines) if line == "{contents}" else line for line in lines)


def _draw_figures(report_dir: Path, summary: dict[str, Any], n_boot: int, seed: int) -> None:
    """Every figure the summary refers to, into ``<report_dir>/figures/``."""
    fig = report_dir / FIGURES_DIR
    slices = pd.read_csv(report_dir / "slices.csv", dtype={"image_id": str, "patient_id": str})
    patients = pd.read_csv(report_dir / "patients.csv", dtype={"patient_id": str})
    y, p = slices["label"].to_numpy(int), slices["probability"].to_numpy(float)
    yp, pp = patients["label_any"].to_numpy(int), patients["max_probability"].to_numpy(float)
    if 0 < yp.sum() < yp.size:  # patients of both classes imply slices of both
        pt = summary["patient_level"]["at_threshold"]
        plot_roc(fig / "roc.png", yp, pp, n_boot=n_boot, seed=seed,
                 points=[{"label": "patient operating point", "sensitivity": pt["sensitivity"],
                          "specificity": pt["specificity"]}])
    plot_predictive_values(fig / "predictive_values.png", summary["patient_level"]["deployment"])
    curves = {"as trained": (y, p)}
    if "probability_recalibrated" in slices:
        curves["Platt recalibrated (fitted on validation)"] = (y, slices["probability_recalibrated"].to_numpy(float))
    if 0 < y.sum() < y.size:
        plot_calibration(fig / "calibration.png", curves)
    dc = summary.get("decision_curve") or {}
    if dc.get("audit"):
        table = pd.DataFrame(dc["audit"])
        plot_decision_curve(fig / "decision_curve.png", table,
                            title=f"Decision curve, audit case mix ({_pct(summary['prevalence_in_audit']['patients'])} bleed)")
    if dc.get("0.02"):
        plot_decision_curve(fig / "decision_curve_2pct.png", pd.DataFrame(dc["0.02"]),
                            title="Decision curve at 2 % prevalence")
    if summary.get("flow"):
        plot_flow(fig / "flow.png", flow_stages(summary["flow"]))
    plot_confusion(fig / "confusion.png", {
        name: {k: summary[f"{name[:-1]}_level"]["at_threshold"][k] for k in ("tp", "fp", "fn", "tn")}
        for name in ("patients", "slices")})


def write_report(report_dir: str | Path, *, n_boot: int = 2000, seed: int = 0) -> Path:
    """Render a finished audit's report folder: ``figures/``, ``summary.md`` and ``index.html``.

    Reads ``summary.json``, ``slices.csv``, ``patients.csv`` (written by
    :func:`brain_audit.audit.holdout.audit_holdout`); returns the path of ``index.html``.

    Raises:
        ConfigError: the folder holds no finished audit.
    """
    report_dir = Path(report_dir)
    path = report_dir / "summary.json"
    if not path.is_file():
        raise ConfigError(f"`report_dir` must hold a finished audit (summary.json). Got {str(report_dir)!r} instead.")
    summary = json.loads(path.read_text())
    _draw_figures(report_dir, summary, n_boot, seed)
    atomic_write_text(report_dir / "summary.md", executive_summary(summary))
    synthetic = (summary.get("data") or {}).get("synthetic")
    return write_html(report_dir, title="Clinical audit" + (" (synthetic phantom cohort)" if synthetic else ""))
