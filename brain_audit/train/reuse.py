"""Whether a finished or resumable phase answers this request: the keys each phase depends on, the hashes of its
inputs, and the one-line refusal when they differ (``--force`` retrains).

Each phase's ``run.json`` records the request it answers (written when it starts and again when it ends);
:func:`check_trained` compares it with a run configuration before any work, and :func:`brain_audit.train.phases.run_phase`
before it reuses or resumes a phase.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from brain_audit.config import AuditPlan, CorrectionPlan, PhasePlan, RunConfig, StudyPlan
from brain_audit.provenance import (
    config_differences,
    file_sha256,
    read_json,
    run_record,
)
from brain_audit.run_layout import RunPaths
from brain_audit.train.pretrain import PRETRAIN_KEYS, _differing, _refusal, check_backbone

__all__ = ["phase_keys", "check_trained"]


#: Settings every phase depends on besides the plans of its own and earlier phases: the input (size, context), the
#: labels, the seed, the starting weights, what decides its patients (the audit and pretraining hold-outs, the
#: validation share, the nested cohorts) and the target sensitivity its reported threshold is chosen for.
_RUN_KEYS = ("image_size", "context", "head", "seed", "weights", "audit_patients", "validation_fraction",
             "pretrain.patients",
             *(f"phase{n}.{k}" for n in (1, 2) for k in ("cohort_size", "cohort_unit", "balance")),
             "phase4.target_sensitivity")


_PLANS = {1: PhasePlan, 2: PhasePlan, 3: AuditPlan, 4: CorrectionPlan, 5: StudyPlan}


_UPSTREAM = {1: (), 2: (1,), 3: (2,), 4: (2, 3), 5: (4,)}


_INPUTS = {"cohort": "on another cohort", "weights": "from other backbone weights",
           "phase1_model": "from another phase 1 model", "phase2_model": "from another phase 2 model",
           "hard_negatives": "on other hard negatives", "phase4_model": "from another phase 4 model"}


#: Keys that change only the phase's own outputs, nothing a later phase reads (Phase 3's pictures).
_OWN_ONLY = frozenset({"phase3.overlays"})


def phase_keys(config: RunConfig, phase: int) -> list[str]:
    """The configuration keys (dotted) a phase's result depends on, its own plan first: the plans of the
    phase and the phases before it (but Phase 3's ``overlays`` for Phase 4), ``image_size``, ``context``, ``head``,
    ``seed``, ``weights``, the keys that decide its patients, ``phase4.target_sensitivity``, and with
    ``weights = "pretrained"`` the pretraining's keys."""
    keys = [f"phase{n}.{f.name}" for n in range(phase, 0, -1) for f in dataclasses.fields(_PLANS[n])]
    keys = [k for k in keys if k.startswith(f"phase{phase}.") or k not in _OWN_ONLY]
    keys += _RUN_KEYS
    if config.weights == "pretrained":
        keys += PRETRAIN_KEYS
    return list(dict.fromkeys(keys))


def _input_files(config: RunConfig, phase: int) -> dict[str, Path]:
    """The files a phase starts from, by the name its ``run.json`` records their SHA-256 under."""
    paths = RunPaths(config.out_dir)
    files = {"cohort": paths.cohort / "cohort.csv"}
    if phase == 1 and config.backbone_weights is not None:
        files["weights"] = Path(config.backbone_weights)  # "imagenet" is no file: Keras' cache checks its hash
    if phase == 2:
        files["phase1_model"] = paths.model(1)
    if phase in (3, 4):
        files["phase2_model"] = paths.model(2)
    if phase == 4:
        files["hard_negatives"] = paths.phase(3) / "hard_negatives.csv"
    if phase == 5:
        files["phase4_model"] = paths.model(4)
    return files


def _phase_record(config: RunConfig, phase: int, status: str) -> dict[str, Any]:
    """A phase's ``run.json``: the resolved configuration, the seed, the SHA-256 of its input files, its status
    (``"started"`` when it begins, so that a resumed phase is checked too; ``"finished"``)."""
    inputs = {name: file_sha256(p) for name, p in _input_files(config, phase).items() if p.is_file()}
    return run_record(config, seeds={"run": config.seed}, inputs=inputs, phase=phase, status=status)


def _finished(paths: RunPaths, phase: int) -> bool:
    out = paths.phase(phase)
    return (out / "metrics.json").is_file() and (
        (out / "hard_negatives.csv").is_file() if phase == 3 else paths.model(phase).is_file()
    )


def _in_progress(out: Path) -> bool:
    """Whether an unfinished phase has something to resume: a checkpoint, or a finished Phase-4 candidate."""
    return any(out.glob("checkpoint/state.json")) or any(out.glob("dropout_*/checkpoint/state.json")) or any(
        out.glob("dropout_*/model.keras"))


def _check_phase(config: RunConfig, phase: int, record: dict, *, settings_only: bool = False) -> None:
    """Refuse a phase whose ``run.json`` answers another request than ``config``: a differing key of
    :func:`phase_keys`, or (unless ``settings_only``) an input file changed since (cohort, upstream model)."""
    verb = "run" if phase == 3 else "trained"
    diffs = config_differences(record.get("config") or {}, config, phase_keys(config, phase))
    if diffs:
        raise _refusal(f"phase {phase}", config, _differing(diffs), verb)
    if settings_only:
        return
    recorded = record.get("inputs") or {}
    root = Path(config.out_dir)
    for name, path in _input_files(config, phase).items():
        if name in recorded and path.is_file() and file_sha256(path) != recorded[name]:
            shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
            raise _refusal(f"phase {phase}", config, f"{_INPUTS[name]} ({shown} has changed since)", verb)


def check_trained(config: RunConfig, phases: Sequence[int] = (1, 2, 3, 4, 5), *, pretrain: bool | None = None) -> None:
    """Refuse, before any work, a run folder whose trained stages answer another request than ``config``.

    Every finished or resumable phase of ``phases`` (and the pretrained backbone, when ``pretrain`` or, for
    ``None``, when ``weights = "pretrained"``) is compared with ``config`` on the keys it depends on
    (:func:`phase_keys`, :data:`brain_audit.train.pretrain.PRETRAIN_KEYS`). :func:`run_all` calls it before
    :func:`prepare_data` could rebuild the cache for a changed ``image_size``; :func:`run_phase` also checks
    the hashes of each phase's inputs when it runs.

    Raises:
        ConfigError: one line naming the stage, the first differing key and both values.
    """
    if pretrain or (pretrain is None and config.weights == "pretrained"):
        check_backbone(config)
    paths = RunPaths(config.out_dir)
    for n in phases:
        record = read_json(paths.phase(n) / "run.json")
        if record is not None and (_finished(paths, n) or _in_progress(paths.phase(n))):
            _check_phase(config, n, record, settings_only=True)

