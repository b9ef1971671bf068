"""The ``brain-audit`` command line, run in-process."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import inspect
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

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
        # the default is a value the option itself accepts (its type, and its range for the checked counts)
        assert action.type(str(value)) == value if action.type else isinstance(value, str), (name, action.dest, value)


def test_demo_passes_its_run_config_overrides(monkeypatch):
    import brain_audit.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, plan, **kw: calls.append(kw) or {})
    assert main(["demo", "--quick", "--set", "head=six", "--set", "phase3.max_slices=8", "--quiet"]) == 0
    assert main(["demo", "--quick", "--quiet"]) == 0
    assert [c["overrides"] for c in calls] == [("head=six", "phase3.max_slices=8"), ()]
    # and they reach the run configuration the demo trains with
    _, config = demo.demo_configs("x", demo.DemoPlan.quick(), calls[0]["overrides"])
    assert (config.head, config.phase3.max_slices) == ("six", 8)


def test_demo_keeps_the_plan_values_unless_given(monkeypatch):
    import brain_audit.demo as demo

    plans = []
    monkeypatch.setattr(demo, "run_demo", lambda out, plan, **kw: plans.append(plan) or {})
    assert main(["demo", "--quick", "--quiet"]) == 0
    assert main(["demo", "--patients", "400", "--seed", "3", "--quiet"]) == 0
    assert plans == [demo.DemoPlan.quick(), dataclasses.replace(demo.DemoPlan(), patients=400, seed=3)]
    # --shortcut, repeated: the planted shortcuts replace the plan's
    assert main(["demo", "--quick", "--shortcut", "coil:0.3,0.02", "--shortcut", "frontal_bone:0.2,0.01", "--quiet"]) == 0
    assert plans[-1] == dataclasses.replace(demo.DemoPlan.quick(),
                                            shortcut=(("coil", 0.3, 0.02), ("frontal_bone", 0.2, 0.01)))


def test_shortcut_study_reads_the_demo_folder_and_passes_its_options(monkeypatch, tmp_path, capsys):
    import brain_audit.demo as demo

    calls = []
    figures = {"thresholds": {}, "coil": {"flag": "device_focus",
                                          "occlusion": {"rate_shortcut_model": 0.5, "rate_clean_model": 0.1},
                                          "added": {"shortcut_model": {"n": 3, "mean_change": 0.25},
                                                    "clean_model": {"n": 3, "mean_change": 0.0}},
                                          "caught": {"attention": True, "intervention": False}}}
    monkeypatch.setattr(demo, "study_demo_folder",
                        lambda out, **kw: calls.append((out, kw)) or {"shortcut_study": figures})
    assert main(["shortcut-study", "--out", str(tmp_path), "--n-boot", "100", "--limit", "5", "--quiet"]) == 0
    assert calls == [(tmp_path, {"n_boot": 100, "limit": 5, "verbose": 0, "progress": False})]
    assert ("coil: device_focus (occlusion) 50% vs clean 10%; added +0.250 vs clean +0.000; caught: attention yes, "
            "intervention no") in capsys.readouterr().out


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


# ---------------------------------------------------------------- every user error is one line, exit code 2
@pytest.fixture(scope="module")
def phantom10(tmp_path_factory):
    """A 10-patient phantom cohort in the RSNA layout (64 px, 2 slices each)."""
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig

    root = tmp_path_factory.mktemp("phantom10")
    generate_cohort(root, PhantomConfig(patients=10, slices_per_patient=2, size=64, seed=1), workers=1, progress=False)
    return root


def _header_only(tmp: Path) -> Path:
    root = tmp / "header_only"
    (root / "stage_2_train").mkdir(parents=True)
    (root / "stage_2_train.csv").write_text("ID,Label\n")
    return root


def _not_a_zip(tmp: Path) -> Path:
    (tmp / "text.keras").write_text("a text file, not a model\n")
    return tmp / "text.keras"


def _cut_zip(tmp: Path) -> Path:
    """A zip archive cut in half, as an interrupted copy leaves it."""
    with zipfile.ZipFile(tmp / "whole.keras", "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", os.urandom(4096))
    data = (tmp / "whole.keras").read_bytes()
    (tmp / "cut.keras").write_bytes(data[: len(data) // 2])
    return tmp / "cut.keras"


#: (case, argv with {root}, {tmp} and {model} filled in, how to make the model file, the exact stderr line).
_RUN = "prepare --data-root {root} --out {tmp}/run --quiet --set workers=1 --set image_size=64"
USER_ERRORS = [
    ("default audit_patients on 10 patients", _RUN.split(),
     "`audit_patients` + `pretrain.patients` must be < the number of patients in the data (10), leaving some to train "
     "on. Got 200 + 0 instead; set audit_patients to at most 9 (`--set audit_patients=9`, or `--n-audit 9` for "
     "`brain-audit cohort`)."),
    ("labels file with a header and no rows", [*_RUN.split(), "--set", "audit_patients=2"],
     "stage_2_train.csv: a label file must have data rows after its header 'ID,Label'. Got the header only instead."),
    ("seed -1", [*_RUN.split(), "--set", "seed=-1"], "`seed` must be in [0, 2**32). Got -1 instead."),
    ("dropouts of strings", [*_RUN.split(), "--set", 'phase4.dropouts=["a"]'],
     "`phase4.dropouts` must be a list of numbers. Got ['a'] instead."),
    ("image_size 100000000", [*_RUN.split(), "--set", "image_size=100000000"],
     "`image_size` must be a multiple of 32 (EfficientNet's stride) in [32, 1024]. Got 100000000 instead."),
    ("bool as int", [*_RUN.split(), "--set", "phase1.epochs=true"], "`phase1.epochs` must be an int. Got True instead."),
    ("missing model", "gradcam --model {tmp}/nope.keras --images {root} --out {tmp}/g".split(),
     "{tmp}/nope.keras: no such model file"),
    ("text file as model", "gradcam --model {model} --images {root} --out {tmp}/g".split(),
     "{model}: not a .keras model file (not a zip archive: truncated, or another format)"),
    ("truncated zip as model", "gradcam --model {model} --images {root} --out {tmp}/g".split(),
     "{model}: not a .keras model file (not a zip archive: truncated, or another format)"),
    ("legacy h5 as model", "gradcam --model {tmp}/m.h5 --images {root} --out {tmp}/g".split(),
     "{tmp}/m.h5: not a .keras model file (save_model writes .keras archives)"),
    ("window without files", ["window", "--out", "{tmp}/w"], "window: give DICOM files or --pydicom-example"),
    ("missing label file", "index {root} --labels {tmp}/nope.csv --out {tmp}/i --quiet".split(),
     "{tmp}/nope.csv: no such label file"),
    ("missing cache", "feed {tmp}/no_cache".split(),
     "{tmp}/no_cache: no manifest.json; the cache is missing or half-written (rerun build_cache)"),
    ("shortcut study without a demo", ["shortcut-study", "--out", "{tmp}/run", "--quiet"],
     "`--out` must be a finished demo folder (with demo_summary.json). Got '{tmp}/run' instead."),
    ("demo with a bad shortcut", ["demo", "--shortcut", "stent:0.3,0.02", "--out", "{tmp}/d", "--quiet"],
     "`shortcut` must be '<mimic>:<p_given_bleed>,<p_given_no_bleed>' with a mimic of ('choroid_plexus_calcification', "
     "'pineal_calcification', 'falx_calcification', 'coil', 'catheter', 'catheter_metal_tip', 'frontal_bone'). "
     "Got 'stent:0.3,0.02' instead."),
    ("bone study without phase 4", ["bone-study", "--out", "{tmp}/run", "--quiet"],
     "the bone study needs a finished Phase 4: {tmp}/run/phase4/model.keras is missing (run Phase 4 first)."),
    ("audit without phase 4", ["audit", "--out", "{tmp}/run", "--quiet"],
     "the audit needs a finished Phase 4: {tmp}/run/phase4/model.keras is missing (run Phase 4 first)."),
    ("report without an audit", ["report", "{tmp}/run"],
     "`report_dir` must hold a finished audit (summary.json). Got '{tmp}/run' instead."),
]
_MODELS = {"text file as model": _not_a_zip, "truncated zip as model": _cut_zip}


@pytest.mark.parametrize("case, argv, line", USER_ERRORS, ids=[c[0] for c in USER_ERRORS])
def test_a_user_error_is_one_line_and_exit_code_2(case, argv, line, phantom10, tmp_path, capsys):
    root = _header_only(tmp_path) if case.startswith("labels file") else phantom10
    model = _MODELS[case](tmp_path) if case in _MODELS else None
    if case == "legacy h5 as model":
        (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    fill = dict(root=root, tmp=tmp_path, model=model)
    rc = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert (rc, err) == (2, f"brain-audit: error: {line.format(**fill)}\n")


def test_an_unwritable_output_folder_is_named(phantom10, tmp_path, capsys, monkeypatch):
    """``--out`` inside a folder without write permission: the folder the OS refused, and why."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode: refuse as the OS would refuse anyone else
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path).parent == locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        rc = main(["prepare", "--data-root", str(phantom10), "--out", str(locked / "run"), "--quiet",
                   "--set", "workers=1", "--set", "image_size=64", "--set", "audit_patients=2"])
    finally:
        locked.chmod(0o755)
    assert (rc, capsys.readouterr().err) == (2, f"brain-audit: error: cannot write to {locked / 'run'}: Permission denied\n")


