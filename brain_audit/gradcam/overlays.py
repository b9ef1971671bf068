"""The seed's Grad-CAM pictures: the slice in the brain window beside the heat map over it (PNG)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brain_audit.figures import pyplot, save_figure
from brain_audit.gradcam.attention import FLAGS
from brain_audit.gradcam.maps import resize_map
from brain_audit.windowing import BRAIN, window

__all__ = ["overlay_title", "save_overlay"]


def overlay_title(image_id: str, probability: float | None = None, flags: dict[str, Any] | Sequence[str] = ()) -> str:
    """The overlay's title: ``"ID_0a1b2c3d4  p(any)=0.93  flags: device_focus, bone_focus"``."""
    if isinstance(flags, dict):
        flags = [k for k in FLAGS if flags.get(k)]
    parts = [str(image_id)]
    if probability is not None:
        parts.append(f"p={probability:.3f}")
    parts.append("flags: " + (", ".join(flags) if flags else "none"))
    return "  ".join(parts)


def save_overlay(path: Any, hu: np.ndarray, cam: np.ndarray, title: str = "", alpha: float = 0.45,
                 truth: np.ndarray | None = None, method: str = "Grad-CAM") -> Any:
    """The seed's picture: the CT in the brain window on the left, the class-activation map over it on the right (PNG).

    Args:
        path: PNG to write (atomically, via :func:`brain_audit.figures.save_figure`).
        hu: float (H, W) HU of the slice.
        cam: float (h, w) map in [0, 1]; resized (bilinear) to (H, W).
        title: figure title, e.g. :func:`overlay_title` (never identifying DICOM fields).
        alpha: opacity of the heat map, in [0, 1].
        truth: optional bool (H, W) lesion mask (a phantom's truth, a segmentation): its contour is drawn on
            both panels, so a reader sees whether the map found the bleed.
        method: the map's name in the right panel's title (e.g. ``"HiResCAM, 24 x 24 cells"``).
    """

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Got {alpha!r} instead.")
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    plt = pyplot()
    gray = window(x, *BRAIN)
    heat = np.clip(resize_map(cam, x.shape), 0.0, 1.0)
    if truth is not None and np.shape(truth) != x.shape:
        raise ValueError(f"`truth` must have the slice's shape {x.shape}. Got {np.shape(truth)} instead.")
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"CT, brain window (W{BRAIN.width:g} L{BRAIN.center:g})", fontsize=9)
    axes[1].imshow(gray, cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title(method, fontsize=9)
    for ax in axes:
        ax.axis("off")
        if truth is not None and np.any(truth):
            ax.contour(np.asarray(truth, dtype=np.float32), levels=[0.5], colors="lime", linewidths=0.8)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)

