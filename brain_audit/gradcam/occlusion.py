"""Occlusion sensitivity: where hiding part of the slice lowers one output's logit.

A square window slides over the slice; inside it the HU are replaced by a reference image and the model scores
the result. A pixel's value is the mean drop in logit over the windows that cover it (positive: what is there
raises the score; negative: it lowers it). Unlike the gradient maps of :mod:`brain_audit.gradcam.maps`, the
value is a change of the model's own output, so a map can only point at an object the model's decision uses.

The default reference is the slice's local median (window twice the patch side): it erases what is thin or
small at that scale (a coil, a catheter, a calcified focus, the skull's tables, a thin subdural rim) and keeps
the tissue around it, so the occluded slice stays a plausible head rather than a black hole (Zeiler & Fergus
used a grey square; Fong & Vedaldi argue for perturbations that stay in the data's distribution). Windows
whose reference equals the slice (air, uniform brain) are not scored: their drop is 0 by construction; a drop
below 1e-5 (float32 round-off between batches) counts as 0.

The input is what the model takes: for :func:`brain_audit.model.build_model`, float32 HU (N, S, S) or
(N, S, S, C) (a 2.5D input occludes every channel at the same place).

References:
    Zeiler MD, Fergus R. Visualizing and understanding convolutional networks. ECCV 2014.
    Fong RC, Vedaldi A. Interpretable explanations of black boxes by meaningful perturbation. ICCV 2017.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["OCCLUSION_PATCH_FRACTION", "window_starts", "local_median", "occlusion_maps"]

#: Default window side as a share of the image side (12 px at 96 px: 25 mm of a 200 mm field of view).
OCCLUSION_PATCH_FRACTION: float = 1 / 8

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
_EPS: float = 1e-7

#: A window whose reference differs from the slice by less than this everywhere (HU) is not scored.
_SAME_HU: float = 0.5

#: A drop in logit smaller than this is float32 round-off of scoring in another batch, not an effect: counted 0.
_NOISE_LOGIT: float = 1e-5


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets of windows of ``patch`` pixels every ``stride`` along a side of ``size``, the last flush
    with the edge so that every pixel is covered."""
    if not 0 < patch <= size:
        raise ValueError(f"`patch` must be in [1, {size}]. Got {patch} instead.")
    if stride < 1:
        raise ValueError(f"`stride` must be >= 1. Got {stride} instead.")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def local_median(hu: np.ndarray, size: int) -> np.ndarray:
    """Median of each pixel's ``size`` x ``size`` neighbourhood (edges repeated), per slice and channel.

    Args:
        hu: float (N, H, W) or (N, H, W, C) HU.
        size: neighbourhood side, pixels.

    Returns:
        float32 array of ``hu``'s shape.
    """
    x = np.asarray(hu, dtype=np.float32)
    footprint = (1, size, size) + (1,) * (x.ndim - 3)
    return ndimage.median_filter(x, size=footprint, mode="nearest")


def _logits(model: Any, x: np.ndarray, output_index: int, batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, len(x), batch_size):
        p = np.asarray(model(x[start:start + batch_size], training=False), dtype=np.float64)
        out.append(p.reshape(len(p), -1)[:, output_index])
    q = np.clip(np.concatenate(out), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q))


def occlusion_maps(model: Any, hu_batch: np.ndarray, *, output_index: int = 0, patch: int | None = None,
                   stride: int | None = None, reference: np.ndarray | None = None,
                   batch_size: int = 128) -> np.ndarray:
    """Occlusion-sensitivity maps of one output's logit (see the module docstring).

    Args:
        model: Keras model taking ``hu_batch`` (with a trailing channel axis added to (N, S, S) input)
            and giving sigmoid probabilities (N, outputs).
        hu_batch: float (N, S, S) or (N, S, S, C) HU at the model's input size.
        output_index: the explained output (0 for ``any``).
        patch: window side, pixels (default ``round(S * OCCLUSION_PATCH_FRACTION)``, at least 2).
        stride: step between windows, pixels (default ``patch // 2``, at least 1).
        reference: what a window shows instead of the slice, ``hu_batch``'s shape (default
            :func:`local_median` of side ``2 * patch + 1``).
        batch_size: occluded slices per forward pass.

    Returns:
        float32 (N, S, S): mean drop in logit (original - occluded) over the windows covering each pixel.
    """
    x = np.asarray(hu_batch, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"`hu_batch` must be (N, S, S) or (N, S, S, C). Got shape {np.shape(hu_batch)} instead.")
    n, size = x.shape[0], x.shape[1]
    patch = max(2, round(size * OCCLUSION_PATCH_FRACTION)) if patch is None else int(patch)
    stride = max(1, patch // 2) if stride is None else int(stride)
    starts = window_starts(size, patch, stride)
    if reference is None:
        ref = local_median(x, 2 * patch + 1)
    else:
        ref = np.asarray(reference, dtype=np.float32).reshape(x.shape)
    base = _logits(model, x, output_index, batch_size)
    drop = np.zeros((n, size, size), dtype=np.float64)
    count = np.zeros((size, size), dtype=np.float64)
    for y0 in starts:
        for x0 in starts:
            count[y0:y0 + patch, x0:x0 + patch] += 1
    for i in range(n):
        windows, occluded = [], []
        for y0 in starts:
            for x0 in starts:
                win = (slice(y0, y0 + patch), slice(x0, x0 + patch))
                if np.abs(ref[i][win] - x[i][win]).max() < _SAME_HU:
                    continue
                o = x[i].copy()
                o[win] = ref[i][win]
                windows.append(win)
                occluded.append(o)
        if not occluded:
            continue
        d = base[i] - _logits(model, np.stack(occluded), output_index, batch_size)
        d[np.abs(d) < _NOISE_LOGIT] = 0.0
        for win, v in zip(windows, d):
            drop[i][win] += v
    return (drop / count).astype(np.float32)
