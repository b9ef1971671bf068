"""brain_audit.audit.statistics against hand-computed values, scikit-learn and slow obvious references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, confusion_matrix, recall_score, roc_auc_score

from brain_audit.audit.statistics import (
    DEPLOYMENT_PREVALENCES,
    MIN_ESTIMABLE,
    bootstrap_ci,
    calibration_bins,
    clopper_pearson_interval,
    cluster_bootstrap,
    cluster_bootstrap_interval,
    confusion_at,
    expected_calibration_error,
    operating_point_report,
    paired_difference_interval,
    patient_level,
    predictive_value_intervals,
    predictive_values_at_prevalence,
    proportion_interval,
    threshold_for_sensitivity,
    wilson_interval,
)


class TestPairedDifference:
    """Newcombe's method 10 worked by hand (z = 1.959964, z^2 = 3.841459)."""

    def test_no_unit_positive_in_either_gives_plus_minus_the_wilson_upper_bound(self):
        # p1 = p2 = 0, phi = 0 (empty margins): (-u, u) with u = z^2 / (39 + z^2) = 0.089667
        assert paired_difference_interval(0, 0, 0, 39) == pytest.approx((-0.089667, 0.089667), abs=1e-6)

    def test_perfect_agreement_is_narrowed_by_phi(self):
        # (10, 0, 0, 10): p1 = p2 = 0.5, a*d - b*c = 100 > n/2 -> phi = (100 - 10) / 100 = 0.9; the Wilson half
        # width of 10 / 20 is 1.959964 * sqrt(0.0125 + 3.841459 / 1600) / (1 + 3.841459 / 20) = 0.200703, so
        # the interval is 0 +- sqrt(2 - 2 * 0.9) * 0.200703 = +-0.089757
        assert paired_difference_interval(10, 0, 0, 10) == pytest.approx((-0.089757, 0.089757), abs=1e-5)

    def test_swapping_the_two_negates_the_interval_and_it_holds_the_difference(self):
        lo, hi = paired_difference_interval(36, 12, 2, 0)
        assert paired_difference_interval(36, 2, 12, 0) == pytest.approx((-hi, -lo))
        assert lo < (12 - 2) / 50 < hi and hi > lo

    def test_bad_tables_are_refused(self):
        with pytest.raises(ValueError, match=r"the four cells must be integers >= 0 with a sum >= 1\. Got \(0, 0, 0, 0\)"):
            paired_difference_interval(0, 0, 0, 0)
        with pytest.raises(ValueError, match="the four cells must be integers"):
            paired_difference_interval(1, -1, 0, 3)


class TestThreshold:
    def test_by_hand(self):
        # 4 positives scored 0.9, 0.8, 0.4, 0.2: sensitivity 0.75 needs 3 of them -> threshold 0.4
        y = [1, 1, 1, 1, 0, 0, 0]
        p = [0.9, 0.8, 0.4, 0.2, 0.5, 0.3, 0.1]
        assert threshold_for_sensitivity(y, p, 0.75) == 0.4
        assert threshold_for_sensitivity(y, p, 0.76) == 0.2
        assert threshold_for_sensitivity(y, p, 1.0) == 0.2
        assert threshold_for_sensitivity(y, p, 0.25) == 0.9

    def test_against_brute_force(self):
        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, 300)
        p = np.round(rng.random(300), 2)  # ties on purpose
        for target in (0.8, 0.9, 0.95):
            thr = threshold_for_sensitivity(y, p, target)
            # slow obvious reference: every candidate, keep the highest that meets the target
            ok = [t for t in np.unique(p) if recall_score(y, p >= t) >= target]
            assert thr == pytest.approx(max(ok))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`target` must be in \(0, 1\]\. Got 0 instead\."):
            threshold_for_sensitivity([1, 0], [0.5, 0.1], 0)
        with pytest.raises(ValueError, match="no positive sample"):
            threshold_for_sensitivity([0, 0], [0.5, 0.1])
        with pytest.raises(ValueError, match="same length"):
            threshold_for_sensitivity([0, 1], [0.5])


