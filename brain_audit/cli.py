"""The ``brain-audit`` command line. It only parses arguments and calls the package.

Each sub-command is a pair: ``_add_<name>(sub)`` declares it (decorated with
:func:`_command`) and a ``_run_<name>(args) -> int`` does the work by calling the
public functions of one module. Heavy modules (TensorFlow, pandas) are imported inside
the ``_run_`` function, so ``brain-audit --help`` is instant.

Defaults are never restated here: a setting of the run configuration takes its default
from :class:`brain_audit.config.RunConfig`; any other takes it from the signature of the
function (or configuration class) it is passed to, looked up only when the command runs
or its help is printed (:class:`_DefaultOf`).

Exit codes and errors: 0 done; 1 ran but nothing could be read (every file skipped), or
``check`` found that the plan cannot finish;
2 a user error, printed as one line ``brain-audit: error: <message>`` on stderr (a bad option
or configuration value, a path that cannot be read or written, a file that is not what it
should be, data too small for the plan: any :class:`~brain_audit.errors.BrainAuditError`);
130 interrupted. A bug keeps its traceback; ``brain-audit --debug`` shows one for every error.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from brain_audit import __version__
from brain_audit.config import RunConfig
from brain_audit.errors import BrainAuditError
from brain_audit.run_layout import RunPaths

_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []

#: Errors of the operating system that name a file (``filename``): a user error when that file is
#: one of the command line's paths or lies inside (or above) one of them (:func:`_path_error`).
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

#: The run configuration's defaults, shared by the data commands that set the same things.
_RUN = RunConfig()


class _DefaultOf:
    """The default of ``parameter`` of ``module.owner`` (a function or a dataclass), as an
    argparse default: read from the signature when the help is printed (``%(default)s``)
    or when :func:`main` resolves the parsed arguments, so that declaring the commands
    imports none of the modules that own the defaults."""

    def __init__(self, module: str, owner: str, parameter: str) -> None:
        self.module, self.owner, self.parameter = module, owner, parameter

    def resolve(self) -> Any:
        owner = getattr(importlib.import_module(self.module), self.owner)
        return inspect.signature(owner).parameters[self.parameter].default

    def __str__(self) -> str:
        return str(self.resolve())

    def __repr__(self) -> str:
        return f"_DefaultOf({self.module}.{self.owner}, {self.parameter!r})"


def _resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Replace every :class:`_DefaultOf` left in ``args`` (an option not given) by its value."""
    for name, value in vars(args).items():
        if isinstance(value, _DefaultOf):
            setattr(args, name, value.resolve())
    return args


class _UsageError(BrainAuditError):
    """The command line asks for nothing to do or for something impossible."""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, as every other error of ``brain-audit``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"brain-audit: error: {message.rstrip('.')}; see `{self.prog} --help`\n")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An option type: an int >= ``minimum``, refused on the command line before anything runs."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}. Got {text!r} instead.")
        return value

    return parse


_COUNT = _at_least(1)
_INDEX = _at_least(0)


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
    p.add_argument("--out", type=Path, default=Path("window_out"), help="output folder (default: %(default)s)")
    p.add_argument("--size", type=_COUNT, default=None, help="resize to SIZE x SIZE first (HU, area interpolation)")
    p.set_defaults(run=_run_window)


