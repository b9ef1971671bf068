"""The seed's four training phases, resumable, on one device or two GPUs.

``runtime`` (devices, precision, seeds, the resumable fit loop), ``prepare`` (labels -> index ->
cohorts -> cache for one run), ``pretrain`` (domain pretraining of the backbone),
``hard_negatives`` (Phase 3's mining) and ``phases`` (phases 1-4, ``run_phase``, ``run_all``).
"""

from __future__ import annotations

from brain_audit.train.hard_negatives import HARD_NEGATIVE_COLUMNS, mine_hard_negatives
from brain_audit.train.phases import run_all, run_phase, set_dropout
from brain_audit.train.prepare import data_summary, open_run_cache, prepare_data
from brain_audit.train.pretrain import (
    PRETRAIN_KEYS,
    PretrainResult,
    check_backbone,
    cohort_sha256,
    formula_slices,
    manifest_path,
    pretrain_backbone,
    run_pretrain,
)
from brain_audit.train.reuse import check_trained, phase_keys
from brain_audit.train.runtime import (
    distribution_strategy,
    fit_resumable,
    precision_for_devices,
    precision_policy,
    reseed_model,
)

__all__ = [
    "distribution_strategy",
    "precision_for_devices",
    "precision_policy",
    "reseed_model",
    "fit_resumable",
    "prepare_data",
    "data_summary",
    "open_run_cache",
    "run_pretrain",
    "check_backbone",
    "PRETRAIN_KEYS",
    "PretrainResult",
    "formula_slices",
    "pretrain_backbone",
    "manifest_path",
    "cohort_sha256",
    "HARD_NEGATIVE_COLUMNS",
    "mine_hard_negatives",
    "phase_keys",
    "check_trained",
    "set_dropout",
    "run_phase",
    "run_all",
]
