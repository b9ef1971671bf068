"""Predictions: a trained model applied to HU, and where it looked when it did.

The stage between the model and the audit in the data flow: :func:`predict` on HU
arrays, :func:`predict_ids` on cached images read chunk by chunk (bounded memory, so a
20,000-slice split never sits in RAM as float32), and :func:`profile_slices`, the
Grad-CAM attention profile of cached slices used by Phase 3 and the clinical audit.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

__all__ = ["any_column", "predict", "predict_ids", "profile_slices"]


def any_column(head: str) -> int:
    """Output unit that scores ``any`` bleed: the only one of head ``"any"``, the last of head ``"six"``."""
    from .rsna import LABEL_COLUMNS

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


def profile_slices(model: Any, cache: Any, ids: Sequence[str], labels: np.ndarray, probs: np.ndarray,
                   threshold: float, lesions: dict[str, np.ndarray] | None = None, *, output_index: int = 0,
                   batch_size: int = 32) -> list[dict[str, Any]]:
    """Grad-CAM attention profile of cached slices, in batches of ``batch_size``.

    Args:
        model: a brain_audit model (HU input).
        cache: an opened :class:`brain_audit.cache.HUCache`.
        ids: image IDs to profile.
        labels: (N,) true 0/1 label of the explained output.
        probs: (N,) the model's probability for it.
        threshold: decision threshold (for ``right_for_wrong_reason``).
        lesions: optional image ID -> bool lesion mask at cache resolution (phantom truth).
        output_index: unit of the final Dense layer explained.
        batch_size: Grad-CAM batch.

    Returns:
        One dict per slice: ``image_id``, ``label``, ``probability``, ``cam_empty`` and the
        keys of :func:`brain_audit.gradcam.attention_profile` (regions from
        :func:`brain_audit.skull.region_masks` of the slice's HU).
    """
    from .gradcam import attention_profile, grad_cam
    from .skull import region_masks

    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), batch_size):
        part = list(ids[start : start + batch_size])
        hu = cache.hu_int16(part).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-zero maps are counted below instead
            cams = grad_cam(model, hu[..., None], output_index=output_index)
            for k, image_id in enumerate(part):
                i = start + k
                lesion = None if lesions is None or labels[i] == 0 else lesions.get(image_id)
                prof = attention_profile(
                    cams[k], masks=region_masks(hu[k]), lesion_mask=lesion,
                    probability=float(probs[i]), label=int(labels[i]), threshold=threshold,
                )
                rows.append({"image_id": image_id, "label": int(labels[i]), "probability": float(probs[i]),
                             "cam_empty": bool(cams[k].max() <= 0), **prof})
    return rows
