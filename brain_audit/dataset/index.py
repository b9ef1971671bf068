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


# ---------------------------------------------------------------- the index from a metadata table

#: Columns a metadata table must have (DICOM keywords, one row per image), with the attribute each holds.
#: ``ImagePositionPatient`` may be one column of three values (``"['-125.0', '-8.0', '180.5']"``) or
#: split ones (``ImagePositionPatient_2`` / ``ImagePositionPatient2`` hold z).
METADATA_COLUMNS: dict[str, str] = {
    "SOPInstanceUID": "(0008,0018) SOP Instance UID",
    "PatientID": "(0010,0020) Patient ID",
    "StudyInstanceUID": "(0020,000D) Study Instance UID",
    "SeriesInstanceUID": "(0020,000E) Series Instance UID",
    "ImagePositionPatient": "(0020,0032) Image Position (Patient)",
    "Rows": "(0028,0010) Rows",
    "Columns": "(0028,0011) Columns",
    "BitsStored": "(0028,0101) Bits Stored",
    "PixelRepresentation": "(0028,0103) Pixel Representation",
    "RescaleIntercept": "(0028,1052) Rescale Intercept",
    "RescaleSlope": "(0028,1053) Rescale Slope",
}


def _read_table(path: Path) -> pd.DataFrame:
    from brain_audit.errors import MetadataTableError

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise MetadataTableError(f"{path.name}: cannot read the metadata table ({exc})") from exc
    return frame


def _numbers(text: Any) -> list[float]:
    """``"['-125.0', '-8.0', '180.5']"``, ``"-125\\\\-8\\\\180.5"``, a list or array -> floats ([] if unparsable)."""
    if isinstance(text, (list, tuple, np.ndarray)):
        items = list(text)
    elif text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    else:
        items = str(text).strip().strip("[]()").replace("\\", ",").split(",")
    try:
        return [float(str(v).strip().strip("'\"")) for v in items if str(v).strip().strip("'\"") != ""]
    except ValueError:
        return []


def _component(frame: pd.DataFrame, keyword: str, k: int, n: int) -> pd.Series | None:
    """Component ``k`` of the ``n``-valued attribute ``keyword``: from one column of lists, or from split
    columns (``<kw>_<k>``, ``<kw><k>``; ``<kw>`` itself as component 0 when it holds single numbers)."""
    if keyword in frame.columns:
        first = frame[keyword].dropna()
        if len(first) and len(_numbers(first.iloc[0])) == n:
            return frame[keyword].map(lambda v: (_numbers(v) + [np.nan] * n)[k] if len(_numbers(v)) == n else np.nan)
    for name in (f"{keyword}_{k}", f"{keyword}{k}", *([keyword] if k == 0 else [])):
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce")
    return None


