"""brain_audit.windowing against hand-computed windows and window laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from brain_audit.windowing import BONE, BRAIN, BSB, SUBDURAL, resize_hu, sigmoid_window, to_rgb, to_uint8, window


class TestPresets:
    def test_seed_presets_in_channel_order(self):
        assert BSB == ((40, 80), (80, 200), (600, 2800))
        assert (BRAIN, SUBDURAL, BONE) == BSB


class TestWindowByHand:
    @pytest.mark.parametrize(
        "hu, expected",
        [(-1000, 0.0), (0, 0.0), (20, 0.25), (40, 0.5), (60, 0.75), (80, 1.0), (3000, 1.0)],
    )
    def test_brain_linear_exact(self, hu, expected):
        # PS3.3 C.11.2.1.3.2: y = (x - c) / w + 0.5, clipped; brain c=40, w=80
        assert window(np.array([hu]), 40, 80)[0] == pytest.approx(expected, abs=1e-7)

    def test_subdural_and_bone_by_hand(self):
        x = np.array([-20.0, 60.0, 180.0, -800.0, 600.0, 2000.0])
        np.testing.assert_allclose(window(x[:3], 80, 200), [0.0, 0.4, 1.0], atol=1e-7)
        np.testing.assert_allclose(window(x[3:], 600, 2800), [0.0, 0.5, 1.0], atol=1e-7)

    def test_dicom_linear(self):
        # PS3.3 C.11.2.1.2.1: y = (x - (c - 0.5)) / (w - 1) + 0.5
        got = window(np.array([40.0, 0.0, 79.0]), 40, 80, function="linear")
        np.testing.assert_allclose(got, [0.5 / 79 + 0.5, 0.0, 39.5 / 79 + 0.5], atol=1e-6)

    def test_dicom_sigmoid(self):
        # PS3.3 C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w)); 0.5 at c, 1/(1+e^-2) at c + w/2
        got = window(np.array([40.0, 80.0, 0.0]), 40, 80, function="sigmoid")
        np.testing.assert_allclose(got, [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))], rtol=1e-6)

    def test_epp_sigmoid_edges(self):
        got = sigmoid_window(np.array([0.0, 40.0, 80.0]), 40, 80)
        np.testing.assert_allclose(got, [1 / 255, 0.5, 254 / 255], rtol=1e-5)

    def test_dtype_float32(self):
        assert window(np.arange(5, dtype=np.int16), 40, 80).dtype == np.float32

    @pytest.mark.parametrize("width", [0, -80, float("nan")])
    def test_bad_width(self, width):
        with pytest.raises(ValueError, match=r"`width` must be > 0\. Got .* instead\."):
            window(np.zeros(3), 40, width)

    def test_bad_width_dicom_linear(self):
        with pytest.raises(ValueError, match=r"`width` must be > 1\. Got 1 instead\."):
            window(np.zeros(3), 40, 1, function="linear")

    def test_bad_function(self):
        with pytest.raises(ValueError, match=r"`function` must be one of"):
            window(np.zeros(3), 40, 80, function="gamma")  # type: ignore[arg-type]


finite_hu = st.floats(min_value=-3024, max_value=4000, allow_nan=False, width=32)


class TestWindowLaws:
    @settings(max_examples=200, deadline=None)
    @given(
        hu=arrays(np.float32, st.integers(1, 64), elements=finite_hu),
        center=st.floats(-1000, 3000),
        width=st.floats(1.5, 5000),
        function=st.sampled_from(["linear_exact", "linear", "sigmoid"]),
    )
    def test_output_in_unit_interval(self, hu, center, width, function):
        y = window(hu, center, width, function)
        assert np.all((y >= 0) & (y <= 1))

    @settings(max_examples=200, deadline=None)
    @given(
        hu=arrays(np.float32, st.integers(2, 64), elements=finite_hu),
        center=st.floats(-1000, 3000),
        width=st.floats(1.5, 5000),
        function=st.sampled_from(["linear_exact", "linear", "sigmoid"]),
    )
    def test_monotone_in_hu(self, hu, center, width, function):
        order = np.argsort(hu, kind="stable")
        y = window(hu[order], center, width, function)
        assert np.all(np.diff(y) >= 0)

    @settings(max_examples=100, deadline=None)
    @given(hu=arrays(np.float32, st.integers(2, 64), elements=finite_hu), width=st.floats(10, 3000))
    def test_epp_sigmoid_in_unit_interval_and_monotone(self, hu, width):
        y = sigmoid_window(np.sort(hu), 40, width)
        assert np.all((y >= 0) & (y <= 1)) and np.all(np.diff(y) >= 0)


class TestResizeAndRgb:
    def test_area_resize_is_block_mean(self):
        hu = np.array(
            [[0, 2, 100, 100], [4, 6, 100, 100], [-1000, -1000, 40, 40], [-1000, -1000, 40, 80]], dtype=np.float32
        )
        np.testing.assert_allclose(resize_hu(hu, 2), [[3, 100], [-1000, 50]], atol=1e-4)

    def test_enlarging_keeps_constant(self):
        np.testing.assert_allclose(resize_hu(np.full((4, 4), 37.0), (8, 6)), np.full((8, 6), 37.0))

    def test_to_rgb_channels_by_hand(self):
        hu = np.full((2, 2), 60.0, dtype=np.float32)
        rgb = to_rgb(hu)
        assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
        np.testing.assert_allclose(rgb[0, 0], [0.75, 0.4, (60 - 600) / 2800 + 0.5], atol=1e-6)

    def test_to_rgb_hu_first_equals_window_of_area_mean(self):
        rng = np.random.default_rng(0)
        hu = rng.uniform(-100, 200, (64, 64)).astype(np.float32)
        rgb = to_rgb(hu, size=32)
        block_mean = hu.reshape(32, 2, 32, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(rgb[..., 1], window(block_mean, 80, 200), atol=1e-5)

    def test_window_first_equals_mean_of_windows(self):
        rng = np.random.default_rng(1)
        hu = rng.uniform(-100, 200, (64, 64)).astype(np.float32)
        rgb = to_rgb(hu, size=32, order="window_first")
        ref = window(hu, 40, 80).reshape(32, 2, 32, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(rgb[..., 0], ref, atol=1e-5)

    def test_orders_agree_inside_smooth_tissue(self):
        hu = np.full((64, 64), 35.0, dtype=np.float32) + np.linspace(0, 10, 64, dtype=np.float32)
        np.testing.assert_allclose(to_rgb(hu, size=32), to_rgb(hu, size=32, order="window_first"), atol=1e-5)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match=r"`hu` must be 2-D"):
            to_rgb(np.zeros((2, 2, 2)))
        with pytest.raises(ValueError, match=r"`windows` must hold at least one"):
            to_rgb(np.zeros((2, 2)), windows=())
        with pytest.raises(ValueError, match=r"`order` must be"):
            to_rgb(np.zeros((2, 2)), order="sideways")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"`size` must be > 0"):
            resize_hu(np.zeros((4, 4)), 0)

    def test_to_uint8_only_for_pictures(self):
        np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 1.5, -0.2])), [0, 128, 255, 255, 0])
