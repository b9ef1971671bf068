"""DICOM files edited with pydicom for the bad-input tests (tests/dataset/test_index.py, tests/test_bad_input_corpus.py)."""

from __future__ import annotations

import io
import warnings

import pydicom


def edited(data: bytes, **changes) -> bytes:
    """The file ``data`` with attributes set (or deleted when None), re-encoded by pydicom."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RSNA-style 'ID_' UIDs are not valid UI values
        ds = pydicom.dcmread(io.BytesIO(data))
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
