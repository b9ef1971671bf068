"""brain_audit.model.weights: the ImageNet file through Keras' own cache, and atomic saves.

Nothing is downloaded: the "ImageNet file" is a stand-in whose MD5 is patched in as the
expected one, and every copy goes through ``keras.utils.get_file`` from a ``file://`` origin.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from brain_audit.model import weights as bam
from brain_audit.provenance import atomic_write_bytes

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
        with pytest.raises(ValueError, match=rf"^other.h5: MD5 {other_md5} is not Keras' "
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
        with pytest.raises(ValueError, match=rf"^effnet_b0_imagenet.h5: MD5 {half_md5} is not Keras' "
                                             rf"efficientnetb0_notop.h5 \({STAND_IN_MD5}\)"):
            bam.install_imagenet_weights(stand_in, cache_dir=cache)
        assert list((cache / "models").iterdir()) == []

    def test_missing_source(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.h5: no such weights file"):
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
