"""Training speed of the brain_audit model: images / s of ``model.fit`` on random HU tensors.

Inputs: in-memory random HU tensors fed through ``tf.data`` with prefetching, so the figure is the
model's, not the input pipeline's (``--feed`` also times the feed alone, which must be far faster).
Measures Phase 1 (backbone frozen, head only), Phase 2 (top ``--unfreeze`` units unfrozen, every
BatchNormalization frozen) and optionally ``all`` (whole network, BatchNormalization trainable) at
each of ``--sizes``, after a warm-up epoch that absorbs tracing and XLA compilation. On a GPU each
case is repeated in mixed precision (``mixed_float16``); on CPU it says no GPU is visible and
measures float32 only. Trains TensorFlow for minutes on a CPU; prints a table.

Usage::

    python benchmarks/bench_train_speed.py                 # 128 and 256, phases 1 and 2
    python benchmarks/bench_train_speed.py --sizes 128 --steps 6 --batch 16 --unfreeze 3 --phases 1 2 all --feed
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _dataset(n: int, size: int, batch: int, seed: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1000.0, 1500.0, (n, size, size, 1)).astype(np.float32)
    y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(tf.data.AUTOTUNE)


def measure(size: int, phase: str, batch: int, steps: int, unfreeze: int, policy: str, seed: int = 0) -> float:
    """Images / s of ``fit`` for ``steps`` steps after one warm-up epoch of 2 steps.

    ``phase``: ``"1"`` backbone frozen, ``"2"`` top ``unfreeze`` units trainable (BN frozen),
    ``"all"`` the whole network with BatchNormalization (pretraining; Phase 1 without weights).
    """
    import keras

    from brain_audit.model.network import build_model, compile_model, freeze_backbone, unfreeze_all, unfreeze_top

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(size, head="any", weights=None, seed=seed)
        if phase == "1":
            freeze_backbone(model)
        elif phase == "2":
            unfreeze_top(model, blocks=unfreeze)
        else:
            unfreeze_all(model, train_batchnorm=True)
        compile_model(model, lr=1e-3)
        data = _dataset(batch * 4, size, batch, seed)
        model.fit(data, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)  # tracing / compilation
        t0 = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
        seconds = time.perf_counter() - t0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return steps * batch / seconds


def feed_rate(size: int, batch: int, steps: int) -> float:
    """Images / s of iterating the same ``tf.data`` feed alone."""
    data = iter(_dataset(batch * 4, size, batch, 0))
    next(data)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(data)
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per case (after warm-up)")
    parser.add_argument("--unfreeze", type=int, default=3, help="top units unfrozen in phase 2 (top, block7a, block6d)")
    parser.add_argument("--phases", nargs="+", choices=["1", "2", "all"], default=["1", "2"])
    parser.add_argument("--feed", action="store_true", help="also time the input feed alone")
    args = parser.parse_args(argv)

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    policies = ["float32"] + (["mixed_float16"] if gpus else [])
    print(f"brain_audit training speed; TensorFlow {tf.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores")
    if hasattr(os, "getloadavg"):
        print("load average before start (other processes share the cores): %.1f %.1f %.1f" % os.getloadavg())
    if not gpus:
        print("no GPU visible: float32 on CPU only (mixed precision is measured when a GPU is present)")
    else:
        print(f"GPUs: {[g.name for g in gpus]}")
    print(f"batch {args.batch}, {args.steps} timed steps after a 2-step warm-up, phase 2 unfreezes {args.unfreeze} units\n")
    print(f"{'size':>5} {'phase':>6} {'policy':>14} {'images/s':>9}")
    for size in args.sizes:
        for phase in args.phases:
            for policy in policies:
                rate = measure(size, phase, args.batch, args.steps, args.unfreeze, policy)
                print(f"{size:>5} {phase:>6} {policy:>14} {rate:>9.1f}", flush=True)
        if args.feed:
            print(f"{size:>5} {'feed':>6} {'-':>14} {feed_rate(size, args.batch, 50):>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
