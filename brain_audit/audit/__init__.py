"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence, calibration, patient-level
results, cluster-bootstrap intervals), ``attention_evidence`` (where the model looks, with patient-cluster
intervals, beside chance), ``subgroups`` (metrics with and without each mimic),
``holdout`` (the final model on the audit patients) and ``report`` (the executive summary).
"""

from __future__ import annotations

from brain_audit.audit.attention_evidence import (
    attention_evidence,
    attention_markdown,
    cluster_bootstrap,
    wilson_interval,
)
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
    "DEPLOYMENT_PREVALENCES",
    "REPORT_DIR",
    "attention_evidence",
    "attention_markdown",
    "audit_holdout",
    "bootstrap_ci",
    "calibration_bins",
    "cluster_bootstrap",
    "confusion_at",
    "executive_summary",
    "expected_calibration_error",
    "operating_point_report",
    "patient_level",
    "predictive_values_at_prevalence",
    "stratified_metrics",
    "threshold_for_sensitivity",
    "wilson_interval",
]
