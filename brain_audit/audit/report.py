"""The executive summary of a clinical audit, in Markdown, from its ``summary.json`` dict."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brain_audit.audit.attention_evidence import attention_markdown
from brain_audit.audit.bone_study import bone_study_markdown

__all__ = ["attention_section", "executive_summary"]


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


def executive_summary(summary: dict[str, Any]) -> str:
    """The executive summary as Markdown: what a department head reads first."""
    op = summary["operating_point"]
    patient_thr = "n/a" if op.get("patient_threshold") is None else f"{op['patient_threshold']:.4f}"
    lines = [
        "# Clinical audit: executive summary",
        "",
        *_chance_warning(summary["patient_level"]),
        f"Held-out audit cohort: {summary['audit_patients']} patients, {summary['audit_slices']} slices, never used "
        f"for training, validation or pretraining. Bleed prevalence in the cohort: "
        f"{_pct(summary['prevalence_in_audit']['patients'])} of patients, {_pct(summary['prevalence_in_audit']['slices'])} of slices.",
        "",
        f"Operating thresholds chosen on validation for a target sensitivity of {_pct(op['target_sensitivity'])} "
        f"(dropout {op['dropout']:g}): slices {op['threshold']:.4f}, patients (most suspicious slice) {patient_thr}; "
        "not re-tuned on the audit cohort.",
        "",
        "| level | AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) | missed bleeds | false alarms |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("patient_level", "slice_level"):
        r = summary[name]
        t = r["at_threshold"]
        auc_ci = _ci(r["auc_ci95"], percent=False) if "auc_ci95" in r else "n/a"
        auc = "n/a" if not np.isfinite(r["auc"]) else f"{r['auc']:.3f}"
        lines.append(
            f"| {name.replace('_level', '')} | {auc} ({auc_ci}) | {_pct(t['sensitivity'])} ({_ci(r['sensitivity_ci95'])}) | "
            f"{_pct(t['specificity'])} ({_ci(r['specificity_ci95'])}) | {t['fn']} | {t['fp']} |"
        )
    lines += ["", "## The prevalence trap (patient level)", "",
              "Trained on balanced cohorts, deployed where few scans bleed: what a positive call is worth.", "",
              "| deployment prevalence | PPV | NPV | false alarms per true bleed |", "|---|---|---|---|"]
    for d in summary["patient_level"]["deployment"]:
        lines.append(f"| {_pct(d['prevalence'])} | {_pct(d['ppv'])} | {_pct(d['npv'])} | "
                     f"{d['false_alarms_per_true_bleed']:.1f} |")
    lines += ["", f"Calibration (slices): expected calibration error {summary['slice_level']['ece']:.3f}.", ""]
    lines += attention_section(summary.get("attention") or {})
    if summary.get("bone_study"):
        body = bone_study_markdown(summary["bone_study"]).split("\n", 1)[1]  # without its own title
        lines += ["## Bone-removal study", "", *body.strip().split("\n"), "",
                  "Files: `bone_study/slices.csv`, `bone_study/bone_study.png`.", ""]
    lines += ["Per-patient logs: `patients/<patient>.json`; every slice: `slices.csv`.", ""]
    return "\n".join(lines)

