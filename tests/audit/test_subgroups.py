"""brain_audit.audit.subgroups: metrics with and without each mimic, against counts by hand."""

from __future__ import annotations

import numpy as np
import pytest

from brain_audit.audit.subgroups import stratified_metrics


class TestStratifiedMetrics:
    def test_a_coil_shortcut_shows_in_the_strata(self):
        # 8 slices; the "model" says bleed exactly when there is a coil
        y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
        coil = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
        p = np.where(coil, 0.9, 0.1) + np.arange(8) * 0.001
        table = stratified_metrics(y, p, {"metal": coil, "calcification": np.zeros(8, bool)})
        row = table.set_index(["mimic", "present"])
        # by hand: all slices: TP 2 (slices 0, 1), FN 2, FP 1 (slice 4), TN 3
        assert row.loc[("all", "any"), "sensitivity"] == pytest.approx(0.5)
        assert row.loc[("all", "any"), "specificity"] == pytest.approx(0.75)
        # with a coil: bleeds 0, 1 (p .900, .901) vs normal 4 (p .904): every pair misordered
        assert row.loc[("metal", True), "auc"] == pytest.approx(0.0)
        assert row.loc[("metal", True), "specificity"] == 0.0
        # without: bleeds 2, 3 (.102, .103) vs normals 5, 6, 7 (.105-.107): all misordered, nothing called
        assert row.loc[("metal", False), "sensitivity"] == 0.0 and row.loc[("metal", False), "auc"] == 0.0
        assert row.loc[("metal", False), "n"] == 5 and row.loc[("metal", False), "n_positive"] == 2
        assert np.isnan(row.loc[("calcification", True), "auc"])  # empty stratum

    def test_one_row_per_slice(self):
        with pytest.raises(ValueError, match="one row per slice. Got 3, 3 and 2 instead"):
            stratified_metrics([0, 1, 1], [0.1, 0.2, 0.3], {"metal": [True, False]})


class TestRates:
    def test_patient_rate_is_wilson(self):
        from scipy.stats import norm

        from brain_audit.audit.subgroups import patient_rate

        r = patient_rate([True] * 14)
        # Wilson 14/14 by hand: upper 1, lower = n / (n + z^2)
        z = norm.ppf(0.975)
        assert r["ci95"][0] == pytest.approx(14 / (14 + z * z)) and r["ci95"][1] == pytest.approx(1.0)
        assert r["estimable"] and r["estimate"] == 1.0
        assert not patient_rate([True] * 9)["estimable"]
        assert np.isnan(patient_rate([])["estimate"])

    def test_clustered_rate_never_has_zero_width(self):
        from brain_audit.audit.subgroups import clustered_rate

        # every slice right: every bootstrap resample is 1.0, so Wilson on the slices stands in
        r = clustered_rate([True] * 12, [f"p{i // 3}" for i in range(12)], n_boot=200)
        assert r["method"].startswith("wilson") and r["ci95"][1] > r["ci95"][0]
        assert r["patients"] == 4 and not r["estimable"]

    def test_clustered_rate_resamples_patients(self):
        from brain_audit.audit.subgroups import clustered_rate

        # two patients, one all right and one all wrong: a resample holds 0, 1 or 2 copies of the good one, so
        # the percentile interval is (0, 1) whatever the number of slices (a slice-level interval would be narrow)
        hits = [True] * 50 + [False] * 50
        groups = ["a"] * 50 + ["b"] * 50
        r = clustered_rate(hits, groups, n_boot=400, seed=1)
        assert r["method"] == "patient bootstrap" and r["ci95"] == [0.0, 1.0]


class TestSubgroupReport:
    def test_counts_by_hand(self):
        import pandas as pd

        from brain_audit.audit.subgroups import subgroup_report

        # 3 patients, 2 slices each; a subdural bleed in patient a (both slices), subarachnoid in b (one slice)
        slices = pd.DataFrame({
            "patient_id": ["a", "a", "b", "b", "c", "c"],
            "label": [1, 1, 1, 0, 0, 0],
            "called_bleed": [1, 0, 0, 0, 1, 0],
            "epidural": 0, "intraparenchymal": 0, "intraventricular": 0,
            "subarachnoid": [0, 0, 1, 0, 0, 0],
            "subdural": [1, 1, 0, 0, 0, 0],
            "mimic_coil": [True, False, False, False, True, False],
        })
        patients = pd.DataFrame({"patient_id": ["a", "b", "c"], "called_bleed": [True, False, True],
                                 "subtypes_present": [["subdural"], ["subarachnoid"], []]})
        out = subgroup_report(slices, patients, ["coil"], n_boot=100)
        sd = out["subtypes"]["subdural"]
        assert (sd["patients"]["successes"], sd["patients"]["n"]) == (1, 1)
        assert (sd["slices"]["successes"], sd["slices"]["n"]) == (1, 2)
        sa = out["subtypes"]["subarachnoid"]
        assert (sa["patients"]["successes"], sa["slices"]["successes"]) == (0, 0)
        assert out["subtypes"]["epidural"]["slices"]["n"] == 0 and not out["subtypes"]["epidural"]["slices"]["estimable"]
        coil = out["mimics"]["coil"]
        # with a coil: slice a0 (bleed, called), c0 (no bleed, called): sensitivity 1/1, specificity 0/1
        assert coil["present"]["sensitivity"]["successes"] == 1 and coil["present"]["sensitivity"]["n"] == 1
        assert coil["present"]["specificity"]["successes"] == 0 and coil["present"]["specificity"]["n"] == 1
        # without: bleeds a1, b0 both missed; no-bleed b1, c1 both cleared
        assert coil["absent"]["sensitivity"]["estimate"] == 0.0 and coil["absent"]["specificity"]["estimate"] == 1.0
        assert coil["specificity_difference"]["difference"] == pytest.approx(-1.0)
        lo, hi = coil["specificity_difference"]["ci95"]
        assert lo < hi
