"""The RSNA 2019 Intracranial Hemorrhage Detection dataset layout.

One place for the names every stage shares, so phantom cohorts written by
:mod:`brain_audit.phantom` and the real Kaggle data are read by the same code::

    ROOT/stage_2_train/ID_<9 hex>.dcm      one axial slice per file
    ROOT/stage_2_train.csv                 header ``ID,Label``; six rows per image,
                                           ``ID_<img>_<subtype>,<0|1>``
    ROOT/stage_2_test/ID_<9 hex>.dcm       the test images (labels hidden)
    ROOT/stage_2_sample_submission.csv     header ``ID,Label``; six rows per test image,
                                           ``ID_<img>_<subtype>,0.5`` (a submission's format)

References:
    Flanders AE et al. Construction of a Machine Learning Dataset through
    Collaboration: The RSNA 2019 Brain CT Hemorrhage Challenge. Radiology: AI 2020.
"""

from __future__ import annotations

from pathlib import Path

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
