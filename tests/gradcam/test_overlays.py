"""brain_audit.gradcam.overlays: the title and the two-panel PNG, read back with matplotlib."""

from __future__ import annotations

import numpy as np
import pytest

from brain_audit.gradcam.overlays import overlay_title, save_overlay


def test_overlay_png(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    hu = np.where(np.hypot(yy - 32, xx - 32) < 25, 40.0, -1000.0).astype("float32")
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 1.0
    title = overlay_title("ID_0a1b2c3d4", 0.934, {"device_focus": True, "bone_focus": False})
    assert title == "ID_0a1b2c3d4  p=0.934  flags: device_focus"
    path = save_overlay(tmp_path / "o.png", hu, cam, title=title)
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[1] > 1.5 * img.shape[0]  # two panels side by side
    # the heat map (jet: blue where the map is 0) is on the right only; the CT windows have R >= G, B
    left, right = img[:, : img.shape[1] // 2, :3], img[:, img.shape[1] // 2 :, :3]
    assert ((right[..., 2] - right[..., 0]) > 0.2).mean() > 0.1
    assert ((left[..., 2] - left[..., 0]) > 0.2).mean() == 0.0
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]. Got 2 instead"):
        save_overlay(tmp_path / "x.png", hu, cam, alpha=2)


def test_the_truth_contour_is_drawn_in_lime_on_both_panels(tmp_path):
    import matplotlib.image as mpimg

    yy, xx = np.mgrid[0:64, 0:64]
    hu = np.where(np.hypot(yy - 32, xx - 32) < 25, 40.0, -1000.0).astype("float32")
    cam = np.zeros((4, 4), np.float32)
    truth = np.hypot(yy - 30, xx - 24) < 6

    def lime(img: np.ndarray) -> float:  # (0, 1, 0): green high, red and blue low
        return float(((img[..., 1] > 0.7) & (img[..., 0] < 0.4) & (img[..., 2] < 0.4)).mean())

    plain = mpimg.imread(save_overlay(tmp_path / "a.png", hu, cam))[..., :3]
    drawn = mpimg.imread(save_overlay(tmp_path / "b.png", hu, cam, truth=truth))[..., :3]
    half = drawn.shape[1] // 2
    assert lime(plain) == 0.0
    assert lime(drawn[:, :half]) > 0.0 and lime(drawn[:, half:]) > 0.0
    with pytest.raises(ValueError, match=r"`truth` must have the slice's shape \(64, 64\)\. Got \(8, 8\) instead"):
        save_overlay(tmp_path / "c.png", hu, cam, truth=np.zeros((8, 8), bool))
