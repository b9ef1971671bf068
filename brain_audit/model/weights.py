"""Backbone weights on and off disk: Keras' ImageNet file offline, and model save / load.

Keras keeps ``EfficientNetB0(weights="imagenet")``'s file in its own cache
(``<Keras home>/models/efficientnetb0_notop.h5``, fetched by ``keras.utils.get_file`` and
checked against a published MD5). Offline (Kaggle with internet off) the same file, attached
as a dataset, is put into that cache with ``get_file`` itself from a ``file://`` origin
(:func:`install_imagenet_weights`), so the network is then built with ``weights="imagenet"``.
Loading the file by path instead would give another graph: only for ``weights="imagenet"``
does Keras add a ``Rescaling(1 / sqrt(stddev))`` after its ``Normalization`` layer
(keras/src/applications/efficientnet.py; tensorflow/tensorflow#49930).

Models are saved as ``.keras`` archives atomically (:func:`brain_audit.provenance.atomic_path`)
and loaded in Keras' safe mode. Nothing here downloads at import.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import keras

from brain_audit.errors import WeightsFileError, WeightsFileNotFoundError
from brain_audit.provenance import atomic_path, file_digest

__all__ = [
    "IMAGENET_NOTOP_FILENAME",
    "IMAGENET_NOTOP_MD5",
    "keras_cache_dir",
    "imagenet_weights_available",
    "install_imagenet_weights",
    "save_model",
    "load_model",
]


#: File Keras looks for in ``<keras cache>/models/`` for ``EfficientNetB0(include_top=False, weights="imagenet")``;
#: ``BASE_WEIGHTS_PATH + name + "_notop.h5"`` in keras/src/applications/efficientnet.py.
IMAGENET_NOTOP_FILENAME = "efficientnetb0_notop.h5"


#: Its MD5 (``WEIGHTS_HASHES["b0"][1]`` in keras/src/applications/efficientnet.py), which Keras checks.
IMAGENET_NOTOP_MD5 = "50bc09e76180e00e4465e1a485ddc09d"


def keras_cache_dir() -> Path:
    """The folder ``keras.utils.get_file`` caches into when given no ``cache_dir``.

    Keras' home (``$KERAS_HOME``, else ``~/.keras``, fixed when Keras is imported), or
    ``/tmp/.keras`` when that folder is not writable. ImageNet files go to its ``models/``.
    """
    # Keras exports no accessor for its home; get_file reads this private one, and falls back as below.
    from keras.src.backend.config import keras_home

    home = Path(keras_home()).expanduser()
    if os.access(home, os.W_OK):
        return home
    return Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"


def _cached_file(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else keras_cache_dir()) / "models" / IMAGENET_NOTOP_FILENAME


def _md5(path: Path) -> str:
    # keras.utils exports get_file only; its hash helpers (file_utils.validate_file) are private.
    return file_digest(path, "md5")


def imagenet_weights_available(cache_dir: str | Path | None = None) -> bool:
    """Whether ``weights="imagenet"`` would build without a download.

    True when ``<cache_dir>/models/efficientnetb0_notop.h5`` exists and has the MD5 Keras
    checks (a file with another hash would make Keras download again). Never downloads.

    Args:
        cache_dir: Keras cache folder; default :func:`keras_cache_dir`.
    """
    path = _cached_file(cache_dir)
    return path.is_file() and _md5(path) == IMAGENET_NOTOP_MD5


def install_imagenet_weights(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Put Keras' ImageNet EfficientNetB0 no-top file into the Keras cache (offline use).

    On Kaggle with internet off, attach the file ``efficientnetb0_notop.h5`` as a dataset
    and call this once (or pass its path to :func:`brain_audit.model.build_model`, which
    does). The copy is ``keras.utils.get_file`` from a ``file://`` origin: no network, the
    cache Keras itself reads, an identical file already there left alone, the copy checked
    against the MD5. ``source`` is checked first, so a wrong file is refused even when the
    cache already holds the right one.

    Args:
        source: path to ``efficientnetb0_notop.h5`` (any file name; identified by MD5).
        cache_dir: Keras cache folder (created); default: Keras' own (:func:`keras_cache_dir`).

    Returns:
        The path in the cache.

    Raises:
        WeightsFileNotFoundError: ``source`` does not exist (a ``FileNotFoundError``).
        WeightsFileError: ``source`` is not the file Keras expects (MD5 differs); the message
            names the file and both hashes (a ``ValueError``).
    """
    source = Path(source)
    if not source.is_file():
        raise WeightsFileNotFoundError(f"{source}: no such weights file")
    digest = _md5(source)
    if digest != IMAGENET_NOTOP_MD5:
        raise _wrong_file(source.name, digest)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)  # get_file would fall back to /tmp/.keras
    try:
        target = keras.utils.get_file(
            IMAGENET_NOTOP_FILENAME,
            origin=source.resolve().as_uri(),
            cache_subdir="models",
            file_hash=IMAGENET_NOTOP_MD5,
            hash_algorithm="md5",
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except ValueError:  # Keras' check of the copy failed (the source changed while copied); it keeps the copy
        copy = _cached_file(cache_dir)
        digest = _md5(copy)
        copy.unlink()
        raise _wrong_file(source.name, digest) from None
    return Path(target)


def _wrong_file(name: str, digest: str) -> WeightsFileError:
    return WeightsFileError(
        f"{name}: MD5 {digest} is not Keras' {IMAGENET_NOTOP_FILENAME} ({IMAGENET_NOTOP_MD5}); "
        "Keras would discard it and download again"
    )


def _is_imagenet_file(path: Path) -> bool:
    if path.name.endswith(".weights.h5") or path.suffix != ".h5":
        return False
    if path.name == IMAGENET_NOTOP_FILENAME:
        return True  # by name: a wrong hash is then reported by install_imagenet_weights
    return _md5(path) == IMAGENET_NOTOP_MD5


def save_model(model: keras.Model, path: str | Path) -> Path:
    """Save as a ``.keras`` archive atomically (:func:`brain_audit.provenance.atomic_path`).

    The archive holds the architecture (no Lambda layers, so loading is safe-mode),
    the weights including window settings, and the optimizer state if compiled.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"`path` must end in '.keras'. Got {str(path)!r} instead.")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp, overwrite=True)
    return path


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by :func:`save_model`, in Keras' safe mode.

    The custom objects (:class:`MultiWindow`, :class:`WeightedBinaryCrossentropy`,
    :class:`ColumnAUC`) are registered by :mod:`brain_audit.model.layers`, which importing
    :mod:`brain_audit.model` loads.

    Raises:
        WeightsFileNotFoundError: no file at ``path`` (a ``FileNotFoundError``).
        WeightsFileError: ``path`` is a folder, not a ``.keras`` zip archive (another format, or
            truncated), holds no Keras model, or Keras cannot rebuild the model from it; the
            message names the file and what it is not (a ``ValueError``).
    """
    path = Path(path)
    if not path.exists():
        raise WeightsFileNotFoundError(f"{path}: no such model file")
    if path.is_dir():
        raise WeightsFileError(f"{path}: is a folder, not a .keras model file")
    if path.suffix != ".keras":
        raise WeightsFileError(f"{path}: not a .keras model file (save_model writes .keras archives)")
    if not zipfile.is_zipfile(path):
        raise WeightsFileError(f"{path}: not a .keras model file (not a zip archive: truncated, or another format)")
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
    missing = sorted({"config.json", "model.weights.h5"} - members)
    if missing:
        raise WeightsFileError(f"{path}: not a .keras model file (the zip archive holds no {missing[0]})")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        # What Keras raises on an archive it cannot rebuild: JSONDecodeError (a ValueError) on a
        # garbled config, ValueError / TypeError from deserialising unknown or unsafe layers, KeyError
        # on a config missing a key, OSError from h5py on garbled weights, BadZipFile on a damaged
        # member. The reason is kept in the message and the chain (`brain-audit --debug`).
        reason = (str(exc).strip().splitlines() or [""])[0]
        reason = f": {reason[:160]}{'...' if len(reason) > 160 else ''}" if reason else ""
        raise WeightsFileError(f"{path}: Keras cannot load it as a model ({type(exc).__name__}{reason})") from exc
