"""brain_audit.train.pretrain: domain pretraining of the backbone, offline (weights=None, small inputs).

Expected values come from outside the code under test: scikit-learn AUCs of a head trained on the
pretrained backbone against one on a random backbone, the formula slices' HU by construction, and
for the manifest the plan and Augment's own defaults. The manifest test is a tiny run (32 px, a
handful of slices, one epoch of each stage): it checks what is recorded, not what the network learned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from brain_audit.config import PretrainPlan
from brain_audit.dataset.feed import Augment
from brain_audit.model.network import build_model, compile_model, freeze_backbone
from support.model_inputs import SIZE, forward


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


# ---------------------------------------------------------------- domain pretraining
@pytest.mark.slow
def test_pretrained_backbone_makes_phase1_beat_chance(tmp_path):
    from brain_audit.config import PretrainPlan
    from brain_audit.train.pretrain import cohort_sha256, formula_slices, manifest_path, pretrain_backbone

    x_pre, y_pre = formula_slices(320, SIZE, seed=1)  # the pretraining cohort: head-like slices, half with blobs
    x_aud, y_aud = formula_slices(240, SIZE, seed=2)  # the "audit" cohort, other patients
    ids = [f"P{i:04d}" for i in range(len(x_pre))]
    plan = PretrainPlan(epochs=5, batch_size=32, learning_rate=1e-3, augment=False, warmup_epochs=0)
    result = pretrain_backbone(
        x_pre, y_pre, tmp_path / "bb.weights.h5", plan, image_size=SIZE, seed=0,
        patient_ids=ids, exclude_patients=["A0001"], verbose=0,
    )
    assert result.weights_path.is_file() and result.manifest_path == manifest_path(result.weights_path)
    assert len(result.history["loss"]) == 5
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["seeds"] == {"seed": 0}
    assert manifest["inputs"]["cohort_sha256"] == cohort_sha256(x_pre[..., None], y_pre[:, None], ids)
    assert manifest["weights_sha256"] == hashlib.sha256(result.weights_path.read_bytes()).hexdigest()
    assert manifest["packages"]["keras"] == keras.__version__
    # the plan, field by field, and the run-level settings; the objective names no warm-up that did not run
    assert {k: manifest["config"][k] for k in dataclasses.asdict(plan)} == dataclasses.asdict(plan)
    assert (manifest["config"]["image_size"], manifest["config"]["dropout"], manifest["config"]["head"]) == (SIZE, 0.2, "any")
    assert manifest["config"]["augmentation"] is None
    assert manifest["config"]["objective"].startswith("supervised multi-label BCE")
    assert result.metrics["val_auc_any"] > 0.9

    aucs = {}
    for name, weights in (("pretrained", result.weights_path), ("random", None)):
        m = build_model(SIZE, weights=weights, seed=3)
        freeze_backbone(m)
        compile_model(m, lr=1e-2, jit_compile=False)  # head only: no XLA compile worth paying for
        m.fit(x_aud[:160, ..., None], y_aud[:160], epochs=6, batch_size=32, verbose=0)
        aucs[name] = roc_auc_score(y_aud[160:], forward(m, x_aud[160:, ..., None])[:, 0])
    assert aucs["pretrained"] > 0.85, aucs
    assert aucs["random"] < 0.7, aucs


def test_formula_slices_hu_and_labels_by_construction():
    from brain_audit.train.pretrain import formula_slices

    x, y = formula_slices(40, image_size=48, seed=5)
    assert x.shape == (40, 48, 48) and x.dtype == np.float32 and y.shape == (40,)
    assert set(np.unique(y)) == {0.0, 1.0}
    again = formula_slices(40, image_size=48, seed=5)
    np.testing.assert_array_equal(again[0], x)
    for im, label in zip(x, y):
        assert im[0, 0] == -1000.0  # air in the corner
        assert (im > 500).sum() > 0  # the skull ring
        brain = (im > -500) & (im < 500)
        # blob pixels: 60-80 HU +- 4 HU noise, well above the 25-45 HU brain (+- 4 HU noise). The
        # smallest blob (radius 5 % of 48 px = 2.4 px) covers ~18 px, at 60 HU about 2/3 of them > 58 HU
        hot = ((im > 58) & (im < 100)).sum()
        if label:
            assert hot >= 8, hot
        else:
            assert hot < 5, hot
        assert brain.sum() > 0.25 * im.size
    with pytest.raises(ValueError, match=r"`n` must be an int >= 1. Got 0 instead."):
        formula_slices(0)
    with pytest.raises(ValueError, match=r"`image_size` must be an int >= 8. Got 4 instead."):
        formula_slices(1, image_size=4)


def test_pretrain_refuses_audit_patients_and_bad_paths(tmp_path):
    from brain_audit.train.pretrain import pretrain_backbone

    x, y = np.zeros((4, 32, 32), np.float32), np.array([0, 1, 0, 1], np.float32)
    with pytest.raises(ValueError, match=r"shares 1 patients with the audit cohort \(e.g. \['P1'\]\)"):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", patient_ids=["P0", "P1", "P2", "P3"], exclude_patients=["P1"])
    with pytest.raises(ValueError, match=r"`out_path` must end in '.weights.h5'. Got '.*b.h5' instead."):
        pretrain_backbone(x, y, tmp_path / "b.h5")
    with pytest.raises(ValueError, match=r"`labels` must be \(N,\), \(N, 1\) or \(N, 6\) with N = 4. Got shape \(4, 2\)"):
        pretrain_backbone(x, np.zeros((4, 2)), tmp_path / "b.weights.h5")
    with pytest.raises(ValueError, match=r"`image_size` must be an int >= 32. Got 16 instead."):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", image_size=16)
    with pytest.raises(ValueError, match=r"`plan` must be a brain_audit.config.PretrainPlan. Got dict instead."):
        pretrain_backbone(x, y, tmp_path / "b.weights.h5", {"epochs": 1})
    assert list(tmp_path.iterdir()) == []


def test_pretrain_augmented_batches_are_seeded_and_aligned():
    from brain_audit.dataset.feed import Augment
    from brain_audit.train.pretrain import _AugmentedBatches

    x = np.stack([np.full((16, 16, 1), 10.0 * i, np.float32) for i in range(10)])  # image i is constant 10 i HU
    y = np.arange(10, dtype=np.float32)[:, None]
    aug = Augment(rotation_deg=0, shift=0, zoom=0, flip=True, hu_offset=0, hu_gain=0)  # keeps each value
    a, b = _AugmentedBatches(x, y, 4, aug, seed=3), _AugmentedBatches(x, y, 4, aug, seed=3)
    assert len(a) == 3
    xa, ya = a[1]
    xb, yb = b[1]
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(xa[:, 0, 0, 0], 10.0 * ya[:, 0])  # each image still carries its own label
    first = np.concatenate([a[i][1] for i in range(3)])[:, 0]
    a.on_epoch_end()
    second = np.concatenate([a[i][1] for i in range(3)])[:, 0]
    assert sorted(first) == sorted(second) == list(range(10)) and not np.array_equal(first, second)


# ---------------------------------------------------------------- reuse of a run's backbone
@pytest.mark.slow
def test_run_pretrain_reuses_only_the_backbone_of_its_request(quick_run, tmp_path):
    """On a copy of the quick demo's clean reference run, where the demo pretrains (pretrain.epochs=1 there)."""
    from conftest import QUICK_OVERRIDES

    from brain_audit.demo import DemoPlan, clean_reference_configs
    from brain_audit.errors import ConfigError
    from brain_audit.train.pretrain import manifest_path, run_pretrain
    from support.run_copy import copy_run, refusal, snapshot

    _, reference = clean_reference_configs(quick_run[1], DemoPlan.quick(), QUICK_OVERRIDES)
    config, out, ask = copy_run(reference, Path(reference.out_dir), tmp_path / "run")
    weights = out / "pretrain" / "backbone.weights.h5"
    manifest = json.loads(manifest_path(weights).read_text())
    assert manifest["run_config"]["pretrain"]["epochs"] == 1 and len(manifest["pretrain_split"]) == 64
    before = snapshot(out)
    assert run_pretrain(config) == weights  # the same request: read back
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "with pretrain.epochs=1; this run asks 2")):
        run_pretrain(ask("pretrain.epochs=2"))
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "with audit_patients=0; this run asks 1")):
        run_pretrain(ask("audit_patients=1"))
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "with image_size=64; this run asks 96 (other keys "
                                                                   "differ too: seed)")):
        run_pretrain(ask("image_size=96", "seed=4"))
    assert snapshot(out) == before
    # a manifest written before the run configuration was recorded: its own settings still speak
    legacy = {k: v for k, v in manifest.items() if k not in ("run_config", "pretrain_split")}
    manifest_path(weights).write_text(json.dumps(legacy))
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "with pretrain.warmup_slices=32; this run asks 64")):
        run_pretrain(ask("pretrain.warmup_slices=64"))
    assert run_pretrain(ask("seed=4")) == weights  # (the legacy record cannot tell the run's seed)
    # a pretraining split of other patients or labels
    manifest_path(weights).write_text(json.dumps({**manifest, "pretrain_split": "0" * 64}))
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "on another pretraining split (its patients or "
                                                                   "labels have changed since; see "
                                                                   "data/cohort/cohort.csv)")):
        run_pretrain(config)
