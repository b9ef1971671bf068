"""brain_audit.gradcam.attention: where a map falls, against masks and maps drawn by hand; chance (a uniform map)
against the regions of phantom slices; the pointing game's baselines counted by hand and by a k-d tree;
profile_cached against audit_batch run on the whole batch at once."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from brain_audit.gradcam.attention import (
    BONE_FOCUS_ENRICHMENT,
    FLAGS,
    HIT_BASELINES,
    attention_profile,
    audit_batch,
    chance_flags,
    mimic_presence,
    profile_cached,
    profile_columns,
)
from brain_audit.gradcam.maps import grad_cam
from support.cam_models import hu_gate_model
from support.fixed_cache import FixedCache
from support.heads import SIDE, head_slice, masks20


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
        # enrichment = energy share / area share; the head is columns 10-39 (1200 px, energy 1396 of 1796)
        assert prof["enrichment_skull"] == pytest.approx((400 / total) / (200 / 1600))
        assert prof["enrichment_outside_head"] == pytest.approx((400 / total) / (400 / 1600))
        assert prof["enrichment_calcification"] == 0.0 and np.isnan(prof["enrichment_head_holder"])
        assert prof["enrichment_head"] == pytest.approx((1396 / total) / (1200 / 1600))
        assert prof["enrichment_off_head"] == pytest.approx(prof["enrichment_outside_head"])
        assert prof["enrichment_skull_in_head"] == pytest.approx((400 / 1396) / (200 / 1200))  # 1.72
        assert prof["bone_focus"] is False and (400 / 1396) / (200 / 1200) < BONE_FOCUS_ENRICHMENT
        assert prof["correct"] is None and prof["right_for_wrong_reason"] is None

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


# ----------------------------------------------------------------------------- flags relative to chance
def _phantom_slices() -> list[tuple[dict[str, np.ndarray], np.ndarray, float]]:
    """(region masks, lesion mask, pixel mm) of phantom slices with a bleed: the regions both as region_masks
    finds them from HU and as the phantom's truth draws them."""
    from brain_audit.phantom.config import PhantomConfig
    from brain_audit.phantom.render import render_slice
    from brain_audit.rsna import SUBTYPES
    from brain_audit.skull import region_masks

    cfg = PhantomConfig(patients=2, slices_per_patient=12, size=128, prevalence=1.0, seed=3)
    out = []
    for patient, k in ((0, 2), (0, 6), (0, 10), (1, 10)):
        hu, truth = render_slice(cfg, patient, k)
        lesion = np.logical_or.reduce([truth[s] for s in SUBTYPES if s in truth])
        assert lesion.any()
        out += [(region_masks(hu), lesion, cfg.pixel_spacing_mm), (truth, lesion, cfg.pixel_spacing_mm)]
    return out


