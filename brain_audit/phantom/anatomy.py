"""The head of the synthetic head-CT phantom: skull, scalp, brain, ventricles, exterior and noise.

A patient's head is drawn once from the patient's random stream and cut at an anatomical
height ``z`` (mm; 0 at the level of the lateral-ventricle bodies, the vertex near +75).
Coordinates: the head frame is ``u`` lateral (to image right) and ``v`` posterior, in mm;
around the head centre every pixel has an angle ``psi`` (0 = anterior) and a radial distance
``r`` from the inner table (mm, negative inside).

* **Shell and cortex in polar coordinates.** A table over (psi, r) holds, per slice, the
  subarachnoid CSF, cortex with sulci (gray matter lining CSF clefts, white matter beneath),
  the sylvian fissure at low levels, the inner table, diploe, outer table (thicker frontally
  and obliquely cut near the vertex), galea, temporalis muscle, fat and skin. It is smoothed
  radially (partial volume of the slab) and gathered per pixel with one index.
* **Deep structures** (basal ganglia, thalami, lateral / third ventricles, midbrain and
  cisterns, interhemispheric fissure and falx, with midline shift from mass effect) are
  drawn with OpenCV ellipses and polylines in the rotated head frame.
* **Exterior**: air, a curved head holder and sometimes a foam cushion, fixed per patient.
* **Noise**: spatially correlated scanner noise plus a faint tissue texture, per slice.

Tissue HU drawn per patient, before blur and noise: gray matter 35-39, white matter 25.5-29,
CSF 4-9, cortical bone 1,400-1,700 with diploe 440-600, fat -110..-85, head holder ~280
(targets: ``../shared/reference/real_head_ct.md``). Pixels outside the reconstruction circle
are padding: -1024 HU in the render (what :func:`brain_audit.dicom.read_hu` returns for them),
:data:`PAD_HU_FILE` in the file. The skull base, frontal sinus and the vertex's partial-volume
bone are drawn by :mod:`brain_audit.phantom.skull_base`. Nothing here draws a lesion or a mimic
(:mod:`brain_audit.phantom.lesions`) or writes a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["PAD_HU_FILE", "Patient", "padding_mask"]

#: HU written to the file outside the reconstruction circle (stored -2000 with
#: intercept -1024, as many scanners do); read back as AIR_HU.
PAD_HU_FILE = -3024.0
_PAD_HU = -1024.0
_AIR_HU = -990.0
_MAX_HU = 3071.0

# polar table: angle bins x radial bins (r from the inner table, mm)
_NPSI = 720
_DR = 0.3
_N_IN = 100  # 30 mm inside the inner table
_N_OUT = 130  # 39 mm outside
_NR = _N_IN + _N_OUT
_R_COL = ((np.arange(_NR) - _N_IN + 0.5) * _DR).astype(np.float32)  # r of each column
_PSI = (-np.pi + (np.arange(_NPSI) + 0.5) * (2 * np.pi / _NPSI)).astype(np.float32)

# table codes (also the tissue classes of the truth masks)
_WM, _GM, _CSF, _SAH, _EDH, _SDH, _SKULL, _SCALP, _OUT = range(9)
_BRAIN_CODES_MAX = _CSF  # codes <= this are brain tissue / CSF (deep structures may overwrite)
_INTRACRANIAL_MAX = _SDH

# deep-structure codes (drawn with OpenCV)
_D_GRAY, _D_VENT_R, _D_VENT_L, _D_VENT3, _D_FISSURE, _D_FALX, _D_CISTERN, _D_MIDBRAIN = range(1, 9)

_BLUR_SIGMA_PX = 0.6  # mild blur, 3 x 3 kernel
_SINUS_WALL = 0.6  # mm of bone between the frontal sinus and each table (the sinus walls)


def _bump(z: float, lo: float, hi: float) -> float:
    """Smooth 0..1..0 profile over [lo, hi] (0 outside)."""
    if z <= lo or z >= hi:
        return 0.0
    return math.sin(math.pi * (z - lo) / (hi - lo)) ** 0.6


@dataclass
class Patient:
    """Everything fixed for one patient: grid, anatomy parameters, lesions, devices, per-slice draws.

    ``shape`` is (rows, columns) in pixels, ``spacing`` the pixel size and ``slice_spacing`` the
    distance between slices, both in mm; ``p`` holds the head's parameters (mm, HU, radians).
    """

    index: int
    shape: tuple[int, int]
    spacing: float
    slice_spacing: float
    z_anat: np.ndarray  # anatomical z of each slice, mm
    p: dict[str, Any]
    lesions: list[Any]  # brain_audit.phantom.lesions.Lesion, one per bleed
    mimic_geometry: dict[str, Any]
    mimic_draws: np.ndarray  # (len(MIMICS), K) uniform draws deciding per-slice presence
    defect: np.ndarray  # (K,) bool, slice written with the RSNA wrap defect
    seed: int
    # grids (built lazily by _grids)
    _g: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _head_parameters(rng: np.random.Generator, cfg: Any) -> dict[str, Any]:
    """Draw one head (shape, skull, scalp, brain, sulci, exterior); ``cfg`` is a PhantomConfig."""
    p: dict[str, Any] = {}
    # head shape (inner table at the widest level), mm
    p["a"] = rng.uniform(60.0, 68.0)  # lateral semi-axis (skin-to-skin width ~150-170 mm)
    p["b"] = p["a"] * rng.uniform(1.15, 1.28)  # antero-posterior (length ~165-200 mm)
    p["ztop"] = rng.uniform(72.0, 82.0)
    p["zbot"] = rng.uniform(95.0, 120.0)
    p["theta"] = math.radians(rng.normal(0.0, 4.0))
    p["cx"] = rng.normal(0.0, 4.0)
    p["cy"] = rng.uniform(-22.0, -12.0)
    harm = np.zeros(_NPSI, np.float32)
    for kk in range(2, 6):
        harm += rng.normal(0, 0.012 / kk * 2) * np.cos(kk * _PSI + rng.uniform(0, 2 * np.pi))
    harm += -0.035 * np.cos(_PSI) + rng.normal(0, 0.01) * np.sin(_PSI)  # egg shape, slight asymmetry
    ell = 1.0 / np.sqrt((np.sin(_PSI) / p["a"]) ** 2 + (np.cos(_PSI) / p["b"]) ** 2)
    p["R0"] = (ell * (1.0 + harm)).astype(np.float32)
    # skull and scalp
    p["T0"] = rng.uniform(5.5, 7.0)
    p["frontal_bias"] = rng.uniform(0.35, 0.7)
    p["occipital_bias"] = rng.uniform(0.1, 0.35)
    p["temporal_thin"] = rng.uniform(0.25, 0.45)
    p["t_inner"] = rng.uniform(1.0, 1.5)
    p["t_outer"] = rng.uniform(1.2, 1.8)
    p["cortical_hu"] = rng.uniform(1400.0, 1700.0)
    p["diploe_hu"] = rng.uniform(440.0, 600.0)
    p["scalp_fat"] = rng.uniform(1.5, 3.2)
    p["skin"] = rng.uniform(1.2, 2.0)
    p["galea"] = rng.uniform(0.8, 1.4)
    p["temporalis"] = rng.uniform(4.0, 8.0)
    _fit_in_field_of_view(p, cfg.size * cfg.pixel_spacing_mm / 2.0)
    p["fat_hu"] = rng.uniform(-110.0, -85.0)
    p["soft_hu"] = rng.uniform(30.0, 45.0)
    # brain
    p["gm_hu"] = rng.uniform(35.0, 39.0)
    p["wm_hu"] = rng.uniform(25.5, 29.0)
    p["deep_gm_hu"] = p["gm_hu"] - rng.uniform(1.5, 3.5)
    p["csf_hu"] = rng.uniform(4.0, 9.0)
    p["falx_hu"] = rng.uniform(45.0, 60.0)
    p["atrophy"] = rng.beta(2.0, 4.0)  # 0 young .. 1 atrophic
    p["csf_surface"] = 0.4 + 1.4 * p["atrophy"]
    p["gm_thick"] = rng.uniform(2.4, 3.2)
    p["vent_scale"] = 0.8 + 0.7 * p["atrophy"] + rng.normal(0, 0.06)
    p["noise_sd"] = rng.uniform(4.0, 5.5)
    p["sulcus_drift"] = rng.uniform(-0.15, 0.15)  # psi bins per mm of z
    # sulci (nearest-sulcus table over (psi, depth), fixed per patient)
    n_sulci = 2 * int(rng.integers(40, 52))  # alternating primary (deep) and secondary (shallow) sulci
    base = np.sort((np.arange(n_sulci) + rng.uniform(-0.3, 0.3, n_sulci)) * (2 * np.pi / n_sulci) - np.pi)
    primary = np.arange(n_sulci) % 2 == 0
    sul = {
        "psi": base,
        "depth": np.where(primary, rng.uniform(8.0, 18.0, n_sulci), rng.uniform(3.0, 8.0, n_sulci)),
        "width": (0.5 + 1.6 * p["atrophy"]) * rng.uniform(0.6, 1.3, n_sulci) * np.where(primary, 1.0, 0.7),
        "meander": rng.uniform(0.015, 0.045, n_sulci),
        "wave": rng.uniform(2.5, 6.0, n_sulci),
        "phase": rng.uniform(0, 2 * np.pi, n_sulci),
        "zphase": rng.uniform(0, 2 * np.pi, n_sulci),
    }
    p["sulci"] = sul
    p["sulcal_table"] = _sulcal_table(p["R0"], sul)
    # sylvian fissures: psi about +-100 deg
    p["sylvian_psi"] = (math.radians(rng.uniform(95, 108)), -math.radians(rng.uniform(95, 108)))
    p["diploe_tex"] = _smooth_noise(rng, (_NPSI, _N_OUT), (3.0, 2.0)) * 90.0
    # exterior
    p["cushion"] = rng.random() < 0.6
    p["cushion_hu"] = rng.uniform(-880.0, -720.0)
    p["cushion_thick"] = rng.uniform(3.0, 8.0)
    p["holder_gap"] = rng.uniform(0.0, 3.0)
    p["holder_radius"] = rng.uniform(95.0, 125.0)
    p["holder_thick"] = rng.uniform(3.5, 6.0)
    p["holder_hu"] = rng.uniform(250.0, 290.0)
    p["holder_span"] = rng.uniform(50.0, 75.0)  # half-angle of the arc, degrees
    return p


def _slice_levels(rng: np.random.Generator, p: dict[str, Any], cfg: Any) -> np.ndarray:
    """Anatomical z (mm) of every slice of the study; sets ``p["z_table0"]``, the scanner z of the first."""
    k = cfg.slices_per_patient
    # slices: centred on the lateral-ventricle bodies give or take, starting no lower than the basal
    # cisterns (-35 mm) unless the study is longer than the head, and ending below the vertex; the centre
    # varies by 25 mm so that short studies reach the skull base (below -15 mm) in some patients and the
    # vertex plate (above 30 mm) in others
    span = (k - 1) * cfg.slice_spacing_mm
    top_mid = 10.0 + span / 2 + rng.uniform(-20.0, 5.0)
    z_top_slice = min(p["ztop"] - rng.uniform(7.0, 15.0), max(top_mid, -35.0 + span))
    z_anat = z_top_slice - (k - 1 - np.arange(k)) * cfg.slice_spacing_mm
    z_anat = np.maximum(z_anat, -60.0)  # below the modelled range the anatomy is held at -60 mm
    p["z_table0"] = -float(rng.uniform(60.0, 160.0))  # scanner z of the first slice
    return z_anat


def _fit_in_field_of_view(p: dict[str, Any], radius: float) -> None:
    """Move the head centre (cx, cy) so that the whole head lies inside the reconstruction circle.

    The head sits above the image centre by default, leaving room for the head holder below it;
    in a small field of view the head wins and the holder may leave the circle, as on real scans.
    """
    scalp = p["galea"] + p["scalp_fat"] + p["skin"] + 4.0  # + margin
    ant = float(p["R0"][_NPSI // 2]) + p["T0"] * (1.0 + p["frontal_bias"]) + scalp
    post = float(p["R0"][-1]) + p["T0"] * (1.0 + p["occipital_bias"]) + scalp
    lat = float(max(p["R0"][_NPSI // 4], p["R0"][3 * _NPSI // 4])) + p["T0"] + p["temporalis"] + scalp
    lo, hi = ant - radius, radius - post  # allowed cy range
    p["cy"] = float(np.clip(p["cy"], lo, hi)) if lo <= hi else (lo + hi) / 2.0
    lim = max(radius - lat, 0.0)
    p["cx"] = float(np.clip(p["cx"], -lim, lim))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return x / max(float(x.std()), 1e-6)


def _sulcal_table(R0: np.ndarray, sul: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sulcus id and arc distance (mm) for every (psi, depth) cell of the inner table."""
    depth = -_R_COL[:_N_IN]  # positive, mm
    n = len(sul["psi"])
    nearest = np.empty((_NPSI, _N_IN), np.int16)
    arc = np.empty((_NPSI, _N_IN), np.float32)
    two_pi = 2 * np.pi
    for j, d in enumerate(depth):
        centre = np.mod(sul["psi"] + sul["meander"] * np.sin(d / sul["wave"] + sul["phase"]) + np.pi, two_pi) - np.pi
        order = np.argsort(centre)
        c = centre[order]
        pos = np.searchsorted(c, _PSI)
        lo = order[(pos - 1) % n]
        hi = order[pos % n]
        dlo = np.abs(np.mod(_PSI - centre[lo] + np.pi, two_pi) - np.pi)
        dhi = np.abs(np.mod(_PSI - centre[hi] + np.pi, two_pi) - np.pi)
        take_lo = dlo <= dhi
        nearest[:, j] = np.where(take_lo, lo, hi)
        arc[:, j] = np.where(take_lo, dlo, dhi) * np.maximum(R0 - d, 10.0)
    return nearest, arc


