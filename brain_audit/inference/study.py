"""The study-level model at inference: a run's finished Phase 5 rescoring each series of a scored folder.

Phase 5 (:mod:`brain_audit.train.study`) trains a sequence model over the slice model's embeddings of a whole
series read in z order (:mod:`brain_audit.model.sequence`). Here, while :func:`brain_audit.inference.predict_folder`
scores a folder, each slice's embedding (the Phase-4 model's ``avg_pool``, 1280 values for EfficientNetB0) is
kept in the resumable parts as float16 bytes, as Phase 5 stored the embeddings it trained on; once every part is
in, each series (slices of one ``series_id`` in the folder, readable ones, ordered by z) is scored whole with
:func:`brain_audit.model.sequence.score_series`. A slice without a series or z (no Series Instance UID or
Image Position (Patient) in its header, or a series with such a slice) cannot be placed in a sequence and keeps its
slice-model probability. The study model always reads the unflipped view: the embedding and probability it was
trained on, whatever the flip TTA does to the slice-model columns.

This module imports TensorFlow / Keras only inside the functions that run a model.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brain_audit.errors import ConfigError
from brain_audit.provenance import file_sha256
from brain_audit.run_layout import RunPaths

__all__ = ["EMBEDDING_FORMAT", "StudyModel", "decode_embeddings", "encode_embeddings", "find_study_model",
           "score_study"]

#: How the parts store an embedding: the slice model's layer and the dtype of the bytes (little-endian).
EMBEDDING_FORMAT = {"layer": "avg_pool", "dtype": "<f2"}

#: Phase 5's files that make it finished, in the order they are checked.
_PHASE5_FILES = ("model.keras", "operating_point.json", "metrics.json")

#: Series scored per call of the study model (bounds the padded (S, T, 1280) float32 input in memory).
_SERIES_PER_CALL = 128


@dataclasses.dataclass(frozen=True)
class StudyModel:
    """A finished Phase 5 of a run folder.

    Attributes:
        path: ``<run>/phase5/model.keras``.
        sha256: SHA-256 of that file.
        threshold: the patient threshold of ``phase5/operating_point.json`` (the slice one when it has none;
            None when it has neither).
        threshold_source: where ``threshold`` came from, in words.
    """

    path: Path
    sha256: str
    threshold: float | None
    threshold_source: str | None


def find_study_model(model: Any, study: bool | None) -> tuple[StudyModel | None, str | None]:
    """The study model to use for ``model`` (a run folder, a ``.keras`` file or a model in memory).

    Args:
        model: :func:`~brain_audit.inference.predict_folder`'s ``model``.
        study: True: use the run's Phase 5 (it must be finished); False: never; None: when finished.

    Returns:
        ``(study model, None)`` or ``(None, why not)``.

    Raises:
        ConfigError: ``study`` is True and ``model`` is no run folder with a finished Phase 5 (naming the missing
            file), or Phase 5 was trained on another Phase-4 model than the run holds now; ``study`` is not a
            bool or None.
    """
    if study is not None and not isinstance(study, bool):
        raise ConfigError(f"`study` must be True, False or None. Got {study!r} instead.")
    if study is False:
        return None, "not asked for (study=False)"
    if not isinstance(model, (str, Path)) or not Path(model).is_dir():
        what = "a model in memory" if not isinstance(model, (str, Path)) else f"the model file {str(model)!r}"
        if study:
            raise ConfigError(f"`study` needs a run folder with a finished Phase 5 (phase5/model.keras). "
                              f"Got {what} instead.")
        return None, f"{what} is no run folder: no Phase 5"
    paths = RunPaths(Path(model))
    for name in _PHASE5_FILES:
        file = paths.phase(5) / name
        if not file.is_file():
            if study:
                raise ConfigError(f"`study` needs a finished Phase 5: {file} is missing "
                                  "(run `brain-audit train --phase 5`, or predict with --no-study).")
            return None, f"no finished Phase 5 in the run folder ({file} is missing)"
    record = paths.phase(5) / "run.json"
    trained_on = (json.loads(record.read_text()).get("inputs") or {}).get("phase4_model") if record.is_file() else None
    if trained_on is not None and paths.model(4).is_file() and trained_on != file_sha256(paths.model(4)):
        why = (f"{paths.phase(5)} was trained on another Phase-4 model than {paths.model(4)} "
               "(its run.json records another SHA-256); retrain Phase 5")
        if study:
            raise ConfigError(f"`study` needs a Phase 5 of this run's slice model: {why}.")
        warnings.warn(f"{why}; the slice model scores alone", RuntimeWarning, stacklevel=3)
        return None, why
    operating = json.loads((paths.phase(5) / "operating_point.json").read_text())
    threshold, source = operating.get("patient_threshold"), "phase5/operating_point.json patient_threshold"
    if threshold is None and operating.get("threshold") is not None:  # as for Phase 4: the slice one instead
        threshold, source = operating["threshold"], "phase5/operating_point.json threshold (no patient_threshold)"
    if threshold is None:
        source = None
    return StudyModel(path=paths.model(5), sha256=file_sha256(paths.model(5)),
                      threshold=None if threshold is None else float(threshold), threshold_source=source), None


def encode_embeddings(embedding: np.ndarray) -> list[bytes]:
    """One ``bytes`` per row of float32 (N, D): the row as little-endian float16 (2 D bytes)."""
    e = np.ascontiguousarray(np.asarray(embedding, dtype=np.float32).astype(EMBEDDING_FORMAT["dtype"]))
    return [row.tobytes() for row in e]


def decode_embeddings(values: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    """float16 (N, D) of :func:`encode_embeddings`'s bytes (``dim`` D for N = 0), as stored: half the memory of
    float32; :func:`score_study` widens one group of series at a time."""
    if not len(values):
        return np.zeros((0, dim or 0), dtype=EMBEDDING_FORMAT["dtype"])
    return np.frombuffer(b"".join(values), dtype=EMBEDDING_FORMAT["dtype"]).reshape(len(values), -1)


def _placeable(slices: pd.DataFrame) -> np.ndarray:
    """bool (N,): slices with a series whose every slice has a finite z (the ones a sequence can hold)."""
    z_ok = np.isfinite(pd.to_numeric(slices["z"], errors="coerce").to_numpy(dtype=float))
    has = slices["series_id"].notna().to_numpy()
    bad_series = set(slices.loc[has & ~z_ok, "series_id"])
    return has & z_ok & ~slices["series_id"].isin(bad_series).to_numpy()


def score_study(study_model: Any, slices: pd.DataFrame, embedding: np.ndarray, probabilities: np.ndarray,
                fallback: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The study model's per-slice probabilities of a folder's scored slices.

    Args:
        study_model: the loaded Phase-5 model (:func:`brain_audit.model.sequence.build_sequence_model`).
        slices: one row per scored slice, indexed by image ID, with ``series_id`` (None when absent) and ``z``
            (mm, NaN when absent).
        embedding: float (N, D), the slice model's embeddings of the unflipped slices, rows as ``slices``
            (float16 as the parts store them is widened to float32 per group of series).
        probabilities: float64 (N, L), the slice model's probabilities of the unflipped slices.
        fallback: float64 (N, L), what a slice that no sequence holds keeps (the slice-model columns).
        batch_size: series per model call inside :func:`~brain_audit.model.sequence.score_series`.

    Returns:
        ``(p_study, placed)``: float64 (N, L) and bool (N,), True where the study model scored the slice. Series
        are scored in groups of whole series in sorted ``series_id`` order, so the result does not depend on the
        order of the rows.
    """
    from brain_audit.model.sequence import score_series

    out = np.array(fallback, dtype=np.float64, copy=True)
    placed = _placeable(slices)
    where = np.flatnonzero(placed)
    if not len(where):
        return out, placed
    table = slices.iloc[where][["series_id", "z"]].astype({"z": "float64"})
    emb = np.asarray(embedding)[where]
    prob = np.asarray(probabilities, dtype=np.float64)[where]
    series = np.asarray(table["series_id"], dtype=object)
    names = sorted(set(series))
    for start in range(0, len(names), _SERIES_PER_CALL):
        group = np.isin(series, names[start : start + _SERIES_PER_CALL])
        out[where[group]] = score_series(study_model, table.iloc[np.flatnonzero(group)],
                                         emb[group].astype(np.float32), prob[group], batch_size=batch_size)
    return out, placed
