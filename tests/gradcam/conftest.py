"""Fixtures of the gradcam tests: EfficientNetB0 with fixed random weights and HU slices."""

from __future__ import annotations

import numpy as np
import pytest

from support.cam_models import RNG


@pytest.fixture(scope="module")
def effnet():
    """build_model at 128 px with fixed random weights, and two HU slices."""
    from brain_audit.model.network import build_model

    model = build_model(image_size=128, head="any", dropout=0.2, weights=None, seed=7)
    yy, xx = np.mgrid[0:128, 0:128]
    r = np.hypot(yy - 64, xx - 64)
    hu = np.where(r < 56, 40.0, -1000.0) + np.where((r > 50) & (r < 56), 760.0, 0.0)
    batch = np.stack([hu + RNG.normal(0, 20, hu.shape) for _ in range(4)]).astype("float32")
    batch[1, 30:40, 70:85] = 75.0  # a "bleed"
    batch[2, 60:64, 40:44] = 2500.0  # a "coil"
    return model, batch
