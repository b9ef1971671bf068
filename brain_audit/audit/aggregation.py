"""Slice versus volume: the study-level sequence model against the max-slice rule on the same audit patients.

Two ways to score a patient from its slices are compared, each at the thresholds chosen for it on validation
(never on the audit):

* **max-slice rule**: the Phase-4 slice model scores each slice alone; a patient is its most suspicious slice;
* **study model**: Phase 5's sequence model (:mod:`brain_audit.model.sequence`) rescores each slice from its
  series read in z order; a patient is its most suspicious rescored slice.

For patients and for slices: AUC, sensitivity and specificity of both, and the difference study - max with a
*paired* 95 % interval (the same patients resampled for both; :func:`brain_audit.audit.sections.paired_rate_difference`
for rates, a patient bootstrap for the AUC difference). A difference whose interval holds 0 is reported as
within noise. :func:`context_table` shows where along z context changes the calls: bleeding slices at the
edge of a bleed's extent in z, inside it or alone, and non-bleeding slices next to a bleed or away from one;
with lesion masks (the phantom's truth) also small against large bleeds by area.

One trained model per aggregation (one seed): the intervals cover patient sampling, not training variance.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from brain_audit.audit.sections import paired_rate_difference
from brain_audit.audit.statistics import (
    cluster_bootstrap,
    operating_point_report,
    patient_level,
    rank_auc,
    wilson_interval,
)
from brain_audit.model.predictions import slice_features
from brain_audit.model.sequence import embedding_model, score_series
from brain_audit.model.weights import load_model
from brain_audit.run_layout import RunPaths

__all__ = ["RULES", "aggregation_section", "auc_difference", "context_groups", "context_table", "study_probabilities"]

#: The two aggregations, in the order every table shows them.
RULES = ("max_slice", "study_model")


def auc_difference(y: np.ndarray, p_first: np.ndarray, p_second: np.ndarray, groups: np.ndarray, *,
                   n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """AUC(first) - AUC(second) on the same rows with a paired percentile bootstrap resampling ``groups``.

    When every resample gives one value (e.g. both AUCs are 1), the interval of zero width is replaced by the
    MOVER combination of the two AUCs' Wilson intervals on the smaller class (Newcombe 1998; Zou & Donner 2008),
    which ignores the pairing and is therefore conservative.

    Returns:
        dict with first, second, difference, ci95, method, within_noise.
    """
    y = np.asarray(y).astype(int)
    g = np.asarray(groups).astype(str)
    a, b = rank_auc(y, p_first), rank_auc(y, p_second)
    out: dict[str, Any] = {"first": a, "second": b, "difference": a - b}
    if not (np.isfinite(a) and np.isfinite(b)):
        return out | {"ci95": [float("nan")] * 2, "method": "undefined (one class)", "within_noise": None}

    def stat(rows: np.ndarray) -> float:
        return rank_auc(rows[:, 0], rows[:, 1]) - rank_auc(rows[:, 0], rows[:, 2])

    _, lo, hi = cluster_bootstrap(np.column_stack([y, p_first, p_second]), g, stat, n_boot=n_boot, seed=seed)
    method = "paired patient bootstrap (percentile)"
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9:
        n_small = int(min(np.unique(g[y == 1]).size, np.unique(g[y == 0]).size))
        la, ua = wilson_interval(int(round(a * n_small)), n_small)
        lb, ub = wilson_interval(int(round(b * n_small)), n_small)
        d = a - b
        lo = d - math.sqrt((a - la) ** 2 + (ub - b) ** 2)
        hi = d + math.sqrt((ua - a) ** 2 + (b - lb) ** 2)
        method = "MOVER on Wilson intervals of each AUC (bootstrap degenerate; ignores pairing, conservative)"
    return out | {"ci95": [float(lo), float(hi)], "method": method, "within_noise": bool(lo <= 0 <= hi)}


def study_probabilities(paths: RunPaths, slice_model: Any, cache: Any, ids: Sequence[str],
                        column: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The slice model's and Phase 5's probabilities of output ``column`` for cached slices, and Phase 5's
    operating point; None when the run has no finished Phase 5.

    ``slice_model`` must be the Phase-4 model the study model was trained on (its embeddings are the study model's
    input). Each series of ``ids`` is read in z order; a series is what ``ids`` hold of it.

    Returns:
        ``(p_slice, p_study, operating)``: float64 (N,) each, rows in ``ids`` order, and ``operating_point.json``.
    """
    model_path, op_path = paths.model(5), paths.phase(5) / "operating_point.json"
    if not (model_path.is_file() and op_path.is_file() and (paths.phase(5) / "metrics.json").is_file()):
        return None
    operating = json.loads(op_path.read_text())
    ids = list(ids)
    emb, prob = slice_features(embedding_model(slice_model), cache, ids)
    study = load_model(model_path, compile=False)
    p_study = score_series(study, cache.table.loc[ids], emb, prob)
    return prob[:, column], p_study[:, column], operating