def test_an_output_folder_below_a_file_is_named(phantom10, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    rc = main(["prepare", "--data-root", str(phantom10), "--out", str(tmp_path / "a_file" / "run"), "--quiet",
               "--set", "workers=1", "--set", "image_size=64", "--set", "audit_patients=2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert re.fullmatch(rf"brain-audit: error: cannot write to {re.escape(str(tmp_path / 'a_file' / 'run'))}\S*: "
                        r"Not a directory\n", err), err


@pytest.mark.parametrize("argv, line", [
    (["cache", "root", "--size", "0"], "argument --size: must be an int >= 1. Got '0' instead; see `brain-audit cache --help`"),
    (["feed", "c", "--batch-size", "x"],
     "argument --batch-size: must be an int >= 1. Got 'x' instead; see `brain-audit feed --help`"),
    (["index", "root", "--workers", "-1"],
     "argument --workers: must be an int >= 0. Got '-1' instead; see `brain-audit index --help`"),
    (["cohort", ".", "--cohort", "phase1"],
     "argument --cohort: expected NAME:N[:BALANCE[:UNIT]], got 'phase1'; see `brain-audit cohort --help`"),
    (["train", "--phase", "6"], "argument --phase: invalid choice: '6' (choose from '1', '2', '3', '4', '5', 'all'); "
                                "see `brain-audit train --help`"),
])
def test_a_usage_error_is_one_line_too(argv, line, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert (exc.value.code, capsys.readouterr().err) == (2, f"brain-audit: error: {line}\n")


def test_interrupt_is_one_line_and_exit_code_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_window", interrupted)
    assert main(["window", "--pydicom-example"]) == 130
    assert capsys.readouterr().err == "brain-audit: interrupted\n"


def test_debug_adds_the_traceback(capsys):
    assert main(["--debug", "prepare", "--set", "seed=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and "in __post_init__" in err
    assert err.endswith("\nbrain-audit: error: `seed` must be in [0, 2**32). Got -1 instead.\n")


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """An error that is not the user's (a bug, or an OS error on a file the command line does not name)
    is not turned into a line: it propagates, so Python prints its traceback and exits 1."""
    def bug(args):
        return 1 // 0

    def internal_file(args):
        return (tmp_path / "not_on_the_command_line.json").read_text()

    monkeypatch.setattr(cli, "_run_window", bug)
    with pytest.raises(ZeroDivisionError):
        main(["window", "--pydicom-example", "--out", str(tmp_path / "w")])
    monkeypatch.setattr(cli, "_run_window", internal_file)
    with pytest.raises(FileNotFoundError):
        main(["window", "--pydicom-example", "--out", str(tmp_path / "w")])


def test_a_file_of_the_command_line_that_cannot_be_read_is_named(monkeypatch, tmp_path, capsys):
    def read_input(args):
        return args.files[0].read_text()

    monkeypatch.setattr(cli, "_run_window", read_input)
    assert main(["window", str(tmp_path / "gone.dcm"), "--out", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == f"brain-audit: error: cannot read {tmp_path / 'gone.dcm'}: No such file or directory\n"


def test_warnings_are_one_line_during_a_command(monkeypatch, capsys):
    """Python prints a warning as ``warnings.formatwarning`` gives it (pytest records them instead)."""
    import warnings

    python_own = warnings.formatwarning

    def warns(args):
        sys.stderr.write(warnings.formatwarning(RuntimeWarning("first line\nsecond line"), RuntimeWarning, "x.py", 1))
        return 0

    monkeypatch.setattr(cli, "_run_window", warns)
    assert main(["window", "--pydicom-example"]) == 0
    assert capsys.readouterr().err == "brain-audit: warning: first line second line\n"
    assert main(["--debug", "window", "--pydicom-example"]) == 0  # --debug: Python's own, with file and line
    assert capsys.readouterr().err == "x.py:1: RuntimeWarning: first line\nsecond line\n"
    assert warnings.formatwarning is python_own  # restored after the command


@pytest.mark.parametrize("argv, line", [
    (["prepare", "--data-root", "nowhere", "--set", "seed=-1"], "`seed` must be in [0, 2**32). Got -1 instead."),
    (["prepare", "--data-root", "nowhere", "--set", "phase1.epochs=true"],
     "`phase1.epochs` must be an int. Got True instead."),
])
def test_a_real_process_prints_one_line_and_exits_2(argv, line, tmp_path):
    """``python -m brain_audit``: stderr is exactly the line (no traceback, nothing imported that logs)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(cli.__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "brain_audit", *argv], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, f"brain-audit: error: {line}\n", "")


@pytest.mark.slow
def test_bone_study_prints_the_groups_and_writes_the_report(quick_run, tmp_path, capsys):
    from support.run_copy import copy_run

    config, out, _ = quick_run
    config, run, _ = copy_run(config, out, tmp_path / "run")
    argv = ["bone-study", "--out", str(run), "--n-boot", "20", "--set", f"image_size={config.image_size}",
            "--set", f"seed={config.seed}", "--set", f'head="{config.head}"']
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["deep", "superficial", "subarachnoid", "negative"]
    d = run / "clinical_audit_report" / "bone_study"
    assert lines[-1] == f"report: {d / 'bone_study.md'}"
    import pandas as pd

    slices = pd.read_csv(d / "slices.csv")
    assert lines[3].startswith(f"negative: {int((slices['label'] == 0).sum())} slices")
