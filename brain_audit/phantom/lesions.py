"""The hemorrhages, mimics and devices of the synthetic head-CT phantom, drawn into the head.

Lesions (one :class:`Lesion` per bleed, 1-3 distinct subtypes per bleeding patient, each
spanning neighbouring slices with a cross-section that grows and shrinks along z), with
their HU before blur and noise:

* ``epidural``: biconvex lens against the inner table, 62-85 HU.
* ``subdural``: crescent along the inner table, acute 55-78 HU, chronic 14-28 HU.
* ``intraparenchymal``: irregular clot in the basal ganglia or a lobe, 62-82 HU, with a
  14-21 HU edema rim.
* ``intraventricular``: dependent layering (or a cast) in a lateral ventricle, 55-75 HU.
* ``subarachnoid``: blood filling the sulci of a sector and sometimes the interhemispheric
  fissure, 60-76 HU (lower after partial volume).

Epidural and subdural collections and sulcal blood live in the head's (psi, r) table and
push the cortex inward (midline shift follows); the others are painted in local patches.
Mimics and devices (:data:`MIMICS`) are added after the blur as exact local changes, so a
counterfactual render differs only inside their truth mask. Acute blood 50-90 HU, chronic
subdural 0-25 HU and calcifications above 100 HU follow ``../shared/reference/real_head_ct.md``.
A cross-section under 20 mm2 is not drawn (not visible on a slice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from brain_audit.phantom.anatomy import (
    _BLUR_SIGMA_PX,
    _D_FISSURE,
    _D_VENT_L,
    _D_VENT_R,
    _DR,
    _EDH,
    _MAX_HU,
    _N_IN,
    _NPSI,
    _PSI,
    _R_COL,
    _SAH,
    _SDH,
    Patient,
    _grids,
    _head_to_px,
    _patch,
    _z_scale,
)
from brain_audit.dataset.masks import MIMIC_KEYS
from brain_audit.rsna import SUBTYPES

__all__ = ["DEVICES", "MIMICS", "TRUTH_EXTRA", "Lesion"]

#: Hemorrhage mimics and devices the phantom can plant, in drawing order (each is a
#: ``--shortcut`` / :attr:`PhantomConfig.mimic_probabilities` key; the three calcifications are
#: separate keys, so a calcification shortcut names the one it plants):
#:
#: * ``choroid_plexus_calcification``: physiologic calcified glomus in the atrium of one or
#:   both lateral ventricles, 2-6 mm, 100-400 HU.
#: * ``pineal_calcification``: midline dot behind the third ventricle, 2-6 mm, 100-400 HU.
#: * ``falx_calcification``: dural plaque on the falx, 1.5 x 4-10 mm, 100-400 HU.
#: * ``coil``: aneurysm coil pack near the circle of Willis / anterior communicating
#:   artery, metal (saturates at 3071 HU) with radiating bright and dark streak artefacts.
#: * ``catheter``: ventricular shunt catheter of radiopaque (barium-impregnated) silicone, a
#:   2.2-3.0 mm tube with a 200-350 HU wall and a CSF lumen (about 100-300 HU on the slice after
#:   the blur), from a right frontal entry (Kocher's point) through the skull (the bone is kept:
#:   no burr hole) into the right lateral ventricle. The wall density is a modelling choice in the
#:   range the issue gives for radiopaque polymer, far below bone and metal; no measured shunt
#:   tubing was at hand.
#: * ``catheter_metal_tip``: the same kind of tube from a left or right frontal entry, with a
#:   3-5 mm metal tip / marker (saturating 3071 HU, no streaks drawn) at its ventricular end.
#: * ``frontal_bone``: hyperostosis frontalis interna, nodular dense bone (900-1,300 HU before
#:   blur) on the inner table of the frontal convexity, 2-6 mm thick, both sides sparing the
#:   midline, against the brain; it lies inside the ``intracranial`` truth (the native skull's
#:   truth is unchanged), like the calcifications.
MIMICS: tuple[str, ...] = MIMIC_KEYS

#: Mimics whose geometry and per-slice draws come from the patient's main stream (generator 1.0);
#: later mimics draw from a stream of their own, so adding them left the first ones unchanged.
_FIRST_MIMICS = 5

#: Mimics that are devices (their union is the ``device`` truth mask).
DEVICES: tuple[str, ...] = ("coil", "catheter", "catheter_metal_tip")

#: Truth masks besides head / skull / intracranial / subtypes / mimics: pixels where the coil's
#: streak artefact changes the HU (at least 1 HU before rounding), and ``device``, the union of
#: the masks of :data:`DEVICES`.
TRUTH_EXTRA: tuple[str, ...] = ("coil_streaks", "device")

#: A catheter is not drawn over pixels denser than this (HU before blur): the skull it passes through
#: stays whole (the burr hole is not modelled), so the skull ring stays closed for region finding.
_BONE_KEEP_HU = 300.0

_MIN_LESION_MM2 = 20.0  # a lesion cross-section smaller than this is not drawn on the slice (5 px at 128 x 128)


@dataclass
class Lesion:
    """One hemorrhage in 3-D.

    Attributes:
        subtype: one of :data:`brain_audit.rsna.SUBTYPES`.
        zc: anatomical z of its centre (the level of one slice of the study), mm.
        hz: half its extent along z, mm; the cross-section scales as sqrt(1 - ((z - zc) / hz)^2).
        hu: density before blur and noise, HU.
        params: shape parameters of the subtype (head-frame mm; ``psi`` in radians, 0 anterior).
    """

    subtype: str
    zc: float
    hz: float
    hu: float
    params: dict[str, Any] = field(default_factory=dict)

    def scale(self, z: float) -> float:
        """Cross-section scale at height z (0 outside the lesion)."""
        t = (z - self.zc) / self.hz
        return math.sqrt(1.0 - t * t) if abs(t) < 1.0 else 0.0


def _draw_lesions(rng: np.random.Generator, p: dict[str, Any], z_anat: np.ndarray,
                  cfg: Any) -> tuple[bool, list[Lesion]]:
    """Whether the patient bleeds (``cfg.prevalence``), and its lesions (1-3 distinct subtypes)."""
    bleed = rng.random() < cfg.prevalence
    lesions: list[Lesion] = []
    if bleed:
        n_les = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        weights = np.array([cfg.subtype_mix[s] for s in SUBTYPES], float)
        chosen: list[str] = []
        for _ in range(n_les):
            w = weights.copy()
            for s in chosen:
                w[SUBTYPES.index(s)] = 0.0
            if w.sum() <= 0:
                break
            chosen.append(SUBTYPES[int(rng.choice(len(SUBTYPES), p=w / w.sum()))])
        for s in chosen:
            les = _make_lesion(s, rng, p, z_anat, cfg.chronic_subdural_fraction)
            if les is not None:
                lesions.append(les)
    return bleed, lesions


def _make_lesion(s: str, rng: np.random.Generator, p: dict[str, Any], z_anat: np.ndarray,
                 chronic_fraction: float) -> Lesion | None:
    """Draw one lesion of subtype ``s`` centred on a slice of the study."""
    def centre_on_slice(lo: float, hi: float) -> float | None:
        ok = z_anat[(z_anat >= lo) & (z_anat <= hi)]
        return float(rng.choice(ok)) if ok.size else None

    side = 1.0 if rng.random() < 0.5 else -1.0
    if s == "epidural":
        zc = centre_on_slice(-25.0, p["ztop"] - 25.0)
        if zc is None:
            return None
        return Lesion(s, zc, rng.uniform(14.0, 26.0), rng.uniform(62.0, 85.0), {
            "psi": side * math.radians(rng.uniform(50.0, 130.0)),
            "half_span": math.radians(rng.uniform(16.0, 28.0)),
            "thick": rng.uniform(9.0, 18.0)})
    if s == "subdural":
        zc = centre_on_slice(-20.0, p["ztop"] - 22.0)
        if zc is None:
            return None
        chronic = rng.random() < chronic_fraction
        return Lesion(s, zc, rng.uniform(22.0, 40.0),
                      rng.uniform(14.0, 28.0) if chronic else rng.uniform(55.0, 78.0), {
            "psi": side * math.radians(rng.uniform(70.0, 115.0)),
            "half_span": math.radians(rng.uniform(45.0, 75.0)),
            "thick": rng.uniform(5.0, 13.0), "chronic": chronic})
    if s == "intraparenchymal":
        basal = rng.random() < 0.5
        zc = centre_on_slice(-20.0, 4.0) if basal else None
        if zc is not None:
            u, v = side * rng.uniform(17.0, 26.0), rng.uniform(-8.0, 8.0)
        else:
            zc = centre_on_slice(-25.0, p["ztop"] - 22.0)
            if zc is None:
                return None
            psi = rng.uniform(-np.pi, np.pi)
            s_z, _ = _z_scale(p, zc)
            j = int((psi + np.pi) / (2 * np.pi) * _NPSI) % _NPSI
            radius = float(p["R0"][j]) * s_z - rng.uniform(18.0, 30.0)
            u, v = math.sin(psi) * radius, -math.cos(psi) * radius
        rx, ry = rng.uniform(7.0, 16.0), rng.uniform(7.0, 16.0)
        harm = [(int(k), rng.normal(0, 0.07), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)]
        return Lesion(s, zc, rng.uniform(8.0, 18.0), rng.uniform(62.0, 82.0), {
            "u": u, "v": v, "rx": rx, "ry": ry, "angle": rng.uniform(0, 180), "harm": harm,
            "rim": rng.uniform(2.0, 5.0), "rim_hu": rng.uniform(14.0, 21.0)})
    if s == "intraventricular":
        zc = centre_on_slice(-12.0, 12.0)
        if zc is None:
            return None
        sides = [side] if rng.random() < 0.5 else [1.0, -1.0]
        return Lesion(s, zc, rng.uniform(12.0, 22.0), rng.uniform(55.0, 75.0), {
            "sides": sides, "level": rng.uniform(6.0, 12.0), "cast": rng.random() < 0.35})
    if s == "subarachnoid":
        zc = centre_on_slice(-25.0, p["ztop"] - 15.0)
        if zc is None:
            return None
        return Lesion(s, zc, rng.uniform(12.0, 25.0), rng.uniform(60.0, 76.0), {
            "psi": rng.uniform(-np.pi, np.pi), "half_span": math.radians(rng.uniform(25.0, 55.0)),
            "fissure": rng.random() < 0.5, "widen": rng.uniform(0.8, 1.6)})
    raise ValueError(f"unknown subtype {s!r}")


def _mimic_geometry(rng: np.random.Generator, p: dict[str, Any]) -> dict[str, Any]:
    """Fixed per-patient geometry of every mimic (used on the slices where it is present)."""
    vs = p["vent_scale"]
    g: dict[str, Any] = {}
    both = rng.random() < 0.7
    g["choroid_plexus_calcification"] = [
        (sd * rng.uniform(17.0, 22.0) * min(vs, 1.3), rng.uniform(20.0, 27.0), rng.uniform(1.2, 2.6),
         rng.uniform(170.0, 380.0))
        for sd in ((1.0, -1.0) if both else ((1.0,) if rng.random() < 0.5 else (-1.0,)))
    ]
    g["pineal_calcification"] = [(rng.normal(0, 0.7), rng.uniform(8.0, 13.0), rng.uniform(1.2, 2.6),
                                  rng.uniform(170.0, 380.0))]
    g["falx_calcification"] = {"v": rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 45.0),
                               "len": rng.uniform(4.0, 10.0), "width": rng.uniform(1.3, 2.0),
                               "hu": rng.uniform(180.0, 400.0)}
    cu, cv_ = rng.uniform(-14.0, 14.0), rng.uniform(-22.0, -8.0)
    g["coil"] = {"blobs": [(cu + rng.normal(0, 1.5), cv_ + rng.normal(0, 1.5), rng.uniform(1.0, 2.4))
                           for _ in range(int(rng.integers(4, 9)))],
                 "u": cu, "v": cv_,
                 "streak_angles": rng.uniform(0, np.pi, int(rng.integers(4, 9))),
                 "streak_amp": rng.uniform(250.0, 450.0)}
    g["catheter"] = {"psi": -math.radians(rng.uniform(20.0, 40.0)), "hu": rng.uniform(500.0, 900.0),
                     "diam": rng.uniform(2.2, 3.0), "tip_u": -rng.uniform(6.0, 10.0),
                     "tip_v": rng.uniform(-20.0, -8.0)}
    return g


def _more_mimic_geometry(rng: np.random.Generator, p: dict[str, Any], g: dict[str, Any]) -> None:
    """Geometry of the mimics after the first :data:`_FIRST_MIMICS` (from their own stream), into ``g``;
    also sets the polymer catheter's wall density (the main stream's 500-900 HU draw is not used)."""
    g["catheter"]["hu"] = rng.uniform(200.0, 350.0)
    side = 1.0 if rng.random() < 0.3 else -1.0  # + image right (left hemisphere); Kocher's point is usually right
    g["catheter_metal_tip"] = {"psi": side * math.radians(rng.uniform(20.0, 40.0)), "hu": rng.uniform(200.0, 350.0),
                               "diam": rng.uniform(2.2, 3.0), "tip_u": side * rng.uniform(6.0, 10.0),
                               "tip_v": rng.uniform(-20.0, -8.0), "metal_len": rng.uniform(3.0, 5.0)}
    n = int(rng.integers(3, 6))
    g["frontal_bone"] = {"thick": rng.uniform(2.0, 6.0), "hu": rng.uniform(900.0, 1300.0),
                         "lo": math.radians(rng.uniform(6.0, 12.0)), "hi": math.radians(rng.uniform(40.0, 60.0)),
                         "nodes": [(rng.uniform(-1.0, 1.0), rng.uniform(0.12, 0.3), rng.uniform(0.5, 1.0))
                                   for _ in range(2 * n)]}


def _extra_axial(pat: Patient, z: float,
                 Rz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32, np.float32, list[Lesion]]:
    """The lesions of slice ``z`` that live in the (psi, r) table.

    Returns:
        ``(t_edh, t_sdh, edh_hu, sdh_hu, sah)``: float32 (psi,) epidural and subdural thickness
        (mm), their HU, and the subarachnoid lesions crossing the slice.
    """
    t_edh = np.zeros(_NPSI, np.float32)
    t_sdh = np.zeros(_NPSI, np.float32)
    sdh_hu = np.float32(0)
    edh_hu = np.float32(0)
    sah: list[Lesion] = []
    for les in pat.lesions:
        sc = les.scale(z)
        if sc <= 0:
            continue
        if les.subtype in ("epidural", "subdural"):
            dpsi = np.abs(np.mod(_PSI - les.params["psi"] + np.pi, 2 * np.pi) - np.pi)
            uu = dpsi / (les.params["half_span"] * (0.35 + 0.65 * sc))
            inside = uu < 1.0
            if les.subtype == "epidural":
                prof = np.where(inside, (1.0 - uu ** 2), 0.0) * les.params["thick"] * sc
            else:
                prof = (np.where(inside, np.sqrt(np.clip(1.0 - uu ** 4, 0, 1)), 0.0)
                        * les.params["thick"] * (0.3 + 0.7 * sc))
            area = float(np.sum(prof * np.maximum(Rz - prof / 2, 1.0)) * (2 * np.pi / _NPSI))
            if area < _MIN_LESION_MM2:
                continue
            if les.subtype == "epidural":
                t_edh = np.maximum(t_edh, prof.astype(np.float32))
                edh_hu = np.float32(les.hu)
            else:
                t_sdh = np.maximum(t_sdh, prof.astype(np.float32))
                sdh_hu = np.float32(les.hu)
        elif les.subtype == "subarachnoid":
            sah.append(les)
    return t_edh, t_sdh, edh_hu, sdh_hu, sah


def _paint_sah_table(code_in: np.ndarray, depth: np.ndarray, dk: np.ndarray, half: np.ndarray, arc: np.ndarray,
                     sah: list[Lesion], z: float) -> None:
    """Subarachnoid blood into the (psi, r) codes of the cortex: the CSF cells of a sector (in place)."""
    for les in sah:
        sc = les.scale(z)
        dps = np.abs(np.mod(_PSI - les.params["psi"] + np.pi, 2 * np.pi) - np.pi)
        sector = dps < les.params["half_span"] * (0.4 + 0.6 * sc)
        # blood fills (and distends) the sulci of the sector, below the thin CSF film over the cortex
        blood = sector[:, None] & (arc < half * les.params["widen"] + 0.3) & (depth < dk * 0.9) & (depth > 1.0)
        code_in[blood] = _SAH


def _push_cortex(code_in: np.ndarray, t_edh: np.ndarray, t_sdh: np.ndarray) -> None:
    """Epidural / subdural collections (thickness per psi, mm) into ``code_in``, pushing the cortex inward."""
    t_all = t_edh + t_sdh
    rows = np.nonzero(t_all > 0)[0]
    if rows.size:
        n_shift = np.rint(t_all[rows] / _DR).astype(np.int32)
        jj = np.arange(_N_IN)[None, :] + n_shift[:, None]
        src = np.take_along_axis(code_in[rows], np.minimum(jj, _N_IN - 1), axis=1)
        r_here = _R_COL[:_N_IN][None, :]
        coll = np.where(r_here >= -t_edh[rows][:, None], _EDH, _SDH).astype(np.uint8)
        code_in[rows] = np.where(jj >= _N_IN, coll, src)


def _subarachnoid(pat: Patient, hu: np.ndarray, code: np.ndarray, deep: np.ndarray, dm: np.ndarray,
                  intracranial: np.ndarray, sah: list[Lesion], z: float) -> np.ndarray:
    """bool (H, W) subarachnoid blood: sulcal cells outside deep structures, plus the fissure (painted into ``hu``).

    Too little blood to call on this slice is turned back into CSF.
    """
    g = _grids(pat)
    px_area = pat.spacing ** 2
    mask = (code == _SAH) & ~dm
    # SAH in the interhemispheric fissure
    for les in sah:
        sc = les.scale(z)
        if sc > 0 and les.params["fissure"]:
            fis = (deep == _D_FISSURE) & intracranial
            fis &= (g["V"] < 0) if math.cos(les.params["psi"]) > 0 else (g["V"] > 0)
            if fis.sum() * px_area >= _MIN_LESION_MM2:
                mask |= fis
                hu[fis] = np.float32(les.hu)
    if mask.sum() * px_area < _MIN_LESION_MM2 and mask.any():
        # too little blood on this slice to call: restore CSF
        hu[mask] = pat.p["csf_hu"]
        mask[:] = False
    return mask


def _paint_parenchymal(pat: Patient, hu: np.ndarray, masks: dict[str, np.ndarray], code: np.ndarray,
                       intracranial: np.ndarray, deep: np.ndarray, z: float, shift: float) -> None:
    """Intraparenchymal and intraventricular blood of slice ``z`` into ``hu`` and ``masks`` (in place)."""
    for les in pat.lesions:
        sc = les.scale(z)
        if sc <= 0:
            continue
        if les.subtype == "intraparenchymal":
            brain = intracranial & (code != _EDH) & (code != _SDH)
            _paint_iph(pat, hu, masks["intraparenchymal"], brain, les, sc, shift)
        elif les.subtype == "intraventricular":
            _paint_ivh(pat, hu, masks["intraventricular"], deep, les)


def _paint_iph(pat: Patient, hu: np.ndarray, mask: np.ndarray, allowed: np.ndarray, les: Lesion, sc: float,
               shift: float) -> None:
    q = les.params
    u0, v0 = q["u"] + 0.5 * shift, q["v"]
    rad = max(q["rx"], q["ry"]) * 1.35 + q["rim"] + 2
    sl = _patch(pat, u0, v0, rad)
    if sl is None:
        return
    g = _grids(pat)
    du, dv = g["U"][sl] - u0, g["V"][sl] - v0
    a = math.radians(q["angle"])
    cu, su = math.cos(a), math.sin(a)
    x, y = cu * du + su * dv, -su * du + cu * dv
    rx, ry = q["rx"] * sc, q["ry"] * sc
    if rx * ry * math.pi < _MIN_LESION_MM2:
        return
    qq = np.hypot(x / rx, y / ry)
    gam = np.arctan2(y, x)
    mod = np.ones_like(qq)
    for k, amp, ph in q["harm"]:
        mod += amp * np.cos(k * gam + ph)
    ok = allowed[sl]
    blood = (qq < mod) & ok
    if blood.sum() * pat.spacing ** 2 < _MIN_LESION_MM2:
        return
    rim = (qq < mod + q["rim"] / min(rx, ry)) & ok & ~blood
    sub = hu[sl]
    sub[rim] = np.minimum(sub[rim], q["rim_hu"])
    sub[blood] = les.hu + 4.0 * (1.0 - qq[blood])  # slightly denser centre
    mask[sl] |= blood


def _paint_ivh(pat: Patient, hu: np.ndarray, mask: np.ndarray, deep: np.ndarray, les: Lesion) -> None:
    q = les.params
    g = _grids(pat)
    for sd in q["sides"]:
        code = _D_VENT_L if sd > 0 else _D_VENT_R
        vent = deep == code
        if not vent.any():
            continue
        rows = np.nonzero(vent.any(axis=1))[0]
        if q["cast"]:
            blood = vent
        else:
            # dependent layering: blood in the posterior (lowest, supine) part, level horizontal in the image
            y_level = g["Y"][rows[-1], 0] - q["level"]
            blood = vent & (g["Y"] > y_level)
        if blood.sum() * pat.spacing ** 2 < _MIN_LESION_MM2:
            continue
        hu[blood] = les.hu
        mask |= blood


def _plant_mimics(pat: Patient, k: int, pre: np.ndarray, hu: np.ndarray, masks: dict[str, np.ndarray],
                  bleeding: bool, mimic_probabilities: Mapping[str, tuple[float, float]],
                  mimics: Mapping[str, bool] | None, s_z: float, Rz: np.ndarray, shift: float) -> list[str]:
    """Decide and draw the mimics of slice ``k``; returns the names shown.

    Each mimic is on with probability ``p_given_bleed`` or ``p_given_no_bleed`` (by ``bleeding``,
    the slice's ``any`` label), from the patient's fixed per-slice draws; ``mimics`` overrides
    that decision (counterfactuals). Adds one mask per mimic, ``coil_streaks`` and ``device`` to ``masks``.
    """
    h, w = pat.shape
    present = []
    for i, m in enumerate(MIMICS):
        pb, pn = mimic_probabilities[m]
        on = bool(pat.mimic_draws[i, k] < (pb if bleeding else pn))
        if mimics is not None and m in mimics:
            on = bool(mimics[m])
        masks[m] = np.zeros((h, w), bool)
        if on:
            _add_mimic(pat, m, pre, hu, masks[m], s_z, Rz, shift)
            if masks[m].any():
                present.append(m)
    streaks = np.zeros((h, w), bool)
    if "coil" in present:
        _add_streaks(pat, hu, streaks, s_z, shift)
    masks["coil_streaks"] = streaks
    masks["device"] = np.logical_or.reduce([masks[m] for m in DEVICES])
    return present


def _add_local(pre: np.ndarray, hu: np.ndarray, mask: np.ndarray, sl: tuple[slice, slice], painted: np.ndarray,
               value: np.ndarray | float) -> None:
    """Paint ``value`` over ``painted`` (a patch) as if before the blur, by adding to the blurred ``hu``.

    The render's blur is linear, so painting before the blur equals adding the blurred
    difference afterwards; only pixels within one kernel radius of ``painted`` change, and
    they form the mimic's truth mask. ``pre`` (the unblurred image) is updated in place so
    that later mimics paint over this one.
    """
    if not painted.any():
        return
    base = pre[sl]
    val = np.broadcast_to(np.asarray(value, np.float32), base.shape)
    delta = np.where(painted, val - base, np.float32(0)).astype(np.float32)
    base[painted] = val[painted]
    delta = cv2.GaussianBlur(delta, (3, 3), _BLUR_SIGMA_PX, borderType=cv2.BORDER_CONSTANT)
    hu[sl] += delta
    mask[sl] |= cv2.dilate(painted.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _blob(pat: Patient, u: float, v: float, a: float, b: float, angle: float = 0.0
          ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Patch and filled ellipse (head-frame mm, angle in degrees) inside it."""
    sl = _patch(pat, u, v, max(a, b) + 2.0)
    if sl is None:
        return None
    g = _grids(pat)
    du, dv = g["U"][sl] - u, g["V"][sl] - v
    t = math.radians(angle)
    x, y = math.cos(t) * du + math.sin(t) * dv, -math.sin(t) * du + math.cos(t) * dv
    inside = (x / a) ** 2 + (y / b) ** 2 < 1.0
    if not inside.any():  # sub-pixel object: keep its nearest pixel
        inside = (x / a) ** 2 + (y / b) ** 2 <= np.min((x / a) ** 2 + (y / b) ** 2)
    return sl, inside


def _add_mimic(pat: Patient, m: str, pre: np.ndarray, hu: np.ndarray, mask: np.ndarray, s_z: float,
               Rz: np.ndarray, shift: float) -> None:
    """Draw mimic ``m`` of ``pat`` on this slice (pre-blur image ``pre``, blurred image ``hu``)."""
    geo = pat.mimic_geometry[m]
    k = min(1.0, s_z / 0.85)  # keep midline structures inside small sections near the vertex
    if m in ("choroid_plexus_calcification", "pineal_calcification"):
        for (u, v, r, val) in geo:
            for du, dv, f in ((0.0, 0.0, 1.0), (0.6 * r, 0.4 * r, 0.7)):
                got = _blob(pat, k * u + shift + du, k * v + dv, r * f, r * f * 0.85)
                if got is not None:
                    _add_local(pre, hu, mask, got[0], got[1], val)
    elif m == "falx_calcification":
        got = _blob(pat, shift, k * geo["v"], geo["width"] / 2, geo["len"] / 2)
        if got is not None:
            _add_local(pre, hu, mask, got[0], got[1], geo["hu"])
    elif m == "coil":
        for (u, v, r) in geo["blobs"]:
            got = _blob(pat, k * u + shift, k * v, r, r)
            if got is not None:
                _add_local(pre, hu, mask, got[0], got[1], 3.0 * _MAX_HU)
    elif m in ("catheter", "catheter_metal_tip"):
        got = _tube(pat, geo, Rz, k, shift)
        if got is None:
            return
        sl, dist, along = got
        wall = (dist < geo["diam"] / 2) & (pre[sl] < _BONE_KEEP_HU)  # the bone it passes through is kept
        value = np.where(dist < geo["diam"] / 6, np.float32(pat.p["csf_hu"]), np.float32(geo["hu"]))
        if m == "catheter_metal_tip":
            value = np.where(along < geo["metal_len"], np.float32(3.0 * _MAX_HU), value)
        _add_local(pre, hu, mask, sl, wall, value)
    elif m == "frontal_bone":
        _frontal_bone(pat, geo, pre, hu, mask, s_z)
    else:
        raise ValueError(f"`mimic` must be one of {MIMICS}. Got {m!r} instead.")


def _tube(pat: Patient, geo: dict[str, Any], Rz: np.ndarray, k: float, shift: float
          ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """A catheter's straight course from outside the scalp (angle ``geo["psi"]``) to its ventricular tip.

    Returns the patch, and per pixel the distance to the axis and the distance from the tip along
    it (mm), or None off the image.
    """
    psi = geo["psi"]
    j = int((psi + np.pi) / (2 * np.pi) * _NPSI) % _NPSI
    r_skin = float(Rz[j]) + pat.p["T0"] * (1 + pat.p["frontal_bias"] * math.cos(psi) ** 2) + 6.0
    u0, v0 = math.sin(psi) * r_skin, -math.cos(psi) * r_skin
    u1, v1 = k * geo["tip_u"] + shift, k * geo["tip_v"]
    length = math.hypot(u1 - u0, v1 - v0)
    sl = _patch(pat, (u0 + u1) / 2, (v0 + v1) / 2, length / 2 + geo["diam"] + 2)
    if sl is None:
        return None
    g = _grids(pat)
    du, dv = g["U"][sl] - u0, g["V"][sl] - v0
    lu, lv = u1 - u0, v1 - v0
    t = np.clip((du * lu + dv * lv) / (lu * lu + lv * lv), 0.0, 1.0)
    dist = np.hypot(du - t * lu, dv - t * lv)
    return sl, dist, (1.0 - t) * length


def _frontal_bone(pat: Patient, geo: dict[str, Any], pre: np.ndarray, hu: np.ndarray, mask: np.ndarray,
                  s_z: float) -> None:
    """Hyperostosis frontalis interna: nodular bone inside the frontal inner table, both sides, midline spared."""
    p = pat.p
    r_ant = float(p["R0"][_NPSI // 2]) * s_z
    sl = _patch(pat, 0.0, -0.6 * r_ant, 0.75 * r_ant)
    if sl is None:
        return
    g = _grids(pat)
    psi = np.arctan2(g["U"][sl], -g["V"][sl])
    r = (g["rho_s"][sl] - np.float32(_N_IN) - g["R0_s"][sl] * np.float32(s_z)) * np.float32(_DR)  # mm, < 0 inside
    lo, hi = geo["lo"], geo["hi"]
    a = np.abs(psi)
    env = np.clip((a - lo) / 0.08, 0.0, 1.0) * np.clip((hi + 0.12 - a) / 0.12, 0.0, 1.0)
    nod = np.zeros(psi.shape, np.float32)
    for i, (c, width, amp) in enumerate(geo["nodes"]):
        centre = (1.0 if i % 2 == 0 else -1.0) * (lo + (0.3 + 0.7 * abs(c)) * (hi - lo))
        nod = np.maximum(nod, amp * np.exp(-((psi - centre) / width) ** 2))
    thick = np.float32(geo["thick"] * min(1.0, s_z / 0.7)) * (0.35 + 0.65 * nod) * env
    painted = (r < 0.0) & (r > -thick)
    _add_local(pre, hu, mask, sl, painted, geo["hu"])


def _add_streaks(pat: Patient, hu: np.ndarray, mask: np.ndarray, s_z: float, shift: float) -> None:
    """Metal streak artefact of the coil: bright and dark lines through it, fading with distance."""
    geo = pat.mimic_geometry["coil"]
    k = min(1.0, s_z / 0.85)
    u, v = k * geo["u"] + shift, k * geo["v"]
    sl = _patch(pat, u, v, 110.0)
    if sl is None:
        return
    g = _grids(pat)
    col, row = _head_to_px(pat, u, v)
    ys = (np.arange(sl[0].start, sl[0].stop, dtype=np.float32) - np.float32(row))[:, None] * np.float32(pat.spacing)
    xs = (np.arange(sl[1].start, sl[1].stop, dtype=np.float32) - np.float32(col))[None, :] * np.float32(pat.spacing)
    d = np.hypot(xs, ys)
    fade = geo["streak_amp"] / (1.0 + d / 5.0) * np.exp(-d / 45.0)
    s = np.zeros(d.shape, np.float32)
    for i, a in enumerate(geo["streak_angles"]):
        perp = np.abs(xs * math.sin(a) - ys * math.cos(a))
        sign = 1.0 if i % 2 == 0 else -1.0
        s += sign * np.exp(-(perp / (0.6 + 0.015 * d)) ** 2)
    s *= fade
    s[np.abs(s) < 1.0] = 0.0
    s[g["outside_fov"][sl]] = 0.0
    hu[sl] += s
    mask[sl] |= s != 0
