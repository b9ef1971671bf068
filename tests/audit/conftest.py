"""Fixtures of the audit tests: the clinical audit report of the quick demo run (tests/conftest.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def report(quick_run):
    config, out, _ = quick_run
    d = out / "clinical_audit_report"
    return config, out, d, json.loads((d / "summary.json").read_text())
