"""brain_audit.phantom.truth: the truth masks of a phantom cohort, read back."""

from __future__ import annotations

import pytest

from brain_audit.errors import BrainAuditError
from brain_audit.phantom.truth import TRUTH_KEYS, load_manifest, load_truth


class TestTruthFiles:
    def test_truth_files(self, cohort):
        image_id = load_manifest(cohort)["images"][3]["image_id"]
        truth = load_truth(cohort, image_id)
        assert tuple(truth) == TRUTH_KEYS
        assert all(v.dtype == bool and v.shape == (128, 128) for v in truth.values())
        assert truth["head"].sum() > truth["intracranial"].sum() > 0
        assert not (truth["skull"] & truth["intracranial"]).any()
        with pytest.raises(BrainAuditError, match=r"^ID_000000000\.npz: no masks for ID_000000000 in .*phantom_truth$"):
            load_truth(cohort, "ID_000000000")
