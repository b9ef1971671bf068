"""brain_audit.dataset.cache: the HU cache, against the HU written into the tiny RSNA-layout dataset
(tests/support/tiny_rsna.py) and 2 x 2 block means as the reference of an area resize."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_audit.dataset import cache as cache_mod
from brain_audit.dataset.cache import build_cache, load_split_arrays, open_cache, preprocess_slice
from brain_audit.errors import CacheError
from brain_audit.rsna import LABEL_COLUMNS, TRAIN_DIR
from support.context_cache import CODE as _CODE
from support.context_cache import hand_built_cache as _hand_built_cache
from support.tiny_rsna import SIDE


class TestCache:
    def test_hu_exact_at_source_resolution_and_corrupt_sources_recorded(self, tiny, tiny_cohort, tiny_cache):
        _, truth = tiny
        _, cohort, _ = tiny_cohort
        cache, out = tiny_cache
        samples = cache.table[cache.table["role"] == "sample"]
        assert set(samples.index) == set(cohort.index) - {"ID_truncated0", "ID_headonly00"} & set(cohort.index)
        ids = list(samples.index)
        hu = cache.hu_int16(ids)
        assert hu.dtype == np.int16
        for k, image_id in enumerate(ids):
            np.testing.assert_array_equal(hu[k], truth[image_id]["hu"])  # wrap-defect files included
        skipped = cache.skipped.set_index("image_id")
        for image_id, why in (("ID_truncated0", "file truncated"), ("ID_headonly00", "header only")):
            if image_id in cohort.index:
                assert why in skipped.loc[image_id, "reason"]
        labels = samples[list(LABEL_COLUMNS)]
        for image_id in ids:
            assert labels.loc[image_id].to_dict() == truth[image_id]["labels"]

    def test_corrupt_source_recorded_not_fatal(self, tiny, tmp_path):
        root, truth = tiny
        ids = list(truth)[:3] + ["ID_truncated0", "ID_headonly00", "ID_missing000"]
        t = _cohort_frame(truth, ids)
        cache = build_cache(t, root, tmp_path / "c", size=SIDE, workers=0, progress=False)
        assert sorted(cache.table.index) == sorted(ids[:3])
        reasons = cache.skipped.set_index("image_id")["reason"]
        assert "file truncated" in reasons["ID_truncated0"]
        assert "(7FE0,0010) Pixel Data is missing (header only)" == reasons["ID_headonly00"]
        assert reasons["ID_missing000"].startswith("cannot open file")

    def test_resize_is_area_mean_and_non_square_padded_with_air(self):
        rng = np.random.default_rng(0)
        hu = rng.integers(-1000, 2000, size=(32, 32)).astype(np.float32)
        ref = hu.reshape(16, 2, 16, 2).mean(axis=(1, 3))
        np.testing.assert_array_equal(preprocess_slice(hu, 16), np.rint(ref).astype(np.int16))
        tall = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]])
        expected = np.array([[-1024, 10, 20, -1024], [-1024, 30, 40, -1024],
                             [-1024, 50, 60, -1024], [-1024, 70, 80, -1024]], dtype=np.int16)
        np.testing.assert_array_equal(preprocess_slice(tall, 4), expected)
        with pytest.raises(ValueError, match="`size` must be > 0. Got 0 instead."):
            preprocess_slice(tall, 0)

    def test_changed_parameter_rebuilds_unchanged_reuses(self, tiny, tmp_path, monkeypatch):
        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:12])
        calls = []
        real = cache_mod._build_shard
        monkeypatch.setattr(cache_mod, "_build_shard", lambda task: calls.append(task["name"]) or real(task))
        build_cache(t, root, tmp_path, size=SIDE, shard_size=5, workers=0, progress=False)
        assert len(calls) == 3
        build_cache(t, root, tmp_path, size=SIDE, shard_size=5, workers=0, progress=False)
        assert len(calls) == 3  # nothing rebuilt
        with pytest.warns(RuntimeWarning, match=r"built with size=32 \(this build asks 16\); a cache is never mixed"):
            small = build_cache(t, root, tmp_path, size=16, shard_size=5, workers=0, progress=False)
        assert len(calls) == 6 and small.size == 16
        assert small.hu_int16(list(t.index[:1])).shape == (1, 16, 16)
        with pytest.raises(CacheError, match="slices are 16 px; expected 32"):
            open_cache(tmp_path, size=32)
        # a changed source file rebuilds only its shard
        victim = root / TRAIN_DIR / f"{sorted(t.index)[7]}.dcm"  # shards hold sorted IDs: the 2nd shard
        data = victim.read_bytes()
        victim.write_bytes(data)  # same bytes, new mtime
        build_cache(t, root, tmp_path, size=16, shard_size=5, workers=0, progress=False)
        assert calls[6:] == ["train-00001"]

    def test_manifest_and_receipts_record_the_parameters(self, tiny, tmp_path):
        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:12])
        build_cache(t, root, tmp_path, size=SIDE, shard_size=5, workers=0, progress=False)
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        recorded = manifest["parameters"]
        assert {k: v for k, v in recorded.items() if k != "cohort"} == {
            "format": 1, "size": 32, "context": 0, "shard_size": 5, "fix_rsna_defect": True, "folder": "stage_2_train"}
        assert re.fullmatch("[0-9a-f]{64}", recorded["cohort"])
        for name in ("train-00000", "train-00001", "train-00002"):
            receipt = json.loads((tmp_path / "shards" / f"{name}.json").read_text())
            assert receipt["parameters"] == recorded and receipt["size"] == 32
        build_cache(t.iloc[:11], root, tmp_path / "other", size=SIDE, shard_size=5, workers=0, progress=False)
        other = json.loads((tmp_path / "other" / "manifest.json").read_text())["parameters"]["cohort"]
        assert other != recorded["cohort"]  # another cohort table, another digest

    @pytest.mark.parametrize("change, warning", [
        ({"size": 16}, r"size=32 \(this build asks 16\)"),
        ({"shard_size": 4}, r"shard_size=5 \(this build asks 4\)"),
        ({"size": 16, "shard_size": 4}, r"size=32 \(this build asks 16\), shard_size=5 \(this build asks 4\)"),
        ({"ids": 11}, r"cohort=[0-9a-f]{12}\.\.\. \(this build asks [0-9a-f]{12}\.\.\.\)"),
        ({"fix_rsna_defect": False}, r"fix_rsna_defect=true \(this build asks false\)"),
    ])
    def test_other_parameters_warn_and_rebuild_the_whole_cache(self, tiny, tmp_path, monkeypatch, change, warning):
        root, truth = tiny
        ids = sorted(truth)[:12]
        args = {"size": SIDE, "shard_size": 5, "fix_rsna_defect": True, "workers": 0, "progress": False}
        build_cache(_cohort_frame(truth, ids), root, tmp_path, **args)
        calls = []
        real = cache_mod._build_shard
        monkeypatch.setattr(cache_mod, "_build_shard", lambda task: calls.append(task["name"]) or real(task))
        ids = ids[: change.pop("ids", len(ids))]
        args.update(change)
        with pytest.warns(RuntimeWarning, match=f"{re.escape(str(tmp_path))}: the HU cache was built with {warning}; "
                                                "a cache is never mixed, so it is removed and rebuilt"):
            cache = build_cache(_cohort_frame(truth, ids), root, tmp_path, **args)
        n_shards = -(-len(ids) // args["shard_size"])
        assert len(calls) == n_shards  # every shard built again, none kept
        names = sorted(p.name for p in (tmp_path / "shards").iterdir())
        assert names == sorted(f"train-{k:05d}{ext}" for k in range(n_shards) for ext in (".npy", ".json"))
        side = args["size"]
        for k in range(n_shards):
            assert np.load(tmp_path / "shards" / f"train-{k:05d}.npy").shape[1:] == (side, side)
        if side == 16:  # an area resize of 32 px to 16 px is the mean of each 2 x 2 block
            for image_id in ids:
                ref = truth[image_id]["hu"].astype(np.float64).reshape(16, 2, 16, 2).mean(axis=(1, 3))
                np.testing.assert_array_equal(cache.hu_int16([image_id])[0], np.rint(ref).astype(np.int16))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same request again: no warning, nothing rebuilt
            build_cache(_cohort_frame(truth, ids), root, tmp_path, **args)
        assert len(calls) == n_shards

    @pytest.mark.parametrize("how", ["npy", "npy and receipt"])
    def test_a_shard_of_another_size_is_never_reused(self, tiny, tmp_path, monkeypatch, how):
        """The issue's race: a second build at 16 px rewrote a shard under a finished 32 px manifest."""
        root, truth = tiny
        ids = sorted(truth)[:12]
        t = _cohort_frame(truth, ids)
        build_cache(t, root, tmp_path / "c", size=SIDE, shard_size=5, workers=0, progress=False)
        build_cache(t, root, tmp_path / "small", size=16, shard_size=5, workers=0, progress=False)
        victim = tmp_path / "c" / "shards" / "train-00001.npy"
        victim.write_bytes((tmp_path / "small" / "shards" / "train-00001.npy").read_bytes())
        if how == "npy and receipt":
            receipt = victim.with_suffix(".json")
            receipt.write_bytes((tmp_path / "small" / "shards" / "train-00001.json").read_bytes())
        with pytest.raises(CacheError, match=r"shard train-00001.npy holds shape \(5, 16, 16\); manifest.json says "
                                             r"\(5, 32, 32\) \(size=32\); rebuild it with build_cache"):
            open_cache(tmp_path / "c", size=SIDE)
        calls = []
        real = cache_mod._build_shard
        monkeypatch.setattr(cache_mod, "_build_shard", lambda task: calls.append(task["name"]) or real(task))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a foreign receipt says size=16: the whole cache goes
            cache = build_cache(t, root, tmp_path / "c", size=SIDE, shard_size=5, workers=0, progress=False)
        assert "train-00001" in calls
        np.testing.assert_array_equal(cache.hu_int16(ids), np.stack([truth[i]["hu"] for i in ids]))

    def test_a_killed_builds_temporaries_are_removed(self, tiny, tmp_path):
        import tempfile

        root, truth = tiny
        t = _cohort_frame(truth, sorted(truth)[:6])
        build_cache(t, root, tmp_path, size=SIDE, shard_size=5, workers=0, progress=False)
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        for folder, final in ((tmp_path / "shards", "train-00000.npy"), (tmp_path, "images.parquet")):
            fd, _ = tempfile.mkstemp(prefix=f".{final}.", suffix=".part", dir=folder)  # what a kill -9 leaves
            os.close(fd)
        build_cache(t, root, tmp_path, size=SIDE, shard_size=5, workers=0, progress=False)  # nothing to rebuild
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    def test_a_resumed_build_with_other_parameters_starts_over(self, tiny, tmp_path, monkeypatch):
        root, truth = tiny
        ids = sorted(truth)[:20]
        t = _cohort_frame(truth, ids)
        real = cache_mod._build_shard
        calls = []

        monkeypatch.setattr(cache_mod, "_build_shard", _dies_at_the_third_shard(real, calls))
        with pytest.raises(KeyboardInterrupt):
            build_cache(t, root, tmp_path, size=SIDE, shard_size=4, workers=0, progress=False)
        assert len(list((tmp_path / "shards").glob("*.json"))) == 2  # two 32 px shards, no manifest
        monkeypatch.setattr(cache_mod, "_build_shard", real)
        with pytest.warns(RuntimeWarning, match=r"built with size=32 \(this build asks 16\)"):
            cache = build_cache(t, root, tmp_path, size=16, shard_size=4, workers=0, progress=False)
        for k in range(5):
            assert np.load(tmp_path / "shards" / f"train-{k:05d}.npy").shape == (4, 16, 16)
        assert cache.hu_int16(ids).shape == (20, 16, 16)

    def test_killed_build_is_never_used_and_resumes_identical(self, tiny, tmp_path, monkeypatch):
        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:20] + ["ID_truncated0"])
        ref = build_cache(t, root, tmp_path / "ref", size=SIDE, shard_size=4, workers=0, progress=False)
        calls = []
        real = cache_mod._build_shard

        monkeypatch.setattr(cache_mod, "_build_shard", _dies_at_the_third_shard(real, calls))
        with pytest.raises(KeyboardInterrupt):
            build_cache(t, root, tmp_path / "c", size=SIDE, shard_size=4, workers=0, progress=False)
        with pytest.raises(CacheError, match="no manifest.json; the cache is missing or half-written"):
            open_cache(tmp_path / "c")
        calls.clear()
        monkeypatch.setattr(cache_mod, "_build_shard", lambda task: calls.append(task["name"]) or real(task))
        done = build_cache(t, root, tmp_path / "c", size=SIDE, shard_size=4, workers=0, progress=False)
        assert calls == ["train-00002", "train-00003", "train-00004", "train-00005"]
        for f in sorted((tmp_path / "ref" / "shards").iterdir()):
            assert (tmp_path / "c" / "shards" / f.name).read_bytes() == f.read_bytes(), f.name
        for f in ("images.parquet", "skipped.csv"):
            assert (tmp_path / "c" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()
        pd.testing.assert_frame_equal(done.table, ref.table)

    @pytest.mark.slow
    def test_sigkill_mid_build_then_rerun_ends_identical(self, tiny, tmp_path):
        import os
        import signal
        import subprocess
        import sys
        import time

        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:24])
        t.to_csv(tmp_path / "cohort.csv")
        ref = build_cache(t, root, tmp_path / "ref", size=SIDE, shard_size=3, workers=0, progress=False)
        script = (
            "import time, sys\n"
            "from brain_audit.dataset import cache\n"
            "real = cache._build_shard\n"
            "def slow(task):\n"
            "    out = real(task); time.sleep(0.4); return out\n"
            "cache._build_shard = slow\n"
            f"cache.build_cache({str(tmp_path / 'cohort.csv')!r}, {str(root)!r}, {str(tmp_path / 'c')!r}, "
            f"size={SIDE}, shard_size=3, workers=0, progress=False)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
        shard_dir = tmp_path / "c" / "shards"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(shard_dir.glob("*.json"))) < 2:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        n_done = len(list(shard_dir.glob("*.json")))
        assert 2 <= n_done < 8, n_done  # killed mid-way
        with pytest.raises(CacheError, match="no manifest.json"):
            open_cache(tmp_path / "c")
        done = build_cache(tmp_path / "cohort.csv", root, tmp_path / "c", size=SIDE, shard_size=3, workers=0,
                           progress=False)
        pd.testing.assert_frame_equal(done.table, ref.table)
        for f in sorted((tmp_path / "ref" / "shards").iterdir()):
            assert (shard_dir / f.name).read_bytes() == f.read_bytes(), f.name
        assert sorted(p.name for p in shard_dir.iterdir()) == sorted(p.name for p in (tmp_path / "ref" / "shards").iterdir())

    @pytest.mark.slow
    def test_parallel_build_equals_serial(self, tiny, tmp_path):
        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:24])
        a = build_cache(t, root, tmp_path / "a", size=SIDE, shard_size=6, workers=0, progress=False)
        b = build_cache(t, root, tmp_path / "b", size=SIDE, shard_size=6, workers=2, progress=False)
        pd.testing.assert_frame_equal(a.table, b.table)
        for f in sorted((tmp_path / "a" / "shards").iterdir()):
            assert (tmp_path / "b" / "shards" / f.name).read_bytes() == f.read_bytes()

    def test_load_split_arrays_with_context(self, tiny, tiny_cache):
        _, truth = tiny
        cache, out = tiny_cache
        ids, hu, y = load_split_arrays(out, "train", context=1)
        assert hu.dtype == np.float32 and hu.shape == (len(ids), SIDE, SIDE, 3) and y.dtype == np.int8
        by_series: dict[str, list] = {}
        for image_id, t in truth.items():
            by_series.setdefault(t["series"], []).append((t["z"], image_id))
        for k, image_id in enumerate(ids):
            order = [i for _, i in sorted(by_series[truth[image_id]["series"]])]
            j = order.index(image_id)
            below, above = order[max(j - 1, 0)], order[min(j + 1, len(order) - 1)]
            np.testing.assert_array_equal(hu[k, ..., 0], truth[below]["hu"])
            np.testing.assert_array_equal(hu[k, ..., 1], truth[image_id]["hu"])
            np.testing.assert_array_equal(hu[k, ..., 2], truth[above]["hu"])
            assert list(y[k]) == [truth[image_id]["labels"][c] for c in LABEL_COLUMNS]
        assert list(ids) == sorted(ids)
        with pytest.raises(CacheError, match="built with context=1; rebuild"):
            load_split_arrays(out, "train", context=2)


