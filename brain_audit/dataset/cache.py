"""The HU cache: a cohort read once into compact int16 shards at model resolution.

Layout of a cache folder::

    CACHE/manifest.json          written last: parameters, source fingerprints digest, shards
    CACHE/images.parquet         one row per cached image: split, shard, row, patient/study/series,
                                 z, the six labels, in_<cohort> flags, role ("sample" or "context")
    CACHE/skipped.csv            image_id, file, reason: every source that could not be read
    CACHE/shards/<split>-<k>.npy int16 (n, size, size) HU, C order, one split per shard
    CACHE/shards/<split>-<k>.json the shard's receipt: its spec hash, image IDs, skipped files

Per slice: :func:`brain_audit.dicom.read_hu` (Modality LUT, RSNA wrap fix, padding -> air),
padded to a square with air (:data:`~brain_audit.dicom.AIR_HU`) around the centre so
anatomy keeps its aspect ratio, resized with :func:`brain_audit.windowing.resize_hu`
(area when shrinking), rounded to the nearest HU and stored as int16 (HU outside
[-32768, 32767] clipped). HU stay HU: no window, no 8-bit step; rounding costs at most
0.5 HU. A 256 x 256 slice takes 128 KiB, so a 20,000-slice cohort is 2.6 GB.

Integrity: one build at a time holds the folder (:func:`brain_audit.run_lock.run_lock`). Every
shard is written atomically and then its receipt (the receipt is the commit mark). The
manifest and every receipt record the build's parameters (``CACHE_FORMAT``, size, context,
shard size, a digest of the cohort table, the RSNA fix, the DICOM folder). Asked for other
parameters than those recorded, a build says so in a ``RuntimeWarning`` naming each key and
both values, removes the whole cache and builds it again: a cache is never mixed. With the
same parameters, a shard whose receipt matches the current spec (image IDs, source
fingerprints ``size:mtime_ns``) and whose ``.npy`` holds one slice per ID at the requested size
is kept, anything else is rebuilt. The manifest is deleted when a build starts and written when
it ends, and readers refuse a folder without it, or a shard whose shape is not the manifest's
(:class:`~brain_audit.errors.CacheError`); the temporaries of a killed build are removed when
the next one starts. So a half-written cache is never used, a changed source rebuilds what it
touches, and a killed build resumes where it stopped and ends byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brain_audit.dataset.cohort import read_cohort
from brain_audit.dicom import AIR_HU, read_hu
from brain_audit.errors import CacheError, ConfigError, DicomReadError
from brain_audit.parallel import map_unordered
from brain_audit.provenance import (
    atomic_write_bytes,
    atomic_write_text,
    file_fingerprint,
    read_json,
    remove_temporaries,
    run_record,
    write_csv,
    write_json,
)
from brain_audit.rsna import LABEL_COLUMNS, TRAIN_DIR, image_path
from brain_audit.run_lock import run_lock
from brain_audit.windowing import resize_hu

__all__ = [
    "CACHE_FORMAT",
    "NO_TISSUE_MAX_HU",
    "build_cache",
    "HUCache",
    "open_cache",
    "load_split_arrays",
    "centre_slice",
    "pad_to_square",
    "preprocess_slice",
]

#: Version of the cache layout; a cache of another version is rebuilt.
CACHE_FORMAT = 1

_SPLIT_ORDER = ("train", "validation", "audit", "pretrain", "context")

#: A slice with no pixel above this (HU) holds no tissue: air or padding only (e.g. every pixel stored as
#: -2000). Legal, so it is cached, but it is counted and listed (``manifest.json``: ``without_tissue``).
NO_TISSUE_MAX_HU: float = -500.0


def pad_to_square(hu: np.ndarray) -> np.ndarray:
    """One HU slice padded to a square with :data:`~brain_audit.dicom.AIR_HU`, centred.

    Args:
        hu: float array (H, W) in HU.

    Returns:
        float32 (max(H, W), max(H, W)) in HU; a square slice is returned as float32 unchanged.
    """
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    h, w = x.shape
    if h == w:
        return x
    side = max(h, w)
    sq = np.full((side, side), AIR_HU, dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    sq[top : top + h, left : left + w] = x
    return sq


def preprocess_slice(hu: np.ndarray, size: int) -> np.ndarray:
    """One HU slice -> int16 (size, size) HU as the cache stores it: the one way into the model.

    :func:`pad_to_square`, then :func:`brain_audit.windowing.resize_hu` to ``size``, rounded half
    to even and clipped to the int16 range.

    Args:
        hu: float array (H, W) in HU.
        size: output side in pixels (> 0).

    Returns:
        int16 array (size, size) in HU.
    """
    if size <= 0:
        raise ValueError(f"`size` must be > 0. Got {size} instead.")
    x = resize_hu(pad_to_square(hu), size)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _build_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: read, preprocess and write one shard and its receipt; returns the receipt."""
    size = task["size"]
    ok_ids: list[str] = []
    skipped: list[dict[str, str]] = []
    arrays: list[np.ndarray] = []
    no_tissue: list[str] = []
    for image_id, path in task["items"]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                hu = read_hu(path, fix_rsna_defect=task["fix_rsna_defect"])
        except DicomReadError as exc:
            skipped.append({"image_id": image_id, "file": task["files"][image_id], "reason": exc.reason})
            continue
        arrays.append(preprocess_slice(hu, size))
        ok_ids.append(image_id)
        if not (hu > NO_TISSUE_MAX_HU).any():
            no_tissue.append(image_id)
    data = np.stack(arrays) if arrays else np.zeros((0, size, size), dtype=np.int16)
    shard_dir = Path(task["shard_dir"])
    atomic_write_bytes(shard_dir / f"{task['name']}.npy", _npy_bytes(data))
    receipt = {"name": task["name"], "spec": task["spec"], "ids": ok_ids, "skipped": skipped, "without_tissue": no_tissue,
               "bytes": int(data.nbytes), "size": int(size), "parameters": task["parameters"]}
    atomic_write_text(shard_dir / f"{task['name']}.json", json.dumps(receipt, indent=1, sort_keys=True) + "\n")
    return receipt


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _neighbours(index: pd.DataFrame, ids: pd.Index, context: int) -> list[str]:
    """IDs of the ``context`` slices above and below each of ``ids`` in its series (by z), not in ``ids``."""
    need = index.loc[index.index.intersection(ids), "series_id"].unique()
    sub = index[index["series_id"].isin(need)].reset_index().sort_values(["series_id", "z", "image_id"])
    extra: set[str] = set()
    want = set(ids)
    for _, g in sub.groupby("series_id", sort=False):
        order = g["image_id"].tolist()
        for i, image_id in enumerate(order):
            if image_id in want:
                extra.update(order[max(0, i - context) : i + context + 1])
    return sorted(extra - want)


