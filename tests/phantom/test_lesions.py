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
                assert np.percentile(hu[t["catheter"]], 90) > 300
