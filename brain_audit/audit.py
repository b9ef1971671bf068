"""The held-out clinical audit: the final model on the audit patients it never saw.

The audit patients are chosen first by :mod:`brain_audit.cohort` and never enter any
training, validation or pretraining cohort. This module scores them with the Phase-4
model at the operating threshold Phase 4 chose on validation (never re-tuned here), and
turns the seed's named limits into numbers:

* **slice versus volume**: results per slice *and* per patient (a patient is positive
  when any slice is; its score is its most suspicious slice);
* **uncertainty**: 95 % intervals by bootstrap over patients, never over slices;
* **the prevalence trap**: PPV / NPV at deployment prevalences of 1, 2 and 5 % from the
  measured sensitivity and specificity (Bayes' rule), beside the audit cohort's own;
* **calibration**: expected calibration error and reliability bins.

Outputs in ``<out_dir>/clinical_audit_report/`` (written atomically):
``summary.json``, ``summary.md`` (the executive summary), ``slices.csv`` (every audit
slice with its probability, call and attention profile), ``patients.csv`` and
``patients/<patient>.json`` (a per-patient log). IDs are the RSNA pseudonyms; no
identifying DICOM field is ever read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import RunConfig
from .errors import ConfigError
from .provenance import atomic_write_text, file_sha256, run_record, write_csv, write_json
from .rsna import LABEL_COLUMNS

__all__ = ["audit_holdout", "REPORT_DIR", "DEPLOYMENT_PREVALENCES"]

REPORT_DIR = "clinical_audit_report"

#: Deployment prevalences of ICH for PPV / NPV (emergency head CT: roughly 1-5 % bleed).
DEPLOYMENT_PREVALENCES: tuple[float, ...] = (0.01, 0.02, 0.05)


def audit_holdout(
    config: RunConfig,
    *,
    model_path: str | Path | None = None,
    gradcam_slices: int = 64,
    n_boot: int = 1000,
    prevalences: Sequence[float] = DEPLOYMENT_PREVALENCES,
) -> dict[str, Any]:
    """Score the audit patients with the final model and write the clinical audit report.

    Args:
        config: the run (its ``out_dir`` holds ``data/cache`` and ``phase4/``).
        model_path: the model to audit; default ``phase4/model.keras`` with the threshold
            of ``phase4/operating_point.json``.
        gradcam_slices: attention profiles for this many audit slices (positives first,
            then the most confident negatives).
        n_boot: bootstrap resamples (over patients).
        prevalences: deployment prevalences for PPV / NPV.

    Returns:
        The summary (also ``summary.json``).
    """
    import pandas as pd

    from .cache import open_cache
    from .metrics import calibration_bins, operating_point_report, patient_level
    from .model import load_model
    from .gradcam import FLAGS
    from .predict import any_column, predict_ids, profile_slices
    from .train import RunPaths

    paths = RunPaths(Path(config.out_dir))
    model_path = Path(model_path) if model_path else paths.phase(4) / "model.keras"
    op_path = paths.phase(4) / "operating_point.json"
    if not model_path.is_file() or not op_path.is_file():
        raise ConfigError(f"the audit needs a finished Phase 4: {model_path} or {op_path} is missing")
    operating = json.loads(op_path.read_text())
    threshold = float(operating["threshold"])
    cache = open_cache(paths.cache, size=config.image_size)
    ids = list(cache.ids("audit"))
    if not ids:
        raise ConfigError("`audit_patients` must be > 0 for the clinical audit. Got an empty audit split instead.")
    model = load_model(model_path, compile=False)
    column = any_column(config.head)
    table = cache.table.loc[ids]
    y = table["any"].to_numpy().astype(int)
    p = predict_ids(model, cache, ids, column)
    patients = table["patient_id"].to_numpy().astype(str)

    slices = pd.DataFrame({"image_id": ids, "patient_id": patients, "z": table["z"].to_numpy(), "label": y,
                           "probability": p, "called_bleed": (p >= threshold).astype(int)})
    for s in LABEL_COLUMNS[:-1]:
        slices[s] = table[s].to_numpy()
    # attention profiles of the slices a reader would look at: every positive, then the most confident negatives
    order = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)[np.argsort(-p[y == 0], kind="stable")]])
    pick = order[:gradcam_slices]
    prof = profile_slices(model, cache, [ids[i] for i in pick], y[pick], p[pick], threshold,
                          output_index=column, batch_size=32)
    prof_df = pd.DataFrame(prof).drop(columns=["label", "probability"], errors="ignore")
    slices = slices.merge(prof_df, on="image_id", how="left")

    report_dir = paths.root / REPORT_DIR
    both = len(np.unique(y)) == 2
    slice_report = operating_point_report(y, p, threshold, prevalences, groups=patients, n_boot=n_boot,
                                          seed=config.seed)
    pat_ids, y_pat, p_pat = patient_level(patients, y, p)
    # a patient's score is its most suspicious slice: it gets its own threshold, chosen on validation patients
    patient_threshold = operating.get("patient_threshold")
    patient_threshold = threshold if patient_threshold is None else float(patient_threshold)
    patient_report = operating_point_report(y_pat, p_pat, patient_threshold, prevalences, n_boot=n_boot,
                                            seed=config.seed)

    per_patient = []
    for pid, yp, pp in zip(pat_ids, y_pat, p_pat):
        rows = slices[slices["patient_id"] == pid].sort_values("z")
        top = rows.loc[rows["probability"].idxmax()]
        log = {
            "patient_id": pid,
            "label_any": int(yp),
            "max_probability": float(pp),
            "called_bleed": bool(pp >= patient_threshold),
            "outcome": _outcome(int(yp), bool(pp >= patient_threshold)),
            "slices": int(len(rows)),
            "positive_slices": int(rows["label"].sum()),
            "slices_called": int(rows["called_bleed"].sum()),
            "subtypes_present": [s for s in LABEL_COLUMNS[:-1] if rows[s].max() > 0],
            "most_suspicious_slice": str(top["image_id"]),
            "flags_on_audited_slices": {
                f: int(rows[f].fillna(False).astype(bool).sum()) for f in FLAGS if f in rows
            },
            "slice_log": [
                {"image_id": r.image_id, "z": float(r.z), "label": int(r.label), "probability": round(float(r.probability), 4)}
                for r in rows.itertuples()
            ],
        }
        per_patient.append(log)
        write_json(report_dir / "patients" / f"{pid}.json", log)
    patients_df = pd.DataFrame([{k: v for k, v in log.items() if k not in ("slice_log", "flags_on_audited_slices",
                                                                           "subtypes_present")}
                                for log in per_patient])
    write_csv(report_dir / "patients.csv", patients_df)
    write_csv(report_dir / "slices.csv", slices)

    summary = {
        "model": str(model_path),
        "operating_point": operating,
        "audit_patients": int(len(pat_ids)),
        "audit_slices": int(len(ids)),
        "prevalence_in_audit": {"slices": float(y.mean()), "patients": float(y_pat.mean())},
        "slice_level": slice_report,
        "patient_level": patient_report,
        "calibration_bins": calibration_bins(y, p, 10) if both else [],
        "attention": {
            "slices_profiled": int(len(prof_df)),
            "flag_rates": {
                f: float(slices[f].dropna().astype(bool).mean())
                for f in FLAGS
                if f != "right_for_wrong_reason" and f in slices and slices[f].notna().any()
            },
        },
    }
    write_json(report_dir / "summary.json", summary)
    atomic_write_text(report_dir / "summary.md", executive_summary(summary))
    write_json(report_dir / "run.json", run_record(config, seeds={"run": config.seed},
                                                   inputs={"model": file_sha256(model_path)}))
    return summary


def _outcome(label: int, called: bool) -> str:
    return {(1, True): "true_positive", (1, False): "false_negative", (0, True): "false_positive",
            (0, False): "true_negative"}[(label, called)]


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
