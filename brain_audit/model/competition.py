"""The RSNA 2019 Intracranial Hemorrhage Detection competition metric: weighted multi-label log loss.

Each image has six labels in :data:`brain_audit.rsna.LABEL_COLUMNS` order (five subtypes, then ``any``);
the submission gives a probability for each. The score of image ``i`` is the weighted mean of the six
binary log losses, ``sum_j w_j l_ij / sum_j w_j`` with ``l_ij = -(y_ij log p_ij + (1 - y_ij) log(1 - p_ij))``,
``any`` weighted 2 and each subtype 1 (:data:`brain_audit.model.layers.RSNA_LABEL_WEIGHTS`); the metric is
the mean of that over images (lower is better). Probabilities are clipped to ``[eps, 1 - eps]`` first, as
Kaggle's log loss does (``eps = 1e-15``), so a confident miss costs ``-log(1e-15)`` = 34.5, not infinity. With
every image carrying all six labels this equals the weighted mean of the six column-wise log losses.

The training loss :class:`brain_audit.model.layers.WeightedBinaryCrossentropy` is the same quantity, but Keras
clips probabilities at ``keras.config.epsilon()`` (1e-7) and computes in float32.

References:
    Kaggle, RSNA Intracranial Hemorrhage Detection (2019), Evaluation: "weighted multi-label logarithmic
    loss ... the any label is weighted more highly than specific hemorrhage sub-types"
    (https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection/overview/evaluation).
    Flanders AE et al. Construction of a Machine Learning Dataset through Collaboration: The RSNA 2019
    Brain CT Hemorrhage Challenge. Radiology: AI 2020;2(3):e190211.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from brain_audit.model.layers import RSNA_LABEL_WEIGHTS
from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["METRIC_NAME", "KAGGLE_EPS", "image_log_losses", "weighted_log_loss"]

#: The metric's name in metrics files and reports.
METRIC_NAME = "RSNA 2019 weighted multi-label log loss (any x2, subtypes x1; lower is better)"

#: Kaggle's clipping of predicted probabilities before the logarithm.
KAGGLE_EPS = 1e-15


def _check(y_true: np.ndarray, y_prob: np.ndarray, weights: Sequence[float], eps: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs as float64 arrays, validated once (one-line ValueError naming the argument)."""
    n_labels = len(LABEL_COLUMNS)
    y = np.asarray(y_true)
    p = np.asarray(y_prob)
    w = np.asarray(weights, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != n_labels:
        raise ValueError(f"`y_true` must have shape (N, {n_labels}) in {LABEL_COLUMNS} order. Got {y.shape} instead.")
    if p.shape != y.shape:
        raise ValueError(f"`y_prob` must have the shape of `y_true` {y.shape}. Got {p.shape} instead.")
    if y.shape[0] == 0:
        raise ValueError("`y_true` must hold at least one image (N > 0). Got 0 rows instead.")
    y = y.astype(np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        bad = y[~np.isin(y, (0.0, 1.0))].ravel()[0]
        raise ValueError(f"`y_true` must hold only 0 and 1. Got {float(bad)!r} instead.")
    p = p.astype(np.float64)
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))].ravel()[0]
        raise ValueError(f"`y_prob` must be probabilities in [0, 1]. Got {float(bad)!r} instead.")
    if w.shape != (n_labels,) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"`weights` must be {n_labels} finite values > 0. Got {list(np.ravel(w))!r} instead.")
    if not (isinstance(eps, (int, float)) and 0.0 < eps < 0.5):
        raise ValueError(f"`eps` must be in (0, 0.5). Got {eps!r} instead.")
    return y, p, w


def image_log_losses(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    weights: Sequence[float] = RSNA_LABEL_WEIGHTS,
    eps: float = KAGGLE_EPS,
) -> np.ndarray:
    """Per image, the weighted mean of the six binary log losses (natural log): float64 (N,).

    Args:
        y_true: (N, 6) labels 0 / 1 in :data:`brain_audit.rsna.LABEL_COLUMNS` order.
        y_prob: (N, 6) predicted probabilities in [0, 1], same order; clipped to ``[eps, 1 - eps]``.
        weights: 6 label weights > 0; default ``any`` 2, subtypes 1.
        eps: clipping bound, in (0, 0.5).

    The mean of this vector is :func:`weighted_log_loss`; it is what a patient-cluster bootstrap resamples.
    """
    y, p, w = _check(y_true, y_prob, weights, eps)
    p = np.clip(p, eps, 1.0 - eps)
    losses = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return losses @ w / w.sum()


def weighted_log_loss(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    weights: Sequence[float] = RSNA_LABEL_WEIGHTS,
    eps: float = KAGGLE_EPS,
) -> float:
    """The RSNA 2019 competition metric: the mean over images of :func:`image_log_losses` (lower is better).

    Args:
        y_true: (N, 6) labels 0 / 1 in :data:`brain_audit.rsna.LABEL_COLUMNS` order, N > 0.
        y_prob: (N, 6) predicted probabilities in [0, 1], same order.
        weights: 6 label weights > 0; default ``any`` 2, subtypes 1.
        eps: predictions are clipped to ``[eps, 1 - eps]`` (Kaggle: 1e-15).

    Raises:
        ValueError: a shape is not (N, 6), N is 0, a label is not 0 / 1, a probability is outside [0, 1].
    """
    return float(image_log_losses(y_true, y_prob, weights, eps).mean())
