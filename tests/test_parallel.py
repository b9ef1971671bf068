"""brain_audit.parallel.map_unordered: every task once, in this process or in a spawn pool of one-thread workers;
worker_pool: one such pool kept for many maps.

Expected values: the squares computed here, the test's own process id.
"""

from __future__ import annotations

import os

import pytest

from brain_audit.parallel import map_unordered, worker_pool
from support.pool_tasks import square_where

TASKS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.mark.parametrize("workers", [0, 1])
def test_serial_in_this_process_in_order(workers):
    out = list(map_unordered(square_where, TASKS, workers))
    assert [r[0] for r in out] == [x * x for x in TASKS]
    assert {r[1] for r in out} == {os.getpid()}


def test_one_task_runs_here_and_no_task_yields_nothing():
    assert [r[:2] for r in map_unordered(square_where, [7], workers=4)] == [(49, os.getpid())]
    assert list(map_unordered(square_where, [], workers=4)) == []


@pytest.mark.slow
def test_spawn_pool_gives_every_result_once_from_one_thread_workers():
    out = list(map_unordered(square_where, TASKS, workers=2))
    assert sorted(r[0] for r in out) == sorted(x * x for x in TASKS)
    pids = {r[1] for r in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {r[2] for r in out} == {1}


def test_no_pool_for_one_worker():
    with worker_pool(1) as pool:
        assert pool is None


@pytest.mark.slow
def test_a_kept_pool_serves_several_maps_from_the_same_one_thread_workers():
    with worker_pool(2) as pool:
        first = list(pool.imap(square_where, TASKS))
        second = list(pool.imap(square_where, TASKS[::-1]))
    assert [r[0] for r in first] == [x * x for x in TASKS] and [r[0] for r in second] == [x * x for x in TASKS[::-1]]
    pids = {r[1] for r in first + second}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # the second map started no new process
    assert {r[2] for r in first + second} == {1}