class TestConfusion:
    def test_matches_sklearn(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 200)
        p = rng.random(200)
        c = confusion_at(y, p, 0.3)
        tn, fp, fn, tp = confusion_matrix(y, p >= 0.3).ravel()
        assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (tp, fp, tn, fn)
        assert c["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert c["specificity"] == pytest.approx(tn / (tn + fp))


class TestPrevalence:
    def test_by_hand(self):
        # se 0.95, sp 0.90 at 2 %: PPV = 0.019 / (0.019 + 0.098) = 0.162393...
        out = predictive_values_at_prevalence(0.95, 0.90, 0.02)
        assert out["ppv"] == pytest.approx(0.019 / 0.117)
        assert out["npv"] == pytest.approx(0.882 / (0.882 + 0.001))
        assert out["false_alarms_per_true_bleed"] == pytest.approx(0.098 / 0.019)

    def test_balanced_training_ppv_collapses(self):
        hi = predictive_values_at_prevalence(0.9, 0.9, 0.5)["ppv"]
        lo = predictive_values_at_prevalence(0.9, 0.9, 0.01)["ppv"]
        assert hi == pytest.approx(0.9) and lo == pytest.approx(0.009 / (0.009 + 0.099))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`prevalence` must be in \(0, 1\)"):
            predictive_values_at_prevalence(0.9, 0.9, 0)


class TestCalibration:
    def test_bins_match_sklearn(self):
        rng = np.random.default_rng(1)
        p = rng.random(500)
        y = (rng.random(500) < p).astype(int)
        bins = calibration_bins(y, p, 10)
        frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
        np.testing.assert_allclose([b["observed_rate"] for b in bins], frac_pos)
        np.testing.assert_allclose([b["mean_predicted"] for b in bins], mean_pred)

    def test_ece_by_hand(self):
        # two bins: [0.1, 0.1] with labels [0, 1] -> |0.5 - 0.1|; [0.9] with [1] -> |1 - 0.9|
        ece = expected_calibration_error([0, 1, 1], [0.1, 0.1, 0.9], n_bins=10)
        assert ece == pytest.approx((2 * 0.4 + 1 * 0.1) / 3)


class TestPatientLevel:
    def test_any_slice_and_max(self):
        ids = ["b", "a", "a", "b", "c"]
        pats, y, p = patient_level(ids, [0, 0, 1, 0, 0], [0.2, 0.1, 0.7, 0.4, 0.05])
        assert pats.tolist() == ["a", "b", "c"]
        assert y.tolist() == [1, 0, 0]
        np.testing.assert_allclose(p, [0.7, 0.4, 0.05])
        _, _, pm = patient_level(ids, [0, 0, 1, 0, 0], [0.2, 0.1, 0.7, 0.4, 0.05], reduce="mean")
        np.testing.assert_allclose(pm, [0.4, 0.3, 0.05])


class TestBootstrap:
    def test_interval_brackets_point_and_is_deterministic(self):
        rng = np.random.default_rng(2)
        y = rng.integers(0, 2, 300)
        p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
        a = bootstrap_ci(roc_auc_score, y, p, n_boot=200, seed=5)
        b = bootstrap_ci(roc_auc_score, y, p, n_boot=200, seed=5)
        assert a == b
        assert a[1] < a[0] < a[2]
        assert a[0] == pytest.approx(roc_auc_score(y, p))

    def test_cluster_bootstrap_is_wider_for_duplicated_slices(self):
        # 60 patients, each slice copied 10 times: resampling slices pretends 600 independent
        # samples; resampling patients keeps the honest width of 60.
        rng = np.random.default_rng(4)
        y0 = rng.integers(0, 2, 60)
        p0 = np.clip(y0 * 0.25 + rng.random(60) * 0.75, 0, 1)
        y, p = np.repeat(y0, 10), np.repeat(p0, 10)
        groups = np.repeat([f"ID_{i}" for i in range(60)], 10)
        _, lo_s, hi_s = bootstrap_ci(roc_auc_score, y, p, n_boot=300, seed=0)
        _, lo_g, hi_g = bootstrap_ci(roc_auc_score, y, p, groups=groups, n_boot=300, seed=0)
        assert (hi_g - lo_g) > 2 * (hi_s - lo_s)


def test_operating_point_report_consistent():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
    thr = threshold_for_sensitivity(y, p, 0.95)
    rep = operating_point_report(y, p, thr, n_boot=100)
    assert rep["auc"] == pytest.approx(roc_auc_score(y, p))
    assert rep["at_threshold"]["sensitivity"] >= 0.95
    se, sp = rep["at_threshold"]["sensitivity"], rep["at_threshold"]["specificity"]
    at_1pc = next(d for d in rep["deployment"] if d["prevalence"] == 0.01)
    assert at_1pc["ppv"] == pytest.approx(se * 0.01 / (se * 0.01 + (1 - sp) * 0.99))
    lo, hi = rep["sensitivity_ci95"]
    assert lo <= se <= hi


class TestClopperPearson:
    @pytest.mark.parametrize("k, n", [(0, 1), (0, 14), (14, 14), (3, 17), (50, 100), (99, 100), (1, 1000)])
    def test_matches_scipy_binomtest(self, k, n):
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)

    def test_matches_scipy_at_another_level(self):
        ref = stats.binomtest(7, 30).proportion_ci(confidence_level=0.9, method="exact")
        assert clopper_pearson_interval(7, 30, alpha=0.1) == pytest.approx((ref.low, ref.high), abs=1e-12)

    def test_14_of_14_exact_is_wider_than_wilson(self):
        # exact lower bound of 14/14: 0.025 ** (1 / 14) = 0.76836; Wilson's: 14 / (14 + 1.959964 ** 2) = 0.78468
        assert clopper_pearson_interval(14, 14) == pytest.approx((0.025 ** (1 / 14), 1.0), abs=1e-9)
        assert clopper_pearson_interval(14, 14)[0] == pytest.approx(0.768, abs=5e-4)
        assert wilson_interval(14, 14) == pytest.approx((14 / (14 + 1.959964**2), 1.0), abs=1e-6)
        assert wilson_interval(14, 14)[0] == pytest.approx(0.785, abs=5e-4)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`n` must be an integer >= 1\. Got 0 instead\."):
            clopper_pearson_interval(0, 0)
        with pytest.raises(ValueError, match=r"`successes` must be an integer in \[0, n=3\]\. Got 4 instead\."):
            clopper_pearson_interval(4, 3)
        with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\)\. Got 1.5 instead\."):
            clopper_pearson_interval(1, 3, alpha=1.5)


