"""Ground truth of a phantom cohort: the per-slice masks and the manifest, written and read back.

The masks are stored in the dataset mask format of :mod:`brain_audit.dataset.masks`
(``<out_dir>/phantom_truth/<image_id>.npz``, bool (H, W) per key of :data:`TRUTH_KEYS`),
so training and the audit read them without knowing they come from a phantom. The manifest
(``phantom_manifest.json``) holds the generator version, every parameter and one record per
image (IDs, z in mm, labels, mimics shown, wrap defect) and per corrupt file. A test split's
labels and records stay under ``phantom_truth/`` (:data:`TEST_LABELS`, :data:`TEST_MANIFEST`):
on Kaggle the test labels are hidden, so nothing in the RSNA layout holds them.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from brain_audit import rsna
from brain_audit.dataset.masks import MASK_DIR, read_masks, write_masks
from brain_audit.errors import BrainAuditError
from brain_audit.phantom.lesions import MIMICS, TRUTH_EXTRA

__all__ = ["MANIFEST", "TEST_LABELS", "TEST_MANIFEST", "TRUTH_DIR", "TRUTH_KEYS", "load_manifest",
           "load_test_manifest", "load_truth", "write_truth"]

#: Folder of the truth masks under the cohort root (the dataset mask folder).
TRUTH_DIR = MASK_DIR

#: The cohort's manifest under its root.
MANIFEST = "phantom_manifest.json"

#: The test split's labels under :data:`TRUTH_DIR`, in the format of ``stage_2_train.csv``.
TEST_LABELS = "stage_2_test_labels.csv"

#: The test split's patient and image records (as the manifest's) under :data:`TRUTH_DIR`.
TEST_MANIFEST = "stage_2_test_manifest.json"

#: Keys of every truth file, in file order: regions, the RSNA subtypes, mimics, coil streaks, devices.
TRUTH_KEYS: tuple[str, ...] = ("head", "skull", "intracranial") + rsna.SUBTYPES + MIMICS + TRUTH_EXTRA


def write_truth(out_dir: str | Path, image_id: str, masks: Mapping[str, np.ndarray]) -> Path:
    """Write the truth masks of one image (every key of :data:`TRUTH_KEYS`, in that order)."""
    return write_masks(out_dir, image_id, {key: masks[key] for key in TRUTH_KEYS})


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed ``phantom_manifest.json`` of a cohort (cached while the file is unchanged)."""
    path = Path(out_dir) / MANIFEST
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BrainAuditError(f"{path}: no phantom manifest ({exc.strerror}); is this a phantom cohort?") from exc
    return _load_manifest(str(path), st.st_mtime_ns, st.st_size)


def load_test_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed test-split records (``phantom_truth/stage_2_test_manifest.json``: ``counts``, ``patients``,
    ``images`` as in the manifest), cached while the file is unchanged.

    Raises:
        BrainAuditError: the cohort has no test split (no such file).
    """
    path = Path(out_dir) / TRUTH_DIR / TEST_MANIFEST
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BrainAuditError(f"{path}: no test-split records ({exc.strerror}); was the cohort written with "
                              "test_patients > 0?") from exc
    return _load_manifest(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_manifest(path: str, _mtime: int, _size: int) -> dict[str, Any]:
    manifest = json.loads(Path(path).read_text())
    manifest["_by_id"] = {rec["image_id"]: rec for rec in manifest["images"]}
    return manifest


def load_truth(out_dir: str | Path, image_id: str) -> dict[str, np.ndarray]:
    """Ground-truth masks of one image: bool (H, W) per key of :data:`TRUTH_KEYS`.

    The phantom's name for :func:`brain_audit.dataset.masks.read_masks`.

    Raises:
        BrainAuditError: the truth file is missing (e.g. a corrupt file, which has none)
            or malformed.
    """
    return read_masks(out_dir, image_id)
