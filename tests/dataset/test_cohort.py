"""brain_audit.dataset.cohort: patient splits and phase cohorts, on a synthetic image table with known
labels and on the tiny RSNA-layout dataset."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brain_audit.dataset.cohort import (
    CohortSpec,
    build_cohort,
    join_images,
    plan_cohorts,
    read_cohort,
    split_patients,
    write_cohorts,
)
from brain_audit.errors import CacheError, ConfigError
from brain_audit.rsna import LABEL_COLUMNS, SUBTYPES


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
        with pytest.raises(ConfigError, match=r"^`audit_patients` \+ `pretrain.patients` must be < the number of "
                                              r"patients in the data \(10\), leaving some to train on\. Got 200 \+ 0 "
                                              r"instead; set "
                                              r"audit_patients to at most 9 \(`--set audit_patients=9`, or "
                                              r"`--n-audit 9` for `brain-audit cohort`\)\.$"):
            split_patients(images)
        with pytest.raises(ValueError, match=r"Got 2 \+ 10 instead; set audit_patients \+ pretrain.patients to at "
                                             r"most 9\.$"):
            split_patients(images, n_audit=2, n_pretrain=10)  # still a ValueError for old callers
        with pytest.raises(ConfigError, match=r"^the data holds no patient to split \(a label file without data rows"):
            split_patients(images.iloc[:0])
        with pytest.raises(ConfigError, match=r"^`seed` must be an integer >= 0\. Got -1 instead\.$"):
            split_patients(images, n_audit=2, seed=-1)
        with pytest.raises(ConfigError, match=r"^`n_audit` must be an integer >= 0\. Got True instead\.$"):
            split_patients(images, n_audit=True)
        with pytest.raises(ConfigError, match=r"^`specs` names must be unique\. Got \['a', 'a'\] instead\.$"):
            plan_cohorts(images, (CohortSpec("a", 3), CohortSpec("a", 2)), n_audit=2)
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
        # not DICOM, no file, header only, truncated: none is in the index
        with pytest.warns(RuntimeWarning, match="4 labelled image\\(s\\) have no header"):
            images = join_images(labels, index)
        assert len(images) == len(labels) - 4
        assert list(images.columns) == ["patient_id", "study_id", "series_id", "z", *LABEL_COLUMNS]

    def test_tiny_dicom_cohort_and_csv_round_trip(self, tiny_cohort, tmp_path):
        images, cohort, patients = tiny_cohort
        assert not {"ID_badheader0", "ID_truncated0", "ID_headonly00"} & set(images.index)
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

    @pytest.mark.parametrize("col, value", [("patient_id", "../../../escape/x"), ("image_id", "/etc/passwd"),
                                            ("patient_id", "")])
    def test_a_hand_edited_id_that_is_a_path_is_refused_by_line(self, tiny_cohort, tmp_path, col, value):
        # later stages name files by these IDs (patients/<patient_id>.json, <image_id>.dcm)
        _, cohort, patients = tiny_cohort
        path = write_cohorts(tmp_path, cohort, patients, seed=7)
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        fields = lines[3].split(",")  # the third image, on line 4
        fields[header.index(col)] = value
        lines[3] = ",".join(fields)
        path.write_text("\n".join(lines) + "\n")
        rule = ("an ID of 1 to 128 letters, digits, '_', '-' and '.', not starting with '.' and without '..' or a "
                "path separator")
        shown = repr(value) if value else "nan"  # an empty field reads as missing
        with pytest.raises(CacheError, match="^" + re.escape(f"cohort.csv: line 4: `{col}` must be {rule}. "
                                                             f"Got {shown} instead.") + "$"):
            read_cohort(path)
