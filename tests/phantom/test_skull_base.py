"""brain_audit.phantom.skull_base: bone by level, measured through the HU and the truth masks.

Expected values come from anatomy and from the real head CT of ``../shared/reference/real_head_ct.md``, not from
the generator: cortical bone 700-1,900 HU (partial volume lower), air about -1,000 HU, the skull a ring within about
15 mm of the skin on a mid-level slice, the petrous bone deep in the middle of the skull base and the densest bone of
the head; the vault cut tangentially near the vertex is a thicker, less dense band than on a mid-level slice.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.render import build_patient, render_slice
from brain_audit.skull import METAL_HU, region_masks

#: Long studies (30 slices of 5 mm) reach from the skull base to near the vertex.
CFG = PhantomConfig(patients=3, slices_per_patient=30, size=256, seed=7, prevalence=0.0)
MM = CFG.pixel_spacing_mm


def _slice_at(p: int, z: float) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """The slice of patient ``p`` nearest anatomical height ``z`` (mm)."""
    k = int(np.argmin(np.abs(build_patient(CFG, p).z_anat - z)))
    hu, t = render_slice(CFG, p, k)
    return k, hu, t


def _depth_mm(head: np.ndarray) -> np.ndarray:
    """Distance of every head pixel from the skin (mm)."""
    return ndimage.distance_transform_edt(head) * MM


@pytest.mark.parametrize("p", range(CFG.patients))
class TestSkullBase:
    def test_deep_dense_bone_at_the_skull_base(self, p):
        # below the floor of the anterior fossa: petrous ridges, orbital roofs, clinoids lie > 25 mm inside the skin,
        # where a mid-level slice has only brain
        _, hu, t = _slice_at(p, -40.0)
        deep = _depth_mm(t["head"]) > 25.0
        dense = t["skull"] & deep & (hu > 1000)
        assert dense.sum() * MM * MM > 30.0  # mm2
        assert hu[dense].max() < METAL_HU  # petrous bone is bone, not metal
        _, _, t_mid = _slice_at(p, 5.0)
        assert not (t_mid["skull"] & (_depth_mm(t_mid["head"]) > 25.0)).any()

    def test_frontal_sinus_is_air_walled_by_bone(self, p):
        _, hu, t = _slice_at(p, -25.0)
        rows = np.nonzero(t["head"].any(axis=1))[0]
        anterior = np.zeros_like(t["head"])
        anterior[rows[0]: rows[0] + int(25.0 / MM)] = True  # the front of the head is at the top of the image
        air = t["head"] & anterior & (hu < -500)
        if p == 0:
            assert air.sum() * MM * MM > 10.0, "expected a frontal sinus on patient 0"
        if air.any():
            assert not (air & (t["skull"] | t["intracranial"])).any()
            wall = ndimage.binary_dilation(air, iterations=2) & ~air
            assert np.median(hu[wall]) > 300  # bony walls around the pocket


@pytest.mark.parametrize("p", range(CFG.patients))
def test_beam_hardening_band_between_the_petrous_ridges(p):
    # the Hounsfield bar: a dark band across the posterior fossa, tens of HU below the brain around it
    _, hu, t = _slice_at(p, -38.0)
    rows = np.nonzero(t["head"].any(axis=1))[0]
    cols = np.nonzero(t["head"].any(axis=0))[0]
    cy, cx = (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2
    yy, xx = np.mgrid[: hu.shape[0], : hu.shape[1]]
    brain = t["intracranial"] & ~ndimage.binary_dilation(t["skull"], iterations=3) & (hu > -20) & (hu < 100)
    # both cerebellar hemispheres and temporal lobes, off the midline cisterns, posterior half
    sel = brain & (np.abs(xx - cx) * MM > 12) & (np.abs(xx - cx) * MM < 40) & (yy > cy - 10 / MM)
    row_median = np.array([np.median(hu[r][sel[r]]) for r in range(hu.shape[0]) if sel[r].sum() >= 10])
    assert np.median(row_median) - row_median.min() >= 20.0  # HU


@pytest.mark.parametrize("p", range(CFG.patients))
def test_vertex_has_a_thick_partial_volume_plate(p):
    def band(hu, t):
        ic = t["intracranial"]
        edge = ic & ~ndimage.binary_erosion(ic)
        pv = ndimage.binary_dilation(ic, iterations=4) & t["skull"] & (hu > 300) & (hu < 700)
        return pv.sum() / edge.sum()  # mean width (px) of intermediate bone against the brain

    _, hu_mid, t_mid = _slice_at(p, 0.0)
    hu_top, t_top = render_slice(CFG, p, CFG.slices_per_patient - 1)
    assert band(hu_top, t_top) * MM >= 2.0
    assert band(hu_top, t_top) >= 1.4 * band(hu_mid, t_mid)


def test_region_masks_on_a_skull_base_slice():
    for p in range(CFG.patients):
        _, hu, t = _slice_at(p, -40.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an open ring is allowed here
            m = region_masks(hu)
        assert m["intracranial"].sum() * MM * MM > 2000.0  # mm2; a real skull-base section holds brain
        petrous = t["skull"] & (_depth_mm(t["head"]) > 25.0) & (hu > 1500)
        assert petrous.any()
        assert not (petrous & m["metal"]).any() and not (petrous & m["device"]).any()
        assert (petrous & m["skull"]).sum() >= 0.9 * petrous.sum()
