"""weights"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import keras

__all__ = ['IMAGENET_NOTOP_FILENAME', 'IMAGENET_NOTOP_MD5', 'keras_cache_dir', 'imagenet_weights_available', 'install_imagenet_weights', 'save_model', 'load_model']


#: File Keras looks for in ``<keras cache>/models/`` for ``EfficientNetB0(include_top=False, weights="imagenet")``;
#: ``BASE_WEIGHTS_PATH + name + "_notop.h5"`` in keras/src/applications/efficientnet.py.
IMAGENET_NOTOP_FILENAME = "efficientnetb0_notop.h5"


#: Its MD5 (``WEIGHTS_HASHES["b0"][1]`` in keras/src/applications/efficientnet.py), which Keras checks.
IMAGENET_NOTOP_MD5 = "50bc09e76180e00e4465e1a485ddc09d"


_IMAGENET_URL = "https://storage.googleapis.com/keras-applications/" + IMAGENET_NOTOP_FILENAME


def keras_cache_dir() -> Path:
    """The Keras cache folder as Keras resolves it: ``$KERAS_HOME``, else ``~/.keras``;
    ``/tmp/.keras`` when that folder is missing or not writable (``keras.utils.get_file``
    does the same; Keras creates its home at import). Downloads go to its ``models/``."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path("~").expanduser()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    if not os.access(base, os.W_OK):  # keras.utils.get_file falls back likewise
        base = Path("/tmp") / ".keras"
    return base


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_weights_available(cache_dir: str | Path | None = None) -> bool:
    """Whether ``weights="imagenet"`` would build without a download.

    True when ``<cache_dir>/models/efficientnetb0_notop.h5`` exists and has the MD5 Keras
    checks (a file with another hash would make Keras download again). Never downloads.

    Args:
        cache_dir: Keras cache folder; default :func:`keras_cache_dir`.
    """
    path = Path(cache_dir if cache_dir is not None else keras_cache_dir()) / "models" / IMAGENET_NOTOP_FILENAME
    return path.is_file() and _md5(path) == IMAGENET_NOTOP_MD5


def install_imagenet_weights(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Copy Keras' ImageNet EfficientNetB0 no-top file into the Keras cache (offline use).

    On Kaggle with internet off, attach the file ``efficientnetb0_notop.h5`` as a dataset
    and call this once (or pass its path to :func:`build_model`, which does). The copy is
    atomic; an identical file already in place is left alone.

    Args:
        source: path to ``efficientnetb0_notop.h5`` (any file name; identified by MD5).
        cache_dir: Keras cache folder; default :func:`keras_cache_dir`.

    Returns:
        The path in the cache.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` is not the file Keras expects (MD5 differs).
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such weights file")
    digest = _md5(source)
    if digest != IMAGENET_NOTOP_MD5:
        raise ValueError(
            f"{source.name}: MD5 {digest} is not Keras' {IMAGENET_NOTOP_FILENAME} ({IMAGENET_NOTOP_MD5}); "
            "Keras would discard it and download again"
        )
    target_dir = Path(cache_dir if cache_dir is not None else keras_cache_dir()) / "models"
    target = target_dir / IMAGENET_NOTOP_FILENAME
    if target.is_file() and _md5(target) == IMAGENET_NOTOP_MD5:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{IMAGENET_NOTOP_FILENAME}.", suffix=".part", dir=target_dir)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _is_imagenet_file(path: Path) -> bool:
    if path.name.endswith(".weights.h5") or path.suffix != ".h5":
        return False
    if path.name == IMAGENET_NOTOP_FILENAME:
        return True  # by name: a wrong hash is then reported by install_imagenet_weights
    return _md5(path) == IMAGENET_NOTOP_MD5


def save_model(model: keras.Model, path: str | Path) -> Path:
    """Save as a ``.keras`` archive atomically (temporary file + ``os.replace``).

    The archive holds the architecture (no Lambda layers, so loading is safe-mode),
    the weights including window settings, and the optimizer state if compiled.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"`path` must end in '.keras'. Got {str(path)!r} instead.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by :func:`save_model`, in Keras' safe mode.

    The custom objects (:class:`MultiWindow`, :class:`WeightedBinaryCrossentropy`,
    :class:`ColumnAUC`) are registered when this module is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    return keras.models.load_model(path, compile=compile, safe_mode=True)

