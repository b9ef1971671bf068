"""Module-level tasks for brain_audit.parallel.map_unordered: a spawn pool pickles them by name."""

from __future__ import annotations

import os

import cv2


def square_where(x: int) -> tuple[int, int, int]:
    """(x squared, the process that computed it, its OpenCV thread count)."""
    return x * x, os.getpid(), cv2.getNumThreads()
