"""Speed of ``brain_audit.inference.predict_folder``: slices/s end to end, and the reading side alone.

Inputs: ``--files`` synthetic 512 x 512 RSNA-layout slices (ellipse head with noise) written with
brain_audit.dicom.encode_slice to a temporary folder, and ``model.build_model(--size, head="six",
weights=None)`` (random weights: the speed of a trained model is the same). Prints, for each ``--workers``
value, the ``slices_per_second`` of ``summary.json`` (reading, scoring, writing the parts; the model load and
the final tables not included) with and without flip TTA when ``--tta``, and the reading side alone
(``inference.reading.read_block``: read_hu + read_header + preprocess_slice) in files/s on one core, with the
load average before and after.

    python benchmarks/bench_predict.py [--files 512] [--size 256] [--workers 0 2] [--batch 32] [--tta]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from brain_audit.dicom import encode_slice


def synthetic_head(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Air, scalp, skull ring and brain with noise, -3024 HU outside the reconstruction circle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    r = np.hypot((xx - c) / 0.78, (yy - c) / 0.95) / (size / 2)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[r < 0.92], hu[r < 0.88], hu[r < 0.80] = 40.0, 1200.0, 30.0
    hu += rng.normal(0, 5, hu.shape).astype(np.float32)
    hu[np.hypot(xx - c, yy - c) > c] = -3024.0
    return hu


def write_files(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    base = synthetic_head(rng)
    for k in range(n):
        image_id = f"ID_{k:09x}"
        hu = base + rng.normal(0, 3, base.shape).astype(np.float32)
        (folder / f"{image_id}.dcm").write_bytes(encode_slice(
            hu, sop_instance_uid=image_id, patient_id=f"ID_{k // 40:09x}", study_instance_uid=f"ID_{k // 40:09x}",
            series_instance_uid=f"ID_{k // 40:09x}", z=5.0 * (k % 40)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=512)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--tta", action="store_true", help="also time flip TTA")
    args = ap.parse_args()

    from brain_audit.inference import predict_folder
    from brain_audit.inference.reading import list_files, read_block
    from brain_audit.model import build_model

    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stage_2_test"
        folder.mkdir()
        write_files(folder, args.files)
        files, _ = list_files(folder, "rsna")
        t0 = time.perf_counter()
        read_block((0, bytes(32), args.size, files[: min(200, len(files))]))
        n = min(200, len(files))
        print(f"reading alone (read_hu + read_header + preprocess_slice to {args.size} px), one core: "
              f"{n / (time.perf_counter() - t0):.0f} files/s")
        model = build_model(args.size, head="six", weights=None, seed=0)
        for tta in (False, True) if args.tta else (False,):
            for workers in args.workers:
                out = Path(tmp) / f"out-{workers}-{tta}"
                s = predict_folder(model, folder, out, tta=tta, workers=workers, batch_size=args.batch,
                                   chunk=args.chunk, progress=False)
                print(f"predict_folder, {args.files} files, {args.size} px, batch {args.batch}, chunk {args.chunk}, "
                      f"workers {workers}, tta {tta}: {s['slices_per_second']:.1f} slices/s "
                      f"({s['seconds_scoring']:.1f} s)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":  # worker processes are spawned: they import this file without running it
    main()
