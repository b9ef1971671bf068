"""The clinical audit's figures: each writes a decodable, non-blank PNG; the ROC band is checked by value."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from brain_audit.audit.plots import (
    plot_calibration,
    plot_case,
    plot_confusion,
    plot_decision_curve,
    plot_flow,
    plot_predictive_values,
    plot_roc,
    roc_band,
)


def _png(path) -> np.ndarray:
    """The PNG decoded by OpenCV (independent of matplotlib), checked to be a picture and not one colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10, "the figure is (nearly) a single colour"
    return image


def _scores(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1.0 / (1.0 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0.0, 1.0, n))))
    return y, p


def _width(band: dict) -> float:
    return float(np.mean(band["upper"] - band["lower"]))


class TestRocBand:
    def test_band_contains_the_point_curve(self):
        y, p = _scores()
        band = roc_band(y, p, groups=np.arange(len(y)) // 3, n_boot=200, seed=1)
        assert band["n_used"] == 200
        assert np.all(band["lower"] <= band["tpr_grid"] + 1e-12)
        assert np.all(band["tpr_grid"] <= band["upper"] + 1e-12)
        assert np.mean(band["upper"] - band["lower"]) > 0.01  # a band, not a line
        assert band["auc"] == pytest.approx(roc_auc_score(y, p))

    def test_curve_on_the_grid_by_hand(self):
        # roc_curve: fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1]; a vertical step reads its top
        y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
        band = roc_band(y, p, n_boot=5, grid=np.array([0.0, 0.25, 0.5, 1.0]))
        np.testing.assert_allclose(band["tpr_grid"], [0.5, 0.75, 1.0, 1.0])

    def test_resampling_patients_widens_the_band_of_repeated_rows(self):
        # five identical rows per patient: resampling rows pretends to 5x the data, resampling patients does not
        y, p = _scores(n=80, seed=2)
        y5, p5, g5 = np.repeat(y, 5), np.repeat(p, 5), np.repeat(np.arange(80), 5)
        rows = roc_band(y5, p5, n_boot=200, seed=0)
        patients = roc_band(y5, p5, groups=g5, n_boot=200, seed=0)
        assert patients["n_groups"] == 80 and rows["n_groups"] == 400
        assert _width(patients) > 1.5 * _width(rows)

    def test_no_replicate_with_both_classes_warns_and_leaves_no_band(self):
        # two patients, one per class: a replicate that draws the same patient twice holds one class only; the
        # seed is the first whose single replicate does (this mirrors roc_band's draw of n_groups integers)
        y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
        seed = next(s for s in range(100) if len(set(np.random.default_rng(s).integers(0, 2, 2))) == 1)
        with pytest.warns(RuntimeWarning, match="no bootstrap replicate of 2 groups held both classes"):
            band = roc_band(y, p, groups=["a", "a", "b", "b"], n_boot=1, seed=seed)
        assert band["n_used"] == 0 and np.isnan(band["lower"]).all()
        assert band["auc"] == 1.0

    def test_same_seed_same_band(self):
        y, p = _scores(n=60)
        a, b = roc_band(y, p, n_boot=30, seed=7), roc_band(y, p, n_boot=30, seed=7)
        np.testing.assert_array_equal(a["lower"], b["lower"])


class TestPlotRoc:
    def test_writes_png_with_operating_point(self, tmp_path):
        y, p = _scores()
        out = plot_roc(tmp_path / "roc.png", y, p, groups=np.arange(len(y)) // 3, n_boot=50,
                       points=[{"label": "operating point", "sensitivity": 0.9, "specificity": 0.7}])
        assert out == tmp_path / "roc.png"
        _png(out)

    def test_refuses_mismatched_lengths(self, tmp_path):
        y, p = _scores(n=50)
        with pytest.raises(ValueError, match="`p` must have the length of `y`"):
            plot_roc(tmp_path / "roc.png", y, p[:-1], n_boot=50)
        with pytest.raises(ValueError, match="`groups` must have the length of `y`"):
            plot_roc(tmp_path / "roc.png", y, p, groups=np.arange(49), n_boot=50)
        assert not (tmp_path / "roc.png").exists()

    def test_refuses_one_class_and_bad_points(self, tmp_path):
        with pytest.raises(ValueError, match="both classes"):
            plot_roc(tmp_path / "roc.png", np.ones(5, int), np.linspace(0, 1, 5), n_boot=50)
        y, p = _scores(n=50)
        with pytest.raises(ValueError, match=r"`points\[0\]` must have keys"):
            plot_roc(tmp_path / "roc.png", y, p, n_boot=50, points=[{"label": "x", "sensitivity": 0.9}])


def _pv_rows():
    return [{"prevalence": q, "ppv": 3 * q, "ppv_ci95": [2 * q, 4 * q], "npv": 0.99 - q / 10,
             "npv_ci95": [0.98 - q / 10, 0.995 - q / 10]} for q in (0.005, 0.01, 0.02, 0.05, 0.10)]


def test_predictive_values(tmp_path):
    _png(plot_predictive_values(tmp_path / "pv.png", _pv_rows()))
    bad = _pv_rows()
    del bad[2]["npv_ci95"]
    with pytest.raises(ValueError, match=r"`rows\[2\]` must have keys .* Missing \['npv_ci95'\]"):
        plot_predictive_values(tmp_path / "pv2.png", bad)
    with pytest.raises(ValueError, match="`rows\\[0\\]\\['prevalence'\\]` must be a fraction"):
        plot_predictive_values(tmp_path / "pv2.png", [dict(_pv_rows()[0], prevalence=5.0)])


def test_calibration(tmp_path):
    y, p = _scores()
    out = plot_calibration(tmp_path / "cal.png", {"as trained": (y, p), "Platt recalibrated": (y, 0.5 * p + 0.25)},
                           n_bins=10)
    _png(out)
    with pytest.raises(ValueError, match="must be probabilities in \\[0, 1\\]"):
        plot_calibration(tmp_path / "bad.png", {"logits": (y, 4 * p - 2)})
    with pytest.raises(ValueError, match="`n_bins` must be an integer >= 1"):
        plot_calibration(tmp_path / "bad.png", {"as trained": (y, p)}, n_bins=0)


def test_decision_curve(tmp_path):
    t = np.linspace(0.01, 0.5, 50)
    prev = 0.1
    table = pd.DataFrame({"threshold": t, "net_benefit": 0.09 - 0.9 * 0.05 * t / (1 - t),
                          "treat_all": prev - (1 - prev) * t / (1 - t), "treat_none": 0.0})
    _png(plot_decision_curve(tmp_path / "dca.png", table))
    with pytest.raises(ValueError, match=r"Missing \['treat_none'\]"):
        plot_decision_curve(tmp_path / "bad.png", table.drop(columns="treat_none"))


class TestPlotFlow:
    def test_one_stage(self, tmp_path):
        _png(plot_flow(tmp_path / "flow.png", [{"text": "Audit patients (n = 40)", "excluded": None}]))

    def test_eight_stages_with_exclusions_and_a_split_grow_the_figure(self, tmp_path):
        one = _png(plot_flow(tmp_path / "one.png", [{"text": "Audit patients (n = 40)"}]))
        stages = [{"text": f"Stage {i}: a long description of who is still in the study at this step (n = {1000 - i})",
                   "excluded": f"Excluded at step {i}: unreadable DICOM (n = 1)" if i % 2 else None}
                  for i in range(8)]
        stages[-1]["split"] = ["With a bleed (n = 300)", "Without a bleed (n = 692)", "Indeterminate (n = 0)"]
        eight = _png(plot_flow(tmp_path / "eight.png", stages))
        assert eight.shape[0] > 5 * one.shape[0]

    def test_refuses_empty_and_a_split_before_the_end(self, tmp_path):
        with pytest.raises(ValueError, match="`stages` must hold at least one stage"):
            plot_flow(tmp_path / "f.png", [])
        with pytest.raises(ValueError, match=r"`stages\[0\]\['split'\]` is allowed on the last stage only"):
            plot_flow(tmp_path / "f.png", [{"text": "a", "split": ["x", "y"]}, {"text": "b"}])
        with pytest.raises(ValueError, match=r"`stages\[1\]` must be a dict with a non-empty 'text'"):
            plot_flow(tmp_path / "f.png", [{"text": "a"}, {"text": " "}])


def test_confusion(tmp_path):
    _png(plot_confusion(tmp_path / "cm.png", {"patients": {"tp": 15, "fp": 4, "fn": 1, "tn": 20},
                                              "slices": {"tp": 150, "fp": 90, "fn": 30, "tn": 964}}))
    _png(plot_confusion(tmp_path / "cm0.png", {"no bleeds": {"tp": 0, "fp": 3, "fn": 0, "tn": 37}}))  # an empty row
    with pytest.raises(ValueError, match="counts must be integers >= 0"):
        plot_confusion(tmp_path / "bad.png", {"slices": {"tp": -1, "fp": 0, "fn": 0, "tn": 1}})
    with pytest.raises(ValueError, match=r"Missing \['tn'\]"):
        plot_confusion(tmp_path / "bad.png", {"slices": {"tp": 1, "fp": 0, "fn": 0}})


def _slice() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 48, xx - 48)
    hu = np.full((96, 96), -1000.0, dtype=np.float32)
    hu[r < 44] = 1200.0
    hu[r < 40] = 35.0
    truth = np.hypot(yy - 40, xx - 60) < 7
    hu[truth] = 70.0
    return hu, truth


