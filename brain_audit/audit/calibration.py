"""Probability calibration: how far the model's probabilities are from observed rates, and recalibration.

A model trained 50/50 and deployed where 1-5 % of head CTs bleed can rank scans well and still state
probabilities that are too high. This module measures that and fixes what can be fixed:

* :func:`calibration_fit`: logistic recalibration (Cox 1958), ``logit P(y = 1) = a + b logit(p)``: the
  calibration slope ``b`` (< 1: predictions too extreme) and intercept, calibration-in-the-large (the
  intercept with the slope fixed at 1) and the Brier score, with patient-cluster bootstrap intervals;
* :class:`Recalibration` / :func:`fit_recalibration`: a Platt (logistic) or isotonic map fitted on
  held-out data, replayable from its JSON-ready parameters;
* :func:`prior_shift`: the probabilities at another prevalence by Bayes' rule (Saerens et al. 2002).

References:
    Van Calster B, McLernon DJ, van Smeden M, Wynants L, Steyerberg EW. Calibration: the Achilles heel of
    predictive analytics. BMC Med 2019;17:230. Steyerberg EW. Clinical Prediction Models. 2nd ed. 2019, ch. 15.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from brain_audit.audit.statistics import check_labels_scores, cluster_bootstrap

__all__ = ["Recalibration", "calibration_fit", "fit_recalibration", "prior_shift"]

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit, so a score of exactly 0 or 1 stays finite.
EPS = 1e-6


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy, pp = check_labels_scores(y, p, ("y", "p"))
    if not ((pp >= 0).all() and (pp <= 1).all()):
        raise ValueError("`p` must hold probabilities in [0, 1]. Got a value outside [0, 1] instead.")
    return yy, pp


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, EPS, 1.0 - EPS))


def _logistic_fit(y: np.ndarray, x: np.ndarray | None, offset: np.ndarray) -> np.ndarray:
    """Unpenalised maximum-likelihood ``logit P(y = 1) = a [+ b x] + offset``: ``[a]`` or ``[a, b]``.

    NaN when y holds one class (no finite maximum). Newton's method with the exact Hessian
    (``scipy.optimize.minimize(method="trust-exact")``).
    """
    if y.min() == y.max():
        return np.full(1 if x is None else 2, np.nan)
    design = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones(y.size), x])

    def nll(beta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = design @ beta + offset
        # log(1 + e^eta) - y eta, summed; gradient X'(mu - y)
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta)), design.T @ (expit(eta) - y)

    def hess(beta: np.ndarray) -> np.ndarray:
        mu = expit(design @ beta + offset)
        return (design * (mu * (1.0 - mu))[:, None]).T @ design

    start = np.zeros(design.shape[1])
    if x is not None:
        start[1] = 1.0
    res = optimize.minimize(nll, start, jac=True, hess=hess, method="trust-exact", options={"gtol": 1e-10})
    return res.x if np.isfinite(res.x).all() else np.full(design.shape[1], np.nan)


def calibration_fit(
    y: np.ndarray,
    p: np.ndarray,
    groups: Sequence[Any] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Logistic recalibration of predicted probabilities against outcomes, with 95 % intervals.

    Fits ``logit P(y = 1) = a + b logit(p)`` by unpenalised maximum likelihood (``p`` clipped to
    ``[1e-6, 1 - 1e-6]``): ``slope`` is ``b`` (1 ideal; < 1 predictions too extreme, > 1 too modest) and
    ``intercept`` is ``a`` of that joint fit. ``calibration_in_the_large`` is the intercept of the offset
    model ``logit P(y = 1) = a + logit(p)`` (slope fixed at 1): 0 ideal, < 0 the model over-predicts on
    average. Intervals are percentile bootstraps over patients when ``groups`` is given
    (:func:`brain_audit.audit.statistics.cluster_bootstrap`), over rows otherwise; every statistic uses the
    same resamples.

    Args:
        y: (N,) 0/1 outcomes.
        p: (N,) predicted probabilities in [0, 1].
        groups: (N,) patient of each row, or None (rows independent).
        n_boot: bootstrap resamples, >= 10.
        seed: seed of the bootstrap.

    Returns:
        dict with slope, intercept, calibration_in_the_large and brier, each ``{"estimate", "ci95"}``
        (NaN when y holds one class), plus n (rows) and events (positive rows).

    References:
        Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
        Van Calster B et al. Calibration: the Achilles heel of predictive analytics. BMC Med 2019;17:230.
        Steyerberg EW. Clinical Prediction Models. 2nd ed. Springer 2019.
    """
    yy, pp = _check(y, p)
    g = np.arange(yy.size).astype(str) if groups is None else np.asarray(groups).astype(str)
    if g.shape != yy.shape:
        raise ValueError(f"`groups` must have {yy.size} entries. Got {g.size} instead.")
    rows = np.column_stack([yy, _logit(pp), pp])

    statistics = {
        "slope": lambda r: float(_logistic_fit(r[:, 0], r[:, 1], np.zeros(len(r)))[1]),
        "intercept": lambda r: float(_logistic_fit(r[:, 0], r[:, 1], np.zeros(len(r)))[0]),
        "calibration_in_the_large": lambda r: float(_logistic_fit(r[:, 0], None, r[:, 1])[0]),
        "brier": lambda r: float(brier_score_loss(r[:, 0], r[:, 2], labels=[0, 1])),
    }
    out: dict[str, Any] = {}
    for name, statistic in statistics.items():
        point, lo, hi = cluster_bootstrap(rows, g, statistic, n_boot=n_boot, seed=seed)
        out[name] = {"estimate": point, "ci95": [lo, hi]}
    out["n"] = int(yy.size)
    out["events"] = int(yy.sum())
    return out


