"""Predictions: a trained model applied to HU, and where it looked when it did.

The stage between the model and the audit in the data flow: :func:`predict` on HU
arrays, :func:`predict_ids` on cached images read chunk by chunk (bounded memory, so a
20,000-slice split never sits in RAM as float32), and :func:`profile_slices`, the
Grad-CAM attention profile of cached slices used by Phase 3 and the clinical audit.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["any_column", "predict", "predict_ids"]


def any_column(head: str) -> int:
    """Output unit that scores ``any`` bleed: the only one of head ``"any"``, the last of head ``"six"``."""

    return 0 if head == "any" else LABEL_COLUMNS.index("any")


def predict(model: Any, hu: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of ``model`` on HU (N, H, W, C): float64 (N, outputs)."""
    out = model.predict(np.asarray(hu, dtype=np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(len(hu), -1)


def predict_ids(model: Any, cache: Any, ids: Sequence[str], column: int, chunk: int = 512) -> np.ndarray:
    """Probabilities of one output for cached images, read chunk by chunk (bounded memory)."""
    out = np.empty(len(ids), dtype=np.float64)
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        hu = cache.hu_int16(part).astype(np.float32)[..., None]
        out[start : start + len(part)] = predict(model, hu)[:, column]
    return out
