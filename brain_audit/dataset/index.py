"""The header index: one row of non-identifying DICOM header per usable CT slice, built once, resumable.

Labels carry no patient: the RSNA label file names images only, so patient, study,
series and slice position come from the DICOM headers. :func:`build_index` reads them
(no pixels) in parallel processes and keeps them in a folder::

    OUT/index.parquet      one row per usable slice (columns: INDEX_COLUMNS)
    OUT/skipped.csv        image_id, file, reason: every image that did not enter the index
    OUT/index.json         run record (root, counts, parameters, package versions)
    OUT/pseudonym.key      the secret key of the pseudonyms (mode 0600; brain_audit.ids)
    OUT/parts/             per-block results while a run is going on (removed at the end)

**What enters the index** (the filter; everything else goes to ``skipped.csv`` with its
reason, so junk never takes a patient slot in the cohorts):

* an image ID that is a plain ID (:mod:`brain_audit.ids`), else ``"`image_id` must be an
  ID of ... Got '../x' instead."``;
* a readable DICOM file whose header allows one CT slice, judged without reading pixels
  (:func:`brain_audit.dicom.read_header`'s ``problem``, the text :func:`~brain_audit.dicom.read_hu`
  would give): ``(0008,0060) Modality is 'MR'; expected 'CT'`` (also RT dose, or no
  Modality and a non-CT SOP Class), ``(0028,0004) Photometric Interpretation is 'RGB' with
  (0028,0002) Samples per Pixel 3; a CT slice is monochrome``, ``(0028,0008) Number of
  Frames is 4; expected one slice per file``, ``(7FE0,0010) Pixel Data is missing (header
  only)``, ``(7FE0,0010) Pixel Data has N bytes; ... need M (file truncated?)``, Rows /
  Columns / Bits Allocated / Pixel Representation missing, Rescale Slope or Intercept
  not a number, or slope 0;
* the fields the pipeline needs: (0010,0020) Patient ID, (0020,000D) Study and
  (0020,000E) Series Instance UID (the patient-level splits), (0020,0032) Image Position
  (Patient) (z order of a series), else ``"(0010,0020) Patient ID, ... missing or unparsable"``.

**Degenerate but legal slices are kept**: a slice without (0028,0030) Pixel Spacing enters
with NaN spacings (nothing downstream works in millimetres: the cache resizes in pixels);
build_index counts them (``index.json`` ``n_without_pixel_spacing``) and warns
(RuntimeWarning). A slice whose every pixel is padding or below air cannot be told from its
header (the index reads no pixels) and is legal (the slices above the vertex of a real scan
are air): it is kept, and the cache reads it as :data:`~brain_audit.dicom.AIR_HU` everywhere.

**Pseudonyms**: ``patient_id``, ``study_id`` and ``series_id`` are never the header's values
but :func:`brain_audit.ids.pseudonym` of them under the key of this folder
(``PID_`` / ``STU_`` / ``SER_<16 hex>``); RSNA's ``ID_<hex>`` pass through unchanged. Every
later table (cohort, cache, audit) takes them from here. Earlier results that hold another
key's pseudonyms (the key file was lost) or raw identifiers are read again.

Each block of files is written atomically to ``parts/`` as soon as it is read, so a
killed run loses at most the blocks in flight; a rerun reads only the images that are
in neither the index, ``skipped.csv`` nor ``parts/``, and first removes the temporary
``*.part`` files a killed run left behind. The final tables are sorted by image ID, so a
resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brain_audit.dicom import has_rsna_wrap_defect, read_header
from brain_audit.errors import BrainAuditError, CacheError, DicomReadError
from brain_audit.ids import KEY_FILE, is_pseudonym, is_rsna_id, load_or_create_key, pseudonym
from brain_audit.parallel import map_unordered
from brain_audit.provenance import atomic_write_bytes, file_fingerprint, run_record, write_csv, write_json
from brain_audit.rsna import TRAIN_DIR, image_path

__all__ = ["INDEX_FORMAT", "INDEX_COLUMNS", "build_index", "read_index", "read_skipped"]

#: Version of the index's rules (filter, pseudonyms); an index folder of another version is read again.
INDEX_FORMAT = 2

#: Columns of ``index.parquet`` with their dtypes. ``patient_id``, ``study_id`` and
#: ``series_id`` are pseudonyms of (0010,0020) Patient ID, (0020,000D) Study and (0020,000E)
#: Series Instance UID (:func:`brain_audit.ids.pseudonym`: RSNA's ``ID_<hex>`` as written,
#: others ``PID_`` / ``STU_`` / ``SER_<16 hex>``); ``z`` the third component of (0020,0032)
#: Image Position (Patient) in mm; spacings in mm (NaN when absent);
#: ``fingerprint`` is ``"<size>:<mtime_ns>"`` of the file.
INDEX_COLUMNS: dict[str, str] = {
    "image_id": "str",
    "patient_id": "str",
    "study_id": "str",
    "series_id": "str",
    "z": "float64",
    "rows": "int32",
    "cols": "int32",
    "spacing_row": "float64",
    "spacing_col": "float64",
    "intercept": "float64",
    "slope": "float64",
    "bits_stored": "int32",
    "pixel_representation": "int32",
    "wrap_defect": "bool",
    "fingerprint": "str",
}

_SKIPPED_COLUMNS = ["image_id", "file", "reason"]


#: The fields an indexed slice must have besides what read_header's ``problem`` checks.
_REQUIRED = {
    "patient_id": "(0010,0020) Patient ID",
    "study_instance_uid": "(0020,000D) Study Instance UID",
    "series_instance_uid": "(0020,000E) Series Instance UID",
    "image_position": "(0020,0032) Image Position (Patient)",
}


def _read_one(image_id: str, path: str, key: bytes) -> dict[str, Any]:
    """Header row of one file, or a row with ``reason`` set when it cannot be used."""
    row: dict[str, Any] = {"image_id": image_id, "file": path, "reason": None}
    try:
        h = read_header(path)
        fingerprint = file_fingerprint(path)
    except DicomReadError as exc:
        row["reason"] = exc.reason
        return row
    except OSError as exc:
        row["reason"] = f"cannot stat file ({exc.strerror or exc})"
        return row
    if h["problem"] is not None:
        row["reason"] = h["problem"]
        return row
    missing = [k for k in _REQUIRED if h[k] is None]
    if missing:
        row["reason"] = ", ".join(_REQUIRED[m] for m in missing) + " missing or unparsable"
        return row
    spacing = h["pixel_spacing"] or (np.nan, np.nan)
    row.update(
        patient_id=pseudonym(h["patient_id"], "patient", key),
        study_id=pseudonym(h["study_instance_uid"], "study", key),
        series_id=pseudonym(h["series_instance_uid"], "series", key),
        z=h["z"],
        rows=h["rows"],
        cols=h["columns"],
        spacing_row=spacing[0],
        spacing_col=spacing[1],
        intercept=np.nan if h["rescale_intercept"] is None else h["rescale_intercept"],
        slope=np.nan if h["rescale_slope"] is None else h["rescale_slope"],
        bits_stored=-1 if h["bits_stored"] is None else h["bits_stored"],
        pixel_representation=-1 if h["pixel_representation"] is None else h["pixel_representation"],
        wrap_defect=has_rsna_wrap_defect(h["bits_stored"], h["pixel_representation"], h["rescale_intercept"]),
        fingerprint=fingerprint,
    )
    return row


def _format_of(out_dir: Path) -> int | None:
    """``format`` of the folder's ``index.json`` (``None``: absent, unreadable, or written before versions)."""
    try:
        return json.loads((out_dir / "index.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _foreign_ids(frame: pd.DataFrame, new_key: bool) -> bool:
    """Whether indexed rows of ``frame`` hold an ID that is neither RSNA's nor this key's pseudonym
    (raw identifiers of an older version, or pseudonyms of a lost key when the key is ``new_key``)."""
    good = frame[frame["reason"].isna()] if "reason" in frame else frame
    for col, kind in (("patient_id", "patient"), ("study_id", "study"), ("series_id", "series")):
        for v in good[col].astype(str).unique() if col in good else []:
            if not (is_rsna_id(v) or (not new_key and is_pseudonym(v, kind))):
                return True
    return False


def _read_block(task: tuple[bytes, Sequence[tuple[str, str]]]) -> list[dict[str, Any]]:
    """Worker: header rows of a block ``(key, [(image_id, path), ...])``."""
    key, block = task
    return [_read_one(i, p, key) for i, p in block]


def _rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["image_id", "file", "reason", *list(INDEX_COLUMNS)[1:]])
    return frame


def _typed_index(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[list(INDEX_COLUMNS)].copy()
    for col, dtype in INDEX_COLUMNS.items():
        out[col] = out[col].astype(dtype)
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)


def _frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def read_index(out_dir: str | Path) -> pd.DataFrame:
    """The header index written by :func:`build_index`.

    Returns:
        DataFrame indexed by ``image_id`` (sorted), columns :data:`INDEX_COLUMNS` minus
        ``image_id``.

    Raises:
        CacheError: no finished index in ``out_dir``.
    """
    path = Path(out_dir) / "index.parquet"
    if not path.exists():
        raise CacheError(f"{path}: no header index here; run build_index / `brain-audit index` first")
    return pd.read_parquet(path).set_index("image_id")


def read_skipped(out_dir: str | Path) -> pd.DataFrame:
    """``skipped.csv`` of an index or cache folder (columns image_id, file, reason); empty if none."""
    path = Path(out_dir) / "skipped.csv"
    if not path.exists():
        return pd.DataFrame(columns=_SKIPPED_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _list_folder(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name[:-4] for e in it if e.name.endswith(".dcm") and e.is_file())


def build_index(
    root: str | Path,
    out_dir: str | Path,
    image_ids: Iterable[str] | None = None,
    *,
    folder: str = TRAIN_DIR,
    workers: int | None = None,
    block_size: int = 512,
    retry_skipped: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Read the headers of ``image_ids`` (or of every ``.dcm`` in the folder) into a cached table.

    Args:
        root: dataset root holding ``folder`` (RSNA layout, :mod:`brain_audit.rsna`).
        out_dir: index folder (see module docstring); created if needed.
        image_ids: images to index, e.g. ``read_labels(...).index``; ``None`` indexes every
            ``ROOT/folder/*.dcm``. An ID without a file is recorded in ``skipped.csv``.
        folder: sub-folder of the DICOM files.
        workers: processes (``None``: all CPU cores; ``0`` or ``1``: in this process).
        block_size: files per task and per resumable part (> 0).
        retry_skipped: read again the files ``skipped.csv`` already lists.
        progress: show a tqdm bar.

    Returns:
        The whole index (every image indexed so far in ``out_dir``, not only ``image_ids``),
        as :func:`read_index` returns it; ``attrs["skipped"]`` holds ``skipped.csv`` and
        ``attrs["n_read"]`` the number of files read by this call.

    Unreadable or unusable files (module docstring: the filter) and unsafe image IDs never
    stop the run: each lands in ``skipped.csv`` with its reason. Slices without Pixel
    Spacing are kept and counted with a RuntimeWarning.

    Raises:
        CacheError: ``root/folder`` is missing, or the folder's ``pseudonym.key`` is damaged.
    """

    if block_size <= 0:
        raise ValueError(f"`block_size` must be > 0. Got {block_size} instead.")
    if workers is not None and workers < 0:
        raise ValueError(f"`workers` must be >= 0. Got {workers} instead.")
    root, out_dir = Path(root), Path(out_dir)
    src = root / folder
    if not src.is_dir():
        raise CacheError(f"{src}: no such folder; expected the RSNA layout ROOT/{folder}/ID_*.dcm")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / "parts"
    for folder_ in (out_dir, parts_dir):  # temporary files of a killed run (provenance.atomic_path)
        for p in folder_.glob("*.part") if folder_.is_dir() else []:
            p.unlink(missing_ok=True)
    key, new_key = load_or_create_key(out_dir)

    wanted = _list_folder(src) if image_ids is None else list(dict.fromkeys(str(i) for i in image_ids))
    refused: list[dict[str, Any]] = []
    paths: dict[str, str] = {}
    for i in wanted:
        try:
            paths[i] = str(image_path(root, i, folder))
        except BrainAuditError as exc:
            refused.append({"image_id": i, "file": None, "reason": str(exc)})

    if (out_dir / "index.parquet").exists() and _format_of(out_dir) != INDEX_FORMAT:
        for name in ("index.parquet", "skipped.csv"):  # made by other rules: a cache, so made again
            (out_dir / name).unlink(missing_ok=True)
    done_frames: list[pd.DataFrame] = []
    if (out_dir / "index.parquet").exists():
        old = pd.read_parquet(out_dir / "index.parquet")
        old["file"], old["reason"] = None, None
        done_frames.append(old)
    old_skipped = read_skipped(out_dir)
    if retry_skipped:
        old_skipped = old_skipped.iloc[0:0]
    if len(old_skipped):
        done_frames.append(old_skipped.assign(reason=old_skipped["reason"].astype(object)))
    part_files = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.exists() else []
    done_frames.extend(pd.read_parquet(p) for p in part_files)
    if any(_foreign_ids(f, new_key) for f in done_frames):
        warnings.warn(f"{out_dir}: earlier results hold identifiers that are not pseudonyms of this folder's "
                      f"{KEY_FILE}; reading every file again", RuntimeWarning, stacklevel=2)
        done_frames = []
    done_ids = set()
    for f in done_frames:
        done_ids.update(f["image_id"].astype(str))

    todo = [i for i in paths if i not in done_ids]
    blocks = [
        (key, [(i, paths[i]) for i in todo[k : k + block_size]]) for k in range(0, len(todo), block_size)
    ]
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=len(todo), unit="file", desc="header index", disable=not progress or not todo)
    new_frames: list[pd.DataFrame] = []
    try:
        for rows in map_unordered(_read_block, blocks, n_workers):
            frame = _rows_to_frame(rows)
            parts_dir.mkdir(exist_ok=True)
            atomic_write_bytes(parts_dir / f"part-{uuid.uuid4().hex}.parquet", _frame_to_parquet_bytes(frame))
            new_frames.append(frame)
            bar.update(len(rows))
    finally:
        bar.close()

    if refused:
        new_frames.append(_rows_to_frame(refused))
    frames = [f for f in done_frames + new_frames if len(f)]
    allrows = pd.concat(frames, ignore_index=True) if frames else _rows_to_frame([])
    allrows = allrows.drop_duplicates("image_id", keep="last")
    good = allrows[allrows["reason"].isna()]
    bad = allrows[allrows["reason"].notna()]
    index = _typed_index(good)
    skipped = bad[_SKIPPED_COLUMNS].copy()
    skipped["file"] = [str(Path(f).relative_to(root)) if f and Path(f).is_relative_to(root) else f
                       for f in skipped["file"]]
    skipped = skipped.sort_values("image_id", kind="stable").reset_index(drop=True)

    n_no_spacing = int(index["spacing_row"].isna().sum())
    if n_no_spacing:
        warnings.warn(f"{out_dir.name}: {n_no_spacing} indexed slice(s) have no (0028,0030) Pixel Spacing; kept "
                      "(nothing downstream needs millimetres)", RuntimeWarning, stacklevel=2)

    atomic_write_bytes(out_dir / "index.parquet", _frame_to_parquet_bytes(index))
    write_csv(out_dir / "skipped.csv", skipped)
    write_json(
        out_dir / "index.json",
        run_record(
            config={"root": str(root), "folder": folder, "block_size": block_size, "retry_skipped": retry_skipped},
            format=INDEX_FORMAT,
            n_indexed=len(index),
            n_skipped=len(skipped),
            n_read_this_run=len(todo),
            n_without_pixel_spacing=n_no_spacing,
            pseudonyms=f"HMAC-SHA256 under {KEY_FILE} of this folder, first 64 bits (brain_audit.ids)",
        ),
    )
    for p in part_files:
        p.unlink(missing_ok=True)
    for p in parts_dir.glob("part-*.parquet") if parts_dir.exists() else []:
        p.unlink(missing_ok=True)
    if parts_dir.exists() and not any(parts_dir.iterdir()):
        parts_dir.rmdir()

    result = index.set_index("image_id")
    result.attrs["skipped"] = skipped
    result.attrs["n_read"] = len(todo)
    return result
