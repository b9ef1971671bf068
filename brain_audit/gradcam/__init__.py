"""Where the model looks, measured: maps, where they fall, and shortcut tests.

``maps`` (batched Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM of the logit; the audits' fine-layer choice),
``attention`` (energy and enrichment per anatomical region, the pointing game beside its chance baselines, flags
relative to chance; one profile loop for Phase 3, the audit and DICOM files), ``coverage`` (which slices an
audit explains), ``shortcuts`` (counterfactual intervention, Adebayo et al.'s randomisation check),
``occlusion`` (occlusion-sensitivity maps: what hiding a window does to the logit), ``overlays`` (the seed's pictures) and ``files`` (``brain-audit gradcam`` on DICOM files).
"""

from __future__ import annotations

from brain_audit.gradcam.attention import (
    BONE_FOCUS_ENRICHMENT,
    BONE_FOCUS_MIN_SHARE,
    ENERGY_BASELINES,
    FLAGS,
    HIT_BASELINES,
    HIT_RADIUS_MM,
    HIT_RADIUS_PX,
    INTRACRANIAL_MIN_ENRICHMENT,
    MIMIC_REGIONS,
    OUTSIDE_HEAD_FOCUS_ENRICHMENT,
    OUTSIDE_HEAD_FOCUS_MIN_SHARE,
    attention_profile,
    audit_batch,
    chance_flags,
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
from brain_audit.gradcam.occlusion import OCCLUSION_PATCH_FRACTION, local_median, occlusion_maps
from brain_audit.gradcam.overlays import overlay_title, save_overlay
from brain_audit.gradcam.shortcuts import SANITY_MAX_RHO, counterfactual_effect, randomization_check

__all__ = [
    "OCCLUSION_PATCH_FRACTION",
    "local_median",
    "occlusion_maps",
    "BONE_FOCUS_ENRICHMENT",
    "BONE_FOCUS_MIN_SHARE",
    "DEFAULT_LAYERS",
    "ENERGY_BASELINES",
    "METHODS",
    "AUDIT_METHOD",
    "AUDIT_MIN_CELLS",
    "audit_layer",
    "audit_cam",
    "cell_size_mm",
    "FLAGS",
    "HIT_BASELINES",
    "HIT_RADIUS_MM",
    "HIT_RADIUS_PX",
    "INTRACRANIAL_MIN_ENRICHMENT",
    "MIMIC_REGIONS",
    "OUTSIDE_HEAD_FOCUS_ENRICHMENT",
    "OUTSIDE_HEAD_FOCUS_MIN_SHARE",
    "SANITY_MAX_RHO",
    "GradCAM",
    "attention_profile",
    "audit_batch",
    "audit_files",
    "cached_cam",
    "chance_flags",
    "counterfactual_effect",
    "find_layer",
    "grad_cam",
    "layer_names",
    "mimic_presence",
    "overlay_title",
    "profile_cached",
    "profile_columns",
    "randomization_check",
    "resize_map",
    "save_overlay",
]
