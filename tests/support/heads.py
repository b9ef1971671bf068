"""Axial head slices drawn with numpy from discs and bands of stated HU, so their regions are known.

Air -1000, scalp 40, skull 800, brain as asked; an optional band (a head holder at ~280 HU, a foam cushion
near water) below the head. Drawn without noise at the model's input size, as int16 (what a cache holds).
"""

from __future__ import annotations

import numpy as np

SIDE = 64


def disc(radius: float, cy: float, cx: float, side: int = SIDE) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius


def head_slice(cy: float = 32, cx: float = 32, *, brain_hu: int = 30, inner: float = 21, outer: float = 25,
               scalp: float = 27, band: tuple[slice, slice] | None = None, band_hu: int = 280,
               side: int = SIDE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(HU int16 (side, side), drawn regions): brain inside radius ``inner``, skull ring to ``outer``, scalp to
    ``scalp``, all centred on (cy, cx); ``band`` (rows, columns) set to ``band_hu``."""
    hu = np.full((side, side), -1000, dtype=np.int16)
    head = disc(scalp, cy, cx, side)
    brain = disc(inner, cy, cx, side)
    skull = disc(outer, cy, cx, side) & ~brain
    hu[head] = 40
    hu[skull] = 800
    hu[brain] = brain_hu
    extra = np.zeros((side, side), dtype=bool)
    if band is not None:
        extra[band] = True
        hu[extra] = band_hu
    return hu, {"head": head, "skull": skull, "intracranial": brain, "band": extra}


def masks20() -> dict[str, np.ndarray]:
    """20 x 20 region masks drawn by hand: head rows/columns 2-17 (256 px), intracranial 4-15 (144 px), the ring
    between them skull (112 px); the rest is outside the head."""
    m = {k: np.zeros((20, 20), dtype=bool) for k in ("head", "skull", "intracranial")}
    m["head"][2:18, 2:18] = True
    m["intracranial"][4:16, 4:16] = True
    m["skull"] = m["head"] & ~m["intracranial"]
    return m
