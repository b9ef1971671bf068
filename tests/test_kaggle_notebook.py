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
    "phase4.epochs=1", "phase4.batch_size=16", "phase4.learning_rate=1e-4",
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
    """Run All on a Kaggle-like machine: installed from the wheel, data found, preflight passed, submission.csv."""
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
    shown = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if o.get("output_type") == "display_data"]
    assert any("text/html" in o["data"] for o in shown) and any("image/png" in o["data"] for o in shown)
    assert _snapshot(inputs) == before  # nothing written into the input folders


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
