"""Grad-CAM audit of DICOM files (``brain-audit gradcam``): an overlay per slice and one profile table.

Each file is read to HU and prepared exactly as the cache prepares training slices
(:func:`brain_audit.dataset.cache.preprocess_slice`), so the model sees what it was trained on; unreadable
files are listed with their reason and the rest go on.
"""

from __future__ import annotations

import numbers
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brain_audit.dataset.cache import pad_to_square, preprocess_slice
from brain_audit.dicom import read_header, read_hu
from brain_audit.errors import BrainAuditError, ConfigError
from brain_audit.gradcam.attention import audit_batch
from brain_audit.gradcam.maps import (
    AUDIT_METHOD,
    METHODS,
    Method,
    audit_layer,
    cached_cam,
    cell_size_mm,
    find_layer,
    layer_names,
)
from brain_audit.gradcam.overlays import overlay_title, save_overlay
from brain_audit.gradcam.shortcuts import SANITY_MAX_RHO, randomization_check
from brain_audit.ids import safe_child, validate_id
from brain_audit.model.predictions import any_column
from brain_audit.provenance import file_fingerprint, run_record, write_csv, write_json
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.skull import region_masks

__all__ = ["audit_files"]


def _dicom_files(images: Sequence[Any]) -> list[Any]:

    files: list[Path] = []
    for item in images:
        p = Path(item)
        files.extend(sorted(p.glob("*.dcm")) if p.is_dir() else [p])
    return files


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(model: Any, layer: str | None, output_index: Any, method: Any, batch_size: Any,
                     threshold: Any, sanity_steps: Any, seed: Any) -> None:
    """Refuse, before any file is read, the arguments a user can get wrong (``brain-audit gradcam``'s options)."""

    def check(ok: bool, name: str, rule: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"`{name}` must be {rule}. Got {value!r} instead.")

    check(_is_int(batch_size) and batch_size >= 1, "batch_size", "an int >= 1", batch_size)
    check(_is_int(sanity_steps) and sanity_steps >= 0, "sanity_steps", "an int >= 0", sanity_steps)
    check(_is_int(seed) and seed >= 0, "seed", "an int >= 0", seed)
    check(isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and 0 <= threshold <= 1,
          "threshold", "in [0, 1]", threshold)
    check(method is None or method in METHODS, "method", f"one of {METHODS}", method)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1 or shape[1] is None:
        raise ConfigError(
            f"`model` must take single HU slices (N, S, S, 1). Got input shape {shape} instead "
            "(a 2.5D model with context slices needs its neighbours, which a folder of files does not order; "
            "`brain-audit audit` explains it from the run's HU cache)."
        )
    units = int(model.outputs[0].shape[-1])
    check(output_index is None or (_is_int(output_index) and 0 <= output_index < units), "output_index",
          f"in [0, {units - 1}]", output_index)
    if layer is not None:
        try:
            find_layer(model, layer)
        except ValueError:  # find_layer's only error: no such layer (its message lists all of them)
            names = layer_names(model)
            raise ConfigError(
                f"`layer` must name a layer of the model or of a nested sub-model. Got {layer!r} instead; "
                f"the last of its {len(names)} layers: {', '.join(names[-4:])}"
            ) from None


