"""brain_audit.preflight: the check before a run, on the tiny RSNA layout (tests/support/tiny_rsna.py).

Expected values come from outside the code under test: the files the test wrote (74 labelled images, 73
train files, 14 patients, three test files), the planned sizes worked out by hand from the plan and the
module's stated assumptions (int16 slices, the throughput table), and a free space patched in. The internet
is never probed: every check is given ``internet`` or a probe that fails the test.
"""

from __future__ import annotations

import collections
import json
import warnings

import pytest
from keras.src.backend import config as keras_config

import brain_audit.preflight as preflight
from brain_audit.cli import main
from brain_audit.config import load_config
from brain_audit.preflight import check
from brain_audit.rsna import SAMPLE_SUBMISSION, TEST_DIR
from brain_audit.train.prepare import prepare_data
from support.tiny_rsna import make_tiny_rsna

COMPETITION = "rsna-intracranial-hemorrhage-detection"
SIZE = 64
#: tiny_rsna: 14 patients; the 72 readable headers with a Patient ID (70 slices + truncated + header-only,
#: both written with the first patient's ID); 74 labelled images; 73 files (one labelled image has none).
PATIENTS, SLICES_WITH_HEADER, IMAGES, TRAIN_FILES = 14, 72, 74, 73


def _no_probe():
    raise AssertionError("the internet must not be probed in tests")


@pytest.fixture(scope="module")
def kaggle_input(tmp_path_factory):
    """``<tmp>/input/<competition>/`` in the RSNA layout, with three test files and the sample submission."""
    base = tmp_path_factory.mktemp("kaggle")
    root = base / "input" / COMPETITION
    make_tiny_rsna(root)
    (root / TEST_DIR).mkdir()
    for k in range(3):
        (root / TEST_DIR / f"ID_{k:09x}.dcm").write_bytes(b"")
    (root / SAMPLE_SUBMISSION).write_text("ID,Label\n")
    return base


def _config(base, run="run", *more):
    return load_config(None, ['data_root="auto"', f'out_dir="{base / run}"', f"image_size={SIZE}", 'weights="none"',
                              "audit_patients=3", "workers=1", "phase2.cohort_size=0", *more])


def _check(base, config, **kwargs):
    kwargs.setdefault("internet", False)
    return check(config, search=[base / "input"], header_sample=100, probe=_no_probe, **kwargs)


def test_ok_on_the_tiny_layout(kaggle_input):
    pf = _check(kaggle_input, _config(kaggle_input))
    assert pf.ok and pf.problems == []
    data = pf.facts["data"]
    assert data["root"] == str(kaggle_input / "input" / COMPETITION)
    assert (data["label_rows"], data["images"], data["train_files"], data["test_files"]) == (
        6 * IMAGES, IMAGES, TRAIN_FILES, 3)
    assert data["sample_submission"] is True
    assert data["slices_per_patient"] == pytest.approx(SLICES_WITH_HEADER / PATIENTS)
    assert list(pf.sections) == ["data", "weights", "devices", "space", "time"]
    assert pf.lines[-1] == "ok: the plan can finish here"
    assert f"stage_2_train.csv: {6 * IMAGES} label rows, {IMAGES} images" in pf.sections["data"]
    json.dumps(pf.as_dict())  # machine-readable


def test_data_missing_is_the_discovery_message(kaggle_input, tmp_path):
    config = _config(kaggle_input)
    pf = check(config, search=[tmp_path / "empty"], internet=False, probe=_no_probe)
    assert not pf.ok
    assert pf.problems == [
        (f"no RSNA data found: no folder holds stage_2_train.csv beside stage_2_train/ (looked in 1 folder(s), 4 "
        f"level(s) deep: {tmp_path / 'empty'}); attach the competition data (Add Input > Competitions > RSNA "
        "Intracranial Hemorrhage Detection) or set data_root to its folder, or set DEMO = True for the phantom demo")]
    given = load_config(None, [f'data_root="{tmp_path}"', f'out_dir="{tmp_path / "run"}"', 'weights="none"'])
    pf = check(given, internet=False, probe=_no_probe)
    assert pf.problems == [(f"`data_root` must hold stage_2_train.csv and stage_2_train/. Got '{tmp_path}' instead "
                           "(set data_root = \"auto\" to search /kaggle/input, or attach the competition data)")]


