"""brain_audit.model.layers, offline: MultiWindow, the RSNA-weighted loss and the per-column AUC.

Expected values come from outside the code under test: brain_audit.windowing for the windows,
numpy for the loss, scikit-learn for the AUC.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from brain_audit.model.layers import RSNA_LABEL_WEIGHTS, ColumnAUC, MultiWindow, WeightedBinaryCrossentropy
from brain_audit.windowing import BSB, sigmoid_window, to_rgb
from support.model_inputs import SIZE, hu_images


# ---------------------------------------------------------------- MultiWindow
class TestMultiWindow:
    def test_linear_exact_equals_windowing_to_rgb(self):
        hu = hu_images(3)
        got = np.asarray(MultiWindow()(hu))
        expected = np.stack([to_rgb(h[..., 0]) * 255.0 for h in hu])
        assert got.shape == (3, SIZE, SIZE, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert got.min() == 0.0 and got.max() == 255.0

    def test_sigmoid_equals_windowing_sigmoid_window(self):
        hu = hu_images(2, seed=3)
        got = np.asarray(MultiWindow(function="sigmoid")(hu))
        expected = np.stack([sigmoid_window(hu[..., 0], c, w) for c, w in BSB], axis=-1) * 255.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)

    def test_trainable_windows_default_to_sigmoid_with_finite_nonzero_gradients(self):
        import tensorflow as tf

        layer = MultiWindow(trainable_windows=True)
        hu = tf.constant(hu_images(2, seed=4))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(layer(hu) ** 2)
        grads = tape.gradient(loss, layer.trainable_weights)
        assert layer.function == "sigmoid"
        assert [v.name for v in layer.trainable_weights] == ["centers", "widths"]
        for g in grads:
            g = np.asarray(g)
            assert np.all(np.isfinite(g)) and np.all(g != 0)

    def test_fixed_windows_are_weights_but_not_trainable(self):
        layer = MultiWindow()
        layer.build((None, SIZE, SIZE, 1))
        assert layer.trainable_weights == []
        np.testing.assert_array_equal(np.asarray(layer.centers), [40, 80, 600])
        np.testing.assert_array_equal(np.asarray(layer.widths), [80, 200, 2800])

    def test_config_round_trip(self):
        layer = MultiWindow(windows=[(50, 100), (600, 2800)], function="sigmoid", trainable_windows=True, eps=0.01)
        clone = MultiWindow.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        hu = hu_images(1, seed=5)
        np.testing.assert_array_equal(np.asarray(clone(hu)), np.asarray(layer(hu)))
        expected = sigmoid_window(hu[..., 0], 50, 100, eps=0.01) * 255.0
        np.testing.assert_allclose(np.asarray(layer(hu))[..., 0], expected, atol=1e-3)

    def test_context_slices_start_as_the_centre_slice(self):
        rng = np.random.default_rng(6)
        hu = rng.uniform(-200, 200, (2, SIZE, SIZE, 5)).astype(np.float32)
        got = np.asarray(MultiWindow()(hu))
        expected = np.stack([to_rgb(h[..., 2]) * 255.0 for h in hu])
        np.testing.assert_allclose(got, expected, atol=1e-4)

    def test_mixed_precision_computes_in_float32_and_returns_float16(self):
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            layer = MultiWindow()
            hu = hu_images(1, seed=7)
            out = layer(hu)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert layer.input_dtype == "float32" and keras.backend.standardize_dtype(out.dtype) == "float16"
        expected = to_rgb(hu[0, ..., 0]) * 255.0
        # float16 spacing is 0.125 near 255; the float32 result rounded once
        np.testing.assert_allclose(np.asarray(out, dtype=np.float32)[0], expected, atol=0.125)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(function="cubic"), r"`function` must be one of \('linear_exact', 'sigmoid'\). Got 'cubic' instead."),
            (dict(eps=0.5), r"`eps` must be in \(0, 0.5\). Got 0.5 instead."),
            (dict(windows=[(40, 0)]), r"`windows` widths must be finite and > 0. Got \(40.0, 0.0\) instead."),
            (dict(windows=[]), r"`windows` must be a non-empty sequence of \(center, width\). Got \[\] instead."),
        ],
    )
    def test_parameter_errors(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            MultiWindow(**kwargs)

    def test_even_channel_count_is_rejected(self):
        with pytest.raises(ValueError, match=r"must have 1 \+ 2 \* context channels \(odd\). Got shape \(None, 8, 8, 2\)"):
            MultiWindow().build((None, 8, 8, 2))


# ---------------------------------------------------------------- loss and metrics
class TestLossAndMetrics:
    def test_rsna_weighted_bce_by_hand(self):
        rng = np.random.default_rng(9)
        y = rng.integers(0, 2, (5, 6)).astype(np.float32)
        p = rng.uniform(0.02, 0.98, (5, 6)).astype(np.float32)
        w = np.array([1, 1, 1, 1, 1, 2], np.float64)
        bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        expected = np.mean((bce * w).sum(axis=1) / w.sum())
        assert RSNA_LABEL_WEIGHTS == (1.0, 1.0, 1.0, 1.0, 1.0, 2.0)
        assert float(WeightedBinaryCrossentropy()(y, p)) == pytest.approx(expected, rel=1e-5)

    def test_column_auc_is_sklearn_auc_of_that_column(self):
        rng = np.random.default_rng(10)
        y = rng.integers(0, 2, (200, 6)).astype(np.float32)
        p = np.clip(y * 0.3 + rng.uniform(0, 0.7, (200, 6)), 0, 1).astype(np.float32)
        metric = ColumnAUC(column=5, num_thresholds=2000)
        metric.update_state(y, p)
        assert float(metric.result()) == pytest.approx(roc_auc_score(y[:, 5], p[:, 5]), abs=2e-3)

    def test_label_weights_validated(self):
        with pytest.raises(ValueError, match=r"`label_weights` must be non-empty and all > 0. Got \[1.0, 0.0\] instead."):
            WeightedBinaryCrossentropy([1, 0])
