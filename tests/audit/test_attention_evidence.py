"""brain_audit.audit.attention_evidence: Wilson against hand-computed intervals; the cluster bootstrap against a
slow obvious reference and against statistics.bootstrap_ci; the evidence of a table whose maps, lesions and
regions are drawn by hand, so every rate and baseline is known before the code runs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from brain_audit.audit.attention_evidence import attention_evidence, attention_markdown
from brain_audit.audit.statistics import bootstrap_ci, cluster_bootstrap, wilson_interval
from brain_audit.gradcam.attention import FLAGS, attention_profile
from support.heads import masks20

Z2 = 1.959963984540054**2  # the 97.5 % normal quantile, squared


class TestWilson:
    def test_hand_computed_intervals(self):
        assert wilson_interval(14, 14) == pytest.approx((14 / (14 + Z2), 1.0))  # (0.785, 1.0)
        assert wilson_interval(0, 50) == pytest.approx((0.0, Z2 / (50 + Z2)))  # (0, 0.0713)
        assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Brown, Cai, DasGupta 2001
        lo, hi = wilson_interval(1, 1, alpha=0.5)
        assert 0.0 < lo < hi == 1.0

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match=r"`successes` must be an integer in \[0, n=2\]. Got 3 instead"):
            wilson_interval(3, 2)
        with pytest.raises(ValueError, match="`n` must be an integer >= 1. Got 0 instead"):
            wilson_interval(0, 0)
        with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\). Got 1.0 instead"):
            wilson_interval(1, 2, alpha=1.0)


def _slow_cluster_bootstrap(frame: pd.DataFrame, column: str, statistic, n_boot: int, seed: int):
    """The obvious way: draw patients (sorted by name) with replacement, stack their rows, take the statistic."""
    patients = sorted(frame["patient"].astype(str).unique())
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(patients), size=len(patients))
        rows = pd.concat([frame[frame["patient"].astype(str) == patients[j]] for j in pick])
        stats.append(statistic(rows[column].to_numpy()))
    return tuple(np.quantile(stats, [0.025, 0.975]))


class TestClusterBootstrap:
    @pytest.fixture(scope="class")
    def frame(self):
        rng = np.random.default_rng(5)
        sizes = [1, 4, 2, 7, 3, 3, 5, 1, 6]  # unequal patients
        patient = np.repeat([f"P{k}" for k in (3, 0, 8, 1, 5, 2, 7, 4, 6)], sizes)
        order = rng.permutation(patient.size)  # rows of a patient not adjacent
        return pd.DataFrame({"patient": patient[order], "x": rng.normal(size=patient.size),
                             "hit": rng.random(patient.size) < 0.4})

    @pytest.mark.parametrize("statistic", [np.mean, np.median])
    def test_against_the_slow_reference(self, frame, statistic):
        point, lo, hi = cluster_bootstrap(frame["x"].to_numpy(), frame["patient"], statistic, n_boot=200, seed=11)
        assert point == pytest.approx(statistic(frame["x"].to_numpy()))
        assert (lo, hi) == pytest.approx(_slow_cluster_bootstrap(frame, "x", statistic, 200, 11), rel=1e-12)
        assert lo < point < hi

    def test_equals_statistics_bootstrap_ci_on_a_rate(self, frame):
        hits = frame["hit"].to_numpy().astype(int)
        ref = bootstrap_ci(lambda y, p: float(np.mean(y)), hits, np.zeros(hits.size), groups=frame["patient"],
                           n_boot=300, seed=2)
        assert cluster_bootstrap(hits, frame["patient"], np.mean, n_boot=300, seed=2) == pytest.approx(ref, rel=1e-12)

    def test_bad_arguments(self, frame):
        with pytest.raises(ValueError, match="`n_boot` must be an int >= 10. Got 5 instead"):
            cluster_bootstrap(frame["x"].to_numpy(), frame["patient"], np.mean, n_boot=5)
        with pytest.raises(ValueError, match=r"`groups` must have one entry per row of `values` \(32\). Got 3 instead"):
            cluster_bootstrap(frame["x"].to_numpy(), ["a", "b", "c"], np.mean)


# ----------------------------------------------------------------------------- a table drawn by hand
LESION = np.zeros((20, 20), dtype=bool)
LESION[4:6, 4:6] = True  # 4 px in the intracranial corner
KINDS = ("on_lesion", "skull", "uniform", "zero")


def _map(kind: str) -> np.ndarray:
    cam = np.zeros((20, 20), np.float32)
    if kind == "on_lesion":
        cam[4, 4] = 1.0  # all energy on the lesion; the peak on it: a hit, lesion enrichment 1 / (4 / 400) = 100
    elif kind == "skull":
        cam[masks20()["skull"]] = 1.0  # bone_focus; right_for_wrong_reason on a correct call; no hit
    elif kind == "uniform":
        cam[:] = 1.0  # no peak: no hit; lesion share 4 / 400, enrichment 1
    return cam


def _table(patients: int = 12, slices: int = 3) -> tuple[pd.DataFrame, list[str]]:
    rows, kinds = [], []
    for i in range(patients):
        for j in range(slices):
            kind = KINDS[(i + j) % 4] if patients > 1 else "skull"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the zero maps
                p = attention_profile(_map(kind), masks=masks20(), lesion_mask=LESION, probability=0.9, label=1,
                                      pixel_mm=2.0, hit_radius_mm=2.0)
            rows.append({"patient_id": f"P{i:02d}", **p})
            kinds.append(kind)
    return pd.DataFrame(rows), kinds


class TestAttentionEvidence:
    @pytest.fixture(scope="class")
    def drawn(self):
        table, kinds = _table()
        return table, np.array(kinds), attention_evidence(table, n_boot=400, seed=1)

    def test_flag_rates_by_hand_beside_a_uniform_map(self, drawn):
        _, kinds, ev = drawn
        assert ev["n_slices"] == 36 and ev["n_patients"] == 12
        n_skull = int((kinds == "skull").sum())
        for flag in ("bone_focus", "right_for_wrong_reason"):
            e = ev["flags"][flag]
            assert e["value"] == pytest.approx(n_skull / 36) and e["n"] == 36
            assert e["interval"] == "cluster_bootstrap" and e["ci"][0] < e["value"] < e["ci"][1]
            assert e["uniform_map_rate"] == 0.0
        for flag in ("calcification_focus", "device_focus", "outside_head_focus"):
            e = ev["flags"][flag]  # 0 of 36: every resample 0, so Wilson's interval, not a zero-width one
            assert e["value"] == 0.0 and e["interval"] == "wilson"
            assert e["ci"] == pytest.approx([0.0, Z2 / (36 + Z2)])
        assert set(ev["flags"]) == set(FLAGS)

    def test_pointing_games_against_hand_counted_baselines(self, drawn):
        _, kinds, ev = drawn
        hits = (kinds == "on_lesion").astype(float)
        g = ev["pointing_game"]
        assert g["n"] == 36 and g["model"]["value"] == pytest.approx(hits.mean())
        # tolerance 1 px: the lesion and its 8 edge neighbours, 12 px; 8 of them intracranial
        assert g["baselines"] == pytest.approx({"baseline_hit_uniform": 12 / 400, "baseline_hit_centre": 0.0,
                                                "baseline_hit_head": 12 / 256, "baseline_hit_intracranial": 8 / 144})
        assert g["best_baseline"] == {"name": "baseline_hit_intracranial", "value": pytest.approx(8 / 144)}
        d = g["difference"]
        assert d["value"] == pytest.approx(hits.mean() - 8 / 144) and d["interval"] == "cluster_bootstrap"
        assert d["ci"][0] < d["value"] < d["ci"][1]
        share = np.select([kinds == "on_lesion", kinds == "uniform"], [1.0, 4 / 400], 0.0)
        e = ev["energy_pointing_game"]
        assert e["model"]["value"] == pytest.approx(share.mean())
        assert e["baselines"] == pytest.approx({"baseline_energy_uniform": 4 / 400, "baseline_energy_head": 4 / 256,
                                                "baseline_energy_intracranial": 4 / 144})
        assert e["best_baseline"]["name"] == "baseline_energy_intracranial"
        assert e["difference"]["value"] == pytest.approx(share.mean() - 4 / 144)
        enrichment = np.select([kinds == "on_lesion", kinds == "uniform"], [100.0, 1.0], 0.0)
        assert ev["lesion_enrichment"]["value"] == pytest.approx(np.median(enrichment))
        assert ev["lesion_enrichment"]["uniform_map"] == 1.0

    def test_empty_maps_with_a_wilson_interval(self, drawn):
        _, kinds, ev = drawn
        k = int((kinds == "zero").sum())
        assert ev["empty_maps"] == {"value": pytest.approx(k / 36), "ci": pytest.approx(list(wilson_interval(k, 36))),
                                    "interval": "wilson", "n": 36}

    def test_json_ready_and_markdown(self, drawn):
        _, _, ev = drawn
        assert json.loads(json.dumps(ev, allow_nan=False)) == ev
        md = attention_markdown(ev)
        lines = md.splitlines()
        assert lines[0] == "| figure | model (95 % CI) | chance baseline |"
        bone = next(line for line in lines if line.startswith("| bone_focus"))
        assert bone.endswith("| 0.0 % (uniform map) |") and " W" not in bone
        assert next(line for line in lines if line.startswith("| device_focus")).split("|")[2].endswith(" W ")
        assert any(line.startswith("| pointing game, hit rate (n=36)") and "(intracranial)" in line for line in lines)
        assert "Wilson" in md

    def test_one_patient_collapses_to_wilson(self):
        table, _ = _table(patients=1, slices=14)  # 14 skull maps of one patient: every resample is 14 / 14
        ev = attention_evidence(table, n_boot=50)
        e = ev["flags"]["bone_focus"]
        assert e["value"] == 1.0 and e["interval"] == "wilson"
        assert e["ci"] == pytest.approx([14 / (14 + Z2), 1.0])  # (0.785, 1.0)
        d = ev["pointing_game"]["difference"]  # no hit, one patient: Wilson of 0 / 14 minus the baseline
        assert d["interval"] == "wilson_minus_baseline_mean"
        assert d["ci"] == pytest.approx([-8 / 144, Z2 / (14 + Z2) - 8 / 144])
        assert ev["lesion_enrichment"]["ci"] == [None, None]
        assert ev["lesion_enrichment"]["interval"].startswith("none")

    def test_bad_tables(self):
        table, _ = _table(patients=2, slices=2)
        with pytest.raises(ValueError, match="`table` must have a `patient_id` column"):
            attention_evidence(table.drop(columns="patient_id"))
        with pytest.raises(ValueError, match="`table` must hold at least one slice. Got 0 rows instead"):
            attention_evidence(table.iloc[:0])
        with pytest.raises(TypeError, match="`table` must be a pandas.DataFrame. Got list instead"):
            attention_evidence([])
        with pytest.raises(ValueError, match="`n_boot` must be an int >= 10. Got 3 instead"):
            attention_evidence(table, n_boot=3)
