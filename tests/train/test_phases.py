"""The four phases end to end on a tiny phantom cohort (CPU, 64 px, one epoch each).

What is checked comes from outside the phase code: the cohort table written by
brain_audit.cohort (who is audit / train / validation), scikit-learn on the saved
models' own predictions, and the files' presence and contents.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from brain_audit.config import load_config
from brain_audit.rsna import LABEL_COLUMNS
from support.run_copy import copy_run, refusal, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quick_run):
    """The quick demo's run folder; ``results`` are the phases' metrics.json."""
    config, out, _ = quick_run
    results = {n: json.loads((out / f"phase{n}" / "metrics.json").read_text()) for n in (1, 2, 3, 4)}
    return config, out, results


def _cohort(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "data" / "cohort" / "cohort.csv", dtype={"image_id": str}).set_index("image_id")


def test_every_phase_writes_its_artefacts(run):
    config, out, results = run
    for n in (1, 2, 4):
        for name in ("model.keras", "metrics.json", "run.json"):
            assert (out / f"phase{n}" / name).is_file(), (n, name)
    for name in ("findings.csv", "hard_negatives.csv", "metrics.json", "run.json"):
        assert (out / "phase3" / name).is_file(), name
    history = pd.read_csv(out / "phase1" / "history.csv")
    assert list(history["epoch"]) == [1] and {"loss", "val_loss"} <= set(history.columns)
    record = json.loads((out / "phase2" / "run.json").read_text())
    assert record["seeds"] == {"run": config.seed}
    assert record["packages"]["tensorflow"] and record["config"]["image_size"] == 64
    assert len(record["inputs"]["phase1_model"]) == 64  # sha256 of the model it started from
    assert results[1]["training_state"].startswith("backbone frozen")  # on the pretrained backbone
    assert results[1]["weights"].endswith("pretrain/backbone.weights.h5")
    assert len(record["inputs"]["phase1_model"]) == 64


def test_one_label_head_says_the_competition_metric_is_not_available(run):
    config, _, results = run
    assert config.head == "any"
    for n in (1, 2, 3, 4):
        note = results[n]["competition"]
        assert isinstance(note, str) and note.startswith("not available") and "'any'" in note, n


def test_audit_patients_never_trained_on(run):
    _, out, _ = run
    cohort = _cohort(out)
    audit = set(cohort.loc[cohort["split"] == "audit", "patient_id"])
    trained = set(cohort.loc[cohort["split"].isin(["train", "validation"]), "patient_id"])
    assert audit and not audit & trained
    assert not cohort.loc[cohort["split"] == "audit", ["in_phase1", "in_phase2"]].to_numpy().any()
    # each model pretrains on patients of its own cohort, never on an audit patient
    pretrained = set(cohort.loc[cohort["split"] == "pretrain", "patient_id"])
    assert pretrained and not pretrained & (audit | trained)
    ref = pd.read_csv(out / "clean_reference" / "data" / "cohort" / "cohort.csv", dtype={"image_id": str})
    assert (ref["split"] == "pretrain").any()
    raw = {p: {r["patient_id"] for r in json.loads((p / "phantom_manifest.json").read_text())["images"]}
           for p in (out / "data", out / "clean_reference" / "data")}
    assert not raw[out / "data"] & raw[out / "clean_reference" / "data"]


def test_phase3_findings_and_hard_negatives(run):
    _, out, results = run
    cohort = _cohort(out)
    findings = pd.read_csv(out / "phase3" / "findings.csv", dtype={"image_id": str})
    # audited slices are validation slices of the phase-2 cohort: every error first (false negatives, then
    # false positives, as the Phase-2 model scores them at the Phase-2 threshold), then correct calls
    assert set(cohort.loc[findings["image_id"], "split"]) == {"validation"}
    assert (findings["label"].to_numpy() == cohort.loc[findings["image_id"], "any"].to_numpy()).all()
    from brain_audit.dataset.cache import load_split_arrays, open_cache
    from brain_audit.model.weights import load_model

    ids, hu, y6 = load_split_arrays(open_cache(out / "data" / "cache"), "validation", cohort="phase2")
    p = load_model(out / "phase2" / "model.keras", compile=False).predict(hu, verbose=0)[:, 0]
    y = y6[:, LABEL_COLUMNS.index("any")].astype(bool)
    called = p >= results[3]["threshold"]
    errors = {i for i, miss, alarm in zip(ids, y & ~called, ~y & called) if miss or alarm}
    n_err = min(len(errors), 24)  # phase3.max_slices=24 in the quick run
    assert set(findings["image_id"][:n_err]) <= errors and len(set(findings["image_id"][:n_err])) == n_err
    rank = findings["outcome"].map({"false_negative": 0, "false_positive": 1}).fillna(2)
    assert rank.is_monotonic_increasing
    assert results[3]["coverage"]["false_negative"]["total"] == int((y & ~called).sum())
    assert results[3]["coverage"]["false_positive"]["total"] == int((~y & called).sum())
    # the randomisation check always runs, on the audits' maps, and its steps are in the metrics
    sanity = pd.read_csv(out / "phase3" / "sanity.csv")
    assert len(sanity) == 4 and [r["randomised"] for r in results[3]["sanity"]["steps"]] == sanity["randomised"].tolist()
    assert results[3]["map"]["method"] == "hirescam" and results[3]["map"]["map_cells"] == 16  # 64 px: block2b
    # the phantom's 200 mm field of view (demo plan) over 16 cells
    assert results[3]["map"]["cell_mm"] == pytest.approx(200.0 / 16)
    energy = findings[[c for c in findings.columns if c.startswith("energy_")]].sum(axis=1)
    assert np.all(np.isclose(energy, 1.0) | np.isclose(energy, 0.0))
    hard = pd.read_csv(out / "phase3" / "hard_negatives.csv", dtype={"image_id": str})
    # mined from TRAIN negatives only: never validation (Phase 4 is judged there), never audit
    assert len(hard) > 0  # hard_negative_probability=0.05 makes most negatives qualify
    assert set(cohort.loc[hard["image_id"], "split"]) == {"train"}
    assert (cohort.loc[hard["image_id"], "any"] == 0).all()
    assert results[3]["hard_negatives"] == len(hard)


def test_phase4_threshold_meets_target_on_validation(run):
    from sklearn.metrics import recall_score

    from brain_audit.dataset.cache import load_split_arrays, open_cache
    from brain_audit.model.weights import load_model

    config, out, results = run
    op = json.loads((out / "phase4" / "operating_point.json").read_text())
    assert op["dropout"] in (0.5, 0.2) and op["target_sensitivity"] == 0.95
    chosen = results[4]["chosen"]
    scored = [c for c in results[4]["candidates"] if "specificity" in c]
    assert chosen["specificity"] == max(c["specificity"] for c in scored)
    assert {c["dropout"] for c in results[4]["candidates"]} == {0.5, 0.2}
    cache = open_cache(out / "data" / "cache")
    ids, hu, y6 = load_split_arrays(cache, "validation", cohort="phase2")
    model = load_model(out / "phase4" / "model.keras", compile=False)
    p = model.predict(hu, verbose=0)[:, 0]
    y = y6[:, LABEL_COLUMNS.index("any")]
    assert recall_score(y, p >= op["threshold"]) >= 0.95
    # the patient-level threshold: on each validation patient's most suspicious slice
    patients = cache.table.loc[ids, "patient_id"].to_numpy()
    per = pd.DataFrame({"patient": patients, "y": y, "p": p}).groupby("patient").max()
    if per["y"].nunique() == 2:
        assert recall_score(per["y"], per["p"] >= op["patient_threshold"]) >= 0.95
        assert op["validation_patients"] == len(per)
    assert (out / "phase4" / "pr_curves.png").stat().st_size > 5000


def test_rerun_reads_finished_phases_back(run):
    from brain_audit.train.phases import run_phase

    config, out, results = run
    stamp = (out / "phase2" / "model.keras").stat().st_mtime_ns
    again = run_phase(config, 2, verbose=0)
    assert again == json.loads((out / "phase2" / "metrics.json").read_text())
    assert (out / "phase2" / "model.keras").stat().st_mtime_ns == stamp


def test_cli_train_phase(run, capsys):
    from brain_audit.cli import main

    config, out, _ = run
    from brain_audit.config import to_dict

    flat = []
    for key, value in to_dict(config).items():
        if isinstance(value, dict):
            flat += [f"{key}.{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            flat.append(f"{key}={json.dumps(value)}")
    args = ["train", "--phase", "3", "--quiet"]
    for item in flat:
        args += ["--set", item]
    rc = main(args)
    assert rc == 0
    assert "phase 3:" in capsys.readouterr().out  # finished phase read back, not rerun


def test_phase_order_is_enforced(tmp_path):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_phase

    with pytest.raises(ConfigError, match=r"`phase` must be 1, 2, 3, 4 or 5\. Got 6 instead\."):
        run_phase(load_config(), 6)


# ---------------------------------------------------------------- reuse only for the request a stage records
@pytest.fixture
def copy(run, tmp_path):
    """A copy of the quick run (so that a test may change it) and ``ask(*overrides)``: its config, changed."""
    config, out, _ = run
    return copy_run(config, out, tmp_path / "run")


def test_a_finished_stage_refuses_another_plan_and_writes_nothing(copy):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_phase

    config, out, ask = copy
    before = snapshot(out)
    # the quick demo's values (DemoPlan.quick(), demo_configs, conftest.QUICK_OVERRIDES) against new ones
    cases = [
        (lambda: run_phase(ask("phase1.epochs=2"), 1), "phase 1", "with phase1.epochs=1; this run asks 2", "trained"),
        (lambda: run_phase(ask("phase1.learning_rate=0.01"), 2), "phase 2",
         "with phase1.learning_rate=0.001; this run asks 0.01", "trained"),
        (lambda: run_phase(ask("phase3.overlays=5"), 3), "phase 3", "with phase3.overlays=2; this run asks 5", "run"),
        (lambda: run_phase(ask("phase4.dropouts=[0.3]"), 4), "phase 4",
         "with phase4.dropouts=[0.5, 0.2]; this run asks [0.3]", "trained"),
        (lambda: run_phase(ask('weights="imagenet"'), 1), "phase 1",
         f'with weights="{config.weights}"; this run asks "imagenet"', "trained"),
        (lambda: run_phase(ask("seed=7", "phase1.epochs=2"), 1), "phase 1",
         "with phase1.epochs=1; this run asks 2 (other keys differ too: seed)", "trained"),
    ]
    for call, stage, detail, verb in cases:
        with pytest.raises(ConfigError, match=refusal(stage, out, detail, verb)):
            call()
    # Phase 3's pictures change nothing Phase 4 reads: it is read back
    assert run_phase(ask("phase3.overlays=5"), 4) == json.loads((out / "phase4" / "metrics.json").read_text())
    assert snapshot(out) == before


def test_a_changed_image_size_is_one_line_not_a_shape_traceback(copy):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_all, run_phase

    config, out, ask = copy
    with pytest.raises(ConfigError, match=refusal("phase 3", out, "with image_size=64; this run asks 96", "run")):
        run_phase(ask("image_size=96"), 3)
    # run_all stops at the first finished stage (the pretrained backbone) before prepare_data would rebuild the
    # cache at 96 px
    with pytest.raises(ConfigError, match=refusal("pretrain", out, "with image_size=64; this run asks 96")):
        run_all(ask("image_size=96"), verbose=0, progress=False)
    assert json.loads((out / "data" / "cache" / "manifest.json").read_text())["size"] == 64


def test_a_changed_input_file_is_refused(copy):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_phase

    config, out, _ = copy
    model1 = out / "phase1" / "model.keras"
    model1.write_bytes((out / "phase2" / "model.keras").read_bytes())  # phase 1 retrained since phase 2 began
    with pytest.raises(ConfigError, match=refusal("phase 2", out, "from another phase 1 model (phase1/model.keras "
                                                                 "has changed since)")):
        run_phase(config, 2)
    with open(out / "data" / "cohort" / "cohort.csv", "a") as fh:
        fh.write("\n")
    with pytest.raises(ConfigError, match=refusal("phase 1", out, "on another cohort (data/cohort/cohort.csv has "
                                                                 "changed since)")):
        run_phase(config, 1)


def test_a_resumable_phase_refuses_another_plan(copy):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_phase

    config, out, ask = copy
    for name in ("metrics.json", "model.keras"):  # killed after its last checkpoint
        (out / "phase2" / name).unlink()
    assert (out / "phase2" / "checkpoint" / "state.json").is_file()
    before = snapshot(out)
    with pytest.raises(ConfigError, match=refusal("phase 2", out, "with phase2.learning_rate=0.0001; this run asks 0.001")):
        run_phase(ask("phase2.learning_rate=0.001"), 2)
    assert snapshot(out) == before


def test_force_reruns_a_phase_from_a_clean_folder(copy):
    from brain_audit.train.phases import run_phase

    config, out, ask = copy
    assert len(list((out / "phase3" / "overlays").glob("*.png"))) == 2
    metrics = run_phase(ask("phase3.overlays=1"), 3, verbose=0, force=True)
    assert len(list((out / "phase3" / "overlays").glob("*.png"))) == 1  # the old pictures went with the old run
    record = json.loads((out / "phase3" / "run.json").read_text())
    assert record["config"]["phase3"]["overlays"] == 1 and record["status"] == "finished"
    assert record["inputs"]["phase2_model"] == hashlib.sha256((out / "phase2" / "model.keras").read_bytes()).hexdigest()
    assert metrics == json.loads((out / "phase3" / "metrics.json").read_text())
    assert run_phase(ask("phase3.overlays=1"), 3) == metrics  # now the folder answers the new request


def test_a_resumable_phase_resumes_for_its_own_request(copy):
    import tempfile

    from brain_audit.train.phases import run_phase

    config, out, _ = copy
    finished = json.loads((out / "phase2" / "metrics.json").read_text())
    for name in ("metrics.json", "model.keras"):  # killed after its last checkpoint, mid-way through a write
        (out / "phase2" / name).unlink()
    fd, stale = tempfile.mkstemp(prefix=".last.keras.", suffix=".keras", dir=out / "phase2" / "checkpoint")
    os.close(fd)
    again = run_phase(config, 2, verbose=0)
    # the checkpoint holds the last epoch: nothing is trained, the same model is scored (compared as JSON text,
    # where an undefined NPV, NaN, equals itself)
    assert json.dumps(again, sort_keys=True) == json.dumps(finished, sort_keys=True)
    assert (out / "phase2" / "model.keras").is_file() and not Path(stale).exists()
    assert json.loads((out / "phase2" / "run.json").read_text())["status"] == "finished"
