"""Tests of the RSNA data pipeline: labels, header index, cohorts, HU cache, tf.data feed.

Expected values come from outside the code under test: hand-written label files, the HU
arrays this file writes into its own tiny RSNA-layout cohorts (with
:func:`brain_audit.dicom.encode_slice`), pandas ``pivot_table`` as a slow reference
reader, and 2 x 2 block means as the reference of an area resize.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brain_audit.dataset import cache as cache_mod
from brain_audit.dataset import index as index_mod
from brain_audit.dataset.cache import build_cache, load_split_arrays, open_cache, preprocess_slice
from brain_audit.dataset.cohort import (
    CohortSpec,
    build_cohort,
    join_images,
    plan_cohorts,
    read_cohort,
    split_patients,
    write_cohorts,
)
from brain_audit.dataset.index import build_index, read_index, read_skipped
from brain_audit.dataset.labels import read_labels
from brain_audit.dicom import encode_slice
from brain_audit.errors import CacheError, LabelFileError
from brain_audit.rsna import LABEL_COLUMNS, SUBTYPES, TRAIN_CSV, TRAIN_DIR

# ----------------------------------------------------------------------------- tiny cohort

AIR = -1000  # inside the wrap-defect range [-1000, 3095], so every file round-trips exactly

#: patient number -> subtypes on its positive slices (slices 1..2); others negative
_PATIENT_SUBTYPES = {
    0: ("epidural",), 1: ("epidural", "subdural"), 2: ("epidural",),
    3: ("subdural",), 4: ("subdural",), 5: ("subdural",),
    6: ("intraparenchymal", "intraventricular"), 7: ("intraparenchymal",),
    8: ("subarachnoid",), 9: ("intraventricular", "subarachnoid"),
}
N_PATIENTS, N_SLICES, SIDE = 14, 5, 32


def _slice_hu(rng: np.random.Generator, positive: bool) -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    r = np.hypot((yy - SIDE / 2 + 0.5) / (SIDE * 0.42), (xx - SIDE / 2 + 0.5) / (SIDE * 0.36))
    hu = np.full((SIDE, SIDE), AIR, dtype=np.int32)
    hu[r < 1.0] = rng.integers(900, 1600, size=int((r < 1.0).sum()))  # skull
    inner = r < 0.85
    hu[inner] = rng.integers(15, 45, size=int(inner.sum()))  # brain
    if positive:
        hu[12:16, 10:15] = rng.integers(60, 85, size=(4, 5))  # blood
    return hu.astype(np.float64)


def make_tiny_rsna(root: Path, seed: int = 0) -> dict:
    """A tiny RSNA-layout dataset with known HU, labels, positions and corrupt files.

    14 patients x 5 slices (32 px), one series each except patient 13 (two series);
    patient 12 written with the RSNA 12-bit wrap defect. Corrupt: ``ID_badheader0`` (not
    DICOM), ``ID_missing000`` (labelled, no file), ``ID_truncated0`` (pixels cut),
    ``ID_headonly00`` (no Pixel Data); the last two have readable headers.
    """
    rng = np.random.default_rng(seed)
    folder = root / TRAIN_DIR
    folder.mkdir(parents=True)
    truth: dict[str, dict] = {}
    hexes = rng.choice(16**9, size=N_PATIENTS * (N_SLICES + 4), replace=False)
    h = iter(hexes)
    for p in range(N_PATIENTS):
        pid = f"ID_{next(h):09x}"
        study = f"ID_{next(h):09x}"
        series_list = [f"ID_{next(h):09x}", f"ID_{next(h):09x}"]
        for k in range(N_SLICES):
            subs = _PATIENT_SUBTYPES.get(p, ()) if k in (1, 2) else ()
            series = series_list[1] if (p == 13 and k >= 3) else series_list[0]
            z = float(10 * k if series == series_list[0] else 100 + 7 * k)
            image_id = f"ID_{next(h):09x}"
            hu = _slice_hu(rng, bool(subs))
            (folder / f"{image_id}.dcm").write_bytes(encode_slice(
                hu, sop_instance_uid=image_id, patient_id=pid, study_instance_uid=study,
                series_instance_uid=series, z=z, wrap_defect=(p == 12)))
            lab = {s: int(s in subs) for s in SUBTYPES}
            lab["any"] = int(bool(subs))
            truth[image_id] = {"hu": hu.astype(np.float32), "labels": lab, "patient": pid, "series": series,
                               "z": z, "wrap": p == 12, "p": p}
    good = next(iter(truth))
    full = encode_slice(truth[good]["hu"], sop_instance_uid="ID_truncated0", patient_id=truth[good]["patient"],
                        study_instance_uid="ID_x", series_instance_uid="ID_truncser", z=500.0)
    (folder / "ID_truncated0.dcm").write_bytes(full[:-700])
    head = encode_slice(truth[good]["hu"], sop_instance_uid="ID_headonly00", patient_id=truth[good]["patient"],
                        study_instance_uid="ID_x", series_instance_uid="ID_headser", z=600.0)
    (folder / "ID_headonly00.dcm").write_bytes(head[: head.find(b"\xe0\x7f\x10\x00")])
    (folder / "ID_badheader0.dcm").write_bytes(b"this is not a DICOM file at all" * 8)
    lines = ["ID,Label"]
    for image_id, t in truth.items():
        lines += [f"{image_id}_{c},{t['labels'][c]}" for c in LABEL_COLUMNS]
    for image_id in ("ID_truncated0", "ID_headonly00", "ID_badheader0", "ID_missing000"):
        lines += [f"{image_id}_{c},0" for c in LABEL_COLUMNS]
    (root / TRAIN_CSV).write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    truth = make_tiny_rsna(root)
    return root, truth


@pytest.fixture(scope="module")
def tiny_index(tiny, tmp_path_factory):
    root, _ = tiny
    out = tmp_path_factory.mktemp("index")
    labels = read_labels(root / TRAIN_CSV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        index = build_index(root, out, labels.index, workers=0, block_size=16, progress=False)
    return labels, index, out


@pytest.fixture(scope="module")
def tiny_cohort(tiny_index):
    labels, index, _ = tiny_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        images = join_images(labels, index)
        cohort, patients = plan_cohorts(
            images, [CohortSpec("phase2", 30, balance=0.5), CohortSpec("phase1", 12, balance=None)],
            n_audit=3, n_pretrain=1, validation=0.3, seed=7)
    return images, cohort, patients


@pytest.fixture(scope="module")
def tiny_cache(tiny, tiny_cohort, tiny_index, tmp_path_factory):
    root, _ = tiny
    _, cohort, _ = tiny_cohort
    out = tmp_path_factory.mktemp("cache")
    cache = build_cache(cohort, root, out, size=SIDE, shard_size=8, workers=0, progress=False,
                        context=1, index=tiny_index[1])
    return cache, out


# ----------------------------------------------------------------------------- labels

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def _rows(image: str, values: dict[str, int]) -> str:
    return "".join(f"{image}_{c},{values.get(c, 0)}\n" for c in LABEL_COLUMNS)


class TestReadLabels:
    def test_hand_written_file_with_agreeing_duplicates(self, tmp_path):
        text = ("ID,Label\n" + _rows("ID_aaa", {"subdural": 1, "any": 1}) + _rows("ID_bbb", {})
                + "ID_aaa_subdural,1\n" + "ID_ccc_epidural,1\n" + _rows("ID_ccc", {"epidural": 1, "any": 1})[17:])
        path = _write(tmp_path, text)
        with pytest.warns(RuntimeWarning, match="1 duplicated row"):
            df = read_labels(path)
        assert list(df.index) == ["ID_aaa", "ID_bbb", "ID_ccc"]
        assert list(df.columns) == list(LABEL_COLUMNS)
        assert (df.dtypes == np.int8).all()
        expected = np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], dtype=np.int8)
        np.testing.assert_array_equal(df.to_numpy(), expected)
        assert df.attrs["n_duplicate_rows"] == 1 and df.attrs["n_rows"] == 19

    def test_conflicting_duplicate_names_both_lines(self, tmp_path):
        text = "ID,Label\n" + _rows("ID_aaa", {}) + "ID_aaa_subdural,1\n"
        with pytest.raises(LabelFileError, match=r"conflicting duplicate rows for ID_aaa_subdural: "
                                                 r"line 6 says 0, line 8 says 1"):
            read_labels(_write(tmp_path, text))

    @pytest.mark.parametrize(
        "bad, why",
        [
            ("ID_bbb_epidural,2", r"label is '2'; expected 0 or 1"),
            ("ID_bbb_epidural,1,0", r"expected 2 fields 'ID,Label', got 3"),
            ("ID_bbb_epidurall,0", r"unknown subtype 'epidurall'"),
            ("IDbbbepidural,0", r"no '_<subtype>' suffix in ID 'IDbbbepidural'"),
            ("ID_bbb_epidural,", r"label is ''"),
        ],
    )
    def test_malformed_line_is_named(self, tmp_path, bad, why):
        text = "ID,Label\n" + _rows("ID_aaa", {}) + bad + "\n" + _rows("ID_bbb", {})[18:]
        with pytest.raises(LabelFileError, match=rf"labels.csv: line 8: {why}"):
            read_labels(_write(tmp_path, text))

    def test_blank_lines_do_not_shift_line_numbers(self, tmp_path):
        text = "ID,Label\n\n" + _rows("ID_aaa", {}) + "\nID_bbb_epidural,x\n"
        with pytest.raises(LabelFileError, match=r"line 10: label is 'x'"):
            read_labels(_write(tmp_path, text))

    def test_incomplete_image_and_bad_header(self, tmp_path):
        with pytest.raises(LabelFileError, match=r"image ID_aaa has no row for 'any'"):
            read_labels(_write(tmp_path, "ID,Label\n" + _rows("ID_aaa", {}).rsplit("ID_aaa_any", 1)[0]))
        with pytest.raises(LabelFileError, match=r"line 1: header is 'image,label'"):
            read_labels(_write(tmp_path, "image,label\nID_a_any,0\n"))
        with pytest.raises(LabelFileError, match="cannot open label file"):
            read_labels(tmp_path / "nope.csv")

    def test_any_inconsistent_with_subtypes_warns(self, tmp_path):
        with pytest.warns(RuntimeWarning, match="'any' differs from the OR"):
            df = read_labels(_write(tmp_path, "ID,Label\n" + _rows("ID_aaa", {"subdural": 1})))
        assert df.loc["ID_aaa", "any"] == 0 and df.loc["ID_aaa", "subdural"] == 1

    def test_agrees_with_pandas_pivot_reference(self, tmp_path):
        rng = np.random.default_rng(3)
        ids = [f"ID_{v:09x}" for v in rng.choice(16**9, 2000, replace=False)]
        lab = (rng.random((2000, 6)) < 0.2).astype(int)
        lab[:, 5] = lab[:, :5].max(axis=1)
        rows = [(f"{i}_{c}", v) for i, r in zip(ids, lab) for c, v in zip(LABEL_COLUMNS, r)]
        order = rng.permutation(len(rows))  # rows of one image scattered through the file
        path = _write(tmp_path, "ID,Label\n" + "".join(f"{rows[k][0]},{rows[k][1]}\n" for k in order))
        ref = pd.read_csv(path)
        ref[["image_id", "subtype"]] = ref["ID"].str.rsplit("_", n=1, expand=True)
        ref = ref.pivot_table(index="image_id", columns="subtype", values="Label")[list(LABEL_COLUMNS)]
        got = read_labels(path)
        pd.testing.assert_frame_equal(got.sort_index(), ref.astype(np.int8), check_names=False,
                                      check_index_type=False, check_column_type=False)


# ----------------------------------------------------------------------------- header index

class TestBuildIndex:
    def test_values_match_what_was_written(self, tiny, tiny_index):
        _, truth = tiny
        _, index, _ = tiny_index
        for image_id, t in truth.items():
            row = index.loc[image_id]
            assert row["patient_id"] == t["patient"] and row["series_id"] == t["series"]
            assert row["z"] == t["z"] and (row["rows"], row["cols"]) == (SIDE, SIDE)
            assert bool(row["wrap_defect"]) == t["wrap"]
            assert row["bits_stored"] == (12 if t["wrap"] else 16)
            assert row["intercept"] == (0.0 if t["wrap"] else -1024.0)
        # headers of the truncated and header-only files are readable: indexed (the cache skips them)
        assert {"ID_truncated0", "ID_headonly00"} <= set(index.index)
        assert len(index) == len(truth) + 2

    def test_unreadable_files_land_in_skipped_csv_with_reason(self, tiny_index):
        _, _, out = tiny_index
        skipped = read_skipped(out).set_index("image_id")
        assert sorted(skipped.index) == ["ID_badheader0", "ID_missing000"]
        assert skipped.loc["ID_missing000", "reason"].startswith("cannot open file")
        assert "not a DICOM file" in skipped.loc["ID_badheader0", "reason"]
        assert skipped.loc["ID_badheader0", "file"] == f"{TRAIN_DIR}/ID_badheader0.dcm"

    def test_identifying_fields_never_stored(self, tiny_index):
        _, index, _ = tiny_index
        forbidden = {"patient_name", "patients_name", "birth_date", "patient_birth_date", "institution_name"}
        assert not forbidden & {c.lower() for c in index.columns}

    def test_killed_run_resumes_reads_only_missing_and_ends_identical(self, tiny, tmp_path, monkeypatch):
        root, _ = tiny
        labels = read_labels(root / TRAIN_CSV)
        full = tmp_path / "full"
        ref = build_index(root, full, labels.index, workers=0, block_size=10, progress=False)
        calls = []
        real = index_mod._read_block

        def dying(block):
            calls.append(len(block))
            if len(calls) == 3:
                raise KeyboardInterrupt  # killed mid-run, after two blocks were written
            return real(block)

        monkeypatch.setattr(index_mod, "_read_block", dying)
        part = tmp_path / "part"
        with pytest.raises(KeyboardInterrupt):
            build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert len(list((part / "parts").glob("part-*.parquet"))) == 2
        assert not (part / "index.parquet").exists()
        monkeypatch.setattr(index_mod, "_read_block", real)
        again = build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert again.attrs["n_read"] == len(labels) - 20
        pd.testing.assert_frame_equal(again, ref)
        assert (part / "index.parquet").read_bytes() == (full / "index.parquet").read_bytes()
        assert (part / "skipped.csv").read_bytes() == (full / "skipped.csv").read_bytes()
        assert not (part / "parts").exists()
        assert build_index(root, part, labels.index, workers=0, progress=False).attrs["n_read"] == 0

    @pytest.mark.slow
    def test_parallel_processes_give_the_same_table(self, tiny, tiny_index, tmp_path):
        root, _ = tiny
        labels, index, out = tiny_index
        par = build_index(root, tmp_path / "par", labels.index, workers=2, block_size=9, progress=False)
        pd.testing.assert_frame_equal(par, index)
        assert (tmp_path / "par" / "skipped.csv").read_bytes() == (out / "skipped.csv").read_bytes()

    def test_missing_root_and_bad_parameters(self, tmp_path):
        with pytest.raises(CacheError, match="no such folder"):
            build_index(tmp_path, tmp_path / "i")
        with pytest.raises(ValueError, match="`block_size` must be > 0. Got 0 instead."):
            build_index(tmp_path, tmp_path / "i", block_size=0)
        with pytest.raises(CacheError, match="no header index here"):
            read_index(tmp_path)


# ----------------------------------------------------------------------------- cohorts

def synthetic_images(n_patients: int = 300, slices: int = 10, seed: int = 1) -> pd.DataFrame:
    """A join_images-like table with known labels (no DICOM needed)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        # epidural in 8 patients only (rare), subdural common
        subs = []
        if p % 37 == 0:
            subs.append("epidural")
        if p % 4 == 1:
            subs.append("subdural")
        if p % 9 == 2:
            subs.append("intraparenchymal")
        if p % 11 == 3:
            subs.append("intraventricular")
        if p % 6 == 5:
            subs.append("subarachnoid")
        for k in range(slices):
            on = subs if 3 <= k <= 5 + (p % 3) else []
            lab = {s: int(s in on) for s in SUBTYPES}
            lab["any"] = int(bool(on))
            rows.append({"image_id": f"ID_{p:04d}{k:05d}", "patient_id": f"ID_pat{p:04d}", "study_id": f"S{p}",
                         "series_id": f"R{p}", "z": float(k * 5), **lab})
    df = pd.DataFrame(rows).set_index("image_id")
    for c in LABEL_COLUMNS:
        df[c] = df[c].astype(np.int8)
    return df.iloc[rng.permutation(len(df))]


