"""brain_audit.model.network, offline: weights=None, 64 x 64 inputs.

Expected values come from outside the code under test: brain_audit.windowing for the windows the
backbone receives, EfficientNetB0's published block layout for the freezing counts, the batch
statistics of the stem convolution for BatchNorm recalibration.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brain_audit.model.layers import WeightedBinaryCrossentropy
from brain_audit.model.network import (
    BACKBONE_NAME,
    backbone_blocks,
    build_model,
    compile_model,
    freeze_backbone,
    get_backbone,
    recalibrate_batchnorm,
    unfreeze_all,
    unfreeze_top,
)
from brain_audit.windowing import to_rgb
from support.model_inputs import SIZE, forward, hu_images

# EfficientNetB0 (Tan & Le 2019, table 1): stages 1..7 repeat 1, 2, 2, 3, 3, 4, 1 times; blocks a, b, c, ...
B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
B0_UNITS = ["stem"] + [f"block{s + 1}{'abcd'[j]}" for s, r in enumerate(B0_REPEATS) for j in range(r)] + ["top"]


def _unit(name: str) -> str:
    """Test-side unit of a backbone layer name, written independently of brain_audit.model.block_of."""
    for unit in B0_UNITS[1:-1]:
        if name.startswith(unit + "_"):
            return unit
    return "top" if name in ("top_conv", "top_bn", "top_activation") else "stem"


# ---------------------------------------------------------------- build_model
class TestBuildModel:
    def test_any_head_graph_and_values(self, model_any):
        hu = hu_images(2)
        p = forward(model_any, hu)
        assert p.shape == (2, 1) and p.dtype == np.float32 and np.all((p > 0) & (p < 1))
        names = [layer.name for layer in model_any.layers]
        assert names == ["hu", "multi_window", BACKBONE_NAME, "avg_pool", "head_dropout", "predictions"]
        assert isinstance(get_backbone(model_any), keras.Model)
        # the backbone receives exactly the windowed HU
        pre = keras.Model(model_any.input, model_any.get_layer("multi_window").output)
        np.testing.assert_allclose(forward(pre, hu)[0], to_rgb(hu[0, ..., 0]) * 255, atol=1e-4)
        assert model_any.get_layer("head_dropout").rate == 0.2

    def test_six_head_and_context(self):
        m = build_model(SIZE, head="six", weights=None, seed=2, context=1, dropout=0.5)
        assert m.input_shape == (None, SIZE, SIZE, 3)
        assert m.output_shape == (None, 6)
        assert m.get_layer("head_dropout").rate == 0.5
        p = forward(m, np.zeros((1, SIZE, SIZE, 3), np.float32))
        assert p.shape == (1, 6) and np.all((p > 0) & (p < 1))

    def test_same_seed_same_weights(self, model_any):
        again = build_model(SIZE, head="any", weights=None, seed=1)
        other = build_model(SIZE, head="any", weights=None, seed=2)
        for a, b in zip(model_any.weights, again.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(model_any.weights[-2]), np.asarray(other.weights[-2]))

    def test_output_float32_under_mixed_precision(self):
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            m = build_model(32, weights=None, seed=0)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert m.get_layer("multi_window").compute_dtype == "float16"
        assert m.get_layer("predictions").compute_dtype == "float32"
        assert m.outputs[0].dtype == "float32"

    @pytest.mark.parametrize(
        "kwargs, error, match",
        [
            (dict(dropout=1.5), ValueError, r"`dropout` must be in \[0, 1\). Got 1.5 instead."),
            (dict(head="five"), ValueError, r"`head` must be one of \('any', 'six'\). Got 'five' instead."),
            (dict(image_size=16), ValueError, r"`image_size` must be an int >= 32. Got 16 instead."),
            (dict(context=-1), ValueError, r"`context` must be an int >= 0. Got -1 instead."),
            (dict(weights=3), ValueError, r"`weights` must be 'imagenet', a file path or None. Got 3 instead."),
            (dict(weights="/nonexistent/bb.weights.h5"), FileNotFoundError, r"bb.weights.h5: no such weights file"),
        ],
    )
    def test_parameter_errors(self, kwargs, error, match):
        kwargs = {"image_size": SIZE, "weights": None} | kwargs
        with pytest.raises(error, match=match):
            build_model(**kwargs)


# ---------------------------------------------------------------- freezing
def _expected_trainable(model: keras.Model, units: set[str], train_bn: bool) -> int:
    """Trainable variables when ``units`` are unfrozen: counted from the layer list."""
    backbone = get_backbone(model)
    n = 0
    for layer in backbone.layers:
        if _unit(layer.name) not in units:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            n += 2 if train_bn else 0  # gamma, beta; the moving statistics never train
        elif isinstance(layer, keras.layers.Normalization):
            n += 0  # ImageNet mean / variance / count: statistics, never trained
        else:
            n += sum(getattr(layer, attr, None) is not None for attr in ("kernel", "depthwise_kernel", "bias"))
    head = model.get_layer("predictions")
    return n + len(head.weights)


class TestFreezing:
    def test_block_list_is_efficientnet_b0(self, model_any):
        assert backbone_blocks(model_any) == B0_UNITS
        assert len(B0_UNITS) == 18

    def test_freeze_backbone_leaves_only_the_head(self, model_any):
        freeze_backbone(model_any)
        head = model_any.get_layer("predictions")
        assert {id(v) for v in model_any.trainable_weights} == {id(head.kernel), id(head.bias)}

    @pytest.mark.parametrize("blocks", [0, 1, 2, 3, 7, 18])
    def test_unfreeze_top_counts_whole_blocks_and_keeps_bn_frozen(self, model_any, blocks):
        unfreeze_top(model_any, blocks=blocks)
        units = set(B0_UNITS[len(B0_UNITS) - blocks :])
        assert len(model_any.trainable_weights) == _expected_trainable(model_any, units, train_bn=False)
        backbone = get_backbone(model_any)
        assert all(
            not layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
        )
        # never half a block: every weighted non-BN layer of a unit shares one state
        for unit in B0_UNITS:
            states = {
                layer.trainable
                for layer in backbone.layers
                if _unit(layer.name) == unit and layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
            }
            assert states == {unit in units} or states == set()

    def test_unfreeze_top_two_is_top_and_block7a(self, model_any):
        unfreeze_top(model_any, blocks=2)
        trainable_layers = {
            layer.name.split("_")[0] for layer in get_backbone(model_any).layers if layer.trainable and layer.weights
        }
        assert trainable_layers == {"top", "block7a"}

    def test_unfreeze_all_with_and_without_bn(self, model_any):
        unfreeze_all(model_any)
        assert len(model_any.trainable_weights) == _expected_trainable(model_any, set(B0_UNITS), train_bn=True)
        unfreeze_all(model_any, train_batchnorm=False)
        assert len(model_any.trainable_weights) == _expected_trainable(model_any, set(B0_UNITS), train_bn=False)

    def test_trainable_windows_stay_trainable_when_backbone_frozen(self):
        m = build_model(32, weights=None, seed=0, trainable_windows=True)
        freeze_backbone(m)
        assert len(m.trainable_weights) == 4  # centers, widths, dense kernel, dense bias

    @pytest.mark.parametrize("blocks", [19, -1, 1.5])
    def test_blocks_out_of_range(self, model_any, blocks):
        with pytest.raises(ValueError, match=rf"`blocks` must be in \[0, 18\]. Got {blocks} instead."):
            unfreeze_top(model_any, blocks=blocks)

    def test_not_a_brain_audit_model(self):
        plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        with pytest.raises(ValueError, match="has no nested backbone named 'efficientnetb0'"):
            freeze_backbone(plain)

    @pytest.mark.slow
    def test_training_changes_only_the_unfrozen_blocks(self):
        m = build_model(32, weights=None, seed=3)
        unfreeze_top(m, blocks=2)
        compile_model(m, lr=1e-2, jit_compile=False)
        backbone = get_backbone(m)
        before = {v.path: np.asarray(v).copy() for v in m.weights}
        x, y = hu_images(8, size=32, seed=8), np.array([0, 1] * 4, np.float32)
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
        changed = {v.path for v in m.weights if not np.array_equal(np.asarray(v), before[v.path])}
        expected = {v.path for v in m.trainable_weights}
        assert changed <= expected  # frozen weights and every BN moving statistic unchanged
        assert any("block7a" in p for p in changed) and any("top_conv" in p for p in changed)
        assert not any("moving" in p for p in changed)
        assert len(changed) >= len(expected) - 2  # all but possibly a zero-gradient bias moved
        assert backbone.get_layer("block6d_project_conv").trainable is False


# ---------------------------------------------------------------- compile
class TestCompile:
    def test_compile_six_uses_weighted_loss(self):
        m = build_model(32, head="six", weights=None, seed=0)
        compile_model(m, lr=1e-4)
        assert isinstance(m.loss, WeightedBinaryCrossentropy)
        assert float(m.optimizer.learning_rate) == pytest.approx(1e-4)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(lr=0), r"`lr` must be > 0. Got 0 instead."),
            (dict(lr=1e-3, head="six"), r"`head` 'six' needs 6 outputs; the model has 1."),
        ],
    )
    def test_compile_errors(self, model_any, kwargs, match):
        with pytest.raises(ValueError, match=match):
            compile_model(model_any, **kwargs)


# ---------------------------------------------------------------- BN recalibration
def test_recalibrate_batchnorm_is_the_mean_of_batch_statistics():
    m = build_model(32, weights=None, seed=5)
    unfreeze_all(m)
    hu = hu_images(6, size=32, seed=13)
    backbone = get_backbone(m)
    windows = m.get_layer("multi_window")(hu)
    conv = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)  # stem_conv feeds stem_bn
    batch_means = [np.asarray(conv(windows[i : i + 3])).mean(axis=(0, 1, 2)) for i in (0, 3)]
    head_before = np.asarray(m.get_layer("predictions").kernel).copy()
    recalibrate_batchnorm(m, hu, batch_size=3)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("stem_bn").moving_mean), np.mean(batch_means, 0), rtol=1e-4, atol=1e-5)
    assert backbone.get_layer("stem_bn").momentum == 0.99  # restored
    np.testing.assert_array_equal(np.asarray(m.get_layer("predictions").kernel), head_before)


def test_a_file_that_is_no_backbone_is_one_weights_error(tmp_path):
    """A text file passed as backbone weights: WeightsFileError naming the file, not h5py's traceback."""
    from brain_audit.errors import WeightsFileError
    from brain_audit.model.network import build_model

    path = tmp_path / "garbage.weights.h5"
    path.write_text("not HDF5")
    with pytest.raises(WeightsFileError, match=r"garbage.weights.h5: not a weights file of EfficientNetB0"):
        build_model(image_size=32, weights=str(path))
