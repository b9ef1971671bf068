"""Per-slice segmentation masks on disk: the format, its reader and its writer.

Any dataset with per-slice segmentations can ship them beside its images (the phantom
writes its ground truth this way; some public ICH sets have bleed segmentations)::

    <data_root>/phantom_truth/<image_id>.npz   one file per image (folder name: MASK_DIR)

Each file is a numpy ``.npz`` (a zip of ``<key>.npy`` entries, NEP 1 ``.npy`` format)
holding one bool (H, W) array per key, all of the image's Rows x Columns. Keys are the
five RSNA subtypes (:data:`brain_audit.rsna.SUBTYPES`: ``epidural``, ``intraparenchymal``,
``intraventricular``, ``subarachnoid``, ``subdural``) plus any optional region or mimic
masks (``head``, ``skull``, ``coil``, ...), named with letters, digits and ``_``. A missing
subtype key counts as no blood of that subtype; an image without a file has no masks
(unknown, not negative). Image IDs are file names, never paths: the rule of
:mod:`brain_audit.ids` (RSNA form ``ID_<hex>`` or letters, digits, ``_``, ``-``, ``.``
without separators or ``..``).

The folder keeps the name the phantom has always written, so existing cohorts stay valid.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from brain_audit.errors import BrainAuditError
from brain_audit.ids import safe_child
from brain_audit.provenance import atomic_write_bytes
from brain_audit.rsna import SUBTYPES

__all__ = ["MASK_DIR", "MIMIC_KEYS", "mask_path", "has_masks", "read_masks", "lesion_mask", "encode_masks", "write_masks"]

#: Folder of the mask files under the dataset root.
MASK_DIR = "phantom_truth"

#: Mask keys of hemorrhage mimics a dataset may ship (dense objects a model can take for blood, or learn as a
#: shortcut): calcifications, an aneurysm coil, a ventricular catheter and its metal tip, frontal hyperostosis.
MIMIC_KEYS: tuple[str, ...] = (
    "choroid_plexus_calcification",
    "pineal_calcification",
    "falx_calcification",
    "coil",
    "catheter",
    "catheter_metal_tip",
    "frontal_bone",
)

_SUFFIX = ".npz"
_KEY = re.compile(r"[A-Za-z0-9_]+")
# fixed timestamp (the zip epoch) so that the same masks give the same bytes
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_DEFLATE_LEVEL = 1  # sparse bool masks compress well even at the fastest level


def mask_path(root: str | Path, image_id: str) -> Path:
    """Path of the mask file of ``image_id`` under dataset ``root`` (the file need not exist).

    Raises:
        BrainAuditError: ``image_id`` is not a plain ID (:func:`brain_audit.ids.validate_id`):
            it would leave the mask folder.
    """
    return safe_child(Path(root) / MASK_DIR, image_id, _SUFFIX)


def has_masks(root: str | Path) -> bool:
    """Whether the dataset under ``root`` ships segmentation masks (a :data:`MASK_DIR` folder)."""
    return (Path(root) / MASK_DIR).is_dir()


def read_masks(root: str | Path, image_id: str) -> dict[str, np.ndarray]:
    """The masks of one image: key -> bool (H, W) array, in file order.

    Raises:
        BrainAuditError: the ID is not a plain ID; the image has no mask file; the file
            is not an ``.npz``, or an entry is not a bool (H, W) array of the common shape
            (the message names the file and the key).
    """
    path = mask_path(root, image_id)
    if not path.is_file():
        raise BrainAuditError(f"{path.name}: no masks for {image_id} in {path.parent}")
    try:
        with np.load(path, allow_pickle=False) as z:
            masks = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BrainAuditError(f"{path.name}: not a mask file ({exc})") from exc
    shape = None
    for key, arr in masks.items():
        if arr.dtype != bool or arr.ndim != 2:
            raise BrainAuditError(f"{path.name}: mask '{key}' must be a bool (H, W) array. "
                                  f"Got {arr.dtype} {arr.shape} instead.")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise BrainAuditError(f"{path.name}: mask '{key}' must have the shape {shape} of the others. "
                                  f"Got {arr.shape} instead.")
    return masks


def lesion_mask(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool (H, W): the union of the subtype masks (:data:`brain_audit.rsna.SUBTYPES`) present.

    Region and mimic keys are ignored; with no subtype key the result is all False.

    Raises:
        BrainAuditError: ``masks`` is empty (no shape to give the result).
    """
    if not masks:
        raise BrainAuditError("`masks` must hold at least one mask. Got {} instead.")
    lesion = np.zeros(np.shape(next(iter(masks.values()))), dtype=bool)
    for s in SUBTYPES:
        if s in masks:
            lesion |= np.asarray(masks[s], dtype=bool)
    return lesion


def encode_masks(masks: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of one mask file: an ``.npz`` of ``masks`` (cast to bool) in mapping order.

    Deflate level 1 and a fixed timestamp, so the same masks give the same bytes on every
    run (``numpy.savez_compressed`` stamps the current time); ``numpy.load`` reads it.

    Raises:
        BrainAuditError: a key is not a name of letters, digits and ``_``, or an array is
            not 2-D of the common shape.
    """
    buf = io.BytesIO()
    shape = None
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in masks.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise BrainAuditError(f"`masks` keys must be names of letters, digits and '_'. Got {key!r} instead.")
            arr = np.ascontiguousarray(value, dtype=bool)
            if arr.ndim != 2 or (shape is not None and arr.shape != shape):
                want = "2-D" if shape is None else f"of shape {shape}"
                raise BrainAuditError(f"`masks['{key}']` must be {want}. Got shape {arr.shape} instead.")
            shape = arr.shape
            npy = io.BytesIO()
            np.lib.format.write_array(npy, arr, version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever the platform writing it
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy.getvalue(), compresslevel=_DEFLATE_LEVEL)
    return buf.getvalue()


def write_masks(root: str | Path, image_id: str, masks: Mapping[str, np.ndarray]) -> Path:
    """Write the mask file of ``image_id`` under dataset ``root`` atomically; returns its path."""
    return atomic_write_bytes(mask_path(root, image_id), encode_masks(masks))