class TestSplitsAndCohorts:
    def test_no_patient_crosses_splits_and_audit_is_never_trained_on(self):
        images = synthetic_images()
        cohort, patients = plan_cohorts(images, [CohortSpec("phase2", 800), CohortSpec("phase1", 160, None)],
                                        n_audit=20, n_pretrain=15, validation=0.2, seed=5)
        assert cohort.groupby("patient_id")["split"].nunique().max() == 1
        counts = patients["split"].value_counts()
        assert counts["audit"] == 20 and counts["pretrain"] == 15
        assert counts["validation"] == round(0.2 * (300 - 35))
        audit_pat = set(patients.index[patients["split"] == "audit"])
        for col in ("in_phase2", "in_phase1"):
            chosen = cohort[cohort[col]]
            assert set(chosen["split"]) == {"train", "validation"}
            assert not audit_pat & set(chosen["patient_id"])
        # every slice of audit and pretrain patients is in the table, under its split
        for sp in ("audit", "pretrain"):
            pats = set(patients.index[patients["split"] == sp])
            assert (cohort["split"] == sp).sum() == images["patient_id"].isin(pats).sum()

    def test_nested_exact_sizes_balance_and_rare_subtype_in_every_split(self):
        images = synthetic_images()
        cohort, patients = plan_cohorts(images, [CohortSpec("phase2", 800, 0.5), CohortSpec("phase1", 160, None)],
                                        n_audit=20, validation=0.2, seed=5)
        p2, p1 = cohort[cohort["in_phase2"]], cohort[cohort["in_phase1"]]
        assert len(p2) == 800 and len(p1) == 160
        assert p2["any"].sum() == 400
        assert set(p1.index) <= set(p2.index)
        assert abs(p1["any"].mean() - 0.5) < 0.05  # drawn inside a balanced cohort, natural balance kept
        for name, frame in (("phase2", p2), ("phase1", p1)):
            for sp in ("train", "validation"):
                assert frame.loc[frame["split"] == sp, "epidural"].sum() > 0, (name, sp)
        audit_pats = patients.index[patients["split"] == "audit"]
        assert images[images["patient_id"].isin(audit_pats)]["epidural"].sum() > 0

    def test_deterministic_by_seed_and_audit_chosen_first(self):
        images = synthetic_images()
        a, pa = plan_cohorts(images, [CohortSpec("phase2", 500)], n_audit=20, seed=11)
        b, pb = plan_cohorts(images.sample(frac=1.0, random_state=0), [CohortSpec("phase2", 500)],
                             n_audit=20, seed=11)
        pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(pa, pb)
        c, pc_ = plan_cohorts(images, [CohortSpec("phase2", 500)], n_audit=20, seed=12)
        assert set(c.index[c["in_phase2"]]) != set(a.index[a["in_phase2"]])
        # the audit set depends only on the seed and the population, not on what comes after
        _, pd_ = plan_cohorts(images, [CohortSpec("phase2", 100, 0.3)], n_audit=20, n_pretrain=30,
                              validation=0.4, seed=11)
        audit = lambda t: set(t.index[t["split"] == "audit"])  # noqa: E731
        assert audit(pd_) == audit(pa) and audit(pc_) != audit(pa)

    def test_patient_unit_counts_patients(self):
        images = synthetic_images()
        patients = split_patients(images, n_audit=20, seed=2)
        c = build_cohort(images, patients, 40, unit="patient", balance=0.5, seed=2)
        assert c["patient_id"].nunique() == 40
        flags = c.groupby("patient_id")["any"].max()
        assert flags.sum() == 20
        pool_pats = set(c["patient_id"])
        expected = images[images["patient_id"].isin(pool_pats)]
        assert sorted(c.index) == sorted(expected.index)  # all their slices
        assert set(c["split"]) <= {"train", "validation"}

    def test_pretrain_pool_is_disjoint(self):
        images = synthetic_images()
        patients = split_patients(images, n_audit=20, n_pretrain=40, seed=4)
        pre = build_cohort(images, patients, 100, pool=("pretrain",), balance=None, seed=4)
        assert set(pre["split"]) == {"pretrain"}
        train = build_cohort(images, patients, 1000, balance=None, seed=4)
        assert not set(pre["patient_id"]) & set(train["patient_id"])

    def test_short_pool_warns_and_takes_what_there_is(self):
        images = synthetic_images(40, 5)
        with pytest.warns(RuntimeWarning, match="no positive case of epidural in audit"):
            patients = split_patients(images, n_audit=4, seed=0)
        with pytest.warns(RuntimeWarning, match="balance 0.9 asks"):
            c = build_cohort(images, patients, 150, balance=0.9, seed=0)
        pool = images[images["patient_id"].map(patients["split"]).isin(["train", "validation"])]
        assert c["any"].sum() == pool["any"].sum()  # every positive taken

    def test_parameter_errors(self):
        images = synthetic_images(10, 3)
        with pytest.raises(ValueError, match=r"`n_audit` \+ `n_pretrain` must be < the number of patients \(10\). "
                                             r"Got 200 \+ 0 instead."):
            split_patients(images)
        with pytest.raises(ValueError, match="`n` must be > 0. Got -3 instead."):
            CohortSpec("x", -3)
        with pytest.raises(ValueError, match="`unit` must be 'slice' or 'patient'"):
            CohortSpec("x", 3, unit="study")
        patients = split_patients(images, n_audit=2, seed=0)
        with pytest.raises(ValueError, match="must not mix 'audit'"):
            build_cohort(images, patients, 5, pool=("audit", "train"))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.integers(0, 400), st.data())
    def test_allocation_law(self, sizes, n, data):
        from brain_audit.dataset.cohort import _allocate

        flags = data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
        q = _allocate(np.array(sizes), n, np.array(flags))
        assert q.sum() == min(n, sum(sizes))
        assert (q >= 0).all() and (q <= np.array(sizes)).all()
        wanted = [i for i, (z, f) in enumerate(zip(sizes, flags)) if f and z > 0]
        if len(wanted) <= n:
            assert all(q[i] >= 1 for i in wanted)

    def test_join_images_reports_what_it_leaves_out(self, tiny_index):
        labels, index, _ = tiny_index
        with pytest.warns(RuntimeWarning, match="2 labelled image\\(s\\) have no header"):
            images = join_images(labels, index)
        assert len(images) == len(labels) - 2
        assert list(images.columns) == ["patient_id", "study_id", "series_id", "z", *LABEL_COLUMNS]

    def test_tiny_dicom_cohort_and_csv_round_trip(self, tiny_cohort, tmp_path):
        images, cohort, patients = tiny_cohort
        assert "ID_badheader0" not in images.index and "ID_truncated0" in images.index
        path = write_cohorts(tmp_path, cohort, patients, seed=7)
        back = read_cohort(path)
        pd.testing.assert_frame_equal(back, cohort, check_index_type=False, check_dtype=False)
        assert (back[list(LABEL_COLUMNS)].dtypes == np.int8).all()
        record = json.loads((tmp_path / "cohort.json").read_text())
        assert record["seeds"] == {"cohort": 7}
        assert record["counts"]["split:audit"]["patients"] == 3
        # epidural (3 patients) appears in audit, validation and train
        for sp in ("audit", "validation", "train"):
            pats = patients.index[patients["split"] == sp]
            assert images[images["patient_id"].isin(pats)]["epidural"].sum() > 0, sp


