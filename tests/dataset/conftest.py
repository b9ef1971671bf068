"""Fixtures of the dataset tests: the tiny RSNA-layout dataset (tests/support/tiny_rsna.py) and what the
pipeline makes of it (header index, cohorts, HU cache).

Built once per test module, as when they lived in one file: a test may touch the dataset (test_cache
rewrites a source file to change its mtime), and that must not reach the tests of another module.
"""

from __future__ import annotations

import warnings

import pytest

from brain_audit.dataset.cache import build_cache
from brain_audit.dataset.cohort import CohortSpec, join_images, plan_cohorts
from brain_audit.dataset.index import build_index
from brain_audit.dataset.labels import read_labels
from brain_audit.rsna import TRAIN_CSV
from support.tiny_rsna import SIDE, make_tiny_rsna


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    truth = make_tiny_rsna(root)
    return root, truth


@pytest.fixture(scope="module")
def tiny_index(tiny, tmp_path_factory):
    root, _ = tiny
    out = tmp_path_factory.mktemp("index")
    labels = read_labels(root / TRAIN_CSV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        index = build_index(root, out, labels.index, workers=0, block_size=16, progress=False)
    return labels, index, out


@pytest.fixture(scope="module")
def tiny_cohort(tiny_index):
    labels, index, _ = tiny_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        images = join_images(labels, index)
        cohort, patients = plan_cohorts(
            images, [CohortSpec("phase2", 30, balance=0.5), CohortSpec("phase1", 12, balance=None)],
            n_audit=3, n_pretrain=1, validation=0.3, seed=7)
    return images, cohort, patients


@pytest.fixture(scope="module")
def tiny_cache(tiny, tiny_cohort, tiny_index, tmp_path_factory):
    root, _ = tiny
    _, cohort, _ = tiny_cohort
    out = tmp_path_factory.mktemp("cache")
    cache = build_cache(cohort, root, out, size=SIDE, shard_size=8, workers=0, progress=False,
                        context=1, index=tiny_index[1])
    return cache, out
