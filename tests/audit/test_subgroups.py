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
