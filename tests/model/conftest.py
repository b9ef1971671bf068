"""Fixtures of the model tests: one EfficientNetB0 model (head "any", random weights) per test module."""

from __future__ import annotations

import keras
import pytest

from brain_audit.model.network import build_model
from support.model_inputs import SIZE


@pytest.fixture(scope="module")
def model_any() -> keras.Model:
    return build_model(SIZE, head="any", weights=None, seed=1)
