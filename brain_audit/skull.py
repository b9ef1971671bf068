"""Anatomical regions of one axial head-CT slice from Hounsfield units alone.

:func:`region_masks` finds, with thresholds and morphology only (no model, no
ground truth, so it works on real RSNA slices as on phantoms):

================  ==================================================================
key               what it is
================  ==================================================================
``head``          the patient's head: largest tissue component (> :data:`TISSUE_HU`), holes filled
``outside_head``  everything else (air, padding, head holder, pillows)
``skull``         bone (> :data:`BONE_HU`) connected to the largest bone component, metal removed
``intracranial``  inside the inner table: the skull ring filled, bone excluded
                  (calcified foci and intracranial metal included)
``calcification`` small hyperdense islands inside the intracranial space (peak >= :data:`CALC_PEAK_HU`,
                  every pixel > :data:`CALC_MIN_HU`, area <= :data:`CALC_MAX_AREA_FRACTION` of the
                  intracranial area; blood, 50-90 HU, stays below)
``metal``         > :data:`METAL_HU` anywhere (coils, clips, shunt valves, dental work)
``device``        ``metal`` plus thin, elongated dense components (> :data:`DEVICE_MIN_HU`, median below
                  :data:`BONE_HU`) that enter the intracranial space from the skull: a shunt catheter's
                  polymer tube (overlaps ``metal``; not part of :func:`disjoint_regions`)
``head_holder``   dense structure (> :data:`HOLDER_HU`, median < :data:`HOLDER_MAX_MEDIAN_HU`) outside the head
``scalp``         head that is neither skull nor intracranial (scalp, face, soft tissue)
================  ==================================================================

The masks overlap where anatomy does (``calcification``, intracranial ``metal`` and ``device`` lie inside
``intracranial``; ``head_holder`` inside ``outside_head``; ``device`` holds ``metal``). :func:`disjoint_regions` turns them into a
partition of the image by a fixed priority, which is what attention shares are computed over.

Thresholds come from :file:`real_head_ct.md` (one real slice, 0.48 mm pixels): skull HU percentiles
5 / 50 / 95 = 408 / 755 / 1259 (partial volume pulls the median far below textbook cortical bone),
intracranial 12-43 HU, head holder 214-329 HU, scalp -127..176 HU, air about -1000 HU.

References:
    Muschelli J et al. Validated automatic brain extraction of head CT images. NeuroImage 2015
    (threshold, fill, largest component: the classic CT skull-stripping recipe this follows).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "BONE_HU",
    "CALC_MAX_AREA_FRACTION",
    "CALC_MIN_HU",
    "CALC_PEAK_HU",
    "DEVICE_MAX_WIDTH_FRACTION",
    "DEVICE_MIN_ASPECT",
    "DEVICE_MIN_HU",
    "DEVICE_MIN_LENGTH_FRACTION",
    "DISJOINT_ORDER",
    "HOLDER_HU",
    "HOLDER_MAX_MEDIAN_HU",
    "METAL_HU",
    "METAL_STREAK_FRACTION",
    "REGION_KEYS",
    "TISSUE_HU",
    "disjoint_regions",
    "region_masks",
]

#: Lower HU bound of any tissue (scalp fat reaches about -130 HU; air is about -1000).
TISSUE_HU: float = -300.0
#: Lower HU bound of bone. Real skull: 5th percentile 408 HU, median 755 HU with partial volume.
BONE_HU: float = 300.0
#: Lower HU bound of metal (coils, clips: thousands of HU with streaks; 12-bit data clip at 3,071 HU).
#: Dense petrous bone at the skull base can exceed it; such pixels are reported as metal.
METAL_HU: float = 2000.0
#: Every pixel of a calcified focus is above this (acute blood tops out at about 90 HU).
CALC_MIN_HU: float = 100.0
#: A calcified focus must reach this peak somewhere, so noisy blood (60-90 HU + noise) is not one.
CALC_PEAK_HU: float = 130.0
#: A calcified focus covers at most this share of the intracranial area (1 % of 125 cm2 = 1.25 cm2;
#: pineal and choroid-plexus calcifications are a few mm to 1 cm). Larger dense areas are not "small".
CALC_MAX_AREA_FRACTION: float = 0.01
#: Dense islands closer to metal than this share of the image side are taken for streak artefact, not
#: calcification (coil streaks: bright lines fading over a few cm; 6 % = 15 mm on a 250 mm field).
METAL_STREAK_FRACTION: float = 0.06
#: Lower HU bound of a head holder / table outside the head (real holder: 214-329 HU).
HOLDER_HU: float = 150.0
#: A dense structure outside the skull is a holder only if its median HU is below this (real holder
#: median 280 HU; bone pieces of the face and skull base have medians well above, real skull 755 HU).
HOLDER_MAX_MEDIAN_HU: float = 450.0

#: Lower HU bound of a non-metal device: radiopaque (barium-impregnated) polymer tubing is denser
#: than blood (50-90 HU) and brain, and far below bone; the phantom's shunt catheter wall is 150-300 HU.
DEVICE_MIN_HU: float = 100.0
#: A device tube is at most this wide (full width across its long axis) as a share of the image side
#: (2.4 % = 6 mm on a 250 mm field; shunt catheters are 2-3 mm across).
DEVICE_MAX_WIDTH_FRACTION: float = 0.024
#: ... at least this long inside the skull (4 % = 10 mm on a 250 mm field) ...
DEVICE_MIN_LENGTH_FRACTION: float = 0.04
#: ... and at least this many times longer than wide (a round calcification is about 1).
DEVICE_MIN_ASPECT: float = 4.0

#: Keys of :func:`region_masks`.
REGION_KEYS: tuple[str, ...] = (
    "head",
    "outside_head",
    "skull",
    "intracranial",
    "calcification",
    "metal",
    "device",
    "head_holder",
    "scalp",
)

#: Priority of :func:`disjoint_regions`: a pixel belongs to the first region in this order that holds it.
DISJOINT_ORDER: tuple[str, ...] = (
    "metal",
    "calcification",
    "skull",
    "intracranial",
    "scalp",
    "head_holder",
    "outside_head",
)


def _disk(radius: int) -> np.ndarray:

    r = max(int(radius), 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _largest_component(mask: np.ndarray) -> np.ndarray:

    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _head(hu: np.ndarray, scale: int, exclude: np.ndarray) -> np.ndarray:
    """Largest tissue component without ``exclude`` (a holder), thin contacts opened, holes filled."""

    tissue = (hu > TISSUE_HU) & ~exclude
    r = max(1, scale // 128)  # 4 px at 512, 1 px at 128: breaks thin contacts with the holder
    opened = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_OPEN, _disk(r)).astype(bool)
    core = _largest_component(opened if opened.any() else tissue)
    if not core.any():
        return core
    # give back what the opening shaved off the head itself (thin scalp edge), not a touching holder
    grown = cv2.dilate(core.astype(np.uint8), _disk(r)).astype(bool) & tissue
    return ndimage.binary_fill_holes(grown | core)


def _fill_ring(bone: np.ndarray, scale: int) -> tuple[np.ndarray, int | None]:
    """Interior of the skull ring, closing gaps of growing size (skull-base foramina, vertex).

    Returns the filled ring (bone included) and the closing radius that closed it (0: closed as is),
    or ``(empty, None)`` when no radius up to 8 % of the image gives an interior.
    """

    min_interior = max(4, int(0.002 * scale * scale))
    for frac in (0.0, 0.01, 0.02, 0.04, 0.08):
        r = round(frac * scale)
        closed = bone if r == 0 else cv2.morphologyEx(bone.astype(np.uint8), cv2.MORPH_CLOSE, _disk(r)).astype(bool)
        filled = ndimage.binary_fill_holes(closed)
        if int((filled & ~closed).sum()) >= min_interior:
            return filled, r
    return np.zeros_like(bone), None


def region_masks(hu: np.ndarray) -> dict[str, np.ndarray]:
    """Regions of one axial head-CT slice from its Hounsfield units.

    Order of operations: metal (threshold); head (tissue threshold, small opening, largest
    component, holes filled); skull (bone threshold inside the head, largest component, metal
    removed); head holder (dense, not bone-dense components outside the skull ring; the head is
    then found again without them, so a holder touching the head is not head); intracranial
    (skull ring filled and bone removed; an open ring is closed with discs of growing radius,
    then the convex hull is tried, with a warning); calcification (small hyperdense islands
    inside, away from the inner table and metal streaks); device (metal plus thin elongated dense
    components entering from the skull, by second moments; taken out of ``calcification``); scalp
    (the rest of the head).

    Args:
        hu: float array (H, W) in Hounsfield units, any resolution (thresholds are in HU; sizes
            scale with the image).

    Returns:
        dict with the keys of :data:`REGION_KEYS`, each a bool array (H, W). See the module
        docstring for their meaning and overlaps.

    Warns:
        RuntimeWarning: no head or no bone on the slice (empty ``skull`` / ``intracranial``), or no
            closed skull ring even after closing (vertex or skull-base slice; ``intracranial`` is then
            the convex hull of the bone minus the bone, soft tissue only).

    References:
        Muschelli J et al. NeuroImage 2015 (threshold-fill-largest-component brain extraction on CT).
    """

    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    if min(x.shape) < 8:
        raise ValueError(f"`hu` must be at least 8 x 8 pixels. Got shape {x.shape} instead.")
    x = np.nan_to_num(x, nan=-1024.0, posinf=3071.0, neginf=-1024.0)
    scale = max(x.shape)
    empty = np.zeros(x.shape, dtype=bool)

    metal = x > METAL_HU
    out = {k: empty.copy() for k in REGION_KEYS}
    out["metal"] = metal
    out["device"] = metal.copy()  # tubes are added once the skull is known
    head = _head(x, scale, exclude=empty)
    bone = _largest_component((x > BONE_HU) & head & ~metal)
    filled, radius = _fill_ring(bone, scale) if bone.any() else (empty, None)

    # the holder: dense (> HOLDER_HU) but not bone-dense structures outside the skull, then the head without it
    rim = max(1, scale // 256)
    near_skull = cv2.dilate(bone.astype(np.uint8), _disk(2 * rim)).astype(bool)
    holder = empty.copy()
    labels, n = ndimage.label((x > HOLDER_HU) & ~metal & ~filled & ~near_skull)
    if n:
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(x), labels, idx)
        median = ndimage.median(x, labels, idx)
        keep = idx[(area >= max(4, int(1e-4 * x.size))) & (median < HOLDER_MAX_MEDIAN_HU)]
        holder = np.isin(labels, keep)
    if holder.any():
        head = _head(x, scale, exclude=holder)
    out["head_holder"] = holder & ~head
    out["head"] = head
    out["outside_head"] = ~head
    if not head.any():
        warnings.warn("region_masks: no head on this slice (nothing above -300 HU); regions empty.", RuntimeWarning, stacklevel=2)
        return out
    if not bone.any():
        warnings.warn("region_masks: no bone above 300 HU in the head; `skull` and `intracranial` are empty.", RuntimeWarning, stacklevel=2)
        out["scalp"] = head & ~metal
        return out
    skull = bone & head
    if radius is None:
        warnings.warn(
            "region_masks: no closed skull ring on this slice (vertex or skull base?); `intracranial` is the "
            "convex hull of the bone minus bone, soft tissue only.",
            RuntimeWarning,
            stacklevel=2,
        )
        pts = cv2.findNonZero(bone.astype(np.uint8))
        hull = np.zeros(x.shape, dtype=np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
        intracranial = hull.astype(bool) & ~skull & head & (x < BONE_HU)
    else:
        intracranial = filled & ~skull & head
    intracranial = ndimage.binary_fill_holes(intracranial) & ~skull
    out["skull"] = skull
    out["intracranial"] = intracranial

    # calcified foci: dense islands inside, not the partial-volume rim of the inner table, not metal streaks
    near_skull = cv2.dilate(skull.astype(np.uint8), _disk(rim)).astype(bool)
    near_metal = cv2.dilate(metal.astype(np.uint8), _disk(int(METAL_STREAK_FRACTION * scale))).astype(bool) if metal.any() else empty
    dense = (x > CALC_MIN_HU) & intracranial & ~metal
    labels, n = ndimage.label(dense)
    calc = empty.copy()
    if n:
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(x), labels, idx)
        peak = ndimage.maximum(x, labels, idx)
        touch = ndimage.maximum((near_skull | near_metal).astype(np.uint8), labels, idx)
        max_area = max(1.0, CALC_MAX_AREA_FRACTION * float(intracranial.sum()))
        keep = idx[(area <= max_area) & (peak >= CALC_PEAK_HU) & (touch == 0)]
        calc = np.isin(labels, keep)
    device = _tubes(x, intracranial, skull, metal, scale, rim)
    out["device"] = metal | device
    if device.any() and calc.any():  # a focus touching a tube is part of it
        labels, n = ndimage.label(calc, structure=np.ones((3, 3)))
        near_device = cv2.dilate(device.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        calc &= ~np.isin(labels, np.unique(labels[near_device & calc]))
    out["calcification"] = calc
    out["scalp"] = head & ~skull & ~intracranial & ~metal
    return out


def _tubes(x: np.ndarray, intracranial: np.ndarray, skull: np.ndarray, metal: np.ndarray, scale: int,
           rim: int) -> np.ndarray:
    """Thin, elongated dense components entering the intracranial space from the skull (catheter tubes).

    Candidates are intracranial pixels above :data:`DEVICE_MIN_HU`, not metal, outside a band of
    ``2 * rim`` pixels along the inner table (its partial-volume edge). A component is a tube when it
    touches that band (it comes through the skull), its median HU is below :data:`BONE_HU`, and its
    second moments give a length of at least :data:`DEVICE_MIN_LENGTH_FRACTION`, a width of at most
    :data:`DEVICE_MAX_WIDTH_FRACTION` of the image side and an aspect ratio of at least
    :data:`DEVICE_MIN_ASPECT` (full lengths of a uniform bar: sqrt(12) standard deviations).
    """
    empty = np.zeros(x.shape, dtype=bool)
    band = cv2.dilate(skull.astype(np.uint8), _disk(2 * rim)).astype(bool)
    cand = (x > DEVICE_MIN_HU) & intracranial & ~metal & ~band
    labels, n = ndimage.label(cand, structure=np.ones((3, 3)))
    if n == 0:
        return empty
    touch = cv2.dilate(band.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # 8-neighbours of the band
    idx = np.arange(1, n + 1)
    touches = ndimage.maximum(touch.astype(np.uint8), labels, idx) > 0
    keep = []
    for i in idx[touches]:
        rows, cols = np.nonzero(labels == i)
        if rows.size < 3 or np.median(x[rows, cols]) >= BONE_HU:
            continue
        cov = np.cov(np.stack([rows, cols]).astype(np.float64))
        lo, hi = np.sqrt(np.clip(np.linalg.eigvalsh(cov), 0.0, None) * 12.0)  # full lengths of a uniform bar
        width = max(lo, 1.0)
        if (hi >= DEVICE_MIN_LENGTH_FRACTION * scale and width <= DEVICE_MAX_WIDTH_FRACTION * scale
                and hi / width >= DEVICE_MIN_ASPECT):
            keep.append(i)
    return np.isin(labels, keep) if keep else empty


def disjoint_regions(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A partition of the image from possibly overlapping region masks.

    Each pixel goes to the first region of :data:`DISJOINT_ORDER` (metal, calcification, skull,
    intracranial, scalp, head_holder, outside_head) whose mask holds it; pixels no mask holds go
    to ``"other"``. Missing keys count as empty masks, so phantom truth masks (``head``, ``skull``,
    ``intracranial``, ...) work as well as :func:`region_masks` output. When ``outside_head`` is
    missing but ``head`` is given, it is ``~head``.

    Args:
        masks: name -> bool array (H, W); all the same shape.

    Returns:
        dict with the keys of :data:`DISJOINT_ORDER` plus ``"other"``, bool (H, W), pairwise disjoint,
        covering every pixel exactly once.
    """
    shapes = {np.shape(v) for v in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"`masks` must all have one shape. Got shapes {sorted(shapes)} instead.")
    shape = shapes.pop()
    if len(shape) != 2:
        raise ValueError(f"`masks` must be 2-D (H, W). Got shape {shape} instead.")
    given = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    if "outside_head" not in given and "head" in given:
        given["outside_head"] = ~given["head"]
    taken = np.zeros(shape, dtype=bool)
    out: dict[str, np.ndarray] = {}
    for key in DISJOINT_ORDER:
        m = given.get(key, np.zeros(shape, dtype=bool)) & ~taken
        out[key] = m
        taken |= m
    out["other"] = ~taken
    return out