class TestPlotCase:
    def test_three_windows_without_cam_or_truth(self, tmp_path):
        hu, _ = _slice()
        _png(plot_case(tmp_path / "case.png", hu))

    def test_attention_panel_and_truth_contour(self, tmp_path):
        hu, truth = _slice()
        plain = _png(plot_case(tmp_path / "plain.png", hu, truth=truth))
        cam = np.zeros((6, 6), dtype=np.float32)
        cam[2, 3] = 1.0
        tile = _png(plot_case(tmp_path / "tile.png", hu, cam=cam, truth=truth, title="pseudonym 3f2a  p = 0.93"))
        assert tile.shape[1] > 1.2 * plain.shape[1]  # the fourth panel
        lime = (plain[..., 1] > 200) & (plain[..., 0] < 80) & (plain[..., 2] < 80)  # BGR: the truth contour
        assert lime.sum() > 30

    def test_refuses_a_truth_of_the_wrong_shape(self, tmp_path):
        hu, truth = _slice()
        with pytest.raises(ValueError, match=r"`truth` must have the slice's shape \(96, 96\)"):
            plot_case(tmp_path / "case.png", hu, truth=truth[:-1])
        with pytest.raises(ValueError, match="`hu` must be 2-D"):
            plot_case(tmp_path / "case.png", hu[None])
