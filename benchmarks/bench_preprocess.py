"""DICOM file -> model input, on representative files: brain_audit's path against the seed notebook's.

Two code paths, timed per file on one core (``cv2`` and BLAS pinned to one thread):

* naive reference, as the seed notebook and typical RSNA 2019 notebooks read a slice: full ``pydicom.dcmread``,
  ``pixel_array`` as float64, rescale slope / intercept, then per window (brain, subdural, bone) ``np.clip`` and
  scale, and ``cv2.resize`` of each channel to ``--size``;
* brain_audit: :func:`brain_audit.dicom.read_hu` then :func:`brain_audit.dataset.cache.preprocess_slice` to
  ``--size`` -> int16 HU, what the cache stores (the windows are applied inside the model).

Inputs, representative only (each kind printed on its own line):

* the phantom's own files: :func:`brain_audit.phantom.generate_cohort` at 512 x 512 (``--patients`` x 20 slices,
  written to a temporary folder), as a phantom cohort and the RSNA data are laid out;
* pydicom's CT test files (``pydicom.data.get_testdata_files``, files shipped with pydicom, nothing downloaded):
  every file of Modality CT whose pixels both paths decode (uncompressed, or compressed with a pixel plugin
  installed) and that is slice-sized (at least 128 px a side). Each file found is printed as used or skipped,
  with the reason.

Each path is timed in a fresh Python process of its own (so neither inherits the other's heap), under two
settings of the C allocator, because the naive path's large float64 temporaries make its cost depend on them:
glibc's defaults (a block of a few MB is mapped from and returned to the system on every call, so its pages
are faulted in again) and ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised (blocks stay on the
heap and are reused, as in a long-running process whose allocator has adapted). Per kind and setting: ms per
file and files/s of each path (median over ``--rounds`` alternating processes of the median of ``--repeats``
passes), the ratio, and the mean absolute difference between the naive windows and the windows of
brain_audit's int16 HU (both in [0, 1]; they differ where rounding to integer HU or the resize order moves a
value across a window edge).

    python benchmarks/bench_preprocess.py [--patients 3] [--size 256] [--repeats 5] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pydicom.data

from brain_audit import rsna
from brain_audit.dataset.cache import preprocess_slice
from brain_audit.dicom import read_hu
from brain_audit.errors import BrainAuditError
from brain_audit.phantom import PhantomConfig, generate_cohort
from brain_audit.windowing import BSB, window

#: pydicom test files smaller than this (px a side) are thumbnails, not slices.
MIN_SIDE = 128

#: The C allocator's settings each path is timed under: name -> environment variables (glibc; ignored elsewhere).
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc defaults": {},
    "heap reuse": {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
}

#: A pass over a kind's files is repeated until it lasts at least this long (s), so one small file is timed too.
MIN_PASS_SECONDS = 0.25


def naive(path: Path, size: int = 256) -> np.ndarray:
    """The seed notebook's reader: float64 (size, size, 3) brain / subdural / bone windows in [0, 1]."""
    ds = pydicom.dcmread(path)
    img = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    channels = []
    for center, width in BSB:
        lo, hi = center - width / 2, center + width / 2
        x = (np.clip(img, lo, hi) - lo) / (hi - lo)
        channels.append(cv2.resize(x, (size, size)))
    return np.stack(channels, axis=-1)


def ours(path: Path, size: int = 256) -> np.ndarray:
    """brain_audit's path into the model: int16 (size, size) HU."""
    return preprocess_slice(read_hu(path), size)


def pydicom_ct_files() -> tuple[list[Path], list[tuple[str, str]]]:
    """pydicom's CT test files both paths read: ``(used, [(name, reason skipped), ...])``."""
    used, skipped = [], []
    for name in sorted(pydicom.data.get_testdata_files()):
        path = Path(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, AttributeError, EOFError):
            continue  # not a DICOM file (or not one pydicom reads): not a candidate
        if ds.get("Modality") != "CT":
            continue
        label = _label(path)
        if "Rows" not in ds:
            skipped.append((label, "no image: no (0028,0010) Rows (a DICOMDIR test stub)"))
            continue
        if min(int(ds.Rows), int(ds.Columns)) < MIN_SIDE:
            skipped.append((label, f"{ds.Rows} x {ds.Columns} px: a thumbnail, not slice-sized"))
            continue
        try:
            naive(path)
            ours(path)
        except (BrainAuditError, RuntimeError, ValueError, NotImplementedError) as exc:
            skipped.append((label, f"not decoded: {str(exc).splitlines()[0][:120]}"))
            continue
        used.append(path)
    return used, skipped


