"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence, calibration, patient-level
results, cluster-bootstrap intervals), ``subgroups`` (metrics with and without each mimic),
``holdout`` (the final model on the audit patients) and ``report`` (the executive summary).
"""

from __future__ import annotations

from brain_audit.audit.holdout import REPORT_DIR, DEPLOYMENT_PREVALENCES, audit_holdout
from brain_audit.audit.statistics import (
    threshold_for_sensitivity,
    confusion_at,
    predictive_values_at_prevalence,
    calibration_bins,
    expected_calibration_error,
    patient_level,
    bootstrap_ci,
    operating_point_report,
)
from brain_audit.audit.subgroups import stratified_metrics

__all__ = [
    "REPORT_DIR",
    "DEPLOYMENT_PREVALENCES",
    "audit_holdout",
    "threshold_for_sensitivity",
    "confusion_at",
    "predictive_values_at_prevalence",
    "calibration_bins",
    "expected_calibration_error",
    "patient_level",
    "bootstrap_ci",
    "operating_point_report",
    "stratified_metrics",
]