# ----------------------------------------------------------------------------- HU cache

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

    def test_killed_build_is_never_used_and_resumes_identical(self, tiny, tmp_path, monkeypatch):
        root, truth = tiny
        t = _cohort_frame(truth, list(truth)[:20] + ["ID_truncated0"])
        ref = build_cache(t, root, tmp_path / "ref", size=SIDE, shard_size=4, workers=0, progress=False)
        calls = []
        real = cache_mod._build_shard

        def dying(task):
            calls.append(task["name"])
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(task)

        monkeypatch.setattr(cache_mod, "_build_shard", dying)
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


# ----------------------------------------------------------------------------- feed

def _batches(ds):
    hu, y, w = zip(*[(a.numpy(), b.numpy(), c.numpy()) for a, b, c in ds])
    return np.concatenate(hu), np.concatenate(y), np.concatenate(w)


def _identify(hu: np.ndarray, truth: dict) -> str:
    """The image ID whose written HU equal ``hu`` (random images: unique)."""
    hits = [i for i, t in truth.items() if np.array_equal(t["hu"], hu)]
    assert len(hits) == 1
    return hits[0]


class TestFeed:
    def test_unshuffled_batches_are_the_cached_hu_with_the_csv_labels(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids, ref_hu, _ = load_split_arrays(out, "train")
        ds = make_feed(out, "train", 4, labels="six", shuffle=False)
        assert int(ds.cardinality()) == -(-len(ids) // 4)
        first = next(iter(ds))
        assert [t.dtype.name for t in first] == ["float32", "float32", "float32"]
        assert first[0].shape == (4, SIDE, SIDE, 1) and first[1].shape == (4, 6) and first[2].shape == (4,)
        hu, y, w = _batches(ds)
        np.testing.assert_array_equal(hu, ref_hu)
        expected = np.array([[truth[i]["labels"][c] for c in LABEL_COLUMNS] for i in ids], dtype=np.float32)
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(w, np.ones(len(ids), np.float32))
        _, y_any, _ = _batches(make_feed(out, "train", 5, labels="any", shuffle=False))
        np.testing.assert_array_equal(y_any, expected[:, 5:6])

    def test_shuffled_epoch_keeps_each_image_with_its_label(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids = list(load_split_arrays(out, "train")[0])
        hu, y, _ = _batches(make_feed(out, "train", 3, labels="six", shuffle=True, seed=1))
        seen = [_identify(hu[k, ..., 0], truth) for k in range(len(hu))]
        assert sorted(seen) == sorted(ids) and seen != ids
        for k, image_id in enumerate(seen):
            assert list(y[k]) == [truth[image_id]["labels"][c] for c in LABEL_COLUMNS]
        again, _, _ = _batches(make_feed(out, "train", 3, shuffle=True, seed=1))
        np.testing.assert_array_equal(again, hu)
        other, _, _ = _batches(make_feed(out, "train", 3, shuffle=True, seed=2))
        assert not np.array_equal(other, hu)

    def test_repeat_reshuffles_every_epoch(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        n = len(load_split_arrays(out, "train")[0])
        ds = make_feed(out, "train", n, shuffle=True, seed=3, repeat=True)
        e1, e2 = [b[0].numpy() for b, _ in zip(ds, range(2))]
        ids1 = [_identify(x[..., 0], truth) for x in e1]
        ids2 = [_identify(x[..., 0], truth) for x in e2]
        assert sorted(ids1) == sorted(ids2) and ids1 != ids2

    def test_epoch_replays_what_the_stream_gave(self, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, out = tiny_cache
        stream = make_feed(out, "train", 4, seed=4, augment=True, repeat=True)
        per_epoch = -(-len(load_split_arrays(out, "train")[0]) // 4)
        second = [b[0].numpy() for b, _ in zip(stream, range(2 * per_epoch))][per_epoch:]
        alone = [b[0].numpy() for b in make_feed(out, "train", 4, seed=4, augment=True, epoch=1)]
        assert len(alone) == per_epoch
        for a, b in zip(alone, second):
            np.testing.assert_array_equal(a, b)
        first = [b[0].numpy() for b in make_feed(out, "train", 4, seed=4, augment=True, epoch=0)]
        assert not np.array_equal(first[0], alone[0])

    def test_sample_weights_and_repeats(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import feed_length, make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids = list(load_split_arrays(out, "train")[0])
        hard = ids[2]
        hu, y, w = _batches(make_feed(out, "train", 4, shuffle=False, sample_weights={hard: 3.5},
                                      repeats={ids[0]: 3}))
        seen = [_identify(hu[k, ..., 0], truth) for k in range(len(hu))]
        assert seen.count(ids[0]) == 3 and len(seen) == len(ids) + 2
        assert w[seen.index(hard)] == 3.5 and w.sum() == len(seen) - 1 + 3.5
        assert feed_length(out, "train", 4, repeats={ids[0]: 3}) == -(-(len(ids) + 2) // 4)
        with pytest.warns(RuntimeWarning, match="1 `sample_weights` ID"):
            make_feed(out, "train", 4, sample_weights={"ID_nothere": 2.0})
        with pytest.raises(ValueError, match="`sample_weights` must be finite and >= 0. Got -1.0"):
            make_feed(out, "train", 4, sample_weights={hard: -1})
        with pytest.raises(ValueError, match="`batch_size` must be > 0. Got 0 instead."):
            make_feed(out, "train", 0)

    def test_cohort_filter_and_context_channels(self, tiny, tiny_cohort, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, cohort, _ = tiny_cohort
        _, out = tiny_cache
        hu, y, _ = _batches(make_feed(out, "train", 4, cohort="phase1", shuffle=False, context=1))
        want = cohort[cohort["in_phase1"] & (cohort["split"] == "train")].index
        want = [i for i in want if i in truth]
        assert hu.shape == (len(want), SIDE, SIDE, 3)
        ids, ref, _ = load_split_arrays(out, "train", cohort="phase1", context=1)
        assert list(ids) == sorted(want)
        np.testing.assert_array_equal(hu, ref)
        with pytest.raises(CacheError, match="no cohort 'phase9'"):
            make_feed(out, "train", 4, cohort="phase9")

    def test_augmentation_identity_flip_and_centred_rotation(self, tiny_cache):
        from brain_audit.dataset.feed import Augment, make_feed

        _, out = tiny_cache
        base, _, _ = _batches(make_feed(out, "train", 4, shuffle=False))
        none = Augment(rotation_deg=0, shift=0, zoom=0, flip=False, hu_offset=0, hu_gain=0)
        same, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, augment=none))
        np.testing.assert_allclose(same, base, atol=1e-3)
        flips, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                         augment=dataclasses_replace(none, flip=True)))
        mirrored = [np.allclose(f, b[:, ::-1], atol=1e-3) for f, b in zip(flips, base)]
        kept = [np.allclose(f, b, atol=1e-3) for f, b in zip(flips, base)]
        assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
        # strong rotation of real slices: corners stay air, the brain's centre stays brain
        rot, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                       augment=dataclasses_replace(none, rotation_deg=30.0)))
        assert not np.allclose(rot, base, atol=1.0)
        assert (rot[:, 0, 0] == -1024.0).all() or (rot[:, 0, 0] <= AIR).all()
        c = SIDE // 2
        assert np.all(np.abs(rot[:, c - 1 : c + 1, c - 1 : c + 1] - 30) < 60)
        jit, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                       augment=dataclasses_replace(none, hu_offset=5.0)))
        air = base <= AIR
        np.testing.assert_array_equal(jit[air], base[air])
        d = jit[~air] - base[~air]
        assert np.abs(d).max() <= 5.0 + 1e-3 and np.abs(d).max() > 0
        a1, _, _ = _batches(make_feed(out, "train", 4, seed=9, augment=True))
        a2, _, _ = _batches(make_feed(out, "train", 4, seed=9, augment=True))
        np.testing.assert_array_equal(a1, a2)


class TestAugmentBatch:
    def test_channels_stay_registered_input_untouched_and_seeded(self):
        from brain_audit.dataset.feed import Augment, augment_batch

        rng = np.random.default_rng(0)
        one = rng.integers(-1000, 1500, size=(6, 24, 24, 1)).astype(np.float32)
        three = np.repeat(one, 3, axis=-1)
        keep = three.copy()
        out = augment_batch(three, Augment(rotation_deg=20, shift=0.1, zoom=0.1), np.random.default_rng(5))
        np.testing.assert_array_equal(three, keep)
        np.testing.assert_array_equal(out[..., 0], out[..., 2])  # 2.5D neighbours move together
        again = augment_batch(three, Augment(rotation_deg=20, shift=0.1, zoom=0.1), np.random.default_rng(5))
        np.testing.assert_array_equal(out, again)
        assert out.shape == three.shape and out.dtype == np.float32
        none = Augment(rotation_deg=0, shift=0, zoom=0, flip=False, hu_offset=0, hu_gain=0)
        np.testing.assert_array_equal(augment_batch(one, none, np.random.default_rng(1)), one)

    def test_bad_ranges(self):
        from brain_audit.dataset.feed import Augment

        with pytest.raises(ValueError, match="`zoom` must be in \\[0, 1\\). Got 1.5 instead."):
            Augment(zoom=1.5)
        with pytest.raises(ValueError, match="`rotation_deg` must be >= 0. Got -1 instead."):
            Augment(rotation_deg=-1)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


# ----------------------------------------------------------------------------- command line

class TestCli:
    def test_labels_index_cohort_cache_feed_from_the_shell(self, tiny, tmp_path, capsys):
        from brain_audit.cli import main

        root, truth = tiny
        w = tmp_path / "work"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert main(["index", str(root), "--out", str(w / "index"), "--workers", "0", "--quiet"]) == 0
            out = capsys.readouterr()
            assert f"{len(truth) + 2} images indexed" in out.out and "2 skipped" in out.out
            assert "skipped ID_badheader0: not a DICOM file" in out.err
            assert main(["cohort", str(root), "--index", str(w / "index"), "--out", str(w / "cohort"),
                         "--cohort", "phase2:30:0.5", "--cohort", "phase1:4:natural:patient",
                         "--n-audit", "3", "--validation", "0.3", "--seed", "7"]) == 0
            out = capsys.readouterr().out
            assert "audit: 3 patients" in out and "phase2: 30 slices" in out
            cohort = read_cohort(w / "cohort")
            assert cohort["in_phase2"].sum() == 30
            p1 = cohort[cohort["in_phase1"]]
            assert p1["patient_id"].nunique() == 4 and p1["in_phase2"].all()
            assert main(["cache", str(root), "--cohort", str(w / "cohort"), "--out", str(w / "cache"),
                         "--size", "16", "--workers", "0", "--quiet"]) == 0
            out = capsys.readouterr().out
        cache = open_cache(w / "cache", size=16)
        n_bad = int(cohort.index.isin(["ID_truncated0", "ID_headonly00"]).sum())
        assert f"{len(cohort) - n_bad} slices cached at 16 x 16" in out
        assert main(["feed", str(w / "cache"), "--split", "train", "--batch-size", "4", "--batches", "1",
                     "--labels", "six"]) == 0
        out = capsys.readouterr().out
        assert "hu float32 (4, 16, 16, 1)" in out and "y float32 (4, 6)" in out
        assert len(cache.ids("train")) > 0

    def test_bad_cohort_spec_is_a_usage_error(self, capsys):
        from brain_audit.cli import main

        with pytest.raises(SystemExit):
            main(["cohort", ".", "--cohort", "phase1"])
        assert "expected NAME:N[:BALANCE[:UNIT]]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- phantom end to end

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:no positive case:RuntimeWarning", "ignore:balance 0.5 asks:RuntimeWarning")
class TestPhantomEndToEnd:
    @pytest.fixture(scope="class")
    def phantom(self, tmp_path_factory):
        phantom = pytest.importorskip("brain_audit.phantom")
        root = tmp_path_factory.mktemp("phantom")
        summary = phantom.generate_cohort(root, phantom.PhantomConfig(
            patients=6, slices_per_patient=6, size=64, corrupt_files=2, seed=3), workers=1, progress=False)
        return root, summary, json.loads((root / "phantom_manifest.json").read_text())

    def test_python_path_labels_index_cohort_cache_batches(self, phantom, tmp_path):
        from brain_audit.dataset.feed import make_feed
        from brain_audit.dicom import read_hu

        root, summary, manifest = phantom
        labels = read_labels(root / TRAIN_CSV)
        assert len(labels) == summary["images"] + summary["corrupt_files"]
        index = build_index(root, tmp_path / "index", labels.index, workers=0, progress=False)
        images = join_images(labels, index)
        cohort, patients = plan_cohorts(images, [CohortSpec("phase2", 24, 0.5), CohortSpec("phase1", 2, None, "patient")],
                                        n_audit=1, validation=0.25, seed=0)
        assert set(cohort[cohort["in_phase1"]].index) <= set(cohort[cohort["in_phase2"]].index)
        cache = build_cache(cohort, root, tmp_path / "cache", size=64, workers=0, progress=False)
        # each corrupt phantom file is recorded with a reason by the index or the cache, never dropped silently
        recorded = set(index.attrs["skipped"]["image_id"]) | set(cache.skipped["image_id"])
        for bad in manifest["corrupt"]:
            assert bad["image_id"] in recorded or bad["image_id"] not in cohort.index
        ids = cache.ids("train")
        ds = make_feed(tmp_path / "cache", "train", 5, labels="six", shuffle=False)
        hu = np.concatenate([b[0].numpy() for b in ds])
        y = np.concatenate([b[1].numpy() for b in ds])
        np.testing.assert_array_equal(y, labels.loc[ids].to_numpy(np.float32))
        k = len(ids) // 2
        ref = np.rint(read_hu(root / TRAIN_DIR / f"{ids[k]}.dcm"))
        np.testing.assert_array_equal(hu[k, ..., 0], ref)
        audit = set(patients.index[patients["split"] == "audit"])
        assert not audit & set(cache.table.loc[cache.ids("train"), "patient_id"])

    def test_cli_path(self, phantom, tmp_path, capsys):
        from brain_audit.cli import main

        root, summary, _ = phantom
        w = tmp_path
        assert main(["index", str(root), "--out", str(w / "index"), "--workers", "2", "--quiet"]) == 0
        assert main(["cohort", str(root), "--index", str(w / "index"), "--out", str(w / "cohort"),
                     "--cohort", "phase2:20:0.5", "--cohort", "phase1:8", "--n-audit", "1", "--seed", "1"]) == 0
        assert main(["cache", str(root), "--cohort", str(w / "cohort"), "--out", str(w / "cache"),
                     "--size", "32", "--workers", "0", "--quiet"]) == 0
        assert main(["feed", str(w / "cache"), "--split", "train", "--batch-size", "4", "--augment"]) == 0
        out = capsys.readouterr().out
        assert "hu float32 (4, 32, 32, 1)" in out
        cohort = read_cohort(w / "cohort")
        cache = open_cache(w / "cache", size=32)
        assert set(cache.table.index) | set(cache.skipped["image_id"]) == set(cohort.index)
