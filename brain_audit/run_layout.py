"""Where a run writes: the one map of a run folder, used by training, the audit and the demo.

::

    <out_dir>/data/index/  data/cohort/  data/cache/      prepared data (header index, splits, HU cache)
    <out_dir>/data/summary.json                            what each data stage kept and left out
    <out_dir>/pretrain/backbone.weights.h5                 domain-pretrained backbone (+ manifest)
    <out_dir>/phase1/ ... phase4/                           model.keras, history.csv, metrics.json, run.json
    <out_dir>/phase4/operating_point.json                  the thresholds chosen on validation
    <out_dir>/phase5/                                      optional study model: model.keras, operating_point.json,
                                                           embeddings/ (train.study)
    <out_dir>/clinical_audit_report/                       the held-out audit
    <out_dir>/clinical_audit_report/bone_study/            the bone-removal study (audit.bone_study)
    <out_dir>/shortcut_study/                              planted shortcuts caught or not (shortcut_study)
    <out_dir>/.brain_audit.lock                            held while a process writes the run (run_lock)

Each phase's ``run.json`` records the request it answers (configuration, input hashes); a rerun
reuses the phase only for that request (:func:`brain_audit.train.phases.run_phase`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brain_audit.errors import ConfigError

__all__ = ["BONE_STUDY_DIR", "REPORT_DIR", "RunPaths"]

#: Folder of the held-out clinical audit inside a run.
REPORT_DIR = "clinical_audit_report"
#: Folder of the bone-removal study inside the clinical audit report.
BONE_STUDY_DIR = "bone_study"


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder (nothing is created here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

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
    def data_summary(self) -> Path:
        """What every data stage kept and left out (``data/summary.json``)."""
        return self.root / "data" / "summary.json"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def backbone(self) -> Path:
        """The domain-pretrained backbone weights (``weights = "pretrained"``)."""
        return self.pretrain / "backbone.weights.h5"

    def phase(self, n: int) -> Path:
        return self.root / f"phase{n}"

    def model(self, phase: int) -> Path:
        """The model a phase finished with (Phase 3 audits and writes none)."""
        return self.phase(phase) / "model.keras"

    @property
    def operating_point(self) -> Path:
        """Phase 4's thresholds, chosen on validation."""
        return self.phase(4) / "operating_point.json"

    def finished_model(self, purpose: str, model_path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
        """The model a finished Phase 4 left (or ``model_path``) and its operating point (the parsed JSON).

        Raises:
            ConfigError: naming ``purpose`` (e.g. ``"the audit"``) and the missing file.
        """
        model = Path(model_path) if model_path else self.model(4)
        for path in (model, self.operating_point):
            if not path.is_file():
                raise ConfigError(f"{purpose} needs a finished Phase 4: {path} is missing (run Phase 4 first).")
        return model, json.loads(self.operating_point.read_text())

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def shortcut_study(self) -> Path:
        """The shortcut study of a phantom run (:mod:`brain_audit.shortcut_study`), read by the audit's report."""
        return self.root / "shortcut_study"

    @property
    def bone_study(self) -> Path:
        """The bone-removal study (:mod:`brain_audit.audit.bone_study`)."""
        return self.report / BONE_STUDY_DIR