def _cohort_frame(truth: dict, ids: list[str]) -> pd.DataFrame:
    rows = []
    for i in ids:
        t = truth.get(i)
        lab = t["labels"] if t else {c: 0 for c in LABEL_COLUMNS}
        rows.append({"image_id": i, "patient_id": t["patient"] if t else "ID_x", "study_id": "S",
                     "series_id": t["series"] if t else "R", "z": t["z"] if t else 0.0, "split": "train", **lab})
    return pd.DataFrame(rows).set_index("image_id")


def test_an_image_id_that_is_a_path_never_becomes_one(tmp_path):
    """A cohort table handed over in memory (no read_cohort check): the cache refuses the traversal ID by name."""
    from brain_audit.errors import BrainAuditError

    table = pd.DataFrame({"split": ["train"], "patient_id": ["ID_p"], "study_id": ["ID_s"], "series_id": ["ID_r"],
                          "z": [0.0], **{c: [0] for c in LABEL_COLUMNS}}, index=pd.Index(["../../etc/x"], name="image_id"))
    with pytest.raises(BrainAuditError, match=r"\.\./\.\./etc/x"):
        build_cache(table, tmp_path, tmp_path / "cache", size=32, workers=0, progress=False)
    assert not (tmp_path.parent / "etc").exists()


