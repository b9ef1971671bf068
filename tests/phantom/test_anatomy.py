"""brain_audit.phantom.anatomy: HU per tissue of the phantom head, measured through the truth masks.

Expected HU ranges come from outside the generator: the literature values and the measured real
head CT of the issue (``../shared/reference/real_head_ct.md``: intracranial p5 / p95 12 / 43 HU, skull
median ~750 HU, acute blood 50-90, chronic subdural 0-30, calcifications 100-400, air about -1,000).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.render import render_slice


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q))


class TestRealism:
    """HU per tissue, measured through the truth masks, against the real head CT and the literature."""

    CFG = PhantomConfig(patients=3, slices_per_patient=20, size=512, seed=5, prevalence=0.0)  # the reference's grid

    def test_anatomy_hu(self):
        for p in range(self.CFG.patients):
            hu, t = render_slice(self.CFG, p, 12)  # supratentorial, ventricle bodies
            ic = hu[t["intracranial"]]
            assert 0 <= _pct(ic, 5) <= 20 and 22 <= _pct(ic, 50) <= 34 and 36 <= _pct(ic, 95) <= 55
            skull = hu[t["skull"]]
            assert 300 <= _pct(skull, 5) <= 650
            assert 600 <= _pct(skull, 50) <= 1000  # partial-volume blurred, not a flat 1,500
            assert 1000 <= _pct(skull, 95) <= 1800  # cortical tables
            scalp = hu[t["head"] & ~t["skull"] & ~t["intracranial"]]
            assert -200 <= _pct(scalp, 25) <= -20 and -80 <= _pct(scalp, 50) <= 45  # fat and skin
            fov = np.hypot(*np.meshgrid(np.arange(512) - 255.5, np.arange(512) - 255.5)) < 250
            air = hu[~cv2.dilate(t["head"].astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & fov
                     & (hu < -900)]
            assert -1005 <= _pct(air, 50) <= -980
            assert 3.0 <= float(np.std(air)) <= 7.0  # noise ~5 HU
            assert hu[0, 0] == -1024  # padding, as read_hu returns it
            # head holder: a ~280 HU band under the head (posterior = bottom rows)
            below = hu[int(np.nonzero(t["head"].any(axis=1))[0][-1]) + 2:]
            band = below[(below > 150) & (below < 450)]
            assert band.size > 50 and 220 <= np.median(band) <= 330

    @pytest.mark.parametrize("fov", [200.0, 250.0])
    def test_head_inside_the_reconstruction_circle(self, fov):
        cfg = PhantomConfig(patients=12, slices_per_patient=12, size=128, pixel_spacing_mm=fov / 128, seed=8)
        yy, xx = np.mgrid[:128, :128] - 63.5
        rim = np.hypot(yy, xx) * cfg.pixel_spacing_mm > fov / 2 - cfg.pixel_spacing_mm  # padding and its edge
        for p in range(cfg.patients):
            for k in (0, 6, 11):
                _, t = render_slice(cfg, p, k)
                assert not (t["head"] & rim).any(), (fov, p, k)
