"""One run per folder: an exclusive lock on every output folder while a process writes into it.

Two runs writing one folder with different settings corrupt it without an error (shards of one
size under a manifest of another). Every entry point that writes a run folder therefore holds
:func:`run_lock` on it: ``<folder>/.brain_audit.lock``, locked with ``flock(2)``. The kernel
drops the lock when its process ends, however it ends, so a ``kill -9`` never leaves a stale lock
behind. While held, the file names its holder (PID and command line, one line of JSON); a second
process is refused at once with a :class:`~brain_audit.errors.ConfigError` that names them::

    `runs/x` is in use by PID 1234 (`brain-audit prepare --out runs/x`); wait for it or use another --out

The lock is re-entrant within one process (:func:`brain_audit.demo.run_demo` holds it for the
whole demo while ``prepare_data``, ``run_pretrain`` and ``run_phase`` take it again inside). It
is advisory and POSIX-only: where ``fcntl`` is missing (Windows) the folder is not locked.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from brain_audit.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "run_lock", "lock_holder"]

#: The lock file inside a locked folder.
LOCK_NAME = ".brain_audit.lock"


@dataclass
class _Held:
    fd: int
    pid: int
    depth: int


_HELD: dict[str, _Held] = {}  # real path of the folder -> the lock this process holds on it
_GUARD = threading.RLock()


def _command_line(argv: list[str]) -> str:
    """``argv`` as one shell-like line: the program by its name (``brain-audit``, not its full path)."""
    if not argv:
        return "python"
    words = [Path(argv[0]).name or argv[0], *argv[1:]]
    line = " ".join(shlex.quote(w) for w in words).replace("\n", " ")
    return line if len(line) <= 200 else line[:197] + "..."


def lock_holder(folder: str | Path) -> dict | None:
    """What the lock file of ``folder`` says about its holder (``pid``, ``argv``, ``since_utc``), or ``None``
    when it is empty or unreadable. It says nothing about whether the lock is held now."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and "pid" in holder else None


def _refusal(folder: Path, option: str) -> ConfigError:
    holder = None
    for _ in range(20):  # the holder writes its name just after it takes the lock
        holder = lock_holder(folder)
        if holder is not None:
            break
        time.sleep(0.025)
    if holder is None:
        who = "another process"
    else:
        argv = holder.get("argv")
        who = f"PID {holder['pid']}" + (f" (`{_command_line(argv)}`)" if isinstance(argv, list) else "")
    return ConfigError(f"`{folder}` is in use by {who}; wait for it or use another {option}")


def _acquire(folder: Path, option: str) -> _Held:
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _refusal(folder, option) from None
    except OSError as exc:  # a file system without flock (some network mounts): go on unlocked
        os.close(fd)
        warnings.warn(f"`{folder}` cannot be locked ({exc.strerror or exc}); a second run into it would not be "
                      "detected", RuntimeWarning, stacklevel=4)
        return _Held(-1, os.getpid(), 1)
    record = {"pid": os.getpid(), "argv": list(sys.argv),
              "since_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return _Held(fd, os.getpid(), 1)


def _release(held: _Held) -> None:
    if held.fd < 0:
        return
    try:
        os.ftruncate(held.fd, 0)  # an idle lock file is empty: an unchanged rerun leaves the folder's bytes as they were
        fcntl.flock(held.fd, fcntl.LOCK_UN)
    finally:
        os.close(held.fd)


@contextmanager
def run_lock(folder: str | Path, *, option: str = "--out") -> Iterator[Path]:
    """Hold the exclusive lock of an output folder for the duration of a block.

    The folder is created if needed. Re-entrant within one process: an inner ``run_lock`` on a
    folder this process already holds returns at once, and the lock is released when the
    outermost block ends. Never waits: a folder held by another process is refused.

    Args:
        folder: the output folder (a run folder, a cache folder).
        option: the command-line option that chooses the folder, for the message.

    Yields:
        The lock file, ``<folder>/.brain_audit.lock``.

    Raises:
        ConfigError: another process holds the folder (the message names its PID and command line).
        OSError: the folder cannot be created or written (``PermissionError``, ``NotADirectoryError``,
            with the refused path as ``filename``).

    Example::

        with run_lock(config.out_dir):
            prepare_data(config)
            run_phase(config, 1)
    """
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover - Windows
        yield folder / LOCK_NAME
        return
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            held.depth += 1
        else:
            held = _HELD[key] = _acquire(folder, option)
    try:
        yield folder / LOCK_NAME
    finally:
        with _GUARD:
            held.depth -= 1
            if held.depth == 0:
                del _HELD[key]
                _release(held)
