"""Which slices an attention audit explains: every error, a random sample of correct calls, a fixed sanity sample.

An audit that profiles only the positives (or only the most confident slices) never looks at the false
positives it should explain, and one that picks its examples by hand shows what it wants to show.
:func:`coverage_sample` takes every false negative and every false positive (each up to a cap, drawn at
random beyond it and counted), then a seeded random sample of the correct calls as the comparison group;
:func:`sanity_positions` fixes the slices the randomisation check (Adebayo et al. 2018) runs on.
:func:`field_of_view_mm` gives the millimetres a map cell spans on a slice (from the header index).

References:
    Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["OUTCOMES", "MAX_ERRORS", "CORRECT_SLICES", "SANITY_SLICES", "coverage_sample", "sanity_positions",
           "field_of_view_mm"]

#: Outcome of a slice at the operating threshold, in the order :func:`coverage_sample` lists them.
OUTCOMES: tuple[str, ...] = ("false_negative", "false_positive", "true_positive", "true_negative")

#: Default cap on the profiled slices of each error kind (false negatives, false positives).
MAX_ERRORS: int = 1000
#: Default size of the random sample of correct calls (true positives and negatives together).
CORRECT_SLICES: int = 200
#: Default size of the randomisation check's fixed sample.
SANITY_SLICES: int = 32


def _outcome(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> np.ndarray:
    called = probabilities >= threshold
    out = np.where(labels == 1, np.where(called, "true_positive", "false_negative"),
                   np.where(called, "false_positive", "true_negative"))
    return out.astype(object)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0. Got {value!r} instead.")
    return int(value)


def coverage_sample(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    *,
    max_errors: int = MAX_ERRORS,
    correct_slices: int = CORRECT_SLICES,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions to explain: every error (up to ``max_errors`` of each kind), then correct calls at random.

    Args:
        labels: (N,) true 0/1 labels.
        probabilities: (N,) the model's probabilities for them.
        threshold: the operating threshold (a slice is called a bleed at ``probability >= threshold``).
        max_errors: cap on false negatives and, separately, on false positives; beyond it a seeded random
            subset is taken (and counted in the returned summary).
        correct_slices: correct calls drawn at random (without replacement) from true positives and true
            negatives together, so their mix follows the data.
        seed: seed of the random draws.

    Returns:
        ``(positions, summary)``: int positions into ``labels`` in the order false negatives, false
        positives, then the correct sample (each group in input order); ``summary`` maps each outcome of
        :data:`OUTCOMES` to ``{"total": n in the data, "profiled": n taken}``.
    """
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"`probabilities` must hold one entry per label ({y.size}). Got {p.size} instead.")
    max_errors = _check_count("max_errors", max_errors)
    correct_slices = _check_count("correct_slices", correct_slices)
    rng = np.random.default_rng(seed)
    outcome = _outcome(y, p, float(threshold))

    def draw(pos: np.ndarray, k: int) -> np.ndarray:
        if len(pos) <= k:
            return pos
        return np.sort(rng.choice(pos, size=k, replace=False))

    fn = draw(np.flatnonzero(outcome == "false_negative"), max_errors)
    fp = draw(np.flatnonzero(outcome == "false_positive"), max_errors)
    correct = draw(np.flatnonzero((outcome == "true_positive") | (outcome == "true_negative")), correct_slices)
    positions = np.concatenate([fn, fp, correct]).astype(int)
    taken = pd.Series(outcome[positions]).value_counts()
    summary = {o: {"total": int((outcome == o).sum()), "profiled": int(taken.get(o, 0))} for o in OUTCOMES}
    return positions, summary


def sanity_positions(labels: np.ndarray, k: int = SANITY_SLICES, seed: int = 0) -> np.ndarray:
    """A fixed, seeded sample of ``k`` positions for the randomisation check: half with a bleed where possible.

    Returns:
        int positions (sorted), at most ``k`` and at most ``len(labels)``.
    """
    y = np.asarray(labels).astype(int).ravel()
    k = _check_count("k", k)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(len(pos), max(k // 2, k - len(neg)))
    n_neg = min(len(neg), k - n_pos)
    pick = [rng.choice(pos, n_pos, replace=False) if n_pos else np.array([], int),
            rng.choice(neg, n_neg, replace=False) if n_neg else np.array([], int)]
    return np.sort(np.concatenate(pick).astype(int))


def field_of_view_mm(index_rows: pd.DataFrame) -> np.ndarray:
    """Field of view of each slice's padded square, mm: ``max(rows x row spacing, cols x column spacing)``.

    The cache pads every slice to a square before resizing (:func:`brain_audit.dataset.cache.pad_to_square`),
    so one cell of a map with ``c`` cells a side spans ``field_of_view_mm / c``. NaN without Pixel Spacing.

    Args:
        index_rows: rows of the header index (:mod:`brain_audit.dataset.index`) with ``rows``, ``cols``,
            ``spacing_row`` and ``spacing_col``.

    Returns:
        float64 (N,) in mm.
    """
    missing = [c for c in ("rows", "cols", "spacing_row", "spacing_col") if c not in index_rows]
    if missing:
        raise ValueError(f"`index_rows` must have the header index's {missing} columns. Got "
                         f"{list(index_rows.columns)} instead.")
    r = index_rows["rows"].to_numpy(dtype=np.float64) * index_rows["spacing_row"].to_numpy(dtype=np.float64)
    c = index_rows["cols"].to_numpy(dtype=np.float64) * index_rows["spacing_col"].to_numpy(dtype=np.float64)
    return np.fmax(r, c) if len(r) else r
