"""Where a map falls, beside where chance would put it: energy per region, the pointing game, shortcut flags.

:func:`attention_profile` shares one map's energy among disjoint regions found from HU
(:mod:`brain_audit.skull`: metal, calcification, skull, intracranial, scalp, head holder, outside the head),
each beside its area share (the energy share of a uniform map) and their ratio, the *enrichment* (1 for a
uniform map); scores the pointing game against a lesion mask where truth is known, beside its exact chance
baselines; and raises the flags of :data:`FLAGS`. Every flag is relative to chance: a uniform map, or a map
constant inside the head, raises none, whatever the field of view. :func:`chance_flags` gives, per row of a
profile table, the flags a uniform map would raise on that slice's regions. :func:`audit_batch` profiles a
batch of HU slices in one gradient pass and :func:`profile_cached` cached slices in bounded memory: the one
profile loop of Phase 3, the held-out audit and ``brain-audit gradcam``.

References:
    Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
    Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from brain_audit.gradcam.maps import AUDIT_METHOD, Method, audit_cam, audit_layer, cached_cam, resize_map
from brain_audit.model.predictions import model_context, predict
from brain_audit.skull import DISJOINT_ORDER, disjoint_regions, region_masks

__all__ = [
    "BONE_FOCUS_ENRICHMENT",
    "BONE_FOCUS_MIN_SHARE",
    "ENERGY_BASELINES",
    "FLAGS",
    "HIT_BASELINES",
    "HIT_RADIUS_MM",
    "HIT_RADIUS_PX",
    "INTRACRANIAL_MIN_ENRICHMENT",
    "MIMIC_REGIONS",
    "OUTSIDE_HEAD_FOCUS_ENRICHMENT",
    "OUTSIDE_HEAD_FOCUS_MIN_SHARE",
    "attention_profile",
    "audit_batch",
    "chance_flags",
    "mimic_presence",
    "profile_cached",
    "profile_columns",
]


#: ``bone_focus`` needs the skull's enrichment *within the head* (its energy per area over that of the whole
#: head) at or above this: a map constant inside the head has 1, whatever share of the head the skull is.
BONE_FOCUS_ENRICHMENT: float = 2.0

#: ... and at least this share of the map's energy on the skull (a thin skull cannot make a flag from a trace).
BONE_FOCUS_MIN_SHARE: float = 0.1

#: ``outside_head_focus`` needs the enrichment of outside the head (air, pillows, head holder; nothing there
#: can show a bleed) at or above this; a uniform map has 1, a map constant inside the head 0.
OUTSIDE_HEAD_FOCUS_ENRICHMENT: float = 1.5

#: ... and at least this share of the map's energy there (coarse maps leak a few per cent over the scalp edge).
OUTSIDE_HEAD_FOCUS_MIN_SHARE: float = 0.25

#: A correct call whose intracranial enrichment is below this is ``right_for_wrong_reason``: the map puts
#: less energy per area on the intracranial space than a uniform map (1) would.
INTRACRANIAL_MIN_ENRICHMENT: float = 0.8

#: Default tolerance of the pointing game and the small-target flags, in pixels of the masks, when no pixel
#: size is given (Zhang et al. 2018 use 15 px at 224 px input).
HIT_RADIUS_PX: float = 15.0

#: Default tolerance in millimetres when the caller gives the pixel size (``pixel_mm``): about the size of a
#: small bleed, and under half a Grad-CAM cell (7 x 7 cells over a 250 mm field of view are 36 mm wide).
HIT_RADIUS_MM: float = 15.0

#: Relative tolerance under which map values count as tied for the maximum (the peak is a set of pixels).
_PEAK_RTOL: float = 1e-6

#: Flag names of :func:`attention_profile`, in column order.
FLAGS: tuple[str, ...] = ("bone_focus", "calcification_focus", "device_focus", "outside_head_focus",
                          "right_for_wrong_reason")

#: Chance baselines of the pointing game (the probability that a peak drawn from each prior is a hit).
HIT_BASELINES: tuple[str, ...] = ("baseline_hit_uniform", "baseline_hit_centre", "baseline_hit_head",
                                  "baseline_hit_intracranial")

#: Chance baselines of the energy-based pointing game (the lesion energy share of each prior map).
ENERGY_BASELINES: tuple[str, ...] = ("baseline_energy_uniform", "baseline_energy_head", "baseline_energy_intracranial")

_NAMES: tuple[str, ...] = tuple(DISJOINT_ORDER) + ("other",)
_HEAD: tuple[str, ...] = ("metal", "calcification", "skull", "intracranial", "scalp", "other")
_OFF_HEAD: tuple[str, ...] = ("outside_head", "head_holder")


def _ratio(num: Any, den: Any) -> Any:
    """``num / den``, NaN where ``den`` is 0 (scalars or arrays)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if out.ndim else float(out)


