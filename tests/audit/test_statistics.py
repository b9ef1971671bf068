"""brain_audit.audit.statistics against hand-computed values, scikit-learn and slow obvious references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, recall_score, roc_auc_score

from brain_audit.audit.statistics import (
    bootstrap_ci,
    calibration_bins,
    confusion_at,
    expected_calibration_error,
    operating_point_report,
    paired_difference_interval,
    patient_level,
    predictive_values_at_prevalence,
    threshold_for_sensitivity,
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
    assert rep["deployment"][0]["ppv"] == pytest.approx(se * 0.01 / (se * 0.01 + (1 - sp) * 0.99))
    lo, hi = rep["sensitivity_ci95"]
    assert lo <= se <= hi
