"""brain_audit.run_layout: every path of RunPaths against the run-folder layout its module docstring documents.

The expected paths are written out here from that docstring (and each is checked to be in it), not
computed from RunPaths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from brain_audit import run_layout
from brain_audit.run_layout import REPORT_DIR, RunPaths
from brain_audit.run_lock import LOCK_NAME

#: RunPaths attribute -> path under the run folder, as the docstring lays it out.
DOCUMENTED = {
    "index": "data/index",
    "cohort": "data/cohort",
    "cache": "data/cache",
    "data_summary": "data/summary.json",
    "pretrain": "pretrain",
    "backbone": "pretrain/backbone.weights.h5",
    "operating_point": "phase4/operating_point.json",
    "report": "clinical_audit_report",
}


def test_the_documented_layout_is_the_docstring():
    doc = run_layout.__doc__
    for text in ("<out_dir>/data/index/", "data/cohort/", "data/cache/", "<out_dir>/data/summary.json",
                 "<out_dir>/pretrain/backbone.weights.h5",
                 "<out_dir>/phase1/ ... phase4/", "model.keras", "<out_dir>/phase4/operating_point.json",
                 "<out_dir>/clinical_audit_report/", f"<out_dir>/{LOCK_NAME}"):
        assert text in doc, text


@pytest.mark.parametrize("name, relative", DOCUMENTED.items())
def test_named_paths(name, relative):
    root = Path("/runs/r1")
    assert getattr(RunPaths(root), name) == root / relative


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_phase_folders_and_models(n):
    paths = RunPaths(Path("/runs/r1"))
    assert paths.phase(n) == Path(f"/runs/r1/phase{n}")
    assert paths.model(n) == Path(f"/runs/r1/phase{n}/model.keras")


def test_root_given_as_text_and_nothing_created(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    assert paths.root == tmp_path / "run" and isinstance(paths.root, Path)
    every = [getattr(paths, name) for name in DOCUMENTED] + [paths.phase(1), paths.model(4)]
    assert all(p.is_relative_to(tmp_path / "run") for p in every)
    assert list(tmp_path.iterdir()) == []
    assert REPORT_DIR == "clinical_audit_report"
    with pytest.raises(dataclasses.FrozenInstanceError):
        paths.root = tmp_path


def test_finished_model_names_the_missing_file_and_reads_the_operating_point(tmp_path):
    import json

    from brain_audit.errors import ConfigError

    paths = RunPaths(tmp_path)
    with pytest.raises(ConfigError, match=r"^the audit needs a finished Phase 4: .*phase4/model\.keras is missing"):
        paths.finished_model("the audit")
    paths.phase(4).mkdir()
    paths.model(4).write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"phase4/operating_point\.json is missing \(run Phase 4 first\)\.$"):
        paths.finished_model("the audit")
    paths.operating_point.write_text(json.dumps({"threshold": 0.125}))
    other = tmp_path / "other.keras"
    other.write_bytes(b"PK")
    assert paths.finished_model("the audit") == (paths.model(4), {"threshold": 0.125})
    assert paths.finished_model("the audit", other) == (other, {"threshold": 0.125})
