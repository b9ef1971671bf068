"""The tf.data feed: batches of HU from the cache, with anatomy-respecting augmentation.

Input contract of the model (``brain_audit.model``): float32 HU, shape (B, H, W, C) with
C = 1 + 2 context; windows are applied inside the network, so the feed never windows
and never quantises. Labels follow :data:`brain_audit.rsna.LABEL_COLUMNS`.

Randomness is stateless and keyed by ``seed``: epoch ``e`` is shuffled with
``stateless_shuffle(seed=(seed, e))`` and its batch ``k`` augmented with
``numpy.random.default_rng([seed, e, k])`` (:func:`augment_batch`, OpenCV warps in numpy); the same
seed gives the same stream, batch for batch, on any run, and ``make_feed(..., epoch=e)`` replays
epoch ``e`` alone (what a training run resumed after a kill needs). Batches never straddle epochs.
TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

import cv2
import numpy as np

from brain_audit.dataset.cache import HUCache, open_cache
from brain_audit.dicom import AIR_HU
from brain_audit.errors import ConfigError
from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["Augment", "augment_batch", "make_feed", "feed_length", "feed_plan"]


@dataclasses.dataclass(frozen=True)
class Augment:
    """Light augmentation in HU that keeps anatomy plausible (applied per image).

    Attributes:
        rotation_deg: rotation drawn from U(-r, r) degrees about the image centre (>= 0).
        shift: translation drawn from U(-s, s) x side, per axis (>= 0).
        zoom: isotropic scale drawn from U(1 - z, 1 + z) (in [0, 1)).
        flip: left-right flip with probability 1/2 (a head is near mirror-symmetric;
            up-down flips are not anatomical and are never done).
        hu_offset: additive HU drawn from U(-o, o), on tissue (HU > -900) only (>= 0).
        hu_gain: multiplicative gain drawn from U(1 - g, 1 + g), on tissue only (in [0, 1)).

    Pixels brought in from outside the image are air (:data:`~brain_audit.dicom.AIR_HU`);
    interpolation is bilinear in HU.
    """

    rotation_deg: float = 10.0
    shift: float = 0.05
    zoom: float = 0.1
    flip: bool = True
    hu_offset: float = 5.0
    hu_gain: float = 0.02

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "shift", "hu_offset"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"`{name}` must be >= 0. Got {v} instead.")
        for name in ("zoom", "hu_gain"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"`{name}` must be in [0, 1). Got {v} instead.")


def feed_plan(
    cache: str | Path | HUCache,
    split: str,
    *,
    cohort: str | None = None,
    labels: Literal["any", "six"] = "any",
    sample_weights: Mapping[str, float] | None = None,
    repeats: Mapping[str, int] | None = None,
    context: int = 0,
) -> dict[str, Any]:
    """What one epoch of the feed holds, as numpy (no TensorFlow).

    Returns:
        dict with ``ids`` (str (M,), one entry per sample occurrence in an epoch, repeated
        images repeated), ``slots`` (int64 (M, 1 + 2 context) rows of the stacked cache
        image list ``stack_ids``), ``y`` float32 (M, 1 or 6), ``w`` float32 (M,), ``cache``.
    """
    if labels not in ("any", "six"):
        raise ValueError(f"`labels` must be 'any' or 'six'. Got {labels!r} instead.")
    if context < 0:
        raise ValueError(f"`context` must be >= 0. Got {context} instead.")
    cache = cache if isinstance(cache, HUCache) else open_cache(cache)
    ids = np.asarray(cache.ids(split, cohort), dtype=object)
    if not len(ids):
        raise ConfigError(f"`split` {split!r} (cohort {cohort!r}) holds no image in {cache.path}. "
                         "Got an empty split instead.")
    w = np.ones(len(ids), dtype=np.float32)
    pos = {i: k for k, i in enumerate(ids)}
    if sample_weights is not None:
        unknown = 0
        for image_id, value in sample_weights.items():
            value = float(value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"`sample_weights` must be finite and >= 0. Got {value} for {image_id} instead.")
            k = pos.get(image_id)
            if k is None:
                unknown += 1
            else:
                w[k] = value
        if unknown:
            warnings.warn(f"{unknown} `sample_weights` ID(s) are not in split {split!r}; ignored", RuntimeWarning,
                          stacklevel=3)
    count = np.ones(len(ids), dtype=np.int64)
    if repeats is not None:
        unknown = 0
        for image_id, r in repeats.items():
            if int(r) != r or r < 1:
                raise ValueError(f"`repeats` must be integers >= 1. Got {r!r} for {image_id} instead.")
            k = pos.get(image_id)
            if k is None:
                unknown += 1
            else:
                count[k] = int(r)
        if unknown:
            warnings.warn(f"{unknown} `repeats` ID(s) are not in split {split!r}; ignored", RuntimeWarning,
                          stacklevel=3)
    ctx_ids = cache.context_ids(ids, context)
    stack_ids, inverse = np.unique(ctx_ids.reshape(-1).astype(str), return_inverse=True)
    slots = inverse.reshape(ctx_ids.shape).astype(np.int64)
    cols = ["any"] if labels == "any" else list(LABEL_COLUMNS)
    y = cache.table.loc[ids, cols].to_numpy(dtype=np.float32)
    take = np.repeat(np.arange(len(ids)), count)
    return {"ids": ids[take].astype(str), "slots": slots[take], "y": y[take], "w": w[take],
            "stack_ids": stack_ids, "cache": cache}


def feed_length(cache: str | Path | HUCache, split: str, batch_size: int, *, cohort: str | None = None,
                repeats: Mapping[str, int] | None = None, drop_remainder: bool = False) -> int:
    """Batches per epoch of :func:`make_feed` with the same arguments (``steps_per_epoch``)."""
    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0. Got {batch_size} instead.")
    n = len(feed_plan(cache, split, cohort=cohort, repeats=repeats)["ids"])
    return n // batch_size if drop_remainder else math.ceil(n / batch_size)


def make_feed(
    cache_dir: str | Path | HUCache,
    split: str,
    batch_size: int,
    *,
    labels: Literal["any", "six"] = "any",
    cohort: str | None = None,
    shuffle: bool = True,
    augment: bool | Augment = False,
    seed: int = 0,
    sample_weights: Mapping[str, float] | None = None,
    repeats: Mapping[str, int] | None = None,
    context: int = 0,
    repeat: bool = False,
    epoch: int = 0,
    drop_remainder: bool = False,
    prefetch: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(hu, y, w)`` batches from the HU cache, for ``model.fit``.

    Args:
        cache_dir: a folder of :func:`brain_audit.dataset.cache.build_cache` or an opened cache.
        split: "train", "validation", "audit" or "pretrain".
        batch_size: images per batch (> 0); with ``tf.distribute`` the global batch.
        labels: ``"any"`` -> y (B, 1); ``"six"`` -> y (B, 6) in :data:`LABEL_COLUMNS` order
            (epidural, intraparenchymal, intraventricular, subarachnoid, subdural, any).
        cohort: only images ``in_<cohort>`` of the cache (e.g. ``"phase1"``).
        shuffle: reshuffle every epoch (stateless, keyed by ``seed`` and the epoch).
        augment: ``True`` for :class:`Augment` defaults, an :class:`Augment`, or ``False``.
        seed: the only source of randomness (shuffling and augmentation).
        sample_weights: image ID -> weight (>= 0), e.g. hard negatives of Phase 4; others 1.
        repeats: image ID -> times the image appears per epoch (integer >= 1): over-sampling
            by repetition instead of (or besides) weighting.
        context: 2.5D input: the ``context`` slices below and above (by z in the series) as
            extra channels; the cache must be built with at least this ``context``.
        repeat: endless stream (epoch after epoch, each reshuffled); else one epoch.
        epoch: the (first) epoch number. Epoch ``e`` is always the same permutation and the
            same augmentation, so a run resumed at epoch ``e`` (``make_feed(..., epoch=e)``)
            sees exactly the batches the uninterrupted run saw.
        drop_remainder: drop a last, smaller batch.
        prefetch: batches to prefetch (``None``: autotune).

    Returns:
        ``tf.data.Dataset`` of ``(hu, y, w)``: hu float32 (B, size, size, 1 + 2 context) in
        HU, channel ``context`` the slice itself (lower channels lower z); y float32
        (B, 1) or (B, 6) in {0, 1}; w float32 (B,). Without ``repeat`` its cardinality is
        :func:`feed_length`.
    """
    # deferred: the data steps (labels, index, cache, their worker processes) never load TensorFlow
    import tensorflow as tf

    if batch_size <= 0:
        raise ValueError(f"`batch_size` must be > 0. Got {batch_size} instead.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Got {seed!r} instead.")
    if not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"`epoch` must be an integer >= 0. Got {epoch!r} instead.")
    aug = Augment() if augment is True else (augment or None)
    if aug is not None and not isinstance(aug, Augment):
        raise ValueError(f"`augment` must be a bool or an Augment. Got {augment!r} instead.")
    plan = feed_plan(cache_dir, split, cohort=cohort, labels=labels, sample_weights=sample_weights,
                     repeats=repeats, context=context)
    cache: HUCache = plan["cache"]
    size, channels = cache.size, 1 + 2 * context
    n = len(plan["ids"])

    # where each stacked image lives: (shard number, row)
    loc = cache.table.loc[plan["stack_ids"], ["shard", "row"]]
    shard_names = list(dict.fromkeys(loc["shard"]))
    shard_of = loc["shard"].map({s: k for k, s in enumerate(shard_names)}).to_numpy(np.int64)
    row_of = loc["row"].to_numpy(np.int64)
    shards = [cache.shard(s) for s in shard_names]
    slots = plan["slots"]

    def gather_chw(batch_idx: np.ndarray) -> np.ndarray:
        flat = slots[batch_idx].reshape(-1)
        sh, rw = shard_of[flat], row_of[flat]
        out = np.empty((len(flat), size, size), dtype=np.int16)
        for k in np.unique(sh):
            m = sh == k
            out[m] = shards[k][rw[m]]
        return out.reshape(len(batch_idx), channels, size, size)

    def gather(batch_idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(gather_chw(batch_idx).transpose(0, 2, 3, 1))

    y_all = tf.constant(plan["y"])
    w_all = tf.constant(plan["w"])
    seed64 = tf.constant(int(seed), tf.int64)

    def one_epoch(e):
        e = tf.cast(e, tf.int64)
        idx = tf.range(n, dtype=tf.int64)
        if shuffle:
            idx = tf.random.experimental.stateless_shuffle(idx, seed=tf.stack([seed64, e]))
        batches = tf.data.Dataset.from_tensor_slices(idx).batch(batch_size, drop_remainder=drop_remainder)
        return batches.enumerate().map(lambda step, b: (e, step, b))

    if repeat:
        ds = tf.data.Dataset.counter(start=epoch).flat_map(one_epoch)
    else:
        ds = one_epoch(tf.constant(epoch, tf.int64))

    def gather_augmented(batch_idx: np.ndarray, e: np.int64, step: np.int64) -> np.ndarray:
        rng = np.random.default_rng([int(seed), int(e), int(step)])
        x = gather_chw(batch_idx).astype(np.float32)
        _augment_chw(x, aug, rng)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def load(e, step, idx):
        if aug is None:
            hu = tf.cast(tf.numpy_function(gather, [idx], tf.int16, stateful=False), tf.float32)
        else:
            hu = tf.numpy_function(gather_augmented, [idx, e, step], tf.float32, stateful=False)
        hu = tf.ensure_shape(hu, [None, size, size, channels])
        y, w = tf.gather(y_all, idx), tf.gather(w_all, idx)
        return hu, y, w

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not repeat:
        steps = n // batch_size if drop_remainder else math.ceil(n / batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def augment_batch(hu: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Augment a batch of HU images (what :func:`make_feed` does with ``augment``).

    Per image, in this order: left-right flip (probability 1/2 when ``aug.flip``); one
    affine warp about the image centre combining rotation, isotropic zoom and shift
    (OpenCV bilinear, pixels from outside = :data:`~brain_audit.dicom.AIR_HU`), the same
    for every channel so 2.5D neighbours stay registered; then gain and offset on tissue
    (HU > -900) only, air untouched.

    Args:
        hu: float32 (B, H, W, C) in HU.
        aug: the ranges.
        rng: the source of randomness (the feed seeds it with (seed, epoch, batch)).

    Returns:
        float32 (B, H, W, C) in HU, a new array.
    """
    x = np.ascontiguousarray(np.asarray(hu, dtype=np.float32).transpose(0, 3, 1, 2))
    if x is hu:  # never modify the caller's array
        x = x.copy()
    _augment_chw(x, aug, rng)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _augment_chw(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> None:
    """In place on float32 (B, C, H, W): the work of :func:`augment_batch`."""

    b, c, h, w = x.shape
    u = rng.uniform(-1.0, 1.0, size=(b, 7))
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    if aug.flip:
        flip = u[:, 0] > 0
        x[flip] = x[flip][..., ::-1]
    for k in range(b):
        angle = float(u[k, 1] * aug.rotation_deg)
        scale = float(1.0 + u[k, 2] * aug.zoom)
        tx, ty = float(u[k, 3] * aug.shift * w), float(u[k, 4] * aug.shift * h)
        if angle or scale != 1.0 or tx or ty:
            m = cv2.getRotationMatrix2D(centre, angle, scale)
            m[0, 2] += tx
            m[1, 2] += ty
            for ch in range(c):
                x[k, ch] = cv2.warpAffine(x[k, ch], m, (w, h), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=AIR_HU)
    if aug.hu_gain or aug.hu_offset:
        gain = (1.0 + u[:, 5] * aug.hu_gain).astype(np.float32)
        offset = (u[:, 6] * aug.hu_offset).astype(np.float32)
        for k in range(b):
            tissue = x[k] > -900.0
            np.multiply(x[k], gain[k], out=x[k], where=tissue)
            np.add(x[k], offset[k], out=x[k], where=tissue)
