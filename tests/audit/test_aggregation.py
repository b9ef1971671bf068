"""brain_audit.audit.aggregation: the study model against the max-slice rule, paired, and the context table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from brain_audit.audit.aggregation import aggregation_section, auc_difference, context_groups, context_table


def _series(labels: list[int], series: str = "S", patient: str = "P", start: int = 0) -> pd.DataFrame:
    n = len(labels)
    z = np.arange(n, dtype=float) * 5.0
    order = np.random.default_rng(start).permutation(n)  # rows shuffled: positions come from z, not row order
    return pd.DataFrame({"image_id": [f"ID_{series}{k}" for k in order], "series_id": series, "patient_id": patient,
                         "z": z[order], "label": np.asarray(labels)[order]})


def test_positions_along_z_by_hand():
    t = _series([0, 1, 1, 1, 0, 1, 0, 0, 1, 1])
    out = context_groups(t).set_index("image_id")
    expected = ["next to a bleed", "edge", "interior", "edge", "next to a bleed", "single", "next to a bleed",
                "next to a bleed", "edge", "edge"]
    assert [out.loc[f"ID_S{k}", "position"] for k in range(10)] == expected
    assert (out["size"] == "").all()


def test_positions_never_cross_series():
    a, b = _series([0, 0, 1], "A"), _series([1, 0, 0], "B", start=1)
    out = context_groups(pd.concat([a, b], ignore_index=True)).set_index("image_id")
    # A's last slice and B's first are not neighbours: each bleed is single, each slice beside it "next to a bleed"
    assert out.loc["ID_A2", "position"] == "single" and out.loc["ID_B0", "position"] == "single"
    assert out.loc["ID_A1", "position"] == "next to a bleed" and out.loc["ID_A0", "position"] == "away from a bleed"


def test_size_splits_at_the_median_lesion_area():
    t = _series([1, 1, 1, 1])
    area = {"ID_S0": 10.0, "ID_S1": 40.0, "ID_S2": 30.0, "ID_S3": 20.0}  # median 25
    out = context_groups(t, area).set_index("image_id")
    assert [out.loc[f"ID_S{k}", "size"] for k in range(4)] == ["small", "large", "large", "small"]


def test_context_table_rates_by_hand():
    t = pd.concat([_series([0, 1, 1, 1, 0], "A", "P1"), _series([0, 1, 1, 1, 0], "B", "P2", start=3)],
                  ignore_index=True)
    t = context_groups(t).set_index("image_id")
    # the max-slice rule misses both lower edges; the study model misses nothing and calls one neighbour
    t["probability"] = np.where(t["label"] == 1, 0.9, 0.1)
    t.loc[["ID_A1", "ID_B1"], "probability"] = 0.2
    t["probability_study"] = t["probability"]
    t.loc[["ID_A1", "ID_B1", "ID_A0"], "probability_study"] = 0.8
    rows = {r["group"]: r for r in context_table(t.reset_index(), {"max_slice": 0.5, "study_model": 0.5}, n_boot=200)}
    edge = rows["bleeding, edge"]
    assert (edge["slices"], edge["patients"], edge["max_slice"], edge["study_model"]) == (4, 2, 0.5, 1.0)
    assert edge["difference"] == pytest.approx(0.5) and edge["ci95"][1] > edge["ci95"][0]
    assert rows["bleeding, interior"]["max_slice"] == rows["bleeding, interior"]["study_model"] == 1.0
    near = rows["not bleeding, next to a bleed"]
    assert (near["slices"], near["max_slice"], near["study_model"]) == (4, 1.0, 0.75)


def test_auc_difference_matches_scikit_learn_and_has_an_interval():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    a = y + rng.normal(0, 0.6, 80)
    b = y + rng.normal(0, 1.2, 80)
    groups = np.arange(80).astype(str)
    d = auc_difference(y, a, b, groups, n_boot=400)
    assert d["difference"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert d["ci95"][0] < d["difference"] < d["ci95"][1]


def test_two_perfect_rules_get_an_interval_of_nonzero_width():
    y = np.repeat([0, 1], 10)
    d = auc_difference(y, y + 0.1, y + 0.2, np.arange(20).astype(str), n_boot=100)
    assert d["difference"] == 0.0 and d["ci95"][0] < 0 < d["ci95"][1]
    assert d["method"].startswith("MOVER")


def _audit(n_patients: int, study_better: bool, seed: int = 0) -> pd.DataFrame:
    """Synthetic audit slices: 8 slices per patient, half the patients with a bleed over slices 2-5."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_patients):
        labels = [0] * 8 if k % 2 else [0, 0, 1, 1, 1, 1, 0, 0]
        f = _series(labels, f"S{k}", f"P{k}", start=k)
        base = np.where(f["label"] == 1, 0.6, 0.4) + rng.normal(0, 0.25, 8)
        f["probability"] = np.clip(base, 0.001, 0.999)
        better = np.where(f["label"] == 1, 0.8, 0.2) + rng.normal(0, 0.1, 8)
        f["probability_study"] = np.clip(better if study_better else base, 0.001, 0.999)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def test_a_clearly_better_study_model_is_called_better_and_equal_rules_within_noise():
    op = {"threshold": 0.5, "patient_threshold": 0.7}
    better = aggregation_section(_audit(40, True), op, op, n_boot=300)
    d = better["slice_level"]["difference"]["auc"]
    assert d["ci95"][0] > 0 and "the study model is better" in better["verdict"][3]
    # the reported AUCs are scikit-learn's on the same slices
    s = _audit(40, True)
    assert better["slice_level"]["study_model"]["auc"] == pytest.approx(roc_auc_score(s["label"], s["probability_study"]))
    same = aggregation_section(_audit(40, False), op, op, n_boot=300)
    for level in ("patient_level", "slice_level"):
        for m in ("auc", "sensitivity", "specificity"):
            e = same[level]["difference"][m]
            assert e["difference"] == 0.0 and e["ci95"][0] <= 0 <= e["ci95"][1] and e["ci95"][1] > e["ci95"][0]
    assert all("within noise" in v for v in same["verdict"])
    assert same["patients"] == 40 and same["slices"] == 320
