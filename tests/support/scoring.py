"""A small test folder in the RSNA layout and a tiny six-label model whose probabilities spread over (0, 1),
for the tests of brain_audit.inference (tests/inference).

The folder's DICOM headers carry recognisable identifiers (a hospital-style Patient ID, patient name, birth
date and numeric Study / Series UIDs) so that a test can grep every output for them.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from brain_audit.dataset.cache import preprocess_slice
from brain_audit.dicom import encode_slice
from brain_audit.model import build_model, save_model
from brain_audit.rsna import LABEL_COLUMNS
from support.dicom_files import edited
from support.heads import head_slice

SIZE = 32

#: Identifying values written into the headers; none may reach an output.
PATIENTS = ("MRN-0041-SMITH", "MRN-0077-JONES")
NAMES = ("SMITH^JOHN", "JONES^MARY")
BIRTH_DATE = "19470312"
STUDY_UIDS = ("1.2.840.99999.41.1", "1.2.840.99999.77.1")
SERIES_UIDS = (("1.2.840.99999.41.1.7", "1.2.840.99999.41.1.8"), ("1.2.840.99999.77.1.7",))

#: z (mm) of the slices of each series, in the order their image IDs are numbered (not z order).
Z = ((20.0, -5.0, 15.0, 0.0, 10.0), (7.5, 2.5, 12.5), (40.0, 30.0, 35.0, 25.0))

#: Files that cannot be scored, by image ID, with the start of the reason each must get.
BAD = {"ID_0bad00001": "(7FE0,0010) Pixel Data has", "ID_0bad00002": "not a DICOM file",
       "ID_0bad00003": "(0008,0060) Modality is 'MR'"}


def _slice(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A head slice of (rows, cols) pixels with noise and a random bright spot (not square: padding is exercised)."""
    hu, _ = head_slice(rows / 2, cols / 2, side=max(rows, cols))
    hu = hu[:rows, :cols].astype(np.float64) + rng.normal(0, 8, (rows, cols))
    y, x = rng.integers(8, min(rows, cols) - 8, 2)
    hu[y - 3 : y + 3, x - 2 : x + 4] = rng.uniform(50, 90)  # asymmetric: a flip changes the image
    return hu


def write_test_folder(root: Path, seed: int = 0) -> dict:
    """``root/stage_2_test/ID_*.dcm`` (12 good slices in 3 series of 2 studies, plus :data:`BAD`) and
    ``root/stage_2_sample_submission.csv`` listing the good images in reverse, the bad ones and ``ID_0missing1``
    (no file), six rows each.

    Returns:
        ``{"good": {image_id: {"study", "series", "z", "path"}}, "bad": {image_id: path}, "sample_ids": [...]}``
        (``study`` / ``series`` are the raw UIDs).
    """
    rng = np.random.default_rng(seed)
    folder = root / "stage_2_test"
    folder.mkdir(parents=True)
    good: dict[str, dict] = {}
    k = 0
    series_of = [(0, 0), (0, 1), (1, 0)]
    for (p, s), zs in zip(series_of, Z):
        for z in zs:
            image_id = f"ID_{k:09x}"
            k += 1
            data = encode_slice(_slice(rng, 40, 36), sop_instance_uid=image_id, patient_id=PATIENTS[p],
                                study_instance_uid=STUDY_UIDS[p], series_instance_uid=SERIES_UIDS[p][s], z=z)
            path = folder / f"{image_id}.dcm"
            path.write_bytes(edited(data, PatientName=NAMES[p], PatientBirthDate=BIRTH_DATE))
            good[image_id] = {"study": STUDY_UIDS[p], "series": SERIES_UIDS[p][s], "z": z, "path": path}
    full = encode_slice(_slice(rng, 40, 36), sop_instance_uid="ID_0bad00001", patient_id=PATIENTS[0],
                        study_instance_uid=STUDY_UIDS[0], series_instance_uid=SERIES_UIDS[0][0], z=99.0)
    bad = {i: folder / f"{i}.dcm" for i in BAD}
    bad["ID_0bad00001"].write_bytes(full[:-500])  # pixel data cut short
    bad["ID_0bad00002"].write_text("PatientID=MRN-0041-SMITH; this is a text file, not DICOM\n" * 4)
    mr = encode_slice(_slice(rng, 40, 36), sop_instance_uid="ID_0bad00003", patient_id=PATIENTS[1],
                      study_instance_uid=STUDY_UIDS[1], series_instance_uid=SERIES_UIDS[1][0], z=50.0)
    bad["ID_0bad00003"].write_bytes(edited(mr, Modality="MR"))
    sample_ids = sorted(good, reverse=True) + sorted(BAD) + ["ID_0missing1"]
    lines = ["ID,Label"] + [f"{i}_{c},0.5" for i in sample_ids for c in LABEL_COLUMNS]
    (root / "stage_2_sample_submission.csv").write_text("\n".join(lines) + "\n")
    return {"good": good, "bad": bad, "sample_ids": sample_ids}


def spread_model(path: Path, head: str = "six", seed: int = 0) -> keras.Model:
    """``build_model(SIZE, head, weights=None)`` with its last Dense layer set by hand so that the logits of slices
    like those of the test folder are standardised features times random weights: probabilities spread over
    (0, 1) instead of all sitting at 0.5 as at random initialisation. Saved to ``path`` (``.keras``) and returned."""
    model = build_model(SIZE, head=head, weights=None, seed=seed)
    rng = np.random.default_rng(seed)
    x = np.stack([preprocess_slice(_slice(rng, 40, 36), SIZE) for _ in range(16)]).astype(np.float32)[..., None]
    features = keras.Model(model.inputs[0], model.get_layer("avg_pool").output)
    f = np.asarray(features(x, training=False), dtype=np.float64)
    units = model.outputs[0].shape[-1]
    scale = 2 / np.sqrt(f.shape[1]) / (f.std(axis=0)[:, None] + 1e-12)
    kernel = rng.normal(0, 1, (f.shape[1], units)) * scale
    bias = -(f.mean(axis=0) @ kernel)
    model.get_layer("predictions").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    save_model(model, path)
    return model
