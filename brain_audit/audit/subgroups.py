"""Discrimination by subgroup: metrics with and without each hemorrhage mimic present.

A model that learned "coil means bleed" scores well where coils and bleeds co-occur and fails on bleeds
without a coil and on normals with one; the overall AUC hides it, stratification shows it.

References:
    Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
    DeGrave AJ et al. AI for radiographic COVID-19 detection selects shortcuts over signal. Nat Mach Intell 2021.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from brain_audit.audit.statistics import confusion_at

__all__ = ["stratified_metrics"]


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