def _enrichments(energy: Mapping[str, Any], area: Mapping[str, Any]) -> dict[str, Any]:
    """Enrichment of every disjoint region, of the head, of outside the head, and of the skull within the head."""
    out = {f"enrichment_{n}": _ratio(energy[n], area[n]) for n in _NAMES}
    e_head, a_head = sum(energy[n] for n in _HEAD), sum(area[n] for n in _HEAD)
    out["enrichment_head"] = _ratio(e_head, a_head)
    out["enrichment_off_head"] = _ratio(sum(energy[n] for n in _OFF_HEAD), sum(area[n] for n in _OFF_HEAD))
    out["enrichment_skull_in_head"] = _ratio(_ratio(energy["skull"], e_head), _ratio(area["skull"], a_head))
    return out


def _share_flags(energy: Mapping[str, Any], area: Mapping[str, Any], correct: Any) -> dict[str, Any]:
    """The flags read from energy and area shares (scalars or aligned arrays); NaN enrichment raises no flag.

    ``correct`` is True / False per call, or None / NaN when unknown (``right_for_wrong_reason`` then None).
    """
    enr = _enrichments(energy, area)
    off_share = sum(np.asarray(energy[n], dtype=np.float64) for n in _OFF_HEAD)
    with np.errstate(invalid="ignore"):
        bone = (np.asarray(enr["enrichment_skull_in_head"]) >= BONE_FOCUS_ENRICHMENT) & (
            np.asarray(energy["skull"], dtype=np.float64) >= BONE_FOCUS_MIN_SHARE)
        outside = (np.asarray(enr["enrichment_off_head"]) >= OUTSIDE_HEAD_FOCUS_ENRICHMENT) & (
            off_share >= OUTSIDE_HEAD_FOCUS_MIN_SHARE)
        low = np.asarray(enr["enrichment_intracranial"]) < INTRACRANIAL_MIN_ENRICHMENT
    if np.ndim(bone) == 0:
        known = correct is not None and not (isinstance(correct, float) and np.isnan(correct))
        wrong_reason = bool(correct and low) if known else None
        return {"bone_focus": bool(bone), "outside_head_focus": bool(outside), "right_for_wrong_reason": wrong_reason}
    c = pd.Series(correct, dtype=object)
    known = c.notna().to_numpy()
    wrong_reason = np.where(known, c.fillna(False).astype(bool).to_numpy() & low, None).astype(object)
    return {"bone_focus": bone, "outside_head_focus": outside, "right_for_wrong_reason": wrong_reason}


def _distance_map(mask: np.ndarray) -> np.ndarray | None:
    """Euclidean distance in pixels from every pixel to the nearest True pixel of ``mask`` (None if empty)."""
    if not mask.any():
        return None
    return ndimage.distance_transform_edt(~mask)


