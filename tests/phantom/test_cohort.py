"""brain_audit.phantom.cohort: the RSNA layout a phantom cohort is written in, its labels, the DICOM files
read back, determinism and the ``phantom`` command.

Expected values come from outside the generator: the RSNA layout and label-file format, the truth
masks written beside each slice and the HU rendered in memory.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from brain_audit import rsna
from brain_audit.cli import main
from brain_audit.dicom import read_header, read_hu
from brain_audit.errors import ConfigError, DicomReadError
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.lesions import MIMICS
from brain_audit.phantom.render import render_image
from brain_audit.phantom.truth import load_manifest, load_truth
from support.phantom_cohort import COHORT


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv_labels(root: Path) -> dict[str, dict[str, int]]:
    with open(root / rsna.TRAIN_CSV, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    out: dict[str, dict[str, int]] = {}
    body = rows[1:]
    assert len(body) % 6 == 0
    for i in range(0, len(body), 6):
        block = body[i:i + 6]
        image = block[0][0].rsplit("_", 1)[0]
        # six rows per image, in the RSNA column order
        assert [r[0] for r in block] == [f"{image}_{c}" for c in rsna.LABEL_COLUMNS]
        out[image] = {c: int(r[1]) for c, r in zip(rsna.LABEL_COLUMNS, block, strict=True)}
    return out


class TestLayout:
    def test_files_csv_and_manifest(self, cohort):
        man = load_manifest(cohort)
        images = man["images"]
        assert len(images) == COHORT.images == 60
        assert len(man["corrupt"]) == 2
        files = sorted(p.name for p in (cohort / rsna.TRAIN_DIR).iterdir())
        expected = sorted(f"{r['image_id']}.dcm" for r in images + man["corrupt"])
        assert files == expected
        assert all(re.fullmatch(r"ID_[0-9a-f]{9}", r["image_id"]) for r in images + man["corrupt"])
        assert sorted(p.name for p in (cohort / "phantom_truth").iterdir()) == sorted(
            f"{r['image_id']}.npz" for r in images)
        labels = _csv_labels(cohort)
        # corrupt files are listed in the CSV as RSNA lists its unreadable ID_6431af929
        assert set(labels) == {r["image_id"] for r in images + man["corrupt"]}
        for r in images:
            assert labels[r["image_id"]] == r["labels"]
        assert man["parameters"] == COHORT.to_dict()
        assert man["generator"]["version"]
        assert PhantomConfig(**man["parameters"]) == COHORT

    def test_dicom_headers_are_rsna_like_and_studies_contiguous(self, cohort):
        man = load_manifest(cohort)
        by_patient: dict[str, list] = {}
        for r in man["images"]:
            path = rsna.image_path(cohort, r["image_id"])
            h = read_header(path)
            assert h["modality"] == "CT"
            assert h["sop_instance_uid"] == r["image_id"]
            assert h["patient_id"] == r["patient_id"] and re.fullmatch(r"ID_[0-9a-f]{8}", h["patient_id"])
            assert h["study_instance_uid"] == r["study_instance_uid"]
            assert h["series_instance_uid"] == r["series_instance_uid"]
            assert (h["rows"], h["columns"]) == (128, 128)
            assert h["pixel_spacing"] == pytest.approx((250 / 128, 250 / 128))
            assert h["bits_stored"] == (12 if r["defect"] else 16)
            by_patient.setdefault(h["patient_id"], []).append((r["slice_index"], h["z"]))
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for identifying in ("PatientName", "PatientBirthDate", "StudyDate", "InstitutionName"):
                assert identifying not in ds
        assert len(by_patient) == COHORT.patients
        for slices in by_patient.values():
            z = [zz for _, zz in sorted(slices)]
            assert np.allclose(np.diff(z), COHORT.slice_spacing_mm)


class TestLabels:
    def test_labels_are_the_truth_masks(self, cohort):
        man = load_manifest(cohort)
        positives = 0
        for r in man["images"]:
            truth = load_truth(cohort, r["image_id"])
            for s in rsna.SUBTYPES:
                assert r["labels"][s] == int(truth[s].any()), (r["image_id"], s)
            assert r["labels"]["any"] == max(r["labels"][s] for s in rsna.SUBTYPES)
            assert sorted(r["mimics"]) == sorted(m for m in MIMICS if truth[m].any())
            positives += r["labels"]["any"]
        assert 0 < positives < len(man["images"])

    def test_lesions_span_neighbouring_slices_and_change_size(self, cohort):
        man = load_manifest(cohort)
        runs = []
        for p in range(COHORT.patients):
            recs = sorted((r for r in man["images"] if r["patient_index"] == p), key=lambda r: r["slice_index"])
            for s in rsna.SUBTYPES:
                on = [r["slice_index"] for r in recs if r["labels"][s]]
                if len(on) >= 2:
                    areas = [load_truth(cohort, recs[k]["image_id"])[s].sum() for k in on]
                    runs.append((on, areas))
        assert runs, "no lesion spans two slices"
        for on, _ in runs:
            assert on == list(range(on[0], on[-1] + 1)), on  # contiguous
        assert any(len(set(areas)) > 1 for _, areas in runs)

    def test_patient_and_slice_labels_differ(self, cohort):
        man = load_manifest(cohort)
        bleed = [p for p in man["patients"] if p["bleed"]]
        assert bleed
        for p in bleed:
            recs = [r for r in man["images"] if r["patient_id"] == p["patient_id"]]
            assert any(r["labels"]["any"] for r in recs)
        assert any(not r["labels"]["any"] for p in bleed for r in man["images"] if r["patient_id"] == p["patient_id"])


class TestReadBack:
    def test_read_hu_gives_the_rendered_hu(self, cohort):
        man = load_manifest(cohort)
        defects = 0
        for r in man["images"]:
            hu = read_hu(rsna.image_path(cohort, r["image_id"]))
            rendered, _ = render_image(cohort, r["image_id"])
            assert rendered.dtype == np.float32 and np.array_equal(rendered, np.rint(rendered))
            expected = np.clip(rendered, -1000, 3095) if r["defect"] else rendered
            np.testing.assert_array_equal(hu, expected, err_msg=r["image_id"])
            defects += r["defect"]
        assert 0 < defects < len(man["images"])

    def test_padding_outside_the_reconstruction_circle(self, cohort):
        r = next(r for r in load_manifest(cohort)["images"] if not r["defect"])
        ds = pydicom.dcmread(rsna.image_path(cohort, r["image_id"]))
        hu_file = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        assert hu_file[0, 0] == -3024 and hu_file[-1, -1] == -3024  # corners: padding as stored
        assert read_hu(rsna.image_path(cohort, r["image_id"]))[0, 0] == -1024  # read as air

    def test_corrupt_files_raise_with_the_file_name(self, cohort):
        man = load_manifest(cohort)
        kinds = {c["kind"]: c for c in man["corrupt"]}
        assert set(kinds) == {"truncated", "header_only"}
        with pytest.raises(DicomReadError, match=rf"^{kinds['truncated']['image_id']}\.dcm: .*file truncated"):
            read_hu(rsna.image_path(cohort, kinds["truncated"]["image_id"]))
        with pytest.raises(DicomReadError, match=rf"^{kinds['header_only']['image_id']}\.dcm: .*header only"):
            read_hu(rsna.image_path(cohort, kinds["header_only"]["image_id"]))


class TestDeterminism:
    CFG = PhantomConfig(patients=3, slices_per_patient=3, size=64, seed=21, prevalence=0.7, defect_fraction=0.3,
                        corrupt_files=1)

    def _hashes(self, root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}

    def test_same_seed_same_bytes_any_worker_count(self, tmp_path):
        generate_cohort(tmp_path / "a", self.CFG, workers=1, progress=False)
        generate_cohort(tmp_path / "b", self.CFG, workers=2, progress=False)
        a, b = self._hashes(tmp_path / "a"), self._hashes(tmp_path / "b")
        assert len(a) == 2 * 9 + 1 + 2 and a == b

    def test_other_seed_other_files(self, tmp_path):
        generate_cohort(tmp_path / "a", self.CFG, workers=1, progress=False)
        other = PhantomConfig(**{**self.CFG.to_dict(), "seed": 22})
        generate_cohort(tmp_path / "b", other, workers=1, progress=False)
        da = {_sha(p) for p in (tmp_path / "a" / rsna.TRAIN_DIR).iterdir()}
        db = {_sha(p) for p in (tmp_path / "b" / rsna.TRAIN_DIR).iterdir()}
        assert not da & db

    def test_rerun_skips_same_cohort_and_refuses_another(self, tmp_path):
        generate_cohort(tmp_path, self.CFG, workers=1, progress=False)
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        again = generate_cohort(tmp_path, self.CFG, workers=1, progress=False)
        assert again["skipped"] and again["images"] == 9
        assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        other = PhantomConfig(**{**self.CFG.to_dict(), "seed": 22})
        with pytest.raises(ConfigError, match="already holds phantom output"):
            generate_cohort(tmp_path, other, workers=1, progress=False)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["phantom", "--out", str(out), "--patients", "2", "--slices-per-patient", "3", "--size", "64",
            "--seed", "5", "--shortcut", "coil:0.5,0.1", "--corrupt", "1", "--workers", "1", "--no-progress",
            "--preview"]
    assert main(args) == 0
    man = load_manifest(out)
    assert man["parameters"]["mimic_probabilities"]["coil"] == [0.5, 0.1]
    assert man["counts"]["images"] == 6 and man["counts"]["corrupt_files"] == 1
    assert (out / "phantom_preview.png").is_file()
    assert "6 slices of 2 patients" in capsys.readouterr().out
    assert main(args[:-1]) == 0 and "nothing written" in capsys.readouterr().out
    assert main(["phantom", "--out", str(out), "--patients", "2", "--seed", "6", "--no-progress"]) == 2
    assert "already holds phantom output" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "x"), "--patients", "2", "--shortcut", "coil:0.3"]) == 2
