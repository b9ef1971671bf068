"""Inference: a trained model applied to a folder of DICOM files, and the Kaggle submission.

``reading`` (the files of a folder, read in worker processes as the cache prepares slices),
``submission`` (``submission.csv`` in the order of the challenge's sample), ``study`` (a run's Phase-5
study model rescoring each series whole, in z order) and ``predict`` (:func:`predict_folder`, the one entry
point: resumable, bounded memory; ``brain-audit predict``).

Example::

    from brain_audit.inference import predict_folder

    summary = predict_folder("runs/x", "/kaggle/input/rsna/stage_2_test", "/kaggle/working/predict",
                             layout="rsna", tta=True)

TensorFlow is imported only when :func:`predict_folder` loads the model, so the worker processes that
read files stay light.
"""

from __future__ import annotations

from brain_audit.inference.predict import PREDICT_FORMAT, predict_folder, summary_line
from brain_audit.inference.reading import LAYOUTS, list_files
from brain_audit.inference.submission import FALLBACK, SAMPLE_SUBMISSION, TEST_DIR, write_submission

__all__ = [
    "PREDICT_FORMAT",
    "predict_folder",
    "summary_line",
    "LAYOUTS",
    "list_files",
    "TEST_DIR",
    "SAMPLE_SUBMISSION",
    "FALLBACK",
    "write_submission",
]
