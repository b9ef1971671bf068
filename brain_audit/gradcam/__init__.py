"""Where the model looks, measured: maps, where they fall, and shortcut tests.

``maps`` (batched Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM of the logit; the audits' fine-layer choice), ``attention``
(energy per anatomical region, pointing game, flags; one profile loop for Phase 3, the audit
and DICOM files), ``shortcuts`` (counterfactual intervention, Adebayo et al.'s randomisation
check), ``overlays`` (the seed's pictures) and ``files`` (``brain-audit gradcam`` on DICOM files).
"""

from __future__ import annotations

from brain_audit.gradcam.attention import (
    BONE_FOCUS_SHARE,
    FLAGS,
    HIT_RADIUS_PX,
    INTRACRANIAL_MIN_SHARE,
    MIMIC_REGIONS,
    OUTSIDE_HEAD_FOCUS_SHARE,
    attention_profile,
    audit_batch,
    mimic_presence,
    profile_cached,
    profile_columns,
)
from brain_audit.gradcam.files import audit_files
from brain_audit.gradcam.maps import (
    AUDIT_METHOD,
    AUDIT_MIN_CELLS,
    DEFAULT_LAYERS,
    METHODS,
    GradCAM,
    audit_cam,
    audit_layer,
    cached_cam,
    cell_size_mm,
    find_layer,
    grad_cam,
    layer_names,
    resize_map,
)
from brain_audit.gradcam.overlays import overlay_title, save_overlay
from brain_audit.gradcam.shortcuts import SANITY_MAX_RHO, counterfactual_effect, randomization_check

__all__ = [
    "DEFAULT_LAYERS",
    "METHODS",
    "AUDIT_METHOD",
    "AUDIT_MIN_CELLS",
    "audit_layer",
    "audit_cam",
    "cell_size_mm",
    "layer_names",
    "find_layer",
    "GradCAM",
    "grad_cam",
    "cached_cam",
    "resize_map",
    "BONE_FOCUS_SHARE",
    "OUTSIDE_HEAD_FOCUS_SHARE",
    "INTRACRANIAL_MIN_SHARE",
    "HIT_RADIUS_PX",
    "FLAGS",
    "attention_profile",
    "MIMIC_REGIONS",
    "mimic_presence",
    "profile_columns",
    "audit_batch",
    "profile_cached",
    "counterfactual_effect",
    "SANITY_MAX_RHO",
    "randomization_check",
    "overlay_title",
    "save_overlay",
    "audit_files",
]
