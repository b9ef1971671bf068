"""CT windows: Hounsfield units -> display intensities in [0, 1].

The seed notebook's three-channel input, as (center, width) in HU:

============  ===========  ===========================  =======
channel       preset       shows                         colour
============  ===========  ===========================  =======
0             (40, 80)     brain parenchyma              red
1             (80, 200)    subdural / surface blood      green
2             (600, 2800)  skull and bone                blue
============  ===========  ===========================  =======

Everything here works in float32 on full-precision HU; nothing is quantised to
8 bits except :func:`to_uint8`, which is for pictures only. The model applies the
same windows inside the network (``brain_audit.model.MultiWindow``), so the HU
cache and a saved model never see an 8-bit image.

References:
    DICOM PS3.3 C.11.2.1.2 (Window Center / Width) and C.11.2.1.3 (VOI LUT Function).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import cv2
import numpy as np

__all__ = ["Window", "BRAIN", "SUBDURAL", "BONE", "BSB", "window", "sigmoid_window", "resize_hu", "to_rgb", "to_uint8"]

WindowFunction = Literal["linear_exact", "linear", "sigmoid"]


class Window(NamedTuple):
    """A display window: ``center`` and ``width`` in HU (DICOM Window Center / Width)."""

    center: float
    width: float


BRAIN = Window(40.0, 80.0)
SUBDURAL = Window(80.0, 200.0)
BONE = Window(600.0, 2800.0)

#: The seed's channel order: brain (red), subdural (green), bone (blue).
BSB: tuple[Window, Window, Window] = (BRAIN, SUBDURAL, BONE)


def _check_width(width: float, function: str) -> None:
    minimum = 1.0 if function == "linear" else 0.0
    if not np.isfinite(width) or width <= minimum:
        raise ValueError(f"`width` must be > {minimum:g}. Got {width!r} instead.")


def window(
    hu: np.ndarray,
    center: float,
    width: float,
    function: WindowFunction = "linear_exact",
) -> np.ndarray:
    """Apply one display window to HU.

    Args:
        hu: array of any shape, Hounsfield units.
        center: window center, HU.
        width: window width, HU (> 0; > 1 for ``"linear"``).
        function: the VOI LUT function of DICOM PS3.3 C.11.2.1.2 / C.11.2.1.3:

            * ``"linear_exact"`` (C.11.2.1.3.2, the default and what RSNA notebooks do):
              ``y = (x - c) / w + 0.5``, clipped to [0, 1]; 0 at ``c - w/2``, 1 at ``c + w/2``.
            * ``"linear"`` (C.11.2.1.2.1): ``y = (x - (c - 0.5)) / (w - 1) + 0.5``, clipped.
            * ``"sigmoid"`` (C.11.2.1.3.1): ``y = 1 / (1 + exp(-4 (x - c) / w))``.

    Returns:
        float32 array of the same shape, in [0, 1], monotone non-decreasing in HU.
    """
    _check_width(width, function)
    x = np.asarray(hu, dtype=np.float32)
    c, w = np.float32(center), np.float32(width)
    if function == "linear_exact":
        y = (x - c) * (np.float32(1.0) / w) + np.float32(0.5)
    elif function == "linear":
        y = (x - (c - np.float32(0.5))) * (np.float32(1.0) / (w - np.float32(1.0))) + np.float32(0.5)
    elif function == "sigmoid":
        return _logistic(np.float32(4.0) * (x - c) / w)
    else:
        raise ValueError(f"`function` must be one of 'linear_exact', 'linear', 'sigmoid'. Got {function!r} instead.")
    return np.clip(y, 0.0, 1.0, out=y)


def _logistic(z: np.ndarray) -> np.ndarray:
    # clip the exponent so float32 never overflows; output stays in [0, 1]
    z = np.clip(z, -80.0, 80.0).astype(np.float32, copy=False)
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(-z))).astype(np.float32, copy=False)


def sigmoid_window(hu: np.ndarray, center: float, width: float, eps: float = 1.0 / 255.0) -> np.ndarray:
    """Ryan Epp's sigmoid window (RSNA 2019 Kaggle): a smooth window, ``eps`` from 0 / 1 at ``c -/+ w/2``.

    ``y = 1 / (1 + exp(-2 ln(1/eps - 1) (x - c) / w))``. Unlike the DICOM sigmoid
    (``function="sigmoid"`` of :func:`window`, 0.12 / 0.88 at the window edges),
    it reaches ``eps`` and ``1 - eps`` at the edges, so it looks like the linear
    window while keeping a gradient outside it.

    Returns:
        float32 array of the shape of ``hu``, in (0, 1), strictly increasing in HU.
    """
    _check_width(width, "sigmoid")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"`eps` must be in (0, 0.5). Got {eps!r} instead.")
    x = np.asarray(hu, dtype=np.float32)
    gain = np.float32(2.0 * np.log(1.0 / eps - 1.0) / width)
    return _logistic(gain * (x - np.float32(center)))


def resize_hu(hu: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an HU image (H, W) to ``size`` (int -> square, or (height, width)).

    OpenCV area interpolation when shrinking (each output pixel is the mean HU of
    the input pixels it covers, so partial-volume is kept honestly) and bilinear
    when enlarging (``INTER_AREA`` would degenerate to nearest neighbour there).

    Returns:
        float32 array (height, width) in HU.
    """

    h_out, w_out = (size, size) if isinstance(size, (int, np.integer)) else size
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"`size` must be > 0. Got {size!r} instead.")
    x = np.asarray(hu, dtype=np.float32)
    if x.shape[:2] == (h_out, w_out):
        return x
    shrinking = h_out <= x.shape[0] and w_out <= x.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(x, (int(w_out), int(h_out)), interpolation=interp)


