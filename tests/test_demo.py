"""brain_audit.demo: the quick demo end to end, its summary, the shortcut study's intervention, and resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_summary_has_every_stage(quick_run):
    _, out, summary = quick_run
    assert set(summary["seconds"]) == {"phantom", "prepare", "pretrain", "phase1", "phase2", "phase3", "phase4",
                                       "phase5", "audit", "clean_reference", "shortcut_study"}
    assert json.loads((out / "demo_summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (out / "data" / "stage_2_train.csv").is_file()
    # each model pretrains its own backbone on its own cohort's patients: the clean one never sees a shortcut
    assert (out / "pretrain" / "backbone.weights.h5").is_file()
    assert (out / "clean_reference" / "pretrain" / "backbone.weights.h5").is_file()
    # the phantom's corrupt files (readable header, broken pixels) are recorded by the header index with their
    # reason, not fatal: both of them, and none of them reaches a cohort
    import pandas as pd

    corrupt = {c["image_id"] for c in json.loads((out / "data" / "phantom_manifest.json").read_text())["corrupt"]}
    cohort = pd.read_csv(out / "data" / "cohort" / "cohort.csv", dtype={"image_id": str})
    skipped = pd.read_csv(out / "data" / "index" / "skipped.csv", dtype={"image_id": str})
    assert len(corrupt) == 2
    assert set(skipped["image_id"]) == corrupt
    assert not corrupt & set(cohort["image_id"])
    assert skipped["reason"].str.contains(r"\(7FE0,0010\) Pixel Data").all()


def test_intervention_matches_a_recomputed_pair(quick_run):
    """The study's mean probability change when a coil is added, recomputed pair by pair for both models."""
    import pandas as pd

    from brain_audit.dataset.cache import open_cache, preprocess_slice
    from brain_audit.model.weights import load_model
    from brain_audit.phantom.render import render_counterfactual

    config, out, summary = quick_run
    study = json.loads((out / "shortcut_study" / "summary.json").read_text())
    pairs = pd.read_csv(out / "shortcut_study" / "pairs.csv", dtype={"image_id": str, "patient_id": str})
    audit = set(open_cache(out / "data" / "cache").ids("audit"))
    images = {r["image_id"]: r for r in json.loads((out / "data" / "phantom_manifest.json").read_text())["images"]}
    models = {"shortcut_model": load_model(out / "phase4" / "model.keras", compile=False),
              "clean_model": load_model(out / "clean_reference" / "phase2" / "model.keras", compile=False)}
    for name, model in models.items():
        added = study["shortcuts"]["coil"]["intervention"]["added"][name]
        assert added["n"] > 0 and summary["shortcut_study"]["coil"]["added"][name]["mean_change"] == added["mean_change"]
        chosen = pairs[(pairs["mimic"] == "coil") & (pairs["direction"] == "added") & (pairs["model"] == name)]
        assert len(chosen) == added["n"]
        deltas = []
        for image_id in chosen["image_id"]:
            assert image_id in audit and "coil" not in images[image_id]["mimics"]  # added where it was not
            pair = [preprocess_slice(render_counterfactual(config.data_root, image_id, "coil", flag)[0],
                                     config.image_size).astype(np.float32) for flag in (True, False)]
            assert not np.array_equal(pair[0], pair[1])  # the coil is really in one of them
            p = model.predict(np.stack(pair)[..., None], verbose=0)[:, 0]
            deltas.append(float(p[0] - p[1]))
        assert added["mean_change"] == pytest.approx(np.mean(deltas), abs=1e-5)
        lo, hi = added["mean_change_ci95"]
        assert lo <= added["mean_change"] <= hi and (hi > lo or added["patients"] == 1)
        # the flip rate's Wilson interval (hand formula in tests/audit/test_attention_evidence.py)
        from brain_audit.audit.statistics import wilson_interval

        threshold = study["thresholds"][name]
        flips = sum((p_w >= threshold) != (p_wo >= threshold) for p_w, p_wo in zip(chosen["p_with"], chosen["p_without"]))
        assert added["flips"] == flips
        assert added["flip_rate_ci95"] == pytest.approx(list(wilson_interval(flips, added["n"])))


