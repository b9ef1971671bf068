"""A prepared folder: an earlier run's header index (and HU cache) reused instead of made again.

Reading the ~752,000 RSNA headers takes hours on a Kaggle session; a run can start from the index an
earlier run saved. A prepared folder is that run's ``data/`` folder (or a copy of it)::

    PREPARED/index/   index.parquet, skipped.csv, index.json, pseudonym.key   (dataset.index)
    PREPARED/cache/   manifest.json, images.parquet, skipped.csv, shards/      (dataset.cache; optional)

On Kaggle: a run writes into ``/kaggle/working``; "Save Version" keeps it as the notebook's output;
attach that output as a dataset in the next session and set ``prepared`` to its ``.../data`` folder
(:func:`export_prepared` writes a clean copy elsewhere if wanted). The folder is only read, never written:
what is reused is copied into the run's own ``data/`` and checked there by the ordinary build steps, which
resume from it (:func:`brain_audit.dataset.index.build_index` reads no file it already has;
:func:`brain_audit.dataset.cache.build_cache` keeps every shard whose receipt matches).

**The pseudonym key travels with the index.** ``index/pseudonym.key`` is the secret that keeps the
pseudonyms of Patient ID and Study / Series UIDs from being reversed by anyone holding the raw DICOM
(:mod:`brain_audit.ids`). Whoever gets a prepared folder gets that key: share one only with people
entitled to the source data (a private Kaggle dataset), never publicly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from brain_audit.dataset.cache import CACHE_FORMAT, _digest  # _digest: the manifest's digest of the sources
from brain_audit.dataset.index import INDEX_FORMAT, read_skipped
from brain_audit.ids import KEY_FILE
from brain_audit.provenance import file_fingerprint, read_json
from brain_audit.rsna import TRAIN_DIR, image_path

__all__ = ["INDEX_FILES", "index_reuse_problem", "adopt_index", "cache_reuse_problem", "adopt_cache",
           "export_prepared"]

#: The files of a finished header index folder (``parts/`` of an unfinished one are never reused).
INDEX_FILES: tuple[str, ...] = ("index.parquet", "skipped.csv", "index.json", KEY_FILE)

#: Indexed files whose size is compared with the data's (cheap: one stat each) before an index is reused.
_SIZE_SAMPLE = 32


def index_reuse_problem(prepared_index: str | Path, root: str | Path, image_ids: pd.Index) -> str | None:
    """Why the header index in ``prepared_index`` does not answer the data at ``root``, or ``None`` when it does.

    It answers when it is a finished index of this package's rules (``index.json`` ``format`` equals
    :data:`~brain_audit.dataset.index.INDEX_FORMAT`, its files and ``pseudonym.key`` present), every
    labelled image in ``image_ids`` is either indexed or recorded as skipped, and the sizes of a fixed
    sample of indexed files (the ``<size>`` of their ``fingerprint``) are those of the files under ``root``.

    Args:
        prepared_index: the ``index/`` folder of a prepared folder.
        root: the dataset root of this run.
        image_ids: the images of the run's label file.

    Returns:
        ``None``, or one line naming what differs (a file missing, another format, N labelled images
        unknown to it with an example, a file of another size).
    """
    folder = Path(prepared_index)
    missing = [name for name in INDEX_FILES if not (folder / name).is_file()]
    if missing:
        return f"{folder}: no finished header index here ({', '.join(missing)} missing)"
    record = read_json(folder / "index.json") or {}
    if record.get("format") != INDEX_FORMAT:
        return f"{folder}: index format {record.get('format')!r}; this version reads format {INDEX_FORMAT}"
    index = pd.read_parquet(folder / "index.parquet", columns=["image_id", "fingerprint"]).set_index("image_id")
    known = index.index.union(pd.Index(read_skipped(folder)["image_id"].astype(str)))
    unknown = pd.Index(image_ids).difference(known)
    if len(unknown):
        return (f"{folder}: {len(unknown)} labelled image(s) are neither indexed nor skipped there "
                f"(e.g. {unknown[0]}); it indexes other data")
    step = max(1, len(index) // _SIZE_SAMPLE)
    for image_id, fingerprint in index["fingerprint"].iloc[::step].items():
        try:
            size = os.stat(image_path(root, str(image_id))).st_size
        except OSError:
            return f"{folder}: indexed file {image_id}.dcm is missing under {Path(root) / TRAIN_DIR}"
        if str(size) != str(fingerprint).split(":")[0]:
            return f"{folder}: {image_id}.dcm has {size} bytes here, {str(fingerprint).split(':')[0]} when indexed"
    return None


def _copy_files(src: Path, dst: Path, names: Any) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = dst / name
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(src / name, tmp)  # content only: no read-only mode carried over from the input
        os.replace(tmp, target)


def adopt_index(prepared_index: str | Path, run_index: str | Path) -> str | None:
    """Copy a finished index into the run's empty ``data/index/``; returns why not, or ``None`` when copied.

    The run's folder must hold neither ``index.parquet`` nor ``pseudonym.key`` yet (a run's own index,
    finished or in progress, is never replaced: its parts would hold another key's pseudonyms). The key is
    copied last, so a copy killed halfway leaves a folder that the next build reads as its own and rescans.
    """
    src, dst = Path(prepared_index), Path(run_index)
    if (dst / "index.parquet").exists() or (dst / KEY_FILE).exists():
        return f"{dst}: the run already has its own header index"
    _copy_files(src, dst, [n for n in INDEX_FILES if n != KEY_FILE])
    _copy_files(src, dst, [KEY_FILE])
    os.chmod(dst / KEY_FILE, 0o600)
    return None


def cache_reuse_problem(prepared_cache: str | Path, root: str | Path, cohort: pd.DataFrame, size: int, *,
                        context: int = 0) -> str | None:
    """Why the HU cache in ``prepared_cache`` does not hold this run's cohort, or ``None`` when it does.

    It does when its ``manifest.json`` is of :data:`~brain_audit.dataset.cache.CACHE_FORMAT` at ``size`` px
    with the run's ``context`` (neighbouring slices on each side), its samples are exactly the cohort's images
    in the same splits, and the sources' fingerprints (``size:mtime_ns`` of every file it holds, its context
    slices included; the digest the manifest records) are those under ``root``: the same conditions
    :func:`brain_audit.dataset.cache.build_cache` checks before it keeps a shard (which also rebuilds any
    shard whose context slices are not those the run's header index names).
    """
    folder = Path(prepared_cache)
    manifest = read_json(folder / "manifest.json")
    if manifest is None or not (folder / "images.parquet").is_file():
        return f"{folder}: no finished HU cache here (manifest.json or images.parquet missing)"
    params = manifest.get("parameters") or {}
    if params.get("format") != CACHE_FORMAT or params.get("size") != size or params.get("context", 0) != context:
        return (f"{folder}: cache of format {params.get('format')!r}, {params.get('size')!r} px, context "
                f"{params.get('context')!r}; this run asks format {CACHE_FORMAT}, {size} px, context {context}")
    images = pd.read_parquet(folder / "images.parquet", columns=["image_id", "split", "role"]).set_index("image_id")
    theirs = images.loc[images["role"] == "sample", "split"].astype(str).sort_index()
    ours = cohort["split"].astype(str).sort_index()
    if not theirs.index.equals(ours.index) or not (theirs.to_numpy() == ours.to_numpy()).all():
        return f"{folder}: the cache holds another cohort ({len(theirs)} slices; this run's cohort has {len(ours)})"
    built_from = images.index  # the samples and their context slices, with any context slice it skipped
    if (folder / "skipped.csv").is_file():
        skipped = pd.read_csv(folder / "skipped.csv", dtype=str, keep_default_na=False)
        built_from = built_from.union(pd.Index(skipped.get("image_id", pd.Series(dtype=str))))
    fingerprints = {}
    for i in built_from:
        try:
            fingerprints[i] = file_fingerprint(image_path(root, i))
        except OSError:
            fingerprints[i] = "missing"
    if (manifest.get("inputs") or {}).get("sources") != _digest(sorted(fingerprints.items())):
        return f"{folder}: the source files' size or modification time differ from those the cache was built from"
    return None


def adopt_cache(prepared_cache: str | Path, run_cache: str | Path) -> str | None:
    """Copy a finished HU cache into the run's empty ``data/cache/``; returns why not, or ``None`` when copied.

    The manifest is copied last (readers refuse a cache without it), so a copy killed halfway is a
    half-written cache that :func:`brain_audit.dataset.cache.build_cache` repairs shard by shard.
    """
    src, dst = Path(prepared_cache), Path(run_cache)
    if (dst / "manifest.json").exists() or (dst / "shards").exists():
        return f"{dst}: the run already has its own HU cache"
    shards = sorted(p.name for p in (src / "shards").iterdir() if p.suffix in (".npy", ".json"))
    _copy_files(src / "shards", dst / "shards", shards)
    _copy_files(src, dst, ["images.parquet", "skipped.csv"])
    _copy_files(src, dst, ["manifest.json"])
    return None


def export_prepared(data_dir: str | Path, dest: str | Path, *, cache: bool = True) -> Path:
    """Copy a run's finished ``data/index`` (and ``data/cache``) into ``dest``, a folder to save as a dataset.

    Only finished results are copied (the files of :data:`INDEX_FILES`; the cache's manifest, tables and
    committed shards), never ``parts/`` or temporaries. ``dest`` then serves as ``prepared``. It holds the
    pseudonym key: see the module docstring before sharing it.

    Returns:
        ``dest``.
    """
    src, dest = Path(data_dir), Path(dest)
    _copy_files(src / "index", dest / "index", INDEX_FILES)
    os.chmod(dest / "index" / KEY_FILE, 0o600)
    if cache and (src / "cache" / "manifest.json").is_file():
        manifest = read_json(src / "cache" / "manifest.json") or {}
        shards = [f"{s['name']}{ext}" for s in manifest.get("shards", []) for ext in (".npy", ".json")]
        _copy_files(src / "cache" / "shards", dest / "cache" / "shards", shards)
        _copy_files(src / "cache", dest / "cache", ["images.parquet", "skipped.csv", "manifest.json"])
    return dest
