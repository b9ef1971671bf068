"""Where a map falls: energy per anatomical region, the pointing game, and the shortcut flags.

:func:`attention_profile` shares one map's energy among disjoint regions found from HU
(:mod:`brain_audit.skull`: metal, calcification, skull, intracranial, scalp, head holder, outside the head),
each beside its area share (the chance level), scores the pointing game against a lesion mask where truth
is known, and raises the flags of :data:`FLAGS`. :func:`audit_batch` does it for a batch of HU slices in one
gradient pass and :func:`profile_cached` for cached slices in bounded memory: the one profile loop of
Phase 3, the held-out audit and ``brain-audit gradcam``.

References:
    Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
    Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from brain_audit.gradcam.maps import Method, cached_cam, resize_map
from brain_audit.skull import DISJOINT_ORDER, disjoint_regions, region_masks

__all__ = [
    "BONE_FOCUS_SHARE",
    "OUTSIDE_HEAD_FOCUS_SHARE",
    "INTRACRANIAL_MIN_SHARE",
    "HIT_RADIUS_PX",
    "FLAGS",
    "attention_profile",
    "MIMIC_REGIONS",
    "mimic_presence",
    "profile_columns",
    "audit_batch",
    "profile_cached",
]


#: Energy share on the skull above which a map is ``bone_focus`` (the skull is about 6 % of a real
#: slice's area and 5-10 % at model resolution, so 0.35 is several times chance).
BONE_FOCUS_SHARE: float = 0.35


#: Energy share outside the head (air, pillows, head holder) above which a map is ``outside_head_focus``
#: (nothing there can show a bleed; coarse maps leak a few per cent over the scalp edge).
OUTSIDE_HEAD_FOCUS_SHARE: float = 0.25


#: Intracranial energy share below which the attention is "mostly off the intracranial space"
#: (``right_for_wrong_reason`` for a correct prediction).
INTRACRANIAL_MIN_SHARE: float = 0.5


#: Radius, in pixels of the map / masks, of the pointing game (Zhang et al. 2018 use 15 px) and of the
#: small-target flags: ``device_focus`` / ``calcification_focus`` when the map's peak lies within this
#: distance of metal / a calcified focus. Small foci hold too few pixels for an energy share to mean
#: anything at Grad-CAM's resolution (7 x 7 cells at 224 px), so their flags use the peak.
HIT_RADIUS_PX: float = 15.0


#: Flag names of :func:`attention_profile`, in column order.
FLAGS: tuple[str, ...] = ("bone_focus", "calcification_focus", "device_focus", "outside_head_focus", "right_for_wrong_reason")


def _distance_to(mask: np.ndarray, point: tuple[int, int]) -> float:
    """Euclidean distance in pixels from ``point`` to the nearest True pixel of ``mask`` (inf if empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return float("inf")
    return float(np.sqrt(np.min((ys - point[0]) ** 2 + (xs - point[1]) ** 2)))


def attention_profile(
    cam: np.ndarray,
    hu: np.ndarray | None = None,
    masks: dict[str, np.ndarray] | None = None,
    lesion_mask: np.ndarray | None = None,
    *,
    probability: float | None = None,
    label: int | None = None,
    threshold: float = 0.5,
    hit_radius_px: float = HIT_RADIUS_PX,
) -> dict[str, Any]:
    """Where one Grad-CAM map falls: energy shares per region, pointing game, shortcut flags.

    Order of operations: regions from ``masks`` (or :func:`brain_audit.skull.region_masks` of ``hu``),
    made disjoint by :func:`brain_audit.skull.disjoint_regions`; the map resized (bilinear) to the
    masks' shape, negative values clipped; energy = sum of the map's values.

    Args:
        cam: float (h, w) map, >= 0 (e.g. one map of :func:`grad_cam`); any scale.
        hu: float (H, W) HU of the same slice; used only when ``masks`` is None.
        masks: region masks (H, W) bool as :func:`brain_audit.skull.region_masks` gives, or phantom
            truth masks with the same keys; missing keys count as empty.
        lesion_mask: optional bool (H, W) ground truth of the lesion (phantoms).
        probability: the model's probability for the explained output (for ``right_for_wrong_reason``).
        label: the true 0/1 label of that output.
        threshold: decision threshold on ``probability``.
        hit_radius_px: pointing-game and small-target radius in pixels of (H, W).

    Returns:
        dict with

        * ``energy_<region>`` for each disjoint region (metal, calcification, skull, intracranial,
          scalp, head_holder, outside_head, other): share of the map's energy, float, summing to 1
          (all 0.0 for an all-zero map, with a warning);
        * ``area_<region>``: the region's share of the image, the chance level of its energy share;
        * ``peak_y``, ``peak_x``, ``peak_region``: the map's maximum and the region holding it;
        * with ``lesion_mask``: ``lesion_energy`` (energy-based pointing game, Wang et al. 2020),
          ``lesion_area`` (its chance level), ``pointing_distance_px`` and ``pointing_hit``
          (peak within ``hit_radius_px`` of the lesion, Zhang et al. 2018);
        * the flags of :data:`FLAGS` (bool; ``right_for_wrong_reason`` is None without probability
          and label): ``bone_focus`` energy_skull >= :data:`BONE_FOCUS_SHARE`; ``outside_head_focus``
          energy_outside_head + energy_head_holder >= :data:`OUTSIDE_HEAD_FOCUS_SHARE`;
          ``device_focus`` / ``calcification_focus`` the peak within ``hit_radius_px`` of metal /
          a calcified focus; ``right_for_wrong_reason`` a correct prediction (``probability >=
          threshold`` equals ``label``) with energy_intracranial < :data:`INTRACRANIAL_MIN_SHARE`.

    Warns:
        RuntimeWarning: an all-zero map (shares 0, flags False), or an empty lesion mask.

    References:
        Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
        Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
    """

    if masks is None:
        if hu is None:
            raise ValueError("`masks` or `hu` must be given. Got neither instead.")
        masks = region_masks(hu)
    parts = disjoint_regions(masks)
    shape = next(iter(parts.values())).shape
    c = np.asarray(cam, dtype=np.float32)
    if c.ndim != 2:
        raise ValueError(f"`cam` must be 2-D (h, w). Got shape {c.shape} instead.")
    if not np.isfinite(c).all():
        raise ValueError("`cam` must be finite. Got NaN or infinity instead.")
    if hit_radius_px < 0:
        raise ValueError(f"`hit_radius_px` must be >= 0. Got {hit_radius_px!r} instead.")
    c = np.maximum(resize_map(c, shape), 0.0)
    total = float(c.sum(dtype=np.float64))
    zero = not total > 0
    if zero:
        warnings.warn("attention_profile: the map is zero everywhere; energy shares are 0 and flags False.", RuntimeWarning, stacklevel=2)
    out: dict[str, Any] = {}
    names = list(DISJOINT_ORDER) + ["other"]
    for name in names:
        out[f"energy_{name}"] = 0.0 if zero else float(c[parts[name]].sum(dtype=np.float64) / total)
    for name in names:
        out[f"area_{name}"] = float(parts[name].mean())
    py, px = np.unravel_index(int(np.argmax(c)), c.shape)
    out["peak_y"], out["peak_x"] = int(py), int(px)
    out["peak_region"] = "none" if zero else next(n for n in names if parts[n][py, px])
    if lesion_mask is not None:
        lesion = np.asarray(lesion_mask, dtype=bool)
        if lesion.shape != shape:
            raise ValueError(f"`lesion_mask` must have the masks' shape {shape}. Got {lesion.shape} instead.")
        if not lesion.any():
            warnings.warn("attention_profile: the lesion mask is empty; pointing game not scored.", RuntimeWarning, stacklevel=2)
        dist = _distance_to(lesion, (py, px)) if not zero else float("inf")
        out["lesion_energy"] = 0.0 if zero else float(c[lesion].sum(dtype=np.float64) / total)
        out["lesion_area"] = float(lesion.mean())
        out["pointing_distance_px"] = dist
        out["pointing_hit"] = bool(lesion.any() and dist <= hit_radius_px)
    metal = np.asarray(masks.get("metal", np.zeros(shape, bool)), dtype=bool)
    calc = np.asarray(masks.get("calcification", np.zeros(shape, bool)), dtype=bool)
    out["bone_focus"] = bool(out["energy_skull"] >= BONE_FOCUS_SHARE)
    out["calcification_focus"] = bool(not zero and _distance_to(calc, (py, px)) <= hit_radius_px)
    out["device_focus"] = bool(not zero and _distance_to(metal, (py, px)) <= hit_radius_px)
    out["outside_head_focus"] = bool(out["energy_outside_head"] + out["energy_head_holder"] >= OUTSIDE_HEAD_FOCUS_SHARE)
    if probability is not None and label is not None:
        correct = bool((probability >= threshold) == bool(label))
        out["right_for_wrong_reason"] = bool(correct and not zero and out["energy_intracranial"] < INTRACRANIAL_MIN_SHARE)
    else:
        out["right_for_wrong_reason"] = None
    return out


#: Mimic columns of :func:`mimic_presence`, named for the region they come from.
MIMIC_REGIONS: tuple[str, ...] = ("metal", "calcification", "head_holder")


def mimic_presence(masks: dict[str, np.ndarray], min_pixels: int = 1) -> dict[str, bool]:
    """Which hemorrhage mimics a slice holds, from its region masks (real data: :func:`region_masks` of HU).

    Returns:
        dict ``{"metal": bool, "calcification": bool, "head_holder": bool}``: the mask has at least
        ``min_pixels`` pixels.
    """
    if min_pixels < 1:
        raise ValueError(f"`min_pixels` must be >= 1. Got {min_pixels!r} instead.")
    return {m: bool(np.count_nonzero(masks.get(m, ())) >= min_pixels) for m in MIMIC_REGIONS}


def profile_columns(lesion: bool = False) -> list[str]:
    """Columns of :func:`attention_profile` (and of the audit tables built from it), in order."""

    names = list(DISJOINT_ORDER) + ["other"]
    cols = [f"energy_{n}" for n in names] + [f"area_{n}" for n in names] + ["peak_y", "peak_x", "peak_region"]
    if lesion:
        cols += ["lesion_energy", "lesion_area", "pointing_distance_px", "pointing_hit"]
    return cols + list(FLAGS)


def audit_batch(
    model: Any,
    hu_batch: np.ndarray,
    *,
    masks: Sequence[dict[str, np.ndarray]] | None = None,
    lesion_masks: Sequence[np.ndarray | None] | None = None,
    labels: Sequence[int | None] | np.ndarray | None = None,
    image_ids: Sequence[str] | None = None,
    probabilities: Sequence[float] | np.ndarray | None = None,
    layer: str | None = None,
    output_index: int = 0,
    method: Method = "gradcam",
    threshold: float = 0.5,
    hit_radius_px: float = HIT_RADIUS_PX,
) -> tuple[Any, np.ndarray]:
    """Grad-CAM and attention profiles of a batch of HU slices already at the model's input size.

    What Phase 3 (``brain_audit.train``) and the audit tables call on the HU cache: one gradient pass
    (the probabilities come from the same pass), then :func:`attention_profile` per slice.

    Args:
        model: Keras model, HU input (``build_model``).
        hu_batch: float (N, S, S) or (N, S, S, C) HU at the model's input size.
        masks: per-slice region masks at any resolution (e.g. :func:`brain_audit.skull.region_masks`
            of the full-resolution slice, or phantom truth); default: ``region_masks`` of the HU given
            (channel ``C // 2``, the centre slice of a 2.5D input, as :class:`brain_audit.model.MultiWindow`).
        lesion_masks: per-slice lesion truth (bool, the masks' shape) or None entries.
        labels: per-slice 0/1 labels of the explained output, or None entries.
        image_ids: per-slice IDs for the ``image_id`` column (default ``"0"``, ``"1"``, ...).
        probabilities: per-slice probabilities of the explained output when the caller has scored
            the slices already (``model.predict``); default: the sigmoid of the logits of the same pass.
        layer, output_index, method: as in :func:`grad_cam`.
        threshold, hit_radius_px: as in :func:`attention_profile`.

    Returns:
        ``(table, maps)``: pandas.DataFrame with ``image_id``, ``probability``, ``label``, the columns of
        :func:`profile_columns` and ``has_metal`` / ``has_calcification`` / ``has_head_holder``; and the
        float32 (N, S, S) maps. Zero maps are kept (``peak_region`` "none") and warned about once.
    """


    x = np.asarray(hu_batch, dtype=np.float32)
    n = len(x)
    for name, seq in (("masks", masks), ("lesion_masks", lesion_masks), ("labels", labels), ("image_ids", image_ids),
                      ("probabilities", probabilities)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{name}` must hold one entry per slice ({n}). Got {len(seq)} instead.")
    cam_fn = cached_cam(model, layer, output_index, method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        maps, logits = cam_fn(x, return_logits=True)
    for w in caught:
        warnings.warn(str(w.message), RuntimeWarning, stacklevel=2)
    if probabilities is None:
        probs = 1.0 / (1.0 + np.exp(-logits[:, output_index].astype(np.float64)))
    else:
        probs = np.asarray(probabilities, dtype=np.float64)
    rows = []
    for i in range(n):
        m = masks[i] if masks is not None else region_masks(x[i] if x.ndim == 3 else x[i, ..., x.shape[-1] // 2])
        label = None if labels is None or labels[i] is None else int(labels[i])
        lesion = None if lesion_masks is None else lesion_masks[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps already warned about above
            prof = attention_profile(maps[i], masks=m, lesion_mask=lesion, probability=float(probs[i]), label=label,
                                     threshold=threshold, hit_radius_px=hit_radius_px)
        row = {"image_id": str(image_ids[i]) if image_ids is not None else str(i), "probability": float(probs[i]), "label": label}
        row.update(prof)
        row.update({f"has_{k}": v for k, v in mimic_presence(m).items()})
        rows.append(row)
    return pd.DataFrame(rows), maps


def profile_cached(
    model: Any,
    cache: Any,
    ids: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    lesions: dict[str, np.ndarray] | None = None,
    *,
    output_index: int = 0,
    batch_size: int = 32,
    on_batch: Callable[[Any, np.ndarray, np.ndarray], None] | None = None,
) -> Any:
    """:func:`audit_batch` over cached slices, ``batch_size`` at a time (bounded memory).

    The one profile loop of Phase 3, the held-out audit and the hard-negative mining: HU read from
    the cache, regions from :func:`brain_audit.skull.region_masks` of the same HU, lesion masks
    scored only on positive slices. All-zero maps are not warned about here; they are the rows whose
    ``peak_region`` is ``"none"``.

    Args:
        model: Keras model, HU input (``build_model``).
        cache: an opened :class:`brain_audit.dataset.cache.HUCache` (anything with ``hu_int16(ids)``).
        ids: image IDs to profile.
        labels: (N,) true 0/1 labels of the explained output.
        probabilities: (N,) the model's probabilities for it (as scored by the caller).
        threshold: decision threshold (for ``right_for_wrong_reason``).
        lesions: optional image ID -> bool lesion mask at cache resolution.
        output_index: unit of the final Dense layer explained.
        batch_size: slices per gradient pass, >= 1.
        on_batch: called as ``on_batch(table, hu, maps)`` after each batch, e.g. to keep the maps
            of the slices worth a picture without holding every map in memory.

    Returns:
        pandas.DataFrame: the rows of :func:`audit_batch`, in the order of ``ids``.
    """

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1. Got {batch_size!r} instead.")
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(labels) == len(probabilities) == len(ids):
        raise ValueError(f"`labels` and `probabilities` must hold one entry per ID ({len(ids)}). "
                         f"Got {len(labels)} and {len(probabilities)} instead.")
    parts = []
    for start in range(0, len(ids), batch_size):
        part = list(ids[start : start + batch_size])
        sel = slice(start, start + len(part))
        hu = cache.hu_int16(part).astype(np.float32)
        lesion = None
        if lesions is not None:
            lesion = [lesions.get(i) if y == 1 else None for i, y in zip(part, labels[sel])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps: peak_region "none"
            table, maps = audit_batch(model, hu, lesion_masks=lesion, labels=labels[sel], image_ids=part,
                                      probabilities=probabilities[sel], output_index=output_index,
                                      threshold=threshold)
        if on_batch is not None:
            on_batch(table, hu, maps)
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=["image_id", "probability", "label"] + profile_columns(lesions is not None))
    return pd.concat(parts, ignore_index=True)
