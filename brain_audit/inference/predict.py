"""Score a folder of DICOM files with a trained model: ``brain-audit predict`` and the Kaggle notebook.

Each file goes DICOM -> HU (:func:`brain_audit.dicom.read_hu`) -> int16 (S, S) HU as the training cache
stores it (:func:`brain_audit.dataset.cache.preprocess_slice`) -> float32 -> the model (windows inside
the network). Files are read in chunks by worker processes (one pool for the whole run,
:func:`brain_audit.parallel.worker_pool`), the next chunk while the model scores the current one, so at most
two chunks of int16 slices are in memory. Every finished chunk is written atomically to ``OUT/parts/``; a
rerun scores only the files that no part holds (or whose size / modification time changed) and ends with
byte-identical tables. Parts answer one request (``parts/request.json``: the slice model's weights, image size,
head, TTA, layout, folder and, for the study model, the embeddings kept); parts of another request are scored
again.

With a run folder whose Phase 5 has finished (the study-level sequence model, :mod:`brain_audit.inference.study`;
``study=None`` uses it when present, ``study=False`` never), each part also keeps every slice's embedding
(float16) and its unflipped probabilities; once all parts are in, each series is scored whole in z order by the
study model. With ``tta`` the slice-model columns are flip-averaged, while the study model reads the unflipped
embedding and probability it was trained on. Slices without a series (or z) keep their slice-model score.

Outputs in ``OUT``:

- ``slices.csv``: ``image_id`` (layout ``"rsna"``: the file stem ``ID_<hex>``; ``"dicom"``: the path
  relative to the folder), ``patient_id``, ``study_id``, ``series_id`` (pseudonyms,
  :func:`brain_audit.ids.pseudonym`, under ``OUT/pseudonym.key``; RSNA's ``ID_<hex>`` as written),
  ``z`` (mm, Image Position (Patient)), ``slice_index`` (0, 1, ... by increasing z within the series),
  and ``p_<label>`` per output (head ``"any"``: ``p_any``; ``"six"``: the labels of
  :data:`brain_audit.rsna.LABEL_COLUMNS`); with the study model also ``p_study_<label>``.
- ``studies.csv``: per study its slices and ``p_any_max``, the most suspicious slice (the audit's
  patient aggregation, :func:`brain_audit.audit.statistics.patient_level` with ``reduce="max"``), and
  with a threshold ``flagged`` (``p_any_max >= threshold``; a run folder's patient threshold); with the study
  model also ``p_study_any_max`` and ``flagged_study`` (at Phase 5's patient threshold).
- ``unreadable.csv``: ``image_id``, ``file``, ``reason`` (the DICOM attribute at fault by tag).
- ``submission.csv`` (layout ``"rsna"``, head ``"six"``): :mod:`brain_audit.inference.submission`, from the
  study model's probabilities when it was used, else the slice model's.
- ``summary.json``: counts, timing, the model and the request (:func:`brain_audit.provenance.run_record`);
  ``submission_scores`` says which model scored the submission, ``study_model`` its path and SHA-256.
  It holds the time taken, so it is the one output a rerun does not reproduce byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brain_audit.errors import ConfigError
from brain_audit.ids import load_or_create_key
from brain_audit.inference.reading import Layout, list_files, read_block
from brain_audit.inference.study import (
    EMBEDDING_FORMAT,
    StudyModel,
    decode_embeddings,
    encode_embeddings,
    find_study_model,
    score_study,
)
from brain_audit.inference.submission import SAMPLE_SUBMISSION, write_submission
from brain_audit.parallel import worker_pool
from brain_audit.provenance import (
    atomic_write_bytes,
    file_fingerprint,
    file_sha256,
    read_json,
    remove_temporaries,
    run_record,
    write_csv,
    write_json,
)
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock

__all__ = ["PREDICT_FORMAT", "predict_folder", "summary_line"]

#: Version of the parts' contents; parts of another version are scored again.
PREDICT_FORMAT = 1

_PART_COLUMNS = ["image_id", "fingerprint", "reason", "patient_id", "study_id", "series_id", "z"]


def _resolve_model(model: str | Path, threshold: float | None) -> tuple[Path, float | None, str | None]:
    """(model file, threshold, where the threshold came from) for a ``.keras`` file or a run folder."""
    path = Path(model)
    if path.is_dir():
        file, operating = RunPaths(path).finished_model("prediction")
        if threshold is not None:
            return file, float(threshold), "argument"
        chosen = operating.get("patient_threshold")
        if chosen is None:  # as the audit does: no patient threshold (one class on validation) -> the slice one
            return file, float(operating["threshold"]), "operating_point.json threshold (no patient_threshold)"
        return file, float(chosen), "operating_point.json patient_threshold"
    if threshold is None:
        return path, None, None
    return path, float(threshold), "argument"


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"`{name}` must be {rule}. Got {value!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _input_size(model: Any) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1 or shape[1] is None or shape[1] != shape[2]:
        raise ConfigError(f"`model` must take single square HU slices (N, S, S, 1). Got input shape {shape} instead "
                          "(a 2.5D model, trained with `context` > 0, needs each slice's neighbours, which this "
                          "command does not read yet).")
    return int(shape[1])


def _head(model: Any) -> tuple[str, tuple[str, ...]]:
    units = int(model.outputs[0].shape[-1])
    if units == 1:
        return "any", ("any",)
    if units == len(LABEL_COLUMNS):
        return "six", LABEL_COLUMNS
    raise ConfigError(f"`model` must have 1 output ('any') or {len(LABEL_COLUMNS)} ({', '.join(LABEL_COLUMNS)}). "
                      f"Got {units} instead.")


def _weights_digest(model: Any) -> str:
    """SHA-256 of a loaded model's weights (shapes, dtypes and values, in layer order): its identity in a request."""
    digest = hashlib.sha256()
    for w in model.weights:
        a = np.asarray(w)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_chunks(chunks: Sequence[Sequence[tuple[str, str]]], key: bytes, size: int, workers: int
                 ) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
    """``(rows, int16 HU of the readable ones)`` per chunk, in file order; the next chunk is read meanwhile,
    in blocks spread over one pool of ``workers`` processes kept for the whole run."""
    if not chunks:
        return
    with worker_pool(workers) as processes, ThreadPoolExecutor(1, thread_name_prefix="brain_audit-read") as thread:

        def read(chunk: Sequence[tuple[str, str]]) -> tuple[list[dict[str, Any]], np.ndarray]:
            block = max(16, math.ceil(len(chunk) / max(1, 4 * workers)))
            tasks = [(k, key, size, list(chunk[s : s + block])) for k, s in enumerate(range(0, len(chunk), block))]
            done = list(processes.imap(read_block, tasks) if processes is not None else map(read_block, tasks))
            rows = [row for _, rs, _ in done for row in rs]
            return rows, np.concatenate([hu for _, _, hu in done])

        future = thread.submit(read, chunks[0])
        for k in range(len(chunks)):
            result = future.result()
            if k + 1 < len(chunks):
                future = thread.submit(read, chunks[k + 1])
            yield result


