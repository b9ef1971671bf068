"""The phantom's truth files are in the dataset mask format (brain_audit.dataset.masks).

The reference for every mask is the in-memory render of the same slice (render_image) and
numpy's own ``savez_compressed`` / ``np.load``; the file bytes must not depend on the run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from brain_audit import rsna
from brain_audit.dataset.masks import MASK_DIR, has_masks, lesion_mask, read_masks
from brain_audit.phantom import MIMICS, TRUTH_DIR, TRUTH_KEYS, PhantomConfig, generate_cohort, load_manifest
from brain_audit.phantom.render import render_image

CFG = PhantomConfig(patients=3, slices_per_patient=6, size=64, seed=13, prevalence=1.0, corrupt_files=1,
                    mimic_probabilities={m: (0.5, 0.5) for m in MIMICS})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("truth_format")
    generate_cohort(out, CFG, workers=1, progress=False)
    return out


def test_truth_folder_is_the_dataset_mask_folder(cohort):
    assert TRUTH_DIR == MASK_DIR == "phantom_truth"
    assert has_masks(cohort)
    man = load_manifest(cohort)
    assert man["layout"]["truth_dir"] == "phantom_truth"
    assert sorted(p.name for p in (cohort / MASK_DIR).iterdir()) == sorted(f"{r['image_id']}.npz"
                                                                          for r in man["images"])


def test_files_hold_the_rendered_masks(cohort):
    man = load_manifest(cohort)
    bleeding = 0
    for rec in man["images"]:
        _, rendered = render_image(cohort, rec["image_id"])
        masks = read_masks(cohort, rec["image_id"])
        assert tuple(masks) == TRUTH_KEYS
        with np.load(cohort / MASK_DIR / f"{rec['image_id']}.npz") as z:  # numpy's reader agrees
            assert z.files == list(TRUTH_KEYS)
            for key in TRUTH_KEYS:
                assert masks[key].dtype == np.dtype(bool)
                np.testing.assert_array_equal(masks[key], rendered[key], err_msg=f"{rec['image_id']} {key}")
                np.testing.assert_array_equal(z[key], rendered[key])
        union = np.logical_or.reduce([rendered[s] for s in rsna.SUBTYPES])
        np.testing.assert_array_equal(lesion_mask(masks), union)
        assert union.any() == bool(rec["labels"]["any"])
        bleeding += rec["labels"]["any"]
    assert bleeding > 0


def test_same_arrays_as_savez_compressed(cohort, tmp_path):
    image_id = load_manifest(cohort)["images"][2]["image_id"]
    masks = read_masks(cohort, image_id)
    np.savez_compressed(tmp_path / "ref.npz", **masks)
    with np.load(tmp_path / "ref.npz") as ref:
        for key in TRUTH_KEYS:
            np.testing.assert_array_equal(masks[key], ref[key])


def test_fixed_timestamps_and_same_bytes_on_a_second_run(cohort, tmp_path):
    again = tmp_path / "again"
    generate_cohort(again, CFG, workers=1, progress=False)
    names = sorted(p.name for p in (cohort / MASK_DIR).iterdir())
    for name in names:
        a, b = (cohort / MASK_DIR / name).read_bytes(), (again / MASK_DIR / name).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), name
    with zipfile.ZipFile(cohort / MASK_DIR / names[0]) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


class TestTrainingReadsTheMasks:
    """Phase 3 and the audit take lesion masks from the dataset format, never from brain_audit.phantom."""

    def test_lesions_at_cache_resolution(self, cohort):
        from brain_audit.audit.attention_audit import truth_lesions

        man = load_manifest(cohort)
        ids = [r["image_id"] for r in man["images"]] + [man["corrupt"][0]["image_id"]]  # the corrupt file has none
        lesions = truth_lesions(cohort, ids, 32)
        assert set(lesions) == set(ids[:-1])
        for image_id in ids[:-1]:
            _, rendered = render_image(cohort, image_id)
            union = np.logical_or.reduce([rendered[s] for s in rsna.SUBTYPES])
            # nearest-neighbour halving of a 64 x 64 mask keeps every second pixel
            np.testing.assert_array_equal(lesions[image_id], union[::2, ::2], err_msg=image_id)
        assert any(v.any() for v in lesions.values())

    def test_no_mask_folder_and_unreadable_files(self, tmp_path):
        from brain_audit.audit.attention_audit import truth_lesions

        assert truth_lesions(tmp_path, ["ID_1"], 16) is None
        (tmp_path / MASK_DIR).mkdir()
        (tmp_path / MASK_DIR / "ID_1.npz").write_bytes(b"garbage")
        with pytest.warns(RuntimeWarning, match=r"ID_1\.npz: not a mask file .*audited without its lesion mask"):
            assert truth_lesions(tmp_path, ["ID_1", "ID_2"], 16) == {}

    def test_training_and_audit_do_not_import_the_phantom(self):
        code = ("import sys, brain_audit.train.phases, brain_audit.audit, brain_audit.gradcam, brain_audit.model, "
                "brain_audit.dataset; print(sorted(m for m in sys.modules if m.startswith('brain_audit.phantom')))")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                             cwd=Path(__file__).resolve().parents[2])
        assert out.stdout.strip() == "[]"
