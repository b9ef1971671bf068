"""brain_audit.config: TOML loading, overrides, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brain_audit.config import (
    CorrectionPlan,
    PhasePlan,
    PretrainPlan,
    RunConfig,
    apply_overrides,
    load_config,
    to_dict,
)
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
    with pytest.raises(ConfigError, match=r"^`phase1\.dropout` must be in \[0, 1\)\. Got 1\.5 instead\."):
        load_config(None, ["phase1.dropout=1.5"])
    with pytest.raises(ConfigError, match=r"`image_size` must be an int\. Got 'big' instead\."):
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
    with pytest.raises(ConfigError, match=r"^`pretrain\.validation_fraction` must be in \(0, 1\)\. Got 1\.0 instead\."):
        load_config(None, ["pretrain.validation_fraction=1.0"])
    c = load_config(None, ["pretrain.augment=false", "pretrain.learning_rate=0.01"])
    assert c.pretrain == PretrainPlan(augment=False, learning_rate=0.01)


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=-1", "`seed` must be in [0, 2**32). Got -1 instead."),
        ("seed=4294967296", "`seed` must be in [0, 2**32). Got 4294967296 instead."),
        ("image_size=100000000",
         "`image_size` must be a multiple of 32 (EfficientNet's stride) in [32, 1024]. Got 100000000 instead."),
        ("image_size=100", "`image_size` must be a multiple of 32 (EfficientNet's stride) in [32, 1024]. Got 100 instead."),
        ("image_size=16", "`image_size` must be a multiple of 32 (EfficientNet's stride) in [32, 1024]. Got 16 instead."),
        ("image_size=1056", "`image_size` must be a multiple of 32 (EfficientNet's stride) in [32, 1024]. Got 1056 instead."),
        ("image_size=64.0", "`image_size` must be an int. Got 64.0 instead."),
        ("phase1.epochs=true", "`phase1.epochs` must be an int. Got True instead."),
        ("phase1.epochs=-1", "`phase1.epochs` must be >= 0. Got -1 instead."),
        ("phase1.epochs=2.5", "`phase1.epochs` must be an int. Got 2.5 instead."),
        ("phase2.learning_rate=false", "`phase2.learning_rate` must be a number. Got False instead."),
        ("phase1.augment=1", "`phase1.augment` must be true or false. Got 1 instead."),
        ('phase4.dropouts=["a"]', "`phase4.dropouts` must be a list of numbers. Got ['a'] instead."),
        ("phase4.dropouts=[0.5, true]", "`phase4.dropouts` must be a list of numbers. Got [0.5, True] instead."),
        ("phase4.dropouts=0.5", "`phase4.dropouts` must be a list of numbers. Got 0.5 instead."),
        ("phase4.dropouts=[0.5, 1.2]", "`phase4.dropouts` must be in [0, 1). Got (0.5, 1.2) instead."),
        ("phase3.max_slices=0", "`phase3.max_slices` must be >= 1. Got 0 instead."),
        ("phase3.max_errors=-1", "`phase3.max_errors` must be >= 0. Got -1 instead."),
        ("phase3.sanity_slices=-3", "`phase3.sanity_slices` must be >= 0. Got -3 instead."),
        ("pretrain.warmup_epochs=-2", "`pretrain.warmup_epochs` must be >= 0. Got -2 instead."),
        ("phase1=3", "`phase1` must be a table. Got 3 instead."),
        ("head=1", "`head` must be a string. Got 1 instead."),
        ("audit_patients=true", "`audit_patients` must be an int. Got True instead."),
    ],
)
def test_overrides_are_type_and_range_checked_naming_the_dotted_key(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert str(exc.value) == message


def test_the_same_checks_from_a_toml_file_and_from_python(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text("seed = 3\n[phase1]\nepochs = true\n")
    with pytest.raises(ConfigError, match=r"^run\.toml: `phase1\.epochs` must be an int\. Got True instead\.$"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"^`epochs` must be an int\. Got True instead\.$"):
        PhasePlan(epochs=True)
    with pytest.raises(ConfigError, match=r"^`dropouts` must be a list of numbers\. Got \('a',\) instead\.$"):
        CorrectionPlan(dropouts=("a",))


def test_ints_are_numbers_and_conforming_sizes_pass():
    c = load_config(None, ["phase1.learning_rate=1", "phase4.dropouts=[0, 0.5]", "image_size=32", "seed=4294967295"])
    assert c.phase1.learning_rate == 1.0 and type(c.phase1.learning_rate) is float
    assert c.phase4.dropouts == (0.0, 0.5) and all(type(d) is float for d in c.phase4.dropouts)
    assert (c.image_size, c.seed) == (32, 2**32 - 1)
    assert load_config(None, ["image_size=1024"]).image_size == 1024
    assert RunConfig(data_root=Path("/data/rsna")).data_root == "/data/rsna"  # a Path from Python is a path string


class TestContext:
    """The top-level key ``context``: neighbouring slices on each side of the model's input (2.5-D)."""

    def test_default_toml_and_override(self, tmp_path):
        assert load_config().context == 0
        toml = tmp_path / "run.toml"
        toml.write_text("image_size = 64\ncontext = 2\n")
        assert load_config(toml).context == 2
        assert load_config(toml, ["context=1"]).context == 1
        assert to_dict(load_config(toml))["context"] == 2  # recorded with every run

    @pytest.mark.parametrize("value, message", [
        ("5", "`context` must be in [0, 4]. Got 5 instead."),
        ("-1", "`context` must be in [0, 4]. Got -1 instead."),
        ("true", "`context` must be an int. Got True instead."),
        ("1.0", "`context` must be an int. Got 1.0 instead."),
    ])
    def test_refusals_name_the_key(self, tmp_path, value, message):
        with pytest.raises(ConfigError) as caught:
            load_config(None, [f"context={value}"])
        assert str(caught.value) == message
        toml = tmp_path / "run.toml"
        toml.write_text(f"context = {value}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(toml)
        assert str(caught.value) == f"run.toml: {message}"