def _tolerance_px(hit_radius_px: float | None, pixel_mm: float | None, hit_radius_mm: float) -> float:
    if pixel_mm is not None:
        if hit_radius_px is not None:
            raise ValueError(f"`hit_radius_px` must be None when `pixel_mm` is given. Got {hit_radius_px!r} instead.")
        if isinstance(pixel_mm, bool) or not np.isfinite(pixel_mm) or not pixel_mm > 0:
            raise ValueError(f"`pixel_mm` must be a finite number > 0. Got {pixel_mm!r} instead.")
        if not np.isfinite(hit_radius_mm) or hit_radius_mm < 0:
            raise ValueError(f"`hit_radius_mm` must be >= 0. Got {hit_radius_mm!r} instead.")
        return float(hit_radius_mm) / float(pixel_mm)
    radius = HIT_RADIUS_PX if hit_radius_px is None else hit_radius_px
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"`hit_radius_px` must be >= 0. Got {radius!r} instead.")
    return float(radius)


def attention_profile(
    cam: np.ndarray,
    hu: np.ndarray | None = None,
    masks: dict[str, np.ndarray] | None = None,
    lesion_mask: np.ndarray | None = None,
    *,
    probability: float | None = None,
    label: int | None = None,
    threshold: float = 0.5,
    hit_radius_px: float | None = None,
    pixel_mm: float | None = None,
    hit_radius_mm: float = HIT_RADIUS_MM,
) -> dict[str, Any]:
    """Where one Grad-CAM map falls, beside chance: energy and enrichment per region, pointing game, flags.

    Order of operations: regions from ``masks`` (or :func:`brain_audit.skull.region_masks` of ``hu``),
    made disjoint by :func:`brain_audit.skull.disjoint_regions`; the map resized (bilinear) to the
    masks' shape, negative values clipped; energy = sum of the map's values. The *peak* is the set of
    pixels tied for the maximum (relative tolerance 1e-6); ``peak_y`` / ``peak_x`` is its first pixel
    in raster order. A target is hit when *every* peak pixel lies within the tolerance of it, so a
    plateau does not score by the accident of ``argmax``'s tie-break; a flat map (maximum = minimum)
    has no peak and hits nothing.

    Args:
        cam: float (h, w) map, >= 0 (e.g. one map of :func:`grad_cam`); any scale.
        hu: float (H, W) HU of the same slice; used only when ``masks`` is None.
        masks: region masks (H, W) bool as :func:`brain_audit.skull.region_masks` gives, or phantom
            truth masks with the same keys; missing keys count as empty. ``device`` (metal and
            catheters) is used for ``device_focus`` when present, else ``metal``.
        lesion_mask: optional bool (H, W) ground truth of the lesion (phantoms).
        probability: the model's probability for the explained output (for ``right_for_wrong_reason``).
        label: the true 0/1 label of that output.
        threshold: decision threshold on ``probability``.
        hit_radius_px: tolerance of the pointing game and the peak flags, pixels of (H, W); default
            :data:`HIT_RADIUS_PX` when ``pixel_mm`` is None. Give one of the two, not both.
        pixel_mm: size of one pixel of (H, W) in mm (the slice's spacing times its size over H); the
            tolerance is then ``hit_radius_mm / pixel_mm`` pixels.
        hit_radius_mm: tolerance in mm, used with ``pixel_mm``.

    Returns:
        dict with

        * ``energy_<region>`` for each disjoint region (metal, calcification, skull, intracranial,
          scalp, head_holder, outside_head, other): share of the map's energy, float, summing to 1
          (all 0.0 for an all-zero map, with a warning);
        * ``area_<region>``: the region's share of the image, the energy share of a uniform map;
        * ``enrichment_<region>`` = energy share / area share: 1 for a uniform map, > 1 where the map
          is denser than uniform, 0 where it is zero; NaN for a region of zero area (undefined). Also
          ``enrichment_head`` (every region but outside_head and head_holder: "other", the pixels no
          mask holds, is the scalp of phantom truth masks, which have no ``scalp`` key),
          ``enrichment_off_head`` (outside_head and head_holder together) and
          ``enrichment_skull_in_head`` (enrichment_skull / enrichment_head: 1 for any map constant
          inside the head);
        * ``peak_y``, ``peak_x``, ``peak_region``: the peak's first pixel and its region; ``"none"`` for
          an all-zero map and ``"flat"`` for a constant non-zero map (no defined peak);
        * ``hit_radius_px``: the tolerance used, pixels of (H, W);
        * ``correct``: the call (``probability >= threshold``) equals ``label``; None without both;
        * with ``lesion_mask``: ``pointing_distance_px`` (farthest peak pixel to the nearest lesion
          pixel; inf without a peak or lesion), ``pointing_hit`` (Zhang et al. 2018) and its exact
          chance baselines :data:`HIT_BASELINES` (probability of a hit for a peak drawn uniformly from
          the image, at the centre pixel ``(H // 2, W // 2)``, uniformly from the head, uniformly from
          the intracranial region); ``lesion_energy`` (energy-based pointing game, Wang et al. 2020),
          ``lesion_area`` and ``lesion_enrichment`` = lesion_energy / lesion_area, with baselines
          :data:`ENERGY_BASELINES` (the lesion share of a map uniform over the image = ``lesion_area``,
          over the head, over the intracranial region). Baselines whose prior region is empty, and
          everything but ``lesion_area`` for an empty lesion mask, are NaN.
        * the flags of :data:`FLAGS` (bool; ``right_for_wrong_reason`` None without probability and
          label; every flag False for an all-zero map): ``bone_focus`` enrichment_skull_in_head >=
          :data:`BONE_FOCUS_ENRICHMENT` and energy_skull >= :data:`BONE_FOCUS_MIN_SHARE`;
          ``outside_head_focus`` enrichment_off_head >= :data:`OUTSIDE_HEAD_FOCUS_ENRICHMENT` and
          energy_outside_head + energy_head_holder >= :data:`OUTSIDE_HEAD_FOCUS_MIN_SHARE`;
          ``device_focus`` / ``calcification_focus`` every peak pixel within the tolerance of a device
          (``masks["device"]``, else ``masks["metal"]``) / a calcified focus; ``right_for_wrong_reason``
          a correct call with enrichment_intracranial < :data:`INTRACRANIAL_MIN_ENRICHMENT`. A NaN
          enrichment raises no flag. A uniform map, or one constant inside the head, raises none.

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
    radius = _tolerance_px(hit_radius_px, pixel_mm, hit_radius_mm)
    c = np.maximum(resize_map(c, shape), 0.0)
    total = float(c.sum(dtype=np.float64))
    zero = not total > 0
    if zero:
        warnings.warn("attention_profile: the map is zero everywhere; energy shares are 0 and flags False.",
                      RuntimeWarning, stacklevel=2)
    energy = {n: 0.0 if zero else float(c[parts[n]].sum(dtype=np.float64) / total) for n in _NAMES}
    area = {n: float(parts[n].mean()) for n in _NAMES}
    out: dict[str, Any] = {f"energy_{n}": energy[n] for n in _NAMES}
    out.update({f"area_{n}": area[n] for n in _NAMES})
    out.update(_enrichments(energy, area))
    cmax, cmin = float(c.max()), float(c.min())
    flat = not zero and cmax - cmin <= _PEAK_RTOL * cmax
    peak = None if zero or flat else c >= cmax * (1.0 - _PEAK_RTOL)
    py, px = np.unravel_index(int(np.argmax(c)), c.shape)
    out["peak_y"], out["peak_x"] = int(py), int(px)
    out["peak_region"] = "none" if zero else "flat" if flat else next(n for n in _NAMES if parts[n][py, px])
    out["hit_radius_px"] = radius
    correct = None if probability is None or label is None else bool((probability >= threshold) == bool(label))
    out["correct"] = correct

    def peak_within(dist: np.ndarray | None) -> bool:
        return bool(peak is not None and dist is not None and float(dist[peak].max()) <= radius)

    if lesion_mask is not None:
        out.update(_pointing_game(c, total, parts, lesion_mask, shape, radius, peak))
    calc = device = None
    if peak is not None:  # distance maps only where a peak can be near a small target
        calc = _distance_map(np.asarray(masks.get("calcification", np.zeros(shape, bool)), dtype=bool))
        device = _distance_map(np.asarray(masks.get("device", masks.get("metal", np.zeros(shape, bool))), dtype=bool))
    flags = _share_flags(energy, area, correct)
    out["bone_focus"] = not zero and flags["bone_focus"]
    out["calcification_focus"] = peak_within(calc)
    out["device_focus"] = peak_within(device)
    out["outside_head_focus"] = not zero and flags["outside_head_focus"]
    out["right_for_wrong_reason"] = None if correct is None else bool(not zero and flags["right_for_wrong_reason"])
    return out


def _pointing_game(c: np.ndarray, total: float, parts: dict[str, np.ndarray], lesion_mask: np.ndarray,
                   shape: tuple[int, ...], radius: float, peak: np.ndarray | None) -> dict[str, Any]:
    """Pointing game, energy pointing game and their exact chance baselines (see :func:`attention_profile`)."""
    lesion = np.asarray(lesion_mask, dtype=bool)
    if lesion.shape != shape:
        raise ValueError(f"`lesion_mask` must have the masks' shape {shape}. Got {lesion.shape} instead.")
    nan = float("nan")
    out: dict[str, Any] = {}
    dist = _distance_map(lesion)
    if dist is None:
        warnings.warn("attention_profile: the lesion mask is empty; pointing game not scored.", RuntimeWarning,
                      stacklevel=3)
    far = float("inf") if dist is None or peak is None else float(dist[peak].max())
    out["pointing_distance_px"] = far
    out["pointing_hit"] = bool(far <= radius)
    head = np.logical_or.reduce([parts[n] for n in _HEAD])
    brain = parts["intracranial"]
    if dist is None:
        out.update(dict.fromkeys(HIT_BASELINES, nan))
    else:
        zone = dist <= radius  # where a peak pixel would score a hit
        out["baseline_hit_uniform"] = float(zone.mean())
        out["baseline_hit_centre"] = float(zone[shape[0] // 2, shape[1] // 2])
        out["baseline_hit_head"] = float(zone[head].mean()) if head.any() else nan
        out["baseline_hit_intracranial"] = float(zone[brain].mean()) if brain.any() else nan
    area = float(lesion.mean())
    known = dist is not None
    if not known:
        out["lesion_energy"] = nan
    else:
        out["lesion_energy"] = float(c[lesion].sum(dtype=np.float64) / total) if total > 0 else 0.0
    out["lesion_area"] = area
    out["lesion_enrichment"] = float(out["lesion_energy"] / area) if known else nan
    out["baseline_energy_uniform"] = area if known else nan
    out["baseline_energy_head"] = float((lesion & head).sum() / head.sum()) if known and head.any() else nan
    out["baseline_energy_intracranial"] = float((lesion & brain).sum() / brain.sum()) if known and brain.any() else nan
    return out


def chance_flags(table: pd.DataFrame) -> pd.DataFrame:
    """The flags a uniform map would raise on each row's slice, from the row's ``area_<region>`` columns.

    The same rules as :func:`attention_profile`, with every energy share set to its area share; the peak
    flags are False (a uniform map has no peak). ``right_for_wrong_reason`` is None where the row's
    ``correct`` is unknown (missing or None). By construction no flag is raised on a slice with any head
    and any intracranial area: this computes it rather than assumes it.

    Args:
        table: rows of :func:`attention_profile` / :func:`audit_batch` (the ``area_<region>`` columns, and
            ``correct`` if known).

    Returns:
        pandas.DataFrame with the columns of :data:`FLAGS`, the index of ``table``.
    """
    missing = [f"area_{n}" for n in _NAMES if f"area_{n}" not in table]
    if missing:
        raise ValueError(f"`table` must have the area columns of attention_profile. Got no {missing} instead.")
    area = {n: table[f"area_{n}"].to_numpy(dtype=np.float64) for n in _NAMES}
    correct = table["correct"] if "correct" in table else pd.Series([None] * len(table), index=table.index)
    flags = _share_flags(area, area, correct.to_numpy(dtype=object))
    false = np.zeros(len(table), dtype=bool)
    return pd.DataFrame({"bone_focus": flags["bone_focus"], "calcification_focus": false, "device_focus": false,
                         "outside_head_focus": flags["outside_head_focus"],
                         "right_for_wrong_reason": flags["right_for_wrong_reason"]}, index=table.index)[list(FLAGS)]


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

    cols = [f"energy_{n}" for n in _NAMES] + [f"area_{n}" for n in _NAMES] + [f"enrichment_{n}" for n in _NAMES]
    cols += ["enrichment_head", "enrichment_off_head", "enrichment_skull_in_head"]
    cols += ["peak_y", "peak_x", "peak_region", "hit_radius_px", "correct"]
    if lesion:
        cols += ["pointing_distance_px", "pointing_hit", *HIT_BASELINES, "lesion_energy", "lesion_area",
                 "lesion_enrichment", *ENERGY_BASELINES]
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
    method: Method | None = None,
    threshold: float = 0.5,
    hit_radius_px: float | None = None,
    pixel_mm: float | Sequence[float | None] | None = None,
    hit_radius_mm: float = HIT_RADIUS_MM,
    maps: np.ndarray | None = None,
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
        layer, output_index, method: as in :func:`grad_cam`; ``None`` takes the audits' choice
            (:func:`brain_audit.gradcam.maps.audit_layer`, :data:`~brain_audit.gradcam.maps.AUDIT_METHOD`).
        threshold, hit_radius_px, hit_radius_mm: as in :func:`attention_profile`.
        pixel_mm: size of one pixel of each slice's *masks* in mm, one number for all slices or one per
            slice (None entries: ``hit_radius_px``); as in :func:`attention_profile`.
        maps: optional float (N, h, w) maps of another method (e.g.
            :func:`brain_audit.gradcam.occlusion.occlusion_maps`) to profile instead of a gradient pass; the
            probabilities are then ``probabilities`` if given, else the model's prediction.

    Returns:
        ``(table, maps)``: pandas.DataFrame with ``image_id``, ``probability``, ``label``, the columns of
        :func:`profile_columns` and ``has_metal`` / ``has_calcification`` / ``has_head_holder``; and the
        float32 (N, S, S) maps. Zero maps are kept (``peak_region`` "none") and warned about once.
    """


    x = np.asarray(hu_batch, dtype=np.float32)
    n = len(x)
    scalar_mm = pixel_mm is None or np.ndim(pixel_mm) == 0
    for name, seq in (("masks", masks), ("lesion_masks", lesion_masks), ("labels", labels), ("image_ids", image_ids),
                      ("probabilities", probabilities), ("pixel_mm", None if scalar_mm else pixel_mm)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{name}` must hold one entry per slice ({n}). Got {len(seq)} instead.")
    if maps is not None:
        maps = np.asarray(maps, dtype=np.float32)
        if len(maps) != n:
            raise ValueError(f"`maps` must hold one map per slice ({n}). Got {len(maps)} instead.")
        if probabilities is None:
            probabilities = predict(model, x)[:, output_index]
    else:
        if layer is None and method is None:
            cam_fn = audit_cam(model, output_index)
        else:
            cam_fn = cached_cam(model, audit_layer(model) if layer is None else layer, output_index,
                                AUDIT_METHOD if method is None else method)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            maps, logits = cam_fn(x, return_logits=True)
        for w in caught:
            warnings.warn(str(w.message), RuntimeWarning, stacklevel=2)
        if probabilities is None:
            probabilities = 1.0 / (1.0 + np.exp(-logits[:, output_index].astype(np.float64)))
    probs = np.asarray(probabilities, dtype=np.float64)
    rows = []
    for i in range(n):
        m = masks[i] if masks is not None else region_masks(x[i] if x.ndim == 3 else x[i, ..., x.shape[-1] // 2])
        label = None if labels is None or labels[i] is None else int(labels[i])
        lesion = None if lesion_masks is None else lesion_masks[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps already warned about above
            mm = pixel_mm if scalar_mm else pixel_mm[i]
            prof = attention_profile(maps[i], masks=m, lesion_mask=lesion, probability=float(probs[i]), label=label,
                                     threshold=threshold, hit_radius_px=hit_radius_px, pixel_mm=mm,
                                     hit_radius_mm=hit_radius_mm)
        row = {"image_id": str(image_ids[i]) if image_ids is not None else str(i), "probability": float(probs[i]),
               "label": label}
        row.update(prof)
        row.update({f"has_{k}": v for k, v in mimic_presence(m).items()})
        rows.append(row)
    return pd.DataFrame(rows), maps


def _finite_or_none(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


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
    pixel_mm: float | Mapping[str, float] | None = None,
    hit_radius_mm: float = HIT_RADIUS_MM,
    layer: str | None = None,
    method: Method | None = None,
) -> Any:
    """:func:`audit_batch` over cached slices, ``batch_size`` at a time (bounded memory).

    The one profile loop of Phase 3, the held-out audit and the hard-negative mining: HU read from
    the cache as the model takes them (:meth:`~brain_audit.dataset.cache.HUCache.hu_input` at
    :func:`~brain_audit.model.predictions.model_context`: a 2.5-D model gets its neighbours), regions from
    :func:`brain_audit.skull.region_masks` of the slice itself (the centre channel), lesion masks
    scored only on positive slices. All-zero maps are not warned about here; they are the rows whose
    ``peak_region`` is ``"none"``.

    Args:
        model: Keras model, HU input (``build_model``).
        cache: an opened :class:`brain_audit.dataset.cache.HUCache` (anything with ``hu_input(ids, context)``).
        ids: image IDs to profile.
        labels: (N,) true 0/1 labels of the explained output.
        probabilities: (N,) the model's probabilities for it (as scored by the caller).
        threshold: decision threshold (for ``right_for_wrong_reason``).
        lesions: optional image ID -> bool lesion mask at cache resolution.
        output_index: unit of the final Dense layer explained.
        batch_size: slices per gradient pass, >= 1.
        on_batch: called as ``on_batch(table, hu, maps)`` after each batch, e.g. to keep the maps
            of the slices worth a picture without holding every map in memory; ``hu`` float32 (B, S, S),
            the slices themselves (the centre channel of a 2.5-D input).
        pixel_mm: size of one cache pixel in mm (field of view / cache side), one number or image ID ->
            mm (missing or NaN: pixels); with it the pointing game's tolerance is ``hit_radius_mm``, without
            it :data:`HIT_RADIUS_PX` pixels.
        hit_radius_mm: tolerance in mm, used with ``pixel_mm``.
        layer, method: as in :func:`audit_batch` (None: the audits' maps).

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
    context = model_context(model)
    for start in range(0, len(ids), batch_size):
        part = list(ids[start : start + batch_size])
        sel = slice(start, start + len(part))
        hu = cache.hu_input(part, context)
        lesion = None
        if lesions is not None:
            lesion = [lesions.get(i) if y == 1 else None for i, y in zip(part, labels[sel])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps: peak_region "none"
            mm = pixel_mm
            if isinstance(pixel_mm, Mapping):
                mm = [_finite_or_none(pixel_mm.get(i)) for i in part]
            table, maps = audit_batch(model, hu, lesion_masks=lesion, labels=labels[sel], image_ids=part,
                                      probabilities=probabilities[sel], output_index=output_index,
                                      threshold=threshold, pixel_mm=mm, hit_radius_mm=hit_radius_mm,
                                      layer=layer, method=method)
        if on_batch is not None:
            on_batch(table, hu[..., context], maps)
        parts.append(table)
    if not parts:
        return pd.DataFrame(columns=["image_id", "probability", "label"] + profile_columns(lesions is not None))
    return pd.concat(parts, ignore_index=True)
