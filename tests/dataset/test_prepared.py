"""brain_audit.dataset.prepared and its use by train.prepare: an earlier run's index and HU cache reused.

Expected values come from outside the code under test: the first run's own files (byte for byte), the
tiny dataset's written files, and counts of DICOM reads made by patched readers (none when reused).
"""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

import brain_audit.dataset.cache as cache_module
import brain_audit.dataset.index as index_module
from brain_audit.config import load_config
from brain_audit.dataset.labels import read_labels
from brain_audit.dataset.prepared import export_prepared, index_reuse_problem
from brain_audit.rsna import TRAIN_CSV, TRAIN_DIR
from brain_audit.train.prepare import prepare_data
from support.tiny_rsna import N_PATIENTS, N_SLICES, SIDE, make_tiny_rsna


def _config(tmp_path, run: str, *more: str):
    return load_config(None, [
        f'data_root="{tmp_path / "data"}"', f'out_dir="{tmp_path / run}"', f"image_size={SIDE}", "workers=1",
        "seed=3", "audit_patients=3", "validation_fraction=0.3", "phase1.cohort_size=4", "phase2.cohort_size=0",
        "phase2.balance=0.0", *more,
    ])


def _prepare(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tiny dataset's broken files
        return prepare_data(config, progress=False)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The tiny dataset and a first run over it, exported as a prepared folder."""
    tmp = tmp_path_factory.mktemp("prepared")
    make_tiny_rsna(tmp / "data")
    _prepare(_config(tmp, "run_a"))
    export_prepared(tmp / "run_a" / "data", tmp / "prepared")
    return tmp


def _count_reads(monkeypatch):
    reads = {"header": 0, "hu": 0}
    read_header, read_hu = index_module.read_header, cache_module.read_hu

    def header(path):
        reads["header"] += 1
        return read_header(path)

    def hu(path, *args, **kwargs):
        reads["hu"] += 1
        return read_hu(path, *args, **kwargs)

    monkeypatch.setattr(index_module, "read_header", header)
    monkeypatch.setattr(cache_module, "read_hu", hu)
    return reads


def test_export_holds_the_finished_files_only(first_run):
    exported = {p.relative_to(first_run / "prepared").as_posix() for p in (first_run / "prepared").rglob("*")
                if p.is_file()}
    made = {p.relative_to(first_run / "run_a" / "data").as_posix()
            for p in (first_run / "run_a" / "data").rglob("*") if p.is_file()}
    assert exported == {p for p in made if p.startswith(("index/", "cache/")) and not p.endswith(".lock")}
    assert (first_run / "prepared" / "index" / "pseudonym.key").stat().st_mode & 0o777 == 0o600


def test_a_second_run_reuses_index_and_cache_without_reading_a_file(first_run, tmp_path, monkeypatch):
    before = _snapshot(first_run / "prepared")
    reads = _count_reads(monkeypatch)
    config = _config(first_run, f"run_b_{tmp_path.name}", f'prepared="{first_run / "prepared"}"')
    cache = _prepare(config)
    assert reads == {"header": 0, "hu": 0}
    assert _snapshot(first_run / "prepared") == before  # the prepared folder is only read
    run_a, run_b = first_run / "run_a" / "data", first_run / f"run_b_{tmp_path.name}" / "data"
    for name in ("index/index.parquet", "index/skipped.csv", "cohort/cohort.csv", "cache/images.parquet"):
        assert (run_b / name).read_bytes() == (run_a / name).read_bytes(), name
    assert json.loads((run_b / "index" / "index.json").read_text())["n_read_this_run"] == 0
    prepared = json.loads((run_b / "summary.json").read_text())["prepared"]
    assert prepared == {"folder": str(first_run / "prepared"), "index": f"reused {first_run / 'prepared' / 'index'}",
                        "cache": f"reused {first_run / 'prepared' / 'cache'}"}
    assert len(cache.table) == len(pd.read_parquet(run_a / "cache" / "images.parquet"))


def test_another_image_size_reuses_the_index_and_builds_its_cache(first_run, tmp_path, monkeypatch):
    reads = _count_reads(monkeypatch)
    config = _config(first_run, f"run_c_{tmp_path.name}", f'prepared="{first_run / "prepared"}"', "image_size=64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = prepare_data(config, progress=False)
    said = [str(w.message) for w in caught if "`prepared`" in str(w.message)]
    assert said == [(f"`prepared` HU cache not reused: {first_run / 'prepared' / 'cache'}: cache of format 1, {SIDE} "
                    "px, context 0; this run asks format 1, 64 px, context 0; building it instead")]
    assert reads["header"] == 0 and reads["hu"] == len(cache.table) > 0


def test_an_index_of_other_data_is_not_reused(first_run, tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_tiny_rsna(data, seed=1)  # other image IDs, but for the four broken files of fixed names
    labels = read_labels(data / TRAIN_CSV)
    why = index_reuse_problem(first_run / "prepared" / "index", data, labels.index)
    assert why is not None and f"{N_PATIENTS * N_SLICES} labelled image(s) are neither indexed nor skipped there" in why
    reads = _count_reads(monkeypatch)
    config = load_config(None, [f'data_root="{data}"', f'out_dir="{tmp_path / "run"}"', f"image_size={SIDE}",
                                "workers=1", "audit_patients=3", f'prepared="{first_run / "prepared"}"'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_data(config, progress=False)
    said = [str(w.message) for w in caught if "`prepared` index not reused" in str(w.message)]
    assert len(said) == 1 and "reading the headers instead" in said[0]
    assert reads["header"] == len(labels)  # one header read per labelled image (the missing file fails)


def test_a_changed_file_size_or_format_is_named(first_run, tmp_path):
    data = first_run / "data"
    labels = read_labels(data / TRAIN_CSV)
    index = pd.read_parquet(first_run / "prepared" / "index" / "index.parquet")
    copy = tmp_path / "index"
    copy.mkdir()
    for p in (first_run / "prepared" / "index").iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert index_reuse_problem(copy, data, labels.index) is None
    first = index["image_id"].iloc[0]
    index.loc[0, "fingerprint"] = "12:0"
    index.to_parquet(copy / "index.parquet", index=False)
    size = (data / TRAIN_DIR / f"{first}.dcm").stat().st_size
    said = index_reuse_problem(copy, data, labels.index)
    assert said == f"{copy}: {first}.dcm has {size} bytes here, 12 when indexed"
    record = json.loads((copy / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**record, "format": 1}))
    assert index_reuse_problem(copy, data, labels.index) == f"{copy}: index format 1; this version reads format 2"
    (copy / "pseudonym.key").unlink()
    assert index_reuse_problem(copy, data, labels.index) == (
        f"{copy}: no finished header index here (pseudonym.key missing)")


@pytest.fixture(scope="module")
def context_run(tmp_path_factory):
    """A first run with ``context = 1`` over the tiny dataset (a cohort smaller than the data, so that the cache
    holds context slices), exported as a prepared folder."""
    tmp = tmp_path_factory.mktemp("prepared_context")
    make_tiny_rsna(tmp / "data")
    _prepare(_config(tmp, "run_a", "context=1", "phase2.cohort_size=12"))
    export_prepared(tmp / "run_a" / "data", tmp / "prepared")
    return tmp


def test_a_context_cache_is_reused_by_a_run_of_the_same_context(context_run, tmp_path, monkeypatch):
    images = pd.read_parquet(context_run / "prepared" / "cache" / "images.parquet")
    assert (images["role"] == "context").sum() > 0
    reads = _count_reads(monkeypatch)
    config = _config(context_run, f"run_b_{tmp_path.name}", f'prepared="{context_run / "prepared"}"', "context=1",
                     "phase2.cohort_size=12")
    cache = _prepare(config)
    assert reads == {"header": 0, "hu": 0}
    prepared = json.loads((context_run / f"run_b_{tmp_path.name}" / "data" / "summary.json").read_text())["prepared"]
    assert prepared["cache"] == f"reused {context_run / 'prepared' / 'cache'}"
    assert cache.manifest["context"] == 1 and len(cache.table) == len(images)


def test_a_context_cache_is_not_reused_by_a_run_of_another_context(context_run, tmp_path):
    config = _config(context_run, f"run_c_{tmp_path.name}", f'prepared="{context_run / "prepared"}"',
                     "phase2.cohort_size=12")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = prepare_data(config, progress=False)
    said = [str(w.message) for w in caught if "`prepared`" in str(w.message)]
    assert said == [(f"`prepared` HU cache not reused: {context_run / 'prepared' / 'cache'}: cache of format 1, {SIDE} "
                    f"px, context 1; this run asks format 1, {SIDE} px, context 0; building it instead")]
    assert cache.manifest["context"] == 0 and (cache.table["role"] == "sample").all()
