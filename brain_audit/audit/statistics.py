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
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

__all__ = [
    "check_labels_scores",
    "DEPLOYMENT_PREVALENCES",
    "MIN_ESTIMABLE",
    "bootstrap_ci",
    "calibration_bins",
    "clopper_pearson_interval",
    "cluster_bootstrap",
    "cluster_bootstrap_interval",
    "confusion_at",
    "expected_calibration_error",
    "operating_point_report",
    "paired_difference_interval",
    "patient_level",
    "predictive_value_intervals",
    "predictive_values_at_prevalence",
    "proportion_interval",
    "rank_auc",
    "threshold_for_sensitivity",
    "wilson_interval",
]

#: Deployment prevalences of ICH for PPV / NPV: emergency head CT, roughly 0.5-10 % of scans bleed.
DEPLOYMENT_PREVALENCES: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.10)

#: Fewest units (patients, or rows when ungrouped) behind a proportion for it to be called estimable:
#: groups under 10 patients are marked not estimable.
MIN_ESTIMABLE: int = 10


def check_labels_scores(y: Any, p: Any, names: tuple[str, str] = ("y_true", "y_prob")) -> tuple[np.ndarray, np.ndarray]:
    """``(y, p)`` as flat int64 0/1 labels and float64 finite scores of one length, or a ValueError naming them.

    The one check of the audit's modules (``names``: the caller's argument names, for the message).
    """
    y_name, p_name = names
    yy = np.asarray(y).astype(np.int64).ravel()
    pp = np.asarray(p, dtype=np.float64).ravel()
    if yy.shape != pp.shape:
        raise ValueError(f"`{y_name}` and `{p_name}` must have the same length. Got {yy.size} and {pp.size} instead.")
    if yy.size == 0:
        raise ValueError(f"`{y_name}` must not be empty. Got 0 samples instead.")
    if not np.isin(yy, (0, 1)).all():
        raise ValueError(f"`{y_name}` must hold only 0 and 1. Got values {sorted(set(yy.tolist()))[:5]} instead.")
    if not np.isfinite(pp).all():
        raise ValueError(f"`{p_name}` must be finite. Got NaN or infinity instead.")
    return yy, pp


