"""Pictures for people: PNG figures of CT windows (8-bit only here, never in the data path).

Matplotlib with the non-interactive Agg backend; every figure is written
atomically (rendered to memory, then :func:`brain_audit.provenance.atomic_write_bytes`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from brain_audit.provenance import atomic_write_bytes
from brain_audit.windowing import BSB, window

__all__ = ["pyplot", "save_figure", "save_window_panel"]


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG at ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), unless a backend was chosen already.

    Deferred so that importing this module does not import matplotlib, and so that the backend is
    chosen before pyplot's first import.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_window_panel(path: str | Path, hu: np.ndarray, rgb: np.ndarray | None = None, title: str = "") -> Path:
    """Write the brain, subdural and bone windows of ``hu`` and the RGB composite side by side.

    Args:
        path: PNG to write.
        hu: float32 (H, W) in HU.
        rgb: optional float32 (H', W', 3) in [0, 1] (e.g. :func:`brain_audit.windowing.to_rgb`);
            computed from ``hu`` when omitted.
        title: figure title (never pass identifying DICOM fields).
    """
    plt = pyplot()
    if rgb is None:
        rgb = np.stack([window(hu, c, w) for c, w in BSB], axis=-1)
    names = ("brain W80 L40", "subdural W200 L80", "bone W2800 L600")
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (c, w), name in zip(axes[:3], BSB, names):
        ax.imshow(window(hu, c, w), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    axes[3].imshow(np.clip(rgb, 0, 1))
    axes[3].set_title("RGB = brain / subdural / bone", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