def _label(path: Path) -> str:
    base = Path(pydicom.data.__file__).parent
    try:
        return str(path.relative_to(base / "test_files"))
    except ValueError:
        return path.name


def _describe(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return f"{ds.Rows} x {ds.Columns}, {ds.file_meta.TransferSyntaxUID.name}"


def per_file_ms(paths: dict[str, object], files: list[Path], size: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` passes of each path's time per file, ms. The paths' passes alternate, so a
    change of load on the cores falls on both; outputs are dropped, as a cache builder writes them out."""
    loops = {}
    for name, fn in paths.items():
        fn(files[0], size)  # warm-up
        t0 = time.perf_counter()
        for f in files:
            fn(f, size)
        loops[name] = max(1, int(np.ceil(MIN_PASS_SECONDS / max(time.perf_counter() - t0, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                for f in files:
                    fn(f, size)
            times[name].append((time.perf_counter() - t0) / (loops[name] * len(files)))
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def difference(files: list[Path], size: int) -> float:
    """Mean |naive windows - windows of brain_audit's int16 HU| over the files' pixels and the three windows."""
    diffs = []
    for f in files:
        hu = ours(f, size).astype(np.float32)
        mine = np.stack([window(hu, c, w) for c, w in BSB], axis=-1)
        diffs.append(float(np.abs(mine - naive(f, size)).mean()))
    return float(np.mean(diffs))


def time_in_process(path_name: str, files: list[Path], size: int, repeats: int, env: dict[str, str]) -> float:
    """ms per file of one path, timed by a fresh ``python bench_preprocess.py --child`` with ``env`` added."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump([str(f) for f in files], fh)
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", path_name, "--files-json", fh.name, "--size", str(size),
             "--repeats", str(repeats)],
            env={**os.environ, **env}, check=True, capture_output=True, text=True)
    finally:
        os.unlink(fh.name)
    return float(out.stdout.strip().splitlines()[-1])


def report(kind: str, files: list[Path], args: argparse.Namespace) -> None:
    print(f"{kind}: {len(files)} file(s); mean |window diff| {difference(files, args.size):.4f}")
    for allocator, env in ALLOCATORS.items():
        runs: dict[str, list[float]] = {"naive": [], "ours": []}
        for _ in range(args.rounds):
            for name, times in runs.items():
                times.append(time_in_process(name, files, args.size, args.repeats, env))
        ms_naive, ms_ours = (statistics.median(runs[n]) for n in ("naive", "ours"))
        print(f"  {allocator:14s}: naive {ms_naive:7.2f} ms/file {1000 / ms_naive:7.1f} files/s | brain_audit "
              f"{ms_ours:6.2f} ms/file {1000 / ms_ours:7.1f} files/s | ratio {ms_naive / ms_ours:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=3, help="phantom patients (20 slices each)")
    ap.add_argument("--size", type=int, default=256, help="output side, px")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per process; their median is kept")
    ap.add_argument("--rounds", type=int, default=3, help="processes per path and setting; their median is printed")
    ap.add_argument("--child", choices=("naive", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--files-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    if args.child:
        files = [Path(f) for f in json.loads(Path(args.files_json).read_text())]
        fn = {"naive": naive, "ours": ours}[args.child]
        print(per_file_ms({args.child: fn}, files, args.size, args.repeats)[args.child])
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    libc = " ".join(platform.libc_ver()) or "libc unknown"
    print(f"machine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()}, {libc}), CPU only, 1 thread "
          f"per path; load average {load:.2f}; python {platform.python_version()}, numpy {np.__version__}, "
          f"pydicom {pydicom.__version__}, opencv {cv2.__version__}")
    print(f"output {args.size} x {args.size}; each path in its own process, median of {args.rounds} processes x "
          f"median of {args.repeats} passes")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PhantomConfig(patients=args.patients, size=512, seed=0)
        generate_cohort(tmp, cfg, workers=1, progress=False)
        files = sorted((Path(tmp) / rsna.TRAIN_DIR).glob("*.dcm"))
        report(f"phantom files (generate_cohort, 512 x 512, {_describe(files[0]).split(', ')[1]})", files, args)
    used, skipped = pydicom_ct_files()
    for path in used:
        report(f"pydicom {_label(path)} ({_describe(path)})", [path], args)
    by_reason: dict[str, list[str]] = {}
    for label, reason in skipped:
        by_reason.setdefault(reason, []).append(label)
    for reason, labels in by_reason.items():
        shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        print(f"skipped {len(labels)} pydicom CT file(s), {reason}: {shown}")
    if hasattr(os, "getloadavg"):
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