class TestProportionInterval:
    def test_wilson_and_exact(self):
        w = proportion_interval(9, 12)
        assert (w["estimate"], w["successes"], w["n"], w["method"]) == (0.75, 9, 12, "wilson")
        assert (w["lower"], w["upper"]) == pytest.approx(wilson_interval(9, 12))
        ref = stats.binomtest(9, 12).proportion_ci(method="exact")
        e = proportion_interval(9, 12, method="clopper_pearson")
        assert (e["lower"], e["upper"]) == pytest.approx((ref.low, ref.high)) and e["method"] == "clopper_pearson"

    def test_estimable_from_ten_units(self):
        assert MIN_ESTIMABLE == 10
        assert proportion_interval(9, 9)["estimable"] is False
        assert proportion_interval(9, 10)["estimable"] is True

    def test_no_unit_is_nan_and_not_estimable(self):
        out = proportion_interval(0, 0)
        assert np.isnan([out["estimate"], out["lower"], out["upper"]]).all() and out["estimable"] is False

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`method` must be 'wilson' or 'clopper_pearson'\. Got 'wald' instead\."):
            proportion_interval(1, 2, method="wald")
        with pytest.raises(ValueError, match=r"`n` must be an integer >= 0\. Got -1 instead\."):
            proportion_interval(0, -1)


