"""Speed of brain_audit.phantom.generate_cohort: slices per second at 512 x 512.

Inputs: phantom cohorts written to a temporary folder (deleted afterwards): ``--patients`` patients
with the default slices per patient on 2 worker processes, and ``--single`` patients on 1 worker for
the parallel ratio. Prints wall time, slices / s, CPU time per slice, the 2 vs 1 worker speed-up and
the projected time of a 200-patient cohort, with the load average before and after (other processes
on the same cores slow every figure down).

    python benchmarks/bench_phantom.py [--patients 200] [--single 30] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import PhantomConfig


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(patients: int, workers: int, size: int, root: Path) -> dict[str, float]:
    cfg = PhantomConfig(patients=patients, size=size, seed=2019)
    out = root / f"p{patients}_w{workers}"
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    summary = generate_cohort(out, cfg, workers=workers, progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    shutil.rmtree(out)
    n = summary["images"]
    return {"images": n, "wall": wall, "cpu": cpu, "rate": n / wall, "cpu_ms": 1000 * cpu / n,
            "slices_per_patient": cfg.slices_per_patient}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200, help="patients of the 2-worker cohort (default 200)")
    parser.add_argument("--single", type=int, default=30, help="patients of the 1-worker run (default 30)")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average before: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench_phantom_") as tmp:
        root = Path(tmp)
        one = run(args.single, 1, args.size, root)
        two = run(args.patients, 2, args.size, root)
    k = two["slices_per_patient"]
    for name, r in (("1 worker ", one), ("2 workers", two)):
        print(f"{name}: {r['images']} slices of {args.size}x{args.size} ({k} per patient) in {r['wall']:.1f} s "
              f"= {r['rate']:.1f} slices/s; CPU {r['cpu_ms']:.1f} ms per slice")
    projected = 200 * k / two["rate"]
    print(f"parallel speed-up 2 vs 1 worker: {two['rate'] / one['rate']:.2f}x")
    print(f"projected 200-patient cohort ({200 * k} slices) on 2 workers: {projected:.0f} s")
    print(f"load average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
