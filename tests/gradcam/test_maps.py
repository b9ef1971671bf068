"""brain_audit.gradcam.maps against known answers and the keras.io recipe.

Expected maps come from outside the code under test:

* hand-built Keras models whose weights are set so the Grad-CAM map can be written down with
  numpy (tests/support/cam_models.py: a 1x1 convolution after a fixed region gate, the map is the
  gated input, normalised);
* the keras.io Grad-CAM recipe (Chollet, keras.io/examples/vision/grad_cam), written out plainly below
  on one image at a time, on the same EfficientNetB0 with fixed random weights (``weights=None``).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from brain_audit.gradcam.maps import GradCAM, audit_cam, audit_layer, cell_size_mm, find_layer, grad_cam, layer_names
from support.cam_models import CONV_K, DENSE_W, REGION, RNG, S, Gate, expected_gated_map, gated_model


# ----------------------------------------------------------------------------- the keras.io recipe
def keras_io_recipe(model: keras.Model, img: np.ndarray) -> np.ndarray:
    """keras.io's make_gradcam_heatmap on ONE image, adapted only to reach the nested backbone.

    grad_model = Model(inputs, [last conv output, predictions]); tape on predictions[:, 0];
    pooled_grads = reduce_mean(grads, axis=(0, 1, 2)); heatmap = conv_out[0] @ pooled_grads;
    heatmap = maximum(heatmap, 0) / reduce_max(heatmap). The nested EfficientNet is reached the
    plain way: the outer layers are called one after another around a two-output backbone model.
    """
    backbone = model.get_layer("efficientnetb0")
    two = keras.Model(backbone.inputs, [backbone.get_layer("top_activation").output, backbone.output])
    with tf.GradientTape() as tape:
        x = model.get_layer("multi_window")(tf.constant(img[None, ..., None], tf.float32))
        last_conv_layer_output, feats = two(x, training=False)
        x = model.get_layer("avg_pool")(feats)
        preds = model.get_layer("predictions")(x)
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


# ----------------------------------------------------------------------------- tests
class TestKnownAnswers:
    def test_map_of_a_model_that_sees_one_region_is_that_region(self):
        x = RNG.uniform(0.0, 1.0, (3, S, S)).astype("float32")
        x[:, 2:8, 20:30] = 5.0  # brighter outside the region: the model cannot see it
        cam = grad_cam(gated_model(), x, layer="target")
        for i in range(3):
            np.testing.assert_allclose(cam[i], expected_gated_map(x[i], 0), atol=1e-5)
            assert REGION[np.unravel_index(np.argmax(cam[i]), cam[i].shape)]
        assert cam[:, ~REGION].max() == 0.0

    def test_six_outputs_and_a_zero_map_warns(self):
        model = gated_model(units=6)
        x = RNG.uniform(0.0, 1.0, (2, S, S)).astype("float32")
        for column in (0, 3, 4, 5):
            cam = grad_cam(model, x, layer="target", output_index=column)
            np.testing.assert_allclose(cam[0], expected_gated_map(x[0], column), atol=1e-5)
        # column 2: w = (1, -1, 0, 0) on k = (1, 2, -, 0.5) gives 1 - 2 < 0, no positive evidence anywhere
        with pytest.warns(RuntimeWarning, match="2 of 2 maps are zero everywhere"):
            cam = grad_cam(model, x, layer="target", output_index=2)
        assert cam.dtype == np.float32 and not cam.any() and np.isfinite(cam).all()

    def test_logit_not_sigmoid_a_saturated_output_keeps_its_map(self):
        x = RNG.uniform(0.0, 1.0, (2, S, S)).astype("float32")
        saturated = gated_model(dense_bias=60.0)  # sigmoid(60 + ...) == 1.0 in float32
        assert np.all(saturated.predict(x[..., None], verbose=0) == 1.0)
        with tf.GradientTape() as tape:  # the gradient of the probability has vanished ...
            xt = tf.constant(x[..., None])
            tape.watch(xt)
            p = saturated(xt)
        assert float(tf.reduce_max(tf.abs(tape.gradient(p, xt)))) == 0.0
        cam = grad_cam(saturated, x, layer="target")  # ... the logit's has not
        np.testing.assert_allclose(cam, grad_cam(gated_model(), x, layer="target"), atol=1e-6)

    def test_linear_head_and_activation_layer_head(self):
        x = RNG.uniform(0.0, 1.0, (1, S, S)).astype("float32")
        linear = gated_model(activation="linear")
        np.testing.assert_allclose(grad_cam(linear, x, layer="target")[0], expected_gated_map(x[0], 0), atol=1e-5)
        inp = keras.Input((S, S, 1))
        flat = keras.Model(inp, keras.layers.Activation("sigmoid")(linear.layers[-1](linear.layers[-2](linear.layers[-3](linear.layers[-4](inp))))))
        np.testing.assert_allclose(grad_cam(flat, x, layer="target")[0], expected_gated_map(x[0], 0), atol=1e-5)
        nested = keras.Model(inp, keras.layers.Activation("sigmoid")(linear(inp)))
        with pytest.raises(ValueError, match="must end in a Dense layer .* Got a final Functional"):
            GradCAM(nested, layer="target")

    def test_gradcam_plus_plus_by_hand(self):
        x = RNG.uniform(0.1, 1.0, (1, S, S)).astype("float32")
        cam = GradCAM(gated_model(), layer="target", method="gradcam++")(x)[0]
        # Chattopadhay et al. eq. 19 with constant gradients g_c = w_c / S^2 over a map A_c:
        # alpha_c = g^2 / (2 g^2 + sum(A_c) g^3); weight_c = sum_ij alpha_c relu(g_c)
        a = np.maximum(CONV_K[None, None, :] * (x[0] * REGION)[..., None], 0.0)
        g = DENSE_W[:, 0] / S**2
        denom = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
        alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0.0)
        ref = np.maximum((a * (alpha * np.maximum(g, 0) * S * S)).sum(-1), 0)
        np.testing.assert_allclose(cam, ref / ref.max(), atol=1e-5)


# ----------------------------------------------------------------------------- HiResCAM and LayerCAM
#: A fixed spatial weight after the explained layer: +1 on the left half, -0.5 on the right, so the
#: gradient of the logit varies over space and the methods disagree in ways written down by hand.
SPATIAL = np.where(np.arange(S)[None, :] < S // 2, 1.0, -0.5) * np.ones((S, 1))


def spatial_model() -> keras.Model:
    """1x1 convolution (CONV_K, relu) -> multiply by SPATIAL -> global average -> Dense (DENSE_W[:, 0])."""
    inp = keras.Input((S, S, 1))
    x = keras.layers.Conv2D(4, 1, activation="relu", use_bias=False, name="target")(inp)
    x = Gate(SPATIAL, name="spatial")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("target").set_weights([CONV_K.reshape(1, 1, 1, 4)])
    model.get_layer("head").set_weights([DENSE_W[:, :1], np.zeros(1, "float32")])
    return model


def by_hand(x: np.ndarray, method: str) -> np.ndarray:
    """A_c = relu(k_c x); dlogit/dA_c(i, j) = w_c SPATIAL(i, j) / S^2; each method's formula, normalised."""
    a = np.maximum(CONV_K[None, None, :] * x[..., None], 0.0)
    g = DENSE_W[None, None, :, 0] * SPATIAL[..., None] / S**2
    if method == "hirescam":  # Draelos & Carin 2020: relu(sum_c g_c(i, j) A_c(i, j))
        cam = np.maximum((g * a).sum(-1), 0.0)
    elif method == "layercam":  # Jiang et al. 2021: relu(sum_c relu(g_c(i, j)) A_c(i, j))
        cam = np.maximum((np.maximum(g, 0.0) * a).sum(-1), 0.0)
    else:  # Grad-CAM: gradients averaged over space first
        cam = np.maximum((g.mean(axis=(0, 1))[None, None, :] * a).sum(-1), 0.0)
    return cam / cam.max()


