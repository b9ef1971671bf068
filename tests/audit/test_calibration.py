"""brain_audit.audit.calibration against scikit-learn, simulated truths and hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from brain_audit.audit.calibration import Recalibration, calibration_fit, fit_recalibration, prior_shift


def _miscalibrated(n: int, intercept: float, slope: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores p and outcomes drawn from logit P(y = 1) = intercept + slope * logit(p)."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(0.0, 1.5, n))
    y = (rng.random(n) < expit(intercept + slope * logit(p))).astype(int)
    return y, p


class TestCalibrationFit:
    def test_recovers_a_known_miscalibration(self):
        y, p = _miscalibrated(20_000, 0.3, 0.8, seed=0)
        out = calibration_fit(y, p, n_boot=10)
        assert out["slope"]["estimate"] == pytest.approx(0.8, abs=0.05)
        assert out["intercept"]["estimate"] == pytest.approx(0.3, abs=0.05)
        assert (out["n"], out["events"]) == (20_000, int(y.sum()))

    def test_perfect_calibration_gives_slope_one_intercept_zero(self):
        y, p = _miscalibrated(20_000, 0.0, 1.0, seed=1)
        out = calibration_fit(y, p, n_boot=10)
        assert out["slope"]["estimate"] == pytest.approx(1.0, abs=0.05)
        assert out["intercept"]["estimate"] == pytest.approx(0.0, abs=0.05)
        assert out["calibration_in_the_large"]["estimate"] == pytest.approx(0.0, abs=0.05)

    def test_joint_fit_equals_unpenalised_sklearn(self):
        y, p = _miscalibrated(3_000, -0.4, 1.3, seed=2)
        ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit(p)[:, None], y)
        out = calibration_fit(y, p, n_boot=10)
        assert out["slope"]["estimate"] == pytest.approx(ref.coef_[0, 0], abs=1e-4)
        assert out["intercept"]["estimate"] == pytest.approx(ref.intercept_[0], abs=1e-4)

    def test_calibration_in_the_large_solves_its_score_equation(self):
        # the offset model's MLE makes the mean recalibrated probability equal the event rate
        y, p = _miscalibrated(2_000, -0.7, 1.0, seed=3)
        a = calibration_fit(y, p, n_boot=10)["calibration_in_the_large"]["estimate"]
        assert np.mean(expit(a + logit(p))) == pytest.approx(y.mean(), abs=1e-8)
        assert a == pytest.approx(-0.7, abs=0.15)

    def test_brier_and_patient_intervals(self):
        y, p = _miscalibrated(600, 0.2, 0.9, seed=4)
        groups = np.repeat(np.arange(100), 6)
        out = calibration_fit(y, p, groups=groups, n_boot=200, seed=1)
        assert out["brier"]["estimate"] == pytest.approx(brier_score_loss(y, p))
        for key in ("slope", "intercept", "calibration_in_the_large", "brier"):
            lo, hi = out[key]["ci95"]
            assert lo < out[key]["estimate"] < hi

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`p` must hold probabilities in \[0, 1\]"):
            calibration_fit([0, 1], [0.2, 1.2])
        with pytest.raises(ValueError, match=r"`groups` must have 2 entries\. Got 3 instead\."):
            calibration_fit([0, 1], [0.2, 0.8], groups=["a", "b", "c"])


class TestRecalibration:
    def test_platt_recovers_a_known_miscalibration_and_undoes_it(self):
        y, p = _miscalibrated(20_000, 0.5, 0.6, seed=5)
        rec = fit_recalibration(y, p, "platt")
        assert (rec.intercept, rec.slope) == pytest.approx((0.5, 0.6), abs=0.05)
        q = np.array([0.1, 0.5, 0.9])
        np.testing.assert_allclose(rec.apply(q), expit(rec.intercept + rec.slope * logit(q)))

    def test_isotonic_equals_sklearn(self):
        y, p = _miscalibrated(1_000, 0.3, 0.7, seed=6)
        rec = fit_recalibration(y, p, "isotonic")
        ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
        grid = np.concatenate([np.linspace(-0.1, 1.1, 301), p[:50]])
        np.testing.assert_allclose(rec.apply(grid), ref.predict(grid), atol=1e-12)

    @pytest.mark.parametrize("method", ["platt", "isotonic"])
    def test_apply_is_monotone_and_json_ready(self, method):
        y, p = _miscalibrated(500, -0.2, 1.4, seed=7)
        rec = fit_recalibration(y, p, method)
        out = rec.apply(np.linspace(0, 1, 1001))
        assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
        again = json.loads(json.dumps(rec.to_dict()))
        assert again["method"] == method
        replay = Recalibration(**{k: tuple(v) if isinstance(v, list) else v for k, v in again.items()})
        np.testing.assert_array_equal(replay.apply(p), rec.apply(p))

    def test_is_frozen(self):
        rec = fit_recalibration([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.6], "platt")
        with pytest.raises(AttributeError):
            rec.slope = 2.0

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`method` must be 'platt' or 'isotonic'\. Got 'beta' instead\."):
            fit_recalibration([0, 1], [0.1, 0.9], "beta")
        with pytest.raises(ValueError, match="`y` must hold both classes"):
            fit_recalibration([1, 1], [0.1, 0.9], "platt")


class TestPriorShift:
    def test_identity_at_the_same_prevalence(self):
        p = np.linspace(0, 1, 11)
        np.testing.assert_allclose(prior_shift(p, 0.3, 0.3), p)

    def test_by_hand(self):
        # p = 0.5, 50 % -> 1 %: r1 = 0.02, r0 = 1.98: 0.01 / (0.01 + 0.99) = 0.01
        assert prior_shift(0.5, 0.5, 0.01) == pytest.approx(0.01)
        # p = 0.9, 50 % -> 2 %: r1 = 0.04, r0 = 1.96: 0.036 / (0.036 + 0.196) = 0.155172...
        assert prior_shift(0.9, 0.5, 0.02) == pytest.approx(0.9 * 0.04 / (0.9 * 0.04 + 0.1 * 1.96))
        assert prior_shift(0.9, 0.5, 0.02) == pytest.approx(0.155172, abs=1e-6)

    def test_monotone_and_round_trip(self):
        p = np.linspace(0, 1, 201)
        q = prior_shift(p, 0.5, 0.02)
        assert np.all(np.diff(q) > 0)
        np.testing.assert_allclose(prior_shift(q, 0.02, 0.5), p, atol=1e-12)

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`deploy_prevalence` must be in \(0, 1\)\. Got 1\.5 instead\."):
            prior_shift(0.5, 0.5, 1.5)
        with pytest.raises(ValueError, match=r"`train_prevalence` must be in \(0, 1\)\. Got 0 instead\."):
            prior_shift(0.5, 0, 0.5)
