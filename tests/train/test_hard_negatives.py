"""brain_audit.train.hard_negatives: which training negatives are hard, and why.

Expected values come from outside the code under test: head slices drawn with numpy whose regions are
known (tests/support/heads.py), and a model that sees only one square of the image, whose probability and
Grad-CAM map are written down by hand (tests/support/cam_models.py): the map is the positive HU inside
the square, so its share outside the intracranial space is that of the drawn regions under the square.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_audit.train.hard_negatives import HARD_NEGATIVE_COLUMNS, mine_hard_negatives
from support.cam_models import hu_gate_model, hu_gate_probability
from support.fixed_cache import FixedCache
from support.heads import SIDE, head_slice

SQUARE = np.zeros((SIDE, SIDE), dtype=bool)
SQUARE[40:48, 28:36] = True  # what the model sees
BAND = (slice(40, 48), slice(8, 56))  # under a small head: the square falls on it
BAR = 0.25  # a negative scored at or above this is a confident false positive
OFF_BRAIN = 0.5

#: image ID -> how its head is drawn; what lies under the square, and the probability by hand (weight 1, bias -2)
DRAWINGS = {
    # outside the head, p 0.137
    "ID_cushion": {"cy": 18, "inner": 12, "outer": 15, "scalp": 17, "band": BAND, "band_hu": 10},
    "ID_brain70": {"brain_hu": 70},  # brain only, p 0.288
    # head holder, p 0.915
    "ID_holder": {"cy": 18, "inner": 12, "outer": 15, "scalp": 17, "band": BAND, "band_hu": 280},
    "ID_brain30": {"brain_hu": 30},  # brain only, p 0.178
    "ID_skull": {"cy": 24, "inner": 14, "outer": 20, "scalp": 22},  # skull and scalp, no brain, p 0.990
}
DRAWN = {image_id: head_slice(**kwargs) for image_id, kwargs in DRAWINGS.items()}
SLICES = {image_id: hu for image_id, (hu, _) in DRAWN.items()}
IDS = list(SLICES)


def _drawn_off_brain_share(image_id: str) -> float:
    """Share of the map (positive HU under the square) outside the drawn brain."""
    hu, regions = DRAWN[image_id]
    energy = np.maximum(hu.astype(np.float64), 0.0) * SQUARE
    return 1.0 - energy[regions["intracranial"]].sum() / energy.sum()


def _mine(ids, max_profiled, cache=None, batch_size=2):
    return mine_hard_negatives(hu_gate_model(SQUARE), cache or FixedCache(SLICES), ids, output_index=0, threshold=0.5,
                               probability=BAR, off_brain_share=OFF_BRAIN, max_profiled=max_profiled,
                               batch_size=batch_size)


def _expected(rows: list[tuple[str, bool, bool]]) -> pd.DataFrame:
    """The hard-negative table, by hand: (image ID, confident false positive, attention off the brain)."""
    out = []
    for image_id, false_positive, off_brain in rows:
        p = hu_gate_probability(SLICES[image_id], SQUARE)
        reasons = [f"false positive p={p:.3f} >= {BAR}"] * false_positive
        # all the map off the brain: intracranial enrichment 0 (energy share 0 over a non-empty area)
        reasons += [(f"attention {_drawn_off_brain_share(image_id):.0%} outside the intracranial space "
                    "(intracranial enrichment 0.00 < 0.8)")] * off_brain
        out.append({"image_id": image_id, "probability": p, "reason": "; ".join(reasons)})
    return pd.DataFrame(out, columns=list(HARD_NEGATIVE_COLUMNS))


def test_the_hand_values_the_table_is_checked_against():
    p = {i: hu_gate_probability(hu, SQUARE) for i, hu in SLICES.items()}
    assert [i for i in IDS if p[i] >= BAR] == ["ID_brain70", "ID_holder", "ID_skull"]
    assert {i: _drawn_off_brain_share(i) for i in IDS} == {
        "ID_cushion": 1.0, "ID_brain70": 0.0, "ID_holder": 1.0, "ID_brain30": 0.0, "ID_skull": 1.0}


def test_reasons_by_hand_in_the_order_of_the_input():
    table = _mine(IDS, max_profiled=len(IDS))
    expected = _expected([("ID_cushion", False, True), ("ID_brain70", True, False), ("ID_holder", True, True),
                          ("ID_skull", True, True)])
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=0, atol=1e-6)
    assert table.attrs["scored"] == 5
    # another input order, the same rows in that order
    again = _mine(IDS[::-1], max_profiled=len(IDS))
    pd.testing.assert_frame_equal(again, expected.iloc[::-1].reset_index(drop=True), check_exact=False, rtol=0,
                                  atol=1e-6)


def test_only_the_most_suspicious_are_profiled():
    """Grad-CAM runs on the two highest probabilities (skull, holder): the cushion's off-brain attention goes
    unseen, and the confident false positives are all still listed."""
    cache = FixedCache(SLICES)
    table = _mine(IDS, max_profiled=2, cache=cache, batch_size=32)
    expected = _expected([("ID_brain70", True, False), ("ID_holder", True, True), ("ID_skull", True, True)])
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=0, atol=1e-6)
    assert cache.reads[-1] == ["ID_skull", "ID_holder"]  # the profiled batch: most suspicious first
    assert table.attrs["scored"] == 5


def test_no_negatives():
    table = _mine([], max_profiled=4)
    assert list(table.columns) == list(HARD_NEGATIVE_COLUMNS) and len(table) == 0
    assert table.attrs["scored"] == 0


@pytest.mark.parametrize("bar", [0.1, 0.95])
def test_the_bar_decides_the_false_positives(bar):
    table = mine_hard_negatives(hu_gate_model(SQUARE), FixedCache(SLICES), IDS, output_index=0, threshold=0.5,
                                probability=bar, off_brain_share=1.01, max_profiled=len(IDS))
    p = {i: hu_gate_probability(hu, SQUARE) for i, hu in SLICES.items()}
    assert list(table["image_id"]) == [i for i in IDS if p[i] >= bar]
    assert all(r.startswith("false positive") and "attention" not in r for r in table["reason"])


def test_attention_off_the_brain_no_more_than_chance_is_not_mined(monkeypatch):
    """The share alone is geometry: the intracranial space is under half of a slice, so a map spread like a
    uniform one has most of its energy outside it. Mined only below chance (enrichment < 0.8) or where the
    slice has no intracranial area (enrichment undefined)."""
    import brain_audit.train.hard_negatives as hn

    profiles = pd.DataFrame({
        "image_id": ["ID_uniform", "ID_off", "ID_vertex", "ID_zero"],
        "peak_region": ["flat", "skull", "scalp", "none"],
        "energy_intracranial": [0.35, 0.10, 0.0, 0.0],  # 65 %, 90 %, 100 % and (zero map) 100 % off the brain
        "enrichment_intracranial": [1.0, 0.10 / 0.35, float("nan"), 0.0],
    })
    monkeypatch.setattr(hn, "profile_cached", lambda *args, **kwargs: profiles)
    monkeypatch.setattr(hn, "predict_ids", lambda model, cache, ids, index: np.full(len(ids), 0.1))
    table = hn.mine_hard_negatives(None, None, list(profiles["image_id"]), output_index=0, threshold=0.5,
                                   probability=0.9, off_brain_share=0.5, max_profiled=4)
    assert table["image_id"].tolist() == ["ID_off", "ID_vertex"]
    assert table["reason"].tolist() == [
        "attention 90% outside the intracranial space (intracranial enrichment 0.29 < 0.8)",
        "attention 100% outside the intracranial space (no intracranial area on the slice)",
    ]
