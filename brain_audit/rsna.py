"""The RSNA 2019 Intracranial Hemorrhage Detection dataset layout.

One place for the names every stage shares, so phantom cohorts written by
:mod:`brain_audit.phantom` and the real Kaggle data are read by the same code::

    ROOT/stage_2_train/ID_<9 hex>.dcm      one axial slice per file
    ROOT/stage_2_train.csv                 header ``ID,Label``; six rows per image,
                                           ``ID_<img>_<subtype>,<0|1>``
    ROOT/stage_2_test/ID_<9 hex>.dcm       the test images (labels hidden)
    ROOT/stage_2_sample_submission.csv     header ``ID,Label``; six rows per test image,
                                           ``ID_<img>_<subtype>,0.5`` (a submission's format)

:func:`find_rsna_root` finds ROOT under ``/kaggle/input`` without listing the image folders.

References:
    Flanders AE et al. Construction of a Machine Learning Dataset through
    Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiology: AI 2020.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from pathlib import Path
from typing import Sequence

from brain_audit.errors import DataNotFoundError
from brain_audit.ids import safe_child

__all__ = ["SUBTYPES", "LABEL_COLUMNS", "TRAIN_DIR", "TRAIN_CSV", "TEST_DIR", "SAMPLE_SUBMISSION", "image_path"]

#: The five hemorrhage subtypes, in the order of the RSNA label file.
SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)

#: The six label columns of the RSNA label file, in its row order; ``any`` is the OR of the five.
LABEL_COLUMNS: tuple[str, ...] = SUBTYPES + ("any",)

#: Folder of training DICOM files under the dataset root.
TRAIN_DIR = "stage_2_train"

#: Label file under the dataset root.
TRAIN_CSV = "stage_2_train.csv"

#: Folder of test DICOM files under the dataset root (their labels are not shipped).
TEST_DIR = "stage_2_test"

#: Sample submission under the dataset root: the test images' rows, every probability 0.5.
SAMPLE_SUBMISSION = "stage_2_sample_submission.csv"


def image_path(root: str | Path, image_id: str, folder: str = TRAIN_DIR) -> Path:
    """Path of the DICOM file of ``image_id`` (``"ID_0a1b2c3d4"``) under dataset ``root``.

    Raises:
        BrainAuditError: ``image_id`` is not a plain ID (:mod:`brain_audit.ids`): the path
            would leave ``root/folder`` (``"../../outside/secret"``, ``"/etc/passwd"``).
    """
    return safe_child(Path(root) / folder, image_id, ".dcm")


# ---------------------------------------------------------------- finding the data on Kaggle

#: Where ``data_root = "auto"`` looks: Kaggle mounts attached datasets and competitions here.
DEFAULT_SEARCH: tuple[str, ...] = ("/kaggle/input",)

#: Folders never entered while searching: the image folders hold up to 752,803 files each.
_NEVER_ENTER = frozenset({TRAIN_DIR, TEST_DIR, "stage_1_train_images", "stage_1_test_images"})

#: How many searched folders a DataNotFoundError names before it only counts the rest.
_SHOWN_FOLDERS = 12


def find_rsna_root(search: Sequence[str | Path] | None = None, max_depth: int = 4) -> Path:
    """The folder holding the RSNA label file beside its image folder, found under ``search``.

    A root is a folder with ``stage_2_train.csv`` (a file) and ``stage_2_train/`` (a folder) side by
    side, as the competition mounts it (``/kaggle/input/rsna-intracranial-hemorrhage-detection/`` or one
    level deeper, ``.../rsna-intracranial-hemorrhage-detection/rsna-intracranial-hemorrhage-detection/``)
    or as a user's copy attached under another name. The search is breadth-first, ``max_depth`` folder
    levels below each entry of ``search`` (0: the entry itself only), with :func:`os.scandir` and only into
    folders; the image folders (``stage_2_train/``, ``stage_2_test/``) are never listed.

    Args:
        search: folders to search, in order (missing ones are skipped and named in the error);
            ``None``: :data:`DEFAULT_SEARCH`.
        max_depth: folder levels to descend (>= 0).

    Returns:
        The shallowest root found (the first in breadth-first order, names sorted at each level).
        When several are found a RuntimeWarning names every one and the one chosen.

    Raises:
        DataNotFoundError: no root under ``search``; the message lists the folders looked in.
    """
    if max_depth < 0:
        raise ValueError(f"`max_depth` must be >= 0. Got {max_depth} instead.")
    seen: dict[str, None] = {}
    found: list[Path] = []
    queue: deque[tuple[Path, int]] = deque((Path(s), 0) for s in (DEFAULT_SEARCH if search is None else search))
    while queue:
        folder, depth = queue.popleft()
        key = os.path.abspath(folder)
        if key in seen:
            continue
        seen[key] = None
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # missing, not a folder, unreadable: named in the error like the rest
            continue
        names = {e.name: e for e in entries}
        csv, images = names.get(TRAIN_CSV), names.get(TRAIN_DIR)
        if csv is not None and csv.is_file() and images is not None and images.is_dir():
            found.append(folder)
        if depth >= max_depth:
            continue
        for e in entries:
            if e.name not in _NEVER_ENTER and not e.name.startswith(".") and e.is_dir():
                queue.append((Path(e.path), depth + 1))
    if not found:
        raise DataNotFoundError(_not_found_message(list(seen), max_depth))
    if len(found) > 1:
        warnings.warn(f"{len(found)} RSNA data roots found ({', '.join(map(str, found))}); using the shallowest, "
                      f"{found[0]}", RuntimeWarning, stacklevel=2)
    return found[0]


def _not_found_message(looked: list[str], max_depth: int) -> str:
    shown = ", ".join(looked[:_SHOWN_FOLDERS])
    more = f" and {len(looked) - _SHOWN_FOLDERS} more" if len(looked) > _SHOWN_FOLDERS else ""
    return (f"no RSNA data found: no folder holds {TRAIN_CSV} beside {TRAIN_DIR}/ (looked in {len(looked)} "
            f"folder(s), {max_depth} level(s) deep: {shown}{more}); attach the competition data "
            "(Add Input > Competitions > RSNA Intracranial Hemorrhage Detection) or set data_root to its folder, "
            "or set DEMO = True for the phantom demo")


def resolve_data_root(data_root: str | Path, search: Sequence[str | Path] | None = None) -> Path:
    """``data_root`` as a folder: ``"auto"`` is :func:`find_rsna_root` under ``search``, anything else
    itself. Never a fallback: a root that is not found raises, the phantom is only ever asked for.

    Raises:
        DataNotFoundError: ``"auto"`` found nothing.
    """
    if str(data_root).strip().lower() == "auto":
        return find_rsna_root(search)
    return Path(data_root)


__all__ += ["DEFAULT_SEARCH", "find_rsna_root", "resolve_data_root"]
