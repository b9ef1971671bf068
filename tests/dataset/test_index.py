"""brain_audit.dataset.index: the DICOM header index of the tiny RSNA-layout dataset, against the values
written into its files (tests/support/tiny_rsna.py)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from brain_audit.dataset import index as index_mod
from brain_audit.dataset.cache import build_cache
from brain_audit.dataset.cohort import CohortSpec, join_images, plan_cohorts, write_cohorts
from brain_audit.dataset.index import INDEX_FORMAT, build_index, read_index, read_skipped
from brain_audit.dataset.labels import read_labels
from brain_audit.dicom import encode_slice
from brain_audit.errors import CacheError
from brain_audit.rsna import LABEL_COLUMNS, TRAIN_CSV, TRAIN_DIR
from support.dicom_files import edited
from support.tiny_rsna import SIDE


class TestBuildIndex:
    def test_values_match_what_was_written(self, tiny, tiny_index):
        _, truth = tiny
        _, index, _ = tiny_index
        for image_id, t in truth.items():
            row = index.loc[image_id]
            assert row["patient_id"] == t["patient"] and row["series_id"] == t["series"]
            assert row["z"] == t["z"] and (row["rows"], row["cols"]) == (SIDE, SIDE)
            assert bool(row["wrap_defect"]) == t["wrap"]
            assert row["bits_stored"] == (12 if t["wrap"] else 16)
            assert row["intercept"] == (0.0 if t["wrap"] else -1024.0)
        # the truncated and header-only files have readable headers but no whole Pixel Data: not indexed
        assert sorted(index.index) == sorted(truth)

    def test_unreadable_files_land_in_skipped_csv_with_reason(self, tiny_index):
        _, _, out = tiny_index
        skipped = read_skipped(out).set_index("image_id")
        assert sorted(skipped.index) == ["ID_badheader0", "ID_headonly00", "ID_missing000", "ID_truncated0"]
        assert skipped.loc["ID_missing000", "reason"].startswith("cannot open file")
        assert "not a DICOM file" in skipped.loc["ID_badheader0", "reason"]
        assert skipped.loc["ID_badheader0", "file"] == f"{TRAIN_DIR}/ID_badheader0.dcm"
        assert skipped.loc["ID_headonly00", "reason"] == "(7FE0,0010) Pixel Data is missing (header only)"
        # 32 x 32 int16 pixels are 2,048 bytes; tiny_rsna cut the last 700 of them
        assert skipped.loc["ID_truncated0", "reason"] == (
            "(7FE0,0010) Pixel Data has 1348 bytes; (0028,0010) Rows x (0028,0011) Columns x "
            "(0028,0100) Bits Allocated need 2048 (file truncated?)")

    def test_identifying_fields_never_stored(self, tiny_index):
        _, index, _ = tiny_index
        forbidden = {"patient_name", "patients_name", "birth_date", "patient_birth_date", "institution_name"}
        assert not forbidden & {c.lower() for c in index.columns}

    def test_killed_run_resumes_reads_only_missing_and_ends_identical(self, tiny, tmp_path, monkeypatch):
        root, _ = tiny
        labels = read_labels(root / TRAIN_CSV)
        full = tmp_path / "full"
        ref = build_index(root, full, labels.index, workers=0, block_size=10, progress=False)
        calls = []
        real = index_mod._read_block

        def dying(block):
            calls.append(len(block))
            if len(calls) == 3:
                raise KeyboardInterrupt  # killed mid-run, after two blocks were written
            return real(block)

        monkeypatch.setattr(index_mod, "_read_block", dying)
        part = tmp_path / "part"
        with pytest.raises(KeyboardInterrupt):
            build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert len(list((part / "parts").glob("part-*.parquet"))) == 2
        assert not (part / "index.parquet").exists()
        monkeypatch.setattr(index_mod, "_read_block", real)
        again = build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert again.attrs["n_read"] == len(labels) - 20
        pd.testing.assert_frame_equal(again, ref)
        assert (part / "index.parquet").read_bytes() == (full / "index.parquet").read_bytes()
        assert (part / "skipped.csv").read_bytes() == (full / "skipped.csv").read_bytes()
        assert not (part / "parts").exists()
        assert build_index(root, part, labels.index, workers=0, progress=False).attrs["n_read"] == 0

    @pytest.mark.slow
    def test_parallel_processes_give_the_same_table(self, tiny, tiny_index, tmp_path):
        root, _ = tiny
        labels, index, out = tiny_index
        par = build_index(root, tmp_path / "par", labels.index, workers=2, block_size=9, progress=False)
        pd.testing.assert_frame_equal(par, index)
        assert (tmp_path / "par" / "skipped.csv").read_bytes() == (out / "skipped.csv").read_bytes()

    def test_missing_root_and_bad_parameters(self, tmp_path):
        with pytest.raises(CacheError, match="no such folder"):
            build_index(tmp_path, tmp_path / "i")
        with pytest.raises(ValueError, match="`block_size` must be > 0. Got 0 instead."):
            build_index(tmp_path, tmp_path / "i", block_size=0)
        with pytest.raises(CacheError, match="no header index here"):
            read_index(tmp_path)


def _slice(image_id: str, *, patient: str = "ID_p0", study: str = "ID_5700", series: str = "ID_5e0", z: float = 0.0,
           hu: float = 40.0) -> bytes:
    return encode_slice(np.full((8, 8), hu), sop_instance_uid=image_id, patient_id=patient,
                        study_instance_uid=study, series_instance_uid=series, z=z)


class TestFilter:
    """Only usable CT slices enter the index; every other file is in skipped.csv with the reason naming its tag."""

    @pytest.fixture(scope="class")
    def junk(self, tmp_path_factory):
        root = tmp_path_factory.mktemp("junk")
        folder = root / TRAIN_DIR
        folder.mkdir()
        good = _slice("ID_good0")
        head_only = good[: good.rindex(b"\xe0\x7f\x10\x00")]
        files = {
            "ID_good0": good,
            "ID_good1": _slice("ID_good1", z=5.0),
            "ID_nospacing": edited(_slice("ID_nospacing", z=10.0), PixelSpacing=None),
            "ID_allpad": _slice("ID_allpad", z=15.0, hu=-2000.0),  # every pixel outside the reconstruction circle
            "ID_mr": edited(good, Modality="MR"),
            "ID_rtdose": Path(get_testdata_file("rtdose.dcm")).read_bytes(),  # pydicom's RT Dose file
            "ID_headonly": head_only,
            "ID_rgb": edited(good, SamplesPerPixel=3, PhotometricInterpretation="RGB"),
            "ID_frames": edited(good, NumberOfFrames=4),
            "ID_noposition": edited(good, ImagePositionPatient=None),
        }
        for image_id, data in files.items():
            (folder / f"{image_id}.dcm").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(io.BytesIO(good))  # a Rescale Slope that is text, not a number
            ds.add_new(0x00281053, "LO", "abc")
            ds.save_as(folder / "ID_slopeabc.dcm", enforce_file_format=True)
        out = root / "index"
        with pytest.warns(RuntimeWarning, match=r"index: 1 indexed slice\(s\) have no \(0028,0030\) Pixel Spacing"):
            index = build_index(root, out, workers=0, progress=False)
        return index, out

    def test_only_usable_ct_slices_are_indexed(self, junk):
        index, _ = junk
        assert sorted(index.index) == ["ID_allpad", "ID_good0", "ID_good1", "ID_nospacing"]
        assert np.isnan(index.loc["ID_nospacing", "spacing_row"]) and index.loc["ID_good0", "spacing_row"] == 0.488

    def test_every_other_file_is_skipped_with_the_tag_at_fault(self, junk):
        _, out = junk
        reasons = read_skipped(out).set_index("image_id")["reason"].to_dict()
        assert reasons == {
            "ID_mr": "(0008,0060) Modality is 'MR'; expected 'CT'",
            "ID_rtdose": "(0008,0060) Modality is 'RTDOSE'; expected 'CT'",
            "ID_headonly": "(7FE0,0010) Pixel Data is missing (header only)",
            "ID_rgb": "(0028,0004) Photometric Interpretation is 'RGB' with (0028,0002) Samples per Pixel 3; "
                      "a CT slice is monochrome",
            "ID_frames": "(0028,0008) Number of Frames is 4; expected one slice per file",
            "ID_noposition": "(0020,0032) Image Position (Patient) missing or unparsable",
            "ID_slopeabc": "(0028,1053) Rescale Slope is 'abc'; not a number",
        }

    def test_run_record_counts_the_kept_degenerate_slices(self, junk):
        _, out = junk
        record = json.loads((out / "index.json").read_text())
        assert (record["n_indexed"], record["n_skipped"], record["n_without_pixel_spacing"]) == (4, 7, 1)
        assert record["format"] == INDEX_FORMAT


MRN, STUDY_UID, SERIES_UID = "MRN123456", "1.2.840.113619.2.55.3.4242", "1.2.840.113619.2.55.3.4242.7"


def _hospital_dataset(root: Path) -> None:
    """Four patients of a non-RSNA dataset: MRN-like Patient IDs and real-looking UIDs (one a traversal)."""
    folder = root / TRAIN_DIR
    folder.mkdir(parents=True)
    pids = [MRN, "MRN000042", "../../../escape/x", "ID_0abc"]  # the last is RSNA's form: passes through
    for p, pid in enumerate(pids):
        for k in range(3):
            image_id = f"ID_{p}{k}0f"
            (folder / f"{image_id}.dcm").write_bytes(encode_slice(
                np.full((8, 8), 40.0), sop_instance_uid=image_id, patient_id=pid,
                study_instance_uid=f"{STUDY_UID}.{p}" if p else STUDY_UID,
                series_instance_uid=f"{SERIES_UID}.{p}" if p else SERIES_UID, z=5.0 * k))


def _expected(key: bytes, kind: str, value: str, prefix: str) -> str:
    """The pseudonym as the module docstring of brain_audit.ids defines it, computed here with hmac."""
    return f"{prefix}_" + hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]


class TestPseudonyms:
    @pytest.fixture(scope="class")
    def hospital(self, tmp_path_factory):
        root = tmp_path_factory.mktemp("hospital")
        _hospital_dataset(root)
        return root

    def test_index_stores_keyed_pseudonyms_never_the_header_values(self, hospital, tmp_path):
        out = tmp_path / "index"
        index = build_index(hospital, out, workers=0, progress=False)
        key = (out / "pseudonym.key").read_bytes()
        assert len(key) == 32 and stat.S_IMODE((out / "pseudonym.key").stat().st_mode) == 0o600
        assert set(index.loc[["ID_000f", "ID_010f", "ID_020f"], "patient_id"]) == {
            _expected(key, "patient", MRN, "PID")}
        assert index.loc["ID_000f", "study_id"] == _expected(key, "study", STUDY_UID, "STU")
        assert index.loc["ID_000f", "series_id"] == _expected(key, "series", SERIES_UID, "SER")
        assert index.loc["ID_200f", "patient_id"] == _expected(key, "patient", "../../../escape/x", "PID")
        assert index.loc["ID_300f", "patient_id"] == "ID_0abc"  # RSNA's pseudonyms as written
        assert index["patient_id"].nunique() == 4

    def test_no_identifier_reaches_any_byte_of_the_index_the_cohort_or_the_cache(self, hospital, tmp_path):
        out = tmp_path / "index"
        index = build_index(hospital, out, workers=0, progress=False)
        labels = pd.DataFrame(0, index=pd.Index(index.index, name="image_id"), columns=list(LABEL_COLUMNS),
                              dtype=np.int8)
        cohort, patients = plan_cohorts(join_images(labels, index), [CohortSpec("phase2", 6, None)], n_audit=1,
                                        validation=0.0, seed=0)
        write_cohorts(tmp_path / "cohort", cohort, patients, seed=0)
        build_cache(tmp_path / "cohort" / "cohort.csv", hospital, tmp_path / "cache", size=8, workers=0,
                    progress=False)
        files = [p for d in ("index", "cohort", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"index.parquet", "skipped.csv", "index.json", "pseudonym.key",
                                           "cohort.csv", "patients.csv", "cohort.json", "images.parquet",
                                           "manifest.json"}
        for p in files:
            data = p.read_bytes()
            for secret in (MRN, "MRN000042", "escape", STUDY_UID, SERIES_UID):
                assert secret.encode() not in data, (p.name, secret)

    def test_same_key_same_pseudonyms_new_folder_new_ones(self, hospital, tmp_path):
        a = build_index(hospital, tmp_path / "a", workers=0, progress=False)
        for name in ("index.parquet", "skipped.csv", "index.json"):  # keep only the key
            (tmp_path / "a" / name).unlink()
        again = build_index(hospital, tmp_path / "a", workers=0, progress=False)
        assert again.attrs["n_read"] == 12
        pd.testing.assert_frame_equal(again.drop(columns="fingerprint"), a.drop(columns="fingerprint"))
        b = build_index(hospital, tmp_path / "b", workers=0, progress=False)
        assert b.loc["ID_000f", "patient_id"] != a.loc["ID_000f", "patient_id"]
        assert b.loc["ID_300f", "patient_id"] == a.loc["ID_300f", "patient_id"] == "ID_0abc"

    def test_a_lost_key_reads_everything_again_under_the_new_one(self, hospital, tmp_path):
        out = tmp_path / "i"
        build_index(hospital, out, workers=0, progress=False)
        (out / "pseudonym.key").unlink()
        with pytest.warns(RuntimeWarning, match="not pseudonyms of this folder's pseudonym.key; reading every file"):
            again = build_index(hospital, out, workers=0, progress=False)
        key = (out / "pseudonym.key").read_bytes()
        assert again.attrs["n_read"] == 12
        assert again.loc["ID_000f", "patient_id"] == _expected(key, "patient", MRN, "PID")

    def test_a_damaged_key_is_refused(self, hospital, tmp_path):
        (tmp_path / "i").mkdir()
        (tmp_path / "i" / "pseudonym.key").write_bytes(b"short")
        with pytest.raises(CacheError, match=r"`pseudonym.key` must hold 32 bytes. Got 5 instead"):
            build_index(hospital, tmp_path / "i", workers=0, progress=False)


class TestIdsAreData:
    def test_unsafe_image_ids_are_skipped_unread(self, tiny, tmp_path, monkeypatch):
        root, truth = tiny
        good = sorted(truth)[:2]
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.dcm").write_bytes((root / TRAIN_DIR / f"{good[0]}.dcm").read_bytes())  # a valid CT
        opened = []
        real = index_mod.read_header
        monkeypatch.setattr(index_mod, "read_header", lambda path: opened.append(str(path)) or real(path))
        bad = [os.path.relpath(outside / "secret", root / TRAIN_DIR), str(outside / "secret"), "..", ".hidden"]
        index = build_index(root, tmp_path / "i", good + bad, workers=0, progress=False)
        assert sorted(index.index) == good
        assert sorted(Path(p).name for p in opened) == sorted(f"{i}.dcm" for i in good)
        skipped = read_skipped(tmp_path / "i").set_index("image_id")
        assert sorted(skipped.index) == sorted(bad)
        for b in bad:
            assert skipped.loc[b, "reason"] == (
                "`image_id` must be an ID of 1 to 128 letters, digits, '_', '-' and '.', not starting with '.' "
                f"and without '..' or a path separator. Got {b!r} instead.")
            assert skipped.loc[b, "file"] == ""

    def test_stale_part_files_of_a_killed_run_are_removed(self, tiny, tmp_path):
        root, truth = tiny
        ids = sorted(truth)[:3]
        out = tmp_path / "i"
        (out / "parts").mkdir(parents=True)
        stale = [out / "parts" / ".part-0a.parquet.x1y2.part", out / ".index.parquet.k3j4.part"]
        for p in stale:
            p.write_bytes(b"half a file")
        build_index(root, out, ids, workers=0, progress=False)
        assert not any(p.exists() for p in stale)
        assert sorted(p.name for p in out.iterdir()) == ["index.json", "index.parquet", "pseudonym.key",
                                                         "skipped.csv"]

    def test_an_index_of_other_rules_is_read_again(self, tiny, tmp_path):
        root, truth = tiny
        ids = sorted(truth)[:3] + ["ID_headonly00"]
        out = tmp_path / "i"
        build_index(root, out, ids, workers=0, progress=False)
        record = json.loads((out / "index.json").read_text())
        del record["format"]  # as written before the index had a format
        (out / "index.json").write_text(json.dumps(record))
        again = build_index(root, out, ids, workers=0, progress=False)
        assert again.attrs["n_read"] == 4 and sorted(again.index) == sorted(truth)[:3]
        assert build_index(root, out, ids, workers=0, progress=False).attrs["n_read"] == 0
