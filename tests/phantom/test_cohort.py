"""Tests of brain_audit.phantom: the RSNA layout, truth, HU realism, determinism, shortcuts, counterfactuals.

Expected HU ranges come from outside the generator: the literature values and the measured real
head CT of the issue (intracranial p5 / p95 12 / 43 HU, skull median ~750 HU, acute blood 50-90,
chronic subdural 0-30, calcifications 100-400, air about -1,000).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from brain_audit import rsna
from brain_audit.cli import main
from brain_audit.dicom import read_header, read_hu
from brain_audit.errors import BrainAuditError, ConfigError, DicomReadError
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import DEFAULT_MIMIC_PROBABILITIES, PhantomConfig, parse_shortcut
from brain_audit.phantom.lesions import MIMICS
from brain_audit.phantom.render import preview, render_counterfactual, render_image, render_slice
from brain_audit.phantom.truth import TRUTH_KEYS, load_manifest, load_truth

COHORT = PhantomConfig(
    patients=6, slices_per_patient=10, size=128, seed=11, prevalence=0.7, defect_fraction=0.25, corrupt_files=2,
    mimic_probabilities={m: (0.3, 0.3) for m in MIMICS},
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    generate_cohort(out, COHORT, workers=1, progress=False)
    return out


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

    def test_truth_files(self, cohort):
        image_id = load_manifest(cohort)["images"][3]["image_id"]
        truth = load_truth(cohort, image_id)
        assert tuple(truth) == TRUTH_KEYS
        assert all(v.dtype == bool and v.shape == (128, 128) for v in truth.values())
        assert truth["head"].sum() > truth["intracranial"].sum() > 0
        assert not (truth["skull"] & truth["intracranial"]).any()
        with pytest.raises(BrainAuditError, match=r"^ID_000000000\.npz: no masks for ID_000000000 in .*phantom_truth$"):
            load_truth(cohort, "ID_000000000")


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


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q))


class TestRealism:
    """HU per tissue, measured through the truth masks, against the real head CT and the literature."""

    CFG = PhantomConfig(patients=3, slices_per_patient=20, size=512, seed=5, prevalence=0.0)  # the reference's grid

    def test_anatomy_hu(self):
        for p in range(self.CFG.patients):
            hu, t = render_slice(self.CFG, p, 12)  # supratentorial, ventricle bodies
            ic = hu[t["intracranial"]]
            assert 0 <= _pct(ic, 5) <= 20 and 22 <= _pct(ic, 50) <= 34 and 36 <= _pct(ic, 95) <= 55
            skull = hu[t["skull"]]
            assert 300 <= _pct(skull, 5) <= 650
            assert 600 <= _pct(skull, 50) <= 1000  # partial-volume blurred, not a flat 1,500
            assert 1000 <= _pct(skull, 95) <= 1800  # cortical tables
            scalp = hu[t["head"] & ~t["skull"] & ~t["intracranial"]]
            assert -200 <= _pct(scalp, 25) <= -20 and -80 <= _pct(scalp, 50) <= 45  # fat and skin
            fov = np.hypot(*np.meshgrid(np.arange(512) - 255.5, np.arange(512) - 255.5)) < 250
            air = hu[~cv2.dilate(t["head"].astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & fov
                     & (hu < -900)]
            assert -1005 <= _pct(air, 50) <= -980
            assert 3.0 <= float(np.std(air)) <= 7.0  # noise ~5 HU
            assert hu[0, 0] == -1024  # padding, as read_hu returns it
            # head holder: a ~280 HU band under the head (posterior = bottom rows)
            below = hu[int(np.nonzero(t["head"].any(axis=1))[0][-1]) + 2:]
            band = below[(below > 150) & (below < 450)]
            assert band.size > 50 and 220 <= np.median(band) <= 330

    @pytest.mark.parametrize("fov", [200.0, 250.0])
    def test_head_inside_the_reconstruction_circle(self, fov):
        cfg = PhantomConfig(patients=12, slices_per_patient=12, size=128, pixel_spacing_mm=fov / 128, seed=8)
        yy, xx = np.mgrid[:128, :128] - 63.5
        rim = np.hypot(yy, xx) * cfg.pixel_spacing_mm > fov / 2 - cfg.pixel_spacing_mm  # padding and its edge
        for p in range(cfg.patients):
            for k in (0, 6, 11):
                _, t = render_slice(cfg, p, k)
                assert not (t["head"] & rim).any(), (fov, p, k)

    @pytest.mark.parametrize(
        "subtype, chronic, lo, hi",
        [("epidural", 0, 60, 90), ("subdural", 0, 50, 80), ("subdural", 1, 0, 30),
         ("intraparenchymal", 0, 60, 90), ("intraventricular", 0, 50, 80), ("subarachnoid", 0, 45, 80)],
    )
    def test_lesion_hu(self, subtype, chronic, lo, hi):
        cfg = PhantomConfig(patients=2, slices_per_patient=12, size=256, prevalence=1.0, subtype_mix={subtype: 1},
                            chronic_subdural_fraction=float(chronic), seed=4)
        values, rims = [], []
        for p in range(cfg.patients):
            for k in range(cfg.slices_per_patient):
                hu, t = render_slice(cfg, p, k)
                # ROI away from the inner table (2 px), as a reader places it
                near_bone = cv2.dilate(t["skull"].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                values.append(hu[t[subtype] & ~near_bone])
                if subtype == "intraparenchymal" and t[subtype].any():
                    ring = cv2.dilate(t[subtype].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                    rims.append(hu[ring & ~t[subtype] & t["intracranial"]])
        v = np.concatenate(values)
        assert v.size > 100
        assert lo <= np.median(v) <= hi, np.median(v)
        if rims:  # darker edema rim around the clot
            assert np.median(np.concatenate(rims)) < 30

    def test_mimic_hu(self):
        cfg = PhantomConfig(patients=2, slices_per_patient=10, size=256, prevalence=0.0, seed=9)
        for p in range(cfg.patients):
            for k in (4, 6):
                hu, t = render_slice(cfg, p, k, {m: True for m in MIMICS})
                for m in ("choroid_plexus_calcification", "pineal_calcification", "falx_calcification"):
                    core = hu[t[m]].max()
                    assert 100 <= core <= 460, (m, core)  # 100-400 HU plus noise
                assert hu[t["coil"]].max() == 3071  # metal saturates 12-bit CT
                assert t["coil_streaks"].sum() > 100
                assert np.percentile(hu[t["catheter"]], 90) > 300


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


class TestShortcut:
    def test_defaults_are_clean(self):
        cfg = PhantomConfig()
        assert set(cfg.mimic_probabilities) == set(MIMICS)
        assert all(pb == pn for pb, pn in cfg.mimic_probabilities.values())
        assert cfg.mimic_probabilities == DEFAULT_MIMIC_PROBABILITIES

    def test_planted_shortcut_has_the_requested_conditional_frequencies(self):
        p_bleed, p_none = 0.6, 0.05
        cfg = PhantomConfig(patients=40, slices_per_patient=10, size=64, prevalence=0.8, seed=3,
                            mimic_probabilities={"coil": (p_bleed, p_none)})
        counts = {0: [0, 0], 1: [0, 0]}  # any -> [images, with coil]
        for p in range(cfg.patients):
            for k in range(cfg.slices_per_patient):
                _, t = render_slice(cfg, p, k)
                any_ = int(any(t[s].any() for s in rsna.SUBTYPES))
                counts[any_][0] += 1
                counts[any_][1] += int(t["coil"].any())
        for any_, p in ((1, p_bleed), (0, p_none)):
            n, k = counts[any_]
            assert n >= 60
            tol = 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial sigma
            assert abs(k / n - p) <= tol, (any_, k, n)


class TestCounterfactual:
    def test_differs_only_inside_the_mimic(self, cohort):
        man = load_manifest(cohort)
        checked = set()
        for r in man["images"]:
            orig, t0 = render_image(cohort, r["image_id"])
            for m in MIMICS:
                present = m in r["mimics"]
                cf, t1 = render_counterfactual(cohort, r["image_id"], m, not present)
                assert t1[m].any() != present
                allowed = t0[m] | t1[m]
                if m == "coil":
                    allowed = allowed | t0["coil_streaks"] | t1["coil_streaks"]
                changed = cf != orig
                assert changed.any() and not (changed & ~allowed).any(), (r["image_id"], m)
                for key in ("head", "skull", "intracranial") + rsna.SUBTYPES:
                    np.testing.assert_array_equal(t0[key], t1[key])
                same, _ = render_counterfactual(cohort, r["image_id"], m, present)
                np.testing.assert_array_equal(same, orig)
                checked.add((m, present))
            if len(checked) == 2 * len(MIMICS):
                break
        assert {m for m, _ in checked} == set(MIMICS)

    def test_unknown_mimic(self, cohort):
        image_id = load_manifest(cohort)["images"][0]["image_id"]
        with pytest.raises(ConfigError, match=r"`mimic` must be one of .*Got 'stent' instead\."):
            render_counterfactual(cohort, image_id, "stent", True)


class TestConfig:
    @pytest.mark.parametrize(
        "kwargs, message",
        [({"prevalence": 1.5}, r"`prevalence` must be in \[0, 1\]. Got 1.5 instead."),
         ({"patients": 0}, r"`patients` must be an integer >= 1. Got 0 instead."),
         ({"size": 32}, r"`size` must be an integer in \[64, 1024\]. Got 32 instead."),
         ({"subtype_mix": {"acute": 1.0}}, r"`subtype_mix` must be keyed by .*Got 'acute' instead."),
         ({"mimic_probabilities": {"coil": (0.3, 1.2)}}, r"`mimic_probabilities\['coil'\]` must be two probabilities"),
         ({"pixel_spacing_mm": 0.1}, r"`pixel_spacing_mm` must be such that size x spacing is 200-400 mm"),
         ({"defect_fraction": -0.1}, r"`defect_fraction` must be in \[0, 1\]. Got -0.1 instead.")],
    )
    def test_invalid(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            PhantomConfig(**kwargs)

    def test_resolved_and_hashable(self):
        cfg = PhantomConfig(size=256, subtype_mix={"subdural": 3, "epidural": 1})
        assert cfg.pixel_spacing_mm == pytest.approx(250 / 256)
        assert cfg.subtype_mix["subdural"] == 0.75 and cfg.subtype_mix["intraventricular"] == 0.0
        assert hash(cfg) == hash(PhantomConfig(size=256, subtype_mix={"epidural": 1, "subdural": 3}))

    def test_parse_shortcut(self):
        assert parse_shortcut("coil:0.3,0.02") == ("coil", (0.3, 0.02))
        with pytest.raises(ConfigError, match=r"`shortcut` must be '<mimic>:<p_given_bleed>,<p_given_no_bleed>'"):
            parse_shortcut("stent:0.3,0.02")
        with pytest.raises(ConfigError, match="two probabilities"):
            parse_shortcut("coil:0.3,2")


def test_preview(cohort, tmp_path):
    out = preview(cohort, tmp_path / "p.png", n=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


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
    assert main(["phantom", "--out", str(out), "--patients", "2", "--seed", "6", "--no-progress"]) == 1
    assert "already holds phantom output" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "x"), "--patients", "2", "--shortcut", "coil:0.3"]) == 1
