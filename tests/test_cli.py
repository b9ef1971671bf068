"""The ``brain-audit`` command line, run in-process."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from brain_audit import cli
from brain_audit.cli import build_parser, main
from brain_audit.config import RunConfig


def test_help_lists_window(capsys):
    assert main([]) == 2
    assert "window" in capsys.readouterr().out


def test_window_writes_picture_and_skips_bad_file(tmp_path, capsys):
    bad = tmp_path / "ID_broken.dcm"
    bad.write_bytes(b"DICM but not really")
    rc = main(["window", str(bad), "--pydicom-example", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0
    assert "skipped ID_broken.dcm: not a" in captured.err
    assert "1 read, 1 skipped" in captured.out
    png = tmp_path / "out" / "CT_small.png"
    img = np.asarray(Image.open(png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 10  # a real picture, not a blank canvas


def test_window_fails_when_nothing_reads(tmp_path, capsys):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"")
    assert main(["window", str(bad), "--out", str(tmp_path)]) == 1
    assert "x.dcm: empty file" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "brain_audit 0.1.0" in capsys.readouterr().out


# ---------------------------------------------------------------- defaults: from the run configuration or the callee
def _run_args(monkeypatch, command: str, argv: list[str]) -> argparse.Namespace:
    """The namespace ``main`` hands to ``_run_<command>`` (which is replaced by a recorder)."""
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, f"_run_{command}", lambda args: seen.append(args) or 0)
    assert main([command, *argv]) == 0
    return seen[0]


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_data_commands_take_the_run_configuration_defaults(monkeypatch, capsys):
    run = RunConfig()
    args = _run_args(monkeypatch, "cohort", ["root"])
    assert (args.validation, args.n_audit, args.n_pretrain, args.seed) == (
        run.validation_fraction, run.audit_patients, run.pretrain.patients, run.seed)
    assert args.validation == 0.15  # was restated as 0.1 here, against the run configuration
    assert f"validation share of the other patients (default: {run.validation_fraction})" in _help(capsys, "cohort")
    args = _run_args(monkeypatch, "cache", ["root"])
    assert (args.size, args.workers) == (run.image_size, run.workers)
    assert f"(default: {run.image_size}, the run configuration's image_size)" in _help(capsys, "cache")
    args = _run_args(monkeypatch, "feed", ["cache"])
    assert (args.batch_size, args.labels) == (run.phase1.batch_size, run.head)


def test_default_phase_cohorts_are_the_run_configuration_ones():
    from brain_audit.dataset.cohort import DEFAULT_PHASE_COHORTS

    assert tuple(map(cli._cohort_spec, cli._DEFAULT_COHORTS)) == DEFAULT_PHASE_COHORTS


def test_other_defaults_are_the_callee_own(monkeypatch, capsys):
    from brain_audit.dataset.cache import build_cache
    from brain_audit.gradcam.files import audit_files
    from brain_audit.phantom.config import PhantomConfig

    args = _run_args(monkeypatch, "cache", ["root"])
    own = inspect.signature(build_cache).parameters
    assert (args.shard_size, args.context) == (own["shard_size"].default, own["context"].default)
    assert f"slices per shard (default: {own['shard_size'].default})" in _help(capsys, "cache")
    args = _run_args(monkeypatch, "phantom", ["--out", "x", "--patients", "3"])
    phantom = PhantomConfig(patients=3)
    assert (args.size, args.slices_per_patient, args.prevalence, args.defect_fraction, args.corrupt, args.seed) == (
        phantom.size, phantom.slices_per_patient, phantom.prevalence, phantom.defect_fraction,
        phantom.corrupt_files, phantom.seed)
    args = _run_args(monkeypatch, "gradcam", ["--model", "m.keras", "--images", "a.dcm"])
    own = inspect.signature(audit_files).parameters
    assert {k: getattr(args, k) for k in ("batch_size", "threshold", "sanity_steps", "seed", "method")} == {
        k: own[k].default for k in ("batch_size", "threshold", "sanity_steps", "seed", "method")}


def test_every_deferred_default_names_a_real_parameter():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    deferred = [(name, a) for name, p in sub.choices.items() for a in p._actions if isinstance(a.default, cli._DefaultOf)]
    assert len(deferred) >= 15
    for name, action in deferred:
        value = action.default.resolve()
        assert value is not inspect.Parameter.empty, (name, action.dest)
        assert isinstance(value, action.type) if action.type else isinstance(value, str), (name, action.dest, value)


def test_demo_keeps_the_plan_values_unless_given(monkeypatch):
    import brain_audit.demo as demo

    plans = []
    monkeypatch.setattr(demo, "run_demo", lambda out, plan, **kw: plans.append(plan) or {})
    assert main(["demo", "--quick", "--quiet"]) == 0
    assert main(["demo", "--patients", "40", "--seed", "3", "--quiet"]) == 0
    assert plans == [demo.DemoPlan.quick(), dataclasses.replace(demo.DemoPlan(), patients=40, seed=3)]


def test_window_and_help_import_neither_tensorflow_nor_pandas(tmp_path):
    code = (
        "import sys; from brain_audit.cli import build_parser, main; build_parser();"
        "light = not {'tensorflow', 'keras', 'pandas'} & set(sys.modules);"
        f"rc = main(['window', '--pydicom-example', '--out', {str(tmp_path)!r}]);"
        "print(light, rc, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, MPLBACKEND="Agg"))
    assert out.stdout.split()[-3:] == ["True", "0", "False"], out.stdout + out.stderr
