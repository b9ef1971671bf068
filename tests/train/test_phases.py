"""The four phases end to end on a tiny phantom cohort (CPU, 64 px, one epoch each).

What is checked comes from outside the phase code: the cohort table written by
brain_audit.cohort (who is audit / train / validation), scikit-learn on the saved
models' own predictions, and the files' presence and contents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from brain_audit.config import load_config
from brain_audit.rsna import LABEL_COLUMNS

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


def test_audit_patients_never_trained_on(run):
    _, out, _ = run
    cohort = _cohort(out)
    audit = set(cohort.loc[cohort["split"] == "audit", "patient_id"])
    trained = set(cohort.loc[cohort["split"].isin(["train", "validation"]), "patient_id"])
    assert audit and not audit & trained
    pretrain = set(cohort.loc[cohort["split"] == "pretrain", "patient_id"])
    assert pretrain and not pretrain & (audit | trained)  # the stand-in for ImageNet saw none of them
    assert not cohort.loc[cohort["split"] == "audit", ["in_phase1", "in_phase2"]].to_numpy().any()


def test_phase3_findings_and_hard_negatives(run):
    _, out, results = run
    cohort = _cohort(out)
    findings = pd.read_csv(out / "phase3" / "findings.csv", dtype={"image_id": str})
    # audited slices are validation slices of the phase-2 cohort, positives first
    assert set(cohort.loc[findings["image_id"], "split"]) == {"validation"}
    assert findings["label"].is_monotonic_decreasing
    assert (findings["label"].to_numpy() == cohort.loc[findings["image_id"], "any"].to_numpy()).all()
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

    with pytest.raises(ConfigError, match=r"`phase` must be 1, 2, 3 or 4\. Got 5 instead\."):
        run_phase(load_config(), 5)
