"""The audit's findings beyond the headline table, each a JSON-ready section of ``summary.json``.

* :func:`judge_targets`: the sensitivity target Phase 4 chose its threshold for, against what the audit achieved;
* :func:`calibration_section`: calibration as trained and after a recalibration fitted on validation (Platt 1999),
  slope and intercept (Cox 1958) with patient-bootstrap intervals, Brier score;
* :func:`prior_shift_section`: the probability a positive patient call carries at deployment prevalence, by the
  prior-shift correction of Saerens, Latinne & Decaestecker 2002;
* :func:`decision_section`: net benefit against treat-all (Vickers & Elkin 2006) on the audit and at deployment;
* :func:`dropout_comparison`: Phase 4's dropout candidates compared on the same patients, with a paired interval;
* :func:`shortcut_section`: the mimics the shortcut study or the audit's own strata found the model relying on,
  and the results on slices without them;
* :func:`competition_section`: for a six-label model, the RSNA 2019 competition metric
  (:func:`brain_audit.model.competition.weighted_log_loss`) with a patient-bootstrap interval, and each label's AUC.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from brain_audit.audit.calibration import calibration_fit, fit_recalibration, prior_shift
from brain_audit.audit.decision import net_benefit
from brain_audit.audit.statistics import (
    bootstrap_ci,
    calibration_bins,
    cluster_bootstrap,
    cluster_bootstrap_interval,
    expected_calibration_error,
    paired_difference_interval,
    patient_level,
    predictive_values_at_prevalence,
)
from brain_audit.audit.subgroups import clustered_rate
from brain_audit.model.competition import METRIC_NAME, image_log_losses
from brain_audit.model.predictions import predict_ids
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.model.weights import load_model
from brain_audit.run_layout import RunPaths

__all__ = ["COMPETITION_NOT_AVAILABLE", "TARGET_RATIONALE", "calibration_section", "competition_section", "candidate_probabilities", "decision_section",
           "dropout_comparison", "judge_targets", "paired_rate_difference", "prior_shift_section", "shortcut_section"]

#: Why the operating point targets sensitivity (one sentence in the report).
TARGET_RATIONALE = (
    "A missed hemorrhage can kill within hours while a false alarm costs a second read, so the threshold is set on "
    "validation for a sensitivity target first (the seed's 95 %) and specificity is what remains."
)

#: What a one-label (``head = "any"``) model reports in place of the competition metric.
COMPETITION_NOT_AVAILABLE = (
    "not available: the RSNA 2019 competition metric scores six labels and this model has the one-label head "
    "'any' (train with head = \"six\" for it)"
)


def _verdict(point: float, ci: Sequence[float], target: float) -> dict[str, Any]:
    lo = ci[0] if ci and np.isfinite(ci[0]) else float("nan")
    if not np.isfinite(point):
        return {"verdict": "NOT ESTIMABLE", "demonstrated": False}
    passed = point >= target
    return {"verdict": "PASS" if passed else "FAIL", "demonstrated": bool(passed and np.isfinite(lo) and lo >= target)}


def judge_targets(operating: dict[str, Any], slice_report: dict[str, Any],
                  patient_report: dict[str, Any]) -> list[dict[str, Any]]:
    """The sensitivity target against the audit: one row per level with achieved, interval and PASS / FAIL.

    PASS when the audit's estimate reaches the target; ``demonstrated`` only when the whole 95 % interval does.
    """
    target = float(operating.get("target_sensitivity", float("nan")))
    rows = []
    for level, report, on_validation in (("patients", patient_report, operating.get("validation_patient_sensitivity")),
                                         ("slices", slice_report, operating.get("validation_sensitivity"))):
        point = float(report["at_threshold"]["sensitivity"])
        ci = [float(v) for v in report["sensitivity_ci95"]]
        rows.append({"level": level, "figure": "sensitivity", "target": target, "achieved": point, "ci95": ci,
                     "on_validation": on_validation, "rationale": TARGET_RATIONALE,
                     **_verdict(point, ci, target)})
    return rows


def _both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(np.sum(y)) < y.size


def calibration_section(slices: pd.DataFrame, validation: pd.DataFrame, *, n_boot: int = 2000,
                        seed: int = 0) -> tuple[dict[str, Any], np.ndarray | None]:
    """Slice calibration as trained and after Platt scaling fitted on validation (never on the audit).

    Returns:
        ``(section, recalibrated)``: the section (``as_trained`` and ``recalibrated``: slope, intercept,
        calibration-in-the-large and Brier score with patient-bootstrap intervals, ECE, reliability bins;
        ``recalibration``: the fitted map) and the audit's recalibrated probabilities (None without a
        validation set holding both classes).
    """
    y = slices["label"].to_numpy().astype(int)
    p = slices["probability"].to_numpy(dtype=float)
    groups = slices["patient_id"].to_numpy().astype(str)

    def describe(q: np.ndarray) -> dict[str, Any]:
        return {**calibration_fit(y, q, groups, n_boot=n_boot, seed=seed), "ece": expected_calibration_error(y, q),
                "bins": calibration_bins(y, q, 10)}

    section: dict[str, Any] = {"level": "slices", "as_trained": describe(p) if _both_classes(y) else None}
    yv = validation["label"].to_numpy().astype(int)
    if not (_both_classes(y) and _both_classes(yv)):
        section["recalibrated"] = None
        return section, None
    recal = fit_recalibration(yv, validation["probability"].to_numpy(dtype=float), method="platt")
    q = recal.apply(p)
    section.update(recalibration=recal.to_dict() | {"fitted_on": f"{len(yv)} validation slices"},
                   recalibrated=describe(q))
    return section, q


def _patient_recalibration(validation: pd.DataFrame) -> tuple[Any, float, int] | None:
    """Platt scaling of the patient score (its most suspicious slice) on the validation patients.

    Returns ``(recalibration, validation bleed prevalence, validation patients)``, or None without validation
    patients of both classes.
    """
    if validation.empty:
        return None
    _, yv, pv = patient_level(validation["patient_id"].to_numpy().astype(str),
                              validation["label"].to_numpy().astype(int), validation["probability"].to_numpy(float))
    if not _both_classes(yv):
        return None
    return fit_recalibration(yv, pv, method="platt"), float(np.mean(yv)), int(yv.size)


def prior_shift_section(patients: pd.DataFrame, validation: pd.DataFrame, patient_threshold: float,
                        prevalences: Sequence[float]) -> dict[str, Any] | None:
    """What a positive patient call means at deployment prevalence (Saerens et al. 2002).

    The patient score (its most suspicious slice) is recalibrated by Platt scaling on the validation patients,
    whose bleed prevalence ``pi`` it then reflects; the prior-shift correction moves it to each deployment
    prevalence ``pi'``. Reported per ``pi'``: the probability of a bleed for a patient just at the threshold
    (the least a positive call carries) beside Bayes' PPV of the operating point (what the average positive call
    carries). None without validation patients of both classes.
    """
    fitted = _patient_recalibration(validation)
    if fitted is None:
        return None
    recal, pi, n_val = fitted
    y_pat = patients["label_any"].to_numpy().astype(int)
    at = recal.apply(np.array([patient_threshold]))
    rows = []
    for target in prevalences:
        row = {"prevalence": float(target), "probability_at_threshold": float(prior_shift(at, pi, target)[0])}
        if _both_classes(y_pat):
            se = float(np.mean(patients.loc[y_pat == 1, "called_bleed"].astype(bool)))
            sp = float(np.mean(~patients.loc[y_pat == 0, "called_bleed"].astype(bool)))
            row["ppv_bayes"] = predictive_values_at_prevalence(se, sp, target)["ppv"]
        rows.append(row)
    return {"validation_patients": n_val, "validation_prevalence": pi, "recalibration": recal.to_dict(),
            "rows": rows}


def decision_section(patients: pd.DataFrame, validation: pd.DataFrame,
                     prevalences: Sequence[float]) -> dict[str, Any]:
    """Net benefit of acting on a patient's bleed probability, against treating all and none (Vickers & Elkin 2006).

    A decision curve needs probabilities: the patient score is Platt-recalibrated on the validation patients
    (:func:`_patient_recalibration`). On the audit's own case mix with those probabilities; at each deployment
    prevalence with the probabilities moved there by the prior-shift correction (Saerens et al. 2002) and the net
    benefit from the sensitivity and specificity at each threshold. Thresholds 1-50 % (the risk at which a
    clinician would act). Empty without validation patients of both classes.
    """
    y = patients["label_any"].to_numpy().astype(int)
    fitted = _patient_recalibration(validation)
    if not _both_classes(y) or fitted is None:
        return {}
    recal, pi, _ = fitted
    p = recal.apply(patients["max_probability"].to_numpy(dtype=float))
    grid = np.round(np.arange(0.01, 0.51, 0.01), 2)
    out = {"probabilities": "patient score, Platt-recalibrated on validation", "audit": net_benefit(y, p, grid).to_dict(orient="list")}
    for target in prevalences:
        out[f"{target:g}"] = net_benefit(y, prior_shift(p, pi, target), grid, prevalence=target).to_dict(orient="list")
    return out


def candidate_probabilities(paths: RunPaths, cache: Any, ids: Sequence[str], val_ids: Sequence[str],
                            column: int) -> list[dict[str, Any]]:
    """Each Phase-4 dropout candidate's probabilities on the audit and validation slices (``phase4/metrics.json``)."""
    metrics_path = paths.phase(4) / "metrics.json"
    if not metrics_path.is_file():
        return []
    out = []
    for cand in json.loads(metrics_path.read_text()).get("candidates", []):
        recorded = Path(str(cand.get("model", "")))
        path = recorded if recorded.is_file() else paths.phase(4) / recorded.parent.name / recorded.name
        if not path.is_file():
            warnings.warn(f"{path}: Phase 4's dropout-{cand.get('dropout')} candidate is missing; left out of the "
                          "dropout comparison", RuntimeWarning, stacklevel=2)
            continue
        model = load_model(path, compile=False)
        out.append({"dropout": float(cand["dropout"]), "threshold": float(cand["threshold"]),
                    "validation_specificity": cand.get("specificity"),
                    "audit": predict_ids(model, cache, list(ids), column),
                    "validation": predict_ids(model, cache, list(val_ids), column) if len(val_ids) else np.zeros(0)})
    return out


