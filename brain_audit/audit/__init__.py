"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence with intervals, calibration error,
patient-level results, Wilson, Clopper-Pearson and cluster-bootstrap percentile / BCa intervals),
``calibration`` (calibration slope and intercept, Platt / isotonic recalibration, prior shift), ``decision``
(net benefit, decision curves), ``attention_evidence`` (where the model looks, with patient-cluster
intervals, beside chance), ``attention_audit`` (the attention audit Phase 3 and the held-out audit run),
``subgroups`` (metrics with and without each mimic), ``holdout`` (the final model on the audit patients),
``report`` (the executive summary) and ``bone_study`` (the model's scores with the skull removed, against
an equal-area control change).
"""

from __future__ import annotations

from brain_audit.audit.attention_audit import attention_audit
from brain_audit.audit.attention_evidence import attention_evidence, attention_markdown
from brain_audit.audit.bone_study import bone_study, mcnemar_exact, null_perturbation, remove_bone, run_bone_study
from brain_audit.audit.calibration import Recalibration, calibration_fit, fit_recalibration, prior_shift
from brain_audit.audit.decision import net_benefit, net_benefit_ci
from brain_audit.audit.holdout import DEPLOYMENT_PREVALENCES, REPORT_DIR, audit_holdout
from brain_audit.audit.report import executive_summary
from brain_audit.audit.statistics import (
    MIN_ESTIMABLE,
    bootstrap_ci,
    calibration_bins,
    clopper_pearson_interval,
    cluster_bootstrap,
    cluster_bootstrap_interval,
    confusion_at,
    expected_calibration_error,
    operating_point_report,
    patient_level,
    predictive_value_intervals,
    predictive_values_at_prevalence,
    proportion_interval,
    threshold_for_sensitivity,
    wilson_interval,
)
from brain_audit.audit.subgroups import stratified_metrics

__all__ = [
    "DEPLOYMENT_PREVALENCES",
    "MIN_ESTIMABLE",
    "REPORT_DIR",
    "Recalibration",
    "attention_audit",
    "attention_evidence",
    "attention_markdown",
    "audit_holdout",
    "bone_study",
    "bootstrap_ci",
    "calibration_bins",
    "calibration_fit",
    "clopper_pearson_interval",
    "cluster_bootstrap",
    "cluster_bootstrap_interval",
    "confusion_at",
    "executive_summary",
    "expected_calibration_error",
    "fit_recalibration",
    "mcnemar_exact",
    "net_benefit",
    "net_benefit_ci",
    "null_perturbation",
    "operating_point_report",
    "patient_level",
    "predictive_value_intervals",
    "predictive_values_at_prevalence",
    "prior_shift",
    "proportion_interval",
    "remove_bone",
    "run_bone_study",
    "stratified_metrics",
    "threshold_for_sensitivity",
    "wilson_interval",
]
