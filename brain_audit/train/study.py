"""Phase 5 (optional): the study-level sequence model over whole series, after Phase 4.

The Phase-4 slice model embeds every slice of every *whole* series of the train and validation patients
(:func:`brain_audit.dataset.series.complete_series`: the cache holds every readable slice the header index
lists); a bidirectional GRU over each series in z order (:mod:`brain_audit.model.sequence`) learns to correct a
slice's score from its neighbours, on train series only. Its two thresholds are chosen on validation as
Phase 4's are: per slice, and per patient (a patient's score is its most suspicious corrected slice), for
``phase4.target_sensitivity``. The audit (:mod:`brain_audit.audit.aggregation`) compares it with the max-slice
rule on the held-out patients.

Outputs in ``<out>/phase5/``: ``embeddings/<split>.npz`` (image IDs, float16 embeddings, the slice model's
probabilities; written atomically, reused on resume), ``checkpoint/`` (per epoch, :func:`fit_resumable`),
``model.keras``, ``operating_point.json``, ``history.csv``, ``metrics.json`` (validation: both aggregations on
the same slices and patients) and ``run.json``. Run it with :func:`brain_audit.train.phases.run_phase` (phase 5),
which reuses a finished Phase 5 only for the request its ``run.json`` records.

The embeddings of train series come from a model trained on those slices, so they are more confident than on
new slices; the logit noise of :class:`brain_audit.config.StudyPlan` stands in for out-of-fold embeddings,
which this stage does not compute.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from brain_audit.audit.statistics import confusion_at, patient_level, threshold_for_sensitivity
from brain_audit.config import RunConfig
from brain_audit.dataset.index import read_index
from brain_audit.dataset.series import complete_series
from brain_audit.errors import ConfigError
from brain_audit.model.predictions import any_column, slice_features
from brain_audit.model.sequence import (
    build_sequence_model,
    compile_sequence_model,
    embedding_model,
    pack_inputs,
    score_series,
)
from brain_audit.model.weights import load_model, save_model
from brain_audit.provenance import atomic_write_bytes, file_sha256, write_json
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import RunPaths
from brain_audit.train.prepare import open_run_cache
from brain_audit.train.reuse import _phase_record
from brain_audit.train.runtime import _seed, fit_resumable

__all__ = ["STUDY_PHASE", "series_slices", "train_study"]

#: The phase number of the study stage (its folder is ``phase5/``).
STUDY_PHASE = 5


def series_slices(cache: Any, index: pd.DataFrame, split: str) -> pd.DataFrame:
    """The cached slices of ``split`` whose series the cache holds whole, as cache table rows (indexed by ID).

    A slice the cache could not read (``skipped.csv``) does not make its series incomplete: it is missing for
    every reader, as a broken image is in a viewer.
    """
    rows = cache.table.loc[cache.ids(split)]
    listed = index.loc[~index.index.isin(cache.skipped["image_id"].astype(str))]
    whole = complete_series(rows, listed)
    return rows.loc[rows["series_id"].astype(str).isin(whole)]


def _labels(config: RunConfig) -> list[str]:
    return ["any"] if config.head == "any" else list(LABEL_COLUMNS)


def _features(embedder: Any, cache: Any, ids: list[str], path: Path, model_sha: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and slice probabilities of ``ids``, read back from ``path`` when it holds exactly them for
    this slice model, else computed and written atomically (float16 embeddings)."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if str(f["model_sha256"]) == model_sha and f["ids"].tolist() == ids:
                return f["embedding"].astype(np.float32), f["probabilities"].astype(np.float64)
    emb, prob = slice_features(embedder, cache, ids)
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(ids, dtype=str), embedding=emb.astype(np.float16), probabilities=prob,
             model_sha256=np.asarray(model_sha))
    atomic_write_bytes(path, buf.getvalue())
    return emb.astype(np.float16).astype(np.float32), prob


def _train_data(inputs: dict[str, np.ndarray], y: np.ndarray, batch: int, seed: int):
    import tensorflow as tf

    order = np.random.default_rng(seed).permutation(len(y))
    x = {k: v[order] for k, v in inputs.items()}
    w = inputs["mask"][order].astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y[order], w)).batch(batch)


def _operating(y: np.ndarray, p: np.ndarray, patients: np.ndarray, target: float) -> dict[str, Any]:
    """Slice and patient thresholds for ``target`` sensitivity, as Phase 4 chooses them (``any`` column)."""
    out: dict[str, Any] = {"target_sensitivity": target}
    if 0 < y.sum() < len(y):
        thr = threshold_for_sensitivity(y, p, target)
        conf = confusion_at(y, p, thr)
        out.update(threshold=thr, validation_sensitivity=conf["sensitivity"],
                   validation_specificity=conf["specificity"])
    _, yp, pp = patient_level(patients, y, p)
    out["validation_patients"] = int(len(yp))
    if 0 < yp.sum() < len(yp):
        thr = threshold_for_sensitivity(yp, pp, target)
        conf = confusion_at(yp, pp, thr)
        out.update(patient_threshold=thr, validation_patient_sensitivity=conf["sensitivity"],
                   validation_patient_specificity=conf["specificity"])
    else:
        out["patient_threshold"] = None
    return out


def _both(y: np.ndarray, p_max: np.ndarray, p_study: np.ndarray, patients: np.ndarray) -> dict[str, Any]:
    """Validation AUCs of both aggregations on the same slices and patients (point values)."""
    out: dict[str, Any] = {}
    for name, p in (("max_slice", p_max), ("study_model", p_study)):
        row: dict[str, Any] = {}
        if 0 < y.sum() < len(y):
            row["slice_auc"] = float(roc_auc_score(y, p))
        _, yp, pp = patient_level(patients, y, p)
        if 0 < yp.sum() < len(yp):
            row["patient_auc"] = float(roc_auc_score(yp, pp))
        out[name] = row
    return out


def train_study(config: RunConfig, *, strategy: Any = None, verbose: int | str = "auto") -> dict[str, Any]:
    """Phase 5's work (see the module docstring); call it through :func:`brain_audit.train.phases.run_phase`,
    which holds the run folder, checks the request and resumes. Returns ``metrics.json`` as a dict.

    Raises:
        ConfigError: Phase 4 has not finished; no whole series in train or validation.
    """
    plan = config.phase5
    paths = RunPaths(config.out_dir)
    src = paths.model(4)
    if not src.is_file():
        raise ConfigError(f"phase 4 has not finished: {src} is missing (run `brain-audit train --phase 4`)")
    out = paths.phase(STUDY_PHASE)
    cache = open_run_cache(config)
    index = read_index(paths.index)
    embedder = embedding_model(load_model(src, compile=False))
    model_sha = file_sha256(src)
    labels, column = _labels(config), any_column(config.head)

    data: dict[str, Any] = {}
    for split in ("train", "validation"):
        rows = series_slices(cache, index, split)
        if rows.empty or rows["series_id"].nunique() < 2:
            raise ConfigError(f"phase 5 needs whole series of {split} patients; the cache holds "
                              f"{rows['series_id'].nunique()} (set phase5.patients / phase5.validation_patients "
                              "before Phase 1, or use phase cohorts of whole patients)")
        ids = rows.index.astype(str).tolist()
        emb, prob = _features(embedder, cache, ids, out / "embeddings" / f"{split}.npz", model_sha)
        inputs, pack = pack_inputs(rows, emb, prob, labels)
        data[split] = {"rows": rows, "emb": emb, "prob": prob, "inputs": inputs, "y": pack.y}

    tr, va = data["train"], data["validation"]
    dim, outputs = tr["emb"].shape[1], tr["prob"].shape[1]

    def build() -> Any:
        m = build_sequence_model(dim, outputs, units=plan.units, dropout=plan.dropout, logit_noise=plan.logit_noise,
                                 seed=_seed(config, STUDY_PHASE))
        return compile_sequence_model(m, plan.learning_rate)

    val_data = (va["inputs"], va["y"], va["inputs"]["mask"].astype(np.float32))
    model, history = fit_resumable(
        build, lambda e: _train_data(tr["inputs"], tr["y"], plan.batch_size, _seed(config, STUDY_PHASE, e)),
        out, plan.epochs, seed=_seed(config, STUDY_PHASE), validation_data=val_data, strategy=strategy,
        verbose=verbose)

    rows = va["rows"]
    y = rows["any"].to_numpy().astype(int)
    patients = rows["patient_id"].to_numpy().astype(str)
    p_max = va["prob"][:, column]
    p_study = score_series(model, rows, va["emb"], va["prob"])[:, column]
    target = config.phase4.target_sensitivity
    operating = _operating(y, p_study, patients, target)
    if "threshold" not in operating:
        warnings.warn("phase 5: the validation series hold one class only; no operating point", RuntimeWarning,
                      stacklevel=2)
    save_model(model, out / "model.keras")
    write_json(out / "operating_point.json", operating)
    metrics = {
        "series": {s: int(d["rows"]["series_id"].nunique()) for s, d in data.items()},
        "slices": {s: int(len(d["rows"])) for s, d in data.items()},
        "patients": {s: int(d["rows"]["patient_id"].nunique()) for s, d in data.items()},
        "validation": _both(y, p_max, p_study, patients),
        "max_slice_operating_point": _operating(y, p_max, patients, target),
        "operating_point": operating,
        "epochs": int(plan.epochs),
        "final_loss": {k: v for k, v in (history[-1] if history else {}).items() if k != "epoch"},
        "note": "one training run (one seed); train embeddings come from the Phase-4 model trained on those slices",
    }
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", _phase_record(config, STUDY_PHASE, "finished"))
    return metrics
