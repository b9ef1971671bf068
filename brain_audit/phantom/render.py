"""Rendering phantom slices: a patient drawn from the cohort seed, one axial slice in HU with its truth.

:func:`build_patient` draws patient ``i`` once from ``numpy.random.SeedSequence(seed,
spawn_key=(i, 0, 0))``: head (:mod:`~brain_audit.phantom.anatomy`), slice levels, lesions and
mimic geometry (:mod:`~brain_audit.phantom.lesions`); the skull base and the mimics added in
generator 1.1 from streams of their own (``spawn_key=(i, 3, 0)`` and ``(i, 4, 0)``). :func:`render` cuts slice ``k`` in this order:

1. the (psi, r) table of the slice: cortex and sulci, subarachnoid blood in the sulci,
   epidural / subdural collections pushing the cortex inward, skull (with the frontal sinus
   at low levels) and scalp; blurred radially (partial volume of the slab) and gathered per pixel;
2. head holder and cushion, then the deep structures, shifted away from collections, then the
   skull base (orbital roofs, petrous ridges, sphenoid, beam-hardening streak) or the vertex's
   partial-volume bone (:mod:`~brain_audit.phantom.skull_base`);
3. fissural subarachnoid, intraparenchymal and intraventricular blood;
4. a mild 3 x 3 Gaussian blur (sigma 0.6 px), then the mimics as exact local additions,
   coil streaks and noise (the patient's noise field, cropped and flipped per slice from
   ``spawn_key=(i, 1, k)``, so a slice does not depend on the others); rounded to integers
   and clipped to [-1024, 3071] HU (12-bit CT).

:func:`render_slice`, :func:`render_image` and :func:`render_counterfactual` re-render
slices of a cohort (from its parameters or its manifest), optionally forcing mimics on or
off for intervention tests; :func:`preview` draws a grid of written slices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brain_audit import rsna
from brain_audit.dicom import read_hu
from brain_audit.errors import BrainAuditError
from brain_audit.figures import pyplot, save_figure
from brain_audit.phantom.anatomy import (
    _BLUR_SIGMA_PX,
    _EDH,
    _INTRACRANIAL_MAX,
    _MAX_HU,
    _PAD_HU,
    _SCALP,
    _SDH,
    _SKULL,
    Patient,
    _cortex_table,
    _gather,
    _grids,
    _head_parameters,
    _midline_shift,
    _noise,
    _paint_deep,
    _shell_table,
    _slice_levels,
    _z_scale,
)
from brain_audit.phantom.config import PhantomConfig, _fail
from brain_audit.phantom.lesions import (
    _FIRST_MIMICS,
    MIMICS,
    _draw_lesions,
    _extra_axial,
    _mimic_geometry,
    _more_mimic_geometry,
    _paint_parenchymal,
    _paint_sah_table,
    _plant_mimics,
    _push_cortex,
    _subarachnoid,
)
from brain_audit.phantom.skull_base import _skull_base_parameters, frontal_sinus, paint_skull_base
from brain_audit.phantom.truth import load_manifest, load_test_manifest, load_truth
from brain_audit.rsna import SUBTYPES
from brain_audit.windowing import BSB, window

__all__ = ["build_patient", "preview", "render", "render_counterfactual", "render_image", "render_slice"]


def build_patient(cfg: PhantomConfig, index: int) -> Patient:
    """Draw patient ``index`` of a cohort from ``(cfg.seed, index)``.

    Args:
        cfg: the cohort's parameters (read only).
        index: patient number, 0-based.
    """
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, 0, 0)))
    k = cfg.slices_per_patient
    p = _head_parameters(rng, cfg)
    z_anat = _slice_levels(rng, p, cfg)
    bleed, lesions = _draw_lesions(rng, p, z_anat, cfg)
    p["bleed_patient"] = bleed
    geometry = _mimic_geometry(rng, p)
    draws = rng.random((_FIRST_MIMICS, k))
    defect = rng.random(k) < cfg.defect_fraction
    # generator 1.1: skull base and the later mimics from streams of their own (the draws above are unchanged)
    p["base"] = _skull_base_parameters(np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, 3, 0))),
                                       p)
    more = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, 4, 0)))
    _more_mimic_geometry(more, p, geometry)
    draws = np.concatenate([draws, more.random((len(MIMICS) - _FIRST_MIMICS, k))])
    return Patient(index, (cfg.size, cfg.size), cfg.pixel_spacing_mm, cfg.slice_spacing_mm, z_anat, p,
                   lesions, geometry, draws, defect, cfg.seed)


def render(pat: Patient, k: int, mimic_probabilities: Mapping[str, tuple[float, float]],
           mimics: Mapping[str, bool] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Render slice ``k`` of patient ``pat`` (the steps of the module docstring).

    Args:
        pat: from :func:`build_patient`.
        k: slice index, 0-based (increasing z).
        mimic_probabilities: mimic -> (p_given_bleed, p_given_no_bleed), per image.
        mimics: override of the per-slice presence of some mimics (counterfactuals).

    Returns:
        ``(hu, truth, info)``: float32 (H, W) integer-valued HU in [-1024, 3071] (padding
        outside the reconstruction circle -1024); bool (H, W) masks; ``info`` with ``labels``
        (subtype -> 0/1, ``any``), ``mimics`` (present names), ``z_anat`` (anatomical z, mm).
    """
    g = _grids(pat)
    p = pat.p
    z = float(pat.z_anat[k])
    rng = np.random.default_rng(np.random.SeedSequence(pat.seed, spawn_key=(pat.index, 1, k)))
    h, w = pat.shape
    s_z, slope = _z_scale(p, z)
    Rz = p["R0"] * np.float32(s_z)

    # 1. the (psi, r) table
    t_edh, t_sdh, edh_hu, sdh_hu, sah = _extra_axial(pat, z, Rz)
    code_in, depth, dk, half, arc = _cortex_table(pat, z, s_z)
    _paint_sah_table(code_in, depth, dk, half, arc, sah, z)
    _push_cortex(code_in, t_edh, t_sdh)
    table_hu, table_code = _shell_table(pat, z, slope, code_in, edh_hu, sdh_hu, sah[0].hu if sah else None,
                                        frontal_sinus(pat, z))
    hu, code = _gather(pat, table_hu, table_code, s_z)

    # 2. deep structures, then the bone of the skull base or the vertex over them
    shift = _midline_shift(pat, z, t_edh, t_sdh)
    deep, dm = _paint_deep(pat, hu, code, z, Rz, shift)
    bone = paint_skull_base(pat, hu, code, z)
    if bone is not None:
        deep[bone] = 0

    # 3. blood outside the table
    intracranial = code <= _INTRACRANIAL_MAX
    masks: dict[str, np.ndarray] = {s: np.zeros((h, w), bool) for s in SUBTYPES}
    masks["epidural"] = code == _EDH
    masks["subdural"] = code == _SDH
    masks["subarachnoid"] = _subarachnoid(pat, hu, code, deep, dm, intracranial, sah, z)
    _paint_parenchymal(pat, hu, masks, code, intracranial, deep, z, shift)

    # 4. blur, mimics, streaks, noise
    pre = hu
    hu = cv2.GaussianBlur(pre, (3, 3), _BLUR_SIGMA_PX)
    labels = {s: int(masks[s].any()) for s in SUBTYPES}
    labels["any"] = int(any(labels.values()))
    present = _plant_mimics(pat, k, pre, hu, masks, bool(labels["any"]), mimic_probabilities, mimics, s_z, Rz,
                            shift)
    hu += _noise(pat, rng)
    np.copyto(hu, np.float32(_PAD_HU), where=g["outside_fov"])
    np.rint(hu, out=hu)
    np.clip(hu, _PAD_HU, _MAX_HU, out=hu)

    masks["head"] = (code <= _SCALP) & ~g["outside_fov"]
    masks["skull"] = code == _SKULL
    masks["intracranial"] = intracranial
    info = {"labels": labels, "mimics": present, "z_anat": z}
    return hu, masks, info


