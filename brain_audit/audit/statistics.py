"""Clinical metrics: operating thresholds, prevalence-adjusted predictive values, calibration,
patient-level aggregation and bootstrap confidence intervals.

scikit-learn computes the curves (``roc_curve``, ``precision_recall_curve``,
``roc_auc_score``, ``average_precision_score``); this module adds what a clinical
reader asks next:

* the threshold that keeps sensitivity at a target (missed bleeds are the costly error),
* what the positive predictive value becomes at deployment prevalence (the seed's
  "prevalence trap": trained 50/50, deployed where 1-5 % of scans bleed), by Bayes' rule,
* calibration (expected calibration error, reliability bins),
* patient-level results (a patient is positive when any slice is) and
* confidence intervals by bootstrap over patients, so correlated slices of one patient
  never count as independent evidence.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "wilson_interval",
    "paired_difference_interval",
    "cluster_bootstrap",
    "threshold_for_sensitivity",
    "confusion_at",
    "predictive_values_at_prevalence",
    "calibration_bins",
    "expected_calibration_error",
    "patient_level",
    "bootstrap_ci",
    "operating_point_report",
]


def _validate(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"`y_true` and `y_prob` must have the same length. Got {y.size} and {p.size} instead.")
    if y.size == 0:
        raise ValueError("`y_true` must not be empty. Got 0 samples instead.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"`y_true` must hold only 0 and 1. Got values {sorted(set(y.tolist()))[:5]} instead.")
    if not np.isfinite(p).all():
        raise ValueError("`y_prob` must be finite. Got NaN or infinity instead.")
    return y, p


def threshold_for_sensitivity(y_true: np.ndarray, y_prob: np.ndarray, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity (recall of class 1) is at least ``target``.

    A slice is called positive when ``y_prob >= threshold``. The highest such threshold
    gives the best specificity among operating points that meet the sensitivity target.

    Args:
        y_true: (N,) 0/1 labels.
        y_prob: (N,) scores, higher = more likely positive.
        target: sensitivity in (0, 1].

    Returns:
        The threshold (one of the observed scores).

    Raises:
        ValueError: no positive label, or bad arguments.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"`target` must be in (0, 1]. Got {target!r} instead.")
    y, p = _validate(y_true, y_prob)
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0:
        raise ValueError("`y_true` has no positive sample; sensitivity is undefined.")
    k = int(np.ceil(target * pos.size - 1e-9))  # positives that must score >= threshold
    return float(pos[max(k, 1) - 1])


def confusion_at(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts and rates at ``threshold`` (positive when ``y_prob >= threshold``).

    Returns:
        dict with tp, fp, tn, fn (int) and sensitivity, specificity, ppv, npv, accuracy
        (float; NaN where the denominator is 0).
    """
    y, p = _validate(y_true, y_prob)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "accuracy": ratio(tp + tn, y.size),
    }


def predictive_values_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> dict[str, float]:
    """PPV and NPV at a deployment prevalence, by Bayes' rule.

    ``PPV = se * pi / (se * pi + (1 - sp) * (1 - pi))`` and
    ``NPV = sp * (1 - pi) / (sp * (1 - pi) + (1 - se) * pi)``.

    References:
        Altman DG, Bland JM. Diagnostic tests 2: predictive values. BMJ 1994;309:102.
    """
    for name, v in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1]. Got {v!r} instead.")
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"`prevalence` must be in (0, 1). Got {prevalence!r} instead.")
    se, sp, pi = sensitivity, specificity, prevalence
    ppv_den = se * pi + (1 - sp) * (1 - pi)
    npv_den = sp * (1 - pi) + (1 - se) * pi
    return {
        "prevalence": pi,
        "ppv": se * pi / ppv_den if ppv_den else float("nan"),
        "npv": sp * (1 - pi) / npv_den if npv_den else float("nan"),
        "false_alarms_per_true_bleed": (1 - sp) * (1 - pi) / (se * pi) if se * pi else float("inf"),
    }


