"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence, calibration, patient-level results,
Wilson and cluster-bootstrap intervals), ``attention_evidence`` (where the model looks, with patient-cluster
intervals, beside chance), ``attention_audit`` (the attention audit Phase 3 and the held-out audit run),
``subgroups`` (metrics with and without each mimic), ``holdout`` (the final model on the audit patients),
``report`` (the executive summary), ``bone_study`` (the model's scores with the skull removed, against
an equal-area control change), ``plots`` (the audit's figures for a clinician reader: ROC, predictive values,
calibration, decision curve, STARD flow diagram, confusion matrices, case tiles) and ``html`` (the report as
one self-contained ``index.html``, figures embedded).
"""

from __future__ import annotations

from brain_audit.audit.attention_audit import attention_audit
from brain_audit.audit.attention_evidence import attention_evidence, attention_markdown
from brain_audit.audit.bone_study import bone_study, mcnemar_exact, null_perturbation, remove_bone, run_bone_study
from brain_audit.audit.holdout import DEPLOYMENT_PREVALENCES, REPORT_DIR, audit_holdout
from brain_audit.audit.html import markdown_to_html, write_html
from brain_audit.audit.plots import (
    plot_calibration,
    plot_case,
    plot_confusion,
    plot_decision_curve,
    plot_flow,
    plot_predictive_values,
    plot_roc,
    roc_band,
)
from brain_audit.audit.report import executive_summary
from brain_audit.audit.statistics import (
    bootstrap_ci,
    calibration_bins,
    cluster_bootstrap,
    confusion_at,
    expected_calibration_error,
    operating_point_report,
    patient_level,
    predictive_values_at_prevalence,
    threshold_for_sensitivity,
    wilson_interval,
)
from brain_audit.audit.subgroups import stratified_metrics

__all__ = [
    "DEPLOYMENT_PREVALENCES",
    "REPORT_DIR",
    "attention_audit",
    "attention_evidence",
    "attention_markdown",
    "audit_holdout",
    "bone_study",
    "bootstrap_ci",
    "calibration_bins",
    "cluster_bootstrap",
    "confusion_at",
    "executive_summary",
    "expected_calibration_error",
    "markdown_to_html",
    "mcnemar_exact",
    "null_perturbation",
    "operating_point_report",
    "patient_level",
    "plot_calibration",
    "plot_case",
    "plot_confusion",
    "plot_decision_curve",
    "plot_flow",
    "plot_predictive_values",
    "plot_roc",
    "predictive_values_at_prevalence",
    "remove_bone",
    "roc_band",
    "run_bone_study",
    "stratified_metrics",
    "threshold_for_sensitivity",
    "wilson_interval",
    "write_html",
]