class TestPredictiveValueIntervals:
    def test_by_hand(self):
        # se 0.8 (0.6, 0.9), sp 1.0 (0.785, 1.0), pi 0.01
        out = predictive_value_intervals(0.8, (0.6, 0.9), 1.0, (0.785, 1.0), 0.01)
        # PPV point: 0.008 / (0.008 + 0 * 0.99) = 1; lower at (se 0.6, sp 0.785): 0.006 / (0.006 + 0.215 * 0.99)
        # = 0.006 / 0.21885 = 0.027416...; upper at (0.9, 1.0): 0.009 / 0.009 = 1
        assert out["ppv"] == 1.0
        assert out["ppv_ci95"] == pytest.approx([0.006 / (0.006 + 0.21285), 1.0])
        assert out["ppv_ci95"][0] == pytest.approx(0.027416, abs=1e-6)
        # NPV point: 0.99 / (0.99 + 0.2 * 0.01) = 0.99 / 0.992; lower at (0.6, 0.785): 0.77715 / (0.77715 + 0.004);
        # upper at (0.9, 1.0): 0.99 / (0.99 + 0.001)
        assert out["npv"] == pytest.approx(0.99 / 0.992)
        assert out["npv_ci95"] == pytest.approx([0.77715 / 0.78115, 0.99 / 0.991])
        # false alarms per true bleed: point 0 * 0.99 / 0.008 = 0; interval [FA(0.9, 1.0), FA(0.6, 0.785)]
        # = [0, 0.215 * 0.99 / 0.006] = [0, 35.475]
        assert out["false_alarms_per_true_bleed"] == 0.0
        assert out["false_alarms_per_true_bleed_ci95"] == pytest.approx([0.0, 35.475])
        assert out["prevalence"] == 0.01

    def test_zero_sensitivity_bound_gives_infinite_false_alarms(self):
        out = predictive_value_intervals(0.5, (0.0, 0.9), 0.9, (0.8, 0.95), 0.02)
        assert out["false_alarms_per_true_bleed_ci95"][1] == float("inf")
        assert out["ppv_ci95"][0] == 0.0

    def test_intervals_hold_the_point(self):
        out = predictive_value_intervals(0.9, (0.8, 0.95), 0.85, (0.8, 0.9), 0.05)
        for key in ("ppv", "npv", "false_alarms_per_true_bleed"):
            lo, hi = out[f"{key}_ci95"]
            assert lo < out[key] < hi

    def test_nan_interval_gives_nan_bounds(self):
        out = predictive_value_intervals(0.9, (float("nan"), float("nan")), 0.85, (0.8, 0.9), 0.05)
        assert np.isnan(out["ppv_ci95"]).all() and out["ppv"] == pytest.approx(0.045 / (0.045 + 0.15 * 0.95))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`se_ci` must be an interval within \[0, 1\] with lower <= upper\. Got \(0\.9, 0\.8\)"):
            predictive_value_intervals(0.85, (0.9, 0.8), 0.9, (0.8, 0.95), 0.02)
        with pytest.raises(ValueError, match=r"`prevalence` must be in \(0, 1\)\. Got 1\.5 instead\."):
            predictive_value_intervals(0.85, (0.8, 0.9), 0.9, (0.8, 0.95), 1.5)


def _slow_percentile_cluster_bootstrap(values, groups, statistic, n_boot, seed, alpha=0.05):
    """The obvious loop: sorted groups, draw k of them per resample, concatenate their rows."""
    names = sorted(set(groups))
    rows = {name: values[np.asarray(groups) == name] for name in names}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(names), size=len(names))
        stat = statistic(np.concatenate([rows[names[i]] for i in pick]))
        if np.isfinite(stat):
            out.append(stat)
    return tuple(np.quantile(out, [alpha / 2, 1 - alpha / 2]))


