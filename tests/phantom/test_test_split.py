"""brain_audit.phantom.cohort's test split: Kaggle's ``stage_2_test`` folder and sample submission, the
hidden labels kept under ``phantom_truth/``, and training files that do not depend on the split.

Expected values come from outside the writer: the folder listing, the Kaggle sample-submission format
(``ID,Label``, six rows per test image in the RSNA column order, every value 0.5) read with pandas, the
DICOM files read back with ``brain_audit.dicom.read_hu``, and SHA-256 hashes of the training files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_audit import rsna
from brain_audit.cli import main
from brain_audit.dicom import read_hu
from brain_audit.errors import BrainAuditError, ConfigError
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.render import render_image, render_slice
from brain_audit.phantom.truth import (
    MANIFEST,
    TEST_LABELS,
    TEST_MANIFEST,
    TRUTH_DIR,
    load_manifest,
    load_test_manifest,
    load_truth,
)

BASE = {"patients": 2, "slices_per_patient": 4, "size": 64, "seed": 3, "prevalence": 0.5, "corrupt_files": 1}


def _hashes(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for name in names for p in sorted((root / name).rglob("*")) + [root / name] if p.is_file()}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[Path, Path]:
    """The same cohort without a test split and with 2 test patients (written by 2 worker processes)."""
    tmp = tmp_path_factory.mktemp("split")
    generate_cohort(tmp / "none", PhantomConfig(**BASE), workers=1, progress=False)
    generate_cohort(tmp / "two", PhantomConfig(**BASE, test_patients=2), workers=2, progress=False)
    return tmp / "none", tmp / "two"


def _test_ids(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / rsna.TEST_DIR).iterdir())


class TestTestSplit:
    def test_training_files_do_not_depend_on_the_split(self, cohorts):
        none, two = cohorts
        train = (rsna.TRAIN_DIR, rsna.TRAIN_CSV)
        assert _hashes(none, train) == _hashes(two, train)
        assert len(_hashes(none, train)) == 2 * 4 + 1 + 1
        masks_none = {p.name for p in (none / TRUTH_DIR).iterdir()}
        assert masks_none <= {p.name for p in (two / TRUTH_DIR).iterdir()}
        for name in masks_none:
            assert (none / TRUTH_DIR / name).read_bytes() == (two / TRUTH_DIR / name).read_bytes()
        assert not (none / rsna.TEST_DIR).exists() and not (none / rsna.SAMPLE_SUBMISSION).exists()
        # without a split the manifest records the parameters it recorded before the split existed
        assert "test_patients" not in load_manifest(none)["parameters"]
        assert load_manifest(two)["parameters"]["test_patients"] == 2

    def test_test_images_are_readable_and_disjoint_from_train(self, cohorts):
        _, two = cohorts
        test_ids = _test_ids(two)
        assert len(test_ids) == 2 * 4
        man = load_manifest(two)
        train_records = man["images"] + man["corrupt"]
        assert not set(test_ids) & {r["image_id"] for r in train_records}
        test_man = json.loads((two / TRUTH_DIR / TEST_MANIFEST).read_text())
        assert sorted(r["image_id"] for r in test_man["images"]) == test_ids
        for key in ("patient_id", "study_instance_uid", "series_instance_uid"):
            assert not {r[key] for r in test_man["images"]} & {r[key] for r in man["images"]}
        assert {r["patient_index"] for r in test_man["images"]} == {2, 3}
        for rec in test_man["images"][:2] + test_man["images"][-2:]:
            hu = read_hu(rsna.image_path(two, rec["image_id"], rsna.TEST_DIR))
            assert hu.shape == (64, 64) and hu.dtype == np.float32
            expected, truth = render_slice(PhantomConfig(**BASE, test_patients=2), rec["patient_index"],
                                           rec["slice_index"])
            if not rec["defect"]:
                np.testing.assert_array_equal(hu, expected)
                np.testing.assert_array_equal(render_image(two, rec["image_id"])[0], hu)
            stored = load_truth(two, rec["image_id"])
            assert all(np.array_equal(stored[k], truth[k]) for k in rsna.SUBTYPES)
            assert rec["labels"]["any"] == int(any(stored[s].any() for s in rsna.SUBTYPES))

    def test_sample_submission_is_kaggles_format(self, cohorts):
        _, two = cohorts
        sub = pd.read_csv(two / rsna.SAMPLE_SUBMISSION)
        assert list(sub.columns) == ["ID", "Label"]
        expected = [f"{i}_{c}" for i in _test_ids(two) for c in rsna.LABEL_COLUMNS]
        assert sub["ID"].tolist() == expected
        assert (sub["Label"] == 0.5).all()
        assert (two / rsna.SAMPLE_SUBMISSION).read_text().splitlines()[1] == f"{_test_ids(two)[0]}_epidural,0.5"

    def test_test_labels_only_under_phantom_truth(self, cohorts):
        _, two = cohorts
        labels = pd.read_csv(two / TRUTH_DIR / TEST_LABELS)
        assert list(labels.columns) == ["ID", "Label"]
        assert labels["ID"].tolist() == [f"{i}_{c}" for i in _test_ids(two) for c in rsna.LABEL_COLUMNS]
        test_man = json.loads((two / TRUTH_DIR / TEST_MANIFEST).read_text())
        by_id = {r["image_id"]: r["labels"] for r in test_man["images"]}
        for row in labels.itertuples():
            image, label = row.ID.rsplit("_", 1)
            assert row.Label == by_id[image][label]
        test_ids = set(_test_ids(two))
        # no file outside phantom_truth/ names a test image together with a label
        for path in two.iterdir():
            if path.is_file() and path.name not in (rsna.SAMPLE_SUBMISSION,):
                assert not any(i in path.read_text() for i in test_ids), path.name
        assert set(pd.read_csv(two / rsna.TRAIN_CSV)["ID"].str.rsplit("_", n=1).str[0]).isdisjoint(test_ids)
        counts = load_manifest(two)["counts"]
        assert counts["test_images"] == 8 and counts["test_patients"] == 2 and counts["images"] == 8
        assert (two / MANIFEST).is_file()

    def test_test_records_load_only_where_there_is_a_split(self, cohorts):
        none, two = cohorts
        assert load_test_manifest(two)["counts"]["test_images"] == 8
        with pytest.raises(BrainAuditError, match="no test-split records"):
            load_test_manifest(none)
        with pytest.raises(BrainAuditError, match="not a readable image"):
            render_image(none, _test_ids(two)[0])

    def test_rerun_checks_the_test_files(self, cohorts, tmp_path):
        cfg = PhantomConfig(**BASE, test_patients=2)
        out = tmp_path / "c"
        first = generate_cohort(out, cfg, workers=1, progress=False)
        assert first["test_images"] == 8 and not first["skipped"]
        again = generate_cohort(out, cfg, workers=1, progress=False)
        assert again["skipped"] and again["test_images"] == 8
        (out / rsna.TEST_DIR / f"{_test_ids(out)[0]}.dcm").unlink()
        with pytest.raises(ConfigError, match="not a complete cohort"):
            generate_cohort(out, cfg, workers=1, progress=False)
        with pytest.raises(ConfigError, match="`test_patients` must be an integer >= 0. Got -1 instead."):
            PhantomConfig(**BASE, test_patients=-1)


def test_cli_test_patients(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["phantom", "--out", str(out), "--patients", "2", "--slices-per-patient", "3", "--size", "64",
                 "--test-patients", "1", "--workers", "1", "--no-progress"]) == 0
    assert "test split: 3 slices of 1 patients" in capsys.readouterr().out
    assert len(list((out / rsna.TEST_DIR).iterdir())) == 3
    assert len(pd.read_csv(out / rsna.SAMPLE_SUBMISSION)) == 18