def index_from_metadata(
    table_path: str | Path,
    root: str | Path,
    out_dir: str | Path,
    *,
    folder: str = TRAIN_DIR,
    stat_files: bool = True,
) -> pd.DataFrame:
    """The header index of :func:`build_index`, built from a metadata table instead of the DICOM files.

    Public RSNA metadata tables (CSV or parquet, one row per image, columns named by DICOM keyword) hold
    the header fields the index needs; reading one takes seconds where reading ~752,000 headers takes
    hours. No DICOM file is opened: with ``stat_files`` each file is only stat-ed for its ``fingerprint``
    (``"<size>:<mtime_ns>"``, as :func:`build_index` records it; a file that is not there is skipped).

    The same rules as :func:`build_index` where the columns tell (its module docstring): the image ID
    (``SOPInstanceUID``, RSNA's file name) must be a plain ID; ``Modality`` (when the table has it) must be
    CT; ``SamplesPerPixel`` / ``PhotometricInterpretation`` / ``NumberOfFrames`` when present; Rows and
    Columns > 0; Rescale Slope and Intercept numbers, the slope not 0; Patient ID, Study / Series UIDs and
    Image Position present. What only the file tells (Pixel Data missing or truncated, a file that is not
    DICOM) is left to the HU cache, which skips such slices with their reason. Pseudonyms are those of
    ``out_dir``'s key, as :func:`build_index` makes them.

    Args:
        table_path: the table (``.csv``, or ``.parquet`` / ``.pq``) with :data:`METADATA_COLUMNS`
            (``PixelSpacing`` optional: NaN spacings without it).
        root: the dataset root holding ``folder``.
        out_dir: the index folder (``index.parquet``, ``skipped.csv``, ``index.json``, ``pseudonym.key``).
        folder: sub-folder of the DICOM files.
        stat_files: stat every file for its fingerprint (else ``fingerprint`` is ``""``).

    Returns:
        The index as :func:`read_index` returns it, with ``attrs["skipped"]``.

    Raises:
        MetadataTableError: the table cannot be read, or lacks needed columns (the message names them).
    """
    from brain_audit.dicom import _spaced  # the attribute names as the reader's messages spell them
    from brain_audit.errors import MetadataTableError

    table_path, root, out_dir = Path(table_path), Path(root), Path(out_dir)
    frame = _read_table(table_path)
    if "SOPInstanceUID" not in frame.columns and "image_id" in frame.columns:
        frame = frame.rename(columns={"image_id": "SOPInstanceUID"})
    z = _component(frame, "ImagePositionPatient", 2, 3)
    missing = [c for c in METADATA_COLUMNS if c != "ImagePositionPatient" and c not in frame.columns]
    if z is None:
        missing.insert(4, "ImagePositionPatient")
    if missing:
        raise MetadataTableError(f"{table_path.name}: no column {', '.join(missing)}; a metadata table needs "
                                 f"{', '.join(METADATA_COLUMNS)} (DICOM keywords, one row per image)")
    spacing = [_component(frame, "PixelSpacing", k, 2) for k in (0, 1)]
    out_dir.mkdir(parents=True, exist_ok=True)
    key, _ = load_or_create_key(out_dir)

    def text(col: str) -> pd.Series:
        return pd.Series([None if _absent(v) else str(v) for v in frame[col]], dtype=object)  # None stays None

    def number(col: str) -> pd.Series:
        return pd.to_numeric(frame[col], errors="coerce")

    ids, pid = text("SOPInstanceUID"), text("PatientID")
    study, series = text("StudyInstanceUID"), text("SeriesInstanceUID")
    rows_, cols_ = number("Rows"), number("Columns")
    bits, pixrep = number("BitsStored"), number("PixelRepresentation")
    slope, intercept = number("RescaleSlope"), number("RescaleIntercept")
    optional = {c: text(c) for c in ("Modality", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames")
                if c in frame.columns}
    good: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for r in range(len(frame)):
        image_id = ids.iloc[r]
        row: dict[str, Any] = {"image_id": image_id, "file": None, "reason": None}
        try:
            path = image_path(root, str(image_id), folder)
            row["file"] = str(path.relative_to(root))
        except BrainAuditError as exc:
            skipped.append({**row, "reason": str(exc)})
            continue
        reason = _metadata_problem(r, optional, rows_, cols_, bits, pixrep, slope, intercept, frame, _spaced)
        if reason is None:
            absent = [name for name, s in (("patient_id", pid), ("study_instance_uid", study),
                                           ("series_instance_uid", series)) if s.iloc[r] is None]
            if np.isnan(z.iloc[r]):
                absent.append("image_position")
            if absent:
                reason = (", ".join(_REQUIRED[m] for m in absent) + " missing or unparsable (metadata column "
                          + ", ".join({"patient_id": "PatientID", "study_instance_uid": "StudyInstanceUID",
                                       "series_instance_uid": "SeriesInstanceUID",
                                       "image_position": "ImagePositionPatient"}[m] for m in absent) + ")")
        fingerprint = ""
        if reason is None and stat_files:
            try:
                fingerprint = file_fingerprint(path)
            except OSError as exc:
                reason = f"cannot stat file ({exc.strerror or exc})"
        if reason is not None:
            skipped.append({**row, "reason": reason})
            continue
        b = -1 if np.isnan(bits.iloc[r]) else int(bits.iloc[r])
        p, c = int(pixrep.iloc[r]), float(intercept.iloc[r])
        good.append({
            "image_id": str(image_id),
            "patient_id": pseudonym(pid.iloc[r], "patient", key),
            "study_id": pseudonym(study.iloc[r], "study", key),
            "series_id": pseudonym(series.iloc[r], "series", key),
            "z": float(z.iloc[r]), "rows": int(rows_.iloc[r]), "cols": int(cols_.iloc[r]),
            "spacing_row": np.nan if spacing[0] is None else float(spacing[0].iloc[r]),
            "spacing_col": np.nan if spacing[1] is None else float(spacing[1].iloc[r]),
            "intercept": c, "slope": float(slope.iloc[r]), "bits_stored": b, "pixel_representation": p,
            "wrap_defect": has_rsna_wrap_defect(None if b < 0 else b, p, None if np.isnan(c) else c),
            "fingerprint": fingerprint,
        })
    index = _typed_index(pd.DataFrame(good, columns=list(INDEX_COLUMNS)))
    index = index.drop_duplicates("image_id", keep="first").reset_index(drop=True)
    skipped_frame = pd.DataFrame(skipped, columns=_SKIPPED_COLUMNS).sort_values("image_id", kind="stable")
    atomic_write_bytes(out_dir / "index.parquet", _frame_to_parquet_bytes(index))
    write_csv(out_dir / "skipped.csv", skipped_frame.reset_index(drop=True))
    n_no_spacing = int(index["spacing_row"].isna().sum())
    write_json(out_dir / "index.json", run_record(
        config={"root": str(root), "folder": folder, "metadata_table": table_path.name, "stat_files": stat_files},
        inputs={"metadata_table": file_fingerprint(table_path)},
        format=INDEX_FORMAT, n_indexed=len(index), n_skipped=len(skipped_frame), n_read_this_run=0,
        n_without_pixel_spacing=n_no_spacing,
        pseudonyms=f"HMAC-SHA256 under {KEY_FILE} of this folder, first 64 bits (brain_audit.ids)",
    ))
    result = index.set_index("image_id")
    result.attrs["skipped"] = skipped_frame.reset_index(drop=True)
    result.attrs["n_read"] = 0
    return result


def _metadata_problem(r: int, optional: dict[str, pd.Series], rows_: pd.Series, cols_: pd.Series, bits: pd.Series,
                      pixrep: pd.Series, slope: pd.Series, intercept: pd.Series, frame: pd.DataFrame,
                      spaced: Any) -> str | None:
    """Why row ``r`` of a metadata table cannot be one CT slice, in :func:`brain_audit.dicom.read_header`'s words."""
    modality = optional.get("Modality")
    if modality is not None and modality.iloc[r] is not None and modality.iloc[r].upper() != "CT":
        return f"(0008,0060) Modality is {modality.iloc[r]!r}; expected 'CT'"
    spp = optional.get("SamplesPerPixel")
    photometric = optional.get("PhotometricInterpretation")
    spp_v = 1 if spp is None or spp.iloc[r] is None else _safe_number(spp.iloc[r])
    ph_v = "MONOCHROME2" if photometric is None or photometric.iloc[r] is None else photometric.iloc[r].upper()
    if spp_v != 1 or ph_v not in ("MONOCHROME1", "MONOCHROME2"):
        return (f"(0028,0004) Photometric Interpretation is {ph_v!r} with (0028,0002) Samples per Pixel {spp_v}; "
                "a CT slice is monochrome")
    frames = optional.get("NumberOfFrames")
    n_frames = None if frames is None or frames.iloc[r] is None else _safe_number(frames.iloc[r])
    if n_frames is not None and n_frames > 1:
        return f"(0028,0008) Number of Frames is {n_frames:g}; expected one slice per file"
    for series, col, tag, required in ((rows_, "Rows", "(0028,0010)", True), (cols_, "Columns", "(0028,0011)", True),
                                       (bits, "BitsStored", "(0028,0101)", False),
                                       (pixrep, "PixelRepresentation", "(0028,0103)", True)):
        if np.isnan(series.iloc[r]):
            raw = frame[col].iloc[r]
            if _absent(raw) and not required:
                continue  # Bits Stored defaults to Bits Allocated, as the reader's
            said = "is missing" if _absent(raw) else f"is {raw!r}; not an integer"
            return f"{tag} {spaced(col)} {said} (metadata column {col})"
    if rows_.iloc[r] <= 0 or cols_.iloc[r] <= 0:
        return f"(0028,0010) Rows x (0028,0011) Columns is {rows_.iloc[r]:g} x {cols_.iloc[r]:g}; no pixels"
    if bits.iloc[r] <= 0:
        return f"(0028,0101) Bits Stored is {bits.iloc[r]:g}; cannot decode pixels"
    for series, col, tag, name in ((slope, "RescaleSlope", "(0028,1053)", "Rescale Slope"),
                                   (intercept, "RescaleIntercept", "(0028,1052)", "Rescale Intercept")):
        if np.isnan(series.iloc[r]) and not _absent(frame[col].iloc[r]):  # absent is legal (identity LUT)
            return f"{tag} {name} is {frame[col].iloc[r]!r}; not a number (metadata column {col})"
    if slope.iloc[r] == 0:
        return "(0028,1053) Rescale Slope is 0; HU cannot be recovered"
    return None


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() in ("", "nan", "None")


def _safe_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


__all__ += ["METADATA_COLUMNS", "index_from_metadata"]