@functools.lru_cache(maxsize=4)
def _patient(config: PhantomConfig, index: int) -> Any:
    return build_patient(config, index)


def render_slice(config: PhantomConfig, patient_index: int, slice_index: int,
                 mimics: Mapping[str, bool] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one slice of a cohort from its parameters, optionally forcing mimics on or off.

    Args:
        config: the cohort's parameters.
        patient_index, slice_index: 0-based; test patient ``j`` is ``config.patients + j``.
        mimics: mimic name -> present; unnamed mimics keep the cohort's own draw.

    Returns:
        ``(hu, truth)``: float32 (H, W) integer-valued HU in [-1024, 3071] (padding outside the
        reconstruction circle as -1024, i.e. as :func:`brain_audit.dicom.read_hu` returns it),
        and the bool (H, W) truth masks of :data:`TRUTH_KEYS`. Without ``mimics`` this equals
        ``read_hu`` of the written file (files with the wrap defect: clipped to [-1000, 3095]).
    """
    n = config.patients + config.test_patients
    if not 0 <= patient_index < n:
        raise _fail("patient_index", f"in [0, {n - 1}]", patient_index)
    if not 0 <= slice_index < config.slices_per_patient:
        raise _fail("slice_index", f"in [0, {config.slices_per_patient - 1}]", slice_index)
    for m in mimics or {}:
        if m not in MIMICS:
            raise _fail("mimic", f"one of {MIMICS}", m)
    hu, masks, _ = render(_patient(config, patient_index), slice_index, config.mimic_probabilities, mimics)
    return hu, masks


def _record(out_dir: str | Path, image_id: str) -> tuple[PhantomConfig, dict[str, Any]]:
    manifest = load_manifest(out_dir)
    rec = manifest["_by_id"].get(image_id)
    if rec is None and manifest["parameters"].get("test_patients"):
        rec = load_test_manifest(out_dir)["_by_id"].get(image_id)  # an image of the test split
    if rec is None:
        raise BrainAuditError(f"{image_id}: not a readable image of the phantom cohort in {out_dir}")
    return PhantomConfig(**manifest["parameters"]), rec


def render_image(out_dir: str | Path, image_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Re-render a written image (training or test split) from its cohort's manifest (HU and truth, as
    :func:`render_slice`)."""
    cfg, rec = _record(out_dir, image_id)
    return render_slice(cfg, rec["patient_index"], rec["slice_index"])


def render_counterfactual(out_dir: str | Path, image_id: str, mimic: str,
                          present: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The same slice with ``mimic`` added (``present=True``) or removed, for intervention tests.

    Anatomy, lesions, other mimics and noise are those of the written image; the HU differ
    from the original only inside the mimic's truth mask (the mask of whichever of the two
    renders shows it), plus ``coil_streaks`` for the coil.

    Returns:
        ``(hu, truth)`` as :func:`render_slice`.
    """
    if mimic not in MIMICS:
        raise _fail("mimic", f"one of {MIMICS}", mimic)
    cfg, rec = _record(out_dir, image_id)
    return render_slice(cfg, rec["patient_index"], rec["slice_index"], {mimic: bool(present)})


_OUTLINE = {"epidural": "red", "subdural": "gold", "intraparenchymal": "magenta",
            "intraventricular": "cyan", "subarachnoid": "lime"}


def _pick_preview(manifest: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Images showing each subtype, each mimic, then negatives: a deterministic, varied choice."""
    images = manifest["images"]
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()

    def take(pred) -> None:
        hits = [r for r in images if pred(r) and r["image_id"] not in seen]
        if hits and len(chosen) < n:
            r = hits[len(hits) // 2]
            chosen.append(r)
            seen.add(r["image_id"])

    for s in rsna.SUBTYPES:
        take(lambda r, s=s: r["labels"][s] == 1 and sum(r["labels"][t] for t in rsna.SUBTYPES) == 1)
    for s in rsna.SUBTYPES:
        take(lambda r, s=s: r["labels"][s] == 1)
    for m in MIMICS:
        take(lambda r, m=m: m in r["mimics"])
    take(lambda r: sum(r["labels"][t] for t in rsna.SUBTYPES) > 1)
    frac = [0.2, 0.5, 0.8, 0.35, 0.65, 0.1, 0.9]
    k = max(1, len(images) and images[-1]["slice_index"] + 1)
    for f in frac:
        take(lambda r, f=f: r["labels"]["any"] == 0 and r["slice_index"] == int(f * (k - 1)))
    for r in images:
        if len(chosen) >= n:
            break
        if r["image_id"] not in seen:
            chosen.append(r)
            seen.add(r["image_id"])
    return chosen[:n]


def preview(out_dir: str | Path, out_png: str | Path | None = None, n: int = 12) -> Path:
    """A grid of ``n`` slices of a cohort in the brain, subdural and bone windows, lesions outlined.

    The slices are read back from the DICOM files (:func:`brain_audit.dicom.read_hu`); lesion
    outlines come from the truth masks (colours per subtype), mimic outlines in white dashes.

    Returns:
        Path of the PNG (default ``out_dir/phantom_preview.png``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _fail("n", "an integer >= 1", n)
    root = Path(out_dir)
    out_png = Path(out_png) if out_png is not None else root / "phantom_preview.png"
    manifest = load_manifest(root)
    chosen = _pick_preview(manifest, n)
    plt = pyplot()
    per_row = 2
    rows = math.ceil(len(chosen) / per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3.0 * 3 * per_row, 3.25 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    names = ("brain", "subdural", "bone")
    for i, rec in enumerate(chosen):
        hu = read_hu(rsna.image_path(root, rec["image_id"]))
        truth = load_truth(root, rec["image_id"])
        found = [s for s in rsna.SUBTYPES if rec["labels"][s]]
        for j, ((c, w), name) in enumerate(zip(BSB, names, strict=True)):
            ax = axes[i // per_row][3 * (i % per_row) + j]
            ax.imshow(window(hu, c, w), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j > 0:
                for s in found:
                    ax.contour(truth[s], [0.5], colors=_OUTLINE[s], linewidths=0.7)
                for m in rec["mimics"]:
                    ax.contour(truth[m], [0.5], colors="white", linewidths=0.6, linestyles="dashed")
            if j == 0:
                title = ", ".join(found) if found else "no bleed"
                if rec["mimics"]:
                    title += " | " + ", ".join(m.replace("_calcification", " calc.") for m in rec["mimics"])
                ax.set_title(f"{rec['image_id']} z={rec['z']:.0f}\n{title}", fontsize=7, loc="left")
            else:
                ax.set_title(f"{name} W{w:.0f} L{c:.0f}" + ("  (outlines)" if j == 1 and found else ""),
                             fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.suptitle(f"brain_audit phantom, seed {manifest['seed']}. Outlines (subdural and bone windows): "
                 + ", ".join(f"{s} {c}" for s, c in _OUTLINE.items()) + "; mimics white dashed",
                 fontsize=8, y=0.997)
    return save_figure(fig, out_png, dpi=90)