def _run_window(args: argparse.Namespace) -> int:
    import numpy as np

    from brain_audit.dicom import read_header, read_hu
    from brain_audit.figures import save_window_panel
    from brain_audit.windowing import to_rgb

    files = list(args.files)
    if args.pydicom_example:
        from pydicom.data import get_testdata_file

        files.append(Path(get_testdata_file("CT_small.dcm")))
    if not files:
        raise _UsageError("window: give DICOM files or --pydicom-example")
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
# ---------------------------------------------------------------- phantom (synthetic RSNA-layout cohorts)
@_command
def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic head-CT cohort in the RSNA 2019 layout, with ground truth",
        description="Generate axial head-CT phantom slices (skull, brain, ventricles, head holder) with the five "
        "RSNA hemorrhage subtypes, calcifications and devices, written as DIR/stage_2_train/*.dcm, "
        "DIR/stage_2_train.csv, DIR/phantom_truth/*.npz and DIR/phantom_manifest.json. The same arguments "
        "give byte-identical files. A folder holding other phantom output is refused.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (the dataset root)")
    p.add_argument("--patients", type=int, required=True, help="number of patients (one study each)")
    phantom = ("brain_audit.phantom.config", "PhantomConfig")
    p.add_argument("--slices-per-patient", type=int, default=_DefaultOf(*phantom, "slices_per_patient"),
                   help="contiguous 5 mm slices per study (default: %(default)s)")
    p.add_argument("--size", type=int, default=_DefaultOf(*phantom, "size"),
                   help="rows = columns (default: %(default)s; field of view 250 mm)")
    p.add_argument("--prevalence", type=float, default=_DefaultOf(*phantom, "prevalence"),
                   help="share of patients with a bleed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_DefaultOf(*phantom, "seed"), help="random seed (default: %(default)s)")
    p.add_argument(
        "--shortcut", action="append", default=[], metavar="MIMIC:P_BLEED,P_NO_BLEED",
        help="plant a shortcut: per-image probability of MIMIC given bleed / no bleed, e.g. coil:0.3,0.02 "
        "(repeatable). Mimics: choroid_plexus_calcification, pineal_calcification, falx_calcification, coil, catheter",
    )
    p.add_argument("--chronic-subdural-fraction", type=float, default=_DefaultOf(*phantom, "chronic_subdural_fraction"),
                   help="share of chronic subdurals (default: %(default)s)")
    p.add_argument("--defect-fraction", type=float, default=_DefaultOf(*phantom, "defect_fraction"),
                   help="share of slices written with the RSNA 12-bit wrap defect (default: %(default)s)")
    p.add_argument("--corrupt", type=int, default=_DefaultOf(*phantom, "corrupt_files"),
                   help="extra corrupt files (truncated / header-only; default: %(default)s)")
    p.add_argument("--test-patients", type=int, default=_DefaultOf(*phantom, "test_patients"),
                   help="patients of a test split: DIR/stage_2_test/*.dcm and DIR/stage_2_sample_submission.csv, "
                   "their labels only in DIR/phantom_truth/stage_2_test_labels.csv (default: %(default)s)")
    workers = _DefaultOf("brain_audit.phantom.cohort", "generate_cohort", "workers")
    p.add_argument("--workers", type=int, default=workers, help="worker processes (default: %(default)s)")
    p.add_argument("--preview", action="store_true", help="also write DIR/phantom_preview.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig, parse_shortcut
    from brain_audit.phantom.render import preview

    shortcuts = dict(parse_shortcut(s) for s in args.shortcut)
    config = PhantomConfig(
        patients=args.patients, slices_per_patient=args.slices_per_patient, size=args.size,
        prevalence=args.prevalence, seed=args.seed, chronic_subdural_fraction=args.chronic_subdural_fraction,
        mimic_probabilities=shortcuts, defect_fraction=args.defect_fraction, corrupt_files=args.corrupt,
        test_patients=args.test_patients,
    )
    summary = generate_cohort(args.out, config, workers=args.workers, progress=not args.no_progress)
    if summary["skipped"]:
        print(f"{args.out}: already holds this cohort; nothing written")
    else:
        print(
            f"{summary['images']} slices of {summary['patients']} patients ({summary['bleed_patients']} with a "
            f"bleed, {summary['positive_images']} positive slices, {summary['defect_images']} with the wrap defect, "
            f"{summary['corrupt_files']} corrupt) in {summary['seconds']:.1f} s "
            f"({summary['slices_per_second']:.0f} slices/s) -> {summary['out_dir']}"
        )
        if summary["test_images"]:
            print(f"test split: {summary['test_images']} slices of {summary['test_patients']} patients -> "
                  f"{summary['test_dir']}, {summary['sample_submission']}; labels in {summary['test_labels']}")
    if args.preview:
        print(f"preview -> {preview(args.out)}")
    return 0


# ---------------------------------------------------------------- dataset (labels, index, cohort, cache, feed)
@_command
def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="read the DICOM headers of a dataset into a resumable header index",
        description="Read the non-identifying headers (no pixels) of the labelled images (or of every file) "
        "in parallel processes into OUT/index.parquet; unreadable files go to OUT/skipped.csv with their "
        "reason. A rerun reads only what is missing (brain_audit.dataset.index.build_index).",
    )
    p.add_argument("root", type=Path, help="dataset root (RSNA layout: ROOT/stage_2_train/ID_*.dcm)")
    p.add_argument("--labels", type=Path, default=None,
                   help="label CSV (default: ROOT/stage_2_train.csv when present, else every .dcm file)")
    p.add_argument("--all-files", action="store_true", help="index every .dcm file, not only the labelled ones")
    p.add_argument("--out", type=Path, default=Path("work/index"), help="index folder (default: %(default)s)")
    p.add_argument("--workers", type=_INDEX, default=_RUN.workers,
                   help="processes (default: %(default)s, the run configuration's; 0 = in-process)")
    block_size = _DefaultOf("brain_audit.dataset.index", "build_index", "block_size")
    p.add_argument("--block-size", type=_COUNT, default=block_size,
                   help="files per task and resumable part (default: %(default)s)")
    p.add_argument("--retry-skipped", action="store_true", help="read again the files skipped.csv lists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metadata", type=Path, default=None,
                   help="build the index from this table of DICOM header columns (CSV or parquet, one row per image, "
                   "e.g. a public RSNA metadata table) without reading any DICOM header "
                   "(brain_audit.dataset.index.index_from_metadata); OUT then serves a run as its data/index")
    p.set_defaults(run=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from brain_audit.dataset.index import build_index, index_from_metadata
    from brain_audit.dataset.labels import read_labels
    from brain_audit.errors import LabelFileError
    from brain_audit.rsna import TRAIN_CSV

    if args.metadata is not None:
        index = index_from_metadata(args.metadata, args.root, args.out)
        print(f"{len(index)} images indexed from {args.metadata.name} ({index['patient_id'].nunique()} patients); "
              f"{len(index.attrs['skipped'])} skipped -> {args.out / 'index.parquet'}")
        for row in index.attrs["skipped"].head(10).itertuples():
            print(f"  skipped {row.image_id}: {row.reason}", file=sys.stderr)
        return 0
    ids = None
    labels_path = args.labels or (args.root / TRAIN_CSV)
    if not args.all_files and labels_path.exists():
        ids = read_labels(labels_path).index
    elif args.labels is not None and not args.all_files:
        raise LabelFileError(f"{labels_path}: no such label file")
    index = build_index(args.root, args.out, ids, workers=args.workers, block_size=args.block_size,
                        retry_skipped=args.retry_skipped, progress=not args.quiet)
    skipped = index.attrs["skipped"]
    print(f"{len(index)} images indexed ({index.attrs['n_read']} read now, {index['patient_id'].nunique()} patients); "
          f"{len(skipped)} skipped -> {args.out / 'index.parquet'}")
    for row in skipped.head(10).itertuples():
        print(f"  skipped {row.image_id}: {row.reason}", file=sys.stderr)
    return 0


#: The phase cohorts of the run configuration (phase 1 drawn inside phase 2), as ``--cohort`` values.
_DEFAULT_COHORTS = tuple(
    f"{name}:{plan.cohort_size}:{plan.balance or 'natural'}:{plan.cohort_unit}"
    for name, plan in (("phase2", _RUN.phase2), ("phase1", _RUN.phase1))
)


def _cohort_spec(text: str):
    """'name:n[:balance|natural[:slice|patient]]' -> CohortSpec."""
    from brain_audit.dataset.cohort import CohortSpec

    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise argparse.ArgumentTypeError(f"expected NAME:N[:BALANCE[:UNIT]], got {text!r}")
    try:
        n = int(parts[1])
        balance = None if len(parts) < 3 or parts[2] in ("natural", "none", "") else float(parts[2])
        unit = parts[3] if len(parts) == 4 else "slice"
        return CohortSpec(parts[0], n, balance, unit)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


@_command
def _add_cohort(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cohort",
        help="split patients (audit first) and draw nested, stratified phase cohorts",
        description="Join labels and header index, choose the audit patients first (never trained on), "
        "optionally a pretraining pool of patients, split the rest into train / validation by patient, "
        "and draw the phase cohorts, each inside the one before it. Writes OUT/cohort.csv (every image "
        "with its split and in_<cohort> flags), OUT/patients.csv and OUT/cohort.json "
        "(brain_audit.dataset.cohort.plan_cohorts).",
    )
    p.add_argument("root", type=Path, help="dataset root (for the default label file)")
    p.add_argument("--labels", type=Path, default=None, help="label CSV (default: ROOT/stage_2_train.csv)")
    p.add_argument("--index", type=Path, default=Path("work/index"), help="header index folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("work/cohort"), help="cohort folder (default: %(default)s)")
    p.add_argument("--cohort", dest="cohorts", action="append", type=_cohort_spec, default=None,
                   metavar="NAME:N[:BALANCE[:UNIT]]",
                   help="a phase cohort, largest first; BALANCE a fraction or 'natural', UNIT slice|patient "
                        f"(default: {' '.join(_DEFAULT_COHORTS)}, the run configuration's)")
    p.add_argument("--n-audit", type=int, default=_RUN.audit_patients,
                   help="audit patients, chosen first (default: %(default)s)")
    p.add_argument("--n-pretrain", type=int, default=_RUN.pretrain.patients,
                   help="patients held out for domain pretraining (default: %(default)s)")
    p.add_argument("--validation", type=float, default=_RUN.validation_fraction,
                   help="validation share of the other patients (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_RUN.seed, help="random seed (default: %(default)s)")
    p.set_defaults(run=_run_cohort)


def _run_cohort(args: argparse.Namespace) -> int:
    from brain_audit.dataset.cohort import join_images, plan_cohorts, write_cohorts
    from brain_audit.dataset.index import read_index
    from brain_audit.dataset.labels import read_labels
    from brain_audit.rsna import TRAIN_CSV

    labels = read_labels(args.labels or (args.root / TRAIN_CSV))
    images = join_images(labels, read_index(args.index))
    specs = tuple(args.cohorts or map(_cohort_spec, _DEFAULT_COHORTS))
    cohort, patients = plan_cohorts(images, specs, n_audit=args.n_audit, n_pretrain=args.n_pretrain,
                                    validation=args.validation, seed=args.seed)
    config = {"specs": specs, "n_audit": args.n_audit, "n_pretrain": args.n_pretrain,
              "validation": args.validation, "labels": str(args.labels or (args.root / TRAIN_CSV)),
              "index": str(args.index)}
    path = write_cohorts(args.out, cohort, patients, config=config, seed=args.seed)
    for split, g in patients.groupby("split"):
        n_img = int((cohort["split"] == split).sum())
        print(f"{split:>10}: {len(g)} patients, {n_img} images in the table")
    for spec in specs:
        c = cohort[cohort[f"in_{spec.name}"]]
        per_split = ", ".join(f"{s} {int((c['split'] == s).sum())}" for s in ("train", "validation"))
        print(f"{spec.name:>10}: {len(c)} slices of {c['patient_id'].nunique()} patients, "
              f"{int(c['any'].sum())} positive ({per_split})")
    print(f"-> {path}")
    return 0


@_command
def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="preprocess a cohort once into int16 HU shards at model resolution",
        description="Read every image of cohort.csv to HU, pad to square with air, resize to SIZE, store "
        "int16 HU in atomic shards with a manifest (brain_audit.dataset.cache.build_cache). Unreadable sources go "
        "to OUT/skipped.csv; a rerun resumes; a changed parameter or source rebuilds what it touches.",
    )
    p.add_argument("root", type=Path, help="dataset root")
    cache = ("brain_audit.dataset.cache", "build_cache")
    p.add_argument("--cohort", type=Path, default=Path("work/cohort"),
                   help="cohort folder or cohort.csv (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("work/cache"), help="cache folder (default: %(default)s)")
    p.add_argument("--size", type=_COUNT, default=_RUN.image_size,
                   help="slice side in pixels (default: %(default)s, the run configuration's image_size)")
    p.add_argument("--splits", nargs="+", default=None, help="only these splits (default: all)")
    p.add_argument("--context", type=_INDEX, default=_DefaultOf(*cache, "context"),
                   help="also cache N neighbour slices each side (2.5D; default: %(default)s)")
    p.add_argument("--index", type=Path, default=Path("work/index"),
                   help="header index (for --context; default: %(default)s)")
    p.add_argument("--shard-size", type=_COUNT, default=_DefaultOf(*cache, "shard_size"),
                   help="slices per shard (default: %(default)s)")
    p.add_argument("--workers", type=_INDEX, default=_RUN.workers,
                   help="processes (default: %(default)s, the run configuration's; 0 = in-process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from brain_audit.dataset.cache import build_cache
    from brain_audit.dataset.index import read_index

    index = read_index(args.index) if args.context > 0 else None
    cache = build_cache(args.cohort, args.root, args.out, size=args.size, splits=args.splits,
                        context=args.context, index=index, shard_size=args.shard_size, workers=args.workers,
                        progress=not args.quiet)
    m = cache.manifest
    counts = cache.table.groupby("split").size().to_dict()
    print(f"{m['n_images']} slices cached at {cache.size} x {cache.size} "
          f"({sum(s['bytes'] for s in m['shards']) / 2**20:.1f} MiB in {len(m['shards'])} shards; "
          f"{', '.join(f'{k} {v}' for k, v in counts.items())}); {m['n_skipped']} skipped -> {args.out}")
    for row in cache.skipped.head(10).itertuples():
        print(f"  skipped {row.image_id}: {row.reason}", file=sys.stderr)
    return 0


@_command
def _add_feed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "feed",
        help="draw a few batches from an HU cache and print what the model would receive",
        description="Build the tf.data feed of one split (brain_audit.dataset.feed.make_feed) and print the shape, "
        "dtype, HU range and label counts of the first batches: a check of the cache before training.",
    )
    p.add_argument("cache", type=Path, help="cache folder")
    feed = ("brain_audit.dataset.feed", "make_feed")
    p.add_argument("--split", default="train", help="split to draw from (default: %(default)s)")
    p.add_argument("--cohort", default=None, help="only images in_<COHORT> (e.g. phase1)")
    p.add_argument("--batch-size", type=_COUNT, default=_RUN.phase1.batch_size,
                   help="batch size (default: %(default)s, Phase 1's)")
    p.add_argument("--batches", type=_INDEX, default=2, help="batches to print (default: %(default)s)")
    p.add_argument("--labels", choices=("any", "six"), default=_RUN.head,
                   help="label columns, the model head (default: %(default)s)")
    p.add_argument("--augment", action="store_true", help="augment in HU as training does")
    p.add_argument("--context", type=_INDEX, default=_DefaultOf(*feed, "context"),
                   help="neighbour slices each side (2.5D; default: %(default)s)")
    p.add_argument("--seed", type=_INDEX, default=_DefaultOf(*feed, "seed"), help="shuffle seed (default: %(default)s)")
    p.set_defaults(run=_run_feed)


def _run_feed(args: argparse.Namespace) -> int:
    from brain_audit.dataset.feed import feed_length, make_feed

    ds = make_feed(args.cache, args.split, args.batch_size, cohort=args.cohort, labels=args.labels,
                   augment=args.augment, context=args.context, seed=args.seed)
    steps = feed_length(args.cache, args.split, args.batch_size, cohort=args.cohort)
    print(f"{args.split}: {steps} batches of {args.batch_size} per epoch")
    for k, (hu, y, w) in enumerate(ds.take(args.batches)):
        print(f"batch {k}: hu {hu.dtype.name} {tuple(hu.shape)} HU [{float(hu.numpy().min()):.0f}, "
              f"{float(hu.numpy().max()):.0f}], y {y.dtype.name} {tuple(y.shape)} positives "
              f"{y.numpy().sum(axis=0).astype(int).tolist()}, w {w.dtype.name} {tuple(w.shape)}")
    return 0

# ---------------------------------------------------------------- prepare / pretrain / train (train.py)
def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="run configuration, TOML (see brain_audit.config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with a TOML value, e.g. --set phase1.epochs=2 (repeatable)")
    p.add_argument("--data-root", default=None, help="dataset root in the RSNA layout (same as --set data_root=...)")
    p.add_argument("--out", default=None, help="run folder (same as --set out_dir=...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_run_config(args: argparse.Namespace, resolve: bool = True):
    """The run configuration of ``--config``, ``--set``, ``--data-root`` and ``--out``; kept in
    ``args.run_config`` so that its folders count as the command line's paths (:func:`_user_paths`).
    Called before the training modules are imported: a bad value is refused at once. With ``resolve``,
    ``data_root = "auto"`` becomes the folder found under /kaggle/input (a DataNotFoundError if none)."""

    from brain_audit.config import load_config, with_resolved_data_root

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data_root={json.dumps(str(args.data_root))}")
    if args.out:
        overrides.append(f"out_dir={json.dumps(str(args.out))}")
    args.run_config = load_config(args.config, overrides)
    if resolve:
        args.run_config = with_resolved_data_root(args.run_config)
    return args.run_config


@_command
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="labels -> header index -> patient splits and phase cohorts -> HU cache, for a run",
        description="Prepare a run's data (resumable): read the label CSV, index the DICOM headers, choose the "
        "audit patients first, split the rest by patient, draw the nested phase cohorts and build the int16 HU cache.",
    )
    _run_options(p)
    p.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    config = _load_run_config(args)
    from brain_audit.train.prepare import prepare_data

    cache = prepare_data(config, progress=not args.quiet)
    counts = cache.table.groupby("split").size().to_dict()
    print(f"cache {cache.path}: {counts}; skipped {len(cache.skipped)}")
    print(_data_summary_line(RunPaths(config.out_dir).data_summary))
    prepared = json.loads(RunPaths(config.out_dir).data_summary.read_text()).get("prepared")
    if prepared:
        print(f"prepared {prepared['folder']}: index {prepared['index']}; HU cache {prepared['cache']}")
    return 0


def _data_summary_line(path: Path) -> str:
    """One line of ``data/summary.json``: every stage's kept and left-out counts."""
    s = json.loads(path.read_text())
    reasons = ", ".join(f"{n} {k}" for k, n in sorted(s["index"]["skipped_by_reason"].items(), key=lambda kv: -kv[1]))
    return (f"left out: {s['labels']['rows_refused']} label rows refused; {s['index']['skipped']} files skipped by the "
            f"index{f' ({reasons})' if reasons else ''}; {s['join']['labelled_without_file']} labelled images without "
            f"a file; {s['cache']['skipped']} slices skipped by the cache; kept {s['index']['without_pixel_spacing']} "
            f"slices without Pixel Spacing (summary: {path})")


@_command
def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="domain-pretrain the EfficientNetB0 backbone on the run's pretraining patients",
        description="Train the whole network on the run's 'pretrain' split (patients disjoint from audit, train "
        "and validation; set pretrain.patients) and write <out>/pretrain/backbone.weights.h5 with its manifest. "
        "Then train with --set weights=\"pretrained\". Runs `prepare` first if needed.",
    )
    _run_options(p)
    p.add_argument("--force", action="store_true", help="retrain a finished backbone (also for other settings)")
    p.set_defaults(run=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    config = _load_run_config(args)
    from brain_audit.run_lock import run_lock
    from brain_audit.train.prepare import prepare_data
    from brain_audit.train.pretrain import check_backbone, run_pretrain

    with run_lock(config.out_dir):
        if not args.force:
            check_backbone(config)  # a backbone for other settings stops here, before the data are rebuilt
        prepare_data(config, progress=not args.quiet)
        path = run_pretrain(config, verbose=0 if args.quiet else "auto", force=args.force)
    print(f"backbone weights: {path}")
    return 0


@_command
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run training phase 1, 2, 3 (Grad-CAM audit), 4 (clinical correction) or 5 (study model), or all",
        description="Run one phase of the four-phase training (or all; 'all' adds the study-level Phase 5 when "
        "phase5.enabled). Each phase writes <out>/phase<N>/ and resumes after a crash or kill from its last "
        "completed epoch; a finished phase is not rerun unless --force.",
    )
    p.add_argument("--phase", default="all", choices=["1", "2", "3", "4", "5", "all"],
                   help="phase to run (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rerun a finished phase")
    _run_options(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:

    config = _load_run_config(args)
    from brain_audit.run_lock import run_lock
    from brain_audit.train.phases import check_trained, run_phase
    from brain_audit.train.prepare import prepare_data
    from brain_audit.train.pretrain import run_pretrain

    verbose = 0 if args.quiet else "auto"
    phases = ((1, 2, 3, 4, 5) if config.phase5.enabled else (1, 2, 3, 4)) if args.phase == "all" else (int(args.phase),)
    with run_lock(config.out_dir):  # one process for the whole command, data, backbone and phases
        if not args.force:
            check_trained(config, phases)  # trained for other settings: stop before the data are rebuilt
        prepare_data(config, progress=not args.quiet)
        if config.weights == "pretrained":
            run_pretrain(config, verbose=verbose)
        for n in phases:
            metrics = run_phase(config, n, verbose=verbose, force=args.force)
            keys = ("auc", "patient_auc", "threshold", "hard_negatives", "operating_point", "validation")
            print(f"phase {n}: " + json.dumps({k: metrics[k] for k in keys if k in metrics}, default=str))
    return 0

# ---------------------------------------------------------------- bone-study (audit.bone_study)
@_command
def _add_bone_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bone-study",
        help="score the audit patients with the skull removed, against an equal-area control change",
        description="On a finished run (Phase 4), score every audit slice as is, with the skull replaced by water "
        "and with a control change of the same area that removes no bone; per bleed group the share of slices "
        "whose probability rose, the median change in logit and the tests (brain_audit.audit.bone_study). "
        "Writes <out>/clinical_audit_report/bone_study/.",
    )
    _run_options(p)
    p.add_argument("--model", type=Path, default=None, help="the model to study (default: <out>/phase4/model.keras)")
    p.add_argument("--n-boot", type=_at_least(10), default=_DefaultOf("brain_audit.audit.bone_study",
                                                                      "run_bone_study", "n_boot"),
                   help="bootstrap resamples over patients (default: %(default)s)")
    p.set_defaults(run=_run_bone_study)


def _run_bone_study(args: argparse.Namespace) -> int:
    config = _load_run_config(args)
    from brain_audit.audit.bone_study import run_bone_study

    summary = run_bone_study(config, model_path=args.model, n_boot=args.n_boot)
    for g, e in summary["groups"].items():
        cells = []
        for arm in ("bone_removed", "control"):
            a = e[arm]
            if e["n_slices"]:
                cells.append(f"{arm} rose {a['rose']}/{e['n_slices']} ({a['share_rose']:.0%}), "
                             f"median dlogit {a['median_delta_logit']:+.3f}, p {a['wilcoxon_p']:.2g}")
        print(f"{g}: {e['n_slices']} slices, {e['n_patients']} patients" + ("; " if cells else "") + "; ".join(cells))
    print(f"report: {Path(summary['output_dir']) / 'bone_study.md'}")
    return 0


# ---------------------------------------------------------------- audit, report (audit.holdout, audit.report)
@_command
def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="the held-out clinical audit of a finished run: intervals, subgroups, calibration, figures, index.html",
        description="Score the audit patients with the Phase-4 model at the thresholds Phase 4 chose on validation "
        "and write <out>/clinical_audit_report/ (summary.json, summary.md, index.html, figures/, gallery/, per-patient "
        "logs, the attention audit and the bone-removal study; brain_audit.audit.holdout).",
    )
    _run_options(p)
    p.add_argument("--model", type=Path, default=None, help="the model to audit (default: <out>/phase4/model.keras)")
    p.add_argument("--n-boot", type=_at_least(10), default=_DefaultOf("brain_audit.audit.holdout", "audit_holdout",
                                                                      "n_boot"),
                   help="bootstrap resamples over patients (default: %(default)s)")
    p.set_defaults(run=_run_audit)


def _run_audit(args: argparse.Namespace) -> int:
    config = _load_run_config(args)
    from brain_audit.audit.holdout import audit_holdout

    summary = audit_holdout(config, model_path=args.model, n_boot=args.n_boot)
    t, r = summary["patient_level"]["at_threshold"], summary["patient_level"]
    print(f"{summary['audit_patients']} patients: sensitivity {t['sensitivity']:.1%} "
          f"({r['sensitivity_ci95'][0]:.1%}-{r['sensitivity_ci95'][1]:.1%}), specificity {t['specificity']:.1%} "
          f"({r['specificity_ci95'][0]:.1%}-{r['specificity_ci95'][1]:.1%})")
    print(f"report: {RunPaths(config.out_dir).report / 'index.html'}")
    return 0


@_command
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="redraw a finished audit's figures, summary.md and index.html from its report folder (no model needed)",
        description="Render <report>/summary.json, slices.csv and patients.csv into figures/, summary.md and a "
        "self-contained index.html (brain_audit.audit.report.write_report).",
    )
    p.add_argument("report", type=Path, help="a clinical_audit_report/ folder (or the run folder holding one)")
    p.add_argument("--to", type=Path, default=None,
                   help="copy the report folder here first (replacing it) and render the copy, e.g. the repository's "
                   "example clinical_audit_report/")
    p.add_argument("--n-boot", type=_at_least(10), default=_DefaultOf("brain_audit.audit.report", "write_report",
                                                                      "n_boot"),
                   help="bootstrap resamples of the ROC band (default: %(default)s)")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from brain_audit.audit.report import write_report

    folder = args.report
    if not (folder / "summary.json").is_file() and (RunPaths(folder).report / "summary.json").is_file():
        folder = RunPaths(folder).report
    if args.to is not None and (folder / "summary.json").is_file():
        import shutil

        from brain_audit.errors import ConfigError

        if args.to.resolve() != folder.resolve():
            if args.to.exists() and any(args.to.iterdir()) and not (args.to / "summary.json").is_file():
                raise ConfigError(f"`--to` must be a new folder or an earlier report (with summary.json). "
                                  f"Got {str(args.to)!r} instead.")
            shutil.rmtree(args.to, ignore_errors=True)
            shutil.copytree(folder, args.to)
        folder = args.to
    print(f"report: {write_report(folder, n_boot=args.n_boot)}")
    return 0