class TestClusterBootstrapMethods:
    @pytest.fixture
    def skewed(self):
        return np.random.default_rng(21).lognormal(0.0, 1.0, 40)

    def test_percentile_path_is_the_plain_percentile_bootstrap(self, skewed):
        groups = np.repeat([f"P{i:02d}" for i in range(20)], 2)
        point, lo, hi = cluster_bootstrap(skewed, groups, np.mean, n_boot=300, seed=4)
        assert point == pytest.approx(skewed.mean())
        assert (lo, hi) == pytest.approx(_slow_percentile_cluster_bootstrap(skewed, groups, np.mean, 300, 4), rel=1e-12)
        full = cluster_bootstrap_interval(skewed, groups, np.mean, n_boot=300, seed=4)
        assert (full["lower"], full["upper"], full["method"], full["resamples"]) == (lo, hi, "percentile", 300)
        assert full["fallback"] is None

    def test_bca_matches_scipy_on_unclustered_data(self, skewed):
        ours = cluster_bootstrap_interval(skewed, np.arange(skewed.size), np.mean, n_boot=5000, seed=0, method="bca")
        ref = stats.bootstrap((skewed,), np.mean, n_resamples=100_000, method="BCa",
                              random_state=np.random.default_rng(1)).confidence_interval
        spread = ref.high - ref.low
        assert ours["method"] == "bca" and ours["fallback"] is None
        assert ours["lower"] == pytest.approx(ref.low, abs=0.02 * spread)
        assert ours["upper"] == pytest.approx(ref.high, abs=0.02 * spread)
        # the check can fail: on this skewed sample the percentile interval sits clearly lower than BCa
        perc = stats.bootstrap((skewed,), np.mean, n_resamples=100_000, method="percentile",
                               random_state=np.random.default_rng(1)).confidence_interval
        assert abs(perc.high - ref.high) > 0.04 * spread

    def test_bca_jackknife_leaves_out_whole_groups(self, skewed):
        # every row copied three times in its own group: the same draws and the same leave-one-patient-out
        # values as the unclustered sample, so the same BCa interval (a row-wise jackknife would differ)
        single = cluster_bootstrap_interval(skewed, np.arange(40), np.mean, n_boot=500, seed=3, method="bca")
        tripled = cluster_bootstrap_interval(np.repeat(skewed, 3), np.repeat(np.arange(40), 3), np.mean,
                                             n_boot=500, seed=3, method="bca")
        assert (tripled["lower"], tripled["upper"]) == pytest.approx((single["lower"], single["upper"]), rel=1e-12)

    def test_bca_falls_back_to_percentile_when_degenerate(self):
        constant = np.full(30, 0.7)
        with pytest.warns(RuntimeWarning, match="BCa interval undefined"):
            out = cluster_bootstrap_interval(constant, np.arange(30), np.mean, n_boot=100, method="bca")
        assert out["method"] == "percentile" and "equal" in out["fallback"]
        assert (out["lower"], out["upper"]) == pytest.approx((0.7, 0.7))

    def test_bad_method(self):
        with pytest.raises(ValueError, match=r"`method` must be 'percentile' or 'bca'\. Got 'basic' instead\."):
            cluster_bootstrap(np.ones(12), np.arange(12), np.mean, method="basic")