def test_rerun_resumes_without_training(quick_run):
    from conftest import QUICK_OVERRIDES

    from brain_audit.demo import DemoPlan, run_demo

    _, out, summary = quick_run
    stamps = {n: (out / f"phase{n}" / "metrics.json").stat().st_mtime_ns for n in (1, 2, 4)}
    again = run_demo(out, DemoPlan.quick(), overrides=QUICK_OVERRIDES, verbose=0, progress=False)
    assert again["phase4"] == summary["phase4"]
    assert {n: (out / f"phase{n}" / "metrics.json").stat().st_mtime_ns for n in (1, 2, 4)} == stamps


def test_a_demo_too_small_for_its_held_out_patients_is_refused_by_name():
    """200 audit + 80 pretraining patients leave nothing to train on among 280: one ConfigError naming --patients."""
    from brain_audit.demo import DemoPlan
    from brain_audit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`patients` \(--patients\) must be >= 288: .* Got 280 instead\."):
        DemoPlan(patients=280)
    assert DemoPlan(patients=288).patients == 288


def test_the_planted_shortcuts_are_validated_and_json_round_trips():
    """Lists from demo_summary.json rebuild the plan; an unknown or repeated mimic is refused by name."""
    import dataclasses

    from brain_audit.demo import DEFAULT_SHORTCUTS, DemoPlan
    from brain_audit.errors import ConfigError
    from brain_audit.shortcut_study import STUDY_SHORTCUTS

    plan = DemoPlan()
    assert [m for m, _, _ in plan.shortcut] == list(STUDY_SHORTCUTS) and plan.shortcut == DEFAULT_SHORTCUTS
    again = DemoPlan(**json.loads(json.dumps(dataclasses.asdict(plan))))
    assert again == plan
    with pytest.raises(ConfigError, match=r"`shortcut` must be a sequence of .* Got \[\('stent', 0.3, 0.02\)\] instead\."):
        DemoPlan(shortcut=[("stent", 0.3, 0.02)])
    with pytest.raises(ConfigError, match=r"`shortcut` must be"):
        DemoPlan(shortcut=[("coil", 0.3, 0.02), ("coil", 0.1, 0.1)])
    with pytest.raises(ConfigError, match=r"`shortcut` must hold probabilities in \[0, 1\]"):
        DemoPlan(shortcut=[("coil", 1.3, 0.02)])


def test_the_clean_reference_shares_the_plan_but_not_the_shortcut_or_the_patients(tmp_path):
    from brain_audit.demo import DemoPlan, clean_reference_configs, demo_configs

    plan = DemoPlan()
    phantom, config = demo_configs(tmp_path, plan)
    ref, clean = clean_reference_configs(tmp_path, plan, ["phase1.epochs=3"])
    # as many patients as the demo trains and validates on, plus pretraining patients of its own
    assert ref.patients == (plan.patients - plan.pretrain_patients - plan.audit_patients) + plan.pretrain_patients
    assert phantom.patients == plan.patients and config.pretrain.patients == plan.pretrain_patients
    assert ref.seed != phantom.seed and (ref.size, ref.slices_per_patient) == (phantom.size, phantom.slices_per_patient)
    for m, pb, pn in plan.shortcut:
        assert phantom.mimic_probabilities[m] == (pb, pn) and ref.mimic_probabilities[m] == (0.1, 0.1)
    assert clean.out_dir == str(tmp_path / "clean_reference") and clean.data_root == str(tmp_path / "clean_reference" / "data")
    # each starts from its own backbone
    assert config.backbone_weights == str(tmp_path / "pretrain" / "backbone.weights.h5")
    assert clean.backbone_weights == str(tmp_path / "clean_reference" / "pretrain" / "backbone.weights.h5")
    assert (clean.audit_patients, clean.pretrain.patients, clean.phase1.epochs) == (0, plan.pretrain_patients, 3)
    assert (clean.image_size, clean.phase2.epochs) == (config.image_size, config.phase2.epochs)


def test_a_2_5d_demo_is_refused_before_any_work(tmp_path):
    from brain_audit.demo import DemoPlan, run_demo
    from brain_audit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^`context` must be 0 for the demo .* Got 1 instead\.$"):
        run_demo(tmp_path / "demo", DemoPlan.quick(), overrides=["context=1"], verbose=0, progress=False)
    assert not (tmp_path / "demo" / "data").exists()
