"""The phantom cohort most phantom tests read (tests/phantom/conftest.py writes it once per session)."""

from __future__ import annotations

from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.lesions import MIMICS

COHORT = PhantomConfig(
    patients=6, slices_per_patient=10, size=128, seed=11, prevalence=0.7, defect_fraction=0.25, corrupt_files=2,
    mimic_probabilities={m: (0.3, 0.3) for m in MIMICS},
)
