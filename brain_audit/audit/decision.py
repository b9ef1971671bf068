"""Decision-curve analysis: is acting on the model better than scanning everyone or no one?

A threshold probability ``pt`` states how a reader weighs the two errors: at ``pt`` one is indifferent
between a missed bleed and ``(1 - pt) / pt`` needless work-ups. The net benefit counts true positives per
scan minus false positives weighted by ``pt / (1 - pt)``; a model is worth using at ``pt`` only where its
curve lies above both "treat all" (call every scan a bleed) and "treat none" (0).

References:
    Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
    Med Decis Making 2006;26:565-574.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from brain_audit.audit.statistics import check_labels_scores, cluster_bootstrap

__all__ = ["net_benefit", "net_benefit_ci"]


def _check(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] | np.ndarray,
           prevalence: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, pp = check_labels_scores(y, p, ("y", "p"))
    pt = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if pt.ndim != 1 or pt.size == 0 or not ((pt > 0) & (pt < 1)).all():
        raise ValueError(f"`thresholds` must be a non-empty 1-D sequence in (0, 1). Got {np.asarray(thresholds).tolist()!r} instead.")
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise ValueError(f"`prevalence` must be in (0, 1). Got {prevalence!r} instead.")
    return yy, pp, pt


def _model_net_benefit(y: np.ndarray, p: np.ndarray, pt: np.ndarray, prevalence: float | None) -> np.ndarray:
    """Net benefit of calling ``p >= pt`` positive, for each threshold in ``pt``."""
    called = p[None, :] >= pt[:, None]
    tp = np.sum(called & (y == 1), axis=1)
    fp = np.sum(called & (y == 0), axis=1)
    w = pt / (1.0 - pt)
    if prevalence is None:
        return tp / y.size - fp / y.size * w
    pos, neg = int(y.sum()), int(y.size - y.sum())
    se = tp / pos if pos else np.full(pt.size, np.nan)
    fpr = fp / neg if neg else np.full(pt.size, np.nan)
    return se * prevalence - fpr * (1.0 - prevalence) * w


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] | np.ndarray,
                prevalence: float | None = None) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none, at each threshold probability.

    The model calls a scan positive when ``p >= threshold``. With ``prevalence`` None, on the audit data
    itself: ``NB = TP / n - FP / n * pt / (1 - pt)`` and ``treat_all = pi - (1 - pi) pt / (1 - pt)`` with
    ``pi`` the audit's prevalence. With ``prevalence`` given (a deployment prevalence ``pi'``), from the
    sensitivity and specificity at each threshold: ``NB = se pi' - (1 - sp)(1 - pi') pt / (1 - pt)`` and
    ``treat_all = pi' - (1 - pi') pt / (1 - pt)``; the two agree (up to rounding) when ``pi'`` is the audit's
    prevalence. Net benefit is in true positives per scan.

    Args:
        y: (N,) 0/1 outcomes (scans, or patients).
        p: (N,) predicted probabilities.
        thresholds: threshold probabilities ``pt``, each in (0, 1).
        prevalence: deployment prevalence in (0, 1), or None for the audit's own.

    Returns:
        DataFrame, one row per threshold: threshold, net_benefit, treat_all, treat_none (0). With a
        ``prevalence`` and one class missing from ``y``, net_benefit is NaN.

    References:
        Vickers AJ, Elkin EB. Decision curve analysis. Med Decis Making 2006;26:565-574.
    """
    yy, pp, pt = _check(y, p, thresholds, prevalence)
    pi = yy.mean() if prevalence is None else prevalence
    w = pt / (1.0 - pt)
    return pd.DataFrame({
        "threshold": pt,
        "net_benefit": _model_net_benefit(yy, pp, pt, prevalence),
        "treat_all": pi - (1.0 - pi) * w,
        "treat_none": np.zeros(pt.size),
    })


def net_benefit_ci(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float] | np.ndarray,
                   prevalence: float | None = None, groups: Sequence[Any] | None = None,
                   n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`net_benefit` with a percentile bootstrap interval of the model's net benefit at each threshold.

    Resamples patients when ``groups`` is given (:func:`brain_audit.audit.statistics.cluster_bootstrap`),
    rows otherwise; every threshold uses the same resamples (same ``seed``).

    Returns:
        The :func:`net_benefit` table with columns net_benefit_lower and net_benefit_upper added.
    """
    table = net_benefit(y, p, thresholds, prevalence)
    yy, pp, pt = _check(y, p, thresholds, prevalence)
    g = np.arange(yy.size).astype(str) if groups is None else np.asarray(groups).astype(str)
    if g.shape != yy.shape:
        raise ValueError(f"`groups` must have {yy.size} entries. Got {g.size} instead.")
    rows = np.column_stack([yy, pp])
    lower, upper = [], []
    for t in pt:
        def statistic(r: np.ndarray, t: float = t) -> float:
            return float(_model_net_benefit(r[:, 0].astype(np.int64), r[:, 1], np.array([t]), prevalence)[0])

        _, lo, hi = cluster_bootstrap(rows, g, statistic, n_boot=n_boot, seed=seed, alpha=alpha)
        lower.append(lo)
        upper.append(hi)
    table["net_benefit_lower"] = lower
    table["net_benefit_upper"] = upper
    return table
