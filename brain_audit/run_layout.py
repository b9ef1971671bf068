"""layout"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ['RunPaths']


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: ``data/`` (index, cohort, cache), ``pretrain/``, ``phase1/`` ... ``phase4/``."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "data" / "index"

    @property
    def cohort(self) -> Path:
        return self.root / "data" / "cohort"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    def phase(self, n: int) -> Path:
        return self.root / f"phase{n}"

