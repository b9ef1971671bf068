"""A stand-in for brain_audit.dataset.cache.HUCache: fixed int16 slices by image ID, and a record of each read."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class FixedCache:
    """``hu_int16(ids)`` and one-slice ``hu_input(ids)`` as HUCache has them, over slices given here; ``reads``
    lists the IDs of every call."""

    def __init__(self, images: Mapping[str, np.ndarray]):
        self.images = {k: np.asarray(v, dtype=np.int16) for k, v in images.items()}
        self.reads: list[list[str]] = []

    def hu_int16(self, image_ids: Sequence[str]) -> np.ndarray:
        ids = list(image_ids)
        self.reads.append(ids)
        return np.stack([self.images[i] for i in ids])

    def hu_input(self, image_ids: Sequence[str], context: int = 0, *, dtype=np.float32) -> np.ndarray:
        if context != 0:
            raise ValueError(f"FixedCache holds no neighbours. Got context={context} instead.")
        return self.hu_int16(image_ids).astype(dtype)[..., None]
