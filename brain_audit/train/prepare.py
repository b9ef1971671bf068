"""The data of one run: labels -> header index -> patient splits and phase cohorts -> HU cache.

Every step resumes and skips what is done; the audit patients are chosen first and never enter a
training, validation or pretraining cohort. One process at a time writes a run folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from brain_audit.config import RunConfig, to_dict, with_resolved_data_root
from brain_audit.dataset.cache import build_cache, open_cache
from brain_audit.dataset.cohort import CohortSpec, add_whole_patients, join_images, plan_cohorts, write_cohorts
from brain_audit.dataset.index import build_index
from brain_audit.dataset.labels import read_labels
from brain_audit.dataset.prepared import adopt_cache, adopt_index, cache_reuse_problem, index_reuse_problem
from brain_audit.errors import DataNotFoundError
from brain_audit.provenance import write_csv, write_json
from brain_audit.rsna import TRAIN_CSV
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock

__all__ = ["prepare_data", "data_summary", "open_run_cache"]


def prepare_data(config: RunConfig, progress: bool = True) -> Any:
    """Labels -> header index -> patient splits and nested phase cohorts -> HU cache, for one run.

    Every step is resumable and skips what is done (see :mod:`brain_audit.dataset.index`,
    :mod:`brain_audit.dataset.cache`). The audit patients are chosen first and never enter a
    training, validation or pretraining cohort (:func:`brain_audit.dataset.cohort.plan_cohorts`).

    The run folder is held for the whole call (:func:`brain_audit.run_lock.run_lock`): a second run
    into it is refused. The cache records its parameters; asked for other ones (another
    ``image_size``, ``context`` or cohort) it warns and is rebuilt, never mixed (:func:`build_cache`). With
    ``context`` > 0 it also holds the ``context`` slices above and below every cohort image in its series, found
    by z in the header index.

    ``data_root = "auto"`` is found under ``/kaggle/input`` (:func:`brain_audit.rsna.find_rsna_root`).
    With ``prepared`` set, its ``index/`` (and ``cache/``) are copied into the run first when they answer
    this data (:mod:`brain_audit.dataset.prepared`), else a RuntimeWarning says why and the run reads the
    headers itself; ``data/summary.json`` ``prepared`` records which.

    Returns:
        The opened :class:`brain_audit.dataset.cache.HUCache`.

    Raises:
        ConfigError: the run folder is in use by another process.
        DataNotFoundError: ``data_root`` holds no label file, or ``"auto"`` found no data.
    """
    with run_lock(config.out_dir):
        return _prepare_locked(config, progress)


def _prepare_locked(config: RunConfig, progress: bool) -> Any:
    config = with_resolved_data_root(config)
    root = Path(config.data_root)
    if not (root / TRAIN_CSV).is_file():
        raise DataNotFoundError(f"`data_root` must hold {TRAIN_CSV}. Got {str(root)!r} instead "
                                "(set data_root = \"auto\" to search /kaggle/input)")
    paths = RunPaths(config.out_dir)
    labels = read_labels(root / TRAIN_CSV)
    reused = {"index": _reuse_index(config, root, labels.index, paths)}
    index = build_index(root, paths.index, labels.index, workers=config.workers, progress=progress)
    images = join_images(labels, index)
    specs = []
    for name, plan in (("phase2", config.phase2), ("phase1", config.phase1)):
        n = plan.cohort_size
        if n == 0:  # the whole pool
            n = len(images) if plan.cohort_unit == "slice" else images["patient_id"].nunique()
        specs.append(CohortSpec(name, n, balance=plan.balance or None, unit=plan.cohort_unit))
    with warnings.catch_warnings():
        if 0 in (config.phase1.cohort_size, config.phase2.cohort_size):
            # "the whole pool" was asked for; cohort.json records what was drawn
            warnings.filterwarnings("ignore", message="the pool holds", category=RuntimeWarning)
        cohort, patients = plan_cohorts(
            images,
            specs,
            n_audit=config.audit_patients,
            n_pretrain=config.pretrain.patients,
            validation=config.validation_fraction,
            seed=config.seed,
        )
    write_cohorts(paths.cohort, cohort, patients, config=to_dict(config), seed=config.seed)
    cached = cohort
    if config.phase5.enabled:
        # Phase 5 reads whole series: these patients bring every slice to the cache, in no phase cohort, so
        # cohort.csv (what phases 1-4 trained on) is unchanged (see config.StudyPlan)
        cached = add_whole_patients(cohort, images, patients, n_train=config.phase5.patients,
                                    n_validation=config.phase5.validation_patients, seed=config.seed)
        write_csv(paths.cohort / "phase5.csv", cached.loc[~cached.index.isin(cohort.index)].reset_index())
    reused["cache"] = _reuse_cache(config, root, cached, paths)
    cache = build_cache(cached, root, paths.cache, size=config.image_size, workers=config.workers, progress=progress,
                        context=config.context, index=index if config.context else None)
    summary = data_summary(labels, index, images, cohort, cache)
    if config.prepared:
        summary["prepared"] = {"folder": str(config.prepared), **reused}
    write_json(paths.data_summary, summary)
    return cache


def _reuse_index(config: RunConfig, root: Path, image_ids: Any, paths: RunPaths) -> str:
    """Copy ``<prepared>/index`` into the run when it answers this data; what happened, in words."""
    if not config.prepared:
        return "none asked"
    src = Path(config.prepared) / "index"
    why = index_reuse_problem(src, root, image_ids) or adopt_index(src, paths.index)
    if why is None:
        return f"reused {src}"
    if not why.startswith(str(paths.index)):  # the run's own index is no reason to warn
        warnings.warn(f"`prepared` index not reused: {why}; reading the headers instead", RuntimeWarning,
                      stacklevel=4)
    return f"not reused: {why}"


def _reuse_cache(config: RunConfig, root: Path, cohort: Any, paths: RunPaths) -> str:
    """Copy ``<prepared>/cache`` into the run when it holds this run's cohort; what happened, in words."""
    src = Path(config.prepared) / "cache"
    if not config.prepared or not src.is_dir():
        return "none asked" if not config.prepared else "none in the prepared folder"
    why = (cache_reuse_problem(src, root, cohort, config.image_size, context=config.context)
           or adopt_cache(src, paths.cache))
    if why is None:
        return f"reused {src}"
    if not why.startswith(str(paths.cache)):
        warnings.warn(f"`prepared` HU cache not reused: {why}; building it instead", RuntimeWarning, stacklevel=4)
    return f"not reused: {why}"