def build_cache(
    cohort: pd.DataFrame | str | Path,
    root: str | Path,
    cache_dir: str | Path,
    *,
    size: int = 256,
    splits: Sequence[str] | None = None,
    context: int = 0,
    index: pd.DataFrame | None = None,
    folder: str = TRAIN_DIR,
    shard_size: int = 512,
    fix_rsna_defect: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> "HUCache":
    """Build (or resume, or reuse) the HU cache of a cohort.

    Args:
        cohort: the table of :func:`brain_audit.dataset.cohort.plan_cohorts` or the path of its
            ``cohort.csv`` (needs split, patient_id, study_id, series_id, z, the labels).
        root: dataset root (``root/folder/<image_id>.dcm``).
        cache_dir: the cache folder (see module docstring).
        size: side of the stored slices in pixels (> 0); the model's input size.
        splits: only these splits of the cohort (``None``: all).
        context: also cache the ``context`` slices above and below every image in its
            series (by z; 2.5D input of :func:`brain_audit.dataset.feed.make_feed`); needs ``index``.
            They get ``role = "context"`` and are never yielded as samples.
        index: the header index (:func:`brain_audit.dataset.index.read_index`), for ``context``.
        folder: DICOM sub-folder of ``root``.
        shard_size: slices per shard (> 0); also the unit of resumption.
        fix_rsna_defect: passed to :func:`brain_audit.dicom.read_hu`.
        workers: processes (``None``: all cores; ``0`` / ``1``: this process).
        progress: tqdm bar over slices.

    Returns:
        The finished cache, opened (:class:`HUCache`). Unreadable sources are in
        ``skipped.csv`` with their reason (and in ``HUCache.skipped``); they never stop
        the build.
    """


    if size <= 0:
        raise ValueError(f"`size` must be > 0. Got {size} instead.")
    if shard_size <= 0:
        raise ValueError(f"`shard_size` must be > 0. Got {shard_size} instead.")
    if context < 0:
        raise ValueError(f"`context` must be >= 0. Got {context} instead.")
    if workers is not None and workers < 0:
        raise ValueError(f"`workers` must be >= 0. Got {workers} instead.")
    if context > 0 and index is None:
        raise ValueError("`index` must be given when `context` > 0 (neighbours come from the header index). "
                         "Got None instead.")
    with run_lock(cache_dir):
        return _build_locked(cohort, Path(root), Path(cache_dir), size=size, splits=splits, context=context,
                             index=index, folder=folder, shard_size=shard_size, fix_rsna_defect=fix_rsna_defect,
                             workers=workers, progress=progress)


def _build_locked(cohort: pd.DataFrame | str | Path, root: Path, cache_dir: Path, *, size: int,
                  splits: Sequence[str] | None, context: int, index: pd.DataFrame | None, folder: str,
                  shard_size: int, fix_rsna_defect: bool, workers: int | None, progress: bool) -> "HUCache":
    """:func:`build_cache` once its arguments are checked, while this process holds the folder."""
    table = read_cohort(cohort) if isinstance(cohort, (str, Path)) else cohort.copy()
    required = ["split", "patient_id", "study_id", "series_id", "z", *LABEL_COLUMNS]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"`cohort` must have columns {required}. Missing {missing} instead.")
    if splits is not None:
        table = table[table["split"].isin(list(splits))]
    if not len(table):
        raise ConfigError("`cohort` holds no image to cache (after `splits`). Got an empty table instead.")
    table.index.name = "image_id"
    table["role"] = "sample"
    if context > 0:
        extra = _neighbours(index, table.index, context)
        ctx = index.loc[extra, ["patient_id", "study_id", "series_id", "z"]].copy()
        ctx["split"] = "context"
        for c in LABEL_COLUMNS:
            ctx[c] = np.int8(-1)  # unknown: context slices are inputs only
        for c in [c for c in table.columns if c.startswith("in_")]:
            ctx[c] = False
        ctx["role"] = "context"
        ctx.index.name = "image_id"
        table = pd.concat([table, ctx[table.columns]])
    shard_dir = cache_dir / "shards"
    split_rank = {s: i for i, s in enumerate(_SPLIT_ORDER)}
    table = table.assign(_r=table["split"].map(lambda s: split_rank.get(s, len(_SPLIT_ORDER))))
    table = table.reset_index().sort_values(["_r", "split", "image_id"], kind="stable").drop(columns="_r")
    table = table.set_index("image_id")

    params = {"format": CACHE_FORMAT, "size": int(size), "dtype": "int16", "fix_rsna_defect": bool(fix_rsna_defect),
              "square": "pad with air, centred", "resize": "brain_audit.windowing.resize_hu", "folder": folder}
    # IDs are data: image_path refuses one that is no ID or would leave the data root (same strings otherwise)
    files = {i: image_path(root, i, folder).relative_to(root).as_posix() for i in table.index}
    fingerprints = {}
    for i in table.index:
        try:
            fingerprints[i] = file_fingerprint(root / files[i])
        except OSError:
            fingerprints[i] = "missing"

    meta_cols = ["split", "role", "patient_id", "study_id", "series_id", "z", *LABEL_COLUMNS,
                 *[c for c in table.columns if c.startswith("in_")]]
    cohort_digest = _digest(table[meta_cols].reset_index().astype(str).to_numpy().tolist())
    parameters = {"format": CACHE_FORMAT, "size": int(size), "context": int(context), "shard_size": int(shard_size),
                  "cohort": cohort_digest, "fix_rsna_defect": bool(fix_rsna_defect), "folder": folder}
    tasks: list[dict[str, Any]] = []
    for split, g in table.groupby("split", sort=False):
        ids = g.index.tolist()
        for k in range(0, len(ids), shard_size):
            chunk = ids[k : k + shard_size]
            name = f"{split}-{k // shard_size:05d}"
            spec = _digest({"params": params, "ids": chunk, "fp": [fingerprints[i] for i in chunk]})
            tasks.append({"name": name, "spec": spec, "items": [(i, str(root / files[i])) for i in chunk],
                          "files": {i: files[i] for i in chunk}, "size": int(size), "parameters": parameters,
                          "fix_rsna_defect": bool(fix_rsna_defect), "shard_dir": str(shard_dir)})
    plan_hash = _digest({"params": params, "shards": [t["spec"] for t in tasks], "meta": cohort_digest})

    # a killed writer's temporaries go first (this process holds the folder: nobody else is writing)
    remove_temporaries(cache_dir)
    remove_temporaries(shard_dir)
    manifest_path = cache_dir / "manifest.json"
    old = read_json(manifest_path)
    changed = _changed_parameters(old, shard_dir, parameters)
    if changed:
        said = ", ".join(f"{k}={_shown(k, was)} (this build asks {_shown(k, parameters[k])})" for k, was in changed)
        warnings.warn(f"{cache_dir}: the HU cache was built with {said}; a cache is never mixed, so it is removed and "
                      "rebuilt", RuntimeWarning, stacklevel=3)
        _clear(cache_dir)
        old = None
    if old is not None and old.get("plan_hash") == plan_hash and all(_receipt_ok(shard_dir, t) for t in tasks):
        return open_cache(cache_dir, size=size)
    manifest_path.unlink(missing_ok=True)
    shard_dir.mkdir(parents=True, exist_ok=True)

    receipts: dict[str, dict] = {}
    todo = []
    for t in tasks:
        rec = _receipt_ok(shard_dir, t)
        if rec is not None:
            receipts[t["name"]] = rec
        else:
            (shard_dir / f"{t['name']}.json").unlink(missing_ok=True)  # receipt first: never a stale pair
            todo.append(t)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=sum(len(t["items"]) for t in todo), unit="slice", desc="HU cache",
               disable=not progress or not todo)
    try:
        for rec in map_unordered(_build_shard, todo, n_workers):
            receipts[rec["name"]] = rec
            bar.update(len(rec["ids"]) + len(rec["skipped"]))
    finally:
        bar.close()

    keep = {f"{t['name']}{ext}" for t in tasks for ext in (".npy", ".json")}
    for p in shard_dir.iterdir():
        if p.name not in keep:
            p.unlink()

    rows = []
    skipped = []
    without_tissue: list[str] = []
    for t in tasks:
        rec = receipts[t["name"]]
        rows.extend((i, t["name"], r) for r, i in enumerate(rec["ids"]))
        skipped.extend(rec["skipped"])
        without_tissue.extend(rec.get("without_tissue", []))
    if without_tissue:
        warnings.warn(f"{cache_dir.name}: {len(without_tissue)} cached slice(s) hold no pixel above "
                      f"{NO_TISSUE_MAX_HU:g} HU (air or padding only; e.g. {without_tissue[0]}); kept, listed in "
                      "manifest.json 'without_tissue'", RuntimeWarning, stacklevel=2)
    where = pd.DataFrame(rows, columns=["image_id", "shard", "row"]).set_index("image_id")
    images = where.join(table[meta_cols], how="left")
    images["row"] = images["row"].astype("int32")
    for c in LABEL_COLUMNS:
        images[c] = images[c].astype("int8")
    buf = io.BytesIO()
    images.reset_index().to_parquet(buf, index=False)
    atomic_write_bytes(cache_dir / "images.parquet", buf.getvalue())
    skipped_frame = pd.DataFrame(skipped, columns=["image_id", "file", "reason"])
    write_csv(cache_dir / "skipped.csv", skipped_frame)
    manifest = run_record(
        config=params,
        inputs={"sources": _digest(sorted(fingerprints.items())), "root": str(root)},
        plan_hash=plan_hash,
        parameters=parameters,
        size=int(size),
        context=int(context),
        n_images=int(len(images)),
        n_samples=int((images["role"] == "sample").sum()),
        n_skipped=int(len(skipped_frame)),
        without_tissue=sorted(without_tissue),
        shards=[{"name": t["name"], "n": len(receipts[t["name"]]["ids"]), "bytes": receipts[t["name"]]["bytes"]}
                for t in tasks],
    )
    write_json(manifest_path, manifest)
    return open_cache(cache_dir)


