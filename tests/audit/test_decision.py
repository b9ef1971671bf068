"""brain_audit.audit.decision against a hand-computed decision table (Vickers & Elkin 2006)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_audit.audit.decision import net_benefit, net_benefit_ci

#: 10 scans, 3 bleeds (pi = 0.3)
Y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.6, 0.3, 0.7, 0.4, 0.25, 0.1, 0.15, 0.05, 0.2])


class TestNetBenefit:
    def test_by_hand(self):
        table = net_benefit(Y, P, [0.2, 0.5])
        # pt = 0.2, w = 0.2 / 0.8 = 0.25: called 0.9, 0.6, 0.3 (TP 3) and 0.7, 0.4, 0.25, 0.2 (FP 4)
        #   NB = 3/10 - 4/10 * 0.25 = 0.2; treat all = 0.3 - 0.7 * 0.25 = 0.125
        # pt = 0.5, w = 1: called 0.9, 0.6 (TP 2) and 0.7 (FP 1)
        #   NB = 2/10 - 1/10 * 1 = 0.1; treat all = 0.3 - 0.7 * 1 = -0.4
        expected = pd.DataFrame({"threshold": [0.2, 0.5], "net_benefit": [0.2, 0.1], "treat_all": [0.125, -0.4],
                                 "treat_none": [0.0, 0.0]})
        pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-12, atol=1e-12)

    def test_at_a_deployment_prevalence_by_hand(self):
        table = net_benefit(Y, P, [0.2, 0.5], prevalence=0.02)
        # pt = 0.2: se = 3/3, 1 - sp = 4/7: NB = 1 * 0.02 - 4/7 * 0.98 * 0.25 = 0.02 - 0.14 = -0.12;
        #   treat all = 0.02 - 0.98 * 0.25 = -0.225
        # pt = 0.5: se = 2/3, 1 - sp = 1/7: NB = 2/3 * 0.02 - 1/7 * 0.98 * 1 = 0.013333 - 0.14 = -0.126667;
        #   treat all = 0.02 - 0.98 = -0.96
        np.testing.assert_allclose(table["net_benefit"], [-0.12, 2 / 3 * 0.02 - 0.14], atol=1e-12)
        np.testing.assert_allclose(table["treat_all"], [-0.225, -0.96], atol=1e-12)

    def test_audit_prevalence_equals_the_direct_count(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 500)
        p = np.clip(0.3 * y + 0.7 * rng.random(500), 0, 1)
        thresholds = np.linspace(0.05, 0.95, 19)
        direct = net_benefit(y, p, thresholds)
        via_rates = net_benefit(y, p, thresholds, prevalence=float(y.mean()))
        pd.testing.assert_frame_equal(direct, via_rates, check_exact=False, rtol=1e-12, atol=1e-15)

    def test_a_perfect_model_gains_the_prevalence(self):
        # every bleed scored 1, every other scan 0: NB = pi at every threshold, above treat-all
        table = net_benefit(Y, Y.astype(float), [0.1, 0.3, 0.8])
        np.testing.assert_allclose(table["net_benefit"], 0.3)
        assert (table["net_benefit"] > table["treat_all"]).all()

    def test_errors(self):
        with pytest.raises(ValueError, match=r"`thresholds` must be a non-empty 1-D sequence in \(0, 1\)\. Got \[0\.0, 0\.5\]"):
            net_benefit(Y, P, [0.0, 0.5])
        with pytest.raises(ValueError, match=r"`prevalence` must be in \(0, 1\)\. Got 1\.5 instead\."):
            net_benefit(Y, P, [0.2], prevalence=1.5)
        with pytest.raises(ValueError, match=r"`y` and `p` must have the same length"):
            net_benefit(Y, P[:5], [0.2])


class TestNetBenefitInterval:
    def test_slow_reference_and_bracket(self):
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, 120)
        p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
        groups = np.repeat(np.arange(40), 3)
        table = net_benefit_ci(y, p, [0.2, 0.4], groups=groups, n_boot=200, seed=3)
        # slow obvious reference: the same patient draws (patients sorted by name), net benefit counted by hand
        names = sorted(set(groups.astype(str)))
        rng = np.random.default_rng(3)
        draws = []
        for _ in range(200):
            pick = rng.integers(0, 40, size=40)
            idx = np.concatenate([np.flatnonzero(groups.astype(str) == names[k]) for k in pick])
            yy, pp = y[idx], p[idx]
            draws.append([np.sum((pp >= t) & (yy == 1)) / yy.size - np.sum((pp >= t) & (yy == 0)) / yy.size * t / (1 - t)
                          for t in (0.2, 0.4)])
        ref = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
        np.testing.assert_allclose(table["net_benefit_lower"], ref[0], rtol=1e-12)
        np.testing.assert_allclose(table["net_benefit_upper"], ref[1], rtol=1e-12)
        assert (table["net_benefit_lower"] < table["net_benefit"]).all()
        assert (table["net_benefit"] < table["net_benefit_upper"]).all()
