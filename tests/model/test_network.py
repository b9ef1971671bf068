"""brain_audit.model and brain_audit.pretrain, offline: weights=None, 64 x 64 inputs.

Expected values come from outside the code under test: brain_audit.windowing for the
windows, EfficientNetB0's published block layout for the freezing counts, numpy for the
loss, predictions before / after save-load, the saved backbone's own outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from brain_audit.model import weights as bam
from brain_audit.model.layers import RSNA_LABEL_WEIGHTS, ColumnAUC, MultiWindow, WeightedBinaryCrossentropy
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
from brain_audit.model.weights import (
    IMAGENET_NOTOP_FILENAME,
    IMAGENET_NOTOP_MD5,
    imagenet_weights_available,
    install_imagenet_weights,
    load_model,
    save_model,
)
from brain_audit.windowing import BSB, sigmoid_window, to_rgb

SIZE = 64

# EfficientNetB0 (Tan & Le 2019, table 1): stages 1..7 repeat 1, 2, 2, 3, 3, 4, 1 times; blocks a, b, c, ...
B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
B0_UNITS = ["stem"] + [f"block{s + 1}{'abcd'[j]}" for s, r in enumerate(B0_REPEATS) for j in range(r)] + ["top"]


def _unit(name: str) -> str:
    """Test-side unit of a backbone layer name, written independently of brain_audit.model.block_of."""
    for unit in B0_UNITS[1:-1]:
        if name.startswith(unit + "_"):
            return unit
    return "top" if name in ("top_conv", "top_bn", "top_activation") else "stem"


def _run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Inference-mode forward pass (a direct call: no predict-function tracing)."""
    return np.asarray(model(x, training=False))


