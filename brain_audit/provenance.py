"""Atomic outputs and run provenance.

Every artefact brain_audit writes goes through :func:`atomic_path`: the file is
written under a temporary name in the destination folder and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows. A killed run therefore
leaves either the old file or the new one, never half of one, and a rerun can trust
what it finds. :func:`atomic_write_bytes` (and its text / JSON / DataFrame wrappers)
write bytes that way; writers that want a path (Keras' ``model.save``) use
:func:`atomic_path` directly.

:func:`run_record` gathers what a run needs to be replayed: the resolved
configuration, the seeds, the package versions and the platform; torchio's
habit of recording every transform's arguments, applied to whole runs. The same
record tells a rerun whether a stored result answers the request:
:func:`config_differences` compares a recorded configuration with a requested one,
key by key (:func:`flat_config`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_temporaries",
    "read_json",
    "write_json",
    "write_csv",
    "file_digest",
    "file_sha256",
    "file_fingerprint",
    "package_versions",
    "run_record",
    "flat_config",
    "config_differences",
]

_PACKAGES = (
    "brain_audit",
    "numpy",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "opencv-python-headless",
    "pandas",
    "scikit-learn",
    "scipy",
    "tensorflow",
    "keras",
    "matplotlib",
)


_UMASK_GUARD = threading.Lock()

#: Name of a temporary of :func:`atomic_path`: ``.<final name>.<8 characters of mkstemp><suffix>``.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.[A-Za-z0-9_.]+$")


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``, kernel >= 4.7);
    elsewhere set and restored at once, under a lock so that two writers of this module never race."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_GUARD:
        old = os.umask(0o077)
        os.umask(old)
    return old


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".part", mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the block succeeds.

    The temporary file (``.<name>.<random><suffix>`` in the same folder, so the final
    :func:`os.replace` stays on one file system) is created empty and private (mode 0600);
    the block writes it by path. On success it is given its final mode and replaces ``path``
    atomically; if the block raises, it is removed and ``path`` is left as it was. Parent
    folders are created.

    Args:
        path: the final file.
        suffix: end of the temporary name, for writers that check it (Keras wants
            ``.keras`` for ``model.save`` and ``.weights.h5`` for ``save_weights``).
        mode: permission bits of the final file. ``None`` (the default): what a plain
            ``open(path, "w")`` would give, ``0o666`` less the umask (0644 under the usual 022).
            ``0o600`` for a secret such as a key file: it is never readable by others, not
            even while it is written.

    Example::

        with atomic_path("phase1/model.keras", suffix=".keras") as tmp:
            model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)  # the writer may have replaced the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`), flushed to disk before the rename.

    Parent folders are created; ``mode`` as in :func:`atomic_path` (default: follow the umask).
    Returns the final path.
    """
    path = Path(path)
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; ``mode`` as in :func:`atomic_path`."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def remove_temporaries(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left in ``folder`` when a writer was killed.

    A temporary is named ``.<final name>.<8 random characters><suffix>``; other files are kept.
    Call it only while no other process writes into ``folder`` (under
    :func:`brain_audit.run_lock.run_lock`). Returns the removed paths (none if ``folder`` is missing).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob(".*") if recursive else folder.glob(".*"):
        if p.is_file() and _TEMPORARY.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    try:  # numpy scalars and arrays without importing numpy at module load
        return obj.tolist()
    except AttributeError:
        pass
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_json(path: str | Path) -> dict | None:
    """A JSON object written by :func:`write_json`, or ``None`` when the file is missing, unreadable or holds
    no JSON object (a half-written or foreign file is treated as absent, never trusted)."""
    try:
        out = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically.

    Dataclasses, paths, sets and numpy values are converted.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def write_csv(path: str | Path, frame: Any, index: bool = False) -> Path:
    """Write a :class:`pandas.DataFrame` as CSV atomically."""
    return atomic_write_text(path, frame.to_csv(index=index, lineterminator="\n"))


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks.

    Args:
        path: the file.
        algorithm: a :func:`hashlib.new` name: ``"sha256"`` for our run records, ``"md5"`` for
            the hashes Keras publishes for its application weights.
        chunk: bytes read at a time.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (:func:`file_digest` with ``"sha256"``)."""
    return file_digest(path, "sha256", chunk)


def file_fingerprint(path: str | Path) -> str:
    """Cheap identity of a file: ``"<size>:<mtime_ns>"``.

    Used where hashing 450 GB of DICOM is too slow; a changed file changes it.
    """
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` if absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_record(
    config: Any = None,
    seeds: Mapping[str, int] | None = None,
    inputs: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a run needs to be replayed, as a JSON-ready dict.

    Args:
        config: the resolved configuration (a dataclass or mapping).
        seeds: every seed the run used, by name.
        inputs: input name -> hash or fingerprint (see :func:`file_sha256`).
        **extra: further fields, written as given.
    """
    record: dict[str, Any] = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "config": dataclasses.asdict(config)
        if dataclasses.is_dataclass(config) and not isinstance(config, type)
        else config,
        "seeds": dict(seeds or {}),
        "inputs": dict(inputs or {}),
    }
    record.update(extra)
    return record


def flat_config(config: Any) -> dict[str, Any]:
    """A configuration (dataclass or mapping, e.g. the ``config`` of a :func:`run_record`) as JSON values
    under dotted keys: ``{"image_size": 256, "phase1.epochs": 3, "phase4.dropouts": [0.5, 0.2], ...}``.

    Values go through JSON as :func:`write_json` writes them (tuples become lists), so a configuration
    and the record written from it compare equal.
    """
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) and not isinstance(config, type) else config
    data = json.loads(json.dumps(data or {}, default=_json_default, allow_nan=True))
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value

    walk("", data)
    return flat


def config_differences(recorded: Any, requested: Any, keys: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """``(key, recorded value, requested value)`` for every one of ``keys`` (dotted, in their order) whose value
    differs between two configurations (dataclasses or mappings, see :func:`flat_config`). A key the
    recorded configuration lacks (written by an older version) is not compared."""
    old, new = flat_config(recorded), flat_config(requested)
    return [(k, old[k], new.get(k)) for k in keys if k in old and old[k] != new.get(k)]
