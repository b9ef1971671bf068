"""Predictions: a trained model applied to HU arrays, or to cached slices read chunk by chunk.

:func:`predict_ids` reads the cache in chunks so that a 20,000-slice split never sits in memory as float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["any_column", "model_context", "predict", "predict_ids", "slice_features"]


def any_column(head: str) -> int:
    """Output unit that scores ``any`` bleed: the only one of head ``"any"``, the last of head ``"six"``."""

    return 0 if head == "any" else LABEL_COLUMNS.index("any")


def model_context(model: Any) -> int:
    """The neighbouring slices on each side a model reads (2.5-D input), from its input shape:
    ``(channels - 1) // 2`` of its (B, S, S, 1 + 2 context) HU input; 0 for a one-slice model."""
    channels = model.inputs[0].shape[-1]
    if channels is None or int(channels) % 2 != 1:
        raise ValueError(f"`model` input must have 1 + 2 * context channels (odd). Got shape "
                         f"{tuple(model.inputs[0].shape)} instead.")
    return (int(channels) - 1) // 2


def predict(model: Any, hu: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of ``model`` on HU (N, H, W, C), or (N, H, W) for a one-channel model: float64 (N, outputs)."""
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim == len(model.inputs[0].shape) - 1:
        x = x[..., None]
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(len(x), -1)


def predict_ids(model: Any, cache: Any, ids: Sequence[str], column: int | None, chunk: int = 512) -> np.ndarray:
    """Probabilities for cached images, read chunk by chunk (bounded memory): float64 (N,) of output ``column``,
    or (N, outputs) of every output when ``column`` is None (e.g. the six labels for the competition metric).

    Each slice is read with the neighbours the model takes (:func:`model_context`,
    :meth:`brain_audit.dataset.cache.HUCache.hu_input`)."""
    out: np.ndarray | None = np.empty(len(ids), dtype=np.float64) if column is not None else None
    context = model_context(model)
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        hu = cache.hu_input(part, context)
        p = predict(model, hu)
        if column is not None:
            out[start : start + len(part)] = p[:, column]
            continue
        if out is None:
            out = np.empty((len(ids), p.shape[1]), dtype=np.float64)
        out[start : start + len(part)] = p
    if out is None:  # no ids and every output asked for
        return np.empty((0, int(model.outputs[0].shape[-1])), dtype=np.float64)
    return out


def slice_features(embedder: Any, cache: Any, ids: Sequence[str], chunk: int = 512,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and probabilities of cached images, read chunk by chunk.

    Args:
        embedder: a two-output model, :func:`brain_audit.model.sequence.embedding_model` of a slice model.
        cache: an opened HU cache; ``ids`` its image IDs.

    Returns:
        ``(embedding, probabilities)``: float32 (N, D) and float64 (N, outputs), rows in ``ids`` order.
    """
    dim = int(embedder.outputs[0].shape[-1])
    outputs = int(embedder.outputs[1].shape[-1])
    emb = np.empty((len(ids), dim), dtype=np.float32)
    prob = np.empty((len(ids), outputs), dtype=np.float64)
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        hu = cache.hu_input(part, model_context(embedder))
        e, p = embedder.predict(hu, batch_size=batch_size, verbose=0)
        emb[start : start + len(part)] = e
        prob[start : start + len(part)] = p
    return emb, prob