# ---------------------------------------------------------------- gradcam (gradcam, skull)
@_command
def _add_gradcam(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcam",
        help="Grad-CAM overlays and attention profiles (where the model looks) for DICOM slices",
        description="Explain a saved model's output on each DICOM slice with a class-activation map (batched, of "
        "the logit; by default the audits' HiResCAM at the deepest block with >= 16 map cells a side), write the seed's overlay PNG per slice and a CSV of "
        "attention profiles: energy shares on the intracranial space, skull, calcified foci, metal, head holder "
        "and outside the head, with the shortcut flags (brain_audit.gradcam.audit_files).",
    )
    p.add_argument("--model", type=Path, required=True, help="a .keras model saved by brain_audit.model.save_model")
    p.add_argument("--images", nargs="+", type=Path, required=True, help="DICOM files and / or folders of *.dcm")
    audit = ("brain_audit.gradcam.files", "audit_files")
    p.add_argument("--out", type=Path, default=Path("gradcam_out"), help="output folder (default: %(default)s)")
    p.add_argument("--labels", type=Path, default=None, help="RSNA ID,Label CSV (adds labels and right_for_wrong_reason)")
    p.add_argument("--layer", default=None,
                   help="layer to explain (default: the audits' layer, brain_audit.gradcam.maps.audit_layer)")
    p.add_argument("--output-index", type=int, default=None,
                   help="output unit, 0-5 for the six labels (default: the 'any' output, 0 of a one-output model "
                   "and 5 of the six-label head)")
    p.add_argument("--method", choices=("gradcam", "gradcam++", "hirescam", "layercam"), default=None,
                   help="default: the audits' method (hirescam)")
    p.add_argument("--batch-size", type=int, default=_DefaultOf(*audit, "batch_size"),
                   help="Grad-CAM batch (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=_DefaultOf(*audit, "threshold"),
                   help="decision threshold (default: %(default)s)")
    p.add_argument("--no-overlays", action="store_true", help="write the CSV only")
    p.add_argument("--sanity-steps", type=int, default=_DefaultOf(*audit, "sanity_steps"),
                   help="Adebayo randomisation check over this many top layer groups (0: skip; default: %(default)s)")
    p.add_argument("--seed", type=int, default=_DefaultOf(*audit, "seed"),
                   help="seed of the randomisation check (default: %(default)s)")
    p.set_defaults(run=_run_gradcam)


