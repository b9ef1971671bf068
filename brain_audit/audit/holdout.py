"""The held-out clinical audit: the final model on the audit patients it never saw.

The audit patients are chosen first (:mod:`brain_audit.dataset.cohort`) and never enter any training,
validation or pretraining cohort. :func:`audit_holdout` scores them with the Phase-4 model at the thresholds
Phase 4 chose on validation (never re-tuned here) and reports per slice and per patient (a patient's score is
its most suspicious slice): Wilson intervals for patients, patient-cluster bootstrap for slices and AUC, PPV / NPV
with intervals at deployment prevalences, targets judged, subgroups by subtype and mimic, the shortcuts found,
calibration and recalibration fitted on validation, the prior-shift correction, net benefit, the dropout
comparison, the flow of every image, the error gallery, for a six-label model the RSNA 2019 competition metric
and each label's AUC with patient-bootstrap intervals (every other figure uses the ``any`` output), the attention audit
(:mod:`brain_audit.audit.attention_audit`) and the bone-removal study (:mod:`brain_audit.audit.bone_study`).

Outputs in ``<run>/clinical_audit_report/``: ``summary.json`` (every number), ``summary.md`` and ``index.html``
(:func:`brain_audit.audit.report.write_report`; figures embedded), ``figures/``, ``gallery/``, ``slices.csv``,
``validation.csv``, ``patients.csv``, ``patients/<patient>.json``, ``attention/`` and ``bone_study/``. IDs are the
header index's pseudonyms (:mod:`brain_audit.ids`), no identifying DICOM field is read, and a patient's file name
is built by :func:`brain_audit.ids.safe_child`, so no ID can place it outside its folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brain_audit.audit.aggregation import aggregation_section, study_probabilities
from brain_audit.audit.attention_audit import attention_audit, field_of_view, truth_lesions
from brain_audit.audit.bone_study import run_bone_study
from brain_audit.audit.flow import audit_flow
from brain_audit.audit.gallery import error_gallery
from brain_audit.audit.report import write_report
from brain_audit.audit.sections import (
    COMPETITION_NOT_AVAILABLE,
    calibration_section,
    competition_section,
    candidate_probabilities,
    decision_section,
    dropout_comparison,
    judge_targets,
    prior_shift_section,
    shortcut_section,
)
from brain_audit.audit.source import data_source, generated_counts, mimic_presence
from brain_audit.audit.statistics import DEPLOYMENT_PREVALENCES, operating_point_report, patient_level
from brain_audit.audit.subgroups import subgroup_report
from brain_audit.config import RunConfig, with_resolved_data_root
from brain_audit.dataset.cache import open_cache
from brain_audit.errors import ConfigError
from brain_audit.gradcam.attention import FLAGS
from brain_audit.ids import safe_child
from brain_audit.model.predictions import any_column, predict_ids
from brain_audit.model.weights import load_model
from brain_audit.provenance import file_sha256, run_record, write_csv, write_json
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import REPORT_DIR, RunPaths
from brain_audit.run_lock import run_lock

__all__ = ["REPORT_DIR", "DEPLOYMENT_PREVALENCES", "audit_holdout", "refresh_shortcuts"]






def audit_holdout(
    config: RunConfig,
    *,
    model_path: str | Path | None = None,
    n_boot: int = 2000,
    prevalences: Sequence[float] = DEPLOYMENT_PREVALENCES,
) -> dict[str, Any]:
    """Score the audit patients with the final model and write the clinical audit report.

    Args:
        config: the run (its ``out_dir`` holds ``data/cache`` and ``phase4/``).
        model_path: the model to audit; default ``phase4/model.keras`` with the threshold
            of ``phase4/operating_point.json``.
        n_boot: bootstrap resamples (over patients).
        prevalences: deployment prevalences for PPV / NPV.

    Returns:
        The summary (also ``summary.json``).
    """
    config = with_resolved_data_root(config)  # data_root = "auto": the folder found, as prepare_data saw it
    with run_lock(config.out_dir):  # one process writes the run folder (re-entrant inside the demo)
        return _audit_holdout(config, model_path=model_path, n_boot=n_boot,
                              prevalences=prevalences)


def _audit_holdout(
    config: RunConfig,
    *,
    model_path: str | Path | None,
    n_boot: int,
    prevalences: Sequence[float],
) -> dict[str, Any]:
    """:func:`audit_holdout` inside the run folder's lock."""
    paths = RunPaths(config.out_dir)
    model_path, operating = paths.finished_model("the audit", model_path)
    threshold = float(operating["threshold"])
    cache = open_cache(paths.cache, size=config.image_size)
    ids = list(cache.ids("audit"))
    if not ids:
        raise ConfigError("`audit_patients` must be > 0 for the clinical audit. Got an empty audit split instead.")
    model = load_model(model_path, compile=False)
    column = any_column(config.head)
    table = cache.table.loc[ids]
    y = table["any"].to_numpy().astype(int)
    every = predict_ids(model, cache, ids, None)
    p = every[:, column]
    patients = table["patient_id"].to_numpy().astype(str)
    report_dir = paths.report

    slices = pd.DataFrame({"image_id": ids, "patient_id": patients, "series_id": table["series_id"].to_numpy(),
                           "z": table["z"].to_numpy(), "label": y, "probability": p,
                           "called_bleed": (p >= threshold).astype(int)})
    # Phase 5 (when it finished, and the audited model is the Phase-4 model it was trained on): each series
    # rescored in z order by the study model, compared with the max-slice rule below
    is_phase4 = Path(model_path).resolve() == paths.model(4).resolve()
    study = study_probabilities(paths, model, cache, ids, column) if is_phase4 else None
    if study is not None:
        slices["probability_study"] = study[1]
        slices["called_bleed_study"] = (study[1] >= float(study[2]["threshold"])).astype(int)
    for s in LABEL_COLUMNS[:-1]:
        slices[s] = table[s].to_numpy()
    presence = mimic_presence(config.data_root, ids)
    mimics = [m for m in presence.columns if presence[m].any()] if presence is not None else []
    for m in mimics:
        slices[f"mimic_{m}"] = presence[m].to_numpy()
    # the attention audit, as Phase 3 runs it: every error and a sample of correct calls, against chance
    # and randomised weights; overlays of missed bleeds and false alarms (with truth contours when shipped)
    lesions = truth_lesions(config.data_root, [i for i, t in zip(ids, y) if t], cache.size)
    findings, attention = attention_audit(
        model, cache, ids, y, p, threshold, out_dir=report_dir / "attention", plan=config.phase3,
        field_mm=field_of_view(paths.index, ids), lesions=lesions, output_index=column, seed=config.seed,
        n_boot=max(n_boot, 1000),
    )
    prof_df = findings.drop(columns=["label", "probability", "patient_id", "outcome"], errors="ignore")
    slices = slices.merge(prof_df, on="image_id", how="left")

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
            "mimics_present": [m for m in mimics if rows[f"mimic_{m}"].any()],
            "most_suspicious_slice": str(top["image_id"]),
            "flags_on_audited_slices": {
                f: int(rows[f].fillna(False).astype(bool).sum()) for f in FLAGS if f in rows
            },
            "slice_log": [
                {"image_id": r.image_id, "z": float(r.z), "label": int(r.label), "probability": round(float(r.probability), 4)}
                | ({"probability_study": round(float(r.probability_study), 4)} if study is not None else {})
                for r in rows.itertuples()
            ],
        }
        if study is not None:
            log["max_probability_study"] = float(rows["probability_study"].max())
        per_patient.append(log)
        write_json(safe_child(report_dir / "patients", pid, ".json", what="patient_id"), log)
    patients_df = pd.DataFrame([{k: v for k, v in log.items() if k not in ("slice_log", "flags_on_audited_slices")}
                                for log in per_patient])
    write_csv(report_dir / "patients.csv", patients_df.assign(
        subtypes_present=patients_df["subtypes_present"].map(" ".join),
        mimics_present=patients_df["mimics_present"].map(" ".join)))
    # calibration: as trained, and recalibrated on validation (never on the audit), then moved to deployment
    val_ids = list(cache.ids("validation", "phase2"))  # where Phase 4 chose (not Phase 5's added series)
    val = cache.table.loc[val_ids]
    p_val = predict_ids(model, cache, val_ids, column) if val_ids else np.zeros(0)
    validation = pd.DataFrame({"image_id": val_ids, "patient_id": val["patient_id"].to_numpy().astype(str),
                               "label": val["any"].to_numpy().astype(int), "probability": p_val})
    calibration, recalibrated = calibration_section(slices, validation, n_boot=n_boot, seed=config.seed)
    if recalibrated is not None:
        slices["probability_recalibrated"] = recalibrated
    write_csv(report_dir / "slices.csv", slices)
    write_csv(report_dir / "validation.csv", validation)
    subgroups = subgroup_report(slices, patients_df, mimics, n_boot=n_boot, seed=config.seed)
    candidates = candidate_probabilities(paths, cache, ids, val_ids, column)

    summary = {
        "data": data_source(config.data_root),
        "model": str(model_path),
        "operating_point": operating,
        "audit_patients": int(len(pat_ids)),
        "audit_slices": int(len(ids)),
        "prevalence_in_audit": {"slices": float(y.mean()), "patients": float(y_pat.mean())},
        "slice_level": slice_report,
        "patient_level": patient_report,
        "targets": judge_targets(operating, slice_report, patient_report),
        "subgroups": subgroups,
        "shortcuts": shortcut_section(paths, slices, subgroups, n_boot=n_boot, seed=config.seed),
        "calibration": calibration,
        "prior_shift": prior_shift_section(patients_df, validation, patient_threshold, prevalences),
        "decision_curve": decision_section(patients_df, validation, prevalences),
        "dropout_comparison": dropout_comparison(candidates, slices, validation, operating, n_boot=n_boot,
                                                 seed=config.seed),
        "flow": audit_flow(paths, slices, patients_df, generated=generated_counts(config.data_root)),
        "attention": {"slices_profiled": int(len(findings)), **attention},
        "aggregation": (aggregation_section(slices, operating, study[2], lesion_area={
            k: float(v.sum()) for k, v in (lesions or {}).items()}, n_boot=n_boot, seed=config.seed)
            if study is not None and "threshold" in study[2] else None),
        "competition": (competition_section(table[list(LABEL_COLUMNS)].to_numpy().astype(int), every, patients,
                                            n_boot=n_boot, seed=config.seed)
                        if config.head == "six" else COMPETITION_NOT_AVAILABLE),
    }
    summary["gallery"] = error_gallery(model, cache, slices, patients_df, lesions or {}, report_dir,
                                       output_index=column)
    # the bone-removal study on the same slices (bone_study/), a section of the report
    summary["bone_study"] = run_bone_study(config, model_path=model_path, model=model, n_boot=max(n_boot, 1000))
    write_json(report_dir / "summary.json", summary)
    write_report(report_dir, n_boot=n_boot, seed=config.seed)
    write_json(report_dir / "run.json", run_record(config, seeds={"run": config.seed},
                                                   inputs={"model": file_sha256(model_path)}))
    return summary


def _outcome(label: int, called: bool) -> str:
    return {(1, True): "true_positive", (1, False): "false_negative", (0, True): "false_positive",
            (0, False): "true_negative"}[(label, called)]


def refresh_shortcuts(config: RunConfig, *, n_boot: int = 2000) -> dict[str, Any] | None:
    """Recompute a finished audit's shortcut section (after a new shortcut study) and redraw its report.

    Returns the updated summary, or None when the run has no finished audit.
    """
    config = with_resolved_data_root(config)
    paths = RunPaths(config.out_dir)
    path = paths.report / "summary.json"
    if not path.is_file():
        return None
    with run_lock(config.out_dir):
        summary = json.loads(path.read_text())
        slices = pd.read_csv(paths.report / "slices.csv", dtype={"image_id": str, "patient_id": str})
        summary["shortcuts"] = shortcut_section(paths, slices, summary.get("subgroups") or {}, n_boot=n_boot,
                                                seed=config.seed)
        write_json(path, summary)
        write_report(paths.report, n_boot=n_boot, seed=config.seed)
    return summary
