"""Results by subgroup: per hemorrhage subtype, and with and without each hemorrhage mimic present.

A model that learned "coil means bleed" scores well where coils and bleeds co-occur and fails on bleeds
without a coil and on normals with one; the overall AUC hides it, stratification shows it. Every proportion
carries a 95 % interval (patient-cluster bootstrap for slices, Wilson for patients); a group of fewer than
:data:`MIN_PATIENTS` patients is marked not estimable.

References:
    Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
    DeGrave AJ et al. AI for radiographic COVID-19 detection selects shortcuts over signal. Nat Mach Intell 2021.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from brain_audit.audit.statistics import cluster_bootstrap, confusion_at, wilson_interval
from brain_audit.rsna import SUBTYPES

__all__ = ["MIN_PATIENTS", "clustered_rate", "patient_rate", "stratified_metrics", "subgroup_report"]

#: Groups of fewer patients are reported as not estimable (their intervals span most of [0, 1]).
MIN_PATIENTS = 10


def stratified_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    presence: Any,
    threshold: float = 0.5,
) -> Any:
    """Discrimination by presence of each mimic: a shortcut shows as metrics that move with the mimic.

    A model that learned "coil means bleed" scores well where coils and bleeds co-occur and fails
    on bleeds without a coil and on normals with one; the overall AUC hides it. Stratifying by the
    mimic is the first of the shortcut tests that do not rely on saliency (Geirhos et al. 2020;
    DeGrave et al. 2021).

    Args:
        y_true: (N,) 0/1 labels (``any``, or one subtype).
        y_prob: (N,) probabilities.
        presence: per-slice mimic presence: a DataFrame or a mapping ``name -> (N,) bool``
            (e.g. rows of :func:`mimic_presence`, or phantom truth).
        threshold: decision threshold for sensitivity and specificity.

    Returns:
        pandas.DataFrame with one row for all slices and two per mimic (present / absent): ``mimic``,
        ``present``, ``n``, ``n_positive``, ``prevalence``, ``auc`` (scikit-learn ``roc_auc_score``;
        NaN with one class), ``sensitivity``, ``specificity`` (:func:`brain_audit.audit.statistics.confusion_at`).

    References:
        Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
        DeGrave AJ et al. AI for radiographic COVID-19 detection selects shortcuts over signal.
        Nat Mach Intell 2021.
    """


    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    table = pd.DataFrame(presence) if not isinstance(presence, pd.DataFrame) else presence
    if len(table) != y.size or p.size != y.size:
        raise ValueError(
            f"`y_true`, `y_prob` and `presence` must have one row per slice. Got {y.size}, {p.size} and {len(table)} instead."
        )

    def row(mimic: str, present: Any, sel: np.ndarray) -> dict[str, Any]:
        ys, ps = y[sel], p[sel]
        rec: dict[str, Any] = {"mimic": mimic, "present": present, "n": int(sel.sum()), "n_positive": int(ys.sum())}
        rec["prevalence"] = float(ys.mean()) if ys.size else float("nan")
        rec["auc"] = float(roc_auc_score(ys, ps)) if 0 < ys.sum() < ys.size else float("nan")
        if ys.size:
            cm = confusion_at(ys, ps, threshold)
            rec["sensitivity"], rec["specificity"] = cm["sensitivity"], cm["specificity"]
        else:
            rec["sensitivity"] = rec["specificity"] = float("nan")
        return rec

    rows = [row("all", "any", np.ones(y.size, dtype=bool))]
    for mimic in table.columns:
        flag = table[mimic].to_numpy().astype(bool)
        rows.append(row(str(mimic), True, flag))
        rows.append(row(str(mimic), False, ~flag))
    return pd.DataFrame(rows)



def patient_rate(hits: Sequence[bool], alpha: float = 0.05) -> dict[str, Any]:
    """A proportion over patients (one row each) with its Wilson 95 % interval; NaN for an empty group."""
    h = np.asarray(hits, dtype=bool).ravel()
    n, k = int(h.size), int(h.sum())
    lo, hi = wilson_interval(k, n, alpha) if n else (float("nan"), float("nan"))
    return {"successes": k, "n": n, "patients": n, "estimate": k / n if n else float("nan"), "ci95": [lo, hi],
            "method": "wilson", "estimable": n >= MIN_PATIENTS}


def clustered_rate(hits: Sequence[bool], groups: Sequence[Any], *, n_boot: int = 2000, seed: int = 0,
                   alpha: float = 0.05) -> dict[str, Any]:
    """A proportion over slices clustered in patients, with a 95 % interval that is never of zero width.

    Percentile bootstrap resampling patients (:func:`brain_audit.audit.statistics.cluster_bootstrap`); when
    every resample gives the same value (e.g. 14 of 14) or too few are defined, the Wilson interval on the slices
    (as if independent, so too narrow) stands in and ``method`` says so.
    """
    h = np.asarray(hits, dtype=bool).ravel()
    g = np.asarray(groups).astype(str).ravel()
    n, k = int(h.size), int(h.sum())
    out = {"successes": k, "n": n, "patients": int(np.unique(g).size), "estimate": k / n if n else float("nan")}
    if n == 0:
        return out | {"ci95": [float("nan")] * 2, "method": "none", "estimable": False}
    _, lo, hi = cluster_bootstrap(h.astype(float), g, np.mean, n_boot=n_boot, seed=seed, alpha=alpha)
    method = "patient bootstrap"
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9:
        lo, hi = wilson_interval(k, n, alpha)
        method = "wilson (slices as independent)"
    return out | {"ci95": [float(lo), float(hi)], "method": method, "estimable": out["patients"] >= MIN_PATIENTS}


def _difference(a: dict[str, Any], b: dict[str, Any], rows_a: np.ndarray, rows_b: np.ndarray, groups: np.ndarray,
                n_boot: int, seed: int) -> dict[str, Any]:
    """``a - b`` of two clustered rates over overlapping patients, by a patient bootstrap of both at once."""
    if not (a["n"] and b["n"]):
        return {"difference": float("nan"), "ci95": [float("nan")] * 2}
    values = np.column_stack([rows_a, rows_b]).astype(float)  # (N, 2): a row's hit in stratum a or b, else NaN

    def stat(v: np.ndarray) -> float:
        x, y = v[:, 0], v[:, 1]
        return float(np.nanmean(x) - np.nanmean(y)) if np.isfinite(x).any() and np.isfinite(y).any() else np.nan

    with warnings.catch_warnings():  # a resample without one of the two strata is skipped (NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        point, lo, hi = cluster_bootstrap(values, groups, stat, n_boot=n_boot, seed=seed)
    method = "patient bootstrap"
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9:  # unpaired Newcombe hybrid score (method 10)
        pa, pb = a["estimate"], b["estimate"]
        la, ua = wilson_interval(a["successes"], a["n"])
        lb, ub = wilson_interval(b["successes"], b["n"])
        lo = pa - pb - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
        hi = pa - pb + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
        method = "newcombe (slices as independent)"
    return {"difference": float(point), "ci95": [float(lo), float(hi)], "method": method}


def _sens_spec(y: np.ndarray, called: np.ndarray, groups: np.ndarray, sel: np.ndarray, n_boot: int,
               seed: int) -> dict[str, Any]:
    pos, neg = sel & (y == 1), sel & (y == 0)
    return {"slices": int(sel.sum()), "patients": int(np.unique(groups[sel]).size),
            "sensitivity": clustered_rate(called[pos], groups[pos], n_boot=n_boot, seed=seed),
            "specificity": clustered_rate(~called[neg], groups[neg], n_boot=n_boot, seed=seed + 1)}


def subgroup_report(slices: pd.DataFrame, patients: pd.DataFrame, mimics: Sequence[str] = (), *,
                    n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Sensitivity per hemorrhage subtype and results with and without each mimic, with 95 % intervals.

    Args:
        slices: one row per audited slice: ``patient_id``, ``label`` (0/1), ``called_bleed`` (0/1 at the slice
            threshold), a 0/1 column per subtype of :data:`brain_audit.rsna.SUBTYPES`, and ``mimic_<name>`` (bool)
            per name of ``mimics``.
        patients: one row per patient: ``patient_id``, ``called_bleed`` (at the patient threshold),
            ``subtypes_present`` (list of subtypes on any of its slices).
        mimics: the mimics whose presence was recorded (a phantom's truth; none for real data).

    Returns:
        ``{"subtypes": {subtype: {"patients": rate, "slices": rate}}, "mimics": {mimic: {"present": ...,
        "absent": ..., "specificity_difference": ..., "sensitivity_difference": ...}}}``; a rate is
        :func:`patient_rate` / :func:`clustered_rate`'s dict (``estimable`` False under :data:`MIN_PATIENTS`).
    """
    y = slices["label"].to_numpy().astype(int)
    called = slices["called_bleed"].to_numpy().astype(bool)
    groups = slices["patient_id"].to_numpy().astype(str)
    out: dict[str, Any] = {"subtypes": {}, "mimics": {}}
    present = patients["subtypes_present"]
    for k, s in enumerate(SUBTYPES):
        has = present.map(lambda v, s=s: s in v).to_numpy(dtype=bool)
        sel = slices[s].to_numpy().astype(bool)
        out["subtypes"][s] = {
            "patients": patient_rate(patients["called_bleed"].to_numpy(dtype=bool)[has]),
            "slices": clustered_rate(called[sel], groups[sel], n_boot=n_boot, seed=seed + k),
        }
    for k, m in enumerate(mimics):
        flag = slices[f"mimic_{m}"].to_numpy().astype(bool)
        with_m = _sens_spec(y, called, groups, flag, n_boot, seed + 10 * k)
        without = _sens_spec(y, called, groups, ~flag, n_boot, seed + 10 * k + 2)
        diffs = {}
        for name, cls, hit in (("sensitivity", 1, called), ("specificity", 0, ~called)):
            rows = y == cls
            a = np.where(rows & flag, hit, np.nan)
            b = np.where(rows & ~flag, hit, np.nan)
            keep = rows
            diffs[f"{name}_difference"] = _difference(with_m[name], without[name], a[keep], b[keep], groups[keep],
                                                      n_boot, seed + 10 * k + 4)
        out["mimics"][m] = {"present": with_m, "absent": without, **diffs}
    return out
