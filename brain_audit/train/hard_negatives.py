"""Hard-negative mining for Phase 4: training negatives the model gets wrong, or right for the wrong reason.

A training slice without a bleed is a hard negative when the model calls it with confidence
(probability >= a bar) or when its Grad-CAM attention lies mostly outside the intracranial space
(skull, scalp, devices, the head holder) *and* less of it falls there than chance would put there
(the intracranial space is under half of most slices, so a uniform map already has most of its
energy outside it): both teach the model a shortcut that Phase 4's over-sampling is meant to unlearn.
Mining reads *train* only, never validation, because Phase 4
trains on the list and is judged on validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from brain_audit.gradcam.attention import INTRACRANIAL_MIN_ENRICHMENT, profile_cached
from brain_audit.model.predictions import predict_ids

__all__ = ["HARD_NEGATIVE_COLUMNS", "mine_hard_negatives"]

#: Columns of the hard-negative table (``phase3/hard_negatives.csv``).
HARD_NEGATIVE_COLUMNS: tuple[str, ...] = ("image_id", "probability", "reason")


def mine_hard_negatives(
    model: Any,
    cache: Any,
    negative_ids: Sequence[str],
    *,
    output_index: int,
    threshold: float,
    probability: float,
    off_brain_share: float,
    max_profiled: int,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Score every training negative and list the hard ones with their reasons.

    Args:
        model: the Phase-2 model (HU input).
        cache: the run's opened HU cache.
        negative_ids: training slices whose ``any`` label is 0.
        output_index: the output unit that scores ``any``.
        threshold: the operating threshold (for the attention profiles' flags).
        probability: a negative scored at or above this is a confident false positive.
        off_brain_share: a negative whose attention energy outside the intracranial space is at or
            above this share, and whose intracranial enrichment (energy share / area share, 1 for a
            uniform map) is below :data:`brain_audit.gradcam.attention.INTRACRANIAL_MIN_ENRICHMENT`, is
            right for the wrong reason. A slice without intracranial area (enrichment undefined) is
            judged on the share alone.
        max_profiled: Grad-CAM runs on at most this many negatives, the most suspicious first.
        batch_size: slices per gradient pass.

    Returns:
        pandas.DataFrame with :data:`HARD_NEGATIVE_COLUMNS`, one row per hard negative in the order
        of ``negative_ids``; ``attrs["scored"]`` counts the negatives scored.
    """
    ids = list(negative_ids)
    p = predict_ids(model, cache, ids, output_index) if ids else np.empty(0)
    top = np.argsort(-p, kind="stable")[:max_profiled]
    profiles = profile_cached(model, cache, [ids[i] for i in top], np.zeros(len(top), dtype=int), p[top], threshold,
                              output_index=output_index, batch_size=batch_size)
    seen = profiles[profiles["peak_region"] != "none"] if len(profiles) else profiles
    off_brain = dict(zip(seen["image_id"], zip(1.0 - seen["energy_intracranial"].astype(float),
                                               seen["enrichment_intracranial"].astype(float))))
    rows = []
    for image_id, score in zip(ids, p):
        reasons = []
        if score >= probability:
            reasons.append(f"false positive p={score:.3f} >= {probability}")
        share, enrichment = off_brain.get(image_id, (None, None))
        if share is not None and share >= off_brain_share and not enrichment >= INTRACRANIAL_MIN_ENRICHMENT:
            why = ("no intracranial area on the slice" if np.isnan(enrichment) else
                   f"intracranial enrichment {enrichment:.2f} < {INTRACRANIAL_MIN_ENRICHMENT}")
            reasons.append(f"attention {share:.0%} outside the intracranial space ({why})")
        if reasons:
            rows.append({"image_id": image_id, "probability": float(score), "reason": "; ".join(reasons)})
    table = pd.DataFrame(rows, columns=list(HARD_NEGATIVE_COLUMNS))
    table.attrs["scored"] = len(ids)
    return table
