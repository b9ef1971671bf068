"""A copy of a finished run folder that a test may change, and its configuration with overrides.

Used by tests/train/test_phases.py and tests/train/test_pretrain.py on the session's quick demo run
(tests/conftest.py ``quick_run``), which other tests read and must find unchanged.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from brain_audit.config import RunConfig, apply_overrides
from brain_audit.run_lock import LOCK_NAME


def copy_run(config: RunConfig, out: Path, dst: Path) -> tuple[RunConfig, Path, Callable[..., RunConfig]]:
    """Copy the run folder ``out`` (its data included) to ``dst``; returns ``(config, dst, ask)`` where
    ``config`` points at the copy and ``ask(*overrides)`` is it with ``key=value`` overrides applied."""
    shutil.copytree(out, dst)
    config = dataclasses.replace(config, out_dir=str(dst), data_root=str(dst / "data"))
    return config, dst, lambda *overrides: apply_overrides(config, overrides)


def snapshot(root: Path) -> dict[Path, tuple[bytes, Any]]:
    """Bytes and mtime of every file under ``root``; of a lock file (rewritten by every holder, empty when
    free) its bytes only."""
    return {p: (p.read_bytes(), None if p.name == LOCK_NAME else p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def refusal(stage: str, out: Path, detail: str, verb: str = "trained") -> str:
    """The whole one-line refusal to reuse ``stage`` of ``out``, as a regular expression, written out here."""
    again = "retrain" if verb == "trained" else "rerun"
    return "^" + re.escape(f"{stage} in {out} was {verb} {detail}. Use --force to {again} it, or another --out.") + "$"