def data_summary(labels: Any, index: Any, images: Any, cohort: Any, cache: Any) -> dict[str, Any]:
    """What every data stage of a run kept and left out, with the reasons counted (``data/summary.json``).

    Counts: label rows refused (unsafe IDs) and images labelled; files indexed, skipped by the index (by
    reason, the tag and the fault without the file's own values) and kept without Pixel Spacing; labelled
    images without an indexed file and indexed files without labels; slices drawn into the run's cohorts;
    slices cached, skipped by the cache, and cached without tissue (air or padding only).
    """
    skipped = index.attrs.get("skipped")
    n_skipped = 0 if skipped is None else len(skipped)
    reasons: dict[str, int] = {}
    if n_skipped:
        for reason in skipped["reason"].astype(str):
            key = reason.split(" is ")[0] if reason.startswith("(") else reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    return {
        "labels": {"images": int(len(labels)), "rows_refused": int(labels.attrs.get("n_refused_rows", 0))},
        "index": {"indexed": int(len(index)), "skipped": n_skipped, "skipped_by_reason": reasons,
                  "without_pixel_spacing": int(index["spacing_row"].isna().sum()) if "spacing_row" in index else 0},
        "join": {"labelled_without_file": int(len(labels.index.difference(index.index))),
                 "indexed_without_labels": int(len(index.index.difference(labels.index)))},
        "cohort": {"slices": int(len(cohort)), "patients": int(cohort["patient_id"].nunique())},
        "cache": {"cached": int(len(cache.table)), "skipped": int(len(cache.skipped)),
                  "without_tissue": int(len(cache.manifest.get("without_tissue", [])))},
    }


def open_run_cache(config: RunConfig) -> Any:
    """The run's HU cache (``<out_dir>/data/cache``), opened at the run's image size."""

    return open_cache(RunPaths(config.out_dir).cache, size=config.image_size)

