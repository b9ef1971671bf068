"""Label parsing at full RSNA size: brain_audit.dataset.labels.read_labels versus naive rsplit + pivot_table.

Inputs: a label file of the real size, generated once at ``--file`` and reused: 752,803 images x 6
subtypes plus 4 duplicated images (24 agreeing duplicate rows) = 4,516,842 data rows, RSNA-like
prevalences. Each reader runs in its own process pinned to one core; prints wall time and peak
resident memory of each (read_labels target: < 10 s and < 1,500 MB, printed PASS / FAIL), their
ratios, and whether both give the same table.

    python benchmarks/bench_labels.py [--file PATH] [--skip-naive]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_IMAGES = 752_803
N_DUPLICATED_IMAGES = 4
SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
# per-image subtype prevalence, roughly the RSNA 2019 training set
PREVALENCE = (0.004, 0.048, 0.035, 0.048, 0.063)


def generate(path: Path, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.choice(16**9, size=N_IMAGES, replace=False)
    sub = (rng.random((N_IMAGES, 5)) < np.array(PREVALENCE)).astype(np.int8)
    lab = np.concatenate([sub, sub.max(axis=1, keepdims=True)], axis=1)
    names = [f"ID_{i:09x}" for i in ids]
    lines = ["ID,Label"]
    for name, row in zip(names, lab.tolist()):
        lines.extend(f"{name}_{s},{v}" for s, v in zip(SUBTYPES, row))
    for k in rng.choice(N_IMAGES, size=N_DUPLICATED_IMAGES, replace=False):
        lines.extend(f"{names[k]}_{s},{v}" for s, v in zip(SUBTYPES, lab[k].tolist()))
    tmp = path.with_suffix(".part")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


_CHILD = r"""
import json, os, resource, sys, time, warnings
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
path, which = sys.argv[1], sys.argv[2]
import numpy as np, pandas as pd
t0 = time.perf_counter()
if which == "read_labels":
    from brain_audit.dataset.labels import read_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        df = read_labels(path)
else:
    df = pd.read_csv(path)
    parts = df["ID"].str.rsplit("_", n=1)
    df["image_id"] = parts.str[0]
    df["subtype"] = parts.str[1]
    df = df.drop_duplicates(["image_id", "subtype"])
    df = df.pivot_table(index="image_id", columns="subtype", values="Label", aggfunc="first")
    df = df[["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]].astype("int8")
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
df = df.sort_index()
print(json.dumps({"seconds": dt, "peak_mb": peak, "n": len(df),
                  "sum": df.to_numpy().sum(axis=0).tolist(), "first": df.index[0], "last": df.index[-1]}))
"""


def run(path: Path, which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=Path(tempfile.gettempdir()) / "brain_audit_bench_labels.csv")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    if not args.file.exists():
        t0 = time.perf_counter()
        generate(args.file)
        print(f"generated {args.file} in {time.perf_counter() - t0:.1f} s")
    n_rows = sum(1 for _ in open(args.file)) - 1
    print(f"label file: {args.file} ({args.file.stat().st_size / 1e6:.0f} MB, {n_rows:,} data rows)")
    fast = run(args.file, "read_labels")
    print(f"read_labels            : {fast['seconds']:6.2f} s, peak {fast['peak_mb']:6.0f} MB, {fast['n']:,} images"
          f"  (target < 10 s, < 1500 MB: {'PASS' if fast['seconds'] < 10 and fast['peak_mb'] < 1500 else 'FAIL'})")
    if not args.skip_naive:
        naive = run(args.file, "naive")
        print(f"naive rsplit+pivot_table: {naive['seconds']:6.2f} s, peak {naive['peak_mb']:6.0f} MB, {naive['n']:,} images")
        same = all(fast[k] == naive[k] for k in ("n", "sum", "first", "last"))
        print(f"speed-up {naive['seconds'] / fast['seconds']:.1f}x, memory ratio {naive['peak_mb'] / fast['peak_mb']:.1f}x; "
              f"same table: {same}")


if __name__ == "__main__":
    main()
