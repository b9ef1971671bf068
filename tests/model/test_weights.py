"""brain_audit.model.weights: saving and loading models, backbone weights, the ImageNet file through Keras'
own cache, and atomic saves.

Nothing is downloaded: the "ImageNet file" is a stand-in whose MD5 is patched in as the
expected one, and every copy goes through ``keras.utils.get_file`` from a ``file://`` origin.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from brain_audit.errors import WeightsFileError, WeightsFileNotFoundError
from brain_audit.model import weights as bam
from brain_audit.model.layers import WeightedBinaryCrossentropy
from brain_audit.model.network import (
    BACKBONE_NAME,
    build_model,
    compile_model,
    get_backbone,
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
from brain_audit.provenance import atomic_write_bytes
from brain_audit.windowing import to_rgb
from support.model_inputs import SIZE, forward, hu_images

STAND_IN = b"stand-in for efficientnetb0_notop.h5"
STAND_IN_MD5 = hashlib.md5(STAND_IN).hexdigest()


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """An attached "ImageNet file" under another name, declared Keras' file by its MD5."""
    src = tmp_path / "attached" / "effnet_b0_imagenet.h5"
    src.parent.mkdir()
    src.write_bytes(STAND_IN)
    monkeypatch.setattr(bam, "IMAGENET_NOTOP_MD5", STAND_IN_MD5)
    return src


@pytest.fixture
def origins(monkeypatch):
    """Every origin Keras' get_file fetches from, in order (the real fetch still runs)."""
    seen: list[str] = []
    real = file_utils.urlretrieve

    def spy(url, *args, **kwargs):
        seen.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(file_utils, "urlretrieve", spy)
    return seen


class TestInstallImagenetWeights:
    def test_copies_from_a_file_url_into_keras_cache(self, stand_in, tmp_path, origins):
        cache = tmp_path / "keras_home"  # missing: created, not swapped for /tmp/.keras
        target = bam.install_imagenet_weights(stand_in, cache_dir=cache)
        assert target == cache / "models" / bam.IMAGENET_NOTOP_FILENAME
        assert target.read_bytes() == STAND_IN
        assert origins == [stand_in.resolve().as_uri()]  # no network: a file:// origin
        assert bam.imagenet_weights_available(cache) is True
        again = bam.install_imagenet_weights(stand_in, cache_dir=cache)
        assert again == target and len(origins) == 1  # an identical cached file is left alone

    def test_default_cache_is_keras_own(self, stand_in, tmp_path, monkeypatch):
        home = tmp_path / "home"
        home.mkdir()
        monkeypatch.setattr(keras_config, "keras_home", lambda: str(home))
        target = bam.install_imagenet_weights(stand_in)
        assert target == home / "models" / bam.IMAGENET_NOTOP_FILENAME
        assert bam.imagenet_weights_available() is True

    def test_replaces_a_corrupt_cached_file(self, stand_in, tmp_path, origins):
        cache = tmp_path / "keras_home"
        (cache / "models").mkdir(parents=True)
        (cache / "models" / bam.IMAGENET_NOTOP_FILENAME).write_bytes(b"truncated downl")
        assert bam.imagenet_weights_available(cache) is False
        target = bam.install_imagenet_weights(stand_in, cache_dir=cache)
        assert target.read_bytes() == STAND_IN and len(origins) == 1

    def test_wrong_file_is_refused_even_with_a_good_cache(self, stand_in, tmp_path):
        cache = tmp_path / "keras_home"
        bam.install_imagenet_weights(stand_in, cache_dir=cache)
        wrong = tmp_path / "other.h5"
        wrong.write_bytes(b"some other network")
        other_md5 = hashlib.md5(b"some other network").hexdigest()
        with pytest.raises(WeightsFileError, match=rf"^other.h5: MD5 {other_md5} is not Keras' "
                                             rf"efficientnetb0_notop.h5 \({STAND_IN_MD5}\)"):
            bam.install_imagenet_weights(wrong, cache_dir=cache)
        assert (cache / "models" / bam.IMAGENET_NOTOP_FILENAME).read_bytes() == STAND_IN  # untouched

    def test_keras_refusal_of_the_copy_is_ours_and_leaves_nothing(self, stand_in, tmp_path, monkeypatch):
        """The source changes while Keras copies it: get_file's own MD5 check refuses the copy."""
        def changed_while_copied(url, filename, *args, **kwargs):
            with open(filename, "wb") as fh:
                fh.write(b"half a file")

        monkeypatch.setattr(file_utils, "urlretrieve", changed_while_copied)
        cache = tmp_path / "keras_home"
        half_md5 = hashlib.md5(b"half a file").hexdigest()
        with pytest.raises(WeightsFileError, match=rf"^effnet_b0_imagenet.h5: MD5 {half_md5} is not Keras' "
                                             rf"efficientnetb0_notop.h5 \({STAND_IN_MD5}\)"):
            bam.install_imagenet_weights(stand_in, cache_dir=cache)
        assert list((cache / "models").iterdir()) == []

    def test_missing_source(self, tmp_path):
        with pytest.raises(WeightsFileNotFoundError, match="nope.h5: no such weights file"):
            bam.install_imagenet_weights(tmp_path / "nope.h5", cache_dir=tmp_path)


def test_keras_home_from_the_environment_at_import(tmp_path):
    """$KERAS_HOME set before Keras is imported (as on a Kaggle kernel) decides the cache."""
    code = "from brain_audit.model.weights import keras_cache_dir; print(keras_cache_dir())"
    env = dict(os.environ, KERAS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path)


