"""brain_audit.dataset.series: z order within a series, the complete-series check, packing and unpacking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_audit.dataset.series import complete_series, order_series, pack_series, unpack_series


def _table() -> pd.DataFrame:
    # two series interleaved and shuffled; z not uniform, one tie in series B broken by image ID
    rows = [
        ("ID_a3", "A", 12.5, 1), ("ID_b2", "B", -3.0, 0), ("ID_a1", "A", -7.0, 0), ("ID_b9", "B", 4.0, 1),
        ("ID_a2", "A", 0.0, 1), ("ID_b1", "B", 4.0, 0), ("ID_a4", "A", 40.0, 0),
    ]
    return pd.DataFrame(rows, columns=["image_id", "series_id", "z", "any"]).set_index("image_id")


def test_slices_are_ordered_by_z_within_their_series_and_ties_by_id():
    out = order_series(_table())
    # by hand: A: a1 (-7), a2 (0), a3 (12.5), a4 (40); B: b2 (-3), then the tie at z 4: b1 before b9
    assert out.index.tolist() == ["ID_a1", "ID_a2", "ID_a3", "ID_a4", "ID_b2", "ID_b1", "ID_b9"]
    assert out["position"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert out["length"].tolist() == [4, 4, 4, 4, 3, 3, 3]


def test_the_order_does_not_depend_on_the_row_order():
    t = _table()
    for seed in range(3):
        shuffled = t.sample(frac=1.0, random_state=seed)
        assert order_series(shuffled).index.tolist() == order_series(t).index.tolist()


def test_a_slice_without_a_finite_z_is_refused_by_id():
    t = _table()
    t.loc["ID_b9", "z"] = np.nan
    with pytest.raises(ValueError, match="`z` must be finite for every slice. Got nan for ID_b9 instead."):
        order_series(t)


def test_pack_puts_each_feature_at_its_series_and_position_and_unpack_inverts_it():
    t = _table()
    features = np.arange(len(t) * 2, dtype=np.float32).reshape(len(t), 2)  # row i: (2i, 2i + 1)
    pack = pack_series(t, features, ["any"])
    assert pack.series.tolist() == ["A", "B"]
    assert pack.x.shape == (2, 4, 2) and pack.y.shape == (2, 4, 1)
    row = {i: k for k, i in enumerate(t.index)}
    expected_ids = [["ID_a1", "ID_a2", "ID_a3", "ID_a4"], ["ID_b2", "ID_b1", "ID_b9", ""]]
    assert pack.image_ids.tolist() == expected_ids
    assert pack.mask.tolist() == [[True] * 4, [True, True, True, False]]
    for s in range(2):
        for k, image_id in enumerate(expected_ids[s]):
            if image_id:
                assert pack.x[s, k].tolist() == features[row[image_id]].tolist()
                assert pack.y[s, k, 0] == t.loc[image_id, "any"]
    assert pack.x[1, 3].tolist() == [0.0, 0.0] and pack.y[1, 3, 0] == 0.0  # padding is zeros
    back = unpack_series(pack.x, pack)
    np.testing.assert_array_equal(back, features)


def test_pack_refuses_features_of_another_length():
    with pytest.raises(ValueError, match=r"`features` must be \(N, D\) with N = 7"):
        pack_series(_table(), np.zeros((6, 2)))


def test_complete_series_are_those_the_cache_holds_whole():
    index = pd.DataFrame({"series_id": ["A"] * 4 + ["B"] * 3 + ["C"] * 2},
                         index=[f"ID_{k}" for k in range(9)])
    cached = index.drop(index=["ID_5"])  # one slice of B missing
    assert complete_series(cached, index).tolist() == ["A", "C"]
    assert complete_series(index, index).tolist() == ["A", "B", "C"]