def _dies_at_the_third_shard(real, calls: list[str]):
    """A stand-in for the shard worker that records each call and is killed (KeyboardInterrupt) at the third."""

    def dying(task):
        calls.append(task["name"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    return dying


class TestContext:
    def test_neighbours_are_the_slices_next_by_z_in_the_same_series(self, tmp_path):
        cache = _hand_built_cache(tmp_path)
        ids = ["ID_m", "ID_c", "ID_x", "ID_a", "ID_k", "ID_z", "ID_b", "ID_n"]
        got = cache.context_ids(ids, 1)
        assert got.tolist() == [
            ["ID_m", "ID_m", "ID_c"],  # the lowest slice of A is its own lower neighbour
            ["ID_m", "ID_c", "ID_x"],  # not ID_b / ID_n (z 3, 4): they are of series B
            ["ID_c", "ID_x", "ID_a"],
            ["ID_x", "ID_a", "ID_k"],  # 12.5 mm below, 1 mm above: the next slice, whatever the spacing
            ["ID_a", "ID_k", "ID_k"],  # the top slice of A is its own upper neighbour
            ["ID_z", "ID_z", "ID_b"],
            ["ID_z", "ID_b", "ID_n"],
            ["ID_b", "ID_n", "ID_n"],
        ]

    def test_the_edge_slice_is_repeated_at_both_ends(self, tmp_path):
        cache = _hand_built_cache(tmp_path)
        got = cache.context_ids(["ID_m", "ID_k", "ID_b"], 2)
        assert got.tolist() == [
            ["ID_m", "ID_m", "ID_m", "ID_c", "ID_x"],
            ["ID_x", "ID_a", "ID_k", "ID_k", "ID_k"],
            ["ID_z", "ID_z", "ID_b", "ID_n", "ID_n"],  # a 3-slice series: both ends within reach
        ]

    def test_hu_input_channels_hold_the_neighbours_pixels(self, tmp_path):
        cache = _hand_built_cache(tmp_path)
        hu = cache.hu_input(["ID_x", "ID_z"], 1)
        assert hu.dtype == np.float32 and hu.shape == (2, 4, 4, 3)
        # by hand: ID_x (z 7.5) lies between ID_c (z 5) and ID_a (z 20); ID_z is the bottom of series B
        assert [float(hu[0, 1, 2, c]) for c in range(3)] == [20.0, 30.0, 40.0]
        assert [float(hu[1, 3, 0, c]) for c in range(3)] == [-10.0, -10.0, -20.0]
        np.testing.assert_array_equal(hu[0, ..., 0], cache.hu_int16(["ID_c"])[0])
        np.testing.assert_array_equal(hu[0, ..., 2], cache.hu_int16(["ID_a"])[0])
        stored = cache.hu_input(["ID_x"], 1, dtype=np.int16)
        assert stored.dtype == np.int16 and stored.tolist() == hu[:1].astype(np.int16).tolist()
        one = cache.hu_input(["ID_x", "ID_z"])  # context 0: the slice alone, one channel
        assert one.shape == (2, 4, 4, 1) and one[..., 0].tolist() == cache.hu_int16(["ID_x", "ID_z"]).tolist()

    def test_load_split_arrays_and_centre_slice_agree_with_hu_input(self, tmp_path):
        cache = _hand_built_cache(tmp_path)
        ids, hu, _ = load_split_arrays(cache, "train", context=2)
        assert sorted(ids) == ["ID_a", "ID_b", "ID_c", "ID_k", "ID_m", "ID_n", "ID_x", "ID_z"]
        np.testing.assert_array_equal(hu, cache.hu_input(list(ids), 2))
        assert cache_mod.centre_slice(hu)[:, 0, 0].tolist() == [_CODE[i] for i in ids]

    def test_more_context_than_built_and_a_bad_context_are_refused(self, tmp_path):
        cache = _hand_built_cache(tmp_path, context=1)
        with pytest.raises(CacheError, match=r"built with context=1; rebuild with build_cache\(\.\.\., context=2\)"):
            cache.hu_input(["ID_x"], 2)
        with pytest.raises(ValueError, match=r"`context` must be an int >= 0. Got -1 instead."):
            cache.context_ids(["ID_x"], -1)
        with pytest.raises(ValueError, match=r"`dtype` must be float32 or int16. Got float64 instead."):
            cache.hu_input(["ID_x"], 1, dtype=np.float64)

    def test_build_caches_the_neighbours_of_its_own_series_only(self, tiny, tiny_index, tmp_path):
        """Patient 13 of the tiny dataset has two series: slices 0-2 at z 0, 10, 20 and slices 3-4 at z 121, 128.
        Cached alone (with a shuffled index), its slice 2 brings only slice 1: slice 3 is the next file but of
        the other series."""
        root, truth = tiny
        p13 = sorted((t["z"], i) for i, t in truth.items() if t["p"] == 13)
        assert [z for z, _ in p13] == [0.0, 10.0, 20.0, 121.0, 128.0]
        (_, s0), (_, s1), (_, s2), (_, s3), (_, s4) = p13
        index = tiny_index[1].copy()
        index.attrs = {}  # (its table of skipped files, which pandas cannot carry through a row shuffle)
        index = index.sample(frac=1.0, random_state=5)
        cohort = index.loc[[s2, s3], ["patient_id", "study_id", "series_id", "z"]].assign(split="train")
        for c in LABEL_COLUMNS:
            cohort[c] = [truth[i]["labels"][c] for i in cohort.index]
        cache = build_cache(cohort, root, tmp_path / "c", size=SIDE, context=1, index=index, workers=0,
                            progress=False)
        roles = cache.table["role"].to_dict()
        assert roles == {s2: "sample", s3: "sample", s1: "context", s4: "context"}
        got = cache.hu_input([s2, s3], 1)
        for k, expect in enumerate(([s1, s2, s2], [s3, s3, s4])):
            for c, image_id in enumerate(expect):
                np.testing.assert_array_equal(got[k, ..., c], truth[image_id]["hu"])
