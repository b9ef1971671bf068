"""Process parallelism for the batch stages (header index, HU cache).

One mechanism: tasks mapped over a ``spawn`` process pool, because ``fork`` is unsafe
once TensorFlow (or OpenCV) threads exist in the parent, as they do in a notebook that
trains and prepares data in one kernel. Each worker runs OpenCV single-threaded: the
pool is the parallelism, and nested thread pools would only fight over the cores.
"""

from __future__ import annotations

import multiprocessing as mp
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import cv2

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["map_unordered", "worker_pool"]


def _one_thread_per_worker() -> None:
    """Pool initializer: one OpenCV thread per process."""

    cv2.setNumThreads(1)


def map_unordered(fn: Callable[[T], R], tasks: Sequence[T], workers: int) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    In this process when ``workers <= 1`` or there is a single task (no start-up cost,
    easy debugging), else in a ``spawn`` pool of ``min(workers, len(tasks))`` processes.
    ``fn`` must be a module-level function and the tasks picklable.
    """
    if not tasks:
        return
    if workers <= 1 or len(tasks) == 1:
        for task in tasks:
            yield fn(task)
        return

    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks)), initializer=_one_thread_per_worker) as pool:
        yield from pool.imap_unordered(fn, tasks)


@contextmanager
def worker_pool(workers: int) -> Iterator[Any]:
    """The same ``spawn`` pool of one-thread workers, kept open for many maps (``pool.imap``), or ``None``
    when ``workers <= 1`` (then the caller maps in its own process).

    For a stream of batches mapped one after another (:func:`brain_audit.inference.predict_folder`), where a
    pool per batch would pay the workers' start-up every time; memory stays bounded because each batch is
    mapped before the next is submitted.
    """
    if workers <= 1:
        yield None
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_one_thread_per_worker) as pool:
        yield pool
