"""What the audited data are: synthetic or real, how many images the source generated, which mimics each shows.

The report's first line says whether its data are synthetic; a phantom cohort says so by the manifest its
generator writes beside the images (``phantom_manifest.json``, read here as data, never imported). Mimic presence
per slice comes from the dataset's mask files (:data:`brain_audit.dataset.masks.MIMIC_KEYS`), the format any
annotated dataset can ship; real RSNA data ship none, and the report then has no mimic subgroups.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brain_audit.dataset.masks import MIMIC_KEYS, has_masks, mask_path, read_masks
from brain_audit.errors import BrainAuditError

__all__ = ["PHANTOM_MANIFEST", "data_source", "generated_counts", "mimic_presence"]

#: The file a phantom cohort's generator writes at its root (:mod:`brain_audit.phantom.truth`).
PHANTOM_MANIFEST = "phantom_manifest.json"


def _manifest(data_root: str | Path) -> dict[str, Any] | None:
    path = Path(data_root) / PHANTOM_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BrainAuditError(f"{path}: unreadable phantom manifest ({exc})") from exc


def data_source(data_root: str | Path) -> dict[str, Any]:
    """``{"synthetic": bool, "kind": str, "generator": {...} or None}`` of the data under ``data_root``."""
    manifest = _manifest(data_root)
    if manifest is None:
        return {"synthetic": False, "kind": "real DICOM data (no phantom manifest)", "generator": None}
    return {"synthetic": True, "kind": "synthetic head-CT phantom (brain_audit.phantom), not patients",
            "generator": manifest.get("generator")}


def generated_counts(data_root: str | Path) -> dict[str, int] | None:
    """``{"images", "patients"}`` a phantom generated (corrupt files included), or None for real data."""
    manifest = _manifest(data_root)
    if manifest is None:
        return None
    counts = manifest.get("counts", {})
    images = int(counts.get("images", 0)) + int(counts.get("corrupt_files", 0))
    return {"images": images, "patients": int(counts.get("patients", 0))}


def mimic_presence(data_root: str | Path, image_ids: Sequence[str]) -> pd.DataFrame | None:
    """Which hemorrhage mimics each image shows, from the dataset's mask files; None when it ships no masks.

    Returns:
        bool DataFrame indexed by image ID, one column per key of :data:`MIMIC_KEYS` found in any file. An image
        without a mask file, or with an unreadable one (warned), counts as showing none.
    """
    root = Path(data_root)
    if not has_masks(root):
        return None
    rows, missing = {}, 0
    for image_id in image_ids:
        try:
            if not mask_path(root, image_id).is_file():
                missing += 1
                rows[image_id] = {}
                continue
            masks = read_masks(root, image_id)
        except BrainAuditError as exc:
            warnings.warn(f"{exc}; its mimics are unknown and counted as absent", RuntimeWarning, stacklevel=2)
            rows[image_id] = {}
            continue
        rows[image_id] = {k: bool(np.any(masks[k])) for k in MIMIC_KEYS if k in masks}
    if missing:
        warnings.warn(f"{missing} of {len(image_ids)} audited images have no mask file under {root}; their mimics "
                      "count as absent", RuntimeWarning, stacklevel=2)
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(list(image_ids))
    keys = [k for k in MIMIC_KEYS if k in table.columns]
    return table[keys].fillna(False).astype(bool) if keys else None
