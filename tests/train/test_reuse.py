"""brain_audit.train.reuse: the keys each phase depends on (the refusals themselves are run in tests/train/test_phases.py
on a copy of a finished quick run)."""

from __future__ import annotations


def test_phase_keys_name_the_plans_a_phase_starts_from():
    from brain_audit.config import load_config
    from brain_audit.train.reuse import phase_keys

    keys = phase_keys(load_config(None, ['weights="imagenet"']), 2)
    assert keys[:9] == ["phase2.cohort_size", "phase2.cohort_unit", "phase2.balance", "phase2.epochs",
                        "phase2.learning_rate", "phase2.dropout", "phase2.unfrozen_blocks", "phase2.batch_size",
                        "phase2.augment"]  # its own plan first, in PhasePlan's order
    assert {"phase1.epochs", "image_size", "head", "seed", "weights", "audit_patients", "validation_fraction",
            "pretrain.patients", "phase4.target_sensitivity"} <= set(keys)
    assert not {k for k in keys if k.startswith(("phase3.", "phase4.dropouts", "pretrain.epochs"))}
    assert len(keys) == len(set(keys))
    pretrained = phase_keys(load_config(None, ['weights="pretrained"']), 4)
    assert {"pretrain.epochs", "phase3.max_slices", "phase4.dropouts"} <= set(pretrained)
    assert "phase3.overlays" not in pretrained and "phase3.overlays" in phase_keys(load_config(), 3)


def test_a_phase_trained_at_another_context_is_refused_in_one_line(tmp_path):
    """``context`` changes every model's input: a finished phase 1 of context 0 does not answer a run of context 1."""
    import pytest

    from brain_audit.config import load_config
    from brain_audit.errors import ConfigError
    from brain_audit.provenance import write_json
    from brain_audit.run_layout import RunPaths
    from brain_audit.train.pretrain import PRETRAIN_KEYS
    from brain_audit.train.reuse import _phase_record, check_trained, phase_keys

    assert all("context" in phase_keys(load_config(), n) for n in (1, 2, 3, 4)) and "context" in PRETRAIN_KEYS
    flat = load_config(None, [f'out_dir="{tmp_path / "run"}"'])
    paths = RunPaths(flat.out_dir)
    paths.phase(1).mkdir(parents=True)
    paths.model(1).write_bytes(b"model")
    write_json(paths.phase(1) / "metrics.json", {"n": 0})
    write_json(paths.phase(1) / "run.json", _phase_record(flat, 1, "finished"))
    check_trained(flat, phases=(1,))  # its own request: reused
    deep = load_config(None, [f'out_dir="{tmp_path / "run"}"', "context=1"])
    with pytest.raises(ConfigError) as caught:
        check_trained(deep, phases=(1,))
    assert str(caught.value) == (f"phase 1 in {tmp_path / 'run'} was trained with context=0; this run asks 1. "
                                 "Use --force to retrain it, or another --out.")