@dataclass(frozen=True)
class Recalibration:
    """A fitted map from the model's probabilities to recalibrated ones, JSON-ready and replayable.

    Attributes:
        method: ``"platt"`` or ``"isotonic"``.
        intercept, slope: Platt's ``P = expit(intercept + slope * logit(p))`` (NaN for isotonic).
        x_thresholds, y_thresholds: the isotonic step function's knots (empty for Platt); between knots the
            map interpolates linearly, outside them it is clipped (as ``IsotonicRegression(out_of_bounds="clip")``).
    """

    method: str
    intercept: float = float("nan")
    slope: float = float("nan")
    x_thresholds: tuple[float, ...] = ()
    y_thresholds: tuple[float, ...] = ()

    def apply(self, p: np.ndarray) -> np.ndarray:
        """float64 array of ``p``'s shape: the recalibrated probabilities of ``p`` (in [0, 1])."""
        pp = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            return expit(self.intercept + self.slope * _logit(pp))
        return np.interp(pp, np.asarray(self.x_thresholds), np.asarray(self.y_thresholds))

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain floats and lists (for ``json.dumps``)."""
        if self.method == "platt":
            return {"method": self.method, "intercept": float(self.intercept), "slope": float(self.slope)}
        return {"method": self.method, "x_thresholds": [float(x) for x in self.x_thresholds],
                "y_thresholds": [float(v) for v in self.y_thresholds]}


def fit_recalibration(y: np.ndarray, p: np.ndarray, method: str = "platt") -> Recalibration:
    """Fit a recalibration map on held-out outcomes ``y`` and probabilities ``p`` ((N,) each).

    ``"platt"``: unpenalised logistic regression of y on ``logit(p)`` (Platt scaling on the model's logit;
    Platt's target smoothing is not used), two parameters, monotone, keeps the ranking. ``"isotonic"``: the
    non-decreasing step function of least squares (``sklearn.isotonic.IsotonicRegression`` with
    ``y_min=0, y_max=1, out_of_bounds="clip"``); flexible, needs more data, may create ties.

    Raises:
        ValueError: bad ``method``, or ``y`` with one class for Platt.

    References:
        Platt J. Probabilistic outputs for support vector machines and comparisons to regularized likelihood
        methods. Advances in Large Margin Classifiers 1999. Zadrozny B, Elkan C. Transforming classifier
        scores into accurate multiclass probability estimates. KDD 2002.
    """
    if method not in ("platt", "isotonic"):
        raise ValueError(f"`method` must be 'platt' or 'isotonic'. Got {method!r} instead.")
    yy, pp = _check(y, p)
    if method == "platt":
        if yy.min() == yy.max():
            raise ValueError(f"`y` must hold both classes for Platt scaling. Got only {int(yy[0])} instead.")
        intercept, slope = _logistic_fit(yy, _logit(pp), np.zeros(yy.size))
        return Recalibration("platt", intercept=float(intercept), slope=float(slope))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(pp, yy)
    return Recalibration("isotonic", x_thresholds=tuple(float(x) for x in iso.X_thresholds_),
                         y_thresholds=tuple(float(v) for v in iso.y_thresholds_))


def prior_shift(p: np.ndarray, train_prevalence: float, deploy_prevalence: float) -> np.ndarray:
    """Probabilities at the deployment prevalence from probabilities calibrated at the training one.

    ``p' = p r1 / (p r1 + (1 - p) r0)`` with ``r1 = pi' / pi`` and ``r0 = (1 - pi') / (1 - pi)``: Bayes' rule
    with the class-conditional score distributions unchanged (label shift). A model trained 50/50 and
    deployed at 2 % turns 0.9 into 0.155.

    Args:
        p: probabilities in [0, 1], any shape.
        train_prevalence: prevalence ``pi`` the probabilities are calibrated for, in (0, 1).
        deploy_prevalence: deployment prevalence ``pi'``, in (0, 1).

    Returns:
        float64 array of ``p``'s shape.

    References:
        Saerens M, Latinne P, Decaestecker C. Adjusting the outputs of a classifier to new a priori
        probabilities: a simple procedure. Neural Computation 2002;14:21-41.
    """
    for name, v in (("train_prevalence", train_prevalence), ("deploy_prevalence", deploy_prevalence)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"`{name}` must be in (0, 1). Got {v!r} instead.")
    pp = np.asarray(p, dtype=np.float64)
    if not (np.isfinite(pp).all() and (pp >= 0).all() and (pp <= 1).all()):
        raise ValueError("`p` must hold probabilities in [0, 1]. Got a value outside [0, 1] or NaN instead.")
    r1 = deploy_prevalence / train_prevalence
    r0 = (1.0 - deploy_prevalence) / (1.0 - train_prevalence)
    return pp * r1 / (pp * r1 + (1.0 - pp) * r0)