def _z_scale(p: dict[str, Any], z: float) -> tuple[float, float]:
    """Cross-section scale of the inner table at height z, and |dR/dz| (mm/mm)."""
    c = p["ztop"] if z >= 0 else p["zbot"]
    t = min(abs(z) / c, 0.995)
    s = math.sqrt(1.0 - t * t)
    slope = float(np.mean(p["R0"])) * (abs(z) / (c * c)) / max(s, 0.12)
    return s, slope


def _head_to_px(pat: Patient, u: np.ndarray | float, v: np.ndarray | float) -> tuple[Any, Any]:
    """Head-frame mm (u lateral to image right, v posterior) -> pixel (col, row)."""
    p = pat.p
    c, s = math.cos(p["theta"]), math.sin(p["theta"])
    x = p["cx"] + c * np.asarray(u) - s * np.asarray(v)
    y = p["cy"] + s * np.asarray(u) + c * np.asarray(v)
    h, w = pat.shape
    return x / pat.spacing + (w - 1) / 2.0, y / pat.spacing + (h - 1) / 2.0


def _grids(pat: Patient) -> dict[str, np.ndarray]:
    if pat._g:
        return pat._g
    p = pat.p
    h, w = pat.shape
    xs = ((np.arange(w, dtype=np.float32) - (w - 1) / 2.0) * pat.spacing)
    ys = ((np.arange(h, dtype=np.float32) - (h - 1) / 2.0) * pat.spacing)
    X, Y = np.meshgrid(xs, ys)
    c, s = math.cos(p["theta"]), math.sin(p["theta"])
    dx, dy = X - np.float32(p["cx"]), Y - np.float32(p["cy"])
    U = (c * dx + s * dy).astype(np.float32)
    V = (-s * dx + c * dy).astype(np.float32)
    rho = np.hypot(U, V).astype(np.float32)
    psi = np.arctan2(U, -V)
    psi_idx = (((psi + np.pi) * (_NPSI / (2 * np.pi))).astype(np.int32)) % _NPSI
    fov = min(h, w) * pat.spacing / 2.0
    outside_fov = np.hypot(X, Y) > fov
    exterior = _exterior(pat, X, Y)
    ext_idx = np.flatnonzero((exterior != np.float32(_AIR_HU)) & ~outside_fov).astype(np.int32)
    pat._g.update(
        X=X, Y=Y, U=U, V=V,
        rho_s=(rho * np.float32(1.0 / _DR) + np.float32(_N_IN)).astype(np.float32),  # table column of r = 0 ...
        R0_s=(p["R0"][psi_idx] * np.float32(1.0 / _DR)).astype(np.float32),  # ... minus this times s(z)
        psi_base=psi_idx * _NR,
        outside_fov=outside_fov,
        ext_idx=ext_idx,
        ext_delta=exterior.ravel()[ext_idx] - np.float32(_AIR_HU),
    )
    return pat._g


