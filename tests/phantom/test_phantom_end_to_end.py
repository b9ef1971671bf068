"""A phantom cohort through the data pipeline (labels, header index, cohorts, HU cache, batches), from
Python and from the command line; the expected HU are read back with brain_audit.dicom.read_hu."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brain_audit.dataset.cache import build_cache, open_cache
from brain_audit.dataset.cohort import CohortSpec, join_images, plan_cohorts, read_cohort
from brain_audit.dataset.index import build_index
from brain_audit.dataset.labels import read_labels
from brain_audit.rsna import TRAIN_CSV, TRAIN_DIR


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:no positive case:RuntimeWarning", "ignore:balance 0.5 asks:RuntimeWarning")
class TestPhantomEndToEnd:
    @pytest.fixture(scope="class")
    def phantom(self, tmp_path_factory):
        phantom = pytest.importorskip("brain_audit.phantom")
        root = tmp_path_factory.mktemp("phantom")
        summary = phantom.generate_cohort(root, phantom.PhantomConfig(
            patients=6, slices_per_patient=6, size=64, corrupt_files=2, seed=3), workers=1, progress=False)
        return root, summary, json.loads((root / "phantom_manifest.json").read_text())

    def test_python_path_labels_index_cohort_cache_batches(self, phantom, tmp_path):
        from brain_audit.dataset.feed import make_feed
        from brain_audit.dicom import read_hu

        root, summary, manifest = phantom
        labels = read_labels(root / TRAIN_CSV)
        assert len(labels) == summary["images"] + summary["corrupt_files"]
        index = build_index(root, tmp_path / "index", labels.index, workers=0, progress=False)
        images = join_images(labels, index)
        cohort, patients = plan_cohorts(images, [CohortSpec("phase2", 24, 0.5), CohortSpec("phase1", 2, None, "patient")],
                                        n_audit=1, validation=0.25, seed=0)
        assert set(cohort[cohort["in_phase1"]].index) <= set(cohort[cohort["in_phase2"]].index)
        cache = build_cache(cohort, root, tmp_path / "cache", size=64, workers=0, progress=False)
        # each corrupt phantom file is recorded with a reason by the index or the cache, never dropped silently
        recorded = set(index.attrs["skipped"]["image_id"]) | set(cache.skipped["image_id"])
        for bad in manifest["corrupt"]:
            assert bad["image_id"] in recorded or bad["image_id"] not in cohort.index
        ids = cache.ids("train")
        ds = make_feed(tmp_path / "cache", "train", 5, labels="six", shuffle=False)
        hu = np.concatenate([b[0].numpy() for b in ds])
        y = np.concatenate([b[1].numpy() for b in ds])
        np.testing.assert_array_equal(y, labels.loc[ids].to_numpy(np.float32))
        k = len(ids) // 2
        ref = np.rint(read_hu(root / TRAIN_DIR / f"{ids[k]}.dcm"))
        np.testing.assert_array_equal(hu[k, ..., 0], ref)
        audit = set(patients.index[patients["split"] == "audit"])
        assert not audit & set(cache.table.loc[cache.ids("train"), "patient_id"])

    def test_cli_path(self, phantom, tmp_path, capsys):
        from brain_audit.cli import main

        root, summary, _ = phantom
        w = tmp_path
        assert main(["index", str(root), "--out", str(w / "index"), "--workers", "2", "--quiet"]) == 0
        assert main(["cohort", str(root), "--index", str(w / "index"), "--out", str(w / "cohort"),
                     "--cohort", "phase2:20:0.5", "--cohort", "phase1:8", "--n-audit", "1", "--seed", "1"]) == 0
        assert main(["cache", str(root), "--cohort", str(w / "cohort"), "--out", str(w / "cache"),
                     "--size", "32", "--workers", "0", "--quiet"]) == 0
        assert main(["feed", str(w / "cache"), "--split", "train", "--batch-size", "4", "--augment"]) == 0
        out = capsys.readouterr().out
        assert "hu float32 (4, 32, 32, 1)" in out
        cohort = read_cohort(w / "cohort")
        cache = open_cache(w / "cache", size=32)
        assert set(cache.table.index) | set(cache.skipped["image_id"]) == set(cohort.index)
