"""brain_audit.skull on hand-built HU slices whose regions are known by construction.

Each test slice is drawn here with numpy from circles and bands of stated HU (air -1000, scalp 40,
skull 800, brain 30, calcification 250, coil 3000, head holder 280), so the expected masks are the
shapes drawn, not anything computed by the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from brain_audit.skull import DISJOINT_ORDER, REGION_KEYS, disjoint_regions, region_masks

N = 128
YY, XX = np.mgrid[0:N, 0:N]
CY, CX = 60, 64


def _disc(r: float, cy: float = CY, cx: float = CX) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _slice(*, gap_deg: float = 0.0, calc: bool = True, coil: bool = True, holder: bool = True, seed: int = 0):
    """A head: scalp to r=50, skull r 43-48 (with an optional gap above), brain inside, foci, holder below."""
    rng = np.random.default_rng(seed)
    hu = np.full((N, N), -1000.0, dtype=np.float32)
    hu[_disc(50)] = 40.0
    ring = _disc(48) & ~_disc(43)
    if gap_deg:
        angle = np.degrees(np.arctan2(-(YY - CY), XX - CX))  # 90 = straight up
        ring &= np.abs(angle - 90.0) > gap_deg / 2
    hu[ring] = 800.0
    brain = _disc(43)
    hu[brain] = 30.0
    truth = {"skull": ring, "intracranial": brain, "head": _disc(50)}
    truth["calcification"] = _disc(1.6, CY + 5, CX + 3) if calc else np.zeros_like(brain)
    hu[truth["calcification"]] = 250.0
    truth["metal"] = _disc(1.6, CY - 15, CX - 12) if coil else np.zeros_like(brain)
    hu[truth["metal"]] = 3000.0
    band = (YY >= 114) & (YY <= 118) & (XX >= 20) & (XX <= 108) if holder else np.zeros_like(brain)
    hu[band] = 280.0
    truth["head_holder"] = band
    hu += rng.normal(0.0, 5.0, hu.shape).astype(np.float32)
    return hu, truth


class TestRegionMasks:
    def test_closed_skull_regions_match_the_drawing(self):
        hu, truth = _slice()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            m = region_masks(hu)
        assert set(m) == set(REGION_KEYS)
        assert all(v.dtype == bool and v.shape == (N, N) for v in m.values())
        assert _dice(m["skull"], truth["skull"]) > 0.97
        assert _dice(m["intracranial"], truth["intracranial"]) > 0.97
        assert _dice(m["head"], truth["head"]) > 0.97
        np.testing.assert_array_equal(m["metal"], truth["metal"])
        np.testing.assert_array_equal(m["calcification"], truth["calcification"])
        assert _dice(m["head_holder"], truth["head_holder"]) > 0.95
        np.testing.assert_array_equal(m["outside_head"], ~m["head"])
        # the coil and the calcification lie inside the intracranial space, never in the skull
        assert (m["intracranial"] & truth["metal"]).sum() == truth["metal"].sum()
        assert not (m["skull"] & (truth["metal"] | truth["calcification"])).any()

    def test_blood_is_not_calcification_and_a_large_dense_area_is_not_small(self):
        hu, _ = _slice(calc=False, coil=False)
        rng = np.random.default_rng(1)
        blob = _disc(8, CY - 10, CX + 15)
        hu[blob] = 80.0 + rng.normal(0.0, 8.0, int(blob.sum()))  # acute blood, noisy, some pixels > 100
        big = _disc(6, CY + 18, CX - 10)  # 113 px > 1 % of the 5,800 px intracranial area
        hu[big] = 200.0
        m = region_masks(hu)
        assert not m["calcification"].any()

    def test_partial_volume_rim_of_the_inner_table_is_not_calcification(self):
        hu, _ = _slice(calc=False, coil=False)
        rim = _disc(43) & ~_disc(42)
        hu[rim] = 180.0  # the blur at the inner table, between brain and bone
        assert not region_masks(hu)["calcification"].any()

    def test_small_gap_is_closed_silently(self):
        hu, truth = _slice(gap_deg=8.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            m = region_masks(hu)
        assert _dice(m["intracranial"], truth["intracranial"]) > 0.95

    def test_open_skull_warns_and_degrades_to_the_hull(self):
        hu, truth = _slice(gap_deg=200.0, calc=False, coil=False)  # more than half the ring missing
        with pytest.warns(RuntimeWarning, match="no closed skull ring"):
            m = region_masks(hu)
        # the hull of the remaining bone covers the lower part of the brain, no bone
        assert m["intracranial"].sum() > 0.3 * truth["intracranial"].sum()
        assert (m["intracranial"] & truth["intracranial"]).sum() / m["intracranial"].sum() > 0.9
        assert not (m["intracranial"] & m["skull"]).any()

    def test_holder_touching_the_head_stays_outside_it(self):
        hu, truth = _slice(holder=False)
        hu[(YY >= 108) & (YY <= 113) & (XX >= 20) & (XX <= 108) & ~_disc(50)] = 280.0  # touches scalp at r=50
        m = region_masks(hu)
        holder = (YY >= 108) & (YY <= 113) & (XX >= 20) & (XX <= 108) & ~_disc(50)
        assert m["head_holder"].sum() > 0.8 * holder.sum()
        assert _dice(m["head"], truth["head"]) > 0.95

    def test_blank_slice_warns_and_returns_empty_regions(self):
        with pytest.warns(RuntimeWarning, match="no head"):
            m = region_masks(np.full((64, 64), -1000.0, dtype=np.float32))
        assert not m["head"].any() and not m["skull"].any() and m["outside_head"].all()

    def test_head_without_bone_warns(self):
        hu = np.full((64, 64), -1000.0, dtype=np.float32)
        hu[16:48, 16:48] = 40.0
        with pytest.warns(RuntimeWarning, match="no bone"):
            m = region_masks(hu)
        assert not m["intracranial"].any() and m["scalp"].sum() == 32 * 32

    @pytest.mark.parametrize("bad", [np.zeros((4, 4, 3)), np.zeros((5, 5))])
    def test_bad_shape_raises(self, bad):
        with pytest.raises(ValueError, match=r"`hu` must be .* Got shape"):
            region_masks(bad)


class TestDisjointRegions:
    def test_partition_covers_every_pixel_once_with_priority(self):
        hu, _ = _slice()
        parts = disjoint_regions(region_masks(hu))
        assert list(parts) == list(DISJOINT_ORDER) + ["other"]
        total = np.sum([p.astype(int) for p in parts.values()], axis=0)
        np.testing.assert_array_equal(total, np.ones((N, N), dtype=int))
        # calcification and metal are taken out of the intracranial space
        assert not (parts["intracranial"] & (parts["metal"] | parts["calcification"])).any()

    def test_truth_style_masks_without_optional_keys(self):
        head = _disc(50)
        parts = disjoint_regions({"head": head, "intracranial": _disc(40)})
        np.testing.assert_array_equal(parts["outside_head"], ~head)
        np.testing.assert_array_equal(parts["other"], head & ~_disc(40))
        assert not parts["metal"].any()

    def test_mismatched_shapes_raise(self):
        with pytest.raises(ValueError, match="must all have one shape"):
            disjoint_regions({"head": np.zeros((4, 4), bool), "skull": np.zeros((5, 5), bool)})


class TestAgainstPhantomTruth:
    """region_masks from HU alone against the phantom generator's ground-truth masks (brain_audit.phantom)."""

    def test_regions_match_the_truth(self):
        phantom = pytest.importorskip("brain_audit.phantom")
        cfg = phantom.PhantomConfig(
            patients=3, slices_per_patient=8, size=256, seed=11,
            mimic_probabilities={**{m: (0.5, 0.5) for m in phantom.MIMICS}, "catheter_metal_tip": (0.2, 0.2)},
        )
        calc_names = [m for m in phantom.MIMICS if m.endswith("_calcification")]
        agree = n = 0
        for p in range(3):
            for s in (1, 3, 5):
                hu, truth = phantom.render_slice(cfg, p, s)
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)
                    m = region_masks(hu)
                assert _dice(m["intracranial"], truth["intracranial"]) > 0.9
                assert _dice(m["head"], truth["head"]) > 0.95
                # metal only where a device is, and found whenever there is metal (coil or catheter tip)
                metal_truth = truth["coil"] | truth["catheter_metal_tip"]
                assert not (m["metal"] & ~truth["device"]).any()
                # every device found is a planted one (each found component meets the device truth)
                lab, n_dev = ndimage.label(m["device"], structure=np.ones((3, 3)))
                assert set(np.unique(lab[truth["device"]])) >= set(range(1, n_dev + 1))
                assert m["metal"].any() == metal_truth.any()
                if not metal_truth.any():  # near metal, streaks hide small foci by design
                    n += 1
                    agree += m["calcification"].any() == any(truth[c].any() for c in calc_names)
                    assert not (m["calcification"] & ~np.logical_or.reduce([truth[c] for c in calc_names])).any()
        assert n >= 3 and agree / n >= 0.8