def _run_gradcam(args: argparse.Namespace) -> int:
    from brain_audit.gradcam.attention import FLAGS
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.weights import load_model

    labels = None
    if args.labels is not None:
        from brain_audit.dataset.labels import read_labels

        labels = read_labels(args.labels)
    model = load_model(args.model, compile=False)
    table = audit_files(
        model,
        args.images,
        args.out,
        layer=args.layer,
        output_index=args.output_index,
        method=args.method,
        batch_size=args.batch_size,
        labels=labels,
        threshold=args.threshold,
        overlays=not args.no_overlays,
        sanity_steps=args.sanity_steps,
        seed=args.seed,
    )
    skipped = table.attrs.get("n_skipped", 0)
    print(f"{len(table)} slices explained, {skipped} skipped -> {args.out / 'profiles.csv'}")
    if len(table):
        shares = ", ".join(f"{c[7:]} {table[c].mean():.2f}" for c in table.columns if c.startswith("energy_"))
        print(f"mean energy shares: {shares}")
        print("flagged slices: " + ", ".join(f"{f} {int(table[f].fillna(False).astype(bool).sum())}" for f in FLAGS))
    sanity = table.attrs.get("sanity") or {}
    if sanity:
        verdict = "maps depend on the weights" if sanity["trustworthy"] else "NOT TRUSTWORTHY: maps survive randomisation"
        print(f"sanity check (Adebayo et al. 2018): Spearman after randomising {sanity['steps']} layer groups "
              f"{sanity['rho_final']:.2f} -> {verdict}")
    return 0 if len(table) else 1


