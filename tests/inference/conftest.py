"""Fixtures of the inference tests: a test folder and a tiny six-label model per session, a scored run per module;
run folders with a hand-built Phase 5 and the study model's scores computed by hand (test_predict_study.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from brain_audit.dataset.cache import preprocess_slice
from brain_audit.dicom import read_hu
from brain_audit.model import save_model
from brain_audit.model.sequence import build_sequence_model, embedding_model, score_series
from brain_audit.rsna import LABEL_COLUMNS
from support.scoring import SIZE, spread_model, write_test_folder


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


@pytest.fixture(scope="session")
def study_run(data, six_model, tmp_path_factory):
    """(run folder with phase4/ (the six-label model) and a finished phase5/, the study model, its path).

    Phase 5 is built, not trained (:func:`study_model`: corrections along z that are large); its patient
    threshold lies between the two studies' maxima of the study model computed by hand (one flagged, one not)."""
    run = tmp_path_factory.mktemp("study_run")
    sequence = write_run(run, six_model[0], study=True)
    good = data[1]["good"]
    ids = sorted(good)
    _, p_study = study_by_hand(six_model[1], sequence, good, ids)
    studies = np.array([good[i]["study"] for i in ids])
    maxima = [p_study[studies == s, -1].max() for s in sorted(set(studies))]  # the `any` column
    threshold = float(np.mean(maxima))
    (run / "phase5" / "operating_point.json").write_text(json.dumps({"threshold": threshold,
                                                                      "patient_threshold": threshold}))
    return run, sequence, run / "phase5" / "model.keras"


def study_model(path: Path, outputs: int = len(LABEL_COLUMNS), seed: int = 0) -> keras.Model:
    """A Phase-5 sequence model (``build_sequence_model(1280, outputs, units=8)``, no dropout or noise) whose
    zero-initialised correction layer is set to random weights, so that each slice's probability moves with its
    neighbours along z by a clearly visible amount. Saved to ``path`` (``.keras``) and returned."""
    model = build_sequence_model(1280, outputs, units=8, dropout=0.0, logit_noise=0.0, seed=seed)
    delta = model.get_layer("delta")
    kernel, bias = delta.get_weights()
    rng = np.random.default_rng(seed)
    delta.set_weights([rng.normal(0, 1.5, kernel.shape).astype(np.float32), bias])
    save_model(model, path)
    return model


def write_run(run: Path, slice_model: Path, study: bool, threshold: float = 0.5) -> keras.Model | None:
    """A run folder as a finished training leaves it for prediction: ``phase4/`` (a copy of ``slice_model`` and
    an operating point) and with ``study`` a finished ``phase5/`` (:func:`study_model`, ``operating_point.json``
    with patient threshold ``threshold``, ``metrics.json``). Returns the study model or None."""
    (run / "phase4").mkdir(parents=True, exist_ok=True)
    shutil.copy(slice_model, run / "phase4" / "model.keras")
    (run / "phase4" / "operating_point.json").write_text(json.dumps({"threshold": 0.5, "patient_threshold": 0.5}))
    if not study:
        return None
    (run / "phase5").mkdir(exist_ok=True)
    model = study_model(run / "phase5" / "model.keras")
    (run / "phase5" / "operating_point.json").write_text(json.dumps({"threshold": threshold,
                                                                      "patient_threshold": threshold}))
    (run / "phase5" / "metrics.json").write_text("{}")
    return model


def study_by_hand(net: keras.Model, sequence: keras.Model, good: dict, ids: list[str], z_sign: float = 1.0,
                  flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(slice-model probabilities, study-model probabilities) of the test-folder files ``ids`` (``good`` as
    :func:`write_test_folder` returns it), float64 (N, L), rows in ``ids`` order, computed without
    brain_audit.inference: read_hu -> preprocess_slice, the embedder one slice per call, float16 embeddings,
    ``score_series`` over the series and z written into the files (z times ``z_sign``)."""
    x = np.stack([preprocess_slice(read_hu(good[i]["path"]), SIZE) for i in ids]).astype(np.float32)[..., None]
    if flip:
        x = np.flip(x, axis=2)
    emb, p = embedding_model(net).predict(x, batch_size=1, verbose=0)
    emb = np.asarray(emb).astype(np.float16).astype(np.float32)
    p = np.asarray(p, np.float64)
    table = pd.DataFrame({"series_id": [good[i]["series"] for i in ids],
                          "z": [z_sign * good[i]["z"] for i in ids]}, index=pd.Index(ids))
    return p, score_series(sequence, table, emb, p)


@pytest.fixture(scope="session")
def make_run():
    """:func:`write_run`."""
    return write_run


@pytest.fixture(scope="session")
def by_hand():
    """:func:`study_by_hand`."""
    return study_by_hand