def _score(model: Any, hu: np.ndarray, batch_size: int, tta: bool, embedder: Any = None
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Probabilities of int16 (N, S, S) HU: ``(p, embedding, p_plain)``.

    ``p`` float64 (N, outputs), with ``tta`` the mean over the image and its left-right flip (width axis). With an
    ``embedder`` (:func:`brain_audit.model.sequence.embedding_model` of ``model``) also the float32 (N, D)
    embeddings and float64 (N, outputs) probabilities of the unflipped image (the study model's input), else None.
    """
    from brain_audit.model.predictions import predict

    x = hu.astype(np.float32)[..., None]
    emb = plain = None
    if embedder is not None:
        e, q = embedder.predict(x, batch_size=batch_size, verbose=0)
        emb, plain = np.asarray(e, dtype=np.float32), np.asarray(q, dtype=np.float64).reshape(len(x), -1)
        p = plain
    else:
        p = predict(model, x, batch_size=batch_size)
    if tta:
        p = (p + predict(model, np.ascontiguousarray(np.flip(x, axis=2)), batch_size=batch_size)) / 2.0
    return p, emb, plain


def _slice_table(good: pd.DataFrame, labels: Sequence[str], study: bool = False) -> pd.DataFrame:
    """slices.csv: ordered by study, series and z, with each slice's place in its series."""
    cols = ["image_id", "patient_id", "study_id", "series_id", "z"]
    probs = [f"p_{c}" for c in labels] + ([f"p_study_{c}" for c in labels] if study else [])
    t = good[cols + probs].copy()
    t = t.sort_values(["series_id", "z", "image_id"], na_position="last", kind="stable")
    t["slice_index"] = t.groupby("series_id", dropna=True, sort=False).cumcount()
    t.loc[t["series_id"].isna(), "slice_index"] = np.nan
    t["slice_index"] = t["slice_index"].astype("Int64")
    t = t.sort_values(["study_id", "series_id", "slice_index", "image_id"], na_position="last", kind="stable")
    return t[cols + ["slice_index"] + probs].reset_index(drop=True)


def _study_table(slices: pd.DataFrame, threshold: float | None, study: StudyModel | None = None) -> pd.DataFrame:
    """studies.csv: slices and the maximum ``any`` probability per study, flagged at ``threshold``; with the
    study model also its maximum ``p_study_any_max``, flagged at its own threshold (``flagged_study``)."""
    known = slices[slices["study_id"].notna()]
    g = known.groupby("study_id", sort=True)
    t = pd.DataFrame({"patient_id": g["patient_id"].first(), "slices": g.size(), "p_any_max": g["p_any"].max()})
    if threshold is not None:
        t["flagged"] = (t["p_any_max"] >= threshold).astype(int)
    if study is not None:
        t["p_study_any_max"] = g["p_study_any"].max()
        if study.threshold is not None:
            t["flagged_study"] = (t["p_study_any_max"] >= study.threshold).astype(int)
    return t.reset_index()


def predict_folder(
    model: str | Path | Any,
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    layout: Layout = "rsna",
    tta: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    chunk: int = 2048,
    threshold: float | None = None,
    sample_submission: str | Path | None = None,
    study: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every DICOM file of a folder with a trained model; resumable, bounded memory.

    Args:
        model: a ``.keras`` file (:func:`brain_audit.model.save_model`), a run folder, whose
            ``phase4/model.keras`` is used and whose ``phase4/operating_point.json`` patient threshold
            flags studies (and whose finished ``phase5/``, the study model, see ``study``), or a Keras model
            already loaded (a notebook's; no threshold then but ``threshold``).
            Input contract: float32 HU (B, S, S, 1), S read from the model; output 1 unit (head ``"any"``)
            or 6 (:data:`~brain_audit.rsna.LABEL_COLUMNS` order).
        dicom_dir: the folder of DICOM files, e.g. ``ROOT/stage_2_test``.
        out_dir: the output folder (module docstring); one process writes it at a time
            (:func:`brain_audit.run_lock.run_lock`).
        layout: ``"rsna"`` (``dicom_dir/ID_<hex>.dcm``) or ``"dicom"`` (every file under ``dicom_dir``,
            recursively; files that are not DICOM are listed as unreadable).
        tta: also score each slice flipped left-right (width axis) and report the mean of both probabilities
            (the slice-model columns; the study model reads the unflipped slice, as Phase 5 trained it).
        batch_size: slices per model call (>= 1).
        workers: reading processes (``0`` / ``1``: in this process).
        chunk: files per resumable part (>= 1); at most two chunks of int16 slices are held in memory.
        threshold: flag studies whose ``p_any_max`` is at least this (in [0, 1]); overrides a run folder's.
        sample_submission: the challenge's sample submission, whose rows and order ``submission.csv``
            follows; ``None``: ``dicom_dir/../stage_2_sample_submission.csv`` when it exists (layout ``"rsna"``).
        study: rescore each series with the run folder's study model (Phase 5,
            :mod:`brain_audit.inference.study`): ``None`` when ``model`` is a run folder with a finished Phase 5,
            ``True`` always (an error without one), ``False`` never. It adds the ``p_study_*`` columns and
            scores ``submission.csv``; the parts then hold each slice's float16 embedding (2.5 KiB per slice
            for EfficientNetB0), and all of them are read into memory for the series pass.
        progress: show a progress bar and print the slices per second at the end.

    Returns:
        The summary written to ``summary.json``: ``files``, ``scored``, ``unreadable``,
        ``scored_this_run``, ``read_this_run``, ``seconds``, ``slices_per_second``, ``studies``,
        ``flagged``, ``head``, ``labels``, ``image_size``, ``tta``, ``model``, ``threshold``, ``outputs``,
        ``submission`` (the counts of :func:`brain_audit.inference.submission.write_submission`) or
        ``None`` with ``submission_reason``, ``submission_scores`` (``"study model"`` or ``"slice model"``),
        ``study_model`` (``path``, ``sha256``, ``threshold``, ``threshold_source``, ``slices_scored``,
        ``slices_kept_slice_model``, ``flagged``) or ``None`` with ``study_reason``.

    Raises:
        ConfigError: the folder is missing, an argument is out of range, a run folder has no finished
            Phase 4, the model does not take single HU slices, the sample submission is malformed, or
            ``study=True`` without a finished Phase 5 (naming the missing file).
        WeightsFileError: the model file is missing or not a ``.keras`` model.
    """
    start = time.perf_counter()
    _check(_is_int(batch_size) and batch_size >= 1, "batch_size", "an int >= 1", batch_size)
    _check(_is_int(workers) and workers >= 0, "workers", "an int >= 0", workers)
    _check(_is_int(chunk) and chunk >= 1, "chunk", "an int >= 1", chunk)
    _check(threshold is None or (isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
                                 and 0 <= threshold <= 1), "threshold", "None or in [0, 1]", threshold)
    dicom_dir, out_dir = Path(dicom_dir), Path(out_dir)
    loaded = hasattr(model, "predict") and hasattr(model, "inputs")
    if loaded:
        model_path, source = None, ("argument" if threshold is not None else None)
        threshold = float(threshold) if threshold is not None else None
    else:
        model_path, threshold, source = _resolve_model(model, threshold)
    study_model, study_reason = find_study_model(model, study)
    files, refused = list_files(dicom_dir, layout, exclude=out_dir)
    if sample_submission is None and layout == "rsna" and (dicom_dir.parent / SAMPLE_SUBMISSION).is_file():
        sample_submission = dicom_dir.parent / SAMPLE_SUBMISSION
    if sample_submission is not None and not Path(sample_submission).is_file():
        raise ConfigError(f"`sample_submission` must be a file. Got {str(sample_submission)!r} instead (no such file).")

    if loaded:
        net = model
    else:
        from brain_audit.model.weights import load_model

        net = load_model(model_path, compile=False)
    digest = _weights_digest(net)  # the same for a model file and the model it was saved from
    size = _input_size(net)
    head, labels = _head(net)
    embedder = sequence = None
    if study_model is not None:
        from brain_audit.model.sequence import embedding_model
        from brain_audit.model.weights import load_model

        embedder = embedding_model(net)
        sequence = load_model(study_model.path, compile=False)
        units = int(sequence.outputs[0].shape[-1])
        if units != len(labels):
            raise ConfigError(f"{study_model.path}: the study model must have the slice model's {len(labels)} "
                              f"outputs. Got {units} instead.")
    with run_lock(out_dir):
        return _predict_locked(net, model_path, digest, files, refused, dicom_dir, out_dir, layout=layout,
                               tta=tta, batch_size=batch_size, workers=workers, chunk=chunk, threshold=threshold,
                               threshold_source=source, sample_submission=sample_submission,
                               size=size, head=head, labels=labels, progress=progress, start=start,
                               study=(study_model, embedder, sequence, study_reason))


def _predict_locked(net: Any, model_path: Path | None, digest: str, files: list[tuple[str, str]],
                    refused: list[dict[str, str]], dicom_dir: Path, out_dir: Path, *, layout: str, tta: bool,
                    batch_size: int, workers: int, chunk: int, threshold: float | None, threshold_source: str | None,
                    sample_submission: str | Path | None, size: int, head: str, labels: Sequence[str],
                    progress: bool, start: float,
                    study: tuple[StudyModel | None, Any, Any, str | None]) -> dict[str, Any]:
    """:func:`predict_folder` once the model is loaded, while this process holds ``out_dir``; ``study`` is
    ``(Phase 5, the slice model's embedder, the study model, why no study model)``."""
    study_model, embedder, sequence, study_reason = study
    parts_dir = out_dir / "parts"
    remove_temporaries(out_dir)
    remove_temporaries(parts_dir)
    key, new_key = load_or_create_key(out_dir)
    request = {"format": PREDICT_FORMAT, "model_weights": digest, "image_size": size, "head": head,
               "tta": bool(tta), "layout": layout, "folder": str(dicom_dir.resolve())}
    if study_model is not None:  # parts that keep embeddings (absent otherwise: the request of earlier versions)
        request["embedding"] = dict(EMBEDDING_FORMAT)
    old = read_json(parts_dir / "request.json")
    stale = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.is_dir() else []
    if stale and (old != request or new_key):
        before = old or {}
        changed = "a new pseudonym key" if new_key else ", ".join(
            f"{k}={before.get(k)!r} (now {request.get(k)!r})" for k in [*request, *(k for k in before
                                                                               if k not in request)]
            if before.get(k) != request.get(k))
        warnings.warn(f"{parts_dir}: earlier parts were scored with {changed}; they are removed and every file is "
                      "scored again", RuntimeWarning, stacklevel=3)
        for p in stale:
            p.unlink()
    write_json(parts_dir / "request.json", request)

    fingerprints = {}
    for image_id, path in files:
        try:
            fingerprints[image_id] = file_fingerprint(path)
        except OSError:
            fingerprints[image_id] = "missing"
    done: dict[str, str] = {}
    frames = []
    for p in sorted(parts_dir.glob("part-*.parquet")):
        f = pd.read_parquet(p)
        frames.append(f)
        done.update(zip(f["image_id"], f["fingerprint"]))
    todo = [(i, p) for i, p in files if done.get(i) != fingerprints[i]]
    chunks = [todo[k : k + chunk] for k in range(0, len(todo), chunk)]
    prob_cols = [f"p_{c}" for c in labels]
    plain_cols = [f"p_plain_{c}" for c in labels]  # the unflipped view, the study model's input

    bar = tqdm(total=len(todo), unit="slice", desc="predict", disable=not progress or not todo)
    t0 = time.perf_counter()
    scored_now = 0
    try:
        for k, (rows, hu) in enumerate(_read_chunks(chunks, key, size, workers)):
            block = chunks[k]
            frame = pd.DataFrame(rows, columns=["image_id", "reason", "patient_id", "study_id", "series_id", "z"])
            frame.insert(1, "fingerprint", [fingerprints[i] for i in frame["image_id"]])
            ok = frame["reason"].isna().to_numpy()
            probs = np.full((len(frame), len(labels)), np.nan)
            plain = np.full((len(frame), len(labels)), np.nan)
            emb: list[bytes | None] = [None] * len(frame)
            if len(hu):
                p, e, q = _score(net, hu, batch_size, tta, embedder)
                probs[ok] = p
                if e is not None:
                    plain[ok] = q
                    for row, b in zip(np.flatnonzero(ok), encode_embeddings(e)):
                        emb[row] = b
            for j, c in enumerate(prob_cols):
                frame[c] = probs[:, j]
            if embedder is not None:
                for j, c in enumerate(plain_cols):
                    frame[c] = plain[:, j]
                frame["embedding"] = pd.Series(emb, dtype=object)
            frame = frame.astype({"reason": object, "patient_id": object, "study_id": object, "series_id": object,
                                  "z": "float64"})
            name = f"part-{_digest([i for i, _ in block])[:20]}.parquet"
            atomic_write_bytes(parts_dir / name, _parquet_bytes(frame))
            frames.append(frame)
            scored_now += int(ok.sum())
            bar.update(len(block))
    finally:
        bar.close()
    seconds_scoring = time.perf_counter() - t0

    current = pd.Series(fingerprints, dtype=object)
    columns = _PART_COLUMNS + prob_cols + (plain_cols + ["embedding"] if embedder is not None else [])
    allrows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    allrows = allrows[allrows["image_id"].map(current).eq(allrows["fingerprint"])]
    allrows = allrows.drop_duplicates("image_id", keep="last")
    good = allrows[allrows["reason"].isna()]
    bad = allrows[allrows["reason"].notna()]

    file_of = {i: Path(p).relative_to(dicom_dir).as_posix() for i, p in files}
    unreadable = pd.concat([
        pd.DataFrame({"image_id": bad["image_id"], "file": bad["image_id"].map(file_of), "reason": bad["reason"]}),
        pd.DataFrame(refused, columns=["image_id", "file", "reason"]),
    ], ignore_index=True).sort_values("image_id", kind="stable").reset_index(drop=True)
    placed = 0
    if study_model is not None:
        # every series whole, in z order, from the parts (float16 embeddings, as Phase 5 stored them)
        dim = int(embedder.outputs[0].shape[-1])
        p_study, where = score_study(sequence, good.set_index("image_id")[["series_id", "z"]],
                                     decode_embeddings(good["embedding"].tolist(), dim),
                                     good[plain_cols].to_numpy(dtype=np.float64),
                                     fallback=good[prob_cols].to_numpy(dtype=np.float64))
        good = good.drop(columns="embedding").assign(**{f"p_study_{c}": p_study[:, j] for j, c in enumerate(labels)})
        placed = int(where.sum())
    slices = _slice_table(good, labels, study=study_model is not None)
    studies = _study_table(slices, threshold, study_model)

    outputs = {"slices": "slices.csv", "studies": "studies.csv", "unreadable": "unreadable.csv"}
    write_csv(out_dir / "slices.csv", slices)
    write_csv(out_dir / "studies.csv", studies)
    write_csv(out_dir / "unreadable.csv", unreadable)
    submission, reason = None, None
    sub_path = out_dir / "submission.csv"
    if layout != "rsna":
        reason = "layout 'dicom': a Kaggle submission needs the RSNA layout (ID_<hex>.dcm files)"
    elif head != "six":
        reason = (f"head '{head}': the model scores only 'any'; the Kaggle submission needs all six labels "
                  f"({', '.join(LABEL_COLUMNS)}), so train with head = \"six\"")
    elif not len(slices):
        reason = "no slice could be scored"
    else:
        table = slices.set_index("image_id")[[f"p_study_{c}" for c in labels] if study_model else prob_cols]
        table.columns = list(labels)
        submission = write_submission(table, sub_path, sample_submission)
        outputs["submission"] = "submission.csv"
    if submission is None:
        sub_path.unlink(missing_ok=True)  # never leave a submission of an earlier request beside these tables

    seconds = time.perf_counter() - start
    n_read = len(todo)
    summary = run_record(
        config={"model": str(model_path) if model_path else "a Keras model in memory", "dicom_dir": str(dicom_dir),
                "layout": layout, "tta": bool(tta),
                "batch_size": batch_size, "workers": workers, "chunk": chunk, "threshold": threshold,
                "sample_submission": None if sample_submission is None else str(sample_submission),
                "study": study_model is not None},
        inputs={"model_weights_sha256": digest,
                **({"model_file_sha256": file_sha256(model_path)} if model_path else {}),
                **({"study_model_file_sha256": study_model.sha256} if study_model else {})},
        model=str(model_path) if model_path else None, head=head, labels=list(labels), image_size=size,
        tta=bool(tta),
        files=len(files) + len(refused), scored=int(len(slices)), unreadable=int(len(unreadable)),
        unreadable_by_reason={str(k): int(v) for k, v in unreadable["reason"].value_counts().sort_index().items()},
        read_this_run=n_read, scored_this_run=scored_now, seconds=round(seconds, 3),
        seconds_scoring=round(seconds_scoring, 3),
        slices_per_second=round(n_read / seconds_scoring, 2) if n_read and seconds_scoring > 0 else None,
        studies=int(len(studies)), slices_without_study=int(slices["study_id"].isna().sum()),
        threshold=threshold, threshold_source=threshold_source,
        flagged=int(studies["flagged"].sum()) if "flagged" in studies else None,
        submission=submission, submission_reason=reason,
        submission_scores=None if submission is None else ("study model" if study_model else "slice model"),
        study_model=None if study_model is None else {
            "path": str(study_model.path), "sha256": study_model.sha256, "threshold": study_model.threshold,
            "threshold_source": study_model.threshold_source, "slices_scored": placed,
            "slices_kept_slice_model": int(len(slices)) - placed,
            "flagged": int(studies["flagged_study"].sum()) if "flagged_study" in studies else None,
            "input": "unflipped slices: the embedding and probability Phase 5 was trained on"},
        study_reason=study_reason, outputs=outputs,
        pseudonyms="patient_id, study_id, series_id: brain_audit.ids.pseudonym under pseudonym.key of this folder",
    )
    write_json(out_dir / "summary.json", summary)
    if progress:
        print(summary_line(summary, out_dir))
    return summary


def summary_line(summary: dict[str, Any], out_dir: str | Path) -> str:
    """One line of a :func:`predict_folder` summary: slices scored (now), slices per second, unreadable files."""
    rate = summary["slices_per_second"]
    return (f"{summary['scored']} slices scored ({summary['scored_this_run']} now, "
            f"{f'{rate:.1f} slices/s' if rate else 'nothing read now'}), {summary['unreadable']} unreadable "
            f"-> {Path(out_dir) / 'slices.csv'}")
