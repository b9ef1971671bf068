"""Shared fixtures. The one expensive fixture is a quick demo run (every stage, tiny sizes),
built once per session and read by the phase, audit and demo tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any test module imports TensorFlow

#: Overrides of the quick demo for the tests: a low hard-negative bar so that Phase 3 mines
#: some even from an untrained model, and few audited slices.
QUICK_OVERRIDES = (
    "phase3.hard_negative_probability=0.05",
    "phase3.max_slices=24",
    "phase3.overlays=2",
)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """(config, out_dir, summary) of ``run_demo(out, DemoPlan.quick())``."""
    pytest.importorskip("tensorflow")
    from brain_audit.demo import DemoPlan, demo_configs, run_demo

    out = tmp_path_factory.mktemp("quick_demo")
    summary = run_demo(out, DemoPlan.quick(), overrides=QUICK_OVERRIDES, verbose=0, progress=False)
    _, config = demo_configs(out, DemoPlan.quick(), QUICK_OVERRIDES)
    return config, Path(out), summary


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