def _validate(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return check_labels_scores(y_true, y_prob)


def rank_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted half: what ``sklearn.metrics.roc_auc_score`` gives for
    binary labels, without its input checks (bootstraps call it thousands of times); NaN with one class.

    References:
        Hanley JA, McNeil BJ. The meaning and use of the area under a ROC curve. Radiology 1982;143:29-36.
    """
    y = np.asarray(y_true) == 1
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(np.asarray(y_prob, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


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


def predictive_value_intervals(
    se: float,
    se_ci: Sequence[float],
    sp: float,
    sp_ci: Sequence[float],
    prevalence: float,
) -> dict[str, Any]:
    """PPV, NPV and false alarms per true bleed at a deployment prevalence, each with an interval.

    The points are Bayes' rule on ``se`` and ``sp`` (:func:`predictive_values_at_prevalence`). The intervals
    are carried from the sensitivity and specificity intervals by a conservative bounds method: PPV and NPV
    increase in both se and sp, so ``PPV in [PPV(se_lo, sp_lo), PPV(se_hi, sp_hi)]`` (NPV likewise); false
    alarms per true bleed, ``(1 - sp)(1 - pi) / (se pi)``, decrease in both, so its interval is
    ``[FA(se_hi, sp_hi), FA(se_lo, sp_lo)]`` (infinite when ``se_lo == 0``). Each bound uses both ends at
    once, so the coverage is at least that of the two input intervals jointly (wider than needed when they
    are independent). ``prevalence`` is a deployment setting, taken as known (no interval of its own).

    Args:
        se, sp: point sensitivity and specificity in [0, 1].
        se_ci, sp_ci: ``(lower, upper)`` intervals in [0, 1]; NaN bounds give NaN bounds.
        prevalence: deployment prevalence in (0, 1).

    Returns:
        dict with prevalence, ppv, ppv_ci95, npv, npv_ci95, false_alarms_per_true_bleed and
        false_alarms_per_true_bleed_ci95 (intervals as ``[lower, upper]`` lists).

    References:
        Altman DG, Bland JM. Diagnostic tests 2: predictive values. BMJ 1994;309:102 (Bayes' rule).
        Mercaldo ND, Lau KF, Zhou XH. Confidence intervals for predictive values with an emphasis to
        case-control studies. Stat Med 2007;26:2170-2183 (the logit-interval alternative, not used here).
    """
    for name, pair in (("se_ci", se_ci), ("sp_ci", sp_ci)):
        lo, hi = (float(x) for x in pair)
        if np.isnan(lo) or np.isnan(hi):
            continue
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"`{name}` must be an interval within [0, 1] with lower <= upper. Got {tuple(pair)!r} instead.")
    point = predictive_values_at_prevalence(se, sp, prevalence)
    (se_lo, se_hi), (sp_lo, sp_hi) = ((float(a), float(b)) for a, b in (se_ci, sp_ci))
    if any(np.isnan(x) for x in (se_lo, se_hi, sp_lo, sp_hi)):
        nan = float("nan")
        low = high = {"ppv": nan, "npv": nan, "false_alarms_per_true_bleed": nan}
    else:
        low = predictive_values_at_prevalence(se_lo, sp_lo, prevalence)
        high = predictive_values_at_prevalence(se_hi, sp_hi, prevalence)
    return {
        "prevalence": float(prevalence),
        "ppv": point["ppv"],
        "ppv_ci95": [low["ppv"], high["ppv"]],
        "npv": point["npv"],
        "npv_ci95": [low["npv"], high["npv"]],
        "false_alarms_per_true_bleed": point["false_alarms_per_true_bleed"],
        "false_alarms_per_true_bleed_ci95": [high["false_alarms_per_true_bleed"], low["false_alarms_per_true_bleed"]],
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
    _check_counts(successes, n, alpha)
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _check_counts(successes: int, n: int, alpha: float, min_n: int = 1) -> None:
    if isinstance(n, bool) or not float(n).is_integer() or n < min_n:
        raise ValueError(f"`n` must be an integer >= {min_n}. Got {n!r} instead.")
    if isinstance(successes, bool) or not float(successes).is_integer() or not 0 <= successes <= n:
        raise ValueError(f"`successes` must be an integer in [0, n={n}]. Got {successes!r} instead.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1). Got {alpha!r} instead.")


def clopper_pearson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper-Pearson "exact" interval of a proportion ``successes / n``, from beta quantiles.

    ``lower = Beta(alpha / 2; k, n - k + 1)`` (0 when k = 0) and ``upper = Beta(1 - alpha / 2; k + 1, n - k)``
    (1 when k = n). Guaranteed coverage >= 1 - alpha, hence wider than Wilson (14 of 14: 0.768-1 against
    Wilson's 0.785-1).

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of trials, >= 1.
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        ``(lower, upper)``, both in [0, 1].

    References:
        Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case of the
        binomial. Biometrika 1934;26:404-413.
    """
    _check_counts(successes, n, alpha)
    k, n = int(successes), int(n)
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return lower, upper


def proportion_interval(successes: int, n: int, method: str = "wilson", alpha: float = 0.05) -> dict[str, Any]:
    """A proportion with its interval and whether enough units stand behind it, as a JSON-ready dict.

    Args:
        successes: number of successes, ``0 <= successes <= n``.
        n: number of units (patients, or slices), >= 0; 0 gives NaN estimate and bounds.
        method: ``"wilson"`` (:func:`wilson_interval`) or ``"clopper_pearson"``
            (:func:`clopper_pearson_interval`).
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        dict with estimate, lower, upper, method, successes, n and estimable
        (``n >= MIN_ESTIMABLE``: groups under 10 patients are marked not estimable).
    """
    intervals = {"wilson": wilson_interval, "clopper_pearson": clopper_pearson_interval}
    if method not in intervals:
        raise ValueError(f"`method` must be 'wilson' or 'clopper_pearson'. Got {method!r} instead.")
    _check_counts(successes, n, alpha, min_n=0)
    k, n = int(successes), int(n)
    if n == 0:
        estimate = lower = upper = float("nan")
    else:
        estimate = k / n
        lower, upper = intervals[method](k, n, alpha)
    return {"estimate": estimate, "lower": lower, "upper": upper, "method": method, "successes": k, "n": n,
            "estimable": n >= MIN_ESTIMABLE}


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


def cluster_bootstrap_interval(
    values: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = "percentile",
) -> dict[str, Any]:
    """Bootstrap interval of ``statistic(values)``, resampling whole groups (patients), with the method used.

    Groups are drawn with replacement, all their rows coming along, in the order and with the draws of
    :func:`brain_audit.audit.statistics.bootstrap_ci` (groups sorted, ``rng.integers(0, k, size=k)`` per
    resample), so both give the same interval for the same statistic and seed. Resamples where the
    statistic is not finite are skipped; with fewer than half of them finite the interval is NaN.

    ``method="percentile"`` takes the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the resamples.
    ``method="bca"`` (bias-corrected and accelerated) moves those quantile levels: the bias correction
    ``z0 = Phi^-1(share of resamples below the point estimate, ties counted half as scipy does)`` and the acceleration
    from the jackknife over *groups* (leave one patient out), ``a = sum(d^3) / (6 sum(d^2)^1.5)`` with
    ``d`` the jackknife mean minus each leave-one-out value. When z0 is infinite (every resample on one
    side of the estimate) or the jackknife is degenerate (all equal, or not finite) BCa is undefined:
    the percentile interval is returned, ``method`` says ``"percentile"`` and ``fallback`` why (and a
    ``RuntimeWarning`` is issued).

    Args:
        values: (N,) or (N, C) array, one row per slice.
        groups: (N,) group (patient) of each row.
        statistic: maps a resample of rows (same trailing shape as ``values``) to a float.
        n_boot: resamples, >= 10.
        seed: seed of ``numpy.random.default_rng``.
        alpha: 1 - confidence level, in (0, 1).
        method: ``"percentile"`` or ``"bca"``.

    Returns:
        dict with point (statistic on all rows), lower, upper, method (the method actually used),
        fallback (None, or why BCa fell back to the percentile interval) and resamples (finite resamples).

    References:
        Efron B. Better bootstrap confidence intervals. JASA 1987;82:171-185 (BCa); Efron B, Tibshirani RJ.
        An Introduction to the Bootstrap. 1993, ch. 13-14; Field CA, Welsh AH. Bootstrapping clustered data.
        JRSS-B 2007.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"`n_boot` must be an int >= 10. Got {n_boot!r} instead.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1). Got {alpha!r} instead.")
    if method not in ("percentile", "bca"):
        raise ValueError(f"`method` must be 'percentile' or 'bca'. Got {method!r} instead.")
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
    result: dict[str, Any] = {"point": point, "lower": float("nan"), "upper": float("nan"), "method": method,
                              "fallback": None, "resamples": len(out)}
    if len(out) < n_boot // 2:
        return result
    boot = np.asarray(out)
    levels = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca":
        adjusted, why = _bca_levels(v, inv, order, counts, starts, statistic, point, boot, alpha)
        if adjusted is None:
            warnings.warn(f"BCa interval undefined ({why}); using the percentile interval.", RuntimeWarning,
                          stacklevel=2)
            result.update(method="percentile", fallback=why)
        else:
            levels = adjusted
    lo, hi = np.quantile(boot, levels)
    result.update(lower=float(lo), upper=float(hi))
    return result


def _bca_levels(v: np.ndarray, inv: np.ndarray, order: np.ndarray, counts: np.ndarray, starts: np.ndarray,
                statistic: Callable[[np.ndarray], float], point: float, boot: np.ndarray,
                alpha: float) -> tuple[np.ndarray | None, str]:
    """The BCa quantile levels ``(alpha_1, alpha_2)``, or ``(None, reason)`` when BCa is undefined."""
    if not np.isfinite(point):
        return None, "the point estimate is not finite"
    tol = 1e-12 * max(1.0, abs(point))  # values within rounding of each other count as ties
    share = (np.count_nonzero(boot < point - tol) + np.count_nonzero(boot <= point + tol)) / (2.0 * boot.size)
    z0 = float(stats.norm.ppf(share))
    if not np.isfinite(z0):
        return None, "every resample lies on one side of the point estimate (z0 infinite)"
    if counts.size < 3:
        return None, f"the jackknife needs >= 3 groups, got {counts.size}"
    jack = np.empty(counts.size)
    for i in range(counts.size):
        keep = np.concatenate([order[: starts[i]], order[starts[i] + counts[i]:]])
        jack[i] = float(statistic(v[np.sort(keep)]))
    if not np.isfinite(jack).all():
        return None, "a leave-one-group-out value is not finite"
    d = jack.mean() - jack
    den = float(np.sum(d**2))
    if np.ptp(jack) <= tol or den <= 0.0:
        return None, "every leave-one-group-out value is equal (acceleration undefined)"
    a = float(np.sum(d**3)) / (6.0 * den**1.5)
    z = stats.norm.ppf([alpha / 2.0, 1.0 - alpha / 2.0])
    levels = stats.norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))
    if not np.isfinite(levels).all():
        return None, "the adjusted quantile levels are not finite"
    return levels, ""


def cluster_bootstrap(
    values: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """:func:`cluster_bootstrap_interval` as ``(point estimate on all rows, lower, upper)``.

    ``method`` is ``"percentile"`` (default) or ``"bca"``; use :func:`cluster_bootstrap_interval` to learn
    whether BCa fell back to the percentile interval.
    """
    r = cluster_bootstrap_interval(values, groups, statistic, n_boot=n_boot, seed=seed, alpha=alpha, method=method)
    return r["point"], r["lower"], r["upper"]


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
    prevalences: Sequence[float] = DEPLOYMENT_PREVALENCES,
    groups: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, object]:
    """Everything a clinical reader asks of one operating point, as a JSON-ready dict.

    Rows are units (e.g. patients) when ``groups`` is None, or slices clustered in patients (``groups``).

    * Sensitivity and specificity at ``threshold`` (positive when ``y_prob >= threshold``), with intervals:
      Wilson on the rows when ``groups`` is None; with ``groups`` a patient-cluster percentile bootstrap,
      replaced by the Wilson interval on the rows when the bootstrap gives NaN or zero width (every
      resample equal), since an estimate from data never has an interval of zero width. Clopper-Pearson
      intervals on the rows are added when ``groups`` is None.
    * AUC (scikit-learn) with a cluster-bootstrap BCa interval (one group per row when ungrouped;
      percentile when BCa is degenerate; NaN with one class), average precision, Brier score, ECE.
    * PPV, NPV and false alarms per true bleed at each deployment prevalence, with intervals carried from
      the sensitivity and specificity intervals (:func:`predictive_value_intervals`).

    Args:
        y_true: (N,) 0/1 labels.
        y_prob: (N,) probabilities in [0, 1].
        threshold: operating threshold.
        prevalences: deployment prevalences, each in (0, 1).
        groups: (N,) patient of each row, or None when each row is its own unit.
        n_boot: bootstrap resamples, >= 10.
        seed: seed of the bootstraps (sensitivity ``seed``, specificity ``seed + 1``, AUC ``seed + 2``).
        alpha: 1 - confidence level of every interval (the ``*_ci95`` keys keep their names).

    Returns:
        dict with n, positives, auc, auc_ci95, average_precision, brier, ece, at_threshold (confusion_at),
        sensitivity_ci95, specificity_ci95, ci_methods ({sensitivity, specificity, auc} -> method),
        estimable ({sensitivity: >= MIN_ESTIMABLE positive units, specificity: >= MIN_ESTIMABLE negative
        units}; units are patients when ``groups`` is given, else rows), clopper_pearson (only when
        ``groups`` is None) and deployment (one :func:`predictive_value_intervals` dict per prevalence).
    """
    y, p = _validate(y_true, y_prob)
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if g.shape != y.shape:
            raise ValueError(f"`groups` must have {y.size} entries. Got {g.size} instead.")
    both = len(np.unique(y)) == 2
    conf = confusion_at(y, p, threshold)
    nan_pair = [float("nan"), float("nan")]

    def rate_interval(cls: int, successes: int, n: int, seed_: int) -> tuple[list[float], str]:
        """Interval of the share of class-``cls`` rows called correctly."""
        if n == 0:
            return nan_pair, "undefined"
        wilson = list(wilson_interval(successes, n, alpha))
        if groups is None:
            return wilson, "wilson"

        def statistic(rows: np.ndarray) -> float:
            mine = rows[:, 0] == cls
            return float(np.mean((rows[mine, 1] >= threshold) == bool(cls))) if mine.any() else float("nan")

        _, lo, hi = cluster_bootstrap(np.column_stack([y, p]), g, statistic, n_boot=n_boot, seed=seed_, alpha=alpha)
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 1e-9:  # float noise counts as zero width
            return wilson, "wilson_fallback"
        return [lo, hi], "cluster_bootstrap_percentile"

    se_ci, se_method = rate_interval(1, conf["tp"], conf["tp"] + conf["fn"], seed)
    sp_ci, sp_method = rate_interval(0, conf["tn"], conf["tn"] + conf["fp"], seed + 1)

    auc_ci, auc_method = nan_pair, "undefined"
    if both:
        def auc(rows: np.ndarray) -> float:
            return rank_auc(rows[:, 0], rows[:, 1])

        units = np.arange(y.size).astype(str) if groups is None else g
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the fallback is recorded in ci_methods
            r = cluster_bootstrap_interval(np.column_stack([y, p]), units, auc, n_boot=n_boot, seed=seed + 2,
                                           alpha=alpha, method="bca")
        auc_ci, auc_method = [r["lower"], r["upper"]], f"cluster_bootstrap_{r['method']}"
        point = float(roc_auc_score(y, p))
        if not (np.isfinite(auc_ci[0]) and np.isfinite(auc_ci[1])) or auc_ci[1] - auc_ci[0] <= 1e-9 \
                or not auc_ci[0] <= point <= auc_ci[1]:
            r = cluster_bootstrap_interval(np.column_stack([y, p]), units, auc, n_boot=n_boot, seed=seed + 2,
                                           alpha=alpha, method="percentile")
            auc_ci, auc_method = [r["lower"], r["upper"]], "cluster_bootstrap_percentile"
        if not (np.isfinite(auc_ci[0]) and np.isfinite(auc_ci[1])) or auc_ci[1] - auc_ci[0] <= 1e-9:
            # every resample gave one AUC (e.g. perfect separation): the Wilson interval of the AUC as a share of
            # the smaller class stands in, never an interval of zero width
            units_g = units if groups is not None else np.arange(y.size).astype(str)
            n_small = int(min(np.unique(units_g[y == 1]).size, np.unique(units_g[y == 0]).size))
            auc_ci = list(wilson_interval(int(round(point * n_small)), n_small, alpha))
            auc_method = "wilson_on_smaller_class"

    if groups is None:
        pos_units, neg_units = int(y.sum()), int(y.size - y.sum())
    else:
        pos_units, neg_units = np.unique(g[y == 1]).size, np.unique(g[y == 0]).size

    se = 0.0 if np.isnan(conf["sensitivity"]) else conf["sensitivity"]
    sp = 0.0 if np.isnan(conf["specificity"]) else conf["specificity"]
    report: dict[str, object] = {
        "n": int(y.size),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "auc_ci95": auc_ci,
        "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "at_threshold": conf,
        "sensitivity_ci95": se_ci,
        "specificity_ci95": sp_ci,
        "ci_methods": {"sensitivity": se_method, "specificity": sp_method, "auc": auc_method},
        "estimable": {"sensitivity": pos_units >= MIN_ESTIMABLE, "specificity": neg_units >= MIN_ESTIMABLE},
        "deployment": [predictive_value_intervals(se, se_ci, sp, sp_ci, pi) for pi in prevalences],
    }
    if groups is None:
        report["clopper_pearson"] = {
            "sensitivity": list(clopper_pearson_interval(conf["tp"], conf["tp"] + conf["fn"], alpha))
            if conf["tp"] + conf["fn"] else nan_pair,
            "specificity": list(clopper_pearson_interval(conf["tn"], conf["tn"] + conf["fp"], alpha))
            if conf["tn"] + conf["fp"] else nan_pair,
        }
    return report
