"""Fixtures of the inference tests: a test folder and a tiny six-label model per session, a scored run per module."""

from __future__ import annotations

import pytest

from support.scoring import spread_model, write_test_folder


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """(dataset root, the folder's truth; see support.scoring.write_test_folder)."""
    root = tmp_path_factory.mktemp("rsna_test")
    return root, write_test_folder(root)


@pytest.fixture(scope="session")
def six_model(tmp_path_factory):
    """(path of the saved .keras six-label model, the model)."""
    path = tmp_path_factory.mktemp("model") / "six.keras"
    return path, spread_model(path)


@pytest.fixture(scope="module")
def scored(data, six_model, tmp_path_factory):
    """(out folder, summary) of predict_folder on the test folder, in chunks of 5 files, in this process."""
    from brain_audit.inference import predict_folder

    out = tmp_path_factory.mktemp("predicted")
    summary = predict_folder(six_model[0], data[0] / "stage_2_test", out, workers=0, chunk=5, progress=False)
    return out, summary