def _read_receipt(shard_dir: Path, name: str) -> dict | None:
    return read_json(shard_dir / f"{name}.json")


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a ``.npy`` header (nothing else is read), or ``None`` if the file is missing or not one."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(fh)
    except (OSError, ValueError):
        return None
    return tuple(int(n) for n in header[0])


def _receipt_ok(shard_dir: Path, task: dict[str, Any]) -> dict | None:
    """The receipt of a finished shard that can be reused for ``task``, else ``None``: its spec (image IDs,
    source fingerprints, parameters) must match, and the ``.npy`` must hold one slice per ID at the task's size."""
    rec = _read_receipt(shard_dir, task["name"])
    if rec is None or rec.get("spec") != task["spec"] or rec.get("size", task["size"]) != task["size"]:
        return None
    size = task["size"]
    return rec if _npy_shape(shard_dir / f"{task['name']}.npy") == (len(rec.get("ids", ())), size, size) else None


def _recorded_parameters(manifest: dict) -> dict[str, Any]:
    """The parameters a manifest records (a manifest of an older version: those it has)."""
    if isinstance(manifest.get("parameters"), dict):
        return manifest["parameters"]
    config = manifest.get("config") or {}
    legacy = {"format": config.get("format"), "size": manifest.get("size"), "context": manifest.get("context", 0),
              "fix_rsna_defect": config.get("fix_rsna_defect"), "folder": config.get("folder")}
    return {k: v for k, v in legacy.items() if v is not None}