class TestWeights:
    @pytest.fixture
    def empty_keras_home(self, tmp_path, monkeypatch):
        monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path / "keras"))
        (tmp_path / "keras").mkdir()
        return tmp_path / "keras"

    def test_imagenet_without_the_file_or_internet_stops(self, kaggle_input, empty_keras_home):
        pf = _check(kaggle_input, _config(kaggle_input, "run", 'weights="imagenet"'), internet=False)
        assert not pf.ok and len(pf.problems) == 1
        assert pf.problems[0].startswith(f"weights = \"imagenet\" but efficientnetb0_notop.h5 is not in the Keras "
                                         f"cache ({empty_keras_home}) and the internet is off: attach "
                                         "efficientnetb0_notop.h5")
        assert pf.facts["weights"] == {"asked": "imagenet", "kind": "imagenet", "in_keras_cache": False,
                                       "internet": False}

    def test_imagenet_with_internet_probes_once(self, kaggle_input, empty_keras_home):
        calls = []
        pf = check(_config(kaggle_input, "run", 'weights="imagenet"'), search=[kaggle_input / "input"],
                   probe=lambda: calls.append(1) or True)
        assert pf.ok and calls == [1]

    def test_a_missing_file_and_pretrained_without_pretraining(self, kaggle_input, tmp_path):
        pf = _check(kaggle_input, _config(kaggle_input, "run", f'weights="{tmp_path / "b.h5"}"'))
        assert pf.problems == [(f"weights file {tmp_path / 'b.h5'} does not exist: attach it, or set weights = "
                               "\"imagenet\" or \"none\"")]
        (tmp_path / "b.h5").write_bytes(b"x" * 10)
        assert _check(kaggle_input, _config(kaggle_input, "run", f'weights="{tmp_path / "b.h5"}"')).ok
        pf = _check(kaggle_input, _config(kaggle_input, "run", 'weights="pretrained"'))
        assert len(pf.problems) == 1 and "pretrain.patients = 0" in pf.problems[0]
        assert _check(kaggle_input, _config(kaggle_input, "run", 'weights="pretrained"', "pretrain.patients=2")).ok


def test_short_space_names_both_figures(kaggle_input, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(10**12, 0, 500_000_000))
    config = _config(kaggle_input)
    pf = _check(kaggle_input, config)
    # by hand: every labelled image is cached (audit 3 patients + the whole pool), int16 at 64 px
    cache = IMAGES * SIZE * SIZE * 2
    models = 2 * (2 + 2) * 60_000_000  # phase 1, 2 and the two phase-4 candidates, model + checkpoint each
    need = cache + IMAGES * 120 + models + 200_000_000
    assert pf.facts["space"]["cache_bytes"] == pytest.approx(cache, rel=1e-9)
    assert pf.facts["space"]["planned_bytes"] == pytest.approx(need, abs=1)
    assert pf.problems == [(f"not enough space in {kaggle_input}: the plan needs about {need / 1e9:.1f} GB, 0.5 GB "
                           "free; lower image_size or the cohort sizes, or free space")]


def test_time_grows_linearly_with_the_cohort(kaggle_input):
    seconds = {}
    for n in (10, 20, 40):
        config = _config(kaggle_input, "run", f"phase2.cohort_size={n}", 'phase2.cohort_unit="slice"')
        pf = _check(kaggle_input, config)
        if pf.facts["devices"]["kind"] != "cpu":
            pytest.skip("the hand computation below uses the CPU row of the table")
        seconds[n] = pf.facts["time"]["stages_seconds"]["phase 2"]
    # the table: 50 images/s at 128 px on CPU, x (128/64)^2 at 64 px; prediction 3x; 3 epochs, 15 % validation
    train, predict = 50 * (128 / SIZE) ** 2, 3 * 50 * (128 / SIZE) ** 2
    for n, s in seconds.items():
        assert s == pytest.approx(3 * (n * 0.85 / train + n * 0.15 / predict))
    assert seconds[40] == pytest.approx(2 * seconds[20]) == pytest.approx(4 * seconds[10])


