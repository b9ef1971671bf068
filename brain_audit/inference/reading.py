"""The files of a folder to score, and one block of them read into the model's input.

Two layouts: ``"rsna"`` (``DIR/ID_<hex>.dcm``, the image ID is the file stem and must follow the
ID rule of :mod:`brain_audit.ids`) and ``"dicom"`` (every regular file under ``DIR``, recursively,
whatever its name; the image ID is the file's path relative to ``DIR``). Each readable file
becomes int16 (S, S) HU exactly as the training cache stored it
(:func:`brain_audit.dicom.read_slice`, i.e. ``read_hu`` and ``read_header`` from one parse, then
:func:`brain_audit.dataset.cache.preprocess_slice`), with
the pseudonyms of its Patient ID and Study / Series Instance UIDs (:func:`brain_audit.ids.pseudonym`)
and its z; a file that cannot give one CT slice gets the reason of its
:class:`~brain_audit.errors.DicomReadError` instead.

This module imports no TensorFlow: :func:`read_block` runs in the worker processes of
:func:`brain_audit.parallel.worker_pool`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from brain_audit.dataset.cache import preprocess_slice
from brain_audit.dicom import read_slice
from brain_audit.errors import BrainAuditError, ConfigError, DicomReadError
from brain_audit.ids import pseudonym, safe_child

__all__ = ["LAYOUTS", "Layout", "list_files", "read_block"]

Layout = Literal["rsna", "dicom"]

#: The folder layouts :func:`list_files` knows.
LAYOUTS: tuple[str, ...] = ("rsna", "dicom")

#: The header identifiers kept, as pseudonyms only: (row key, read_header key, pseudonym kind).
_IDENTIFIERS = (("patient_id", "patient_id", "patient"), ("study_id", "study_instance_uid", "study"),
                ("series_id", "series_instance_uid", "series"))


def list_files(folder: str | Path, layout: Layout, exclude: str | Path | None = None
               ) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """The files to score under ``folder``, sorted by image ID.

    Args:
        folder: the folder of DICOM files.
        layout: ``"rsna"`` (``folder/*.dcm``, IDs are the stems) or ``"dicom"`` (every file under
            ``folder``, recursively; IDs are POSIX paths relative to ``folder``).
        exclude: a folder whose files are never listed (the output folder when it lies inside ``folder``).

    Returns:
        ``(files, refused)``: ``[(image_id, path)]`` and, for layout ``"rsna"``, one row
        ``{"image_id", "file", "reason"}`` per ``.dcm`` file whose stem is not an ID.

    Raises:
        ConfigError: ``folder`` is not a folder, or ``layout`` is unknown.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"`layout` must be one of {LAYOUTS}. Got {layout!r} instead.")
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"`dicom_dir` must be a folder of DICOM files. Got {str(folder)!r} instead "
                          f"({'not a folder' if folder.exists() else 'no such folder'}).")
    files: list[tuple[str, str]] = []
    refused: list[dict[str, str]] = []
    if layout == "rsna":
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if e.name.endswith(".dcm") and e.is_file())
        for name in names:
            stem = name[: -len(".dcm")]
            try:
                files.append((stem, str(safe_child(folder, stem, ".dcm"))))
            except BrainAuditError as exc:
                refused.append({"image_id": stem, "file": name, "reason": str(exc)})
        return files, refused
    skip = Path(os.path.abspath(exclude)) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if skip is not None and Path(os.path.abspath(here)).is_relative_to(skip):
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in filenames:
            path = here / name
            if path.is_file():
                files.append((path.relative_to(folder).as_posix(), str(path)))
    files.sort()
    return files, refused


def read_block(task: tuple[int, bytes, int, Sequence[tuple[str, str]]]) -> tuple[int, list[dict[str, Any]], np.ndarray]:
    """Worker: read one block of files, ``(block number, pseudonym key, size, [(image_id, path)])``.

    Returns:
        ``(block number, rows, hu)``: one row per file in the block's order (``image_id``, ``reason``:
        ``None`` or why the file cannot be scored, and for readable files ``patient_id``, ``study_id``,
        ``series_id`` as pseudonyms, ``None`` when absent, and ``z`` in mm, NaN when absent), and int16
        (n readable, size, size) HU in the same order.
    """
    number, key, size, items = task
    rows: list[dict[str, Any]] = []
    arrays: list[np.ndarray] = []
    for image_id, path in items:
        row: dict[str, Any] = {"image_id": image_id, "reason": None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a missing rescale is legal: stored values are HU
                hu, header = read_slice(path)  # one parse for pixels and header
        except DicomReadError as exc:
            row["reason"] = exc.reason
            rows.append(row)
            continue
        for name, field, kind in _IDENTIFIERS:
            row[name] = None if header[field] is None else pseudonym(header[field], kind, key)
        row["z"] = np.nan if header["z"] is None else float(header["z"])
        arrays.append(preprocess_slice(hu, size))
        rows.append(row)
    hu_block = np.stack(arrays) if arrays else np.zeros((0, size, size), dtype=np.int16)
    return number, rows, hu_block
