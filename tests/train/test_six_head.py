"""A six-label run (``head = "six"``) end to end on a tiny phantom cohort: the quick demo's run with ``head=six``
(its phantom, data, pretraining, Phases 1-4 and the held-out audit; the clean reference and shortcut study, which
the one-label quick demo covers, are left out to keep it short).

Checked from outside the phase and audit code: the saved models' own predictions (``model.predict`` on the
cached slices, not the package's chunked reader), the competition metric recomputed here from them, and the
operating threshold recomputed on the ``any`` column with the audit statistics' threshold rule.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

pytest.importorskip("tensorflow")

from brain_audit.audit.statistics import threshold_for_sensitivity
from brain_audit.model.competition import weighted_log_loss
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import RunPaths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def six_run(tmp_path_factory):
    from brain_audit.audit.holdout import audit_holdout
    from brain_audit.demo import DemoPlan, demo_configs
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.train.phases import run_phase
    from brain_audit.train.prepare import prepare_data
    from brain_audit.train.pretrain import run_pretrain
    from conftest import QUICK_OVERRIDES

    out = tmp_path_factory.mktemp("six_label_run")
    phantom, config = demo_configs(out, DemoPlan.quick(), (*QUICK_OVERRIDES, "head=six"))
    generate_cohort(config.data_root, phantom)
    prepare_data(config, progress=False)
    run_pretrain(config, verbose=0)
    for n in (1, 2, 3, 4):
        run_phase(config, n, verbose=0)
    summary = audit_holdout(config, n_boot=500)
    return config, RunPaths(out), summary


def _predict(model, cache, ids):
    """(N, outputs) probabilities of ``model`` on cached slices, straight from ``model.predict``."""
    hu = cache.hu_int16(list(ids)).astype(np.float32)[..., None]
    return model.predict(hu, batch_size=16, verbose=0).astype(np.float64)


def test_six_label_run_end_to_end(six_run):
    from brain_audit.model.weights import load_model
    from brain_audit.train.prepare import open_run_cache

    config, paths, _ = six_run
    assert config.head == "six"
    cache = open_run_cache(config)
    # every phase's metrics.json carries the competition metric of its model on its validation slices
    for phase, model_phase, cohort in ((1, 1, "phase1"), (2, 2, "phase2"), (3, 2, "phase2"), (4, 4, "phase2")):
        model = load_model(paths.model(model_phase), compile=False)
        assert model.outputs[0].shape[-1] == 6
        ids = list(cache.ids("validation", cohort))
        y = cache.table.loc[ids, list(LABEL_COLUMNS)].to_numpy().astype(int)
        p = _predict(model, cache, ids)
        comp = json.loads((paths.phase(phase) / "metrics.json").read_text())["competition"]
        assert comp["images"] == len(ids)
        assert comp["weighted_log_loss"] == pytest.approx(weighted_log_loss(y, p), rel=1e-4), phase
        lo, hi = comp["weighted_log_loss_ci95"]
        assert lo <= comp["weighted_log_loss"] <= hi
        assert set(comp["labels"]) == set(LABEL_COLUMNS)
        if phase in (1, 2):  # the AUC reported beside it is that of the any column
            metrics = json.loads((paths.phase(phase) / "metrics.json").read_text())
            assert metrics["auc"] == pytest.approx(roc_auc_score(y[:, 5], p[:, 5]), abs=1e-4)
            assert comp["labels"]["any"]["auc"] == pytest.approx(metrics["auc"], abs=1e-9)
    # Phase 4's operating point: the target-sensitivity threshold of the chosen model's `any` column
    op = json.loads(paths.operating_point.read_text())
    ids = list(cache.ids("validation", "phase2"))
    p4 = _predict(load_model(paths.model(4), compile=False), cache, ids)
    y_any = cache.table.loc[ids, "any"].to_numpy().astype(int)
    assert op["threshold"] == pytest.approx(threshold_for_sensitivity(y_any, p4[:, 5], op["target_sensitivity"]),
                                            rel=1e-4)
    # the held-out audit: the metric on the audit slices with its interval, per-label AUC, and its report section
    report = paths.report
    summary = json.loads((report / "summary.json").read_text())
    comp = summary["competition"]
    ids = list(cache.ids("audit"))
    y = cache.table.loc[ids, list(LABEL_COLUMNS)].to_numpy().astype(int)
    p_audit = _predict(load_model(paths.model(4), compile=False), cache, ids)
    assert comp["weighted_log_loss"] == pytest.approx(weighted_log_loss(y, p_audit), rel=1e-4)
    assert comp["patients"] == config.audit_patients and comp["images"] == len(ids)
    assert all("auc_ci95" in row for row in comp["labels"].values())
    assert summary["slice_level"]["auc"] == pytest.approx(roc_auc_score(y[:, 5], p_audit[:, 5]), abs=1e-4)
    md = (report / "summary.md").read_text()
    assert "## Six labels: the competition metric" in md and f"{comp['weighted_log_loss']:.4f}" in md
    # the bone study and the attention audit ran on the any output of the six-label model
    assert summary["bone_study"]["groups"] and summary["attention"]["slices_profiled"] > 0
