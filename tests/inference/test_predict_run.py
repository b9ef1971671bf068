"""predict_folder on a finished run: the audit patients' DICOM files scored from disk give the probabilities the
held-out audit computed from the training cache, and the studies it flags are the patients the audit called.

Expected values come from the audit's own report (clinical_audit_report/slices.csv and patients.csv of the quick
demo run, tests/conftest.py ``quick_run``), computed by another path: the HU cache and ``model.predict_ids``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from brain_audit.inference import predict_folder
from brain_audit.rsna import image_path
from brain_audit.run_layout import RunPaths

pytestmark = pytest.mark.slow


def test_the_audit_patients_scored_from_their_files_match_the_audit(quick_run, tmp_path):
    config, out, _ = quick_run
    report = RunPaths(out).report
    audit = pd.read_csv(report / "slices.csv")
    folder = tmp_path / "stage_2_test"
    folder.mkdir()
    for image_id in audit["image_id"]:
        shutil.copy(image_path(config.data_root, image_id), folder)
    summary = predict_folder(out, folder, tmp_path / "out", workers=0, progress=False)  # the run folder
    assert summary["scored"] == len(audit) and summary["unreadable"] == 0
    assert summary["submission"] is None and config.head in summary["submission_reason"]

    slices = pd.read_csv(tmp_path / "out" / "slices.csv").set_index("image_id")
    np.testing.assert_allclose(slices.loc[audit["image_id"], "p_any"], audit["probability"], rtol=0, atol=1e-5)

    patients = pd.read_csv(report / "patients.csv").set_index("patient_id").sort_index()
    studies = pd.read_csv(tmp_path / "out" / "studies.csv").set_index("patient_id").sort_index()
    assert list(studies.index) == list(patients.index)  # one study per phantom patient
    np.testing.assert_allclose(studies["p_any_max"], patients["max_probability"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(studies["flagged"].astype(bool), patients["called_bleed"].astype(bool))
    np.testing.assert_array_equal(studies["slices"], patients["slices"])
