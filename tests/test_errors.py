"""brain_audit.errors: one exception family, ValueError where callers already catch it, messages that name the file."""

from __future__ import annotations

import pickle

import pytest

from brain_audit.errors import (
    BrainAuditError,
    CacheError,
    ConfigError,
    DicomReadError,
    LabelFileError,
    WeightsFileError,
    WeightsFileNotFoundError,
)


@pytest.mark.parametrize(
    "error, base",
    [(DicomReadError, ValueError), (LabelFileError, ValueError), (ConfigError, ValueError), (CacheError, RuntimeError),
     (WeightsFileError, ValueError), (WeightsFileNotFoundError, FileNotFoundError)],
)
def test_every_error_is_a_brain_audit_error_and_its_builtin(error, base):
    assert issubclass(error, BrainAuditError) and issubclass(error, base)
    assert issubclass(BrainAuditError, Exception) and not issubclass(BrainAuditError, ValueError)


@pytest.mark.parametrize("path", ["/data/rsna/stage_2_train/ID_0a1b.dcm", r"C:\rsna\ID_0a1b.dcm", "ID_0a1b.dcm"])
def test_dicom_read_error_names_the_file_then_the_reason(path):
    err = DicomReadError(path, "(0028,0101) Bits Stored is 0; cannot decode pixels")
    assert str(err) == "ID_0a1b.dcm: (0028,0101) Bits Stored is 0; cannot decode pixels"
    assert err.path == path and err.reason == "(0028,0101) Bits Stored is 0; cannot decode pixels"
    with pytest.raises(ValueError, match=r"^ID_0a1b\.dcm: \(0028,0101\) Bits Stored is 0"):
        raise err


def test_dicom_read_error_survives_a_process_pool():
    """Pickled as a worker process returns it: same message, path and reason."""
    back = pickle.loads(pickle.dumps(DicomReadError("/x/ID_0a1b.dcm", "file truncated")))
    assert type(back) is DicomReadError
    assert (str(back), back.path, back.reason) == ("ID_0a1b.dcm: file truncated", "/x/ID_0a1b.dcm", "file truncated")


def test_a_missing_weights_file_is_both_of_its_families_and_survives_a_pool():
    err = WeightsFileNotFoundError("/runs/m.keras: no such model file")
    assert isinstance(err, WeightsFileError) and isinstance(err, ValueError) and isinstance(err, FileNotFoundError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is WeightsFileNotFoundError and str(back) == "/runs/m.keras: no such model file"