class TestOperatingPointReport:
    @pytest.fixture
    def data(self):
        rng = np.random.default_rng(7)
        y = rng.integers(0, 2, 200)
        p = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
        return y, p

    def test_ungrouped_uses_wilson_and_exact_on_rows(self, data):
        y, p = data
        rep = operating_point_report(y, p, 0.5, n_boot=200)
        c = confusion_at(y, p, 0.5)
        assert rep["sensitivity_ci95"] == pytest.approx(list(wilson_interval(c["tp"], c["tp"] + c["fn"])))
        assert rep["specificity_ci95"] == pytest.approx(list(wilson_interval(c["tn"], c["tn"] + c["fp"])))
        ref = stats.binomtest(c["tp"], c["tp"] + c["fn"]).proportion_ci(method="exact")
        assert rep["clopper_pearson"]["sensitivity"] == pytest.approx([ref.low, ref.high])
        assert rep["ci_methods"] == {"sensitivity": "wilson", "specificity": "wilson", "auc": "cluster_bootstrap_bca"}
        assert rep["brier"] == pytest.approx(brier_score_loss(y, p))
        assert rep["estimable"] == {"sensitivity": True, "specificity": True}
        assert [d["prevalence"] for d in rep["deployment"]] == list(DEPLOYMENT_PREVALENCES)
        lo, hi = rep["auc_ci95"]
        assert lo < rep["auc"] < hi

    def test_deployment_rows_carry_the_reported_intervals(self, data):
        y, p = data
        rep = operating_point_report(y, p, 0.5, prevalences=(0.02,), n_boot=100)
        c = rep["at_threshold"]
        ref = predictive_value_intervals(c["sensitivity"], rep["sensitivity_ci95"], c["specificity"],
                                         rep["specificity_ci95"], 0.02)
        assert rep["deployment"] == [ref]

    def test_grouped_uses_the_patient_bootstrap(self, data):
        y, p = data
        groups = np.repeat([f"P{i:02d}" for i in range(40)], 5)
        rep = operating_point_report(y, p, 0.5, groups=groups, n_boot=200, seed=3)

        def sens(rows):
            pos = rows[:, 0] == 1
            return float(np.mean(rows[pos, 1] >= 0.5))

        ref = _slow_percentile_cluster_bootstrap(np.column_stack([y, p]), list(groups), sens, 200, 3)
        assert rep["sensitivity_ci95"] == pytest.approx(list(ref), rel=1e-12)
        assert rep["ci_methods"]["sensitivity"] == "cluster_bootstrap_percentile"
        assert "clopper_pearson" not in rep

    def test_patient_level_14_of_14_specificity_is_wilson_not_zero_width(self):
        # 14 negative patients all below the threshold, 12 positive patients above it
        y = np.array([0] * 14 + [1] * 12)
        p = np.array([0.1] * 14 + [0.9] * 12)
        rep = operating_point_report(y, p, 0.5, n_boot=100)
        assert rep["at_threshold"]["specificity"] == 1.0
        # Wilson 14/14: 14 / (14 + 1.959964^2) = 0.78468
        assert rep["specificity_ci95"] == pytest.approx([14 / (14 + 1.959964**2), 1.0], abs=1e-6)
        assert rep["specificity_ci95"][0] == pytest.approx(0.785, abs=5e-4)
        assert rep["specificity_ci95"][1] > rep["specificity_ci95"][0]

    def test_slice_level_constant_bootstrap_falls_back_to_wilson_on_rows(self):
        # every negative slice of every patient below the threshold: each resample has specificity 1
        y = np.array([0, 0, 0, 1] * 15)
        p = np.array([0.1, 0.2, 0.3, 0.9] * 15)
        groups = np.repeat([f"P{i:02d}" for i in range(15)], 4)
        rep = operating_point_report(y, p, 0.5, groups=groups, n_boot=100)
        assert rep["ci_methods"]["specificity"] == "wilson_fallback"
        assert rep["specificity_ci95"] == pytest.approx(list(wilson_interval(45, 45)))
        assert rep["specificity_ci95"][0] < 1.0
        assert rep["estimable"] == {"sensitivity": True, "specificity": True}

    def test_estimable_counts_patients_when_grouped(self):
        # 9 positive patients of 3 positive slices each (27 slices), 12 negative patients
        y = np.array([1] * 27 + [0] * 36)
        p = np.linspace(0, 1, 63)
        groups = np.concatenate([np.repeat(np.arange(9), 3), np.repeat(np.arange(9, 21), 3)])
        rep = operating_point_report(y, p, 0.5, groups=groups, n_boot=50)
        assert rep["estimable"] == {"sensitivity": False, "specificity": True}
        assert operating_point_report(y, p, 0.5, n_boot=50)["estimable"]["sensitivity"] is True

    def test_one_class_gives_nan_auc_interval(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = operating_point_report(np.zeros(20, dtype=int), np.linspace(0, 1, 20), 0.5, n_boot=50)
        assert np.isnan(rep["auc"]) and np.isnan(rep["auc_ci95"]).all() and rep["ci_methods"]["auc"] == "undefined"
        assert np.isnan(rep["sensitivity_ci95"]).all()

    def test_perfect_separation_auc_interval_is_not_zero_width(self):
        # 12 positive and 15 negative patients, perfectly separated: every resample's AUC is 1.0
        y = np.array([1] * 12 + [0] * 15)
        p = np.concatenate([np.linspace(0.6, 0.9, 12), np.linspace(0.1, 0.4, 15)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = operating_point_report(y, p, 0.5, n_boot=100)
        assert rep["auc"] == 1.0 and rep["ci_methods"]["auc"] == "wilson_on_smaller_class"
        # Wilson 12 / 12 by hand: lower = n / (n + z^2)
        z = 1.959963984540054
        assert rep["auc_ci95"][0] == pytest.approx(12 / (12 + z * z)) and rep["auc_ci95"][1] == 1.0

    def test_keys_are_a_superset_of_the_old_report(self, data):
        y, p = data
        rep = operating_point_report(y, p, 0.5, groups=np.arange(200) // 4, n_boot=50)
        old = {"n", "positives", "auc", "average_precision", "ece", "at_threshold", "sensitivity_ci95",
               "specificity_ci95", "auc_ci95", "deployment"}
        assert old <= set(rep)
        assert {"prevalence", "ppv", "npv", "false_alarms_per_true_bleed"} <= set(rep["deployment"][0])


def test_rank_auc_is_scikit_learns_auc_with_ties_and_nan_with_one_class():
    from sklearn.metrics import roc_auc_score

    from brain_audit.audit.statistics import rank_auc

    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        p = np.round(rng.uniform(size=50), 1)  # many ties
        if 0 < y.sum() < 50:
            assert rank_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(rank_auc(np.ones(5), np.arange(5.0)))
