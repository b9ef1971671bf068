"""brain_audit.audit.sections: targets judged, shortcuts found, the dropout comparison, by hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brain_audit.audit.sections import dropout_comparison, judge_targets, shortcut_section
from brain_audit.run_layout import RunPaths


def _report(se, ci):
    return {"at_threshold": {"sensitivity": se}, "sensitivity_ci95": ci}


def test_targets_pass_fail_and_demonstrated():
    op = {"target_sensitivity": 0.95, "validation_sensitivity": 0.954, "validation_patient_sensitivity": 1.0}
    rows = judge_targets(op, _report(0.869, [0.80, 0.92]), _report(0.97, [0.90, 0.99]))
    by = {r["level"]: r for r in rows}
    assert by["slices"]["verdict"] == "FAIL" and not by["slices"]["demonstrated"]
    assert by["patients"]["verdict"] == "PASS" and not by["patients"]["demonstrated"]  # interval reaches 0.90
    assert judge_targets(op, _report(0.99, [0.96, 1.0]), _report(0.99, [0.96, 1.0]))[0]["demonstrated"]
    assert by["slices"]["on_validation"] == 0.954 and "missed hemorrhage" in by["slices"]["rationale"]


def _slices():
    # patients p0..p19; a coil on every slice of p0-p9; the model calls every coil slice a bleed
    rows = []
    for k in range(20):
        for j in range(4):
            coil = k < 10 and j < 2
            label = int(j % 2 == 0)
            rows.append({"patient_id": f"p{k}", "label": label, "called_bleed": int(coil or (label and j == 0)),
                         "mimic_coil": coil})
    return pd.DataFrame(rows)


def test_shortcut_from_a_study_and_the_results_without_it(tmp_path):
    paths = RunPaths(tmp_path)
    paths.shortcut_study.mkdir(parents=True)
    study = {"shortcuts": {"coil": {"caught": {"attention": False, "intervention": True}, "intervention": {
        "added": {"shortcut_model": {"mean_change": 0.18, "mean_change_ci95": [0.11, 0.25], "flip_rate": 0.48,
                                     "flip_rate_ci95": [0.34, 0.62], "n": 48},
                  "clean_model": {"mean_change": 0.02}}}},
        "catheter": {"caught": {"attention": False, "intervention": False}, "intervention": {}}}}
    (paths.shortcut_study / "summary.json").write_text(json.dumps(study))
    slices = _slices()
    out = shortcut_section(paths, slices, {"mimics": {}}, n_boot=100)
    assert out["study_ran"] and list(out["found"]) == ["coil"]
    assert out["found"]["coil"]["study"]["added_mean_change"] == 0.18
    clear = out["without_shortcuts"]
    # by hand, slices without a coil: p0-p9 slices 2, 3 (j=2 bleed not called; j=3 clear) and p10-p19 all four
    # (j=0 bleed called, j=2 bleed missed, j=1, 3 clear): bleeds 10 + 20 = 30 with 10 called; clear 10 + 20 = 30,
    # none called
    assert (clear["sensitivity"]["successes"], clear["sensitivity"]["n"]) == (10, 30)
    assert (clear["specificity"]["successes"], clear["specificity"]["n"]) == (30, 30)
    assert clear["specificity"]["ci95"][1] > clear["specificity"]["ci95"][0]


def test_no_study_no_strata_no_shortcut(tmp_path):
    out = shortcut_section(RunPaths(tmp_path), _slices(), {"mimics": {}}, n_boot=50)
    assert out == {"study_ran": False, "found": {}, "associated": {}, "phase3": {}}


def test_shortcut_from_the_strata():
    from brain_audit.audit.subgroups import subgroup_report

    slices = _slices()
    for s in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"):
        slices[s] = 0
    patients = pd.DataFrame({"patient_id": [f"p{k}" for k in range(20)], "called_bleed": True,
                             "subtypes_present": [[] for _ in range(20)]})
    sg = subgroup_report(slices, patients, ["coil"], n_boot=200)
    # with a coil: 10 clear slices, all called (specificity 0); without: 30 clear, none called (1.0)
    assert sg["mimics"]["coil"]["specificity_difference"]["difference"] == pytest.approx(-1.0)
    out = shortcut_section(RunPaths("/nonexistent"), slices, sg, n_boot=100)
    # an association in the strata, not a shortcut found (no intervention ran); without a study it still decides
    # which slices count as "without the shortcut"
    assert out["found"] == {} and list(out["associated"]) == ["coil"]
    assert out["without_shortcuts"]["mimics"] == ["coil"]


def test_phase3_flags_above_chance(tmp_path):
    paths = RunPaths(tmp_path)
    paths.phase(3).mkdir(parents=True)
    flags = {"device_focus": {"value": 0.043, "ci": [0.016, 0.078], "n": 256, "uniform_map_rate": 0.0},
             "bone_focus": {"value": 0.0, "ci": [0.0, 0.015], "n": 256, "uniform_map_rate": 0.0}}
    (paths.phase(3) / "metrics.json").write_text(json.dumps({"evidence": {"flags": flags}}))
    out = shortcut_section(paths, _slices(), {"mimics": {}}, n_boot=50)
    assert out["phase3"] == {"device_focus": {"rate": 0.043, "ci95": [0.016, 0.078], "n": 256, "chance": 0.0}}


def test_dropout_comparison_paired_by_hand():
    rng = np.random.default_rng(0)
    n = 200
    y = np.tile([1, 0], n // 2)
    g = np.repeat([f"p{i}" for i in range(n // 4)], 4)
    slices = pd.DataFrame({"label": y, "patient_id": g})
    validation = slices.iloc[:0]
    a = np.where(y == 1, 0.9, rng.uniform(0, 0.4, n))  # chosen: clears every non-bleed at 0.5
    b = np.where(y == 1, 0.9, rng.uniform(0, 1.0, n))  # other: clears about half
    cands = [{"dropout": 0.2, "threshold": 0.5, "audit": a, "validation": np.zeros(0)},
             {"dropout": 0.5, "threshold": 0.5, "audit": b, "validation": np.zeros(0)}]
    out = dropout_comparison(cands, slices, validation, {"dropout": 0.2}, n_boot=300)
    row = out["comparisons"][0]
    sp = row["audit"]["specificity"]
    assert sp["first"] == 1.0 and sp["second"] == pytest.approx(np.mean(b[y == 0] < 0.5))
    assert sp["difference"] == pytest.approx(1.0 - np.mean(b[y == 0] < 0.5))
    assert sp["ci95"][0] > 0 and not sp["within_noise"]
    se = row["audit"]["sensitivity"]  # both call every bleed: no difference, and the Newcombe interval is not 0-wide
    assert se["difference"] == 0.0 and se["ci95"][0] < 0 < se["ci95"][1] and se["within_noise"]
    assert "validation" not in row


def test_decision_curve_at_deployment_uses_prior_shifted_platt_probabilities():
    from sklearn.linear_model import LogisticRegression

    from brain_audit.audit.sections import decision_section

    rng = np.random.default_rng(3)
    # validation: 60 patients, 3 slices each; audit: 80 patients (one row each in the patient table)
    yv = np.repeat(rng.integers(0, 2, 60), 3)
    pv = np.clip(0.3 * yv + rng.uniform(0, 0.7, yv.size), 0.01, 0.99)
    validation = pd.DataFrame({"patient_id": np.repeat([f"v{i}" for i in range(60)], 3), "label": yv,
                               "probability": pv})
    ya = rng.integers(0, 2, 80)
    pa = np.clip(0.3 * ya + rng.uniform(0, 0.7, 80), 0.01, 0.99)
    patients = pd.DataFrame({"label_any": ya, "max_probability": pa})
    out = decision_section(patients, validation, [0.02])
    # by hand: Platt on the validation patients' maxima (sklearn, unpenalised), Saerens to 2 %, net benefit from
    # sensitivity and specificity at pt: NB = se pi' - (1 - sp)(1 - pi') pt / (1 - pt)
    vmax = validation.groupby("patient_id").agg(y=("label", "max"), p=("probability", "max"))
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    fit = LogisticRegression(C=np.inf).fit(logit(vmax["p"].to_numpy())[:, None], vmax["y"])
    q = fit.predict_proba(logit(pa)[:, None])[:, 1]
    pi, target = vmax["y"].mean(), 0.02
    r1, r0 = target / pi, (1 - target) / (1 - pi)
    shifted = q * r1 / (q * r1 + (1 - q) * r0)
    table = pd.DataFrame(out["0.02"])
    for pt in (0.05, 0.2):
        se = np.mean(shifted[ya == 1] >= pt)
        sp = np.mean(shifted[ya == 0] < pt)
        nb = se * target - (1 - sp) * (1 - target) * pt / (1 - pt)
        assert table.loc[np.isclose(table["threshold"], pt), "net_benefit"].iloc[0] == pytest.approx(nb, abs=1e-6)


class TestCompetitionSection:
    """The six-label section: the RSNA metric against scikit-learn and a slow patient bootstrap written here."""

    @staticmethod
    def _case():
        rng = np.random.default_rng(11)
        patients = np.repeat([f"p{k:02d}" for k in range(15)], 4)  # 15 patients of 4 slices
        y = rng.integers(0, 2, (60, 6))
        y[:, 0] = 0  # no epidural bleed at all: its AUC is not estimable
        y[:, 5] = y[:, :5].max(axis=1)
        p = np.clip(0.25 * y + rng.uniform(0.02, 0.75, (60, 6)), 0.01, 0.99)
        return y, p, patients

    def test_metric_interval_and_label_aucs(self):
        from sklearn.metrics import log_loss, roc_auc_score

        from brain_audit.audit.sections import competition_section

        y, p, patients = self._case()
        out = competition_section(y, p, patients, n_boot=200, seed=4)
        w = np.array([1, 1, 1, 1, 1, 2.0])

        def metric(rows):  # weighted mean of sklearn's column-wise log losses
            return np.dot(w, [log_loss(y[rows, j], p[rows, j], labels=[0, 1]) for j in range(6)]) / w.sum()

        assert out["weighted_log_loss"] == pytest.approx(metric(np.arange(60)), rel=1e-10)
        # the slow obvious patient bootstrap: sorted patients drawn with replacement, all their slices along
        rng = np.random.default_rng(4)
        names = np.unique(patients)
        boot = []
        for _ in range(200):
            pick = names[rng.integers(0, names.size, size=names.size)]
            boot.append(metric(np.concatenate([np.flatnonzero(patients == q) for q in pick])))
        lo, hi = np.quantile(boot, [0.025, 0.975])
        assert out["weighted_log_loss_ci95"] == pytest.approx([lo, hi], rel=1e-9)
        assert lo < out["weighted_log_loss"] < hi
        assert (out["images"], out["patients"]) == (60, 15) and "200 resamples" in out["interval"]
        labels = out["labels"]
        assert list(labels) == ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]
        assert labels["epidural"]["positives"] == 0 and np.isnan(labels["epidural"]["auc"])
        for j, name in enumerate(labels):
            if j:
                assert labels[name]["auc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
                assert labels[name]["auc_ci95"][0] <= labels[name]["auc"] <= labels[name]["auc_ci95"][1]
        quick = competition_section(y, p, patients, n_boot=200, seed=4, label_intervals=False)
        assert "auc_ci95" not in quick["labels"]["any"] and quick["labels"]["any"]["auc"] == labels["any"]["auc"]

    def test_one_label_head_says_not_available(self):
        from brain_audit.audit.sections import COMPETITION_NOT_AVAILABLE

        assert COMPETITION_NOT_AVAILABLE.startswith("not available") and "six" in COMPETITION_NOT_AVAILABLE
