"""brain_audit.audit.holdout: the held-out clinical audit report, recomputed from its own slice table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.slow


def test_report_files(report):
    config, out, d, summary = report
    for name in ("summary.json", "summary.md", "patients.csv", "slices.csv", "run.json"):
        assert (d / name).is_file(), name
    patients = pd.read_csv(d / "patients.csv", dtype={"patient_id": str})
    assert len(patients) == summary["audit_patients"] == config.audit_patients
    for pid in patients["patient_id"]:
        log = json.loads((d / "patients" / f"{pid}.json").read_text())
        assert log["patient_id"] == pid and len(log["slice_log"]) == log["slices"]


def test_only_audit_patients_and_no_identifying_fields(report):
    from brain_audit.dataset.cache import open_cache

    config, out, d, _ = report
    slices = pd.read_csv(d / "slices.csv", dtype={"image_id": str, "patient_id": str})
    cache = open_cache(out / "data" / "cache")
    assert set(slices["image_id"]) == set(cache.ids("audit"))
    text = " ".join(slices.columns).lower() + (d / "summary.md").read_text().lower()
    for field in ("patientname", "patient_name", "birth", "institution"):
        assert field not in text


def test_patient_level_numbers_recomputed_with_sklearn(report):
    config, out, d, summary = report
    slices = pd.read_csv(d / "slices.csv", dtype={"patient_id": str})
    per = slices.groupby("patient_id").agg(y=("label", "max"), p=("probability", "max"))
    op = json.loads((out / "phase4" / "operating_point.json").read_text())
    thr = op["threshold"]
    pthr = thr if op.get("patient_threshold") is None else op["patient_threshold"]
    at = summary["patient_level"]["at_threshold"]
    assert at["threshold"] == pytest.approx(pthr)
    called = per["p"] >= pthr
    assert at["tp"] == int((called & (per["y"] == 1)).sum())
    assert at["fp"] == int((called & (per["y"] == 0)).sum())
    assert at["fn"] == int((~called & (per["y"] == 1)).sum())
    if per["y"].nunique() == 2:
        assert summary["patient_level"]["auc"] == pytest.approx(roc_auc_score(per["y"], per["p"]))
    # slice level too
    assert summary["slice_level"]["at_threshold"]["tp"] == int(((slices["probability"] >= thr) & (slices["label"] == 1)).sum())


def test_prevalence_table_is_bayes_rule(report):
    _, _, _, summary = report
    t = summary["patient_level"]["at_threshold"]
    se, sp = t["sensitivity"], t["specificity"]
    if np.isnan(se) or np.isnan(sp):
        pytest.skip("one class only among the quick audit patients")
    for row in summary["patient_level"]["deployment"]:
        pi = row["prevalence"]
        den = se * pi + (1 - sp) * (1 - pi)
        assert row["ppv"] == pytest.approx(se * pi / den if den else float("nan"), nan_ok=True)
    assert [r["prevalence"] for r in summary["patient_level"]["deployment"]] == [0.01, 0.02, 0.05]