class TestSaveModel:
    @pytest.fixture
    def tiny(self):
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))

    def test_same_permissions_as_every_other_atomic_write(self, tiny, tmp_path):
        saved = bam.save_model(tiny, tmp_path / "m.keras")
        other = atomic_write_bytes(tmp_path / "other.bin", b"x")
        assert stat.S_IMODE(saved.stat().st_mode) == stat.S_IMODE(other.stat().st_mode)

    def test_failed_save_keeps_the_old_model(self, tiny, tmp_path, monkeypatch):
        path = bam.save_model(tiny, tmp_path / "m.keras")
        before = path.read_bytes()

        def killed(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(tiny, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            bam.save_model(tiny, path)
        assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.keras"]
        x = np.ones((2, 3), np.float32)
        np.testing.assert_array_equal(np.asarray(bam.load_model(path)(x)), np.asarray(tiny(x)))


# ---------------------------------------------------------------- save / load
class TestSaveLoad:
    @pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # compiled, never trained
    def test_round_trip_identical_predictions_safe_mode(self, tmp_path):
        m = build_model(SIZE, head="six", weights=None, seed=4, trainable_windows=True, context=1)
        unfreeze_top(m, blocks=3)
        compile_model(m, lr=1e-3)
        hu = np.concatenate([hu_images(2, seed=11)] * 3, axis=-1)
        before = forward(m, hu)
        path = save_model(m, tmp_path / "sub" / "m.keras")
        with zipfile.ZipFile(path) as zf:
            config = zf.read("config.json").decode()
        assert "Lambda" not in config and "brain_audit>MultiWindow" in config
        loaded = load_model(path)  # safe_mode=True inside; would raise on a Lambda layer
        np.testing.assert_array_equal(forward(loaded, hu), before)
        # the training state survives (resume relies on it)
        assert len(loaded.trainable_weights) == len(m.trainable_weights)
        assert isinstance(loaded.loss, WeightedBinaryCrossentropy)
        assert loaded.get_layer("multi_window").get_config() == m.get_layer("multi_window").get_config()
        assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left

    def test_bad_suffix_and_missing_file(self, model_any, tmp_path):
        with pytest.raises(ValueError, match=r"`path` must end in '.keras'. Got '.*m.h5' instead."):
            save_model(model_any, tmp_path / "m.h5")
        with pytest.raises(WeightsFileNotFoundError, match="nope.keras: no such model file"):
            load_model(tmp_path / "nope.keras")

    def test_garbage_model_files_are_named_with_what_they_are_not(self, model_any, tmp_path):
        """Each refusal is a WeightsFileError (a ValueError for old callers) naming the file."""
        good = save_model(model_any, tmp_path / "good.keras")
        with zipfile.ZipFile(good) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}

        def archive(name: str, member: str, data: bytes | None) -> str:
            """The good archive with ``member`` replaced by ``data`` (left out when None)."""
            with zipfile.ZipFile(tmp_path / name, "w") as zf:
                for n, content in members.items():
                    if n != member or data is not None:
                        zf.writestr(n, data if n == member else content)
            return name

        (tmp_path / "text.keras").write_text("hello\n")
        (tmp_path / "cut.keras").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        (tmp_path / "legacy.h5").write_bytes(b"\x89HDF\r\n")
        (tmp_path / "folder.keras").mkdir()
        cases = {
            "text.keras": r"not a \.keras model file \(not a zip archive: truncated, or another format\)$",
            "cut.keras": r"not a \.keras model file \(not a zip archive: truncated, or another format\)$",
            "legacy.h5": r"not a \.keras model file \(save_model writes \.keras archives\)$",
            "folder.keras": r"is a folder, not a \.keras model file$",
            archive("no_weights.keras", "model.weights.h5", None):
                r"not a \.keras model file \(the zip archive holds no model\.weights\.h5\)$",
            archive("bad_json.keras", "config.json", b"{not json"):
                r"Keras cannot load it as a model \(JSONDecodeError: Expecting property name",
            archive("bad_weights.keras", "model.weights.h5", b"garbage"):
                r"Keras cannot load it as a model \(OSError: Unable to synchronously open file",
        }
        for name, reason in cases.items():
            path = tmp_path / name
            with pytest.raises(WeightsFileError, match=rf"^{re.escape(str(path))}: {reason}"):
                load_model(path, compile=False)
        assert issubclass(WeightsFileError, ValueError) and issubclass(WeightsFileNotFoundError, FileNotFoundError)
        assert load_model(good, compile=False).count_params() == model_any.count_params()  # the good one still loads


# ---------------------------------------------------------------- backbone weights
class TestBackboneWeights:
    def test_backbone_weights_path_reproduces_the_backbone(self, model_any, tmp_path):
        path = tmp_path / "bb.weights.h5"
        get_backbone(model_any).save_weights(path)
        other = build_model(SIZE, weights=path, seed=99)
        fresh = build_model(SIZE, weights=None, seed=99)
        rgb = np.stack([to_rgb(h[..., 0]) * 255 for h in hu_images(2, seed=12)])
        ref = forward(get_backbone(model_any), rgb)
        np.testing.assert_array_equal(forward(get_backbone(other), rgb), ref)
        assert not np.allclose(forward(get_backbone(fresh), rgb), ref)

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
        with pytest.raises(WeightsFileError, match=r"efficientnetb0_notop.h5: MD5 [0-9a-f]{32} is not Keras'"):
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
