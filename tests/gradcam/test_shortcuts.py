"""brain_audit.gradcam.shortcuts: the counterfactual (intervention) test, the randomisation sanity check and a
planted shortcut.

Expected values come from outside the code under test: a metal detector whose probabilities are written
down by hand, a map that ignores the weights, and models trained here with and without a planted coil.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from brain_audit.gradcam.attention import attention_profile
from brain_audit.gradcam.maps import grad_cam
from brain_audit.gradcam.shortcuts import counterfactual_effect, randomization_check
from support.cam_models import REGION, RNG, Gate, S


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


def test_the_randomisation_check_compares_maps_over_the_head_only():
    """Outside the head both maps are ~0 and agree trivially; the check ranks pixels of the head (drawn disc)."""
    from brain_audit.gradcam.shortcuts import _head_pixels
    from support.heads import SIDE, disc, head_slice

    hu = np.stack([head_slice()[0], np.full((SIDE, SIDE), -1000, np.int16)]).astype("float32")
    within = _head_pixels(hu, (SIDE, SIDE))
    np.testing.assert_array_equal(within[0], disc(27, 32, 32))  # the drawn scalp disc (radius 27) is the head
    assert within[1].all()  # no head on an all-air slice: every pixel counts
