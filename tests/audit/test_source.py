"""brain_audit.audit.source: synthetic or real, and mimic presence from mask files written by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brain_audit.audit.source import data_line, data_source, generated_counts, mimic_presence
from brain_audit.dataset.masks import write_masks


def test_real_data_say_so(tmp_path):
    assert data_source(tmp_path)["synthetic"] is False and generated_counts(tmp_path) is None
    assert data_line(data_source(tmp_path)).startswith("**Real data")
    assert mimic_presence(tmp_path, ["ID_a"]) is None  # no mask folder: no mimic subgroups


def test_a_phantom_manifest_makes_it_synthetic(tmp_path):
    (tmp_path / "phantom_manifest.json").write_text(json.dumps(
        {"generator": {"name": "brain_audit.phantom"}, "counts": {"images": 10, "corrupt_files": 2, "patients": 3}}))
    assert data_source(tmp_path)["synthetic"] is True
    assert generated_counts(tmp_path) == {"images": 12, "patients": 3}
    assert data_line(data_source(tmp_path)).startswith("**Synthetic phantom cohort, not a clinical result")


def test_mimic_presence_from_masks(tmp_path):
    empty = np.zeros((4, 4), bool)
    coil = empty.copy()
    coil[1, 1] = True
    write_masks(tmp_path, "ID_a", {"subdural": empty, "coil": coil, "frontal_bone": empty})
    write_masks(tmp_path, "ID_b", {"subdural": empty, "coil": empty, "frontal_bone": empty})
    with pytest.warns(RuntimeWarning, match="1 of 3 audited images have no mask file"):
        table = mimic_presence(tmp_path, ["ID_a", "ID_b", "ID_c"])
    assert list(table.columns) == ["coil", "frontal_bone"]
    assert table["coil"].tolist() == [True, False, False] and not table["frontal_bone"].any()
