"""The RSNA data pipeline in one import: labels -> header index -> cohorts -> HU cache -> feed.

Each step is its own module (one concept each); this module only gathers their public
functions so a notebook can write ``from brain_audit.dataset import *``::

    from brain_audit.dataset import (read_labels, build_index, join_images, plan_cohorts,
                                     write_cohorts, build_cache, make_feed, load_split_arrays)

    labels = read_labels(root / "stage_2_train.csv")                 # labels.py
    index = build_index(root, "work/index", labels.index)            # index.py
    images = join_images(labels, index)                              # cohort.py
    cohort, patients = plan_cohorts(images, n_audit=200, seed=0)     # cohort.py
    write_cohorts("work/cohort", cohort, patients, seed=0)
    cache = build_cache(cohort, root, "work/cache", size=256)        # cache.py
    train = make_feed("work/cache", "train", 64, cohort="phase1",    # feed.py
                      augment=True, seed=0, repeat=True)
    ids, hu, y = load_split_arrays("work/cache", "validation")

The same path from the shell: ``brain-audit index``, ``brain-audit cohort``, ``brain-audit cache``.
"""

from __future__ import annotations

from brain_audit.dataset.cache import (
    CACHE_FORMAT,
    NO_TISSUE_MAX_HU,
    HUCache,
    build_cache,
    centre_slice,
    load_split_arrays,
    open_cache,
    pad_to_square,
    preprocess_slice,
)
from brain_audit.dataset.cohort import (
    DEFAULT_PHASE_COHORTS,
    SPLITS,
    CohortSpec,
    build_cohort,
    join_images,
    plan_cohorts,
    read_cohort,
    split_patients,
    write_cohorts,
)
from brain_audit.dataset.feed import Augment, augment_batch, feed_length, feed_plan, make_feed
from brain_audit.dataset.index import INDEX_COLUMNS, INDEX_FORMAT, build_index, read_index, read_skipped
from brain_audit.dataset.labels import read_labels
from brain_audit.dataset.masks import MASK_DIR, encode_masks, has_masks, lesion_mask, mask_path, read_masks, write_masks

__all__ = [
    "read_labels",
    "INDEX_FORMAT",
    "INDEX_COLUMNS",
    "build_index",
    "read_index",
    "read_skipped",
    "SPLITS",
    "CohortSpec",
    "DEFAULT_PHASE_COHORTS",
    "join_images",
    "split_patients",
    "build_cohort",
    "plan_cohorts",
    "write_cohorts",
    "read_cohort",
    "CACHE_FORMAT",
    "NO_TISSUE_MAX_HU",
    "build_cache",
    "HUCache",
    "open_cache",
    "load_split_arrays",
    "centre_slice",
    "pad_to_square",
    "preprocess_slice",
    "Augment",
    "augment_batch",
    "make_feed",
    "feed_length",
    "feed_plan",
    "MASK_DIR",
    "mask_path",
    "has_masks",
    "read_masks",
    "lesion_mask",
    "encode_masks",
    "write_masks",
]
