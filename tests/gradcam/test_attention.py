"""brain_audit.gradcam.attention: where a map falls, against masks and maps drawn by hand; profile_cached against
audit_batch run on the whole batch at once."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from brain_audit.gradcam.attention import (
    BONE_FOCUS_SHARE,
    FLAGS,
    attention_profile,
    audit_batch,
    mimic_presence,
    profile_cached,
    profile_columns,
)
from brain_audit.gradcam.maps import grad_cam
from support.cam_models import hu_gate_model
from support.fixed_cache import FixedCache
from support.heads import SIDE, head_slice


# ----------------------------------------------------------------------------- attention profile
def _strip_masks(n: int = 40) -> dict[str, np.ndarray]:
    """Vertical strips of a (n, n) image: columns 0-9 outside, 10-14 skull, 15-34 intracranial (with a
    2 x 2 calcification at rows 5-6, columns 20-21 and a 1-pixel coil at row 30, column 30), 35-39 scalp."""
    m = {k: np.zeros((n, n), dtype=bool) for k in ("head", "skull", "intracranial", "calcification", "metal")}
    m["head"][:, 10:] = True
    m["skull"][:, 10:15] = True
    m["intracranial"][:, 15:35] = True
    m["calcification"][5:7, 20:22] = True
    m["metal"][30, 30] = True
    return m


class TestAttentionProfile:
    def test_energy_shares_by_hand_and_they_sum_to_one(self):
        masks = _strip_masks()
        cam = np.zeros((40, 40), dtype=np.float32)
        cam[:, 0:10] = 1.0  # outside: 400 units
        cam[:, 10:15] = 2.0  # skull: 400 units
        cam[20, 25] = 200.0  # intracranial peak: 20 * 20 ones below + 200
        cam[:, 15:35] += 1.0
        cam[5:7, 20:22] = 0.0  # nothing on the calcification
        total = 400 + 400 + (800 - 4 + 200)
        prof = attention_profile(cam, masks=masks)
        assert prof["energy_outside_head"] == pytest.approx(400 / total)
        assert prof["energy_skull"] == pytest.approx(400 / total)
        assert prof["energy_metal"] == pytest.approx(1 / total)
        assert prof["energy_intracranial"] == pytest.approx((800 - 4 - 1 + 200) / total)
        assert prof["energy_calcification"] == 0.0 and prof["energy_scalp"] == 0.0
        shares = [v for k, v in prof.items() if k.startswith("energy_")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-12)
        assert sum(v for k, v in prof.items() if k.startswith("area_")) == pytest.approx(1.0)
        assert prof["area_skull"] == pytest.approx(200 / 1600)
        assert (prof["peak_y"], prof["peak_x"], prof["peak_region"]) == (20, 25, "intracranial")
        assert prof["bone_focus"] is (400 / total >= BONE_FOCUS_SHARE)

    def test_pointing_game(self):
        masks = _strip_masks()
        cam = np.zeros((40, 40), dtype=np.float32)
        cam[20, 20] = 1.0
        cam[20, 21] = 1.0
        near = np.zeros((40, 40), dtype=bool)
        near[20, 31:34] = True  # 11 px from the peak at (20, 20)
        far = np.zeros((40, 40), dtype=bool)
        far[36:38, 36:38] = True  # sqrt(16^2 + 16^2) = 22.6 px
        p = attention_profile(cam, masks=masks, lesion_mask=near)
        assert p["pointing_hit"] is True and p["pointing_distance_px"] == pytest.approx(11.0)
        assert p["lesion_energy"] == 0.0 and p["lesion_area"] == pytest.approx(3 / 1600)
        p = attention_profile(cam, masks=masks, lesion_mask=far)
        assert p["pointing_hit"] is False and p["pointing_distance_px"] == pytest.approx(np.hypot(16, 16))
        on = np.zeros((40, 40), dtype=bool)
        on[20, 21] = True
        assert attention_profile(cam, masks=masks, lesion_mask=on)["lesion_energy"] == pytest.approx(0.5)

    def test_flags(self):
        masks = _strip_masks()
        skull_map = np.zeros((40, 40), np.float32)
        skull_map[:, 10:15] = 1.0
        p = attention_profile(skull_map, masks=masks, probability=0.9, label=1)
        assert p["bone_focus"] and p["right_for_wrong_reason"] and not p["device_focus"]
        coil_map = np.zeros((40, 40), np.float32)
        coil_map[28, 30] = 1.0  # 2 px from the coil, and 23 px from the calcification
        coil_map[:, 15:35] += 0.01
        p = attention_profile(coil_map, masks=masks, probability=0.2, label=1, hit_radius_px=5)
        assert p["device_focus"] and not p["calcification_focus"] and not p["bone_focus"]
        assert p["right_for_wrong_reason"] is False  # a miss is not "right"
        calc_map = np.zeros((40, 40), np.float32)
        calc_map[8, 21] = 1.0
        assert attention_profile(calc_map, masks=masks, hit_radius_px=5)["calcification_focus"]
        outside = np.zeros((40, 40), np.float32)
        outside[:, :10] = 1.0
        p = attention_profile(outside, masks=masks)
        assert p["outside_head_focus"] and p["right_for_wrong_reason"] is None
        assert set(FLAGS) <= set(p)

    @given(
        cam=hnp.arrays(np.float32, (6, 6), elements=st.floats(0, 1e3, width=32)),
        labels=hnp.arrays(np.int8, (12, 12), elements=st.integers(0, 7)),
    )
    @settings(max_examples=60, deadline=None)
    def test_shares_of_any_map_over_any_masks_sum_to_one(self, cam, labels):
        keys = ("head", "skull", "intracranial", "calcification", "metal", "head_holder", "scalp")
        masks = {k: labels == i for i, k in enumerate(keys)}  # label 7: in no mask -> "other"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = attention_profile(cam, masks=masks)
        shares = np.array([v for k, v in p.items() if k.startswith("energy_")])
        assert (shares >= 0).all() and (shares <= 1 + 1e-12).all()
        if cam.max() > 0 and p["peak_region"] != "none":
            assert shares.sum() == pytest.approx(1.0, abs=1e-9)
        else:
            assert shares.sum() == 0.0

    def test_zero_map_warns_and_gives_zero_shares(self):
        with pytest.warns(RuntimeWarning, match="zero everywhere"):
            p = attention_profile(np.zeros((10, 10)), masks=_strip_masks(), probability=0.9, label=1)
        assert all(p[k] == 0.0 for k in p if k.startswith("energy_"))
        assert not any(p[f] for f in FLAGS) and p["peak_region"] == "none"

    def test_coarse_map_is_resized_to_the_masks(self):
        cam = np.zeros((4, 4), np.float32)
        cam[:, 0] = 1.0  # left quarter of a 40 px image: outside the head (bilinear spreads a little)
        p = attention_profile(cam, masks=_strip_masks())
        assert p["energy_outside_head"] > 0.6 and p["outside_head_focus"]

    def test_regions_from_hu(self):
        yy, xx = np.mgrid[0:64, 0:64]
        r = np.hypot(yy - 32, xx - 32)
        hu = np.where(r < 28, 30.0, -1000.0) + np.where((r >= 23) & (r < 26), 770.0, 0.0)
        cam = (r < 10).astype(np.float32)
        p = attention_profile(cam, hu=hu)
        assert p["energy_intracranial"] == pytest.approx(1.0)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="`masks` or `hu` must be given"):
            attention_profile(np.ones((4, 4)))
        with pytest.raises(ValueError, match=r"`lesion_mask` must have the masks' shape \(40, 40\)"):
            attention_profile(np.ones((4, 4)), masks=_strip_masks(), lesion_mask=np.ones((5, 5), bool))
        with pytest.warns(RuntimeWarning, match="lesion mask is empty"):
            attention_profile(np.ones((4, 4)), masks=_strip_masks(), lesion_mask=np.zeros((40, 40), bool))


def test_mimic_presence():
    masks = _strip_masks()
    assert mimic_presence(masks) == {"metal": True, "calcification": True, "head_holder": False}
    assert mimic_presence(masks, min_pixels=2)["metal"] is False


def test_audit_batch_table(effnet):
    model, batch = effnet
    table, maps = audit_batch(model, batch, labels=[1, 0, None, 0], image_ids=["a", "b", "c", "d"])
    assert list(table.columns) == ["image_id", "probability", "label"] + profile_columns() + [
        "has_metal", "has_calcification", "has_head_holder"]
    np.testing.assert_allclose(table["probability"], model.predict(batch[..., None], verbose=0)[:, 0], atol=1e-5)
    np.testing.assert_allclose(maps, grad_cam(model, batch), atol=1e-6)
    assert table["has_metal"].tolist() == [False, False, True, False]  # the 2,500 HU "coil" of slice 2
    np.testing.assert_allclose(table[[c for c in table.columns if c.startswith("energy_")]].sum(axis=1), 1.0)
    assert table["right_for_wrong_reason"].isna().tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match=r"`labels` must hold one entry per slice \(4\). Got 2 instead"):
        audit_batch(model, batch, labels=[1, 0])


def test_profile_cached_in_chunks_equals_audit_batch_on_the_whole_batch():
    """Seven cached slices profiled three at a time give the rows audit_batch gives on all seven at once,
    with the caller's probabilities, lesion masks scored on label-1 slices only, one on_batch call per chunk."""
    square = np.zeros((SIDE, SIDE), dtype=bool)
    square[40:48, 28:36] = True  # all the model sees: its map lies inside the square
    model = hu_gate_model(square)
    band = (slice(40, 48), slice(8, 56))
    drawings = [dict(), dict(brain_hu=70), dict(cy=24, inner=14, outer=20, scalp=22), dict(cx=30, brain_hu=50),
                dict(cy=18, inner=12, outer=15, scalp=17, band=band, band_hu=280), dict(cy=30, cx=35),
                dict(cy=18, inner=12, outer=15, scalp=17, band=band, band_hu=10)]
    hu = np.stack([head_slice(**kwargs)[0] for kwargs in drawings])
    ids = [f"ID_{k}" for k in (3, 0, 6, 1, 5, 2, 4)]
    cache = FixedCache(dict(zip(ids, hu)))
    labels = np.array([1, 0, 1, 0, 0, 1, 0])
    probabilities = np.array([0.9, 0.1, 0.8, 0.3, 0.2, 0.7, 0.6])
    lesions = {image_id: square for image_id in ids}  # a mask for every slice
    seen = []
    table = profile_cached(model, cache, ids, labels, probabilities, 0.5, lesions, batch_size=3,
                           on_batch=lambda t, h, m: seen.append((list(t["image_id"]), h, m)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no zero map among these
        ref, maps = audit_batch(model, hu.astype(np.float32), lesion_masks=[square if y else None for y in labels],
                                labels=labels, image_ids=ids, probabilities=probabilities, threshold=0.5)
    pd.testing.assert_frame_equal(table, ref)
    np.testing.assert_array_equal(table["probability"], probabilities)
    # by hand: all of a map lies in the square, so a label-1 slice scores 1; a label-0 slice is not scored
    nan = float("nan")
    assert table["lesion_energy"].tolist() == pytest.approx([1.0, nan, 1.0, nan, nan, 1.0, nan], nan_ok=True)
    assert [chunk for chunk, _, _ in seen] == [ids[0:3], ids[3:6], ids[6:7]]
    for k, (chunk, h, m) in enumerate(seen):
        assert h.shape == m.shape == (len(chunk), SIDE, SIDE) and h.dtype == np.float32
        np.testing.assert_array_equal(h, hu[3 * k : 3 * k + len(chunk)])
        np.testing.assert_allclose(m, maps[3 * k : 3 * k + len(chunk)], rtol=0, atol=1e-6)
    assert cache.reads == [ids[0:3], ids[3:6], ids[6:7]]
