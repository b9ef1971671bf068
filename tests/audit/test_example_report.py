"""The repository's example report (clinical_audit_report/): what the documented command renders, self-contained."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from brain_audit.audit.report import executive_summary

EXAMPLE = Path(__file__).resolve().parents[2] / "clinical_audit_report"

pytestmark = pytest.mark.skipif(not (EXAMPLE / "summary.json").is_file(), reason="no example report in this checkout")


def test_the_summary_is_the_renderers_output_for_its_numbers():
    summary = json.loads((EXAMPLE / "summary.json").read_text())
    md = (EXAMPLE / "summary.md").read_text()
    assert md == executive_summary(summary)
    assert md.startswith("**Synthetic phantom cohort, not a clinical result")
    assert summary["audit_patients"] == 200 and summary["flow"]["adds_up"]


def test_the_page_is_self_contained_and_every_picture_decodes():
    page = (EXAMPLE / "index.html").read_text()
    md = (EXAMPLE / "summary.md").read_text()
    assert "http://" not in page and "https://" not in page and "figure missing" not in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(re.findall(r"!\[[^\]]*\]\(", md))
    for data in uris:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.std() > 0


def test_every_error_patient_has_its_picture():
    summary = json.loads((EXAMPLE / "summary.json").read_text())
    a = summary["flow"]["audit"]
    assert len(summary["gallery"]) == a["false_negative"] + a["false_positive"]
    assert all((EXAMPLE / g["file"]).is_file() for g in summary["gallery"])