def _hu(n: int = 2, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """HU images covering air to dense bone, with every window edge and centre hit exactly."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1100.0, 3100.0, (n, size, size, 1)).astype(np.float32)
    edges = [c + k * w / 2 for c, w in BSB for k in (-1, 0, 1)]
    x.flat[: len(edges)] = edges
    return x


@pytest.fixture(scope="module")
def model_any() -> keras.Model:
    return build_model(SIZE, head="any", weights=None, seed=1)


# ---------------------------------------------------------------- MultiWindow
class TestMultiWindow:
    def test_linear_exact_equals_windowing_to_rgb(self):
        hu = _hu(3)
        got = np.asarray(MultiWindow()(hu))
        expected = np.stack([to_rgb(h[..., 0]) * 255.0 for h in hu])
        assert got.shape == (3, SIZE, SIZE, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert got.min() == 0.0 and got.max() == 255.0

    def test_sigmoid_equals_windowing_sigmoid_window(self):
        hu = _hu(2, seed=3)
        got = np.asarray(MultiWindow(function="sigmoid")(hu))
        expected = np.stack([sigmoid_window(hu[..., 0], c, w) for c, w in BSB], axis=-1) * 255.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)

    def test_trainable_windows_default_to_sigmoid_with_finite_nonzero_gradients(self):
        import tensorflow as tf

        layer = MultiWindow(trainable_windows=True)
        hu = tf.constant(_hu(2, seed=4))
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
        hu = _hu(1, seed=5)
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
            hu = _hu(1, seed=7)
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


# ---------------------------------------------------------------- build_model
class TestBuildModel:
    def test_any_head_graph_and_values(self, model_any):
        hu = _hu(2)
        p = _run(model_any, hu)
        assert p.shape == (2, 1) and p.dtype == np.float32 and np.all((p > 0) & (p < 1))
        names = [layer.name for layer in model_any.layers]
        assert names == ["hu", "multi_window", BACKBONE_NAME, "avg_pool", "head_dropout", "predictions"]
        assert isinstance(get_backbone(model_any), keras.Model)
        # the backbone receives exactly the windowed HU
        pre = keras.Model(model_any.input, model_any.get_layer("multi_window").output)
        np.testing.assert_allclose(_run(pre, hu)[0], to_rgb(hu[0, ..., 0]) * 255, atol=1e-4)
        assert model_any.get_layer("head_dropout").rate == 0.2

    def test_six_head_and_context(self):
        m = build_model(SIZE, head="six", weights=None, seed=2, context=1, dropout=0.5)
        assert m.input_shape == (None, SIZE, SIZE, 3)
        assert m.output_shape == (None, 6)
        assert m.get_layer("head_dropout").rate == 0.5
        p = _run(m, np.zeros((1, SIZE, SIZE, 3), np.float32))
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
            (dict(input_size=16), ValueError, r"`input_size` must be an int >= 32. Got 16 instead."),
            (dict(context=-1), ValueError, r"`context` must be an int >= 0. Got -1 instead."),
            (dict(weights=3), ValueError, r"`weights` must be 'imagenet', a file path or None. Got 3 instead."),
            (dict(weights="/nonexistent/bb.weights.h5"), FileNotFoundError, r"bb.weights.h5: no such weights file"),
        ],
    )
    def test_parameter_errors(self, kwargs, error, match):
        kwargs = {"input_size": SIZE, "weights": None} | kwargs
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
        x, y = _hu(8, size=32, seed=8), np.array([0, 1] * 4, np.float32)
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
        changed = {v.path for v in m.weights if not np.array_equal(np.asarray(v), before[v.path])}
        expected = {v.path for v in m.trainable_weights}
        assert changed <= expected  # frozen weights and every BN moving statistic unchanged
        assert any("block7a" in p for p in changed) and any("top_conv" in p for p in changed)
        assert not any("moving" in p for p in changed)
        assert len(changed) >= len(expected) - 2  # all but possibly a zero-gradient bias moved
        assert backbone.get_layer("block6d_project_conv").trainable is False


# ---------------------------------------------------------------- loss and metrics
class TestLossAndCompile:
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

    def test_label_weights_validated(self):
        with pytest.raises(ValueError, match=r"`label_weights` must be non-empty and all > 0. Got \[1.0, 0.0\] instead."):
            WeightedBinaryCrossentropy([1, 0])


# ---------------------------------------------------------------- save / load
class TestSaveLoad:
    @pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # compiled, never trained
    def test_round_trip_identical_predictions_safe_mode(self, tmp_path):
        m = build_model(SIZE, head="six", weights=None, seed=4, trainable_windows=True, context=1)
        unfreeze_top(m, blocks=3)
        compile_model(m, lr=1e-3)
        hu = np.concatenate([_hu(2, seed=11)] * 3, axis=-1)
        before = _run(m, hu)
        path = save_model(m, tmp_path / "sub" / "m.keras")
        with zipfile.ZipFile(path) as zf:
            config = zf.read("config.json").decode()
        assert "Lambda" not in config and "brain_audit>MultiWindow" in config
        loaded = load_model(path)  # safe_mode=True inside; would raise on a Lambda layer
        np.testing.assert_array_equal(_run(loaded, hu), before)
        # the training state survives (resume relies on it)
        assert len(loaded.trainable_weights) == len(m.trainable_weights)
        assert isinstance(loaded.loss, WeightedBinaryCrossentropy)
        assert loaded.get_layer("multi_window").get_config() == m.get_layer("multi_window").get_config()
        assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left

    def test_bad_suffix_and_missing_file(self, model_any, tmp_path):
        with pytest.raises(ValueError, match=r"`path` must end in '.keras'. Got '.*m.h5' instead."):
            save_model(model_any, tmp_path / "m.h5")
        with pytest.raises(FileNotFoundError, match="nope.keras: no such model file"):
            load_model(tmp_path / "nope.keras")


# ---------------------------------------------------------------- backbone weights
class TestBackboneWeights:
    def test_backbone_weights_path_reproduces_the_backbone(self, model_any, tmp_path):
        path = tmp_path / "bb.weights.h5"
        get_backbone(model_any).save_weights(path)
        other = build_model(SIZE, weights=path, seed=99)
        fresh = build_model(SIZE, weights=None, seed=99)
        rgb = np.stack([to_rgb(h[..., 0]) * 255 for h in _hu(2, seed=12)])
        ref = _run(get_backbone(model_any), rgb)
        np.testing.assert_array_equal(_run(get_backbone(other), rgb), ref)
        assert not np.allclose(_run(get_backbone(fresh), rgb), ref)

    def test_imagenet_constants_match_keras(self):
        from keras.src.applications import efficientnet

        assert IMAGENET_NOTOP_MD5 == efficientnet.WEIGHTS_HASHES["b0"][1]
        assert IMAGENET_NOTOP_FILENAME == "efficientnetb0" + "_notop.h5" and BACKBONE_NAME == "efficientnetb0"

    def test_cache_check_without_download(self, tmp_path):
        assert imagenet_weights_available(tmp_path) is False
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / IMAGENET_NOTOP_FILENAME).write_bytes(b"not the weights")
        assert imagenet_weights_available(tmp_path) is False  # Keras would re-download it

    def test_cache_dir_is_where_keras_get_file_caches(self, tmp_path, monkeypatch):
        """Keras' home ($KERAS_HOME or ~/.keras, read when Keras is imported) is patched to tmp_path;
        keras.utils.get_file, given no cache_dir, must then put a file where keras_cache_dir says."""
        from keras.src.backend import config as keras_config

        monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path))
        src = tmp_path / "source.bin"
        src.write_bytes(b"x")
        cached = keras.utils.get_file("probe.bin", origin=src.as_uri(), cache_subdir="models")
        assert bam.keras_cache_dir() == tmp_path
        assert cached == str(bam.keras_cache_dir() / "models" / "probe.bin")

    def test_wrong_imagenet_file_is_refused(self, tmp_path):
        fake = tmp_path / IMAGENET_NOTOP_FILENAME
        fake.write_bytes(b"truncated download")
        with pytest.raises(ValueError, match=r"efficientnetb0_notop.h5: MD5 [0-9a-f]{32} is not Keras'"):
            build_model(SIZE, weights=fake)

    def test_imagenet_file_as_path_builds_the_imagenet_graph(self, tmp_path, monkeypatch):
        """Offline rehearsal of the Kaggle path: a stand-in "ImageNet" file (a legacy .h5 of a
        random backbone) is declared Keras' file by patching the expected MD5 in both places and
        pointing the Keras cache at tmp_path; nothing can be downloaded (the hash matches)."""
        import h5py
        from keras.src.applications import efficientnet
        from keras.src.backend import config as keras_config
        from keras.src.legacy.saving import legacy_h5_format

        src_backbone = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
        src = tmp_path / "attached" / "effnet_imagenet.h5"
        src.parent.mkdir()
        with h5py.File(src, "w") as fh:
            legacy_h5_format.save_weights_to_hdf5_group(fh, src_backbone)
        md5 = hashlib.md5(src.read_bytes()).hexdigest()
        home = tmp_path / "keras_home"
        home.mkdir()  # Keras creates its home at import; a missing one would fall back to /tmp/.keras
        monkeypatch.setattr(keras_config, "keras_home", lambda: str(home))  # as KERAS_HOME at import would
        monkeypatch.setattr(bam, "IMAGENET_NOTOP_MD5", md5)
        monkeypatch.setitem(efficientnet.WEIGHTS_HASHES, "b0", (efficientnet.WEIGHTS_HASHES["b0"][0], md5))

        by_path = get_backbone(build_model(32, weights=src, seed=0))
        by_name = get_backbone(build_model(32, weights="imagenet", seed=1))
        plain = get_backbone(build_model(32, weights=None, seed=0))
        kinds = lambda m: [type(layer).__name__ for layer in m.layers]  # noqa: E731
        assert kinds(by_path) == kinds(by_name)
        assert kinds(by_path).count("Rescaling") == kinds(plain).count("Rescaling") + 1  # Keras' ImageNet-only layer
        assert bam.keras_cache_dir() == home
        assert (home / "models" / IMAGENET_NOTOP_FILENAME).read_bytes() == src.read_bytes()
        for a, b in zip(by_path.weights, src_backbone.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def test_install_copies_into_the_cache(self, tmp_path, monkeypatch):
        src = tmp_path / "attached" / "any_name.h5"
        src.parent.mkdir()
        src.write_bytes(b"stand-in bytes")
        monkeypatch.setattr(bam, "IMAGENET_NOTOP_MD5", hashlib.md5(b"stand-in bytes").hexdigest())
        cache = tmp_path / "keras_home"
        target = install_imagenet_weights(src, cache_dir=cache)
        assert target == cache / "models" / IMAGENET_NOTOP_FILENAME
        assert target.read_bytes() == b"stand-in bytes"
        assert imagenet_weights_available(cache) is True
        assert sorted(p.name for p in target.parent.iterdir()) == [IMAGENET_NOTOP_FILENAME]


# ---------------------------------------------------------------- BN recalibration
def test_recalibrate_batchnorm_is_the_mean_of_batch_statistics():
    m = build_model(32, weights=None, seed=5)
    unfreeze_all(m)
    hu = _hu(6, size=32, seed=13)
    backbone = get_backbone(m)
    windows = m.get_layer("multi_window")(hu)
    conv = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)  # stem_conv feeds stem_bn
    batch_means = [np.asarray(conv(windows[i : i + 3])).mean(axis=(0, 1, 2)) for i in (0, 3)]
    head_before = np.asarray(m.get_layer("predictions").kernel).copy()
    recalibrate_batchnorm(m, hu, batch_size=3)
    np.testing.assert_allclose(np.asarray(backbone.get_layer("stem_bn").moving_mean), np.mean(batch_means, 0), rtol=1e-4, atol=1e-5)
    assert backbone.get_layer("stem_bn").momentum == 0.99  # restored
    np.testing.assert_array_equal(np.asarray(m.get_layer("predictions").kernel), head_before)


# ---------------------------------------------------------------- domain pretraining
@pytest.mark.slow
def test_pretrained_backbone_makes_phase1_beat_chance(tmp_path):
    from brain_audit.config import PretrainPlan
    from brain_audit.train.pretrain import cohort_sha256, formula_slices, manifest_path, pretrain_backbone

    x_pre, y_pre = formula_slices(320, SIZE, seed=1)  # the pretraining cohort: head-like slices, half with blobs
    x_aud, y_aud = formula_slices(240, SIZE, seed=2)  # the "audit" cohort, other patients
    ids = [f"P{i:04d}" for i in range(len(x_pre))]
    plan = PretrainPlan(epochs=5, batch_size=32, learning_rate=1e-3, augment=False, warmup_epochs=0)
    result = pretrain_backbone(
        x_pre, y_pre, tmp_path / "bb.weights.h5", plan, image_size=SIZE, seed=0,
        patient_ids=ids, exclude_patients=["A0001"], verbose=0,
    )
    assert result.weights_path.is_file() and result.manifest_path == manifest_path(result.weights_path)
    assert len(result.history["loss"]) == 5
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["seeds"] == {"seed": 0}
    assert manifest["inputs"]["cohort_sha256"] == cohort_sha256(x_pre[..., None], y_pre[:, None], ids)
    assert manifest["weights_sha256"] == hashlib.sha256(result.weights_path.read_bytes()).hexdigest()
    assert manifest["packages"]["keras"] == keras.__version__
    # the plan, field by field, and the run-level settings; the objective names no warm-up that did not run
    assert {k: manifest["config"][k] for k in dataclasses.asdict(plan)} == dataclasses.asdict(plan)
    assert (manifest["config"]["image_size"], manifest["config"]["dropout"], manifest["config"]["head"]) == (SIZE, 0.2, "any")
    assert manifest["config"]["augmentation"] is None
    assert manifest["config"]["objective"].startswith("supervised multi-label BCE")
    assert result.metrics["val_auc_any"] > 0.9

    aucs = {}
    for name, weights in (("pretrained", result.weights_path), ("random", None)):
        m = build_model(SIZE, weights=weights, seed=3)
        freeze_backbone(m)
        compile_model(m, lr=1e-2, jit_compile=False)  # head only: no XLA compile worth paying for
        m.fit(x_aud[:160, ..., None], y_aud[:160], epochs=6, batch_size=32, verbose=0)
        aucs[name] = roc_auc_score(y_aud[160:], _run(m, x_aud[160:, ..., None])[:, 0])
    assert aucs["pretrained"] > 0.85, aucs
    assert aucs["random"] < 0.7, aucs


def test_formula_slices_hu_and_labels_by_construction():
    from brain_audit.train.pretrain import formula_slices

    x, y = formula_slices(40, image_size=48, seed=5)
    assert x.shape == (40, 48, 48) and x.dtype == np.float32 and y.shape == (40,)
    assert set(np.unique(y)) == {0.0, 1.0}
    again = formula_slices(40, image_size=48, seed=5)
    np.testing.assert_array_equal(again[0], x)
    for im, label in zip(x, y):
        assert im[0, 0] == -1000.0  # air in the corner
        assert (im > 500).sum() > 0  # the skull ring
        brain = (im > -500) & (im < 500)
        # blob pixels: 60-80 HU +- 4 HU noise, well above the 25-45 HU brain (+- 4 HU noise). The
        # smallest blob (radius 5 % of 48 px = 2.4 px) covers ~18 px, at 60 HU about 2/3 of them > 58 HU
        hot = ((im > 58) & (im < 100)).sum()
        if label:
            assert hot >= 8, hot
        else:
            assert hot < 5, hot
        assert brain.sum() > 0.25 * im.size
    with pytest.raises(ValueError, match=r"`n` must be an int >= 1. Got 0 instead."):
        formula_slices(0)
    with pytest.raises(ValueError, match=r"`image_size` must be an int >= 8. Got 4 instead."):
        formula_slices(1, image_size=4)


def test_pretrain_refuses_audit_patients_and_bad_paths(tmp_path):
    from brain_audit.train.pretrain import pretrain_backbone

    x, y = np.zeros((4, 32, 32), np.float32), np.array([0, 1, 0, 1], np.float32)
    with pytest.raises(ValueError, match=r"shares 1 patients with the audit cohort \(e.g. \['P1'\]\)"):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", patient_ids=["P0", "P1", "P2", "P3"], exclude_patients=["P1"])
    with pytest.raises(ValueError, match=r"`out_path` must end in '.weights.h5'. Got '.*b.h5' instead."):
        pretrain_backbone(x, y, tmp_path / "b.h5")
    with pytest.raises(ValueError, match=r"`labels` must be \(N,\), \(N, 1\) or \(N, 6\) with N = 4. Got shape \(4, 2\)"):
        pretrain_backbone(x, np.zeros((4, 2)), tmp_path / "b.weights.h5")
    with pytest.raises(ValueError, match=r"`image_size` must be an int >= 32. Got 16 instead."):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", image_size=16)
    with pytest.raises(ValueError, match=r"`plan` must be a brain_audit.config.PretrainPlan. Got dict instead."):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", {"epochs": 1})
    assert list(tmp_path.iterdir()) == []


def test_pretrain_augmented_batches_are_seeded_and_aligned():
    from brain_audit.dataset.feed import Augment
    from brain_audit.train.pretrain import _AugmentedBatches

    x = np.stack([np.full((16, 16, 1), 10.0 * i, np.float32) for i in range(10)])  # image i is constant 10 i HU
    y = np.arange(10, dtype=np.float32)[:, None]
    aug = Augment(rotation_deg=0, shift=0, zoom=0, flip=True, hu_offset=0, hu_gain=0)  # keeps each value
    a, b = _AugmentedBatches(x, y, 4, aug, seed=3), _AugmentedBatches(x, y, 4, aug, seed=3)
    assert len(a) == 3
    xa, ya = a[1]
    xb, yb = b[1]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(xa[:, 0, 0, 0], 10.0 * ya[:, 0])  # each image still carries its own label
    first = np.concatenate([a[i][1] for i in range(3)])[:, 0]
    a.on_epoch_end()
    second = np.concatenate([a[i][1] for i in range(3)])[:, 0]
    assert sorted(first) == sorted(second) == list(range(10)) and not np.array_equal(first, second)