def calibration_bins(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Reliability diagram data with equal-width bins over [0, 1].

    Returns:
        One dict per non-empty bin: lower, upper, count, mean_predicted, observed_rate.
    """
    if n_bins < 1:
        raise ValueError(f"`n_bins` must be >= 1. Got {n_bins!r} instead.")
    y, p = _validate(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": int(m.sum()),
                    "mean_predicted": float(p[m].mean()),
                    "observed_rate": float(y[m].mean()),
                }
            )
    return out


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |observed rate - mean predicted| over equal-width bins.

    References:
        Naeini MP, Cooper G, Hauskrecht M. Obtaining well calibrated probabilities using
        Bayesian binning. AAAI 2015; Guo C et al. On calibration of modern neural networks. ICML 2017.
    """
    bins = calibration_bins(y_true, y_prob, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["observed_rate"] - b["mean_predicted"]) for b in bins) / n)


def patient_level(
    patient_ids: Sequence[str], y_true: np.ndarray, y_prob: np.ndarray, reduce: str = "max"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate slice results per patient: a patient bleeds when any of its slices does.

    Args:
        patient_ids: (N,) patient of each slice.
        y_true: (N,) slice labels 0/1.
        y_prob: (N,) slice scores.
        reduce: ``"max"`` (the patient's most suspicious slice) or ``"mean"``.

    Returns:
        (patients, y_patient, p_patient): sorted unique patient IDs, their labels (any
        slice positive) and their scores.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"`reduce` must be 'max' or 'mean'. Got {reduce!r} instead.")
    y, p = _validate(y_true, y_prob)
    ids = np.asarray(patient_ids).astype(str)
    if ids.shape != y.shape:
        raise ValueError(f"`patient_ids` must have {y.size} entries. Got {ids.size} instead.")
    patients, inv = np.unique(ids, return_inverse=True)
    y_pat = np.zeros(patients.size, dtype=np.int64)
    np.maximum.at(y_pat, inv, y)
    if reduce == "max":
        p_pat = np.full(patients.size, -np.inf)
        np.maximum.at(p_pat, inv, p)
    else:
        p_pat = np.bincount(inv, weights=p) / np.bincount(inv)
    return patients, y_pat, p_pat


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``.

    Never of zero width for ``n >= 1`` (0 of n gives ``(0, z^2 / (n + z^2))``), unlike the Wald interval.

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials, >= 1.
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        ``(lower, upper)``, both in [0, 1].

    References:
        Wilson EB. JASA 1927; Brown LD, Cai TT, DasGupta A. Interval estimation for a binomial
        proportion. Statistical Science 2001.
    """
    if isinstance(n, bool) or not float(n).is_integer() or n < 1:
        raise ValueError(f"`n` must be an integer >= 1. Got {n!r} instead.")
    if isinstance(successes, bool) or not float(successes).is_integer() or not 0 <= successes <= n:
        raise ValueError(f"`successes` must be an integer in [0, n={n}]. Got {successes!r} instead.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1). Got {alpha!r} instead.")
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(both: int, first_only: int, second_only: int, neither: int,
                               alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``p1 - p2`` for two proportions measured on the same n units.

    ``p1 = (both + first_only) / n``, ``p2 = (both + second_only) / n``: the Wilson intervals of p1 and p2
    combined with the correlation phi of the paired table (phi taken 0 when a margin is empty, and
    continuity-corrected as Newcombe's method 10). Never of zero width for n >= 1, unlike a bootstrap of a
    table whose units all agree.

    Returns:
        ``(lower, upper)``, within [-1, 1].

    References:
        Newcombe RG. Improved confidence intervals for the difference between binomial proportions based on
        paired data. Stat Med 1998;17:2635-2650 (method 10).
    """
    cells = (both, first_only, second_only, neither)
    if any(isinstance(c, bool) or not float(c).is_integer() or c < 0 for c in cells) or sum(cells) < 1:
        raise ValueError(f"the four cells must be integers >= 0 with a sum >= 1. Got {cells!r} instead.")
    a, b, c, d = (int(x) for x in cells)
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, alpha)
    l2, u2 = wilson_interval(a + c, n, alpha)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(margins)
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def cluster_bootstrap(
    values: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``statistic(values)``, resampling whole groups (patients).

    Groups are drawn with replacement, all their rows coming along, in the order and with the draws of
    :func:`brain_audit.audit.statistics.bootstrap_ci` (groups sorted, ``rng.integers(0, k, size=k)`` per
    resample), so both give the same interval for the same statistic and seed. Resamples where the
    statistic is not finite are skipped; with fewer than half of them finite the interval is NaN.

    Args:
        values: (N,) or (N, C) array, one row per slice.
        groups: (N,) group (patient) of each row.
        statistic: maps a resample of rows (same trailing shape as ``values``) to a float.
        n_boot: resamples, >= 10.
        seed: seed of ``numpy.random.default_rng``.
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        ``(point estimate on all rows, lower, upper)``.

    References:
        Efron B, Tibshirani RJ. An Introduction to the Bootstrap. 1993, ch. 13; Field CA, Welsh AH.
        JRSS-B 2007.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"`n_boot` must be an int >= 10. Got {n_boot!r} instead.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1). Got {alpha!r} instead.")
    v = np.asarray(values)
    g = np.asarray(groups).astype(str)
    if v.shape[:1] != g.shape or v.size == 0:
        raise ValueError(f"`groups` must have one entry per row of `values` ({len(v)}). Got {g.size} instead.")
    point = float(statistic(v))
    _, inv = np.unique(g, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = counts.size
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, k, size=k)
        lengths = counts[pick]
        shift = np.repeat(starts[pick] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        stat = float(statistic(v[order[shift + np.arange(lengths.sum())]]))
        if np.isfinite(stat):
            out.append(stat)
    if len(out) < n_boot // 2:
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(out, [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(lo), float(hi)


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``metric(y_true, y_prob)``, resampling whole groups.

    With ``groups`` (patient IDs), patients are drawn with replacement and all their slices
    come along (cluster bootstrap, :func:`cluster_bootstrap`), so slices of one patient are never
    treated as independent. Resamples where the metric is undefined (e.g. one class only) are skipped.

    Returns:
        (point estimate on the full data, lower, upper) at level ``1 - alpha``.

    References:
        Efron B, Tibshirani RJ. An Introduction to the Bootstrap. 1993, ch. 13 (percentile
        interval); Field CA, Welsh AH. Bootstrapping clustered data. JRSS-B 2007.
    """
    y, p = _validate(y_true, y_prob)
    g = np.arange(y.size).astype(str) if groups is None else np.asarray(groups).astype(str)
    if g.shape != y.shape:
        raise ValueError(f"`groups` must have {y.size} entries. Got {g.size} instead.")

    def statistic(rows: np.ndarray) -> float:
        try:
            return float(metric(rows[:, 0], rows[:, 1]))
        except ValueError:  # e.g. roc_auc_score on one class
            return float("nan")

    point = float(metric(y, p))
    _, lo, hi = cluster_bootstrap(np.column_stack([y, p]), g, statistic, n_boot=n_boot, seed=seed, alpha=alpha)
    return point, lo, hi


def operating_point_report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    prevalences: Sequence[float] = (0.01, 0.02, 0.05),
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """Everything a clinical reader asks of one operating point, as a JSON-ready dict.

    AUC and average precision (scikit-learn), the confusion at ``threshold`` with bootstrap
    95 % intervals for sensitivity and specificity (by patient when ``groups`` is given),
    PPV / NPV at each deployment prevalence, and the expected calibration error.
    """

    y, p = _validate(y_true, y_prob)
    both = len(np.unique(y)) == 2

    def sens(a: np.ndarray, b: np.ndarray) -> float:
        return confusion_at(a, b, threshold)["sensitivity"]

    def spec(a: np.ndarray, b: np.ndarray) -> float:
        return confusion_at(a, b, threshold)["specificity"]

    conf = confusion_at(y, p, threshold)
    report: dict[str, object] = {
        "n": int(y.size),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
        "ece": expected_calibration_error(y, p),
        "at_threshold": conf,
        "sensitivity_ci95": list(bootstrap_ci(sens, y, p, groups, n_boot, seed=seed)[1:]),
        "specificity_ci95": list(bootstrap_ci(spec, y, p, groups, n_boot, seed=seed + 1)[1:]),
        "deployment": [
            predictive_values_at_prevalence(
                0.0 if np.isnan(conf["sensitivity"]) else conf["sensitivity"],
                0.0 if np.isnan(conf["specificity"]) else conf["specificity"],
                pi,
            )
            for pi in prevalences
        ],
    }
    if both:
        report["auc_ci95"] = list(bootstrap_ci(roc_auc_score, y, p, groups, n_boot, seed=seed + 2)[1:])
    return report
