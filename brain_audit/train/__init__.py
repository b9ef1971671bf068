"""The seed's four training phases, resumable, on one device or two GPUs.

``runtime`` (devices, precision, seeds, the resumable fit loop), ``prepare`` (labels -> index ->
cohorts -> cache for one run), ``pretrain`` (domain pretraining of the backbone),
``hard_negatives`` (Phase 3's mining) and ``phases`` (phases 1-4, ``run_phase``, ``run_all``).
"""

from __future__ import annotations

from brain_audit.train.phases import set_dropout, run_phase, run_all
from brain_audit.train.prepare import prepare_data
from brain_audit.train.pretrain import (
    run_pretrain,
    PretrainConfig,
    PretrainResult,
    formula_slices,
    pretrain_backbone,
    manifest_path,
    cohort_sha256,
)
from brain_audit.train.runtime import (
    distribution_strategy,
    precision_for_devices,
    precision_policy,
    reseed_model,
    fit_resumable,
)

__all__ = [
    "set_dropout",
    "run_phase",
    "run_all",
    "prepare_data",
    "run_pretrain",
    "PretrainConfig",
    "PretrainResult",
    "formula_slices",
    "pretrain_backbone",
    "manifest_path",
    "cohort_sha256",
    "distribution_strategy",
    "precision_for_devices",
    "precision_policy",
    "reseed_model",
    "fit_resumable",
]
