"""brain_audit.shortcut_study: a shortcut caught by attention and by intervention, on hand-built models whose
answer is known, and on the quick demo."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

import keras

from brain_audit.audit.statistics import wilson_interval
from brain_audit.errors import ConfigError
from brain_audit.gradcam.attention import FLAGS
from brain_audit.phantom.lesions import MIMICS
from brain_audit.shortcut_study import (
    SHORTCUT_FLAGS,
    STUDY_SHORTCUTS,
    CounterfactualPairs,
    intervention,
    run_shortcut_study,
    shortcut_evidence,
)
from support.cam_models import hu_gate_model, hu_gate_probability
from support.heads import SIDE, head_slice

METAL_FLOOR = 2000.0  # HU above which the shortcut model reads the slice
W, B = 4.096, -2.0  # its Dense weight and bias: a 2 x 2 coil of 1000 HU above the floor adds 4096 * 4 / 4096 = 4
COIL = (slice(30, 32), slice(40, 42))  # inside the brain (radius 21 about (32, 32))
SQUARE = np.zeros((SIDE, SIDE), dtype=bool)
SQUARE[20:26, 16:22] = True  # what the clean model reads: brain, > 15 px from every coil pixel


def metal_model() -> keras.Model:
    """logit = W * mean(relu(HU - 2000)) + B: a 1x1 convolution with bias -2000 (relu), global average pooling,
    Dense. Its HiResCAM map is relu(HU - 2000) * W / side^2: on the metal and nowhere else."""
    inp = keras.Input((SIDE, SIDE, 1))
    x = keras.layers.Conv2D(1, 1, activation="relu", name="target")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("target").set_weights([np.ones((1, 1, 1, 1), "float32"), np.array([-METAL_FLOOR], "float32")])
    model.get_layer("head").set_weights([np.array([[W]], "float32"), np.array([B], "float32")])
    return model


def metal_probability(hu: np.ndarray) -> float:
    z = W * np.maximum(hu.astype(np.float64) - METAL_FLOOR, 0.0).mean() + B
    return float(1.0 / (1.0 + np.exp(-z)))


COIL_HU = (3000, 2200, 2600, 3000, 2600, 2200)
PATIENTS = ["P1", "P1", "P2", "P2", "P3", "P3"]


def _slices() -> tuple[np.ndarray, np.ndarray]:
    """(with a coil, without it): six brains of 30-55 HU, coils of the stated HU."""
    without = np.stack([head_slice(brain_hu=30 + 5 * k)[0] for k in range(len(COIL_HU))]).astype(np.float32)
    with_coil = without.copy()
    for k, hu in enumerate(COIL_HU):
        with_coil[k][COIL] = hu
    return with_coil, without


def _pairs(direction: str) -> CounterfactualPairs:
    w, wo = _slices()
    return CounterfactualPairs("coil", direction, [f"ID_{k}" for k in range(len(w))], PATIENTS, w, wo)


class TestTables:
    def test_every_mimic_has_a_flag_of_the_audit(self):
        assert set(SHORTCUT_FLAGS) == set(MIMICS)
        assert set(SHORTCUT_FLAGS.values()) <= set(FLAGS)
        assert set(STUDY_SHORTCUTS) <= set(MIMICS) and len(STUDY_SHORTCUTS) == 4
        # one of each kind the seed caught: metal device, polymer device, bone, calcification
        assert {SHORTCUT_FLAGS[m] for m in STUDY_SHORTCUTS} == {"device_focus", "bone_focus", "calcification_focus"}


class TestIntervention:
    @pytest.mark.parametrize("direction", ["added", "removed"])
    def test_the_change_and_flips_are_those_of_the_formula(self, direction):
        pairs = _pairs(direction)
        summary, table = intervention(metal_model(), 0.5, pairs, n_boot=200, seed=0)
        p_with = [metal_probability(h) for h in pairs.with_mimic]
        p_without = [metal_probability(h) for h in pairs.without_mimic]
        sign = 1.0 if direction == "added" else -1.0
        change = sign * (np.array(p_with) - np.array(p_without))
        np.testing.assert_allclose(table["p_with"], p_with, atol=1e-6)
        np.testing.assert_allclose(table["change"], change, atol=1e-6)
        assert summary["mean_change"] == pytest.approx(change.mean(), abs=1e-6)
        # a coil 1000 HU over the floor: logit -2 + 4 = 2; 600 HU: 0.4; 200 HU: -1.2 (no flip at 0.5)
        assert summary["flips"] == 4 and summary["n"] == 6 and summary["patients"] == 3
        assert summary["flip_rate_ci95"] == pytest.approx(list(wilson_interval(4, 6)))
        lo, hi = summary["mean_change_ci95"]
        assert lo <= summary["mean_change"] <= hi and hi > lo

    def test_no_pairs_no_figures(self):
        empty = np.zeros((0, SIDE, SIDE), np.float32)
        summary, table = intervention(metal_model(), 0.5, CounterfactualPairs("coil", "added", [], [], empty, empty, 3))
        assert summary == {"n": 0, "patients": 0, "unchanged_renders": 3, "threshold": 0.5} and table.empty


class TestShortcutEvidence:
    def test_the_metal_reader_is_caught_and_the_intracranial_reader_is_not(self):
        with_coil, _ = _slices()
        clean = hu_gate_model(SQUARE, weight=1.0, bias=-2.0)
        coil = np.zeros((len(with_coil), SIDE, SIDE), bool)
        coil[:, COIL[0], COIL[1]] = True
        summary, attention, pairs = shortcut_evidence(
            metal_model(), clean, "coil", with_coil, PATIENTS, labels=np.array([1, 0, 1, 0, 1, 0]),
            thresholds=(0.5, 0.5), pairs={"added": _pairs("added"), "removed": _pairs("removed")}, n_boot=200,
            object_masks=coil)
        # attention, both kinds of map: the metal reader's maps point at the metal (device_focus on every slice);
        # the clean one's HiResCAM is the square, and its occlusion map is 0 (no window changes its logit)
        assert summary["flag"] == "device_focus" and summary["slices"] == 6 and summary["patients"] == 3
        assert list(summary["attention"]) == ["occlusion", "hirescam"]
        for kind, a in summary["attention"].items():
            assert a["shortcut_model"] == {"flagged": 6, "n": 6, "rate": 1.0, "rate_ci95": list(wilson_interval(6, 6))}
            assert a["clean_model"] == {"flagged": 0, "n": 6, "rate": 0.0, "rate_ci95": list(wilson_interval(0, 6))}
            assert a["difference"] == 1.0 and math.isinf(a["ratio"]) and a["uniform_map_rate"] == 0.0
            # every slice differs by 1, so every bootstrap resample does: Newcombe's paired interval instead, by
            # hand for the table (0, 6, 0, 0): phi 0, lower 1 - sqrt((1 - l1)^2 + u2^2), upper 1
            l1, u2 = wilson_interval(6, 6)[0], wilson_interval(0, 6)[1]
            assert a["difference_ci95"] == pytest.approx([1 - math.hypot(1 - l1, u2), 1.0])
            assert a["difference_ci_method"].startswith("Newcombe")
            assert a["caught"] is True
            # pointing at the planted coil (15 px without a pixel size): the metal reader's peaks are on it (HiResCAM)
            # or on the windows that hold it (occlusion); the clean one's HiResCAM peak is the square, >= 26 px away
            # from the coil at its far corner, and its occlusion map is empty
            obj = a["object"]
            assert (obj["shortcut_model"]["flagged"], obj["clean_model"]["flagged"]) == (6, 0) and obj["caught"]
            # chance beside it: a peak at the centre pixel (32, 32) is 8.1 px from the coil's (31, 40): a hit on every slice
            assert (obj["chance_baseline"], obj["chance_rate"]) == ("centre", 1.0)
        assert summary["caught"] == {"attention": True, "intervention": True}
        rows = attention[(attention["model"] == "shortcut_model") & (attention["map"] == "hirescam")]
        assert (rows["peak_region"] == "metal").all()
        clean_occlusion = attention[(attention["model"] == "clean_model") & (attention["map"] == "occlusion")]
        assert (clean_occlusion["peak_region"] == "none").all()
        # intervention: the clean model reads only the square, so a coil changes nothing
        added = summary["intervention"]["added"]
        assert added["clean_model"]["mean_change"] == pytest.approx(0.0, abs=1e-7)
        assert added["clean_model"]["flips"] == 0
        expected = np.mean([metal_probability(a) - metal_probability(b) for a, b in zip(*_slices())])
        assert added["shortcut_model"]["mean_change"] == pytest.approx(expected, abs=1e-6)
        assert summary["intervention"]["removed"]["shortcut_model"]["mean_change"] == pytest.approx(-expected, abs=1e-6)
        # paired: the clean model's change is 0 on every pair, so the difference is the shortcut model's change
        assert added["difference"] == pytest.approx(expected, abs=1e-6)
        lo, hi = added["difference_ci95"]
        assert 0 < lo <= added["difference"] <= hi
        # clean probabilities by hand (hu_gate_probability): unchanged by the coil
        clean_rows = pairs[(pairs["model"] == "clean_model") & (pairs["direction"] == "added")]
        np.testing.assert_allclose(clean_rows["p_with"], [hu_gate_probability(h, SQUARE) for h in with_coil], atol=1e-6)
        assert len(pairs) == 4 * 6
        json.dumps(summary)  # JSON-ready

    def test_an_unknown_mimic_is_refused_by_name(self):
        with pytest.raises(ConfigError, match=r"`mimic` must be one of .*Got 'stent' instead\."):
            shortcut_evidence(None, None, "stent", np.zeros((0, SIDE, SIDE)), [])


@pytest.mark.slow
class TestOnTheQuickDemo:
    def test_the_study_files_hold_every_planted_shortcut(self, quick_run):
        _, out, summary = quick_run
        study = json.loads((out / "shortcut_study" / "summary.json").read_text())
        assert sorted(study["shortcuts"]) == sorted(STUDY_SHORTCUTS)  # (JSON written key-sorted)
        assert set(summary["shortcut_study"]) == set(STUDY_SHORTCUTS) | {"thresholds"}
        clean_metrics = json.loads((out / "clean_reference" / "phase2" / "metrics.json").read_text())
        assert study["thresholds"]["clean_model"] == clean_metrics["threshold"]
        op = json.loads((out / "phase4" / "operating_point.json").read_text())
        assert study["thresholds"]["shortcut_model"] == op["threshold"]
        manifest = json.loads((out / "data" / "phantom_manifest.json").read_text())["images"]
        from brain_audit.dataset.cache import open_cache

        audit = set(open_cache(out / "data" / "cache").ids("audit"))
        attention = pd.read_csv(out / "shortcut_study" / "attention.csv", dtype={"image_id": str})
        for mimic, e in study["shortcuts"].items():
            holding = [r["image_id"] for r in manifest if r["image_id"] in audit and mimic in r["mimics"]]
            assert e["slices"] == len(holding) and e["flag"] == SHORTCUT_FLAGS[mimic]
            rows = attention[attention["mimic"] == mimic]
            for model in ("shortcut_model", "clean_model"):
                got = rows[rows["model"] == model]
                for kind, a in e["attention"].items():
                    mine = got[got["map"] == kind]
                    assert sorted(mine["image_id"]) == sorted(holding)
                    assert a[model]["flagged"] == int(mine[e["flag"]].astype(bool).sum())
            for a in e["attention"].values():
                assert a["uniform_map_rate"] == (0.0 if e["slices"] else None)
                assert a["caught"] == bool(a["ratio"] is not None and a["ratio"] >= 3 and a["difference_ci95"][0] > 0)
            if e["slices"]:  # a phantom: the truth says where each mimic is, so the pointing game on it decides
                obj = e["attention"]["occlusion"]["object"]
                assert obj["shortcut_model"]["n"] == e["slices"] and 0 <= obj["chance_rate"] <= 1
                assert e["caught"]["attention"] == obj["caught"]
            assert set(e["intervention"]) == {"added", "removed"}
        md = (out / "shortcut_study" / "shortcut_study.md").read_text()
        assert md.startswith("**Synthetic phantom cohort, not a clinical result")
        assert md.count("\n| ") == 1 + len(STUDY_SHORTCUTS)  # header and one row per shortcut
        assert all(f"| {m} | {SHORTCUT_FLAGS[m]} |" in md for m in STUDY_SHORTCUTS)
        # the clean reference: pretrains its own backbone, then Phases 1-2 only, on other patients
        ref = out / "clean_reference"
        assert (ref / "phase2" / "model.keras").is_file() and not (ref / "phase3").exists()
        for run in (ref, out):
            assert json.loads((run / "phase1" / "run.json").read_text())["config"]["weights"] == "pretrained"
            assert (run / "pretrain" / "backbone.weights.h5").is_file()
        ref_manifest = json.loads((ref / "data" / "phantom_manifest.json").read_text())
        for m in STUDY_SHORTCUTS:
            pb, pn = ref_manifest["parameters"]["mimic_probabilities"][m]
            assert pb == pn

    def test_the_cli_reruns_the_study_on_the_demo_folder_and_reuses_the_reference(self, quick_run, capsys):
        """``brain-audit shortcut-study --out`` on the finished quick demo: the clean reference is read back (not
        retrained) and the seeded study reproduces the same figures."""
        from brain_audit.cli import main

        _, out, summary = quick_run
        ref = out / "clean_reference"
        stamps = {n: (ref / f"phase{n}" / "model.keras").stat().st_mtime_ns for n in (1, 2)}
        before = json.loads((out / "shortcut_study" / "summary.json").read_text())
        assert main(["shortcut-study", "--out", str(out), "--quiet"]) == 0
        assert {n: (ref / f"phase{n}" / "model.keras").stat().st_mtime_ns for n in (1, 2)} == stamps
        assert json.loads((out / "shortcut_study" / "summary.json").read_text()) == before
        assert json.loads((out / "demo_summary.json").read_text())["shortcut_study"] == json.loads(
            json.dumps(summary["shortcut_study"]))
        printed = capsys.readouterr().out
        assert all(line.split(":")[0] in STUDY_SHORTCUTS for line in printed.splitlines()[:4])


def test_a_2_5d_run_is_refused_in_one_line(tmp_path):
    """The counterfactuals edit one slice, not its neighbours: a run with context > 0 stops before any model loads."""
    from brain_audit.config import load_config

    shortcut = load_config(None, [f'out_dir="{tmp_path / "demo"}"', "context=1"])
    clean = load_config(None, [f'out_dir="{tmp_path / "clean"}"'])
    message = (r"^`context` must be 0 for the shortcut study \(its counterfactuals edit one slice, not its "
               r"neighbours\). Got 1 instead.$")
    with pytest.raises(ConfigError, match=message):
        run_shortcut_study(shortcut, clean)
    with pytest.raises(ConfigError, match=message):
        run_shortcut_study(clean, shortcut)
