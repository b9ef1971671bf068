"""Fixtures of the phantom tests: the cohort of tests/support/phantom_cohort.py, written once per session and
only read (tests that write a cohort of their own do it under tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain_audit.phantom.cohort import generate_cohort
from support.phantom_cohort import COHORT


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "cohort"
    generate_cohort(out, COHORT, workers=1, progress=False)
    return out