def test_over_budget_stops(kaggle_input):
    pf = _check(kaggle_input, _config(kaggle_input), budget_hours=1e-6)
    total = pf.facts["time"]["total_seconds"]
    assert total > 1e-6 * 3600
    assert pf.problems == [(f"the plan needs about {total / 3600:.1f} h, more than the 1e-06 h budget: lower the "
                            "cohort sizes, epochs or image_size, reuse a prepared index (`prepared`), or split the run "
                            "over sessions (every stage resumes)")]


def test_a_finished_index_is_reused_and_counts_patients(kaggle_input, tmp_path):
    config = load_config(None, [f'data_root="{kaggle_input / "input" / COMPETITION}"', f'out_dir="{tmp_path / "run"}"',
                                f"image_size={SIZE}", 'weights="none"', "audit_patients=3", "workers=1",
                                "phase1.cohort_size=4", "phase2.cohort_size=0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prepare_data(config, progress=False)
    pf = check(config, internet=False, probe=_no_probe, header_sample=8)
    assert pf.ok and "header index: reused" in pf.sections["time"]
    assert pf.facts["data"]["index"] == str(tmp_path / "run" / "data" / "index")
    assert pf.facts["data"]["slices_per_patient"] == pytest.approx(70 / PATIENTS)  # the index keeps 70 slices


class TestCli:
    def test_ok_exits_0(self, kaggle_input, capsys):
        root = kaggle_input / "input" / COMPETITION
        code = main(["check", "--data-root", str(root), "--out", str(kaggle_input / "cli"), "--set", 'weights="none"',
                     "--set", f"image_size={SIZE}", "--internet", "no", "--json", str(kaggle_input / "check.json")])
        out = capsys.readouterr()
        assert code == 0 and out.out.rstrip().endswith("ok: the plan can finish here") and out.err == ""
        assert json.loads((kaggle_input / "check.json").read_text())["facts"]["data"]["images"] == IMAGES

    def test_problems_exit_1_on_stderr(self, tmp_path, capsys):
        code = main(["check", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--set",
                     'weights="none"', "--internet", "no"])
        out = capsys.readouterr()
        assert code == 1
        assert out.err == (f"brain-audit: check: `data_root` must hold stage_2_train.csv and stage_2_train/. Got "
                           f"'{tmp_path}' instead (set data_root = \"auto\" to search /kaggle/input, or attach the "
                           "competition data)\n")

    def test_a_bad_budget_is_a_user_error(self, tmp_path, capsys):
        assert main(["check", "--data-root", str(tmp_path), "--budget-hours", "0"]) == 2
        assert capsys.readouterr().err == "brain-audit: error: `--budget-hours` must be > 0. Got 0.0 instead.\n"


def test_context_adds_the_neighbours_of_sampled_slices_to_the_planned_cache(kaggle_input):
    """By hand: 10 slices sampled for Phase 2 bring at most 2 neighbours each with context = 1 (the pool of about
    60 slices has room for them); a Phase 2 of whole patients brings none."""
    def cached(*more):
        return _check(kaggle_input, _config(kaggle_input, "run", "phase2.cohort_size=10", *more)).facts["space"]

    base, with_context = cached(), cached("context=1")
    assert with_context["cached_slices"] - base["cached_slices"] == 20
    assert with_context["cache_bytes"] - base["cache_bytes"] == 20 * SIZE * SIZE * 2
    whole = ['phase2.cohort_unit="patient"', "phase2.cohort_size=4", "phase1.cohort_size=2"]
    assert cached(*whole)["cached_slices"] == cached(*whole, "context=2")["cached_slices"]
