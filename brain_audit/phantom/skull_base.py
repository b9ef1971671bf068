"""Bone by level: the skull base and the vertex of the phantom head, where dense bone meets brain on one slice.

The head of :mod:`~brain_audit.phantom.anatomy` is an ellipsoid cut at height ``z`` (mm; 0 at the
lateral-ventricle bodies). Real studies also cut through the floor of the skull and the top of
the vault, where one 5 mm slab holds bone and brain side by side; this module draws those levels.

* **Skull base** (below :data:`SKULL_BASE_TOP`), painted into the unblurred image as the fraction
  of the slab each bone fills (partial volume along z):

  - *orbital roofs*: two thin domes (plate 1.2-2.0 mm) over the orbits, anterior, cortical bone
    with orbital fat beneath; where the plate is steep it is a thin line above 1,000 HU, where it
    is flat it is a broad, fainter partial-volume patch.
  - *petrous ridges*: posterolateral wedges of very dense bone (1,750-1,950 HU before noise, kept
    below :data:`brain_audit.skull.METAL_HU`, 2,000 HU, so that they are read as bone, not metal)
    from the lateral skull to the apex beside the clivus, widening below their crest.
  - *sphenoid*: the lesser wings from the lateral inner table to the anterior clinoid processes,
    and the dorsum sellae (posterior clinoids) across the midline.
  - *beam-hardening streak* (the Hounsfield bar): a dark band, 30-60 HU below its surroundings,
    across the posterior fossa between the two petrous ridges, in brain pixels only.
  - *frontal sinus*: an air pocket (-990 HU) inside the frontal bone with bony walls and a
    midline septum, drawn in the (psi, r) table by :func:`frontal_sinus`.
* **Vertex** (above :data:`VERTEX_FROM`): the inner table curves through the slab, so a ring of
  brain pixels inside the section's inner table is partly bone: a thick plate of intermediate
  density over the brain (the skull cut tangentially).

Bone pixels (blended HU above 300, the bone threshold of :mod:`brain_audit.skull`) take the skull's
tissue code, so they belong to the ``skull`` truth mask; orbital contents are extracranial soft
tissue (``head``, not ``intracranial``). Mid-level slices (between the two levels) are untouched.
All parameters come from a stream of their own (``spawn_key=(i, 3, 0)``), so the rest of a patient
is drawn as before.

Levels and densities: typical adult anatomy on axial non-contrast head CT parallel to the
orbitomeatal line (orbital roofs and frontal sinus 15-45 mm below the ventricle bodies, petrous
ridges and clinoids 30-40 mm below, dense petrous bone the densest bone of the head); cortical
bone 700-1,900 HU and partial volume from ``../shared/reference/real_head_ct.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from brain_audit.phantom.anatomy import (
    _CSF,
    _INTRACRANIAL_MAX,
    _N_IN,
    _NPSI,
    _PSI,
    _SCALP,
    _SKULL,
    Patient,
    _bump,
    _grids,
    _head_to_px,
)

__all__ = ["SKULL_BASE_TOP", "VERTEX_FROM"]

#: Highest anatomical z (mm) at which skull-base bone is drawn; slices above it are unchanged.
SKULL_BASE_TOP = -15.0
#: Lowest anatomical z (mm) at which vertex partial volume is drawn.
VERTEX_FROM = 30.0
#: Blended HU above which a pixel is bone (the skull's tissue code): the bone threshold of
#: :mod:`brain_audit.skull`, real skull 5th percentile 408 HU.
_BONE_CODE_HU = 300.0


def _skull_base_parameters(rng: np.random.Generator, p: dict[str, Any]) -> dict[str, Any]:
    """Draw one patient's skull base, frontal sinus and vertex bone (mm, HU, degrees)."""
    q: dict[str, Any] = {}
    # orbital roofs: dome apex height, centre offsets, semi-axes, dome depth, plate thickness
    q["roof_apex"] = rng.uniform(-30.0, -22.0)
    q["roof_u"] = rng.uniform(17.0, 23.0)
    q["roof_a"] = rng.uniform(14.0, 18.0)
    q["roof_b"] = rng.uniform(18.0, 24.0)
    q["roof_depth"] = rng.uniform(14.0, 22.0)
    q["roof_t"] = rng.uniform(1.2, 2.0)
    q["orbit_hu"] = rng.uniform(-90.0, -60.0)  # orbital fat with muscle and globe
    # frontal sinus (absent in about one adult in ten)
    q["sinus"] = bool(rng.random() < 0.9)
    q["sinus_lo"] = rng.uniform(-42.0, -32.0)
    q["sinus_hi"] = rng.uniform(-14.0, -4.0)
    q["sinus_half"] = (rng.uniform(8.0, 20.0), rng.uniform(8.0, 20.0))  # right, left half-widths, mm of arc
    q["sinus_septum"] = rng.normal(0.0, 2.5)  # mm of arc off the midline
    # petrous ridges: crest height, slope of the flanks, density, apex, lateral end
    q["petrous_top"] = rng.uniform(-36.0, -30.0)
    q["petrous_slope"] = rng.uniform(2.0, 2.6)
    q["petrous_hu"] = rng.uniform(1750.0, 1950.0)
    q["petrous_apex"] = (rng.uniform(11.0, 15.0), rng.uniform(-6.0, 0.0))
    q["petrous_psi"] = math.radians(rng.uniform(108.0, 122.0))
    # sphenoid: lesser wings to the anterior clinoids, dorsum sellae
    q["sphenoid_top"] = rng.uniform(-34.0, -28.0)
    q["clinoid"] = (rng.uniform(10.0, 13.0), -rng.uniform(10.0, 14.0))
    q["wing_psi"] = math.radians(rng.uniform(55.0, 68.0))
    q["dorsum_v"] = rng.uniform(-6.0, -2.0)
    q["streak_hu"] = rng.uniform(30.0, 60.0)
    # vertex: mean density of a full-thickness cut of the vault (tables and diploe)
    q["vault_hu"] = 0.45 * p["cortical_hu"] + 0.55 * p["diploe_hu"]
    return q


