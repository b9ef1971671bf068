"""brain_audit.audit.report: the executive summary of the quick demo's audit, and its chance warning."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest


@pytest.mark.slow
def test_executive_summary_reads(report):
    _, _, d, summary = report
    md = (d / "summary.md").read_text()
    assert md.startswith("**Synthetic phantom cohort, not a clinical result")
    assert "# Clinical audit: executive summary" in md
    assert f"{summary['audit_patients']} patients" in md
    assert "| 1.0 % |" in md and "prevalence trap" in md
    for section in ("## Targets", "## Subgroups", "## Calibration", "## Decision curve", "## Flow of patients",
                    "## Error gallery", "## What this audit cannot tell you", "## Bone-removal study"):
        assert section in md, section
    # never an interval of zero width: "(12.3-12.3 %)"
    assert not re.search(r"\((\d+\.\d)-\1 %\)", md), re.findall(r"\((\d+\.\d)-\1 %\)", md)
    # AUC and its interval are decimals; sensitivity and specificity percentages
    assert re.search(r"\| patient \| (n/a|[01]\.\d{3}) \((n/a|[01]\.\d{3}-[01]\.\d{3})\) \| \d+\.\d % ", md), md
    # a one-label model: no competition section, and summary.json says why
    assert "competition metric" not in md and summary["competition"].startswith("not available")


def test_chance_warning_only_when_the_interval_reaches_one_half():
    from brain_audit.audit.report import _chance_warning

    assert _chance_warning({"auc": 0.93, "auc_ci95": [0.85, 0.99]}) == []
    assert "does not discriminate" in _chance_warning({"auc": 0.62, "auc_ci95": [0.48, 0.77]})[0]
    assert "does not discriminate" in _chance_warning({"auc": float("nan")})[0]


def test_competition_section_of_a_six_label_model():
    from brain_audit.audit.report import _competition_lines

    labels = {"any": {"positives": 12, "auc": 0.8126, "auc_ci95": [0.70125, 0.9]},  # sorted, as summary.json has it
              "epidural": {"positives": 0, "auc": float("nan"), "auc_ci95": [float("nan")] * 2}}
    comp = {"metric": "RSNA metric", "images": 36, "patients": 6, "weighted_log_loss": 0.41234,
            "weighted_log_loss_ci95": [0.3, 0.55555], "interval": "patient-cluster bootstrap", "labels": labels}
    md = "\n".join(_competition_lines({"competition": comp}))
    assert md.startswith("## Six labels: the competition metric")
    assert "RSNA metric on the 36 audit slices of 6 patients: **0.4123** (95 % interval 0.300-0.556" in md
    assert "| epidural | 0 | n/a (one class) | n/a |\n| any | 12 | 0.813 | 0.701-0.900 |" in md  # RSNA order
    assert _competition_lines({"competition": "not available: one label"}) == _competition_lines({}) == []


@pytest.mark.slow
def test_index_html_is_self_contained(report):
    _, _, d, summary = report
    page = (d / "index.html").read_text()
    assert "synthetic phantom cohort" in page.lower()[:2000]
    assert "http://" not in page and "https://" not in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    md = (d / "summary.md").read_text()
    assert len(uris) == len(re.findall(r"!\[[^\]]*\]\(", md)) >= 6
    for data in uris:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape[0] > 50 and img.std() > 0
    assert "<table" in page
    # the contents line links every section, and every link lands on a heading
    ids = set(re.findall(r'<h[1-6] id="([^"]+)"', page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert len(links) == md.count("\n## ") and set(links) <= ids


@pytest.mark.slow
def test_report_command_redraws_the_same_summary(report, tmp_path):
    import shutil

    from brain_audit.cli import main

    _, _, d, _ = report
    copy = tmp_path / "report"
    shutil.copytree(d, copy)
    (copy / "summary.md").unlink()
    (copy / "index.html").unlink()
    assert main(["report", str(copy), "--n-boot", "50"]) == 0
    assert (copy / "summary.md").read_text() == (d / "summary.md").read_text()
    assert (copy / "index.html").is_file()


@pytest.mark.slow
def test_report_to_refuses_a_folder_that_is_not_a_report(report, tmp_path, capsys):
    from brain_audit.cli import main

    _, _, d, _ = report
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["report", str(d), "--to", str(other)]) == 2
    assert "`--to` must be a new folder or an earlier report" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    assert main(["report", str(d), "--to", str(tmp_path / "copy"), "--n-boot", "50"]) == 0
    assert (tmp_path / "copy" / "index.html").is_file() and (d / "summary.json").is_file()