class TestHiResCAMAndLayerCAM:
    @pytest.mark.parametrize("method", ["hirescam", "layercam", "gradcam"])
    def test_each_method_matches_its_formula(self, method):
        x = RNG.uniform(0.1, 1.0, (2, S, S)).astype("float32")
        cam = GradCAM(spatial_model(), layer="target", method=method)(x)
        for i in range(2):
            np.testing.assert_allclose(cam[i], by_hand(x[i], method), atol=1e-5)

    def test_hirescam_keeps_where_the_evidence_is_and_grad_cam_does_not(self):
        x = RNG.uniform(0.1, 1.0, (1, S, S)).astype("float32")
        model = spatial_model()
        hires = GradCAM(model, layer="target", method="hirescam")(x)[0]
        plain = GradCAM(model, layer="target", method="gradcam")(x)[0]
        # the right half lowers the logit: HiResCAM gives it nothing, Grad-CAM (mean weight) lights it up
        assert hires[:, S // 2 :].max() == 0.0 and hires[:, : S // 2].min() > 0.0
        assert plain[:, S // 2 :].mean() > 0.1

    def test_a_model_without_spatial_weights_gives_grad_cams_map(self):
        """After global pooling alone the gradient is constant over space: all three methods coincide
        with the hand-derived Grad-CAM map of the gated model (CAM, Zhou et al. 2016)."""
        x = RNG.uniform(0.0, 1.0, (2, S, S)).astype("float32")
        for method in ("hirescam", "gradcam"):
            cam = grad_cam(gated_model(), x, layer="target", method=method)
            for i in range(2):
                np.testing.assert_allclose(cam[i], expected_gated_map(x[i], 0), atol=1e-5)


class TestAuditLayer:
    @pytest.mark.parametrize(
        ("size", "layer", "cells"),
        # EfficientNetB0's strides (Tan & Le 2019, table 1): block2 /4, block3 /8, block4-5 /16, block6-7 /32
        [(64, "block2b_add", 16), (96, "block2b_add", 24), (128, "block3b_add", 16), (256, "block3b_add", 32),
         (512, "block3b_add", 64)],
    )
    def test_the_deepest_block_of_stride_8_or_less_with_16_cells_a_side(self, size, layer, cells):
        from brain_audit.model.network import build_model

        model = build_model(image_size=size, weights=None, seed=1)
        assert audit_layer(model) == f"efficientnetb0/{layer}"
        cam = audit_cam(model)
        assert cam.method == "hirescam" and cam.cells == (cells, cells)
        assert audit_cam(model) is cam  # built once per model

    def test_a_model_without_efficientnet_blocks_and_a_tiny_input(self):
        assert audit_layer(gated_model()) == "target"  # the deepest 4-D layer with >= 16 cells: 32 x 32
        assert audit_layer(gated_model(), min_cells=64) == "gate"  # none that fine: the finest one (first)
        with pytest.raises(ValueError, match=r"`min_cells` must be an int >= 1\. Got 0 instead"):
            audit_layer(gated_model(), min_cells=0)

    def test_cell_size_in_mm(self):
        assert cell_size_mm(24, 96, 200.0) == {"map_cells": 24, "cell_px": 4.0, "cell_mm": 200.0 / 24,
                                                "cell_fraction_of_field": 1 / 24}
        assert cell_size_mm(3, 96, None)["cell_mm"] is None
        with pytest.raises(ValueError, match=r"`input_size` must be an int >= cells \(24\)\. Got 16 instead"):
            cell_size_mm(24, 16, 200.0)


def test_the_per_model_cache_lets_a_deleted_model_go():
    import gc
    import weakref

    from brain_audit.gradcam import maps as gradcam

    model = gated_model()
    grad_cam(model, RNG.uniform(0, 1, (1, S, S)).astype("float32"), layer="target")
    assert model in gradcam._CACHE
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # nothing in the cache (or the traced function) keeps the model alive


class TestEfficientNet:
    def test_agrees_with_the_keras_io_recipe(self, effnet):
        model, batch = effnet
        cams = grad_cam(model, batch)  # default layer: top_activation inside the nested backbone
        for i in range(len(batch)):
            ref = keras_io_recipe(model, batch[i])
            ref_up = tf.image.resize(ref[None, ..., None], (128, 128), method="bilinear")[0, ..., 0].numpy()
            assert np.corrcoef(ref_up.ravel(), cams[i].ravel())[0, 1] > 0.99

    def test_batched_equals_one_at_a_time(self, effnet):
        model, batch = effnet
        together = grad_cam(model, batch)
        alone = np.concatenate([grad_cam(model, batch[i : i + 1]) for i in range(len(batch))])
        np.testing.assert_allclose(together, alone, atol=1e-5)
        # and the maps differ between slices (per-sample pooling, not a batch average)
        assert np.abs(together[0] - together[2]).max() > 0.05

    def test_default_layer_is_found_inside_the_nested_backbone(self, effnet):
        model, _ = effnet
        assert GradCAM(model).layer == "efficientnetb0/top_activation"
        assert [p.name for p in find_layer(model, "block6a_expand_conv")] == ["efficientnetb0", "block6a_expand_conv"]
        assert "efficientnetb0/top_conv" in layer_names(model)

    def test_missing_layer_lists_the_available_ones(self, effnet):
        model, _ = effnet
        with pytest.raises(ValueError, match=r"`layer` must name a layer.*Got 'top_cnov' instead\. Available: .*efficientnetb0/top_activation"):
            grad_cam(model, np.zeros((1, 128, 128), "float32"), layer="top_cnov")

    def test_bad_arguments(self, effnet):
        model, batch = effnet
        with pytest.raises(ValueError, match=r"`output_index` must be in \[0, 0\]. Got 1 instead"):
            GradCAM(model, output_index=1)
        with pytest.raises(ValueError, match=r"`method` must be one of \('gradcam', 'gradcam\+\+', 'hirescam', 'layercam'\)\. Got 'cam' instead"):
            GradCAM(model, method="cam")
        with pytest.raises(ValueError, match=r"`hu_batch` must be \(N, H, W\) or .* Got shape \(128, 128\) instead"):
            grad_cam(model, batch[0])


@pytest.mark.slow
def test_mixed_precision_gives_float32_maps_close_to_float32():
    from brain_audit.model.network import build_model

    x = RNG.normal(30.0, 300.0, (2, 64, 64)).astype("float32")
    ref_model = build_model(image_size=64, weights=None, seed=3)
    ref = grad_cam(ref_model, x)
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        mixed = build_model(image_size=64, weights=None, seed=3)
    finally:
        keras.config.set_dtype_policy(old)
    mixed.set_weights(ref_model.get_weights())
    assert mixed.get_layer("efficientnetb0").get_layer("top_activation").compute_dtype == "float16"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cam = grad_cam(mixed, x)
    assert cam.dtype == np.float32 and np.isfinite(cam).all()
    for i in range(2):
        assert np.corrcoef(cam[i].ravel(), ref[i].ravel())[0, 1] > 0.98
