"""The Kaggle notebook rehearsed in CI: a temporary folder laid out like a Kaggle machine.

``INPUT`` (read-only on Kaggle) holds the competition data in the RSNA layout, written by the phantom with a
``stage_2_test/`` split and ``stage_2_sample_submission.csv`` (its truth kept elsewhere, as on Kaggle), and a
dataset holding the wheel built with ``pip wheel --no-deps``; ``WORKING`` is writable. The notebook runs under
papermill with its ``parameters`` cell overridden, installs brain_audit from the wheel into a folder of its own
(``PIP_TARGET``, so the test environment is left as it is) and runs at toy sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "Brain_Audit_Final_Lite.ipynb"
COMPETITION = Path("rsna-intracranial-hemorrhage-detection") / "rsna-intracranial-hemorrhage-detection"

#: A run small enough for CI: 64 px, one epoch per phase, no pretraining, six audit patients.
TOY_RUN = [
    "image_size=64", 'weights="none"', "audit_patients=6", "validation_fraction=0.5", "pretrain.patients=0",
    "phase1.cohort_size=0", "phase1.epochs=1", "phase1.batch_size=16", "phase1.learning_rate=1e-3",
    "phase2.cohort_size=0", "phase2.epochs=1", "phase2.batch_size=16", "phase2.learning_rate=1e-4",
    "phase3.max_slices=24", "phase3.overlays=2", "phase3.hard_negative_probability=0.05",
    "phase4.epochs=1", "phase4.batch_size=16", "phase4.learning_rate=1e-4", "phase5.epochs=2",
]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """A Kaggle dataset folder holding the brain_audit wheel, built from this checkout with ``pip wheel --no-deps``."""
    folder = tmp_path_factory.mktemp("input") / "brain-audit-wheels"
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(REPO, build / "src", ignore=shutil.ignore_patterns(
        ".git", "tests", "clinical_audit_report", "build", "dist", "*.egg-info", "__pycache__", "notebooks"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--disable-pip-version-check", str(build / "src"), "-w", str(folder)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name.split("-")[0] for p in folder.glob("*.whl")] == ["brain_audit"]
    return folder


def _execute(tmp_path: Path, **parameters):
    import papermill

    working = Path(parameters["WORKING"])
    working.mkdir(parents=True, exist_ok=True)
    parameters.setdefault("PIP_TARGET", str(tmp_path / "site"))
    executed = tmp_path / "executed.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=parameters, cwd=str(working),
                                   kernel_name="python3", progress_bar=False, log_output=False,
                                   execution_timeout=1500)
    finally:
        text = executed.read_text() if executed.is_file() else ""
    nb = json.loads(text)
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    return nb, printed


def test_the_notebook_has_a_parameters_cell_and_no_outputs():
    """papermill injects its values after the cell tagged ``parameters``; the committed notebook carries no outputs."""
    nb = json.loads(NOTEBOOK.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "DEMO = False" in "".join(tagged[0]["source"])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")
    assert not (REPO / "notebooks" / "brain_audit_kaggle.ipynb").exists()


@pytest.mark.slow
def test_kaggle_rehearsal_ends_with_a_submission_matching_the_sample(wheels, tmp_path):
    """Run All on a Kaggle-like machine: installed from the wheel, data found, preflight passed, submission.csv;
    the six-label run it trained reports the competition metric its models give (one run serves both checks)."""
    from brain_audit.phantom import PhantomConfig, generate_cohort

    inputs = wheels.parent
    data = inputs / COMPETITION
    if not data.exists():
        generate_cohort(data, PhantomConfig(patients=24, slices_per_patient=6, size=128, prevalence=0.5,
                                            corrupt_files=1, test_patients=2, seed=5), workers=2, progress=False)
        # as on Kaggle: the competition folder holds the images and labels, not the phantom's truth
        shutil.move(str(data / "phantom_truth"), str(tmp_path / "phantom_truth"))
        shutil.move(str(data / "phantom_manifest.json"), str(tmp_path / "phantom_manifest.json"))
    before = _snapshot(inputs)
    working = tmp_path / "working"

    nb, printed = _execute(tmp_path, INPUT=str(inputs), WORKING=str(working), OVERRIDES=TOY_RUN, N_BOOT=200)

    assert f"from {tmp_path / 'site' / 'brain_audit'}" in printed  # the kernel imported the wheel's copy
    sample = pd.read_csv(data / "stage_2_sample_submission.csv")
    submission = pd.read_csv(working / "submission.csv")
    assert submission["ID"].tolist() == sample["ID"].tolist()
    assert len(sample) == 6 * len(list((data / "stage_2_test").glob("*.dcm")))
    assert submission["Label"].between(0, 1).all() and submission["Label"].nunique() > 1
    assert (working / "brain_audit_run" / "clinical_audit_report" / "index.html").is_file()
    # STUDY = True (the default): Phase 5 ran on whole series and the audit compares both aggregations
    assert (working / "brain_audit_run" / "phase5" / "model.keras").is_file()
    audit = json.loads((working / "brain_audit_run" / "clinical_audit_report" / "summary.json").read_text())
    assert audit["aggregation"]["patients"] == 6
    shown = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if o.get("output_type") == "display_data"]
    assert any("text/html" in o["data"] for o in shown) and any("image/png" in o["data"] for o in shown)
    assert _snapshot(inputs) == before  # nothing written into the input folders
    _check_six_label_run(working / "brain_audit_run")


def _predict(model, cache, ids):
    """(N, outputs) probabilities of ``model`` on cached slices, straight from ``model.predict``."""
    hu = cache.hu_int16(list(ids)).astype(np.float32)[..., None]
    return model.predict(hu, batch_size=16, verbose=0).astype(np.float64)


def _check_six_label_run(out: Path) -> None:
    """The notebook's run is a six-label run (``HEAD = "six"``), checked from outside the phase and audit code: the
    saved models' own predictions on the cached slices, the competition metric recomputed from them, the operating
    threshold recomputed on the ``any`` column with the audit statistics' threshold rule."""
    from sklearn.metrics import roc_auc_score

    from brain_audit.audit.statistics import threshold_for_sensitivity
    from brain_audit.dataset.cache import open_cache
    from brain_audit.model.competition import weighted_log_loss
    from brain_audit.model.weights import load_model
    from brain_audit.rsna import LABEL_COLUMNS
    from brain_audit.run_layout import RunPaths

    paths = RunPaths(out)
    cache = open_cache(paths.cache, size=64)
    for phase, model_phase, cohort in ((1, 1, "phase1"), (2, 2, "phase2"), (3, 2, "phase2"), (4, 4, "phase2")):
        model = load_model(paths.model(model_phase), compile=False)
        assert model.outputs[0].shape[-1] == 6
        ids = list(cache.ids("validation", cohort))
        y = cache.table.loc[ids, list(LABEL_COLUMNS)].to_numpy().astype(int)
        p = _predict(model, cache, ids)
        metrics = json.loads((paths.phase(phase) / "metrics.json").read_text())
        comp = metrics["competition"]
        assert comp["images"] == len(ids)
        assert comp["weighted_log_loss"] == pytest.approx(weighted_log_loss(y, p), rel=1e-4), phase
        lo, hi = comp["weighted_log_loss_ci95"]
        assert lo <= comp["weighted_log_loss"] <= hi and hi > lo
        assert set(comp["labels"]) == set(LABEL_COLUMNS)
        if phase in (1, 2):  # the AUC reported beside it is that of the any column
            assert metrics["auc"] == pytest.approx(roc_auc_score(y[:, 5], p[:, 5]), abs=1e-4)
    op = json.loads(paths.operating_point.read_text())
    ids = list(cache.ids("validation", "phase2"))
    final = load_model(paths.model(4), compile=False)
    y_any = cache.table.loc[ids, "any"].to_numpy().astype(int)
    assert op["threshold"] == pytest.approx(
        threshold_for_sensitivity(y_any, _predict(final, cache, ids)[:, 5], op["target_sensitivity"]), rel=1e-4)
    summary = json.loads((paths.report / "summary.json").read_text())
    comp = summary["competition"]
    ids = list(cache.ids("audit"))
    y = cache.table.loc[ids, list(LABEL_COLUMNS)].to_numpy().astype(int)
    p_audit = _predict(final, cache, ids)
    assert comp["weighted_log_loss"] == pytest.approx(weighted_log_loss(y, p_audit), rel=1e-4)
    assert comp["patients"] == 6 and comp["images"] == len(ids)
    assert summary["slice_level"]["auc"] == pytest.approx(roc_auc_score(y[:, 5], p_audit[:, 5]), abs=1e-4)
    md = (paths.report / "summary.md").read_text()
    assert "## Six labels: the competition metric" in md and f"{comp['weighted_log_loss']:.4f}" in md