def paired_rate_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: np.ndarray, cls: int, n_boot: int,
            seed: int) -> dict[str, Any]:
    """Difference ``rate(a) - rate(b)`` of correct calls among class ``cls`` rows (``a``, ``b``: bool calls of two
    rules on the same rows), paired: a patient-cluster bootstrap of the difference, or Newcombe's paired interval
    (:func:`brain_audit.audit.statistics.paired_difference_interval`) when the bootstrap has zero width.

    Returns:
        dict with n, patients, first and second (the two rates), difference, ci95, method, within_noise.
    """
    sel = y == cls
    ca, cb = (a[sel] if cls else ~a[sel]), (b[sel] if cls else ~b[sel])
    g = groups[sel]
    if not sel.any():
        return {"n": 0, "difference": float("nan"), "ci95": [float("nan")] * 2, "method": "none"}
    values = np.column_stack([ca, cb]).astype(float)
    point, lo, hi = cluster_bootstrap(values, g, lambda v: float(v[:, 0].mean() - v[:, 1].mean()), n_boot=n_boot,
                                      seed=seed)
    method = "paired patient bootstrap"
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9:
        lo, hi = paired_difference_interval(int(np.sum(ca & cb)), int(np.sum(ca & ~cb)), int(np.sum(~ca & cb)),
                                            int(np.sum(~ca & ~cb)))
        method = "newcombe paired (slices as independent)"
    return {"n": int(sel.sum()), "patients": int(np.unique(g).size), "first": float(ca.mean()),
            "second": float(cb.mean()), "difference": float(point), "ci95": [float(lo), float(hi)],
            "method": method, "within_noise": bool(lo <= 0 <= hi)}