def _level(y: np.ndarray, p: dict[str, np.ndarray], thresholds: dict[str, float], groups: np.ndarray | None,
           units: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Both rules' reports at their thresholds and the paired differences (study - max)."""
    out: dict[str, Any] = {}
    for k, rule in enumerate(RULES):
        r = operating_point_report(y, p[rule], thresholds[rule], prevalences=(), groups=groups, n_boot=n_boot,
                                   seed=seed + 3 * k)
        r.pop("deployment", None)
        out[rule] = r | {"threshold": thresholds[rule]}
    called = {rule: p[rule] >= thresholds[rule] for rule in RULES}
    out["difference"] = {
        "auc": auc_difference(y, p["study_model"], p["max_slice"], units, n_boot=n_boot, seed=seed + 10),
        "sensitivity": paired_rate_difference(y, called["study_model"], called["max_slice"], units, 1, n_boot,
                                              seed + 11),
        "specificity": paired_rate_difference(y, called["study_model"], called["max_slice"], units, 0, n_boot,
                                              seed + 12),
    }
    return out


def _verdict(name: str, d: dict[str, Any]) -> str:
    lo, hi = d["ci95"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{name}: not estimable"
    size = f"{d['difference']:+.3f} (95 % CI {lo:+.3f} to {hi:+.3f})"
    if lo <= 0 <= hi:
        return f"{name}: within noise, study model - max-slice rule {size}"
    better = "study model" if d["difference"] > 0 else "max-slice rule"
    return f"{name}: the {better} is better by {abs(d['difference']):.3f}, study model - max-slice rule {size}"


def context_groups(slices: pd.DataFrame, lesion_area: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Where each slice sits along z relative to the bleeds of its series.

    Args:
        slices: with image_id, series_id, z, label (any).
        lesion_area: image ID -> lesion area (pixels) of bleeding slices, from segmentation masks; optional.

    Returns:
        ``slices``' rows (same order) with ``position``: for bleeding slices ``"edge"`` (first or last of a run
        of >= 2 consecutive bleeding slices in z), ``"interior"`` or ``"single"`` (a run of one); for the others
        ``"next to a bleed"`` (a z-neighbour in the series bleeds) or ``"away from a bleed"``; and ``size``:
        ``"small"`` / ``"large"`` (below / at least the median area of the bleeding slices with a mask), else "".
    """
    t = slices[["image_id", "series_id", "z", "label"]].copy()
    t["_row"] = np.arange(len(t))
    t = t.sort_values(["series_id", "z", "image_id"], kind="stable")
    lab = t["label"].to_numpy().astype(int)
    same_prev = np.r_[False, t["series_id"].to_numpy()[1:] == t["series_id"].to_numpy()[:-1]]
    same_next = np.r_[same_prev[1:], False]
    prev = np.r_[0, lab[:-1]] * same_prev
    nxt = np.r_[lab[1:], 0] * same_next
    pos = np.where(lab == 1,
                   np.where((prev == 0) & (nxt == 0), "single", np.where((prev == 1) & (nxt == 1), "interior", "edge")),
                   np.where((prev == 1) | (nxt == 1), "next to a bleed", "away from a bleed"))
    t["position"] = pos
    t["size"] = ""
    if lesion_area:
        area = t["image_id"].map(lambda i: lesion_area.get(str(i), np.nan)).to_numpy(dtype=float)
        known = (lab == 1) & np.isfinite(area) & (area > 0)
        if known.any():
            median = float(np.median(area[known]))
            t.loc[known, "size"] = np.where(area[known] < median, "small", "large")
    t = t.sort_values("_row")
    out = slices.copy()
    out["position"] = t["position"].to_numpy()
    out["size"] = t["size"].to_numpy()
    return out


def context_table(slices: pd.DataFrame, thresholds: dict[str, float], *, n_boot: int = 2000,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Per group of :func:`context_groups`: the share called correctly by each rule at its slice threshold
    (sensitivity for bleeding groups, specificity for the others) and the paired difference study - max with
    its patient-bootstrap interval. ``slices`` needs position, size, label, patient_id and both rules'
    ``probability`` columns (``probability`` for the max-slice rule, ``probability_study``)."""
    y = slices["label"].to_numpy().astype(int)
    g = slices["patient_id"].to_numpy().astype(str)
    a = slices["probability_study"].to_numpy() >= thresholds["study_model"]
    b = slices["probability"].to_numpy() >= thresholds["max_slice"]
    groups: list[tuple[str, np.ndarray, int]] = []
    for name in ("single", "edge", "interior"):
        groups.append((f"bleeding, {name}", (slices["position"] == name).to_numpy(), 1))
    for name in ("small", "large"):
        groups.append((f"bleeding, {name}", (slices["size"] == name).to_numpy(), 1))
    small_edge = (slices["size"] == "small").to_numpy() & slices["position"].isin(["edge", "single"]).to_numpy()
    groups.append(("bleeding, small and at an edge or single", small_edge, 1))
    for name in ("next to a bleed", "away from a bleed"):
        groups.append((f"not bleeding, {name}", (slices["position"] == name).to_numpy(), 0))
    rows = []
    for k, (name, sel, cls) in enumerate(groups):
        sel = sel & (y == cls)
        if not sel.any():
            continue
        d = paired_rate_difference(y[sel], a[sel], b[sel], g[sel], cls, n_boot, seed + k)
        rows.append({"group": name, "measure": "sensitivity" if cls else "specificity", "slices": d["n"],
                     "patients": d["patients"], "max_slice": d["second"], "study_model": d["first"],
                     "difference": d["difference"], "ci95": d["ci95"], "method": d["method"],
                     "within_noise": d["within_noise"]})
    return rows


def aggregation_section(slices: pd.DataFrame, operating: Mapping[str, Any], study_operating: Mapping[str, Any], *,
                        lesion_area: Mapping[str, float] | None = None, n_boot: int = 2000,
                        seed: int = 0) -> dict[str, Any]:
    """The audit's "slice versus volume" section.

    Args:
        slices: the audit slices: image_id, patient_id, series_id, z, label (any), ``probability`` (the slice
            model) and ``probability_study`` (the study model), for ``any``.
        operating: Phase 4's operating point (``threshold``, ``patient_threshold``), chosen on validation.
        study_operating: Phase 5's, chosen on validation the same way.
        lesion_area: image ID -> lesion area of bleeding slices (pixels), for the size rows of the context table.
        n_boot: bootstrap resamples (patients).
        seed: bootstrap seed.

    Returns:
        dict with slice_level and patient_level (each: ``max_slice`` and ``study_model`` reports with
        intervals, ``difference`` of auc / sensitivity / specificity with paired intervals), verdict (lines),
        context (:func:`context_table`) and note.
    """
    y = slices["label"].to_numpy().astype(int)
    patients = slices["patient_id"].to_numpy().astype(str)
    p = {"max_slice": slices["probability"].to_numpy(dtype=float),
         "study_model": slices["probability_study"].to_numpy(dtype=float)}
    slice_thr = {"max_slice": float(operating["threshold"]), "study_model": float(study_operating["threshold"])}
    pat_thr = {}
    for rule, op in (("max_slice", operating), ("study_model", study_operating)):
        t = op.get("patient_threshold")
        pat_thr[rule] = float(op["threshold"] if t is None else t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate bootstraps: recorded in each method
        slice_level = _level(y, p, slice_thr, patients, patients, n_boot, seed)
        pat_ids, y_pat, _ = patient_level(patients, y, p["max_slice"])
        p_pat = {rule: patient_level(patients, y, p[rule])[2] for rule in RULES}
        patient = _level(y_pat, p_pat, pat_thr, None, pat_ids, n_boot, seed + 100)
        table = context_table(context_groups(slices, lesion_area), slice_thr, n_boot=n_boot, seed=seed + 200)
    verdict = [_verdict(f"patients, {m}", patient["difference"][m]) for m in ("auc", "sensitivity", "specificity")]
    verdict += [_verdict(f"slices, {m}", slice_level["difference"][m]) for m in ("auc", "sensitivity", "specificity")]
    return {"patients": int(len(pat_ids)), "slices": int(len(y)), "slice_level": slice_level,
            "patient_level": patient, "verdict": verdict, "context": table,
            "note": "one trained model per aggregation (one seed): the intervals cover patient sampling only; "
                    "each rule is judged at the thresholds chosen for it on validation"}