def _changed_parameters(manifest: dict | None, shard_dir: Path, parameters: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(key, recorded value)`` of every parameter that the manifest, or any shard receipt left by an
    interrupted build, records with another value than ``parameters``; in the order of ``parameters``."""
    recorded = [_recorded_parameters(manifest)] if manifest is not None else []
    if shard_dir.is_dir():
        for p in sorted(shard_dir.glob("*.json")):
            rec = read_json(p)
            if rec is not None and isinstance(rec.get("parameters"), dict):
                recorded.append(rec["parameters"])
    changed: dict[str, Any] = {}
    for rec in recorded:
        for key, value in parameters.items():
            if key in rec and rec[key] != value and key not in changed:
                changed[key] = rec[key]
    return [(k, changed[k]) for k in parameters if k in changed]


def _shown(key: str, value: Any) -> str:
    return f"{str(value)[:12]}..." if key == "cohort" else json.dumps(value)


def _clear(cache_dir: Path) -> None:
    """Remove what :func:`build_cache` writes in ``cache_dir`` (and nothing else): manifest first, then the rest."""
    for name in ("manifest.json", "images.parquet", "skipped.csv"):
        (cache_dir / name).unlink(missing_ok=True)
    shard_dir = cache_dir / "shards"
    if shard_dir.is_dir():
        for p in shard_dir.iterdir():
            if p.is_file() and p.suffix in (".npy", ".json"):
                p.unlink()


class HUCache:
    """A finished HU cache, read-only; open it with :func:`open_cache`.

    Attributes:
        path: the cache folder.
        manifest: ``manifest.json`` as a dict.
        size: side of the stored slices (pixels).
        table: DataFrame indexed by image ID: split, role, shard, row, patient_id,
            study_id, series_id, z, the six int8 labels (``-1`` for context slices) and
            ``in_<cohort>`` flags.
        skipped: ``skipped.csv`` (image_id, file, reason).
    """

    def __init__(self, path: Path, manifest: dict, table: pd.DataFrame, skipped: pd.DataFrame) -> None:
        self.path = path
        self.manifest = manifest
        self.size = int(manifest["size"])
        self.table = table
        self.skipped = skipped
        self._shards: dict[str, np.ndarray] = {}
        self._positions: dict[str, tuple[list[str], int]] | None = None

    def shard(self, name: str) -> np.ndarray:
        """Memory-mapped int16 (n, size, size) HU of one shard."""
        arr = self._shards.get(name)
        if arr is None:
            arr = np.load(self.path / "shards" / f"{name}.npy", mmap_mode="r")
            self._shards[name] = arr
        return arr

    def ids(self, split: str, cohort: str | None = None) -> pd.Index:
        """Sample image IDs of ``split`` (optionally only those ``in_<cohort>``), in cache order."""
        t = self.table
        mask = (t["split"] == split) & (t["role"] == "sample")
        if cohort is not None:
            col = f"in_{cohort}"
            if col not in t.columns:
                known = [c[3:] for c in t.columns if c.startswith("in_")]
                raise CacheError(f"{self.path.name}: no cohort {cohort!r} in this cache; it has {known}")
            mask &= t[col]
        return t.index[mask]

    def hu_int16(self, image_ids: Sequence[str]) -> np.ndarray:
        """int16 (N, size, size) HU of ``image_ids`` (in the given order)."""
        t = self.table.loc[list(image_ids), ["shard", "row"]]
        out = np.empty((len(t), self.size, self.size), dtype=np.int16)
        shard = t["shard"].to_numpy()
        row = t["row"].to_numpy()
        for name in pd.unique(shard):
            m = shard == name
            out[m] = self.shard(name)[row[m]]
        return out

    def _series_positions(self) -> dict[str, tuple[list[str], int]]:
        """Image ID -> (the cached IDs of its series ordered by z, then ID; its position there); built once."""
        if self._positions is None:
            t = self.table.reset_index()[["image_id", "series_id", "z"]].sort_values(["series_id", "z", "image_id"])
            pos: dict[str, tuple[list[str], int]] = {}
            for _, g in t.groupby("series_id", sort=False):
                order = g["image_id"].tolist()
                for i, image_id in enumerate(order):
                    pos[image_id] = (order, i)
            self._positions = pos
        return self._positions

    def context_ids(self, image_ids: Sequence[str], context: int) -> np.ndarray:
        """(N, 1 + 2 context) image IDs: for each image the cached slices below and above it
        in its own series by z (column ``context`` is the image itself, lower columns lower z;
        never a slice of another series). At a series end the edge slice is repeated (the
        first slice of a series is its own lower neighbour, the last its own upper one); a
        neighbour that was skipped is passed over, so the nearest cached slice stands in.
        """
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
            raise ValueError(f"`context` must be an int >= 0. Got {context!r} instead.")
        if context > int(self.manifest.get("context", 0)):
            raise CacheError(
                f"{self.path.name}: built with context={self.manifest.get('context', 0)}; "
                f"rebuild with build_cache(..., context={context}) for 2.5D input"
            )
        ids = list(image_ids)
        out = np.empty((len(ids), 1 + 2 * context), dtype=object)
        if context == 0:
            out[:, 0] = ids
            return out
        pos = self._series_positions()
        for n, image_id in enumerate(ids):
            order, i = pos[image_id]
            for c in range(-context, context + 1):
                out[n, c + context] = order[min(max(i + c, 0), len(order) - 1)]
        return out

    def hu_input(self, image_ids: Sequence[str], context: int = 0, *, dtype: Any = np.float32) -> np.ndarray:
        """The model input of ``image_ids``: (N, size, size, 1 + 2 context) HU, in the given order.

        Channel ``context`` is the slice itself, channel ``context - k`` its k-th neighbour below and
        ``context + k`` above, by z in its series (:meth:`context_ids`, edge slice repeated). The one way
        every model-facing step reads cached slices; a model's ``context`` is
        :func:`brain_audit.model.predictions.model_context`.

        Args:
            image_ids: cached image IDs.
            context: neighbouring slices on each side (<= the context the cache was built with).
            dtype: ``np.float32`` (the model's input contract) or ``np.int16`` (as stored; half the memory).

        Returns:
            ``dtype`` (N, size, size, 1 + 2 context) in HU.
        """
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.int16)):
            raise ValueError(f"`dtype` must be float32 or int16. Got {np.dtype(dtype)} instead.")
        ctx = self.context_ids(image_ids, context)
        flat = self.hu_int16(ctx.reshape(-1))
        hu = flat.reshape(len(ctx), ctx.shape[1], self.size, self.size).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(hu, dtype=dtype)


def open_cache(cache_dir: str | Path, *, size: int | None = None) -> HUCache:
    """Open a finished HU cache.

    Args:
        cache_dir: a folder written by :func:`build_cache`.
        size: if given, the slice side the caller expects.

    Raises:
        CacheError: no manifest (never built, or a build was interrupted), another cache
            format, another ``size``, or a shard missing or of another shape than the manifest says.
    """
    path = Path(cache_dir)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise CacheError(f"{path}: no manifest.json; the cache is missing or half-written (rerun build_cache)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise CacheError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if manifest.get("config", {}).get("format") != CACHE_FORMAT:
        raise CacheError(f"{path}: cache format {manifest.get('config', {}).get('format')!r}; "
                         f"this version reads {CACHE_FORMAT} (rebuild it)")
    if size is not None and int(manifest["size"]) != size:
        raise CacheError(f"{path}: slices are {manifest['size']} px; expected {size} (rebuild with size={size})")
    side = int(manifest["size"])
    for s in manifest["shards"]:
        shard = path / "shards" / f"{s['name']}.npy"
        if not shard.exists():
            raise CacheError(f"{path}: shard {s['name']}.npy is missing (rerun build_cache)")
        shape = _npy_shape(shard)
        if shape != (s["n"], side, side):
            raise CacheError(f"{path}: shard {s['name']}.npy holds shape {shape}; manifest.json says "
                             f"({s['n']}, {side}, {side}) (size={side}); rebuild it with build_cache")
    table = pd.read_parquet(path / "images.parquet").set_index("image_id")
    skipped = pd.read_csv(path / "skipped.csv", dtype=str, keep_default_na=False)
    return HUCache(path, manifest, table, skipped)


def load_split_arrays(
    cache_dir: str | Path | HUCache,
    split: str,
    *,
    cohort: str | None = None,
    context: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole split as numpy, for evaluation and Grad-CAM.

    Args:
        cache_dir: cache folder or an opened :class:`HUCache`.
        split: "train", "validation", "audit" or "pretrain".
        cohort: only images ``in_<cohort>`` (e.g. ``"phase1"``).
        context: slices above and below as extra channels (see :meth:`HUCache.context_ids`).

    Returns:
        ``(ids, hu, y)``: ids ``str`` array (N,) in cache order (sorted by image ID);
        hu float32 (N, size, size, 1 + 2 context) in HU, channel ``context`` the slice
        itself; y int8 (N, 6) in the order of :data:`brain_audit.rsna.LABEL_COLUMNS`
        (five subtypes, then ``any``).
    """
    cache = cache_dir if isinstance(cache_dir, HUCache) else open_cache(cache_dir)
    ids = cache.ids(split, cohort)
    if not len(ids):
        warnings.warn(f"split {split!r} (cohort {cohort!r}) is empty in {cache.path}", RuntimeWarning, stacklevel=2)
    hu = cache.hu_input(ids, context)
    y = cache.table.loc[ids, list(LABEL_COLUMNS)].to_numpy(dtype=np.int8)
    return np.asarray(ids, dtype=str), hu, y


def centre_slice(hu: np.ndarray) -> np.ndarray:
    """The slices themselves of a model input: (N, S, S, 1 + 2 context) -> (N, S, S), channel ``context``.

    What pictures and region masks of a 2.5-D input show; (N, S, S) is returned unchanged.
    """
    x = np.asarray(hu)
    if x.ndim == 3:
        return x
    if x.ndim != 4 or x.shape[-1] % 2 != 1:
        raise ValueError(f"`hu` must be (N, S, S) or (N, S, S, 1 + 2 * context). Got shape {x.shape} instead.")
    return x[..., x.shape[-1] // 2]
