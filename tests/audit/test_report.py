"""brain_audit.audit.report: the executive summary of the quick demo's audit, and its chance warning."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_executive_summary_reads(report):
    _, _, d, summary = report
    md = (d / "summary.md").read_text()
    assert md.startswith("# Clinical audit: executive summary")
    assert f"{summary['audit_patients']} patients" in md
    assert "| 1.0 % |" in md and "prevalence trap" in md
    import re

    # AUC and its interval are decimals; sensitivity and specificity percentages
    assert re.search(r"\| patient \| (n/a|[01]\.\d{3}) \((n/a|[01]\.\d{3}-[01]\.\d{3})\) \| \d+\.\d % ", md), md


def test_chance_warning_only_when_the_interval_reaches_one_half():
    from brain_audit.audit.report import _chance_warning

    assert _chance_warning({"auc": 0.93, "auc_ci95": [0.85, 0.99]}) == []
    assert "does not discriminate" in _chance_warning({"auc": 0.62, "auc_ci95": [0.48, 0.77]})[0]
    assert "does not discriminate" in _chance_warning({"auc": float("nan")})[0]