# ---------------------------------------------------------------- predict (inference)
@_command
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score a folder of DICOM files with a trained model; with the RSNA test set, the Kaggle submission.csv",
        description="Read every DICOM file to HU as training did, score it with the model (a .keras file, or a run "
        "folder: its Phase-4 model and patient threshold, and its Phase-5 study model when finished) and write OUT/slices.csv, studies.csv, unreadable.csv, "
        "summary.json and, for the RSNA test set with a six-label model, submission.csv in the order of "
        "ROOT/stage_2_sample_submission.csv (brain_audit.inference.predict_folder). Resumable: a rerun scores "
        "only the files not yet scored.",
    )
    predict = ("brain_audit.inference.predict", "predict_folder")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL",
                   help="a .keras model, or a run folder with phase4/")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-root", type=Path, default=None, metavar="ROOT",
                       help="RSNA dataset root: scores ROOT/stage_2_test/ID_*.dcm and writes submission.csv (in the "
                       "row order of ROOT/stage_2_sample_submission.csv when present)")
    where.add_argument("--dicom", type=Path, default=None, metavar="DIR",
                       help="any folder of DICOM files, searched recursively (files that are not DICOM are listed)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tta", action="store_true", help="also score each slice flipped left-right; report the mean")
    p.add_argument("--batch-size", type=_COUNT, default=_DefaultOf(*predict, "batch_size"),
                   help="slices per model call (default: %(default)s)")
    p.add_argument("--workers", type=_INDEX, default=_DefaultOf(*predict, "workers"),
                   help="reading processes (default: %(default)s; 0 = in-process)")
    p.add_argument("--chunk", type=_COUNT, default=_DefaultOf(*predict, "chunk"),
                   help="files per resumable part (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="flag studies whose most suspicious slice reaches this (default: a run folder's patient "
                   "threshold, else none)")
    p.add_argument("--study", action=argparse.BooleanOptionalAction, default=None,
                   help="rescore each series whole, in z order, with the run folder's study model (phase5/) and "
                   "score submission.csv with it (default: when the run folder has a finished Phase 5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from brain_audit.errors import ConfigError
    from brain_audit.inference import TEST_DIR, predict_folder, summary_line

    if args.data_root is not None:
        if not args.data_root.is_dir():
            raise ConfigError(f"`--data-root` must be a folder. Got {str(args.data_root)!r} instead (no such folder).")
        folder, layout = args.data_root / TEST_DIR, "rsna"
        if not folder.is_dir():
            raise ConfigError(f"`--data-root` must hold {TEST_DIR}/ (the RSNA test DICOM files). "
                              f"Got {str(args.data_root)!r} instead ({folder} is missing).")
    else:
        folder, layout = args.dicom, "dicom"
        if not folder.is_dir():
            raise ConfigError(f"`--dicom` must be a folder of DICOM files. Got {str(folder)!r} instead "
                              "(no such folder).")
    if not args.model.exists():
        raise ConfigError(f"`--model` must be a .keras file or a run folder. Got {str(args.model)!r} instead "
                          "(no such file or folder).")
    s = predict_folder(args.model, folder, args.out, layout=layout, tta=args.tta, batch_size=args.batch_size,
                       workers=args.workers, chunk=args.chunk, threshold=args.threshold, study=args.study,
                       progress=not args.quiet)
    if args.quiet:  # else predict_folder printed it
        print(summary_line(s, args.out))
    if s["flagged"] is not None:
        print(f"{s['flagged']} of {s['studies']} studies flagged at threshold {s['threshold']:.4g}")
    study = s["study_model"]
    if study is not None:
        flagged = (f"; {study['flagged']} of {s['studies']} studies flagged at its threshold {study['threshold']:.4g}"
                   if study["flagged"] is not None else "")
        print(f"study model {study['path']}: {study['slices_scored']} slices rescored by series, "
              f"{study['slices_kept_slice_model']} without a series kept the slice model's score{flagged}")
    if s["submission"] is not None:
        sub = s["submission"]
        print(f"submission: {sub['path']} ({sub['rows']} rows, {sub['images']} images; {sub['filled']} filled with "
              f"the {sub['fallback']}; {sub['scored_not_in_sample']} scored images not in the sample); "
              f"submission scored by the {s['submission_scores']}")
    else:
        print(f"no submission: {s['submission_reason']}")
    return 0 if s["scored"] else 1


# ---------------------------------------------------------------- demo (demo.py)
@_command
def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="preflight: can this run finish here? data, weights, devices, space and time, in seconds",
        description="Check a run plan before any long step (brain_audit.preflight.check): the RSNA data (found "
        "under /kaggle/input for data_root = \"auto\"), the starting weights, the GPUs, precision and batches, "
        "the free space against the planned HU cache, and the time of every stage against a budget. Exit 0 when "
        "the plan can finish, 1 with the problems when it cannot.",
    )
    _run_options(p)
    p.add_argument("--budget-hours", type=float, default=_DefaultOf("brain_audit.preflight", "check", "budget_hours"),
                   help="the time the whole plan must fit in, hours (default: %(default)s, a Kaggle GPU session)")
    p.add_argument("--internet", choices=("probe", "yes", "no"), default="probe",
                   help="internet for the ImageNet download: probe it (a 2-second connect, only when needed), "
                   "or say so (default: %(default)s)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the findings as JSON here")
    p.set_defaults(run=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from brain_audit.errors import ConfigError

    config = _load_run_config(args, resolve=False)  # a missing root is a finding of the check, not an error
    if args.budget_hours <= 0:
        raise ConfigError(f"`--budget-hours` must be > 0. Got {args.budget_hours} instead.")
    from brain_audit.preflight import check
    from brain_audit.provenance import write_json

    internet = {"probe": None, "yes": True, "no": False}[args.internet]
    result = check(config, internet=internet, budget_hours=args.budget_hours)
    print(result)
    if args.json_out is not None:
        write_json(args.json_out, result.as_dict())
    for problem in result.problems:
        print(f"brain-audit: check: {problem}", file=sys.stderr)
    return 0 if result.ok else 1


@_command
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the built-in phantom cohort: phantom -> prepare -> pretrain -> phases 1-5 -> audit",
        description="Generate a synthetic head-CT cohort with the seed's four shortcuts planted (coil, catheter, "
        "frontal bone, choroid-plexus calcification), prepare it, pretrain the backbone, run the four phases and the "
        "study-level Phase 5 (--no-study leaves it out), the held-out clinical audit (with both aggregations), train a clean reference model, and catch each shortcut by attention and by "
        "intervention (brain_audit.shortcut_study). Resumable: rerun the same command after an interruption.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a tiny run (every stage, about a minute; learns little)")
    p.add_argument("--patients", type=int, default=None,
                   help="phantom patients (default: brain_audit.demo.DemoPlan's, or DemoPlan.quick()'s with --quick)")
    p.add_argument("--seed", type=int, default=None, help="the one seed (default: the plan's)")
    p.add_argument(
        "--shortcut", action="append", default=[], metavar="MIMIC:P_BLEED,P_NO_BLEED",
        help="a planted shortcut, e.g. coil:0.3,0.02; repeat for several; given, they replace the plan's four "
        "(brain_audit.demo.DEFAULT_SHORTCUTS)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key of the demo's runs with a TOML value, e.g. --set head=six "
                   "(repeatable; see brain_audit.config)")
    p.add_argument("--no-study", dest="study", action="store_false",
                   help="leave out Phase 5, the study-level sequence model, and its comparison in the audit")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from brain_audit.demo import DemoPlan, run_demo
    from brain_audit.phantom.config import parse_shortcut

    plan = DemoPlan.quick() if args.quick else DemoPlan()
    changes: dict[str, Any] = {k: v for k, v in (("patients", args.patients), ("seed", args.seed)) if v is not None}
    changes["study"] = args.study
    if args.shortcut:
        changes["shortcut"] = tuple((m, *p) for m, p in (parse_shortcut(s) for s in args.shortcut))
    plan = dataclasses.replace(plan, **changes)
    summary = run_demo(args.out, plan, overrides=tuple(args.overrides), verbose=0 if args.quiet else 2,
                       progress=not args.quiet)
    print(json.dumps(summary, indent=1, default=str))
    print(f"\nreport: {args.out / 'clinical_audit_report' / 'summary.md'}")
    print(f"shortcut study: {args.out / 'shortcut_study' / 'shortcut_study.md'}")
    return 0


# ---------------------------------------------------------------- shortcut-study (shortcut_study.py)
@_command
def _add_shortcut_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shortcut-study",
        help="rerun the shortcut study of a finished demo folder (planted shortcuts caught by attention and by "
        "intervention)",
        description="On a finished `brain-audit demo` folder: train the clean reference if it is missing (its own "
        "pretraining, then Phases 1-2, on clean patients; resumable, reused when finished), then for each planted "
        "shortcut compare the demo's model with the clean one on the audit patients, by the matching attention flag "
        "in occlusion-sensitivity and HiResCAM maps and by adding / removing the mimic (brain_audit.shortcut_study). "
        "Writes <out>/shortcut_study/ and updates demo_summary.json.",
    )
    p.add_argument("--out", type=Path, required=True, help="the demo's output folder (with demo_summary.json)")
    study = ("brain_audit.demo", "run_shortcut_stage")
    p.add_argument("--n-boot", type=_at_least(10), default=_DefaultOf(*study, "n_boot"),
                   help="bootstrap resamples over patients (default: %(default)s)")
    p.add_argument("--limit", type=_at_least(1), default=None,
                   help="counterfactual pairs per shortcut and direction (default: the demo plan's study_pairs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=_run_shortcut_study)


def _run_shortcut_study(args: argparse.Namespace) -> int:
    from brain_audit.demo import study_demo_folder

    summary = study_demo_folder(args.out, n_boot=args.n_boot, limit=args.limit, verbose=0 if args.quiet else 2,
                                progress=not args.quiet)
    for mimic, e in summary["shortcut_study"].items():
        if mimic == "thresholds":
            continue
        a = e.get("occlusion") or {}
        s, c = a.get("rate_shortcut_model"), a.get("rate_clean_model")
        rates = "no slice holds it" if s is None else f"{e['flag']} (occlusion) {s:.0%} vs clean {c:.0%}"
        caught = e.get("caught") or {}
        verdict = ", ".join(f"{k} {'yes' if caught.get(k) else 'no'}" for k in ("attention", "intervention"))
        print(f"{mimic}: {rates}; " + "; ".join(
            f"{d} {e[d]['shortcut_model']['mean_change']:+.3f} vs clean {e[d]['clean_model']['mean_change']:+.3f}"
            for d in ("added", "removed") if d in e and e[d]["shortcut_model"].get("n")) + f"; caught: {verdict}")
    print(f"report: {args.out / 'shortcut_study' / 'shortcut_study.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = _Parser(
        prog="brain-audit",
        description="Intracranial-hemorrhage detection on head CT that audits its own model.",
    )
    parser.add_argument("--version", action="version", version=f"brain_audit {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error too (a user error is otherwise one line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _REGISTRY:
        add(sub)
    return parser


def _user_paths(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The command line's paths, absolute: ``(outputs, inputs)``. Outputs are ``--out`` and the run
    configuration's ``out_dir``; inputs every other path option, ``--data-root`` and ``data_root``."""
    outputs: list[str] = []
    inputs: list[str] = []
    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, Path) or (name in ("out", "data_root") and isinstance(v, str)):
                (outputs if name == "out" else inputs).append(str(v))
    config = getattr(args, "run_config", None)
    if config is not None:
        outputs.append(config.out_dir)
        inputs.append(config.data_root)
        inputs.append(config.prepared)
        if config.backbone_weights not in (None, "imagenet"):  # a weights file
            inputs.append(config.backbone_weights)
    return [Path(os.path.abspath(p)) for p in outputs if p], [Path(os.path.abspath(p)) for p in inputs if p]


def _path_error(exc: OSError, args: argparse.Namespace) -> str | None:
    """The one line for an operating-system error on a path of the command line, or None when the
    file is none of them (then it is a bug, and keeps its traceback)."""
    if exc.filename is None:
        return str(exc)  # raised on purpose with a message that names the file ("m.h5: no such weights file")
    failed = Path(os.path.abspath(exc.filename))
    reason = exc.strerror or type(exc).__name__
    outputs, inputs = _user_paths(args)

    def near(paths: list[Path]) -> bool:  # the path itself, a file inside it, or a folder above it
        return any(failed.is_relative_to(p) or p.is_relative_to(failed) for p in paths)

    if near(outputs):
        return f"cannot write to {exc.filename}: {reason}"
    if near(inputs):
        return f"cannot read {exc.filename}: {reason}"
    return None


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """Warnings as one line each, like the errors (``warnings.formatwarning``; not with ``--debug``)."""
    return f"brain-audit: warning: {' '.join(str(message).splitlines())}\n"


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    if args.debug:
        traceback.print_exc()
    line = " ".join(message.splitlines()) or "unknown error"
    print(f"brain-audit: {'error: ' if code == 2 else ''}{line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``brain-audit``; returns the process exit code (see the module docstring)."""
    parser = build_parser()
    args = _resolve_defaults(parser.parse_args(argv))
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    formatwarning = warnings.formatwarning
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except BrainAuditError as exc:
        return _fail(args, str(exc))
    except _PATH_ERRORS as exc:
        line = _path_error(exc, args)
        if line is None:
            raise
        return _fail(args, line)
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
