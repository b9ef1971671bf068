"""brain_audit.model.predictions: probabilities of a model on HU arrays and on cached slices read chunk by chunk.

Expected values come from outside the code under test: a tiny Keras model whose weights are set here, so
its probabilities are written down with numpy, and ``model.predict`` on the whole cached array at once.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brain_audit.model.predictions import any_column, model_context, predict, predict_ids
from brain_audit.rsna import LABEL_COLUMNS
from support.context_cache import hand_built_cache
from support.fixed_cache import FixedCache

SIDE = 8
W = np.array([[0.02, -0.01]], np.float32)  # (1 pooled channel, 2 outputs)
B = np.array([-1.0, 0.5], np.float32)


def mean_model(channels: int = 1) -> keras.Model:
    """p_j = sigmoid(W_j * mean of channel 0 + B_j): global average pooling, then one Dense layer."""
    inp = keras.Input((SIDE, SIDE, channels))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    if channels > 1:
        pooled = keras.layers.Lambda(lambda t: t[:, :1])(pooled)
    dense = keras.layers.Dense(2, activation="sigmoid")
    model = keras.Model(inp, dense(pooled))
    dense.set_weights([W, B])
    return model


def by_hand(hu: np.ndarray) -> np.ndarray:
    """(N, 2) float64 probabilities of mean_model on (N, SIDE, SIDE) HU."""
    m = hu.reshape(len(hu), -1).astype(np.float64).mean(axis=1)
    return 1.0 / (1.0 + np.exp(-(m[:, None] * W[0].astype(np.float64) + B.astype(np.float64))))


def slices(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 3072, size=(n, SIDE, SIDE)).astype(np.int16)


def test_any_column():
    assert any_column("any") == 0
    assert any_column("six") == 5 == LABEL_COLUMNS.index("any")


class TestPredict:
    def test_channel_axis_added_for_a_one_channel_model(self):
        hu = slices(5).astype(np.float32)
        model = mean_model()
        got = predict(model, hu)  # (N, H, W)
        assert got.shape == (5, 2) and got.dtype == np.float64
        np.testing.assert_allclose(got, by_hand(hu), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(predict(model, hu[..., None]), got)  # (N, H, W, 1): the same

    def test_channels_of_a_context_model_are_left_alone(self):
        hu = slices(3, seed=1).astype(np.float32)
        x = np.stack([hu, np.zeros_like(hu), -hu], axis=-1)  # (N, H, W, 3): channel 0 is what the model reads
        np.testing.assert_allclose(predict(mean_model(channels=3), x), by_hand(hu), rtol=0, atol=1e-6)


class TestPredictIds:
    @pytest.mark.parametrize("chunk", [1, 2, 3, 4, 6, 7, 10])
    def test_equals_model_predict_on_the_whole_array(self, chunk):
        hu = slices(7, seed=2)
        ids = [f"ID_{k:03d}" for k in (4, 0, 6, 2, 5, 1, 3)]  # not in cache order
        cache = FixedCache({f"ID_{k:03d}": hu[k] for k in range(7)})
        model = mean_model()
        order = [int(i[3:]) for i in ids]
        whole = model.predict(hu[order].astype(np.float32)[..., None], verbose=0)
        for column in (0, 1):
            got = predict_ids(model, cache, ids, column, chunk=chunk)
            assert got.shape == (7,) and got.dtype == np.float64
            np.testing.assert_allclose(got, whole[:, column], rtol=0, atol=1e-6)
            np.testing.assert_allclose(got, by_hand(hu[order])[:, column], rtol=0, atol=1e-6)
        # read chunk by chunk, in order, each ID once per pass
        sizes = [len(r) for r in cache.reads[: len(cache.reads) // 2]]
        assert sizes == [min(chunk, 7 - s) for s in range(0, 7, chunk)]
        assert sum(cache.reads[: len(sizes)], []) == ids
        # column None: every output, (N, outputs), the columns above side by side
        every = predict_ids(model, cache, ids, None, chunk=chunk)
        assert every.shape == (7, 2) and every.dtype == np.float64
        np.testing.assert_allclose(every, by_hand(hu[order]), rtol=0, atol=1e-6)

    def test_no_ids(self):
        cache = FixedCache({})
        assert predict_ids(mean_model(), cache, [], 0).shape == (0,) and cache.reads == []
        assert predict_ids(mean_model(), cache, [], None).shape == (0, 2) and cache.reads == []


class TestContext:
    def test_model_context_from_the_input_shape(self):
        assert [model_context(mean_model(c)) for c in (1, 3, 5)] == [0, 1, 2]
        with pytest.raises(ValueError, match=r"`model` input must have 1 \+ 2 \* context channels \(odd\). "
                                             r"Got shape \(None, 8, 8, 2\) instead."):
            model_context(mean_model(2))

    def test_predict_ids_gives_a_context_model_its_neighbours(self, tmp_path):
        """mean_model(3) reads channel 0, the slice below: ID_x (z 7.5) sits on ID_c (20 HU); ID_m is the bottom of
        its series, so its own slice (10 HU) stands below it; ID_b (z 3) has ID_z (-10 HU) below, not ID_m (z 0)."""
        cache = hand_built_cache(tmp_path, context=1, side=SIDE)
        got = predict_ids(mean_model(3), cache, ["ID_x", "ID_m", "ID_b"], None)
        below = np.array([20.0, 10.0, -10.0])
        expect = 1.0 / (1.0 + np.exp(-(below[:, None] * W[0].astype(np.float64) + B.astype(np.float64))))
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-6)