def dropout_comparison(candidates: list[dict[str, Any]], slices: pd.DataFrame, validation: pd.DataFrame,
                       operating: dict[str, Any], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Phase 4's chosen dropout against each other candidate, each at its own validation threshold.

    Specificity (and sensitivity) at the threshold each candidate was given for the target sensitivity, the
    difference chosen - other on the same slices with a paired patient-bootstrap 95 % interval: on validation
    (where the choice was made, so optimistic) and on the audit (held out). ``within_noise`` when the interval
    holds 0. One seed and one training run per candidate: the interval covers the patients, not the training.
    """
    chosen = [c for c in candidates if np.isclose(c["dropout"], float(operating.get("dropout", np.nan)))]
    if not chosen or len(candidates) < 2:
        return None
    best = chosen[0]
    sets = {"audit": (slices["label"].to_numpy().astype(int), slices["patient_id"].to_numpy().astype(str)),
            "validation": (validation["label"].to_numpy().astype(int),
                           validation["patient_id"].to_numpy().astype(str))}
    rows = []
    for k, other in enumerate(c for c in candidates if c is not best):
        row: dict[str, Any] = {"chosen_dropout": best["dropout"], "other_dropout": other["dropout"]}
        for name, (y, g) in sets.items():
            if y.size == 0:
                continue
            a = best[name] >= best["threshold"]
            b = other[name] >= other["threshold"]
            row[name] = {"specificity": paired_rate_difference(y, a, b, g, 0, n_boot, seed + 2 * k),
                         "sensitivity": paired_rate_difference(y, a, b, g, 1, n_boot, seed + 2 * k + 1)}
        rows.append(row)
    return {"chosen_dropout": best["dropout"], "candidates": [c["dropout"] for c in candidates],
            "comparisons": rows,
            "note": "one training run (one seed) per candidate: the intervals cover patient sampling only"}


def _study(paths: RunPaths) -> dict[str, Any] | None:
    path = paths.shortcut_study / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _phase3_flags(paths: RunPaths) -> dict[str, Any]:
    """Phase 3's attention flags whose 95 % interval lies above the uniform map's rate (``phase3/metrics.json``)."""
    path = paths.phase(3) / "metrics.json"
    if not path.is_file():
        return {}
    flags = (json.loads(path.read_text()).get("evidence") or {}).get("flags") or {}
    return {name: {"rate": f["value"], "ci95": f["ci"], "n": f["n"], "chance": f.get("uniform_map_rate", 0.0)}
            for name, f in flags.items()
            if name in ("device_focus", "calcification_focus", "bone_focus") and f.get("ci")
            and f["ci"][0] > f.get("uniform_map_rate", 0.0)}


def shortcut_section(paths: RunPaths, slices: pd.DataFrame, subgroups: dict[str, Any], *, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """The shortcuts found, how big, and the audit's results on slices without them.

    * ``found``: mimics the shortcut study (``<run>/shortcut_study/summary.json``, when it ran) caught by
      intervention or attention, with the size of the effect and the audit's strata beside;
    * ``associated``: mimics whose audit strata alone show it (specificity lower on slices with the mimic, or
      sensitivity higher, the difference's 95 % interval excluding 0); an association, possibly confounded by the
      slice's level in the head, not tested by intervention;
    * ``phase3``: Phase 3's attention flags whose interval lies above chance (a uniform map raises none);
    * ``without_shortcuts``: slice sensitivity and specificity on slices holding none of the found mimics (the
      associated ones when no study ran); a mask key that extends a found name (``catheter_metal_tip`` for
      ``catheter``) goes with it.
    """
    study = _study(paths)
    found: dict[str, dict[str, Any]] = {}
    if study:
        for mimic, e in study.get("shortcuts", {}).items():
            caught = e.get("caught", {})
            added = (e.get("intervention", {}).get("added") or {})
            if caught.get("intervention") or caught.get("attention"):
                sm = added.get("shortcut_model", {})
                found.setdefault(mimic, {})["study"] = {
                    "caught_by": [k for k in ("intervention", "attention") if caught.get(k)],
                    "added_mean_change": sm.get("mean_change"), "added_mean_change_ci95": sm.get("mean_change_ci95"),
                    "added_flip_rate": sm.get("flip_rate"), "added_flip_rate_ci95": sm.get("flip_rate_ci95"),
                    "added_slices": sm.get("n"),
                    "clean_model_mean_change": (added.get("clean_model") or {}).get("mean_change"),
                }
    associated: dict[str, dict[str, Any]] = {}
    for mimic, e in subgroups.get("mimics", {}).items():
        spec, sens = e["specificity_difference"], e["sensitivity_difference"]
        lower_spec = np.isfinite(spec["ci95"][1]) and spec["ci95"][1] < 0
        higher_sens = np.isfinite(sens["ci95"][0]) and sens["ci95"][0] > 0
        if lower_spec or higher_sens:
            strata = {"specificity_with": e["present"]["specificity"], "specificity_without": e["absent"]["specificity"],
                      "specificity_difference": spec, "sensitivity_with": e["present"]["sensitivity"],
                      "sensitivity_without": e["absent"]["sensitivity"], "sensitivity_difference": sens}
            if mimic in found:
                found[mimic]["strata"] = strata
            else:
                associated[mimic] = strata
    out: dict[str, Any] = {"study_ran": study is not None, "found": found, "associated": associated,
                           "phase3": _phase3_flags(paths)}
    suspects = list(found) if study is not None else list(associated)
    cols = [c for c in slices.columns if c.startswith("mimic_")
            and any(c[len("mimic_"):] == m or c[len("mimic_"):].startswith(m + "_") for m in suspects)]
    if cols:
        clear = ~slices[cols].to_numpy(dtype=bool).any(axis=1)
        y = slices["label"].to_numpy().astype(int)
        called = slices["called_bleed"].to_numpy().astype(bool)
        g = slices["patient_id"].to_numpy().astype(str)
        out["without_shortcuts"] = {
            "mimics": [c[len("mimic_"):] for c in cols], "slices": int(clear.sum()),
            "sensitivity": clustered_rate(called[clear & (y == 1)], g[clear & (y == 1)], n_boot=n_boot, seed=seed),
            "specificity": clustered_rate(~called[clear & (y == 0)], g[clear & (y == 0)], n_boot=n_boot,
                                          seed=seed + 1)}
    return out


def competition_section(y_true: np.ndarray, y_prob: np.ndarray, groups: Sequence[Any], *, n_boot: int = 2000,
                        seed: int = 0, label_intervals: bool = True) -> dict[str, Any]:
    """The RSNA 2019 competition metric of a six-label model with its patient-bootstrap interval, and each label's AUC.

    Args:
        y_true: (N, 6) labels 0 / 1 in :data:`brain_audit.rsna.LABEL_COLUMNS` order.
        y_prob: (N, 6) the model's probabilities, same order.
        groups: (N,) patient of each image; the bootstrap resamples whole patients (the metric is a mean over
            images, and a patient's slices are not independent).
        n_boot: bootstrap resamples, >= 10.
        label_intervals: also a patient-bootstrap interval for each label's AUC (``n_boot`` resamples each).

    Returns:
        dict: ``metric`` (its name), ``images``, ``patients``, ``weighted_log_loss`` (the point value on all images,
        :func:`brain_audit.model.competition.weighted_log_loss`), ``weighted_log_loss_ci95`` (percentile interval of
        the mean of :func:`~brain_audit.model.competition.image_log_losses` over patient resamples), ``interval``
        (how it was computed) and ``labels``: per label ``positives`` and ``auc`` (NaN with one class only), and
        ``auc_ci95`` with ``label_intervals``.

    References:
        Field CA, Welsh AH. Bootstrapping clustered data. JRSS-B 2007 (patient-cluster bootstrap).
    """
    losses = image_log_losses(y_true, y_prob)
    y = np.asarray(y_true).astype(int)
    p = np.asarray(y_prob, dtype=np.float64)
    g = np.asarray(groups).astype(str)
    interval = cluster_bootstrap_interval(losses, g, lambda v: float(np.mean(v)), n_boot=n_boot, seed=seed)
    labels: dict[str, Any] = {}
    for j, name in enumerate(LABEL_COLUMNS):
        row: dict[str, Any] = {"positives": int(y[:, j].sum())}
        if _both_classes(y[:, j]):
            if label_intervals:
                with warnings.catch_warnings():  # resamples with one class are skipped by bootstrap_ci
                    warnings.simplefilter("ignore", UndefinedMetricWarning)
                    auc, lo, hi = bootstrap_ci(roc_auc_score, y[:, j], p[:, j], g, n_boot=n_boot, seed=seed + 1 + j)
                row.update(auc=float(auc), auc_ci95=[float(lo), float(hi)])
            else:
                row["auc"] = float(roc_auc_score(y[:, j], p[:, j]))
        else:
            row.update(auc=float("nan"), note="one class only: AUC not estimable")
            if label_intervals:
                row["auc_ci95"] = [float("nan")] * 2
        labels[name] = row
    return {"metric": METRIC_NAME, "images": int(len(losses)), "patients": int(np.unique(g).size),
            "weighted_log_loss": float(losses.mean()),
            "weighted_log_loss_ci95": [interval["lower"], interval["upper"]],
            "interval": f"patient-cluster bootstrap, percentile, {interval['resamples']} resamples",
            "labels": labels}
