"""Hand-built Keras models whose Grad-CAM map can be written down with numpy (gradcam and hard-negative tests).

A 1x1 convolution after a fixed region gate: the model sees only that region, so its map is the gated
input, normalised (:func:`expected_gated_map` derives it by hand; :func:`hu_gate_model` is the same on HU).
``RNG`` is the one random stream the gradcam tests draw their inputs from.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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


def hu_gate_model(region: np.ndarray, weight: float = 1.0, bias: float = -2.0) -> keras.Model:
    """A one-channel model on HU that sees only ``region``: gate, 1x1 convolution (kernel 1, relu), global
    average pooling, Dense sigmoid.

    By hand: p = sigmoid(weight * sum(relu(HU inside region)) / side^2 + bias), and, for weight > 0, its
    Grad-CAM map is relu(HU) inside the region divided by its maximum (the gradient of the logit is the
    constant weight / side^2 on every channel-0 pixel).
    """
    side = region.shape[0]
    inp = keras.Input((side, side, 1))
    x = Gate(region, name="gate")(inp)
    x = keras.layers.Conv2D(1, 1, activation="relu", use_bias=False, name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inp, out)
    model.get_layer("target").set_weights([np.ones((1, 1, 1, 1), "float32")])
    model.get_layer("head").set_weights([np.array([[weight]], "float32"), np.array([bias], "float32")])
    return model


def hu_gate_probability(hu: np.ndarray, region: np.ndarray, weight: float = 1.0, bias: float = -2.0) -> float:
    """p of :func:`hu_gate_model` on one (side, side) HU slice, by hand in float64."""
    z = weight * np.maximum(hu.astype(np.float64) * region, 0.0).sum() / region.size + bias
    return float(1.0 / (1.0 + np.exp(-z)))
