"""Issue 11's bad-input corpus, end to end: `brain-audit prepare` on a phantom cohort salted with bad files and rows.

Every bad file is refused with the tag at fault and the batch goes on; no ID read from a file becomes a path
outside the data root or the output folder; no hospital identifier reaches any byte of the outputs; every good
slice is processed. The one-line CLI errors (seed -1, bools as ints, a garbage model file, an unwritable folder,
two runs on one folder) are pinned case by case in tests/test_cli.py and tests/test_run_lock.py.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from brain_audit.cli import main
from brain_audit.dicom import encode_slice
from brain_audit.rsna import LABEL_COLUMNS, TRAIN_CSV, TRAIN_DIR
from support.dicom_files import edited

MRN = "MRN123456"
OUTSIDE_SECRET = "secret"


def _slice(image_id: str, *, patient: str = "ID_0bad", z: float = 0.0, hu: float = 40.0, side: int = 64) -> bytes:
    yy, xx = np.mgrid[0:side, 0:side]
    head = np.hypot(yy - side / 2, xx - side / 2) < side * 0.4
    return encode_slice(np.where(head, hu, -1000.0), sop_instance_uid=image_id, patient_id=patient,
                        study_instance_uid="ID_5bad", series_instance_uid="ID_5ebad", z=z)


def _slope_text(data: bytes) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.add_new(0x00281053, "LO", "abc")  # a Rescale Slope that is text, not a number
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


#: image ID -> (file bytes builder, fragment of the reason skipped.csv must give); None: kept (degenerate, legal)
def _corpus() -> dict[str, tuple[bytes, str | None]]:
    good = _slice("ID_0b00")
    return {
        "ID_0b01": (b"", "empty file (0 bytes)"),
        "ID_0b02": (np.random.default_rng(0).bytes(4096), "not a DICOM file"),
        "ID_0b03": (good[: len(good) - 3000], "(7FE0,0010) Pixel Data"),  # truncated pixels
        "ID_0b04": (good[: good.rindex(b"\xe0\x7f\x10\x00")], "(7FE0,0010) Pixel Data is missing (header only)"),
        "ID_0b05": (edited(good, Modality="MR"), "(0008,0060) Modality is 'MR'; expected 'CT'"),
        "ID_0b06": (edited(good, SamplesPerPixel=3, PhotometricInterpretation="RGB"), "(0028,0002) Samples per Pixel 3"),
        "ID_0b07": (edited(good, NumberOfFrames=4), "(0028,0008) Number of Frames is 4"),
        "ID_0b08": (Path(get_testdata_file("rtdose.dcm")).read_bytes(), "(0008,0060) Modality is 'RTDOSE'"),
        "ID_0b09": (_slope_text(good), "(0028,1053) Rescale Slope is 'abc'; not a number"),
        "ID_0b0a": (edited(good, RescaleSlope=0), "(0028,1053) Rescale Slope is 0"),
        "ID_0b0b": (edited(good, Rows=4096), "(0028,0010) Rows"),  # overstated Rows: the pixels cannot fill it
        "ID_0b0c": (edited(_slice("ID_0b0c", z=5.0), PixelSpacing=None), None),  # kept, counted in index.json
        "ID_0b0d": (_slice("ID_0b0d", z=10.0, hu=-2000.0), None),  # every pixel padding: kept
        "ID_0b0e": (_slice("ID_0b0e", patient=MRN, z=0.0), None),  # a hospital's Patient ID: pseudonymised
        "ID_0b0f": (_slice("ID_0b0f", patient="../../../escape/x", z=0.0), None),  # a traversal Patient ID
    }


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def salted(tmp_path_factory):
    """A 12-patient phantom cohort plus the corpus, label rows for all of it, and label rows whose IDs are paths."""
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig

    base = tmp_path_factory.mktemp("corpus")
    root = base / "data"
    generate_cohort(root, PhantomConfig(patients=12, slices_per_patient=2, size=64, seed=3, corrupt_files=0),
                    workers=1, progress=False)
    good_ids = sorted(p.stem for p in (root / TRAIN_DIR).glob("*.dcm"))
    corpus = _corpus()
    for image_id, (data, _) in corpus.items():
        (root / TRAIN_DIR / f"{image_id}.dcm").write_bytes(data)
    outside = base / "outside"
    outside.mkdir()
    (outside / f"{OUTSIDE_SECRET}.dcm").write_bytes(_slice("ID_0c00"))
    rows = [f"{i}_{c},0" for i in corpus for c in LABEL_COLUMNS]
    rows += [f"../../outside/{OUTSIDE_SECRET}_{c},1" for c in LABEL_COLUMNS]  # relative traversal
    rows += [f"{outside / OUTSIDE_SECRET}_{c},1" for c in LABEL_COLUMNS]  # absolute path
    with open(root / TRAIN_CSV, "a") as fh:
        fh.write("\n".join(rows) + "\n")
    before = _tree(base)
    out = base / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["prepare", "--data-root", str(root), "--out", str(out), "--quiet", "--set", "workers=1",
                   "--set", "image_size=64", "--set", "audit_patients=2"])
    return dict(rc=rc, base=base, root=root, out=out, corpus=corpus, good=good_ids, before=before)


def test_prepare_finishes(salted):
    assert salted["rc"] == 0


def test_every_bad_file_is_skipped_with_the_tag_at_fault(salted):
    skipped = pd.read_csv(salted["out"] / "data" / "index" / "skipped.csv", dtype=str, keep_default_na=False)
    reasons = skipped.set_index("image_id")["reason"].to_dict()
    for image_id, (_, fragment) in salted["corpus"].items():
        if fragment is None:
            assert image_id not in reasons, image_id
        else:
            assert fragment in reasons.get(image_id, ""), (image_id, reasons.get(image_id))


def test_every_good_slice_is_indexed_and_cached(salted):
    images = pd.read_parquet(salted["out"] / "data" / "cache" / "images.parquet")
    index = pd.read_parquet(salted["out"] / "data" / "index" / "index.parquet")
    kept = set(salted["good"]) | {i for i, (_, f) in salted["corpus"].items() if f is None}
    assert kept <= set(index.index if index.index.name == "image_id" else index["image_id"])
    cached = set(images.index if images.index.name == "image_id" else images["image_id"])
    cohort = pd.read_csv(salted["out"] / "data" / "cohort" / "cohort.csv", dtype={"image_id": str})
    assert set(cohort["image_id"]) == cached  # every slice of the cohort reached the cache
    assert set(salted["good"]) <= set(cohort["image_id"])


def test_no_file_outside_the_data_root_is_read_and_nothing_is_written_outside_the_output(salted):
    index = pd.read_parquet(salted["out"] / "data" / "index" / "index.parquet")
    ids = set(index.index) | set(index.get("image_id", []))
    assert not any(OUTSIDE_SECRET in str(i) for i in ids)
    after = _tree(salted["base"])
    new = {p for p in after - salted["before"] if not p.startswith("run")}
    assert new == set()


def test_no_hospital_identifier_reaches_any_output_byte(salted):
    for path in salted["out"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert MRN.encode() not in data, path
            assert b"../../../escape" not in data, path
            assert b"escape/x" not in data, path


def test_outputs_follow_the_umask(salted):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("index/index.parquet", "cohort/cohort.csv", "cache/manifest.json"):
        mode = (salted["out"] / "data" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask, name


def test_one_summary_counts_every_skip_of_every_stage(salted):
    """data/summary.json: the 11 unusable files of the corpus (the other 4 are kept), the 12 label rows whose IDs
    are paths, and the cache's own skips; the counts by reason add up."""
    import json

    summary = json.loads((salted["out"] / "data" / "summary.json").read_text())
    unusable = sum(f is not None for _, f in salted["corpus"].values())
    assert summary["labels"]["rows_refused"] == 2 * len(LABEL_COLUMNS)
    assert summary["index"]["skipped"] == unusable == 11
    assert sum(summary["index"]["skipped_by_reason"].values()) == unusable
    assert summary["index"]["without_pixel_spacing"] == 1
    assert summary["cache"]["skipped"] == 0
    assert summary["cache"]["without_tissue"] == 1  # ID_0b0d, every pixel padding: kept, counted, listed
    manifest = json.loads((salted["out"] / "data" / "cache" / "manifest.json").read_text())
    assert manifest["without_tissue"] == ["ID_0b0d"]
    images = pd.read_parquet(salted["out"] / "data" / "cache" / "images.parquet")
    assert summary["cache"]["cached"] == len(images)
