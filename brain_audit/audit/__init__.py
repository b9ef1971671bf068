"""The held-out clinical audit and the statistics it reports.

``statistics`` (operating points, PPV at deployment prevalence with intervals, calibration error,
patient-level results, Wilson, Clopper-Pearson and cluster-bootstrap percentile / BCa intervals),
``calibration`` (calibration slope and intercept, Platt / isotonic recalibration, prior shift), ``decision``
(net benefit, decision curves), ``attention_evidence`` (where the model looks, with patient-cluster
intervals, beside chance), ``attention_audit`` (the attention audit Phase 3 and the held-out audit run),
``subgroups`` (per subtype, with and without each mimic), ``source`` (synthetic or real; mimics per slice),
``flow`` (the STARD flow of every image), ``sections`` (targets, calibration, prior shift, net benefit, the
dropout comparison, the shortcuts found), ``gallery`` (a picture of every error patient), ``holdout`` (the final
model on the audit patients), ``report`` (the figures, executive summary and ``index.html``), ``bone_study`` (the model's scores with the skull removed, against
an equal-area control change), ``plots`` (the audit's figures for a clinician reader: ROC, predictive values,
calibration, decision curve, STARD flow diagram, confusion matrices, case tiles) and ``html`` (the report as
one self-contained ``index.html``, figures embedded).
"""

from __future__ import annotations

from brain_audit.audit.attention_audit import attention_audit
from brain_audit.audit.attention_evidence import attention_evidence, attention_markdown
from brain_audit.audit.bone_study import bone_study, mcnemar_exact, null_perturbation, remove_bone, run_bone_study
from brain_audit.audit.calibration import Recalibration, calibration_fit, fit_recalibration, prior_shift
from brain_audit.audit.decision import net_benefit, net_benefit_ci
from brain_audit.audit.flow import audit_flow
from brain_audit.audit.holdout import DEPLOYMENT_PREVALENCES, REPORT_DIR, audit_holdout, refresh_shortcuts
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
from brain_audit.audit.report import executive_summary, write_report
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
from brain_audit.audit.subgroups import stratified_metrics, subgroup_report

__all__ = [
    "DEPLOYMENT_PREVALENCES",
    "MIN_ESTIMABLE",
    "REPORT_DIR",
    "Recalibration",
    "attention_audit",
    "attention_evidence",
    "attention_markdown",
    "audit_flow",
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
    "markdown_to_html",
    "mcnemar_exact",
    "net_benefit",
    "net_benefit_ci",
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
    "predictive_value_intervals",
    "predictive_values_at_prevalence",
    "prior_shift",
    "proportion_interval",
    "refresh_shortcuts",
    "remove_bone",
    "roc_band",
    "run_bone_study",
    "stratified_metrics",
    "subgroup_report",
    "threshold_for_sensitivity",
    "wilson_interval",
    "write_html",
    "write_report",
]
