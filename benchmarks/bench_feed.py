"""Feed throughput: the HU cache versus reading every DICOM per step; and the cache build rate.

Inputs: a synthetic RSNA-layout cohort of ``--slices`` 512 x 512 files written once under ``--dir`` with
brain_audit.dicom.encode_slice (head-like HU with noise, so file sizes match real RSNA files).
Measures, wall-clock and per CPU-second, at ``--size`` px and ``--batch`` images per batch:

* the cache build (brain_audit.dataset.cache.build_cache), slices / s in one process and in a pool;
* cached : brain_audit.dataset.feed.make_feed (memory-mapped int16 shards), with and without augmentation;
* DICOM  : a tf.data feed that reads each file with brain_audit.dicom.read_hu and resizes it
  (brain_audit.dataset.cache.preprocess_slice) every step, as a notebook without a cache does;

and the cached / DICOM ratio (target >= 10x). Core count and load average are printed with the figures.

    python benchmarks/bench_feed.py [--slices 768] [--batch 64] [--size 256] [--seconds 8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def write_cohort(root: Path, n: int, side: int = 512, seed: int = 0) -> list[str]:
    from brain_audit.dicom import encode_slice
    from brain_audit.rsna import TRAIN_DIR

    folder = root / TRAIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot((yy - side / 2) / (side * 0.42), (xx - side / 2) / (side * 0.36))
    base = np.full((side, side), -1024.0)
    base[r < 1.0] = 1200.0
    base[r < 0.9] = 35.0
    ids = []
    for k in range(n):
        image_id = f"ID_{k:09x}"
        path = folder / f"{image_id}.dcm"
        ids.append(image_id)
        if path.exists():
            continue
        hu = base + rng.normal(0, 8, size=base.shape) * (r < 1.0)
        path.write_bytes(encode_slice(hu, sop_instance_uid=image_id, patient_id=f"ID_p{k // 32:07x}",
                                      study_instance_uid=f"ID_s{k // 32:07x}", series_instance_uid=f"ID_r{k // 32:07x}",
                                      z=5.0 * (k % 32)))
    return ids


def cohort_table(ids: list[str]):
    import pandas as pd

    from brain_audit.rsna import LABEL_COLUMNS

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"image_id": ids, "patient_id": [f"ID_p{k // 32:07x}" for k in range(len(ids))],
                          "study_id": "S", "series_id": [f"ID_r{k // 32:07x}" for k in range(len(ids))],
                          "z": [5.0 * (k % 32) for k in range(len(ids))], "split": "train"})
    for c in LABEL_COLUMNS:
        frame[c] = (rng.random(len(ids)) < 0.15).astype(np.int8)
    return frame.set_index("image_id")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), s."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed(ds, seconds: float, batch: int) -> tuple[float, float]:
    """(images / s wall, images / CPU-second) of an endless dataset after two warm-up batches."""
    it = iter(ds)
    next(it), next(it)
    t0, c0, n = time.perf_counter(), cpu_seconds(), 0
    while time.perf_counter() - t0 < seconds:
        x = next(it)[0]
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0), n / (cpu_seconds() - c0)


def dicom_feed(root: Path, ids: list[str], batch: int, size: int, seed: int):
    import tensorflow as tf

    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.dicom import read_hu
    from brain_audit.rsna import image_path

    paths = np.array([str(image_path(root, i)) for i in ids])
    y = np.random.default_rng(1).integers(0, 2, size=(len(ids), 1)).astype(np.float32)

    def load(path):
        return preprocess_slice(read_hu(path.decode()), size)[..., None].astype(np.float32)

    def step(p, lab):
        hu = tf.numpy_function(load, [p], tf.float32)
        return tf.ensure_shape(hu, [size, size, 1]), lab, tf.constant(1.0)

    ds = tf.data.Dataset.from_tensor_slices((paths, y)).repeat().shuffle(len(ids), seed=seed)
    return ds.map(step, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=768)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "brain_audit_bench_feed")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore", RuntimeWarning)
    import shutil

    from brain_audit.dataset.cache import build_cache
    from brain_audit.dataset.feed import Augment, make_feed

    root = args.dir / "rsna"
    t0 = time.perf_counter()
    ids = write_cohort(root, args.slices)
    print(f"cores: {os.cpu_count()}; cohort: {len(ids)} slices 512 x 512 "
          f"({sum((root / 'stage_2_train' / f'{i}.dcm').stat().st_size for i in ids) / 2**20:.0f} MiB) "
          f"ready in {time.perf_counter() - t0:.1f} s")
    table = cohort_table(ids)
    print(f"load average before timing: {os.getloadavg()[0]:.1f} (figures are wall-clock; "
          "per CPU-second figures do not depend on other load)")
    for workers in (0, os.cpu_count() or 1):
        cdir = args.dir / f"cache-w{workers}"
        shutil.rmtree(cdir, ignore_errors=True)
        t0, c0 = time.perf_counter(), cpu_seconds()
        build_cache(table, root, cdir, size=args.size, shard_size=128, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        print(f"cache build, {'1 process ' if workers == 0 else f'{workers} processes'}: "
              f"{len(ids) / wall:7.0f} slices / s ({len(ids) / cpu:5.0f} slices per CPU-second)")
    cdir = args.dir / f"cache-w{os.cpu_count() or 1}"

    cached = timed(make_feed(cdir, "train", args.batch, shuffle=True, seed=0, repeat=True), args.seconds, args.batch)
    aug = timed(make_feed(cdir, "train", args.batch, shuffle=True, seed=0, repeat=True, augment=Augment()),
                args.seconds, args.batch)
    raw = timed(dicom_feed(root, ids, args.batch, args.size, 0), args.seconds, args.batch)
    print(f"feed at {args.size} x {args.size}, batch {args.batch}, {os.cpu_count()} cores "
          f"(load average now {os.getloadavg()[0]:.1f}):")
    print(f"  cached HU feed              : {cached[0]:8.0f} images / s  ({cached[1]:6.0f} per CPU-second)")
    print(f"  cached HU feed + augment    : {aug[0]:8.0f} images / s  ({aug[1]:6.0f} per CPU-second)")
    print(f"  DICOM read + resize per step: {raw[0]:8.0f} images / s  ({raw[1]:6.0f} per CPU-second)")
    print(f"  ratio cached / DICOM: {cached[0] / raw[0]:.1f}x (target >= 10x); "
          f"with augmentation {aug[0] / raw[0]:.1f}x; per CPU-second {cached[1] / raw[1]:.1f}x and {aug[1] / raw[1]:.1f}x")


if __name__ == "__main__":
    main()