class TestChance:
    @pytest.fixture(scope="class")
    def slices(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # skull-base slices may warn about an open ring
            return _phantom_slices()

    def test_uniform_and_head_constant_maps_raise_no_flag_on_phantom_slices(self, slices):
        for masks, lesion, mm in slices:
            head = masks["head"]
            for cam in (np.ones((7, 7), np.float32), np.ones((128, 128), np.float32), head.astype(np.float32)):
                p = attention_profile(cam, masks=masks, lesion_mask=lesion, probability=0.9, label=1, pixel_mm=mm)
                assert [f for f in FLAGS if p[f]] == []
                assert p["correct"] is True
            # the field of view alone tripped the old share thresholds (outside >= 0.25, intracranial < 0.5)
            assert p["area_outside_head"] + p["area_head_holder"] >= 0.25 and p["area_intracranial"] < 0.5
            flat = attention_profile(np.full((7, 7), 3.0), masks=masks, lesion_mask=lesion, pixel_mm=mm)
            assert flat["peak_region"] == "flat" and flat["pointing_hit"] is False
            enr = [flat[f"enrichment_{n}"] for n in ("skull", "intracranial", "outside_head", "head", "off_head",
                                                     "skull_in_head")]
            assert enr == pytest.approx([1.0] * 6)
            assert flat["lesion_enrichment"] == pytest.approx(1.0)
            assert flat["lesion_energy"] == pytest.approx(flat["baseline_energy_uniform"])

    def test_chance_flags_from_area_columns(self, slices):
        rows = [attention_profile(np.ones((7, 7)), masks=m, lesion_mask=les, probability=pr, label=1, pixel_mm=mm)
                for (m, les, mm), pr in zip(slices, [0.9, 0.2] * 4)]
        table = pd.DataFrame(rows)
        chance = chance_flags(table)
        assert list(chance.columns) == list(FLAGS)
        assert not chance[list(FLAGS[:4])].to_numpy().any()
        assert chance["right_for_wrong_reason"].tolist() == [False] * 8
        table["correct"] = table["correct"].astype(object)
        table.loc[0, "correct"] = None  # an unlabelled slice
        assert chance_flags(table)["right_for_wrong_reason"].tolist() == [None] + [False] * 7
        # a slice without intracranial area: the rule cannot fire (NaN enrichment), even on a correct call
        odd = table.iloc[[1]].copy()
        odd["area_scalp"] = odd["area_scalp"] + odd["area_intracranial"]
        odd["area_intracranial"] = 0.0
        odd["correct"] = True
        assert chance_flags(odd)["right_for_wrong_reason"].tolist() == [False]
        with pytest.raises(ValueError, match="`table` must have the area columns"):
            chance_flags(table.drop(columns="area_skull"))

    def test_map_on_the_skull_raises_bone_focus_on_a_phantom_slice(self, slices):
        masks, lesion, mm = slices[1]
        skull = masks["skull"].astype(np.float32)
        p = attention_profile(skull, masks=masks, lesion_mask=lesion, probability=0.9, label=1, pixel_mm=mm)
        assert p["bone_focus"] and p["right_for_wrong_reason"] and not p["outside_head_focus"]
        assert p["enrichment_skull"] == pytest.approx(1.0 / p["area_skull"], rel=1e-6)
        assert p["enrichment_intracranial"] == 0.0

    def test_device_mask_is_preferred_to_metal(self):
        masks = _strip_masks()
        cam = np.zeros((40, 40), np.float32)
        cam[10, 25] = 1.0  # 20 px from the coil at (30, 30); on a catheter at row 10
        assert not attention_profile(cam, masks=masks, hit_radius_px=3)["device_focus"]
        masks["device"] = masks["metal"].copy()
        masks["device"][10, 20:30] = True  # a polymer catheter: a device, not metal
        assert attention_profile(cam, masks=masks, hit_radius_px=3)["device_focus"]

    def test_a_plateau_hits_only_when_all_of_it_is_within_the_tolerance(self):
        masks = _strip_masks()
        head = masks["head"].astype(np.float32)  # argmax would be (0, 10), 10 px from nothing in particular
        p = attention_profile(head, masks=masks, hit_radius_px=5)
        assert p["peak_region"] == "skull" and not p["device_focus"] and not p["calcification_focus"]
        assert not any(p[f] for f in FLAGS if f != "right_for_wrong_reason")
        plateau = np.zeros((40, 40), np.float32)
        plateau[29:31, 30] = 1.0  # both pixels within 1 px of the coil at (30, 30)
        assert attention_profile(plateau, masks=masks, hit_radius_px=1)["device_focus"]
        plateau[5, 5] = 1.0  # a third tied pixel far away
        assert not attention_profile(plateau, masks=masks, hit_radius_px=1)["device_focus"]


class TestPointingBaselines:
    def test_hand_counted_baselines_on_a_20_by_20_image(self):
        lesion = np.zeros((20, 20), dtype=bool)
        lesion[4:6, 4:6] = True  # a 2 x 2 lesion in the intracranial corner
        cam = np.zeros((20, 20), np.float32)
        cam[4, 6], cam[5, 5], cam[15, 15] = 2.0, 1.0, 1.0  # peak 1 px right of the lesion
        # tolerance 2 mm at 2 mm per pixel = 1 px: the lesion and its 8 edge neighbours (diagonals are 1.41 px)
        # = 12 px, all in the head; 8 of them intracranial ((4, 3), (5, 3), (3, 4), (3, 5) are skull)
        p = attention_profile(cam, masks=masks20(), lesion_mask=lesion, pixel_mm=2.0, hit_radius_mm=2.0)
        assert p["hit_radius_px"] == 1.0
        assert p["pointing_hit"] is True and p["pointing_distance_px"] == 1.0
        assert [p[b] for b in HIT_BASELINES] == pytest.approx([12 / 400, 0.0, 12 / 256, 8 / 144])
        assert p["lesion_energy"] == pytest.approx(1 / 4)
        assert p["lesion_area"] == p["baseline_energy_uniform"] == pytest.approx(4 / 400)
        assert p["lesion_enrichment"] == pytest.approx((1 / 4) / (4 / 400))
        assert p["baseline_energy_head"] == pytest.approx(4 / 256)
        assert p["baseline_energy_intracranial"] == pytest.approx(4 / 144)
        # the centre pixel (10, 10) is sqrt(50) = 7.07 px from the lesion's nearest pixel (5, 5)
        for radius, hit in ((7.06, 0.0), (7.08, 1.0)):
            centre = attention_profile(cam, masks=masks20(), lesion_mask=lesion, hit_radius_px=radius)
            assert centre["baseline_hit_centre"] == hit

    def test_uniform_baseline_against_a_kd_tree_on_phantom_slices(self):
        from scipy.spatial import cKDTree

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            slices = _phantom_slices()[:4]
        for masks, lesion, mm in slices:
            p = attention_profile(np.ones((7, 7)), masks=masks, lesion_mask=lesion, pixel_mm=mm)
            assert p["hit_radius_px"] == pytest.approx(15.0 / mm)
            grid = np.argwhere(np.ones(lesion.shape, dtype=bool))
            near = cKDTree(np.argwhere(lesion)).query(grid)[0].reshape(lesion.shape) <= 15.0 / mm
            head = masks["head"] if "outside_head" not in masks else ~(masks["outside_head"] | masks["head_holder"])
            assert p["baseline_hit_uniform"] == pytest.approx(near.mean())
            assert p["baseline_hit_head"] == pytest.approx(near[head].mean())
            assert p["baseline_hit_centre"] == float(near[64, 64])

    def test_tolerance_arguments(self):
        lesion = np.zeros((20, 20), dtype=bool)
        lesion[4:6, 4:6] = True
        with pytest.raises(ValueError, match="`hit_radius_px` must be None when `pixel_mm` is given. Got 3 instead"):
            attention_profile(np.ones((4, 4)), masks=masks20(), hit_radius_px=3, pixel_mm=0.5)
        with pytest.raises(ValueError, match=r"`pixel_mm` must be a finite number > 0. Got 0.0 instead"):
            attention_profile(np.ones((4, 4)), masks=masks20(), pixel_mm=0.0)
        with pytest.raises(ValueError, match=r"`hit_radius_px` must be >= 0. Got -1 instead"):
            attention_profile(np.ones((4, 4)), masks=masks20(), hit_radius_px=-1)
        assert attention_profile(np.ones((4, 4)), masks=masks20())["hit_radius_px"] == 15.0
        with pytest.warns(RuntimeWarning, match="lesion mask is empty"):
            p = attention_profile(np.ones((4, 4)), masks=masks20(), lesion_mask=np.zeros((20, 20), bool))
        assert np.isnan([p[b] for b in HIT_BASELINES + ("lesion_energy", "lesion_enrichment")]).all()
        assert p["pointing_hit"] is False and p["lesion_area"] == 0.0


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
    # the audits' maps by default: HiResCAM at the fine layer (128 px: block3b_add, 16 x 16)
    expected = grad_cam(model, batch, layer="efficientnetb0/block3b_add", method="hirescam")
    np.testing.assert_allclose(maps, expected, atol=1e-6)
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
    drawings = [{}, {"brain_hu": 70}, {"cy": 24, "inner": 14, "outer": 20, "scalp": 22}, {"cx": 30, "brain_hu": 50},
                {"cy": 18, "inner": 12, "outer": 15, "scalp": 17, "band": band, "band_hu": 280}, {"cy": 30, "cx": 35},
                {"cy": 18, "inner": 12, "outer": 15, "scalp": 17, "band": band, "band_hu": 10}]
    hu = np.stack([head_slice(**kwargs)[0] for kwargs in drawings])
    ids = [f"ID_{k}" for k in (3, 0, 6, 1, 5, 2, 4)]
    cache = FixedCache(dict(zip(ids, hu)))
    labels = np.array([1, 0, 1, 0, 0, 1, 0])
    probabilities = np.array([0.9, 0.1, 0.8, 0.3, 0.2, 0.7, 0.6])
    lesions = {image_id: square for image_id in ids}  # a mask for every slice
    seen = []
    table = profile_cached(model, cache, ids, labels, probabilities, 0.5, lesions, batch_size=3,
                           on_batch=lambda t, h, m: seen.append((list(t["image_id"]), h, m)), pixel_mm=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no zero map among these
        ref, maps = audit_batch(model, hu.astype(np.float32), lesion_masks=[square if y else None for y in labels],
                                labels=labels, image_ids=ids, probabilities=probabilities, threshold=0.5,
                                pixel_mm=[4.0] * len(ids))
    pd.testing.assert_frame_equal(table, ref)
    assert (table["hit_radius_px"] == 15.0 / 4.0).all()  # the default 15 mm at 4 mm per pixel
    np.testing.assert_array_equal(table["probability"], probabilities)
    # by hand: all of a map lies in the square, so a label-1 slice scores 1; a label-0 slice is not scored
    nan = float("nan")
    assert table["lesion_energy"].tolist() == pytest.approx([1.0, nan, 1.0, nan, nan, 1.0, nan], nan_ok=True)
    # the square is 64 of 64 x 64 px: a map uniform over the image puts 1 / 64 of its energy on it
    assert table["baseline_energy_uniform"].tolist() == pytest.approx([1 / 64, nan, 1 / 64, nan, nan, 1 / 64, nan],
                                                                      nan_ok=True)
    assert [chunk for chunk, _, _ in seen] == [ids[0:3], ids[3:6], ids[6:7]]
    for k, (chunk, h, m) in enumerate(seen):
        assert h.shape == m.shape == (len(chunk), SIDE, SIDE) and h.dtype == np.float32
        np.testing.assert_array_equal(h, hu[3 * k : 3 * k + len(chunk)])
        np.testing.assert_allclose(m, maps[3 * k : 3 * k + len(chunk)], rtol=0, atol=1e-6)
    assert cache.reads == [ids[0:3], ids[3:6], ids[6:7]]


class _ContextCache:
    """A stand-in for a cache built with context 1: image ID -> (below, slice, above); records the context asked."""

    def __init__(self, stacks):
        self.stacks, self.asked = stacks, []

    def hu_input(self, image_ids, context=0, *, dtype=np.float32):
        self.asked.append(context)
        return np.stack([np.stack(self.stacks[i], axis=-1) for i in image_ids]).astype(dtype)


def test_profile_cached_gives_a_2_5d_model_its_neighbours_and_on_batch_the_slice_itself():
    """A 3-channel model that sees channel 0 (the slice below) inside a square: its map is that neighbour's HU in the
    square over its maximum (by hand: the 280 HU band on rows 40-43 is 1, the 30 HU brain on rows 44-47 is 30 / 280),
    not the slice's own uniform brain; ``on_batch`` gets the slice itself."""
    keras = pytest.importorskip("keras")
    from support.cam_models import Gate

    square = np.zeros((SIDE, SIDE), dtype=bool)
    square[40:48, 28:36] = True
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Lambda(lambda t: t[..., :1])(inp)
    x = Gate(square, name="gate")(x)
    x = keras.layers.Conv2D(1, 1, activation="relu", use_bias=False, name="target")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="head")(x))
    model.get_layer("target").set_weights([np.ones((1, 1, 1, 1), "float32")])
    model.get_layer("head").set_weights([np.array([[1.0]], "float32"), np.array([-2.0], "float32")])
    below = head_slice(band=(slice(40, 44), slice(28, 36)), band_hu=280)[0]
    centre, above = head_slice()[0], head_slice(brain_hu=50)[0]
    cache = _ContextCache({"ID_a": (below, centre, above)})
    seen = []
    table = profile_cached(model, cache, ["ID_a"], np.array([0]), np.array([0.3]), 0.5,
                           on_batch=lambda t, h, m: seen.append((h, m)), layer="target", method="gradcam")
    assert cache.asked == [1] and len(table) == 1
    (h, m), = seen
    np.testing.assert_array_equal(h[0], centre)
    expect = np.zeros((SIDE, SIDE))
    expect[40:44, 28:36] = 1.0
    expect[44:48, 28:36] = 30.0 / 280.0
    np.testing.assert_allclose(m[0], expect, rtol=0, atol=1e-5)
