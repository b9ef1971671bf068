"""The executive summary of a clinical audit, in Markdown, from its ``summary.json`` dict."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["executive_summary"]


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
    rates = summary["attention"]["flag_rates"]
    if rates:
        lines += [f"Where the model looked ({summary['attention']['slices_profiled']} slices profiled with Grad-CAM): "
                  + ", ".join(f"{k.replace('_', ' ')} {_pct(v)}" for k, v in rates.items()) + ".", ""]
    lines += ["Per-patient logs: `patients/<patient>.json`; every slice: `slices.csv`.", ""]
    return "\n".join(lines)

