"""Shared by the model tests (tests/model) and tests/train/test_pretrain.py: the input size, HU batches that
hit every window edge, and an inference-mode forward pass."""

from __future__ import annotations

import keras
import numpy as np

from brain_audit.windowing import BSB

SIZE = 64


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Inference-mode forward pass (a direct call: no predict-function tracing)."""
    return np.asarray(model(x, training=False))


def hu_images(n: int = 2, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """HU images covering air to dense bone, with every window edge and centre hit exactly."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1100.0, 3100.0, (n, size, size, 1)).astype(np.float32)
    edges = [c + k * w / 2 for c, w in BSB for k in (-1, 0, 1)]
    x.flat[: len(edges)] = edges
    return x
