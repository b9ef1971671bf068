"""brain_audit.phantom.lesions: HU of the hemorrhages and mimics, measured through the truth masks.

Expected HU ranges come from outside the generator: the literature values and the measured real
head CT of the issue (``../shared/reference/real_head_ct.md``: intracranial p5 / p95 12 / 43 HU, skull
median ~750 HU, acute blood 50-90, chronic subdural 0-30, calcifications 100-400, air about -1,000).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.lesions import MIMICS
from brain_audit.phantom.render import render_slice


class TestRealism:
    """HU per tissue, measured through the truth masks, against the real head CT and the literature."""

    @pytest.mark.parametrize(
        "subtype, chronic, lo, hi",
        [("epidural", 0, 60, 90), ("subdural", 0, 50, 80), ("subdural", 1, 0, 30),
         ("intraparenchymal", 0, 60, 90), ("intraventricular", 0, 50, 80), ("subarachnoid", 0, 45, 80)],
    )
    def test_lesion_hu(self, subtype, chronic, lo, hi):
        cfg = PhantomConfig(patients=2, slices_per_patient=12, size=256, prevalence=1.0, subtype_mix={subtype: 1},
                            chronic_subdural_fraction=float(chronic), seed=4)
        values, rims = [], []
        for p in range(cfg.patients):
            for k in range(cfg.slices_per_patient):
                hu, t = render_slice(cfg, p, k)
                # ROI away from the inner table (2 px), as a reader places it
                near_bone = cv2.dilate(t["skull"].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                values.append(hu[t[subtype] & ~near_bone])
                if subtype == "intraparenchymal" and t[subtype].any():
                    ring = cv2.dilate(t[subtype].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                    rims.append(hu[ring & ~t[subtype] & t["intracranial"]])
        v = np.concatenate(values)
        assert v.size > 100
        assert lo <= np.median(v) <= hi, np.median(v)
        if rims:  # darker edema rim around the clot
            assert np.median(np.concatenate(rims)) < 30

    def test_mimic_hu(self):
        cfg = PhantomConfig(patients=2, slices_per_patient=10, size=256, prevalence=0.0, seed=9)
        for p in range(cfg.patients):
            for k in (4, 6):
                hu, t = render_slice(cfg, p, k, {m: True for m in MIMICS})
                for m in ("choroid_plexus_calcification", "pineal_calcification", "falx_calcification"):
                    core = hu[t[m]].max()
                    assert 100 <= core <= 460, (m, core)  # 100-400 HU plus noise
                assert hu[t["coil"]].max() == 3071  # metal saturates 12-bit CT
                assert t["coil_streaks"].sum() > 100
                np.testing.assert_array_equal(t["device"], t["coil"] | t["catheter"] | t["catheter_metal_tip"])

    def test_device_and_frontal_bone_hu(self):
        cfg = PhantomConfig(patients=2, slices_per_patient=10, size=256, prevalence=0.0, seed=9)
        for p in range(cfg.patients):
            for k in (4, 6):
                hu, t = render_slice(cfg, p, k, {m: m in ("catheter", "frontal_bone") for m in MIMICS})
                # polymer tube: denser than blood and brain, far below bone and metal (radiopaque silicone)
                tube = t["catheter"] & t["intracranial"] & ~near(t["skull"]) & ~t["frontal_bone"]
                assert 100 <= np.percentile(hu[tube], 90) <= 400
                assert hu[tube].max() < 700
                np.testing.assert_array_equal(t["device"], t["catheter"])
                # hyperostosis frontalis interna: bone denser than 700 HU against the brain
                plate = t["frontal_bone"] & (hu > 700)
                assert plate.sum() * cfg.pixel_spacing_mm ** 2 > 15.0
                brain_next = near(plate) & t["intracranial"] & ~t["frontal_bone"] & (hu < 60)
                assert brain_next.sum() > 10
                hu, t = render_slice(cfg, p, k, {m: m == "catheter_metal_tip" for m in MIMICS})
                tip = t["catheter_metal_tip"] & t["intracranial"] & ~near(t["skull"])
                assert hu[tip].max() == 3071  # metal marker saturates 12-bit CT
                assert 100 <= np.percentile(hu[tip & (hu < 2000)], 90) <= 400  # the rest is the polymer tube

    def test_devices_off_without_a_draw(self):
        cfg = PhantomConfig(patients=1, slices_per_patient=6, size=128, seed=2,
                            mimic_probabilities={m: (0.0, 0.0) for m in MIMICS})
        for k in range(cfg.slices_per_patient):
            hu, t = render_slice(cfg, 0, k)
            assert not t["device"].any() and not t["frontal_bone"].any()
            assert hu[t["intracranial"]].max() < 700


def near(mask: np.ndarray, px: int = 2) -> np.ndarray:
    """``mask`` grown by ``px`` pixels."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)
