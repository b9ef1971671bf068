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
    assert [r["prevalence"] for r in summary["patient_level"]["deployment"]] == [0.005, 0.01, 0.02, 0.05, 0.1]


def _intervals(node, path=""):
    """Every (path, [lo, hi]) under a ``*ci95`` key of the summary."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("ci95") and isinstance(v, list) and len(v) == 2:
                yield f"{path}/{k}", v
            else:
                yield from _intervals(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _intervals(v, f"{path}/{i}")


def test_no_interval_of_zero_width(report):
    _, _, _, summary = report
    sections = {k: summary[k] for k in ("slice_level", "patient_level", "subgroups", "shortcuts", "calibration",
                                        "dropout_comparison", "targets") if summary.get(k)}
    checked = 0
    for where, (lo, hi) in _intervals(sections):
        if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
            assert hi - lo > 1e-6, where
            checked += 1
    assert checked > 10


def test_subtype_sensitivity_recomputed_from_the_slice_table(report):
    _, _, d, summary = report
    slices = pd.read_csv(d / "slices.csv", dtype={"patient_id": str})
    for subtype, e in summary["subgroups"]["subtypes"].items():
        rows = slices[slices[subtype] == 1]
        assert e["slices"]["n"] == len(rows)
        assert e["slices"]["successes"] == int(rows["called_bleed"].sum())
        patients = rows["patient_id"].unique()
        assert e["patients"]["n"] == len(patients)
        assert e["patients"]["estimable"] == (len(patients) >= 10)


def test_flow_adds_up_to_the_cohort(report):
    config, out, _, summary = report
    flow = summary["flow"]
    cohort = pd.read_csv(out / "data" / "cohort" / "cohort.csv", dtype={"image_id": str})
    audit = cohort[cohort["split"] == "audit"]
    assert flow["adds_up"] and not flow["audit"]["not_audited_without_reason"]
    assert flow["audit"]["cohort_slices"] == len(audit)
    assert flow["audit"]["audited_slices"] + flow["audit"]["skipped_by_cache"] == len(audit)
    a = flow["audit"]
    assert a["true_positive"] + a["false_negative"] + a["false_positive"] + a["true_negative"] == a["audited_patients"]
    assert sum(v["patients"] for v in flow["splits"].values()) == cohort["patient_id"].nunique()
    assert flow["source"]["unreadable_files"] == 2  # the demo's phantom writes two corrupt files


def test_gallery_holds_every_error_patient(report):
    _, _, d, summary = report
    patients = pd.read_csv(d / "patients.csv", dtype={"patient_id": str})
    errors = patients[patients["outcome"].isin(["false_negative", "false_positive"])]
    assert sorted(g["patient_id"] for g in summary["gallery"]) == sorted(errors["patient_id"])
    for g in summary["gallery"]:
        assert (d / g["file"]).is_file()


def test_calibration_refits_with_sklearn(report):
    from sklearn.linear_model import LogisticRegression

    _, _, d, summary = report
    cal = summary["calibration"]
    if not cal.get("as_trained"):
        pytest.skip("one class only among the quick audit slices")
    slices = pd.read_csv(d / "slices.csv")
    p = np.clip(slices["probability"].to_numpy(float), 1e-6, 1 - 1e-6)
    fit = LogisticRegression(C=np.inf).fit(np.log(p / (1 - p))[:, None], slices["label"])
    assert cal["as_trained"]["slope"]["estimate"] == pytest.approx(fit.coef_[0, 0], rel=1e-3, abs=1e-3)
    assert cal["as_trained"]["intercept"]["estimate"] == pytest.approx(fit.intercept_[0], rel=1e-3, abs=1e-3)
