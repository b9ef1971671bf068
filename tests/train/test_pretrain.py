"""brain_audit.train.pretrain takes a brain_audit.config.PretrainPlan and records it.

A tiny run (32 px, a handful of slices, one epoch of each stage): what is checked is the
manifest, against the plan and Augment's own defaults, not what the network learned.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from brain_audit.config import PretrainPlan
from brain_audit.dataset.feed import Augment


@pytest.mark.slow
def test_manifest_records_the_plan_warmup_and_augmentation(tmp_path):
    from brain_audit.train.pretrain import formula_slices, pretrain_backbone

    x, y = formula_slices(12, image_size=32, seed=4)
    plan = PretrainPlan(patients=6, epochs=1, batch_size=4, learning_rate=2e-3, validation_fraction=0.25,
                        augment=True, warmup_epochs=1, warmup_slices=8, warmup_target_auc=0.9)
    ids = [f"P{i // 2}" for i in range(len(x))]  # two slices per patient
    result = pretrain_backbone(x, y, tmp_path / "b.weights.h5", plan, image_size=32, seed=5, dropout=0.3,
                               patient_ids=ids, verbose=0, jit_compile=False)
    config = json.loads(result.manifest_path.read_text())["config"]
    assert {k: config[k] for k in dataclasses.asdict(plan)} == dataclasses.asdict(plan)
    assert (config["image_size"], config["seed"], config["dropout"], config["head"], config["context"]) == (
        32, 5, 0.3, "any", 0)
    assert config["augmentation"] == dataclasses.asdict(Augment())
    assert config["objective"].startswith("formula-driven warm-up")
    assert result.metrics["warmup_epochs_run"] == 1 and len(result.history["loss"]) == 1
    # the held-out share is of patients: round(6 * 0.25) = 2 patients, 4 slices
    assert (result.metrics["n_train"], result.metrics["n_val"]) == (8, 4)
    assert np.isfinite(result.metrics["val_loss"])
