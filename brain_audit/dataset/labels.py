"""The RSNA label file -> one row of six int8 labels per image.

The RSNA 2019 label file (``stage_2_train.csv``) has a header ``ID,Label`` and six
rows per image, ``ID_<image>_<subtype>,<0|1>``; the real file has 4,516,842 rows for
752,803 images, a few of them duplicated. :func:`read_labels` turns it into a table
indexed by image ID with the columns of :data:`brain_audit.rsna.LABEL_COLUMNS`.

Image IDs are data, never paths: a row whose image ID breaks the rule of
:mod:`brain_audit.ids` (``../../../../outside/secret``, an absolute path, a space) is
refused with its line number and the rest of the file is read.

The fast path parses with pyarrow on one thread and reshapes with numpy; when it
finds anything wrong, a slow line-by-line pass re-reads the file only to name the
offending lines, so errors stay exact and the common case stays fast.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from brain_audit.errors import LabelFileError
from brain_audit.ids import ID_RULE, SAFE_ID_PATTERN, is_safe_id
from brain_audit.rsna import LABEL_COLUMNS

__all__ = ["read_labels"]

_HEADER = ("ID", "Label")
_SAFE_RE2 = f"^(?:{SAFE_ID_PATTERN})$"  # the ID rule for pyarrow (RE2); '..' is checked apart
_N_REFUSED_KEPT = 100  # refused rows listed in attrs["refused"] (all are counted)


def read_labels(csv_path: str | Path) -> pd.DataFrame:
    """Read an RSNA ``ID,Label`` file into one row per image.

    Rules:

    * Each data line is ``<image_id>_<subtype>,<0|1>``: the image ID is everything
      before the last ``_`` (``ID_63eb1e259``), the subtype one of
      :data:`brain_audit.rsna.LABEL_COLUMNS`. Empty lines are ignored.
    * A line that breaks this (wrong number of fields, no ``_``, unknown subtype,
      a label other than ``0`` / ``1``) raises :class:`LabelFileError` naming the
      file and its 1-based line number (the header is line 1).
    * A row whose image ID breaks the ID rule (:func:`brain_audit.ids.is_safe_id`: a
      path such as ``../../../../outside/secret``, an absolute path, a space) is
      refused and the others are read: one RuntimeWarning gives the count and the
      first lines, ``attrs["n_refused_rows"]`` the count and ``attrs["refused"]`` the
      first 100 as ``(line, image_id)`` pairs. A file whose every row is refused, or
      that has a header and no row, raises :class:`LabelFileError`.
    * A duplicated (image, subtype) pair that agrees is dropped (counted in
      ``attrs["n_duplicate_rows"]``, with a RuntimeWarning); one that conflicts raises
      :class:`LabelFileError` naming both lines.
    * An image lacking one of the six subtypes raises :class:`LabelFileError`.
    * ``any`` differing from the OR of the five subtypes warns (RuntimeWarning) and is
      kept as written: the file is the reference, not this reader.

    Args:
        csv_path: the label file.

    Returns:
        DataFrame indexed by image ID (``str``, name ``"image_id"``, in order of first
        appearance in the file), columns :data:`~brain_audit.rsna.LABEL_COLUMNS`
        (``epidural ... subdural, any``), dtype int8 in {0, 1}. ``attrs`` holds
        ``source`` (path), ``n_rows`` (data rows read, refused ones included),
        ``n_duplicate_rows``, ``n_refused_rows`` and ``refused`` (see above).

    Raises:
        LabelFileError: the file is missing, has another header, no data row, a
            malformed / conflicting line, or only refused rows (the message names the
            file and the line).

    Speed and memory at full RSNA size: ``benchmarks/bench_labels.py`` (figures in
    ``benchmarks/README.md``).
    """

    path = Path(csv_path)
    name = path.name
    try:
        with open(path, "rb") as fh:
            first = fh.readline().decode("utf-8", "replace").strip().lstrip("\ufeff")
    except OSError as exc:
        raise LabelFileError(f"{name}: cannot open label file ({exc.strerror or exc})") from exc
    if tuple(f.strip() for f in first.split(",")) != _HEADER:
        raise LabelFileError(f"{name}: line 1: header is {first!r}; expected 'ID,Label'")

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={"ID": pa.string(), "Label": pa.string()}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        _raise_first_bad_line(path, f"not parsable ({str(exc).splitlines()[0]})")
        raise AssertionError("unreachable") from exc  # pragma: no cover

    ids, lab = table.column("ID"), table.column("Label")
    n_rows = len(ids)
    if n_rows == 0:
        _raise_header_only(path)

    ok_label = pc.all(pc.is_in(lab, value_set=pa.array(["0", "1"]))).as_py()
    if not ok_label:
        _raise_first_bad_line(path, "label is not 0 or 1")
    parts = pc.split_pattern(ids, pattern="_", max_splits=1, reverse=True)
    if pc.min(pc.list_value_length(parts)).as_py() != 2:
        _raise_first_bad_line(path, "ID has no '_<subtype>' suffix")
    flat = pc.list_flatten(parts)
    image = flat.take(pa.array(np.arange(0, 2 * n_rows, 2)))
    subtype = flat.take(pa.array(np.arange(1, 2 * n_rows, 2)))
    del parts, flat

    sub_idx = pc.index_in(subtype, value_set=pa.array(list(LABEL_COLUMNS)))
    if sub_idx.null_count:
        _raise_first_bad_line(path, "unknown subtype")
    sub_code = sub_idx.to_numpy().astype(np.int64)
    del sub_idx
    del subtype

    enc = pc.dictionary_encode(image).combine_chunks()
    img_code = enc.indices.to_numpy().astype(np.int64)
    names = enc.dictionary
    values = (pc.equal(lab, "1").to_numpy(zero_copy_only=False)).astype(np.int8)
    del enc, image, lab, ids, table

    # the ID rule, checked once per distinct image
    safe = pc.and_(pc.match_substring_regex(names, _SAFE_RE2), pc.invert(pc.match_substring(names, "..")))
    safe = safe.to_numpy(zero_copy_only=False)
    image_ids = names.to_pylist()
    refused: list[tuple[int, str]] = []
    n_refused = 0
    if not safe.all():
        keep = safe[img_code]
        n_refused = int(np.count_nonzero(~keep))
        refused = _refused_rows(path)
        if n_refused == n_rows:
            raise LabelFileError(f"{name}: line {refused[0][0]}: `image_id` must be {ID_RULE}. Got "
                                 f"{refused[0][1][:80]!r} instead (every one of the {n_rows} rows is refused)")
        first = ", ".join(f"line {n} {i[:80]!r}" for n, i in refused[:3])
        warnings.warn(f"{name}: {n_refused} row(s) refused: `image_id` must be {ID_RULE}; {first}",
                      RuntimeWarning, stacklevel=2)
        new_code = np.cumsum(safe) - 1  # old image code -> code among the kept images, order kept
        img_code, sub_code, values = new_code[img_code[keep]], sub_code[keep], values[keep]
        image_ids = [i for i, ok in zip(image_ids, safe) if ok]
    del safe, names

    n_img, n_col = len(image_ids), len(LABEL_COLUMNS)
    key = img_code * n_col + sub_code
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    dup = np.flatnonzero(key_sorted[1:] == key_sorted[:-1]) + 1  # positions (in sorted) of repeats
    n_dup = int(dup.size)
    if n_dup:
        conflict = values[order[dup]] != values[order[dup - 1]]
        if conflict.any():
            _raise_conflict(path, image_ids, LABEL_COLUMNS, key_sorted[dup[conflict][0]], n_col)
        warnings.warn(
            f"{name}: {n_dup} duplicated row(s) with agreeing labels dropped", RuntimeWarning, stacklevel=2
        )

    out = np.full(n_img * n_col, -1, dtype=np.int8)
    out[key] = values
    out = out.reshape(n_img, n_col)
    missing = np.flatnonzero((out < 0).any(axis=1))
    if missing.size:
        i = int(missing[0])
        absent = [c for c, v in zip(LABEL_COLUMNS, out[i]) if v < 0]
        raise LabelFileError(
            f"{name}: image {image_ids[i]} has no row for {', '.join(repr(a) for a in absent)} "
            f"({missing.size} image(s) incomplete); each image needs all six subtypes"
        )

    sub, any_col = out[:, : n_col - 1], out[:, n_col - 1]
    inconsistent = int(np.count_nonzero(sub.max(axis=1) != any_col))
    if inconsistent:
        warnings.warn(
            f"{name}: 'any' differs from the OR of the five subtypes for {inconsistent} image(s); kept as written",
            RuntimeWarning,
            stacklevel=2,
        )
    frame = pd.DataFrame(out, index=pd.Index(image_ids, name="image_id"), columns=list(LABEL_COLUMNS))
    frame.attrs.update({"source": str(path), "n_rows": n_rows, "n_duplicate_rows": n_dup,
                        "n_refused_rows": n_refused, "refused": refused[:_N_REFUSED_KEPT]})
    return frame


def _refused_rows(path: Path) -> list[tuple[int, str]]:
    """Slow pass: ``(line, image ID)`` of every row whose image ID breaks the ID rule."""
    out = []
    for lineno, line in _data_lines(path):
        image = line.split(",", 1)[0].rsplit("_", 1)[0]
        if not is_safe_id(image):
            out.append((lineno, image))
    return out


def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line after the header, for the slow passes."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        next(fh, None)
        for lineno, raw in enumerate(fh, start=2):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield lineno, line


def _check_line(line: str) -> str | None:
    """Why one data line is malformed, or ``None`` if it is fine."""
    fields = line.split(",")
    if len(fields) != 2:
        return f"expected 2 fields 'ID,Label', got {len(fields)}"
    ident, label = fields
    if label not in ("0", "1"):
        return f"label is {label!r}; expected 0 or 1"
    if "_" not in ident:
        return f"no '_<subtype>' suffix in ID {ident!r}"
    image, subtype = ident.rsplit("_", 1)
    if not image:
        return f"no image part in ID {ident!r}"
    if subtype not in LABEL_COLUMNS:
        return f"unknown subtype {subtype!r} in ID {ident!r}; expected one of {', '.join(LABEL_COLUMNS)}"
    return None


def _raise_first_bad_line(path: Path, summary: str) -> None:
    """Slow pass: find and report the first malformed line (only called when the fast path failed)."""
    rows = 0
    for lineno, line in _data_lines(path):
        rows += 1
        why = _check_line(line)
        if why is not None:
            raise LabelFileError(f"{path.name}: line {lineno}: {why}: {line[:80]!r}")
    if not rows:  # pyarrow cannot parse a header without a line end and nothing after it
        _raise_header_only(path)
    raise LabelFileError(f"{path.name}: {summary}")  # pragma: no cover (fast and slow paths disagree)


def _raise_header_only(path: Path) -> None:
    raise LabelFileError(f"{path.name}: a label file must have data rows after its header 'ID,Label'. "
                         "Got the header only instead.")


def _raise_conflict(path: Path, image_ids: list, columns: tuple, key: int, n_col: int) -> None:
    """Name the lines of the first conflicting duplicate."""
    image, subtype = image_ids[int(key) // n_col], columns[int(key) % n_col]
    target = f"{image}_{subtype}"
    seen: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        next(fh, None)
        for lineno, raw in enumerate(fh, start=2):
            line = raw.rstrip("\r\n")
            if line.split(",", 1)[0] == target:
                seen.append((lineno, line.rsplit(",", 1)[-1]))
    desc = ", ".join(f"line {n} says {v}" for n, v in seen)
    raise LabelFileError(f"{path.name}: conflicting duplicate rows for {target}: {desc}")