def audit_files(
    model: Any,
    images: Sequence[Any],
    out_dir: Any,
    *,
    layer: str | None = None,
    output_index: int | None = None,
    method: Method | None = None,
    batch_size: int = 16,
    labels: Any = None,
    threshold: float = 0.5,
    overlays: bool = True,
    sanity_steps: int = 4,
    seed: int = 0,
) -> Any:
    """Grad-CAM audit of DICOM slices: an overlay PNG per slice and one table of attention profiles.

    Each file is read to HU (:func:`brain_audit.dicom.read_hu`) and padded to a square
    (:func:`brain_audit.dataset.cache.pad_to_square`); regions are found at that full resolution
    (:func:`brain_audit.skull.region_masks`); the model's input is the slice as the cache stores it
    (:func:`brain_audit.dataset.cache.preprocess_slice`), explained in batches by
    :func:`brain_audit.gradcam.attention.audit_batch` (probabilities from the same gradient pass); the
    map is resized back and profiled. Unreadable files are listed in ``skipped.csv`` with their reason and
    the rest go on.

    Writes into ``out_dir``: ``overlays/<image_id>.png``, ``profiles.csv`` (one row per slice:
    ``image_id``, ``file``, ``probability``, ``label``, ``cell_mm`` (one map cell in mm, from the file's
    (0028,0030) Pixel Spacing; empty without it), the profile columns (the pointing game's tolerance in mm where
    the spacing is known) and mimic presence),
    ``skipped.csv``, ``sanity.csv`` (the Adebayo randomisation check of the maps) and ``run.json`` (:func:`brain_audit.provenance.run_record`).

    Args:
        model: Keras model taking one HU slice per sample, (N, S, S, 1) (``build_model(context=0)``).
        images: DICOM files and / or folders (their ``*.dcm``, sorted).
        out_dir: output folder (created).
        layer, output_index, method: as in :func:`grad_cam`; ``None`` takes the audits' choice,
            :func:`brain_audit.gradcam.maps.audit_layer`, the ``any`` output (0 of a one-output model, 5 of the
            six-label head: :func:`brain_audit.model.predictions.any_column`) and
            :data:`~brain_audit.gradcam.maps.AUDIT_METHOD`.
        batch_size: slices per gradient pass, >= 1.
        labels: optional RSNA label table (:func:`brain_audit.dataset.labels.read_labels`), used for the
            ``label`` column and ``right_for_wrong_reason``; column = the explained output's label.
        threshold: decision threshold for ``right_for_wrong_reason``.
        overlays: write the PNGs.
        sanity_steps: cascade steps of :func:`randomization_check`, run on the first (up to 8) slices
            and written to ``sanity.csv`` and ``run.json`` (``trustworthy``); 0 skips it.
        seed: seed of the randomisation check.

    Returns:
        pandas.DataFrame of the profiles (as written to ``profiles.csv``); ``attrs["n_skipped"]`` counts
        the unreadable files.

    Raises:
        ConfigError: an argument out of range, a layer the model lacks, an output index past its
            outputs, or a model that does not take single HU slices (checked before any file is read).
    """



    _check_arguments(model, layer, output_index, method, batch_size, threshold, sanity_steps, seed)
    shape = tuple(model.inputs[0].shape)
    size = (int(shape[1]), int(shape[2]))
    layer = audit_layer(model) if layer is None else layer
    method = AUDIT_METHOD if method is None else method
    if output_index is None:
        output_index = any_column("six" if int(model.outputs[0].shape[-1]) == len(LABEL_COLUMNS) else "any")
    cam_fn = cached_cam(model, layer, output_index, method)
    cells = cam_fn.cells[0] or size[0]
    column = LABEL_COLUMNS[output_index] if cam_fn.n_outputs == len(LABEL_COLUMNS) else "any"
    out = Path(out_dir)
    files = _dicom_files(images)
    tables: list[Any] = []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[Any, np.ndarray, dict[str, np.ndarray]]] = []
    field_mm: dict[str, float | None] = {}  # file -> field of view of the padded square, mm
    first: list[np.ndarray] = []  # model-size HU of the first slices, for the sanity check

    def flush() -> None:
        if not pending:
            return
        ids = [Path(f).stem for f, _, _ in pending]
        labs = [int(labels.loc[i, column]) if labels is not None and i in labels.index else None for i in ids]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps are recorded as peak_region "none"
            small = np.stack([preprocess_slice(hu, size[0]) for _, hu, _ in pending]).astype(np.float32)
            first.extend(small[: max(0, 8 - len(first))])
            part, maps = audit_batch(
                model, small, masks=[m for _, _, m in pending],
                labels=labs, image_ids=ids, layer=layer, output_index=output_index, method=method, threshold=threshold,
                pixel_mm=[None if field_mm[str(f)] is None else field_mm[str(f)] / hu.shape[0] for f, hu, _ in pending],
            )
        part.insert(1, "file", [str(f) for f, _, _ in pending])
        part.insert(2, "cell_mm", [cell_size_mm(cells, size[0], field_mm[str(f)])["cell_mm"] for f, _, _ in pending])
        tables.append(part)
        if overlays:
            for (f, hu, _), cam, rec in zip(pending, maps, part.to_dict("records")):
                title = overlay_title(rec["image_id"], rec["probability"], rec)
                save_overlay(safe_child(out / "overlays", rec["image_id"], ".png"), hu, cam, title=title)
        pending.clear()

    for f in files:
        try:
            validate_id(Path(f).stem, "image_id", source=Path(f).name)  # names the overlay: never a path
            raw = read_hu(f)
            hu = pad_to_square(raw)  # regions and overlays in the geometry the model sees
            spacing = read_header(f).get("pixel_spacing")
        except (BrainAuditError, OSError) as exc:
            skipped.append({"file": str(f), "reason": str(exc)})
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            masks = region_masks(hu)
        if caught:  # degenerate but legal (no head, open skull): say which file, carry on
            note = "; ".join(str(w.message) for w in caught)
            warnings.warn(f"{Path(f).name}: {note}", RuntimeWarning, stacklevel=2)
        field_mm[str(f)] = (max(raw.shape[0] * spacing[0], raw.shape[1] * spacing[1]) if spacing else None)
        pending.append((f, hu, masks))
        if len(pending) >= batch_size:
            flush()
    flush()
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image_id", "file", "probability", "label"])
    table.attrs["n_skipped"] = len(skipped)
    write_csv(out / "profiles.csv", table)
    write_csv(out / "skipped.csv", pd.DataFrame(skipped, columns=["file", "reason"]))
    sanity: dict[str, Any] = {}
    if sanity_steps and first:
        check = randomization_check(model, np.stack(first), layer=layer, output_index=output_index, steps=sanity_steps,
                                    seed=seed, method=method)
        write_csv(out / "sanity.csv", check["table"])
        sanity = {"rho_final": check["rho_final"], "trustworthy": check["trustworthy"], "steps": int(sanity_steps)}
        if not check["trustworthy"]:
            warnings.warn(
                f"audit_files: the maps survive randomisation of the top {sanity_steps} layer groups (Spearman "
                f"{check['rho_final']:.2f} >= {SANITY_MAX_RHO}); they are not trustworthy evidence of what the model uses.",
                RuntimeWarning,
                stacklevel=2,
            )
    table.attrs["sanity"] = sanity
    write_json(
        out / "run.json",
        run_record(
            config={"layer": cam_fn.layer, "output_index": output_index, "method": method, "batch_size": int(batch_size),
                    "threshold": threshold, "image_size": list(size)},
            map_resolution=cell_size_mm(cells, size[0], None),
            inputs={str(f): file_fingerprint(f) for f in files if Path(f).exists()},
            n_images=len(table),
            n_skipped=len(skipped),
            sanity=sanity,
        ),
    )
    return table

