"""brain_audit.parallel.map_unordered: every task once, in this process or in a spawn pool of one-thread workers.

Expected values: the squares computed here, the test's own process id.
"""

from __future__ import annotations

import os

import pytest

from brain_audit.parallel import map_unordered
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