def _exterior(pat: Patient, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Air, foam cushion and the curved head holder (fixed per patient), HU (H, W)."""
    p = pat.p
    ext = np.full(pat.shape, _AIR_HU, np.float32)
    # posterior skin point at the widest level, in image mm
    r_post = float(p["R0"][-1]) + p["T0"] * (1 + p["occipital_bias"]) + p["galea"] + p["scalp_fat"] + p["skin"]
    c, s = math.cos(p["theta"]), math.sin(p["theta"])
    px, py = p["cx"] - s * r_post, p["cy"] + c * r_post
    R = p["holder_radius"]
    cushion = p["cushion_thick"] if p["cushion"] else 0.0
    hx, hy = px, py + p["holder_gap"] + cushion - R
    h, w = pat.shape
    sp = pat.spacing
    centre = (round((hx / sp + (w - 1) / 2.0) * 16), round((hy / sp + (h - 1) / 2.0) * 16))
    span = p["holder_span"]

    def arc(radius: float, thick: float, value: float) -> None:
        r16 = round(radius / sp * 16)
        cv2.ellipse(ext, centre, (r16, r16), 0.0, 90.0 - span, 90.0 + span, float(value),
                    max(round(thick / sp), 1), cv2.LINE_8, 4)

    # holder: a denser outer shell over a lighter core
    t = p["holder_thick"]
    arc(R + t * 0.3, t * 0.6, p["holder_hu"] - 25.0)
    arc(R + t * 0.8, t * 0.4, p["holder_hu"] + 45.0)
    if p["cushion"]:
        arc(R - cushion / 2, cushion, p["cushion_hu"])
    return ext


def padding_mask(pat: Patient) -> np.ndarray:
    """bool (H, W): pixels outside the reconstruction circle (written as :data:`PAD_HU_FILE`)."""
    return _grids(pat)["outside_fov"]


def _cortex_table(pat: Patient, z: float, s_z: float) -> tuple[np.ndarray, ...]:
    """Tissue codes over (psi, depth inside the inner table) for one slice, and the sulcal geometry.

    Returns:
        ``(code_in, depth, dk, half, arc)``: uint8 (psi, r) codes (WM / GM / CSF), and per cell the
        depth below the inner table, the depth and half-width of its sulcus, and the arc distance
        to the sulcus (all mm), for painting subarachnoid blood into the sulci.
    """
    p = pat.p
    sul = p["sulci"]
    nearest, arc = p["sulcal_table"]
    roll = round(z * p["sulcus_drift"])
    if roll:
        nearest = np.roll(nearest, roll, axis=0)
        arc = np.roll(arc, roll, axis=0)
    depth = -_R_COL[:_N_IN][None, :]
    # per-sulcus depth and width at this level
    d_k = (sul["depth"] * (0.75 + 0.25 * np.sin(z / 14.0 + sul["zphase"])) * min(1.0, 0.35 + s_z)).astype(np.float32)
    w_k = (sul["width"] * (0.85 + 0.15 * np.cos(z / 11.0 + sul["zphase"]))).astype(np.float32)
    dk = d_k[nearest]
    half = w_k[nearest] * 0.5
    # sylvian fissure at low levels: a deep, wide cleft with insular cortex beneath
    syl = _bump(z, -40.0, 12.0)
    if syl > 0:
        dk, half, arc = dk.copy(), half.copy(), arc.copy()
        sw = np.float32((1.2 + 1.5 * p["atrophy"]) * syl)
        for ps in p["sylvian_psi"]:
            rows = np.nonzero(np.abs(np.mod(_PSI - ps + np.pi, 2 * np.pi) - np.pi) < 0.3)[0]
            dps = (np.abs(np.mod(_PSI[rows] - ps + np.pi, 2 * np.pi) - np.pi)[:, None] * np.maximum(
                p["R0"][rows, None] * np.float32(s_z) + _R_COL[None, :_N_IN], np.float32(10.0)))
            cleft = dps < sw + 0.1
            dk[rows] = np.where(cleft, np.maximum(dk[rows], np.float32(24.0 * syl)), dk[rows])
            half[rows] = np.where(cleft, np.maximum(half[rows], sw), half[rows])
            arc[rows] = np.where((dps < half[rows] + 3.0) & (dps < arc[rows]), dps, arc[rows])
    gm_t = p["gm_thick"]
    csf_s = p["csf_surface"]
    # sulci taper with depth
    one = np.float32(1.0)
    half = half * (one - np.float32(0.45) * np.minimum(depth / np.maximum(dk, one), one))
    is_csf = (depth < csf_s) | ((arc < half) & (depth < dk))
    is_gm = (depth < csf_s + gm_t) | ((arc < half + gm_t) & (depth < dk + gm_t))
    code_in = np.where(is_csf, _CSF, np.where(is_gm, _GM, _WM)).astype(np.uint8)
    return code_in, depth, dk, half, arc


def _shell_table(pat: Patient, z: float, slope: float, code_in: np.ndarray, edh_hu: np.float32,
                 sdh_hu: np.float32, sah_hu: float | None,
                 sinus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HU and tissue code over (psi, r) for one slice: ``code_in`` inside, skull and scalp outside.

    ``edh_hu`` / ``sdh_hu`` / ``sah_hu`` are the HU of the epidural, subdural and subarachnoid
    cells of ``code_in`` (``sah_hu`` None: none). ``sinus`` (bool (psi,), from
    :func:`brain_audit.phantom.skull_base.frontal_sinus`) marks angles whose diploe is replaced by
    sinus air, inside bony walls (coded as extracranial soft tissue, not skull). The table is
    blurred radially for partial volume.
    """
    p = pat.p
    # skull and scalp
    cpsi, spsi = np.cos(_PSI), np.sin(_PSI)
    low = _bump(z, -60.0, 45.0)
    obl = min(math.sqrt(1.0 + slope * slope), 2.5)
    T = (p["T0"] * (1.0 + p["frontal_bias"] * np.clip(cpsi, 0, None) ** 2
                    + p["occipital_bias"] * np.clip(-cpsi, 0, None) ** 4
                    - p["temporal_thin"] * spsi ** 2 * low) * obl).astype(np.float32)
    ti, to = p["t_inner"] * obl, p["t_outer"] * obl
    # temporalis: thickest over the temporal squama, tapering to nothing frontally and behind the ear
    muscle = (p["temporalis"] * np.clip((np.abs(spsi) - 0.6) / 0.4, 0, None) ** 1.5
              * np.clip((cpsi + 0.45) / 0.35, 0, 1) * low).astype(np.float32)
    galea = np.float32(p["galea"] * obl)
    fat = (p["scalp_fat"] * obl * (1.0 - 0.5 * np.clip(-cpsi, 0, None))).astype(np.float32)  # pressed on the holder
    skin = np.float32(p["skin"] * obl)
    r_out = _R_COL[_N_IN:][None, :]
    T_ = T[:, None]
    b_galea = T_ + galea
    b_muscle = b_galea + muscle[:, None]
    b_fat = b_muscle + fat[:, None]
    b_skin = b_fat + skin
    dip = np.float32(p["diploe_hu"]) + p["diploe_tex"]
    f32 = np.float32
    hu_out = np.where(r_out < b_skin, f32(p["soft_hu"]), f32(_AIR_HU))
    hu_out = np.where(r_out < b_fat, f32(p["fat_hu"]), hu_out)
    hu_out = np.where(r_out < b_muscle, f32(p["soft_hu"] + 8.0), hu_out)
    hu_out = np.where(r_out < b_galea, f32(p["soft_hu"]), hu_out)
    hu_out = np.where(r_out < T_, f32(p["cortical_hu"]), hu_out)
    diploe = (r_out >= f32(ti)) & (r_out < T_ - f32(to))
    hu_out = np.where(diploe, dip, hu_out)
    code_out = np.where(r_out < T_, _SKULL, np.where(r_out < b_skin, _SCALP, _OUT)).astype(np.uint8)
    if sinus is not None:
        air = sinus[:, None] & (r_out >= f32(ti + _SINUS_WALL)) & (r_out < T_ - f32(to + _SINUS_WALL))
        hu_out[air] = f32(_AIR_HU)
        code_out[air] = _SCALP

    lut = np.array([p["wm_hu"], p["gm_hu"], p["csf_hu"], 0, edh_hu, sdh_hu, 0, 0, 0], np.float32)
    hu_in = lut[code_in]
    if sah_hu is not None:
        hu_in[code_in == _SAH] = np.float32(sah_hu)
    table_hu = np.concatenate([hu_in, hu_out], axis=1)
    table_code = np.concatenate([code_in, code_out], axis=1)
    # partial volume of the 5 mm slab across obliquely cut surfaces
    # (and the pixel footprint, so that coarse grids average the thin tables instead of aliasing them)
    sigma_mm = math.sqrt(0.35 ** 2 + (0.22 * slope * pat.slice_spacing) ** 2 + (0.4 * pat.spacing) ** 2)
    sig = sigma_mm / _DR
    table_hu = cv2.GaussianBlur(table_hu, (2 * math.ceil(3 * sig) + 1, 1), sig, borderType=cv2.BORDER_REPLICATE)
    return table_hu, table_code


def _gather(pat: Patient, table_hu: np.ndarray, table_code: np.ndarray, s_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel HU (float32 (H, W)) and tissue code from the (psi, r) table, with the head holder and cushion."""
    g = _grids(pat)
    col = np.multiply(g["R0_s"], np.float32(-s_z))
    col += g["rho_s"]
    np.clip(col, 0, _NR - 1, out=col)
    ridx = col.astype(np.int32)
    ridx += g["psi_base"]
    hu = table_hu.ravel().take(ridx)
    code = table_code.ravel().take(ridx)
    # head holder and cushion where no head is
    ei = g["ext_idx"]
    free = code.ravel()[ei] == _OUT
    hu.ravel()[ei[free]] += g["ext_delta"][free]
    return hu, code


def _paint_deep(pat: Patient, hu: np.ndarray, code: np.ndarray, z: float, Rz: np.ndarray,
                shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint the deep structures into ``hu`` (in place) over brain and CSF pixels.

    Returns:
        ``(deep, dm)``: uint8 (H, W) deep-structure codes as drawn, and bool (H, W) where they
        replaced brain tissue.
    """
    p = pat.p
    h, w = pat.shape
    deep = np.zeros((h, w), np.uint8)
    _draw_deep(pat, deep, z, Rz, shift)
    bx, by, bw, bh = cv2.boundingRect(deep)
    box = (slice(by, by + bh), slice(bx, bx + bw))
    dm = np.zeros((h, w), bool)
    dm[box] = (deep[box] > 0) & (code[box] <= _BRAIN_CODES_MAX)
    lut = np.zeros(9, np.float32)
    lut[_D_GRAY] = p["deep_gm_hu"]
    lut[[_D_VENT_R, _D_VENT_L, _D_VENT3, _D_FISSURE, _D_CISTERN]] = p["csf_hu"]
    lut[_D_FALX] = p["falx_hu"]
    lut[_D_MIDBRAIN] = p["deep_gm_hu"] - 3.0
    hu_box = hu[box]
    hard = dm[box] & (deep[box] != _D_GRAY)
    hu_box[hard] = lut[deep[box][hard]]
    # deep gray nuclei blend into the white matter (soft edges, modest contrast)
    gray = (deep[box] == _D_GRAY).astype(np.float32)
    if gray.any():
        soft = cv2.GaussianBlur(gray, (0, 0), 1.6 / pat.spacing)
        wm_box = code[box] == _WM
        hu_box[wm_box] += (np.float32(p["deep_gm_hu"] - p["wm_hu"]) * soft)[wm_box]
    return deep, dm


_NOISE_MARGIN = 32


def _noise(pat: Patient, rng: np.random.Generator) -> np.ndarray:
    """Scanner noise of one slice (float32 (H, W), SD ``noise_sd``): a random crop and flip of
    the patient's noise field, which costs a fraction of drawing fresh normals per slice."""
    g = _grids(pat)
    if "noise" not in g:
        h, w = pat.shape
        bank = np.random.default_rng(np.random.SeedSequence(pat.seed, spawn_key=(pat.index, 2, 0)))
        white = bank.standard_normal((h + 2 * _NOISE_MARGIN, w + 2 * _NOISE_MARGIN), dtype=np.float32)
        grain = cv2.GaussianBlur(white, (3, 3), 0.6)  # CT noise is spatially correlated
        # plus a low-frequency tissue texture of +-1.2 HU
        tex = cv2.resize(bank.standard_normal((24, 24)).astype(np.float32), grain.shape[::-1],
                         interpolation=cv2.INTER_CUBIC)
        g["noise"] = grain * np.float32(pat.p["noise_sd"] / max(float(grain.std()), 1e-6)) + np.float32(1.2) * tex
    h, w = pat.shape
    oy, ox, flip = rng.integers(0, 2 * _NOISE_MARGIN + 1, 3)
    crop = g["noise"][oy:oy + h, ox:ox + w]
    return crop[::-1] if flip % 2 else crop


def _midline_shift(pat: Patient, z: float, t_edh: np.ndarray, t_sdh: np.ndarray) -> float:
    """Lateral shift (mm, head frame u) of midline structures away from extra-axial collections."""
    t = t_edh + t_sdh
    if not t.any():
        return 0.0
    side = float(np.sum(t * np.sin(_PSI)))  # + if the collection is on image right
    return float(-math.copysign(min(0.55 * float(t.max()), 10.0), side))


def _ellipse(pat: Patient, img: np.ndarray, u: float, v: float, a: float, b: float, angle: float, value: int) -> None:
    """Filled ellipse in head-frame mm (angle in degrees, head frame) into ``img``."""
    if a <= 0.05 or b <= 0.05:
        return
    col, row = _head_to_px(pat, u, v)
    sp = pat.spacing
    cv2.ellipse(img, (round(float(col) * 16), round(float(row) * 16)),
                (max(round(a / sp * 16), 1), max(round(b / sp * 16), 1)),
                angle + math.degrees(pat.p["theta"]), 0, 360, value, -1, cv2.LINE_8, 4)


def _polyline(pat: Patient, img: np.ndarray, u: np.ndarray, v: np.ndarray, value: int, width_mm: float) -> None:
    col, row = _head_to_px(pat, u, v)
    pts = np.stack([col, row], axis=1) * 16.0
    th = max(round(width_mm / pat.spacing), 1)
    cv2.polylines(img, [np.rint(pts).astype(np.int32)], False, value, th, cv2.LINE_8, 4)


def _draw_deep(pat: Patient, deep: np.ndarray, z: float, Rz: np.ndarray, shift: float) -> None:
    """Draw basal ganglia, ventricles, cisterns, fissure and falx codes into ``deep``."""
    p = pat.p
    vs = p["vent_scale"]
    sz = float(np.mean(Rz)) / float(np.mean(p["R0"]))
    ant = float(Rz[_NPSI // 2])  # psi ~ 0: anterior inner table radius
    post = float(Rz[-1])
    # basal ganglia and thalami
    bg = _bump(z, -30.0, 8.0)
    if bg > 0:
        for sd in (1.0, -1.0):
            _ellipse(pat, deep, sd * 21.0 + shift, -2.0, 5.5 * bg, 12.0 * bg, sd * 15.0, _D_GRAY)  # lentiform
            _ellipse(pat, deep, sd * 11.0 + shift, -17.0, 4.5 * bg, 6.5 * bg, sd * 20.0, _D_GRAY)  # caudate head
        th = _bump(z, -30.0, 0.0)
        for sd in (1.0, -1.0):
            _ellipse(pat, deep, sd * 9.0 + shift, 10.0, 7.5 * th, 10.0 * th, sd * -10.0, _D_GRAY)  # thalamus
    # midbrain and cisterns at the lowest levels
    mb = _bump(z, -60.0, -24.0)
    if mb > 0:
        # ambient and quadrigeminal cisterns around the midbrain (two cerebral peduncles and the tectum)
        _ellipse(pat, deep, shift, 6.0, 15.0 * mb, 13.0 * mb, 0.0, _D_CISTERN)
        _ellipse(pat, deep, shift, 19.0, 7.0 * mb, 5.0 * mb, 0.0, _D_CISTERN)
        for sd in (1.0, -1.0):
            _ellipse(pat, deep, shift + sd * 5.0 * mb, 3.0, 6.5 * mb, 8.5 * mb, sd * -25.0, _D_MIDBRAIN)
        _ellipse(pat, deep, shift, 10.0, 9.0 * mb, 5.5 * mb, 0.0, _D_MIDBRAIN)
        _ellipse(pat, deep, shift, -16.0, 9.0 * mb, 6.0 * mb, 45.0, _D_CISTERN)  # suprasellar
        _ellipse(pat, deep, shift, -16.0, 9.0 * mb, 6.0 * mb, -45.0, _D_CISTERN)
    # interhemispheric fissure and falx
    cc = z < 26.0  # corpus callosum, third ventricle or midbrain interrupt the midline below the cingulate level
    half_w = (0.5 + 1.0 * p["atrophy"]) * min(1.0, sz + 0.3)
    v_front, v_back = -ant + 0.5, post - 0.5
    segs = [(v_front, -24.0), (30.0, v_back)] if cc else [(v_front, v_back)]
    for a, b in segs:
        if b - a < 2.0:
            continue
        vv = np.linspace(a, b, 24)
        uu = shift * np.clip(1.0 - (vv / (0.8 * max(ant, post))) ** 2, 0, 1)
        _polyline(pat, deep, uu, vv, _D_FISSURE, 2 * half_w)
        _polyline(pat, deep, uu, vv, _D_FALX, 0.5)
    # ventricles
    vent = [
        # (u, v, a, b, angle, z_lo, z_hi)
        (7.5, -17.0, 4.5, 11.0, 22.0, -18.0, 16.0),  # frontal horn
        (10.0, 3.0, 4.2, 21.0, -6.0, 2.0, 30.0),  # body
        (19.0, 24.0, 6.5, 11.0, -28.0, -16.0, 12.0),  # atrium / occipital horn
        (25.0, 5.0, 3.0, 7.0, 30.0, -34.0, -14.0),  # temporal horn
    ]
    for sd, code in ((-1.0, _D_VENT_R), (1.0, _D_VENT_L)):
        for (u, v, a, b, ang, lo, hi) in vent:
            f = _bump(z, lo, hi)
            if f > 0:
                _ellipse(pat, deep, sd * u * min(vs, 1.4) + shift, v, a * vs * f, b * f * (0.8 + 0.2 * vs),
                         sd * ang, code)
    f3 = _bump(z, -30.0, -6.0)
    if f3 > 0:
        _ellipse(pat, deep, shift, -2.0, 1.2 * vs * f3 + 0.4, 11.0 * f3, 0.0, _D_VENT3)


def _patch(pat: Patient, u: float, v: float, radius_mm: float) -> tuple[slice, slice] | None:
    col, row = _head_to_px(pat, u, v)
    rp = radius_mm / pat.spacing + 2
    h, w = pat.shape
    r0, r1 = int(max(float(row) - rp, 0)), int(min(float(row) + rp + 1, h))
    c0, c1 = int(max(float(col) - rp, 0)), int(min(float(col) + rp + 1, w))
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)
