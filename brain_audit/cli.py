"""The ``brain-audit`` command line. It only parses arguments and calls the package.

Each sub-command is a pair: ``_add_<name>(sub)`` declares it (decorated with
:func:`_command`) and a ``_run_<name>(args) -> int`` does the work by calling the
public functions of one module. Heavy modules (TensorFlow) are imported inside the
``_run_`` function, so ``brain-audit --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import BrainAuditError

_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def _command(add: Callable[[argparse._SubParsersAction], None]) -> Callable[[argparse._SubParsersAction], None]:
    """Register a sub-command declaration."""
    _REGISTRY.append(add)
    return add


# ---------------------------------------------------------------- window (dicom, windowing)
@_command
def _add_window(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "window",
        help="read DICOM slices to HU and write the brain / subdural / bone picture of each",
        description="Read each DICOM file to Hounsfield units (brain_audit.dicom.read_hu), print its "
        "non-identifying header and HU percentiles, and write a PNG of the three windows side by side "
        "and as the seed's RGB composite. Unreadable files are listed with their reason; the rest go on.",
    )
    p.add_argument("files", nargs="*", type=Path, help="DICOM files")
    p.add_argument("--pydicom-example", action="store_true", help="add pydicom's shipped CT_small.dcm")
    p.add_argument("--out", type=Path, default=Path("window_out"), help="output folder (default: window_out)")
    p.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE first (HU, area interpolation)")
    p.set_defaults(run=_run_window)


def _run_window(args: argparse.Namespace) -> int:
    import numpy as np

    from .dicom import read_header, read_hu
    from .figures import save_window_panel
    from .windowing import to_rgb

    files = list(args.files)
    if args.pydicom_example:
        from pydicom.data import get_testdata_file

        files.append(Path(get_testdata_file("CT_small.dcm")))
    if not files:
        print("brain-audit window: give DICOM files or --pydicom-example", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            header = read_header(f)
            hu = read_hu(f)
        except BrainAuditError as exc:
            failed += 1
            print(f"skipped {exc}", file=sys.stderr)
            continue
        rgb = to_rgb(hu, size=args.size)
        p = np.percentile(hu, [5, 25, 50, 75, 95])
        out = save_window_panel(args.out / f"{f.stem}.png", hu, rgb, title=f"{f.stem}  ({header['modality']})")
        print(
            f"{f.name}: {hu.shape[0]}x{hu.shape[1]} px, spacing {header['pixel_spacing']} mm, "
            f"z {header['z']} mm; HU p5/25/50/75/95 = {' / '.join(f'{v:.0f}' for v in p)} -> {out}"
        )
    print(f"{len(files) - failed} read, {failed} skipped")
    return 1 if failed == len(files) else 0


# [phantom commands]

# [dataset commands]

# [model commands]

# [gradcam commands]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="brain-audit",
        description="Intracranial-hemorrhage detection on head CT that audits its own model.",
    )
    parser.add_argument("--version", action="version", version=f"brain_audit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _REGISTRY:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``brain-audit``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except BrainAuditError as exc:
        print(f"brain-audit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
