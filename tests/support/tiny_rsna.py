"""A tiny RSNA-layout dataset written with brain_audit.dicom.encode_slice: known HU, labels, positions, corrupt files.

Built once per test module by the fixtures of tests/dataset/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brain_audit.dicom import encode_slice
from brain_audit.rsna import LABEL_COLUMNS, SUBTYPES, TRAIN_CSV, TRAIN_DIR

AIR = -1000  # inside the wrap-defect range [-1000, 3095], so every file round-trips exactly

#: patient number -> subtypes on its positive slices (slices 1..2); others negative
_PATIENT_SUBTYPES = {
    0: ("epidural",), 1: ("epidural", "subdural"), 2: ("epidural",),
    3: ("subdural",), 4: ("subdural",), 5: ("subdural",),
    6: ("intraparenchymal", "intraventricular"), 7: ("intraparenchymal",),
    8: ("subarachnoid",), 9: ("intraventricular", "subarachnoid"),
}
N_PATIENTS, N_SLICES, SIDE = 14, 5, 32


def _slice_hu(rng: np.random.Generator, positive: bool) -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    r = np.hypot((yy - SIDE / 2 + 0.5) / (SIDE * 0.42), (xx - SIDE / 2 + 0.5) / (SIDE * 0.36))
    hu = np.full((SIDE, SIDE), AIR, dtype=np.int32)
    hu[r < 1.0] = rng.integers(900, 1600, size=int((r < 1.0).sum()))  # skull
    inner = r < 0.85
    hu[inner] = rng.integers(15, 45, size=int(inner.sum()))  # brain
    if positive:
        hu[12:16, 10:15] = rng.integers(60, 85, size=(4, 5))  # blood
    return hu.astype(np.float64)


def make_tiny_rsna(root: Path, seed: int = 0) -> dict:
    """A tiny RSNA-layout dataset with known HU, labels, positions and corrupt files.

    14 patients x 5 slices (32 px), one series each except patient 13 (two series);
    patient 12 written with the RSNA 12-bit wrap defect. Corrupt: ``ID_badheader0`` (not
    DICOM), ``ID_missing000`` (labelled, no file), ``ID_truncated0`` (pixels cut),
    ``ID_headonly00`` (no Pixel Data); the last two have readable headers.
    """
    rng = np.random.default_rng(seed)
    folder = root / TRAIN_DIR
    folder.mkdir(parents=True)
    truth: dict[str, dict] = {}
    hexes = rng.choice(16**9, size=N_PATIENTS * (N_SLICES + 4), replace=False)
    h = iter(hexes)
    for p in range(N_PATIENTS):
        pid = f"ID_{next(h):09x}"
        study = f"ID_{next(h):09x}"
        series_list = [f"ID_{next(h):09x}", f"ID_{next(h):09x}"]
        for k in range(N_SLICES):
            subs = _PATIENT_SUBTYPES.get(p, ()) if k in (1, 2) else ()
            series = series_list[1] if (p == 13 and k >= 3) else series_list[0]
            z = float(10 * k if series == series_list[0] else 100 + 7 * k)
            image_id = f"ID_{next(h):09x}"
            hu = _slice_hu(rng, bool(subs))
            (folder / f"{image_id}.dcm").write_bytes(encode_slice(
                hu, sop_instance_uid=image_id, patient_id=pid, study_instance_uid=study,
                series_instance_uid=series, z=z, wrap_defect=(p == 12)))
            lab = {s: int(s in subs) for s in SUBTYPES}
            lab["any"] = int(bool(subs))
            truth[image_id] = {"hu": hu.astype(np.float32), "labels": lab, "patient": pid, "series": series,
                               "z": z, "wrap": p == 12, "p": p}
    good = next(iter(truth))
    full = encode_slice(truth[good]["hu"], sop_instance_uid="ID_truncated0", patient_id=truth[good]["patient"],
                        study_instance_uid="ID_x", series_instance_uid="ID_truncser", z=500.0)
    (folder / "ID_truncated0.dcm").write_bytes(full[:-700])
    head = encode_slice(truth[good]["hu"], sop_instance_uid="ID_headonly00", patient_id=truth[good]["patient"],
                        study_instance_uid="ID_x", series_instance_uid="ID_headser", z=600.0)
    (folder / "ID_headonly00.dcm").write_bytes(head[: head.find(b"\xe0\x7f\x10\x00")])
    (folder / "ID_badheader0.dcm").write_bytes(b"this is not a DICOM file at all" * 8)
    lines = ["ID,Label"]
    for image_id, t in truth.items():
        lines += [f"{image_id}_{c},{t['labels'][c]}" for c in LABEL_COLUMNS]
    for image_id in ("ID_truncated0", "ID_headonly00", "ID_badheader0", "ID_missing000"):
        lines += [f"{image_id}_{c},0" for c in LABEL_COLUMNS]
    (root / TRAIN_CSV).write_text("\n".join(lines) + "\n")
    return truth