@pytest.mark.slow
def test_kaggle_rehearsal_without_the_data_stops_with_where_it_looked(wheels, tmp_path):
    """No competition data attached: the run stops in the preflight, naming where it looked; no demo runs."""
    import papermill

    inputs = tmp_path / "input"
    shutil.copytree(wheels, inputs / wheels.name)
    working = tmp_path / "working"
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        _execute(tmp_path, INPUT=str(inputs), WORKING=str(working), OVERRIDES=TOY_RUN)
    message = str(caught.value)
    assert "stage_2_train.csv" in message and str(inputs) in message
    assert not (working / "brain_audit_run").exists() and not (working / "submission.csv").exists()


@pytest.mark.slow
def test_the_demo_runs_only_when_asked(quick_run, wheels, tmp_path):
    """``DEMO = True`` runs the phantom demo (here resuming the session's quick run) and says what it is."""
    _, out, _ = quick_run
    from conftest import QUICK_OVERRIDES

    _, printed = _execute(tmp_path, INPUT=str(wheels.parent), WORKING=str(tmp_path / "working"), OUT=str(out),
                           DEMO=True, DEMO_QUICK=True, OVERRIDES=list(QUICK_OVERRIDES))
    assert "synthetic phantom demo, not the RSNA data" in printed
    assert "no submission: DEMO = True" in printed
    assert "index.html" in printed
