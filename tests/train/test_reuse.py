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
