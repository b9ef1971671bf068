"""brain_audit.gradcam against known answers and the keras.io recipe.

Expected maps come from outside the code under test:

* hand-built Keras models whose weights are set here so the Grad-CAM map can be written down with
  numpy (a 1x1 convolution after a fixed region gate: the map is the gated input, normalised);
* the keras.io Grad-CAM recipe (Chollet, keras.io/examples/vision/grad_cam), written out plainly below
  on one image at a time, on the same EfficientNetB0 with fixed random weights (``weights=None``).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from brain_audit.audit.subgroups import stratified_metrics
from brain_audit.gradcam.attention import (
    BONE_FOCUS_SHARE,
    FLAGS,
    attention_profile,
    audit_batch,
    mimic_presence,
    profile_columns,
)
from brain_audit.gradcam.maps import GradCAM, find_layer, grad_cam, layer_names
from brain_audit.gradcam.overlays import overlay_title, save_overlay
from brain_audit.gradcam.shortcuts import counterfactual_effect, randomization_check

S = 32  # side of the hand-built models
RNG = np.random.default_rng(20240601)


# ----------------------------------------------------------------------------- hand-built models
class Gate(keras.layers.Layer):
    """Multiplies the input by a fixed 0/1 region: the model sees only that region."""

    def __init__(self, region: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.region = tf.constant(region.astype("float32")[None, :, :, None])

    def call(self, x):
        return x * self.region


REGION = np.zeros((S, S), dtype=bool)
REGION[20:28, 4:12] = True  # lower-left square
CONV_K = np.array([1.0, 2.0, -1.0, 0.5], dtype="float32")  # 1x1 conv, relu, 4 channels, no bias
DENSE_W = np.array(  # (4 channels, 6 outputs)
    [
        [1.0, 0.0, 1.0, 0.2, 0.0, 1.0],
        [0.5, 0.0, -1.0, 0.3, 1.0, 0.5],
        [2.0, 1.0, 0.0, 0.1, 0.0, 2.0],
        [-1.0, 0.0, 0.0, 0.4, 0.0, -1.0],
    ],
    dtype="float32",
)


def gated_model(units: int = 1, dense_bias: float = 0.0, activation: str = "sigmoid") -> keras.Model:
    inp = keras.Input((S, S, 1))
    x = Gate(REGION, name="gate")(inp)
    x = keras.layers.Conv2D(4, 1, activation="relu", use_bias=False, name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(units, activation=activation, name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("target").set_weights([CONV_K.reshape(1, 1, 1, 4)])
    model.get_layer("head").set_weights([DENSE_W[:, :units], np.full(units, dense_bias, "float32")])
    return model


def expected_gated_map(x: np.ndarray, column: int) -> np.ndarray:
    """Grad-CAM of the gated model by hand: A_c = relu(k_c x m); dlogit/dA_c = w_c / S^2 everywhere.

    So cam = relu(sum_c (w_c / S^2) relu(k_c x m)) = relu(x m) * max(0, sum_{k_c > 0} w_c k_c) / S^2
    for x >= 0, and normalised by its maximum: x m / max(x m), or zeros when the sum is <= 0.
    """
    s = float(sum(DENSE_W[c, column] * CONV_K[c] for c in range(4) if CONV_K[c] > 0))
    g = np.maximum(x * REGION, 0.0)
    if s <= 0 or g.max() == 0:
        return np.zeros_like(g)
    return g / g.max()


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


@pytest.fixture(scope="module")
def effnet():
    """build_model at 128 px with fixed random weights, and two HU slices."""
    from brain_audit.model.network import build_model

    model = build_model(input_size=128, head="any", dropout=0.2, weights=None, seed=7)
    yy, xx = np.mgrid[0:128, 0:128]
    r = np.hypot(yy - 64, xx - 64)
    hu = np.where(r < 56, 40.0, -1000.0) + np.where((r > 50) & (r < 56), 760.0, 0.0)
    batch = np.stack([hu + RNG.normal(0, 20, hu.shape) for _ in range(4)]).astype("float32")
    batch[1, 30:40, 70:85] = 75.0  # a "bleed"
    batch[2, 60:64, 40:44] = 2500.0  # a "coil"
    return model, batch


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
        with pytest.raises(ValueError, match="`method` must be 'gradcam' or 'gradcam\\+\\+'. Got 'cam' instead"):
            GradCAM(model, method="cam")
        with pytest.raises(ValueError, match=r"`hu_batch` must be \(N, H, W\) or .* Got shape \(128, 128\) instead"):
            grad_cam(model, batch[0])


@pytest.mark.slow
def test_mixed_precision_gives_float32_maps_close_to_float32():
    from brain_audit.model.network import build_model

    x = RNG.normal(30.0, 300.0, (2, 64, 64)).astype("float32")
    ref_model = build_model(input_size=64, weights=None, seed=3)
    ref = grad_cam(ref_model, x)
    old = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        mixed = build_model(input_size=64, weights=None, seed=3)
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


# ----------------------------------------------------------------------------- attention profile
def _strip_masks(n: int = 40) -> dict[str, np.ndarray]:
    """Vertical strips of a (n, n) image: columns 0-9 outside, 10-14 skull, 15-34 intracranial (with a
    2 x 2 calcification at rows 5-6, columns 20-21 and a 1-pixel coil at row 30, column 30), 35-39 scalp."""
    m = {k: np.zeros((n, n), dtype=bool) for k in ("head", "skull", "intracranial", "calcification", "metal")}
    m["head"][:, 10:] = True
    m["skull"][:, 10:15] = True
    m["intracranial"][:, 15:35] = True
    m["calcification"][5:7, 20:22] = True
    m["metal"][30, 30] = True
    return m


class TestAttentionProfile:
    def test_energy_shares_by_hand_and_they_sum_to_one(self):
        masks = _strip_masks()
        cam = np.zeros((40, 40), dtype=np.float32)
        cam[:, 0:10] = 1.0  # outside: 400 units
        cam[:, 10:15] = 2.0  # skull: 400 units
        cam[20, 25] = 200.0  # intracranial peak: 20 * 20 ones below + 200
        cam[:, 15:35] += 1.0
        cam[5:7, 20:22] = 0.0  # nothing on the calcification
        total = 400 + 400 + (800 - 4 + 200)
        prof = attention_profile(cam, masks=masks)
        assert prof["energy_outside_head"] == pytest.approx(400 / total)
        assert prof["energy_skull"] == pytest.approx(400 / total)
        assert prof["energy_metal"] == pytest.approx(1 / total)
        assert prof["energy_intracranial"] == pytest.approx((800 - 4 - 1 + 200) / total)
        assert prof["energy_calcification"] == 0.0 and prof["energy_scalp"] == 0.0
        shares = [v for k, v in prof.items() if k.startswith("energy_")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-12)
        assert sum(v for k, v in prof.items() if k.startswith("area_")) == pytest.approx(1.0)
        assert prof["area_skull"] == pytest.approx(200 / 1600)
        assert (prof["peak_y"], prof["peak_x"], prof["peak_region"]) == (20, 25, "intracranial")
        assert prof["bone_focus"] is (400 / total >= BONE_FOCUS_SHARE)

    def test_pointing_game(self):
        masks = _strip_masks()
        cam = np.zeros((40, 40), dtype=np.float32)
        cam[20, 20] = 1.0
        cam[20, 21] = 1.0
        near = np.zeros((40, 40), dtype=bool)
        near[20, 31:34] = True  # 11 px from the peak at (20, 20)
        far = np.zeros((40, 40), dtype=bool)
        far[36:38, 36:38] = True  # sqrt(16^2 + 16^2) = 22.6 px
        p = attention_profile(cam, masks=masks, lesion_mask=near)
        assert p["pointing_hit"] is True and p["pointing_distance_px"] == pytest.approx(11.0)
        assert p["lesion_energy"] == 0.0 and p["lesion_area"] == pytest.approx(3 / 1600)
        p = attention_profile(cam, masks=masks, lesion_mask=far)
        assert p["pointing_hit"] is False and p["pointing_distance_px"] == pytest.approx(np.hypot(16, 16))
        on = np.zeros((40, 40), dtype=bool)
        on[20, 21] = True
        assert attention_profile(cam, masks=masks, lesion_mask=on)["lesion_energy"] == pytest.approx(0.5)

    def test_flags(self):
        masks = _strip_masks()
        skull_map = np.zeros((40, 40), np.float32)
        skull_map[:, 10:15] = 1.0
        p = attention_profile(skull_map, masks=masks, probability=0.9, label=1)
        assert p["bone_focus"] and p["right_for_wrong_reason"] and not p["device_focus"]
        coil_map = np.zeros((40, 40), np.float32)
        coil_map[28, 30] = 1.0  # 2 px from the coil, and 23 px from the calcification
        coil_map[:, 15:35] += 0.01
        p = attention_profile(coil_map, masks=masks, probability=0.2, label=1, hit_radius_px=5)
        assert p["device_focus"] and not p["calcification_focus"] and not p["bone_focus"]
        assert p["right_for_wrong_reason"] is False  # a miss is not "right"
        calc_map = np.zeros((40, 40), np.float32)
        calc_map[8, 21] = 1.0
        assert attention_profile(calc_map, masks=masks, hit_radius_px=5)["calcification_focus"]
        outside = np.zeros((40, 40), np.float32)
        outside[:, :10] = 1.0
        p = attention_profile(outside, masks=masks)
        assert p["outside_head_focus"] and p["right_for_wrong_reason"] is None
        assert set(FLAGS) <= set(p)

    @given(
        cam=hnp.arrays(np.float32, (6, 6), elements=st.floats(0, 1e3, width=32)),
        labels=hnp.arrays(np.int8, (12, 12), elements=st.integers(0, 7)),
    )
    @settings(max_examples=60, deadline=None)
    def test_shares_of_any_map_over_any_masks_sum_to_one(self, cam, labels):
        keys = ("head", "skull", "intracranial", "calcification", "metal", "head_holder", "scalp")
        masks = {k: labels == i for i, k in enumerate(keys)}  # label 7: in no mask -> "other"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = attention_profile(cam, masks=masks)
        shares = np.array([v for k, v in p.items() if k.startswith("energy_")])
        assert (shares >= 0).all() and (shares <= 1 + 1e-12).all()
        if cam.max() > 0 and p["peak_region"] != "none":
            assert shares.sum() == pytest.approx(1.0, abs=1e-9)
        else:
            assert shares.sum() == 0.0

    def test_zero_map_warns_and_gives_zero_shares(self):
        with pytest.warns(RuntimeWarning, match="zero everywhere"):
            p = attention_profile(np.zeros((10, 10)), masks=_strip_masks(), probability=0.9, label=1)
        assert all(p[k] == 0.0 for k in p if k.startswith("energy_"))
        assert not any(p[f] for f in FLAGS) and p["peak_region"] == "none"

    def test_coarse_map_is_resized_to_the_masks(self):
        cam = np.zeros((4, 4), np.float32)
        cam[:, 0] = 1.0  # left quarter of a 40 px image: outside the head (bilinear spreads a little)
        p = attention_profile(cam, masks=_strip_masks())
        assert p["energy_outside_head"] > 0.6 and p["outside_head_focus"]

    def test_regions_from_hu(self):
        yy, xx = np.mgrid[0:64, 0:64]
        r = np.hypot(yy - 32, xx - 32)
        hu = np.where(r < 28, 30.0, -1000.0) + np.where((r >= 23) & (r < 26), 770.0, 0.0)
        cam = (r < 10).astype(np.float32)
        p = attention_profile(cam, hu=hu)
        assert p["energy_intracranial"] == pytest.approx(1.0)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="`masks` or `hu` must be given"):
            attention_profile(np.ones((4, 4)))
        with pytest.raises(ValueError, match=r"`lesion_mask` must have the masks' shape \(40, 40\)"):
            attention_profile(np.ones((4, 4)), masks=_strip_masks(), lesion_mask=np.ones((5, 5), bool))
        with pytest.warns(RuntimeWarning, match="lesion mask is empty"):
            attention_profile(np.ones((4, 4)), masks=_strip_masks(), lesion_mask=np.zeros((40, 40), bool))


# ----------------------------------------------------------------------------- stratify and intervene
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

    def test_mimic_presence_and_length_check(self):
        masks = _strip_masks()
        assert mimic_presence(masks) == {"metal": True, "calcification": True, "head_holder": False}
        assert mimic_presence(masks, min_pixels=2)["metal"] is False
        with pytest.raises(ValueError, match="one row per slice. Got 3, 3 and 2 instead"):
            stratified_metrics([0, 1, 1], [0.1, 0.2, 0.3], {"metal": [True, False]})


def max_hu_model() -> keras.Model:
    """p = sigmoid(0.01 * max HU - 20): a pure metal detector (sigmoid(10) with a 3,000 HU coil)."""
    inp = keras.Input((S, S, 1))
    x = keras.layers.GlobalMaxPooling2D()(inp)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([np.array([[0.01]], "float32"), np.array([-20.0], "float32")])
    return model


def test_counterfactual_effect_of_a_coil_on_a_metal_detector():
    without = np.full((3, S, S), 30.0, dtype="float32")
    with_coil = without.copy()
    with_coil[:, 10, 10] = [3000.0, 1000.0, 2100.0]
    frame = counterfactual_effect(max_hu_model(), with_coil, without)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(frame["p_with"], sig(0.01 * np.array([3000, 1000, 2100]) - 20), atol=1e-6)
    np.testing.assert_allclose(frame["p_without"], sig(0.3 - 20), atol=1e-6)
    assert frame["flipped"].tolist() == [True, False, True]
    assert frame.attrs["flip_rate"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="must have one shape"):
        counterfactual_effect(max_hu_model(), with_coil, without[:2])


def test_audit_batch_table(effnet):
    model, batch = effnet
    table, maps = audit_batch(model, batch, labels=[1, 0, None, 0], image_ids=["a", "b", "c", "d"])
    assert list(table.columns) == ["image_id", "probability", "label"] + profile_columns() + [
        "has_metal", "has_calcification", "has_head_holder"]
    np.testing.assert_allclose(table["probability"], model.predict(batch[..., None], verbose=0)[:, 0], atol=1e-5)
    np.testing.assert_allclose(maps, grad_cam(model, batch), atol=1e-6)
    assert table["has_metal"].tolist() == [False, False, True, False]  # the 2,500 HU "coil" of slice 2
    np.testing.assert_allclose(table[[c for c in table.columns if c.startswith("energy_")]].sum(axis=1), 1.0)
    assert table["right_for_wrong_reason"].isna().tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match=r"`labels` must hold one entry per slice \(4\). Got 2 instead"):
        audit_batch(model, batch, labels=[1, 0])


class TestRandomizationCheck:
    def test_grad_cam_on_efficientnet_passes_and_weights_come_back(self, effnet):
        model, batch = effnet
        before = [w.copy() for w in model.get_weights()]
        maps = grad_cam(model, batch)
        res = randomization_check(model, batch, steps=3, seed=0)
        assert list(res["table"]["randomised"]) == ["predictions", "efficientnetb0/top", "efficientnetb0/block7a"]
        assert res["trustworthy"] and res["rho_final"] < 0.5
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(grad_cam(model, batch), maps, atol=1e-6)

    def test_a_map_that_ignores_the_weights_is_not_trustworthy(self):
        # one channel, positive weights: re-drawing the Dense weight near its value (sd 0.05 around 1)
        # leaves the map x * region / max unchanged, so the check must say "not trustworthy"
        inp = keras.Input((S, S, 1))
        x = Gate(REGION)(inp)
        x = keras.layers.Conv2D(1, 1, activation="relu", use_bias=False, name="target")(x)
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inp, out)
        model.get_layer("target").set_weights([np.ones((1, 1, 1, 1), "float32")])
        model.layers[-1].set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
        res = randomization_check(model, RNG.uniform(0, 1, (2, S, S)).astype("float32"), layer="target", steps=1)
        assert res["rho_final"] == pytest.approx(1.0) and res["trustworthy"] is False


def test_overlay_png(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    hu = np.where(np.hypot(yy - 32, xx - 32) < 25, 40.0, -1000.0).astype("float32")
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 1.0
    title = overlay_title("ID_0a1b2c3d4", 0.934, {"device_focus": True, "bone_focus": False})
    assert title == "ID_0a1b2c3d4  p=0.934  flags: device_focus"
    path = save_overlay(tmp_path / "o.png", hu, cam, title=title)
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[1] > 1.5 * img.shape[0]  # two panels side by side
    # the heat map (jet: blue where the map is 0) is on the right only; the CT windows have R >= G, B
    left, right = img[:, : img.shape[1] // 2, :3], img[:, img.shape[1] // 2 :, :3]
    assert ((right[..., 2] - right[..., 0]) > 0.2).mean() > 0.1
    assert ((left[..., 2] - left[..., 0]) > 0.2).mean() == 0.0
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]. Got 2 instead"):
        save_overlay(tmp_path / "x.png", hu, cam, alpha=2)


# ----------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_writes_overlays_and_profiles_for_a_phantom_cohort(tmp_path, capsys):
    import pandas as pd

    from brain_audit.cli import main
    from brain_audit.dataset.labels import read_labels
    from brain_audit.model.network import build_model
    from brain_audit.model.weights import save_model
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig

    cohort = generate_cohort(
        tmp_path / "cohort", PhantomConfig(patients=2, slices_per_patient=3, size=128, corrupt_files=1, seed=5), workers=1, progress=False
    )
    model_path = save_model(build_model(input_size=64, weights=None, seed=1), tmp_path / "m.keras")
    out = tmp_path / "audit"
    rc = main(["gradcam", "--model", str(model_path), "--images", cohort["train_dir"], "--out", str(out),
               "--labels", cohort["label_csv"], "--batch-size", "4"])
    assert rc == 0
    table = pd.read_csv(out / "profiles.csv")
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(table) == cohort["images"] == 6 and len(skipped) == 1
    energy = table[[c for c in table.columns if c.startswith("energy_")]].sum(axis=1)
    np.testing.assert_allclose(energy[table["peak_region"] != "none"], 1.0, atol=1e-9)
    labels = read_labels(cohort["label_csv"])
    assert table.set_index("image_id")["label"].to_dict() == labels.loc[table["image_id"], "any"].to_dict()
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == sorted(table["image_id"])
    printed = capsys.readouterr().out
    assert "6 slices explained, 1 skipped" in printed
    sanity = pd.read_csv(out / "sanity.csv")
    assert sanity["randomised"].tolist() == ["predictions", "efficientnetb0/top", "efficientnetb0/block7a", "efficientnetb0/block6d"]
    import json

    record = json.loads((out / "run.json").read_text())
    assert record["sanity"]["trustworthy"] == (sanity["spearman_mean"].iloc[-1] < 0.5)
    assert record["n_images"] == 6 and record["config"]["layer"] == "efficientnetb0/top_activation"
    assert "sanity check (Adebayo et al. 2018)" in printed


# ----------------------------------------------------------------------------- a planted shortcut
def _phantom_slices(coil: tuple[float, float], seed: int, patients: int, slices: int, force=None):
    """HU at 128 px (for the region masks), at 64 px (for the model) and the slice labels."""
    from brain_audit.phantom.config import PhantomConfig
    from brain_audit.phantom.lesions import MIMICS
    from brain_audit.phantom.render import render_slice
    from brain_audit.rsna import SUBTYPES
    from brain_audit.windowing import resize_hu

    probs = {m: (0.0, 0.0) for m in MIMICS}
    probs["coil"] = coil
    cfg = PhantomConfig(patients=patients, slices_per_patient=slices, size=128, prevalence=0.5, seed=seed,
                        mimic_probabilities=probs, defect_fraction=0.0)
    full, small, labels = [], [], []
    for p in range(patients):
        for s in range(slices):
            hu, truth = render_slice(cfg, p, s, force)
            full.append(hu)
            small.append(resize_hu(hu, 64))
            labels.append(int(any(truth[t].any() for t in SUBTYPES)))
    return full, np.stack(small), np.array(labels)


def _small_cnn(seed: int) -> keras.Model:
    """HU / 1000 -> three 3x3 conv blocks -> GAP -> Dense sigmoid: trains in seconds on 2 CPU cores.

    (EfficientNetB0 from random weights needs minutes to learn anything at this size; see issue 5.
    The audit does not care which network it explains.)"""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((64, 64, 1))
    x = keras.layers.Rescaling(1.0 / 1000.0)(inp)
    for i, filters in enumerate((16, 32, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    return model


@pytest.mark.slow
def test_a_planted_coil_shortcut_is_caught_by_the_audit():
    """Trained where a coil means a bleed (100 % of bleeding slices, 0 % of others), the model looks at
    the coil on far more held-out slices than the same network trained where coils are independent of
    bleeding (50 % / 50 %); and removing the coil from the same slices moves its probability (the
    intervention), while the clean model's barely moves."""
    from brain_audit.skull import region_masks

    _, x_short, y_short = _phantom_slices((1.0, 0.0), seed=1, patients=30, slices=10)
    _, x_clean, y_clean = _phantom_slices((0.5, 0.5), seed=1, patients=30, slices=10)
    shortcut, clean = _small_cnn(0), _small_cnn(0)
    shortcut.fit(x_short[..., None], y_short, epochs=8, batch_size=32, verbose=0)
    clean.fit(x_clean[..., None], y_clean, epochs=8, batch_size=32, verbose=0)
    full_on, x_on, _ = _phantom_slices((0.0, 0.0), seed=99, patients=8, slices=6, force={"coil": True})
    _, x_off, _ = _phantom_slices((0.0, 0.0), seed=99, patients=8, slices=6, force={"coil": False})
    masks = [region_masks(hu) for hu in full_on]
    assert all(m["metal"].any() for m in masks)
    focus, delta = {}, {}
    for name, model in (("shortcut", shortcut), ("clean", clean)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cams = grad_cam(model, x_on, layer="conv2")
            # 15 px at 224 px (Zhang et al.) is ~ 8 px on these 128 px masks
            focus[name] = np.mean([attention_profile(c, masks=m, hit_radius_px=8)["device_focus"] for c, m in zip(cams, masks)])
        delta[name] = counterfactual_effect(model, x_on, x_off).attrs["mean_delta"]
    assert focus["shortcut"] >= 0.5 and focus["shortcut"] >= focus["clean"] + 0.4, focus
    assert delta["shortcut"] >= 0.05 and delta["shortcut"] >= abs(delta["clean"]) + 0.05, delta


def test_audit_files_feeds_the_model_what_the_cache_stores(tmp_path):
    """A non-square DICOM slice: the probability audit_files reports is the model's on preprocess_slice's
    output (padded to a square with air, resized, int16), not on a stretched resize, and the regions are
    found in the same padded geometry (nothing lands in the padding but air)."""
    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.dicom import encode_slice, read_hu
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.network import build_model

    rows, cols = 96, 64
    yy, xx = np.mgrid[0:rows, 0:cols]
    hu = np.where(np.hypot((yy - 48) / 44, (xx - 32) / 30) < 1, 40.0, -1000.0)
    hu[40:50, 20:30] = 3000.0  # a "coil", to make the prediction depend on geometry
    path = tmp_path / "ID_0abc.dcm"
    path.write_bytes(encode_slice(hu, sop_instance_uid="ID_0abc", patient_id="ID_p", study_instance_uid="ID_s",
                                  series_instance_uid="ID_r"))
    model = build_model(input_size=64, weights=None, seed=3)
    table = audit_files(model, [path], tmp_path / "out", overlays=False, sanity_steps=0)
    expected = model.predict(preprocess_slice(read_hu(path), 64).astype("float32")[None, ..., None], verbose=0)[0, 0]
    assert table.loc[0, "probability"] == pytest.approx(float(expected), abs=1e-5)
    # the padded square is 96 x 96 with 16 air columns each side: outside the head is >= that share
    assert table.loc[0, "area_outside_head"] >= 2 * 16 * 96 / 96**2
