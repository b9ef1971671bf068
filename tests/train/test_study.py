"""Phase 5, the study-level sequence model, on the quick demo's run, and its comparison in the audit.

The references are outside the code under test: each audit series rescored by hand (slices sorted by z here,
embeddings from the Phase-4 model's ``avg_pool`` layer, the logit from SciPy, the study model called on one
series at a time) and scikit-learn's AUC on the saved outputs.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.metrics import roc_auc_score

pytest.importorskip("tensorflow")

from brain_audit.dataset.cache import open_cache
from brain_audit.model.weights import load_model
from support.run_copy import copy_run, refusal, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quick_run):
    config, out, summary = quick_run
    return config, out, summary


def _by_hand(out, ids: list[str]) -> pd.Series:
    """The study model's probability of each of ``ids``, series by series in z order, computed directly."""
    cache = open_cache(out / "data" / "cache")
    slice_model = load_model(out / "phase4" / "model.keras", compile=False)
    pooled = keras.Model(slice_model.inputs, slice_model.get_layer("avg_pool").output)
    study = load_model(out / "phase5" / "model.keras", compile=False)
    table = cache.table.loc[ids]
    result = {}
    for _, rows in table.groupby("series_id"):
        order = rows.sort_values("z").index.tolist()
        hu = cache.hu_int16(order).astype(np.float32)[..., None]
        emb = pooled.predict(hu, verbose=0).astype(np.float16).astype(np.float32)
        p = np.clip(slice_model.predict(hu, verbose=0).astype(np.float64), 1e-7, 1 - 1e-7)
        out_p = study.predict({"embedding": emb[None], "slice_logit": logit(p)[None].astype(np.float32),
                               "mask": np.ones((1, len(order)), bool)}, verbose=0)[0, :, 0]
        result.update(zip(order, out_p))
    return pd.Series(result)


def test_phase5_writes_its_artefacts_and_uses_whole_series_of_train_and_validation_only(run):
    config, out, _ = run
    for name in ("model.keras", "operating_point.json", "metrics.json", "run.json", "history.csv",
                 "embeddings/train.npz", "embeddings/validation.npz"):
        assert (out / "phase5" / name).is_file(), name
    cohort = pd.read_csv(out / "data" / "cohort" / "cohort.csv", dtype={"image_id": str}).set_index("image_id")
    index = pd.read_parquet(out / "data" / "index" / "index.parquet").set_index("image_id")
    cache = open_cache(out / "data" / "cache")
    for split in ("train", "validation"):
        with np.load(out / "phase5" / "embeddings" / f"{split}.npz") as f:
            ids = f["ids"].tolist()
            assert f["embedding"].shape == (len(ids), 1280)
        assert set(cache.table.loc[ids, "split"]) == {split}
        # every slice of each series the index lists and the cache could read is there (the series is whole)
        readable = index.drop(index=cache.skipped["image_id"].astype(str), errors="ignore")
        for series, n in pd.Series(index.loc[ids, "series_id"]).value_counts().items():
            assert n == int((readable["series_id"] == series).sum())
        assert not set(ids) & set(cohort.index[cohort["split"] == "audit"])
    # the whole series were cached for Phase 5 without changing what phases 1-4 trained on
    added = pd.read_csv(out / "data" / "cohort" / "phase5.csv", dtype={"image_id": str})
    assert not set(added["image_id"]) & set(cohort.index)
    assert not added[["in_phase1", "in_phase2"]].to_numpy().any()
    record = json.loads((out / "phase5" / "run.json").read_text())
    assert record["status"] == "finished" and len(record["inputs"]["phase4_model"]) == 64


def test_phase5_thresholds_meet_the_target_on_validation(run):
    config, out, _ = run
    op = json.loads((out / "phase5" / "operating_point.json").read_text())
    with np.load(out / "phase5" / "embeddings" / "validation.npz") as f:
        ids = f["ids"].tolist()
    p = _by_hand(out, ids).loc[ids].to_numpy()
    cache = open_cache(out / "data" / "cache")
    y = cache.table.loc[ids, "any"].to_numpy().astype(int)
    assert np.mean(p[y == 1] >= op["threshold"]) >= config.phase4.target_sensitivity
    metrics = json.loads((out / "phase5" / "metrics.json").read_text())
    assert metrics["validation"]["study_model"]["slice_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)


def test_the_audit_rescoring_matches_a_series_by_series_reference(run):
    _, out, summary = run
    slices = pd.read_csv(out / "clinical_audit_report" / "slices.csv", dtype={"image_id": str, "patient_id": str})
    reference = _by_hand(out, slices["image_id"].tolist())
    np.testing.assert_allclose(slices["probability_study"].to_numpy(), reference.loc[slices["image_id"]].to_numpy(),
                               atol=2e-5)
    audit = json.loads((out / "clinical_audit_report" / "summary.json").read_text())
    agg = audit["aggregation"]
    # patient level: a patient is its most suspicious slice under each rule (scikit-learn's AUC on the saved scores)
    pat = slices.groupby("patient_id").agg(y=("label", "max"), m=("probability", "max"), s=("probability_study", "max"))
    if pat["y"].nunique() == 2:
        assert agg["patient_level"]["max_slice"]["auc"] == pytest.approx(roc_auc_score(pat["y"], pat["m"]))
        assert agg["patient_level"]["study_model"]["auc"] == pytest.approx(roc_auc_score(pat["y"], pat["s"]))
    d = agg["patient_level"]["difference"]["sensitivity"]
    assert d["ci95"][1] > d["ci95"][0]
    assert "## Slice versus volume" in (out / "clinical_audit_report" / "summary.md").read_text()
    assert summary["audit_aggregation"]["verdict"] == agg["verdict"]
    log = json.loads(next((out / "clinical_audit_report" / "patients").glob("*.json")).read_text())
    assert "max_probability_study" in log and "probability_study" in log["slice_log"][0]


def test_phase5_resumes_after_a_kill_and_refuses_another_plan(run, tmp_path):
    from brain_audit.errors import ConfigError
    from brain_audit.train.phases import run_phase

    config, out, ask = copy_run(*run[:2], tmp_path / "run")
    finished = json.loads((out / "phase5" / "metrics.json").read_text())
    before = (out / "phase5" / "embeddings" / "train.npz").stat().st_mtime_ns
    for name in ("metrics.json", "model.keras", "operating_point.json"):  # killed after its last checkpoint
        (out / "phase5" / name).unlink()
    again = run_phase(config, 5, verbose=0)
    assert json.dumps(again, sort_keys=True) == json.dumps(finished, sort_keys=True)
    assert (out / "phase5" / "embeddings" / "train.npz").stat().st_mtime_ns == before  # reused, not recomputed
    snap = snapshot(out)
    with pytest.raises(ConfigError, match=refusal("phase 5", out, "with phase5.units=64; this run asks 8")):
        run_phase(ask("phase5.units=8"), 5)
    assert snapshot(out) == snap
