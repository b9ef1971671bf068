"""Synthetic head-CT cohorts in the RSNA 2019 layout, with ground truth for every lesion and device.

``config`` (what to generate), ``anatomy`` (one patient's anatomy and its slices in HU),
``cohort`` (the writer: DICOM files, labels, manifest), ``truth`` (masks and manifest read back)
and ``render`` (re-rendered and counterfactual slices, previews).
"""

from __future__ import annotations

from brain_audit.phantom.anatomy import MIMICS, PAD_HU_FILE, TRUTH_EXTRA, Patient, build_patient, padding_mask, render
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import (
    DEFAULT_MIMIC_PROBABILITIES,
    DEFAULT_SUBTYPE_MIX,
    GENERATOR_VERSION,
    PhantomConfig,
    parse_shortcut,
)
from brain_audit.phantom.render import preview, render_counterfactual, render_image, render_slice
from brain_audit.phantom.truth import MANIFEST, TRUTH_DIR, TRUTH_KEYS, load_manifest, load_truth

__all__ = [
    "MIMICS",
    "TRUTH_EXTRA",
    "PAD_HU_FILE",
    "Patient",
    "build_patient",
    "padding_mask",
    "render",
    "generate_cohort",
    "GENERATOR_VERSION",
    "DEFAULT_SUBTYPE_MIX",
    "DEFAULT_MIMIC_PROBABILITIES",
    "PhantomConfig",
    "parse_shortcut",
    "render_slice",
    "render_image",
    "render_counterfactual",
    "preview",
    "TRUTH_DIR",
    "MANIFEST",
    "TRUTH_KEYS",
    "load_manifest",
    "load_truth",
]
