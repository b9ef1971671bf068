"""Grad-CAM speed: one gradient pass per batch against a loop of single images; maps / s on CPU.

Inputs: synthetic head-like HU slices (air, skull ring, brain, noise) at each of ``--sizes``, and
brain_audit.model.build_model(weights=None) (HU -> MultiWindow -> nested EfficientNetB0 -> GAP ->
Dropout -> Dense). brain_audit.gradcam.GradCAM is traced once (not timed), then timed

* batched : ``GradCAM(model)(hu[i:i + batch])``, one pass per batch;
* loop    : ``GradCAM(model)(hu[i:i + 1])`` for every image (the same traced function);

printing maps / s of each and their ratio (target: batched >= 5x the loop at batch 32); then the audits' maps
(brain_audit.gradcam.maps.audit_cam: HiResCAM at the deepest block with >= 24 cells a side) batched, against
batched Grad-CAM at ``top_activation``, with each map's native cells; occlusion-sensitivity maps
(brain_audit.gradcam.occlusion.occlusion_maps, the shortcut study's, default window and stride) on
``--occlusion-images`` slices, against the audit maps; and slices / s of
brain_audit.skull.region_masks at 512 px. Runs TensorFlow on the CPU for minutes.

    python benchmarks/bench_gradcam.py [--sizes 128 256] [--batch 32] [--images 64]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def head_like(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n float32 (size, size) HU slices: air, scalp, skull ring, brain, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2) / (size * 0.42), (xx - size / 2) / (size * 0.36))
    base = np.full((size, size), -1000.0, dtype=np.float32)
    base[r < 1.0] = 40.0
    base[(r < 0.96) & (r >= 0.88)] = 760.0
    base[r < 0.88] = 32.0
    return (base[None] + rng.normal(0.0, 8.0, (n, size, size))).astype(np.float32)


def time_it(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=64, help="images per timing (a multiple of --batch)")
    ap.add_argument("--occlusion-images", type=int, default=4, help="images per occlusion timing")
    args = ap.parse_args()

    from brain_audit.gradcam.maps import GradCAM, audit_cam
    from brain_audit.gradcam.occlusion import occlusion_maps
    from brain_audit.model.network import build_model
    from brain_audit.skull import region_masks

    print(f"CPU cores: {os.cpu_count()}; batch {args.batch}; {args.images} images per timing")
    for size in args.sizes:
        model = build_model(image_size=size, weights=None, seed=0)
        cam = GradCAM(model)
        hu = head_like(args.images, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cam(hu[: args.batch])  # trace once (not timed)
            cam(hu[:1])
            t_batch = time_it(lambda: [cam(hu[i : i + args.batch]) for i in range(0, len(hu), args.batch)])
            t_loop = time_it(lambda: [cam(hu[i : i + 1]) for i in range(len(hu))], repeats=1)
            fine = audit_cam(model)
            fine(hu[: args.batch])  # trace once (not timed)
            t_fine = time_it(lambda: [fine(hu[i : i + args.batch]) for i in range(0, len(hu), args.batch)])
            occ = hu[: args.occlusion_images]
            occlusion_maps(model, occ[:1])  # warm up (not timed)
            t_occ = time_it(lambda: occlusion_maps(model, occ), repeats=1)
        print(
            f"{size} px: batched {len(hu) / t_batch:7.1f} maps/s   per-image loop {len(hu) / t_loop:6.1f} maps/s   "
            f"ratio {t_loop / t_batch:4.1f}x (target >= 5x)"
        )
        print(
            f"{size} px: Grad-CAM at {cam.layer.split('/')[-1]} ({cam.cells[0]} cells) {len(hu) / t_batch:7.1f} maps/s   "
            f"audit maps {fine.method} at {fine.layer.split('/')[-1]} ({fine.cells[0]} cells) {len(hu) / t_fine:7.1f} "
            f"maps/s   cost ratio {t_fine / t_batch:4.2f}x"
        )
        print(
            f"{size} px: occlusion sensitivity {len(occ) / t_occ:7.2f} maps/s   cost ratio to the audit maps "
            f"{(t_occ / len(occ)) / (t_fine / len(hu)):6.0f}x"
        )
    masks_hu = head_like(8, 512)
    t = time_it(lambda: [region_masks(h) for h in masks_hu])
    print(f"region_masks at 512 px: {len(masks_hu) / t:.1f} slices/s")


if __name__ == "__main__":
    main()
