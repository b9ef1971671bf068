"""brain_audit.gradcam.occlusion: occlusion-sensitivity maps against values worked out by hand on a linear model,
and the local-median reference against a slow obvious median."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras

from brain_audit.gradcam.occlusion import local_median, occlusion_maps, window_starts


def linear_model(weights: np.ndarray, bias: float) -> keras.Model:
    """logit = sum(weights * HU) + bias (Flatten, Dense, sigmoid): occluding a window drops the logit by
    sum over the window of weights * (HU - reference)."""
    side = weights.shape[0]
    inp = keras.Input((side, side, 1))
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model.get_layer("head").set_weights([weights.reshape(-1, 1).astype("float32"), np.array([bias], "float32")])
    return model


class TestWindowStarts:
    @pytest.mark.parametrize(("size", "patch", "stride", "expected"), [
        (10, 4, 3, [0, 3, 6]),  # 6 + 4 = 10: the last one is already flush
        (10, 4, 4, [0, 4, 6]),  # 8 + 4 > 10: a last window flush with the edge is added
        (8, 8, 4, [0]),
        (5, 1, 2, [0, 2, 4]),
    ])
    def test_starts_cover_every_pixel(self, size, patch, stride, expected):
        assert window_starts(size, patch, stride) == expected

    def test_bad_sizes_are_refused_by_name(self):
        with pytest.raises(ValueError, match=r"`patch` must be in \[1, 8\]\. Got 9 instead\."):
            window_starts(8, 9, 1)
        with pytest.raises(ValueError, match=r"`stride` must be >= 1\. Got 0 instead\."):
            window_starts(8, 2, 0)


class TestLocalMedian:
    def test_matches_a_slow_median_with_repeated_edges(self):
        rng = np.random.default_rng(3)
        hu = rng.normal(40, 300, size=(2, 9, 7)).astype(np.float32)
        got = local_median(hu, 5)
        padded = np.pad(hu, ((0, 0), (2, 2), (2, 2)), mode="edge")
        for n in range(2):
            for y in range(9):
                for x in range(7):
                    assert got[n, y, x] == np.median(padded[n, y:y + 5, x:x + 5])

    def test_erases_a_small_dense_object_and_keeps_the_tissue(self):
        hu = np.full((1, 24, 24), 35.0, np.float32)
        hu[0, 10:12, 10:12] = 3071.0  # a 2 x 2 coil in brain
        assert np.all(local_median(hu, 9) == 35.0)


class TestOcclusionMaps:
    def test_a_single_weighted_pixel_by_hand(self):
        """8 x 8, windows of 4 every 2 (starts 0, 2, 4): one pixel of 10 HU at (1, 1), weight 0.1 everywhere,
        reference 0. Only the window at (0, 0) holds it, and hiding it drops the logit by 0.1 * 10 = 1; each
        pixel's value is 1 over the number of windows covering it."""
        side = 8
        hu = np.zeros((1, side, side), np.float32)
        hu[0, 1, 1] = 10.0
        model = linear_model(np.full((side, side), 0.1), bias=-0.5)
        got = occlusion_maps(model, hu, patch=4, stride=2, reference=np.zeros_like(hu))
        cover = np.array([1, 1, 2, 2, 2, 2, 1, 1], float)  # windows covering each row (or column)
        expected = np.zeros((side, side))
        expected[0:4, 0:4] = 1.0 / np.outer(cover[0:4], cover[0:4])
        np.testing.assert_allclose(got[0], expected, atol=1e-5)

    def test_negative_evidence_gives_a_negative_map(self):
        side = 8
        w = np.zeros((side, side))
        w[6, 6] = -0.2  # HU there lowers the score
        hu = np.zeros((2, side, side), np.float32)
        hu[:, 6, 6] = [5.0, 0.0]  # the second slice equals its reference: no window is scored
        got = occlusion_maps(linear_model(w, 0.0), hu, patch=8, stride=8, reference=np.zeros_like(hu))
        np.testing.assert_allclose(got[0], np.full((side, side), -1.0), atol=1e-5)
        assert np.all(got[1] == 0.0)

    def test_default_reference_and_window_on_a_coil(self):
        """64 px: windows of 8 every 4, the reference the 17 x 17 local median; a 2 x 2 coil of 3000 HU in
        35-HU brain read by a model with weight w on those four pixels. Every window over (30, 40) holds the
        whole coil, so the map there is the full drop 4 * w * (3000 - 35)."""
        side = 64
        hu = np.full((1, side, side), 35.0, np.float32)
        hu[0, 30:32, 40:42] = 3000.0
        w = np.zeros((side, side))
        w[30:32, 40:42] = 1e-4
        got = occlusion_maps(linear_model(w, -1.0), hu)
        assert got[0, 30, 40] == pytest.approx(4 * 1e-4 * (3000 - 35), rel=1e-4)
        assert np.unravel_index(np.argmax(got[0]), got[0].shape) == (28, 40)  # the block all of whose windows hold it
        assert got[0, :20].max() == 0.0 and got[0, :, :30].max() == 0.0  # windows away from the coil: unchanged

    def test_a_two_channel_input_is_occluded_in_every_channel(self):
        side = 8
        inp = keras.Input((side, side, 2))
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inp))
        model = keras.Model(inp, out)
        model.layers[-1].set_weights([np.full((side * side * 2, 1), 0.05, "float32"), np.zeros(1, "float32")])
        hu = np.zeros((1, side, side, 2), np.float32)
        hu[0, 2, 2, :] = [4.0, 6.0]
        got = occlusion_maps(model, hu, patch=8, stride=8, reference=np.zeros_like(hu))
        np.testing.assert_allclose(got[0], np.full((side, side), 0.05 * 10), atol=1e-5)

    def test_a_bad_shape_is_refused(self):
        with pytest.raises(ValueError, match=r"`hu_batch` must be \(N, S, S\) or \(N, S, S, C\)\. Got shape \(4, 6\)"):
            occlusion_maps(None, np.zeros((4, 6)))
