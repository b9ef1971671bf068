"""brain_audit.train.prepare: labels -> header index -> cohorts -> HU cache for one run, on the tiny RSNA dataset.

Expected values come from outside the code under test: what tests/support/tiny_rsna.py wrote (HU, patients,
which files are broken and how) and the run-folder layout written out literally.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from brain_audit.config import load_config
from brain_audit.dataset.cohort import read_cohort
from brain_audit.errors import ConfigError
from brain_audit.run_lock import LOCK_NAME
from brain_audit.train.prepare import prepare_data
from support.tiny_rsna import N_PATIENTS, SIDE, make_tiny_rsna

NO_HEADER = {"ID_badheader0", "ID_missing000"}  # not DICOM / no file: never indexed
NO_PIXELS = {"ID_truncated0", "ID_headonly00"}  # readable headers, no whole Pixel Data: filtered by the index


def _config(tmp_path):
    return load_config(None, [
        f'data_root="{tmp_path / "data"}"', f'out_dir="{tmp_path / "run"}"', f"image_size={SIDE}", "workers=1",
        "seed=3", "audit_patients=3", "pretrain.patients=2", "validation_fraction=0.3",
        "phase1.cohort_size=4", "phase2.cohort_size=0", "phase2.balance=0.0",
    ])


def test_one_run_of_data_from_the_label_file(tmp_path):
    truth = make_tiny_rsna(tmp_path / "data")
    config = _config(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the broken files and the tiny audit set
        cache = prepare_data(config, progress=False)
    run = tmp_path / "run"
    for part in ("data/index/index.parquet", "data/cohort/cohort.csv", "data/cohort/cohort.json"):
        assert (run / part).is_file(), part
    cohort = read_cohort(run / "data" / "cohort")
    assert set(cohort.index) == set(truth)  # every labelled image the index let in
    skipped = json.loads((run / "data" / "index" / "index.json").read_text())["n_skipped"]
    assert skipped == len(NO_HEADER | NO_PIXELS)
    patients = cohort.groupby("patient_id")["split"].first()
    counts = patients.value_counts()
    assert (counts["audit"], counts["pretrain"]) == (3, 2) and counts.sum() == N_PATIENTS
    held_out = cohort["split"].isin(["audit", "pretrain"])
    assert not cohort.loc[held_out, ["in_phase1", "in_phase2"]].to_numpy().any()
    assert cohort.loc[~held_out, "in_phase2"].all()  # phase2.cohort_size = 0: the whole pool
    assert cohort.loc[cohort["in_phase1"], "patient_id"].nunique() == 4
    # the cache holds the written HU of every image: the broken ones never reached it
    assert set(cache.table.index) == set(cohort.index)
    assert len(cache.skipped) == 0
    ids = sorted(truth)[:5]
    np.testing.assert_array_equal(cache.hu_int16(ids), np.stack([truth[i]["hu"] for i in ids]))


def test_a_rerun_finds_everything_done(tmp_path):
    """Nothing is read again (no header, no pixel), and every table comes out with the same bytes."""
    make_tiny_rsna(tmp_path / "data")
    config = _config(tmp_path)
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prepare_data(config, progress=False)
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
        prepare_data(config, progress=False)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    assert set(after) == set(before)
    records = {run / "data" / "index" / "index.json", run / "data" / "cohort" / "cohort.json"}  # dated run records
    assert {p for p in before if after[p][0] != before[p][0]} <= records
    assert json.loads((run / "data" / "index" / "index.json").read_text())["n_read_this_run"] == 0
    cache_files = [p for p in before if "cache" in p.relative_to(run).parts and p.name != LOCK_NAME]
    assert len(cache_files) > 4 and all(after[p][1] == before[p][1] for p in cache_files)  # not rewritten
    assert {p.relative_to(run).as_posix() for p in before if p.name == LOCK_NAME} == {
        LOCK_NAME, f"data/cache/{LOCK_NAME}"}  # the run and its cache were held while written, and are free now
    assert all(after[p][0] == b"" for p in before if p.name == LOCK_NAME)


def test_a_data_root_without_labels_is_refused(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"`data_root` must hold stage_2_train.csv. Got '.*data' instead."):
        prepare_data(config, progress=False)


def test_data_root_auto_finds_the_data_and_never_falls_back(tmp_path, monkeypatch):
    from brain_audit import rsna
    from brain_audit.errors import DataNotFoundError

    make_tiny_rsna(tmp_path / "input" / "rsna-intracranial-hemorrhage-detection")
    (tmp_path / "input" / "some-other-dataset").mkdir()
    config = load_config(None, [f'out_dir="{tmp_path / "run"}"', f"image_size={SIDE}", "workers=1", "seed=3",
                                "audit_patients=3", "validation_fraction=0.3", "phase1.cohort_size=4",
                                "phase2.cohort_size=0", 'data_root="auto"'])
    monkeypatch.setattr(rsna, "DEFAULT_SEARCH", (str(tmp_path / "nothing-here"),))
    with pytest.raises(DataNotFoundError, match=r"^no RSNA data found: .*nothing-here\); attach the competition"):
        prepare_data(config, progress=False)
    assert not (tmp_path / "run" / "data").exists()
    monkeypatch.setattr(rsna, "DEFAULT_SEARCH", (str(tmp_path / "input"),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prepare_data(config, progress=False)
    record = json.loads((tmp_path / "run" / "data" / "index" / "index.json").read_text())
    assert record["config"]["root"] == str(tmp_path / "input" / "rsna-intracranial-hemorrhage-detection")
    assert json.loads((tmp_path / "run" / "data" / "cohort" / "cohort.json").read_text())["config"]["data_root"] == \
        record["config"]["root"]


def test_every_run_entry_resolves_auto_first(tmp_path, monkeypatch):
    """Training, the audit and the bone study find data_root = "auto" as prepare_data does (or stop at once)."""
    from brain_audit import rsna
    from brain_audit.audit.bone_study import run_bone_study
    from brain_audit.audit.holdout import audit_holdout
    from brain_audit.errors import DataNotFoundError
    from brain_audit.train.phases import run_phase

    monkeypatch.setattr(rsna, "DEFAULT_SEARCH", (str(tmp_path / "nothing-here"),))
    config = load_config(None, [f'out_dir="{tmp_path / "run"}"', 'data_root="auto"'])
    for call in (lambda: run_phase(config, 1), lambda: audit_holdout(config), lambda: run_bone_study(config)):
        with pytest.raises(DataNotFoundError, match=r"^no RSNA data found: .*nothing-here\)"):
            call()
    assert not (tmp_path / "run").exists()


def test_context_caches_every_slice_with_its_neighbours(tmp_path):
    """``context = 1``: the cache holds the cohort as samples and, as context, the slices next to them by z in their
    series (from what tiny_rsna wrote: patient, series, z); each sample's input holds those neighbours' HU."""
    import dataclasses

    truth = make_tiny_rsna(tmp_path / "data")
    config = dataclasses.replace(_config(tmp_path), context=1,
                                 phase2=dataclasses.replace(_config(tmp_path).phase2, cohort_size=12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cache = prepare_data(config, progress=False)
    assert cache.manifest["context"] == 1
    cohort = read_cohort(tmp_path / "run" / "data" / "cohort")
    roles = cache.table["role"]
    assert set(roles.index[roles == "sample"]) == set(cohort.index)
    series: dict[str, list] = {}
    for image_id, t in truth.items():
        series.setdefault(t["series"], []).append((t["z"], image_id))
    expect_context = set()
    neighbours = {}
    for image_id in cohort.index:
        order = [i for _, i in sorted(series[truth[image_id]["series"]])]
        j = order.index(image_id)
        neighbours[image_id] = (order[max(j - 1, 0)], image_id, order[min(j + 1, len(order) - 1)])
        expect_context.update(neighbours[image_id])
    assert set(roles.index[roles == "context"]) == expect_context - set(cohort.index)
    assert len(expect_context - set(cohort.index)) > 5  # 12 drawn slices of the training pool bring neighbours
    ids = sorted(cohort.index)[::7]
    hu = cache.hu_input(ids, 1)
    for k, image_id in enumerate(ids):
        for c, neighbour in enumerate(neighbours[image_id]):
            np.testing.assert_array_equal(hu[k, ..., c], truth[neighbour]["hu"])
            np.testing.assert_array_equal(hu[k, ..., c], cache.hu_int16([neighbour])[0])