class TestDevice:
    """``device``: metal plus thin elongated dense tubes entering from the skull (a shunt catheter)."""

    @staticmethod
    def _tube(hu: np.ndarray, value: float = 250.0) -> np.ndarray:
        """A 1 px wide (about 2 mm at this scale) tube drawn from inside the skull ring (r = 46) to r = 18 towards the centre, upper left."""
        import cv2

        tube = np.zeros((N, N), np.uint8)
        a = np.radians(135.0)
        p0 = (round(CX + 46 * np.cos(a)), round(CY - 46 * np.sin(a)))
        p1 = (round(CX + 18 * np.cos(a)), round(CY - 18 * np.sin(a)))
        cv2.line(tube, p0, p1, 1, 1)
        inside = tube.astype(bool) & _disc(43)
        hu[inside] = value
        return inside

    def test_a_catheter_tube_is_found_and_is_not_calcification(self):
        hu, truth = _slice(coil=False)
        tube = self._tube(hu)
        m = region_masks(hu)
        assert m["device"][tube & _disc(40)].mean() >= 0.9, "the tube beyond the inner table's edge is a device"
        assert not (m["device"] & ~tube).any()
        assert not (m["calcification"] & tube).any()
        assert m["calcification"][truth["calcification"]].any()  # the round focus is still a calcification

    def test_a_round_calcification_is_not_a_device(self):
        hu, truth = _slice(coil=False)
        hu[_disc(3.0, CY - 20, CX + 20)] = 250.0  # larger round focus, 6 px across
        m = region_masks(hu)
        assert not m["device"].any()
        assert m["calcification"][truth["calcification"]].any()

    def test_metal_is_a_device(self):
        hu, truth = _slice()
        m = region_masks(hu)
        np.testing.assert_array_equal(m["device"], m["metal"])
        assert m["device"][truth["metal"]].all()

    def test_real_ct_small_has_no_device(self):
        from pydicom.data import get_testdata_file

        from brain_audit.dicom import read_hu

        hu = read_hu(get_testdata_file("CT_small.dcm"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = region_masks(hu)
        assert not m["device"].any()

    def test_device_is_not_in_the_partition(self):
        assert "device" in REGION_KEYS and "device" not in DISJOINT_ORDER