def frontal_sinus(pat: Patient, z: float) -> np.ndarray | None:
    """bool (psi,) angle bins of the (psi, r) table whose frontal bone holds sinus air at height z (mm), or None."""
    q = pat.p.get("base")
    if q is None or not q["sinus"]:
        return None
    f = _bump(z, q["sinus_lo"], q["sinus_hi"])
    if f <= 0:
        return None
    r_ant = float(pat.p["R0"][_NPSI // 2])
    arc = _PSI * r_ant  # mm of arc from the midline, + to image right
    right, left = q["sinus_half"]
    lobe = ((arc > 0) & (arc < right * f)) | ((arc <= 0) & (arc > -left * f))
    return lobe & (np.abs(arc - q["sinus_septum"]) > 0.6)


def _ridge(pat: Patient, a: tuple[float, float], b: tuple[float, float], top_a: float, top_b: float,
           slope: float, half_max: float, z: float) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Slab fraction filled by a bony ridge along the segment a-b (head-frame mm) at slice height z.

    The ridge's crest runs from height ``top_a`` to ``top_b`` (mm) and its flanks fall ``slope`` mm
    per mm from the crest, out to ``half_max`` mm; below its surface it is solid bone. Returns the
    patch and float32 fraction in [0, 1], or None when the slab misses it.
    """
    d = pat.slice_spacing
    z0 = z - d / 2.0
    if max(top_a, top_b) <= z0:
        return None
    g = _grids(pat)
    ca, ra = _head_to_px(pat, *a)
    cb, rb = _head_to_px(pat, *b)
    pad = half_max / pat.spacing + 2
    h, w = pat.shape
    r0, r1 = int(max(min(ra, rb) - pad, 0)), int(min(max(ra, rb) + pad + 1, h))
    c0, c1 = int(max(min(ca, cb) - pad, 0)), int(min(max(ca, cb) + pad + 1, w))
    if r0 >= r1 or c0 >= c1:
        return None
    sl = (slice(r0, r1), slice(c0, c1))
    du, dv = g["U"][sl] - np.float32(a[0]), g["V"][sl] - np.float32(a[1])
    lu, lv = b[0] - a[0], b[1] - a[1]
    t = np.clip((du * lu + dv * lv) / (lu * lu + lv * lv), 0.0, 1.0)
    dist = np.hypot(du - t * lu, dv - t * lv)
    surface = top_a + t * (top_b - top_a) - slope * dist
    frac = np.clip((surface - z0) / d, 0.0, 1.0) * np.clip((half_max - dist) / 1.0, 0.0, 1.0)
    return sl, frac.astype(np.float32)


def _orbital_roof(pat: Patient, q: dict[str, Any], side: float, z: float, r_ant: float
                  ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Slab fractions of roof bone and of orbital contents beneath it, for one orbit (patch, bone, orbit)."""
    d = pat.slice_spacing
    z0, z1 = z - d / 2.0, z + d / 2.0
    if z0 >= q["roof_apex"]:
        return None
    a, b = q["roof_a"], q["roof_b"]
    cu, cv_ = side * q["roof_u"], -(r_ant - 0.55 * b)
    col, row = _head_to_px(pat, cu, cv_)
    rad = 1.25 * max(a, b) / pat.spacing + 2
    h, w = pat.shape
    r0, r1 = int(max(row - rad, 0)), int(min(row + rad + 1, h))
    c0, c1 = int(max(col - rad, 0)), int(min(col + rad + 1, w))
    if r0 >= r1 or c0 >= c1:
        return None
    sl = (slice(r0, r1), slice(c0, c1))
    g = _grids(pat)
    qq = np.hypot((g["U"][sl] - np.float32(cu)) / np.float32(a), (g["V"][sl] - np.float32(cv_)) / np.float32(b))
    inside = qq < 1.2
    depth = q["roof_depth"]
    surface = q["roof_apex"] - depth * qq ** 4  # dome: flat at the apex, steep at the rim
    grad = 4.0 * depth * qq ** 3 / (0.5 * (a + b))
    under = surface - q["roof_t"] * np.sqrt(1.0 + grad * grad)  # lower face of the plate
    bone = (np.clip(np.minimum(surface, z1) - np.maximum(under, z0), 0.0, None) / d) * inside
    orbit = (np.clip(np.minimum(under, z1) - z0, 0.0, None) / d) * inside
    return sl, bone.astype(np.float32), orbit.astype(np.float32)


def _blend(hu: np.ndarray, code: np.ndarray, new_bone: np.ndarray, sl: tuple[slice, slice], frac: np.ndarray,
           value: float, allowed: np.ndarray) -> None:
    """hu <- (1 - frac) hu + frac value over ``allowed`` pixels of patch ``sl``; bone-dense pixels become skull."""
    m = allowed & (frac > 0)
    if not m.any():
        return
    sub, csub = hu[sl], code[sl]
    f = frac[m]
    sub[m] = (1.0 - f) * sub[m] + f * np.float32(value)
    dense = m & (sub > _BONE_CODE_HU)
    csub[dense] = _SKULL
    new_bone[sl] |= dense


def paint_skull_base(pat: Patient, hu: np.ndarray, code: np.ndarray, z: float) -> np.ndarray | None:
    """Skull-base bone, orbits and the petrous streak (below :data:`SKULL_BASE_TOP`), or vertex partial volume
    (above :data:`VERTEX_FROM`), into the unblurred ``hu`` (float32 (H, W), HU) and the tissue ``code`` (in place).

    Returns:
        bool (H, W) pixels that became bone (skull code), or None when the slice is at a mid level.
    """
    q = pat.p.get("base")
    if q is None or SKULL_BASE_TOP <= z <= VERTEX_FROM:
        return None
    new_bone = np.zeros(pat.shape, bool)
    if z > VERTEX_FROM:
        _vertex(pat, q, hu, code, new_bone, z)
        return new_bone
    p = pat.p
    r_ant = float(p["R0"][_NPSI // 2]) * _section(p, z)
    inner = code <= _SKULL  # intracranial tissue and the skull itself; never scalp or air
    # orbital roofs, over orbital contents
    for side in (1.0, -1.0):
        got = _orbital_roof(pat, q, side, z, r_ant)
        if got is None:
            continue
        sl, bone, orbit = got
        brain_here = code[sl] <= _INTRACRANIAL_MAX
        sub = hu[sl]
        m = brain_here & (orbit > 0)
        sub[m] = (1.0 - orbit[m]) * sub[m] + orbit[m] * np.float32(q["orbit_hu"])
        code[sl][m & (orbit >= 0.5)] = _SCALP
        _blend(hu, code, new_bone, sl, bone, p["cortical_hu"], inner[sl])
    # petrous ridges, sphenoid wings with the anterior clinoids, dorsum sellae
    fill = []
    for side in (1.0, -1.0):
        apex = (side * q["petrous_apex"][0], q["petrous_apex"][1])
        lat = _rim_point(p, z, side * q["petrous_psi"], 4.0)
        got = _ridge(pat, apex, lat, q["petrous_top"] - 5.0, q["petrous_top"], q["petrous_slope"], 11.0, z)
        fill.append(0.0 if got is None else float(got[1].max()))
        if got is not None:
            _blend(hu, code, new_bone, got[0], got[1], q["petrous_hu"], inner[got[0]])
        clin = (side * q["clinoid"][0], q["clinoid"][1])
        wing = _rim_point(p, z, side * q["wing_psi"], 3.0)
        got = _ridge(pat, clin, wing, q["sphenoid_top"] + 2.0, q["sphenoid_top"] - 2.0, 2.5, 5.0, z)
        if got is not None:
            _blend(hu, code, new_bone, got[0], got[1], p["cortical_hu"], inner[got[0]])
    got = _ridge(pat, (-5.0, q["dorsum_v"]), (5.0, q["dorsum_v"]), q["sphenoid_top"] - 1.0,
                 q["sphenoid_top"] - 1.0, 3.0, 2.0, z)
    if got is not None:
        _blend(hu, code, new_bone, got[0], got[1], p["cortical_hu"], inner[got[0]])
    _hounsfield_bar(pat, q, hu, code, z, min(fill))
    return new_bone


def _section(p: dict[str, Any], z: float) -> float:
    c = p["ztop"] if z >= 0 else p["zbot"]
    t = min(abs(z) / c, 0.995)
    return math.sqrt(1.0 - t * t)


def _rim_point(p: dict[str, Any], z: float, psi: float, beyond: float) -> tuple[float, float]:
    """Head-frame point (u, v) ``beyond`` mm outside the inner table at angle psi (rad) and height z."""
    j = int((psi + np.pi) / (2 * np.pi) * _NPSI) % _NPSI
    r = float(p["R0"][j]) * _section(p, z) + beyond
    return math.sin(psi) * r, -math.cos(psi) * r


def _hounsfield_bar(pat: Patient, q: dict[str, Any], hu: np.ndarray, code: np.ndarray, z: float,
                    strength: float) -> None:
    """Beam-hardening dark band between the petrous ridges (brain pixels only; ``strength`` in [0, 1])."""
    if strength <= 0:
        return
    p = pat.p
    ends = []
    for side in (1.0, -1.0):
        apex = np.array([side * q["petrous_apex"][0], q["petrous_apex"][1]])
        lat = np.array(_rim_point(p, z, side * q["petrous_psi"], 0.0))
        ends.append(apex + 0.45 * (lat - apex))
    (ua, va), (ub, vb) = ends
    g = _grids(pat)
    col_a, row_a = _head_to_px(pat, ua, va)
    col_b, row_b = _head_to_px(pat, ub, vb)
    pad = 8.0 / pat.spacing + 2
    h, w = pat.shape
    r0, r1 = int(max(min(row_a, row_b) - pad, 0)), int(min(max(row_a, row_b) + pad + 1, h))
    c0, c1 = int(max(min(col_a, col_b) - pad, 0)), int(min(max(col_a, col_b) + pad + 1, w))
    if r0 >= r1 or c0 >= c1:
        return
    sl = (slice(r0, r1), slice(c0, c1))
    du, dv = g["U"][sl] - np.float32(ua), g["V"][sl] - np.float32(va)
    lu, lv = ub - ua, vb - va
    t = np.clip((du * lu + dv * lv) / (lu * lu + lv * lv), 0.0, 1.0)
    dist = np.hypot(du - t * lu, dv - t * lv)
    band = np.float32(-q["streak_hu"] * strength) * np.exp(-(dist / 2.5) ** 2)
    brain = code[sl] <= _CSF
    hu[sl][brain] += band[brain]


def _vertex(pat: Patient, q: dict[str, Any], hu: np.ndarray, code: np.ndarray, new_bone: np.ndarray,
            z: float) -> None:
    """Partial volume of the vault near the vertex: brain pixels whose column meets the inner table in the slab."""
    p = pat.p
    z1 = z + pat.slice_spacing / 2.0
    if z1 >= p["ztop"]:
        z1 = p["ztop"] * 0.999
    g = _grids(pat)
    rel = (g["rho_s"] - np.float32(_N_IN)) / g["R0_s"]  # radial distance / R0(psi)
    rel_top = math.sqrt(1.0 - (z1 / p["ztop"]) ** 2)  # inner table's section at the top of the slab
    ring = (rel > rel_top) & (code <= _CSF)
    if not ring.any():
        return
    z_in = p["ztop"] * np.sqrt(np.clip(1.0 - rel[ring] ** 2, 0.0, 1.0))  # inner table height above each pixel
    f = np.clip((z1 - z_in) / pat.slice_spacing, 0.0, 1.0).astype(np.float32)
    vals = hu[ring]
    vals = (1.0 - f) * vals + f * np.float32(q["vault_hu"])
    hu[ring] = vals
    dense = np.zeros(pat.shape, bool)
    dense[ring] = vals > _BONE_CODE_HU
    code[dense] = _SKULL
    new_bone |= dense

