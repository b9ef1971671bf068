"""Synthetic head-CT cohorts in the RSNA 2019 layout, with ground truth for every lesion and device.

The RSNA data cannot be shipped, so brain_audit brings its own: axial non-contrast head-CT
slices in Hounsfield units with the five RSNA hemorrhage subtypes, hemorrhage mimics and
devices, and plantable Clever-Hans shortcuts, written as the Kaggle dataset is laid out
(:mod:`brain_audit.rsna`) plus per-slice truth masks in the dataset mask format
(:mod:`brain_audit.dataset.masks`). Because the generator knows where every lesion and device
is, Grad-CAM and the audit can be scored against truth.

Modules: ``config`` (what to generate), ``anatomy`` (the head), ``skull_base`` (bone by level: skull
base, frontal sinus, vertex partial volume), ``lesions`` (bleeds, mimics, devices), ``render`` (a patient and its slices; re-renders, counterfactuals, previews),
``cohort`` (the writer: DICOM files, labels, truth, manifest) and ``truth`` (read back).

HU targets, from one real 512 x 512 supratentorial head-CT slice and the literature
(``../shared/reference/real_head_ct.md``; ``tests/phantom/test_anatomy.py`` and ``test_lesions.py`` check the ranges):
intracranial 12 / 43 HU at p5 / p95, skull median ~750 HU and p95 ~1,300 after partial
volume (not a flat 1,500), scalp with subcutaneous fat (median about -30 HU), air about
-990 HU with ~5 HU noise, a curved head holder of ~280 HU under the occiput, and padding
outside the reconstruction circle stored as -3,024 HU (read back as air by
:func:`brain_audit.dicom.read_hu`). Lesion and mimic densities: :mod:`brain_audit.phantom.lesions`.
"""

from __future__ import annotations

from brain_audit.phantom.anatomy import PAD_HU_FILE, Patient, padding_mask
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import (
    DEFAULT_MIMIC_PROBABILITIES,
    DEFAULT_SUBTYPE_MIX,
    GENERATOR_VERSION,
    PhantomConfig,
    parse_shortcut,
)
from brain_audit.phantom.lesions import DEVICES, MIMICS, TRUTH_EXTRA, Lesion
from brain_audit.phantom.render import build_patient, preview, render, render_counterfactual, render_image, render_slice
from brain_audit.phantom.truth import (
    MANIFEST,
    TEST_LABELS,
    TEST_MANIFEST,
    TRUTH_DIR,
    TRUTH_KEYS,
    load_manifest,
    load_test_manifest,
    load_truth,
    write_truth,
)

__all__ = [
    "DEFAULT_MIMIC_PROBABILITIES",
    "DEFAULT_SUBTYPE_MIX",
    "DEVICES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "MIMICS",
    "PAD_HU_FILE",
    "TEST_LABELS",
    "TEST_MANIFEST",
    "TRUTH_DIR",
    "TRUTH_EXTRA",
    "TRUTH_KEYS",
    "Lesion",
    "Patient",
    "PhantomConfig",
    "build_patient",
    "generate_cohort",
    "load_manifest",
    "load_test_manifest",
    "load_truth",
    "padding_mask",
    "parse_shortcut",
    "preview",
    "render",
    "render_counterfactual",
    "render_image",
    "render_slice",
    "write_truth",
]
