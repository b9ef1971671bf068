"""brain_audit.config: TOML loading, overrides, validation."""

from __future__ import annotations

import json

import pytest

from brain_audit.config import PhasePlan, PretrainPlan, RunConfig, apply_overrides, load_config, to_dict
from brain_audit.errors import ConfigError


def test_defaults_are_the_seed_notebook():
    c = load_config()
    assert (c.phase1.cohort_size, c.phase1.cohort_unit, c.phase1.unfrozen_blocks, c.phase1.learning_rate) == (
        1600, "patient", 0, 1e-3)
    assert (c.phase2.cohort_size, c.phase2.cohort_unit, c.phase2.balance, c.phase2.learning_rate) == (
        20000, "slice", 0.5, 1e-5)
    assert c.phase2.unfrozen_blocks > 0
    assert c.phase4.dropouts == (0.5, 0.2) and c.phase4.target_sensitivity == 0.95
    assert c.audit_patients == 200


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text(
        'data_root = "/data/rsna"\nimage_size = 128\nweights = "none"\n'
        "[phase1]\nepochs = 5\nlearning_rate = 0.002\n[phase4]\ndropouts = [0.5, 0.3, 0.2]\n"
    )
    c = load_config(p, ["phase1.epochs=2", "seed=7", 'out_dir="runs/x"', "phase2.balance=0.4"])
    assert c.data_root == "/data/rsna" and c.image_size == 128 and c.seed == 7 and c.out_dir == "runs/x"
    assert c.phase1.epochs == 2 and c.phase1.learning_rate == 0.002
    assert c.phase2.balance == 0.4 and c.phase2.cohort_size == 20000  # untouched keys keep defaults
    assert c.phase4.dropouts == (0.5, 0.3, 0.2)
    assert c.backbone_weights is None
    assert apply_overrides(c, ['weights="pretrained"']).backbone_weights == "runs/x/pretrain/backbone.weights.h5"
    # the resolved config round-trips through JSON and back
    again = load_config(None, [f"{k}={json.dumps(v)}" for k, v in to_dict(c).items() if not isinstance(v, dict)])
    assert again.image_size == 128 and again.seed == 7


def test_frozen():
    with pytest.raises(AttributeError):
        RunConfig().seed = 3  # type: ignore[misc]


def test_errors_name_the_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[phase1]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key `phase1\.epoch`"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"`dropout` must be in \[0, 1\)\. Got 1\.5 instead\."):
        load_config(None, ["phase1.dropout=1.5"])
    with pytest.raises(ConfigError, match=r"`image_size` must be int\. Got 'big' instead\."):
        load_config(None, ['image_size="big"'])
    with pytest.raises(ConfigError, match=r"must look like key=value"):
        apply_overrides(RunConfig(), ["phase1.epochs"])
    with pytest.raises(ConfigError, match=r"unknown key `phase9.epochs`"):
        apply_overrides(RunConfig(), ["phase9.epochs=1"])
    p.write_text("image_size = [")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(p)


def test_phase_plan_validation():
    with pytest.raises(ConfigError, match=r"`cohort_unit` must be 'patient' or 'slice'\. Got 'study' instead\."):
        PhasePlan(cohort_unit="study")


def test_pretrain_plan_validation_and_overrides():
    with pytest.raises(ConfigError, match=r"`warmup_epochs` must be >= 0\. Got -1 instead\."):
        PretrainPlan(warmup_epochs=-1)
    with pytest.raises(ConfigError, match=r"`validation_fraction` must be in \(0, 1\)\. Got 1\.0 instead\."):
        load_config(None, ["pretrain.validation_fraction=1.0"])
    c = load_config(None, ["pretrain.augment=false", "pretrain.learning_rate=0.01"])
    assert c.pretrain == PretrainPlan(augment=False, learning_rate=0.01)
