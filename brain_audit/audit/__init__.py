"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence, calibration, patient-level
results, cluster-bootstrap intervals), ``subgroups`` (metrics with and without each mimic),
``holdout`` (the final model on the audit patients) and ``report`` (the executive summary).
"""

from __future__ import annotations

from brain_audit.audit.holdout import DEPLOYMENT_PREVALENCES, REPORT_DIR, audit_holdout
from brain_audit.audit.report import executive_summary
from brain_audit.audit.statistics import (
    bootstrap_ci,
    calibration_bins,
    confusion_at,
    expected_calibration_error,
    operating_point_report,
    patient_level,
    predictive_values_at_prevalence,
    threshold_for_sensitivity,
)
from brain_audit.audit.subgroups import stratified_metrics

__all__ = [
    "threshold_for_sensitivity",
    "confusion_at",
    "predictive_values_at_prevalence",
    "calibration_bins",
    "expected_calibration_error",
    "patient_level",
    "bootstrap_ci",
    "operating_point_report",
    "stratified_metrics",
    "REPORT_DIR",
    "DEPLOYMENT_PREVALENCES",
    "audit_holdout",
    "executive_summary",
]