def to_rgb(
    hu: np.ndarray,
    windows: Sequence[Window | tuple[float, float]] = BSB,
    size: int | tuple[int, int] | None = None,
    function: WindowFunction = "linear_exact",
    order: Literal["hu_first", "window_first"] = "hu_first",
) -> np.ndarray:
    """Stack windows of one HU slice into channels (the seed's brain / subdural / bone RGB).

    Args:
        hu: float array (H, W) in HU.
        windows: (center, width) per output channel; default :data:`BSB`.
        size: output size (int -> square); ``None`` keeps (H, W). See :func:`resize_hu`.
        function: window function, see :func:`window`.
        order: ``"hu_first"`` (default) resizes the HU once, then windows: the model's own
            data path (HU cache at model resolution, windows inside the network) and
            3x less resizing. ``"window_first"`` windows at full resolution and resizes
            each channel, as typical RSNA notebooks do; the two differ only where a
            window clips inside one output pixel (tissue borders such as the inner
            table), by design.

    Returns:
        float32 array (H', W', len(windows)) in [0, 1].
    """
    if len(windows) == 0:
        raise ValueError("`windows` must hold at least one (center, width). Got an empty sequence instead.")
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    if order == "hu_first":
        if size is not None:
            x = resize_hu(x, size)
        out = np.empty(x.shape + (len(windows),), dtype=np.float32)
        for i, (c, w) in enumerate(windows):
            out[..., i] = window(x, c, w, function)
        return out
    if order == "window_first":
        out = np.empty(x.shape + (len(windows),), dtype=np.float32)
        for i, (c, w) in enumerate(windows):
            out[..., i] = window(x, c, w, function)
        if size is None:
            return out

        h_out, w_out = (size, size) if isinstance(size, (int, np.integer)) else size
        interp = cv2.INTER_AREA if (h_out <= x.shape[0] and w_out <= x.shape[1]) else cv2.INTER_LINEAR
        if len(windows) <= 4:
            res = cv2.resize(out, (int(w_out), int(h_out)), interpolation=interp)
            return res.reshape(int(h_out), int(w_out), len(windows))
        return np.stack([resize_hu(out[..., i], (h_out, w_out)) for i in range(len(windows))], axis=-1)
    raise ValueError(f"`order` must be 'hu_first' or 'window_first'. Got {order!r} instead.")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint8 [0, 255] for PNG pictures only (never for the model)."""
    x = np.asarray(image, dtype=np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
