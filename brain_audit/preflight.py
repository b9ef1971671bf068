"""The preflight check: can this run finish here, before any long step starts? (``brain-audit check``)

:func:`check` takes seconds and answers, for one :class:`~brain_audit.config.RunConfig`:

* **data**: the RSNA root (``data_root``, or found by :func:`brain_audit.rsna.find_rsna_root` for
  ``"auto"``), label rows and images of the label file, ``.dcm`` files in ``stage_2_train/`` and
  ``stage_2_test/`` (counted with :func:`os.scandir`, no stat per file), the sample submission;
* **weights**: what ``weights`` asks for, whether it is here (Keras' ImageNet file in the Keras cache, a
  file, internet to download it, this run's pretraining output) and what the choice means for the result;
* **devices**: the GPUs TensorFlow sees, the precision and the global / per-replica batches that follow
  (:mod:`brain_audit.train.runtime`);
* **space**: free bytes where the run writes against the planned HU cache (int16, ``image_size``\\ :sup:`2`
  x 2 bytes per slice, :mod:`brain_audit.dataset.cache`; with ``context`` > 0 also, at most, the neighbours of the
  Phase-2 slices), index, models and report;
* **time**: each stage estimated from the plan: the header index ("reused" when the run's own or the
  ``prepared`` index answers the data) and the cache from a few files read here and timed, pretraining, the
  phases, the audit and the test predictions from a throughput table (:data:`TRAIN_IMAGES_PER_S_128`,
  assumed, not measured here).

It stops the run (``ok = False``) when the plan cannot finish: data missing, weights unavailable, space
short, or the estimated total above the time budget (default :data:`KAGGLE_SESSION_HOURS`).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from brain_audit.config import RunConfig
from brain_audit.errors import DataNotFoundError
from brain_audit.rsna import SAMPLE_SUBMISSION, TEST_DIR, TRAIN_CSV, TRAIN_DIR, resolve_data_root
from brain_audit.run_layout import RunPaths

__all__ = [
    "Preflight",
    "check",
    "internet_reachable",
    "training_images_per_second",
    "KAGGLE_SESSION_HOURS",
    "RSNA_SLICES_PER_PATIENT",
    "TRAIN_IMAGES_PER_S_128",
    "INFERENCE_SPEEDUP",
]

#: Longest Kaggle notebook session with a GPU (and CPU-only), hours; TPU sessions are shorter (9 h).
KAGGLE_SESSION_HOURS: float = 12.0

#: Slices per patient assumed when neither an index nor a header sample of every file tells: the RSNA
#: 2019 training set holds 752,803 slices of 21,784 examinations (Flanders et al. 2020), ~34.6 per study,
#: counted here as one study per patient (an upper bound on patients, so a lower bound on slices each).
RSNA_SLICES_PER_PATIENT: float = 752_803 / 21_784

#: Training throughput of EfficientNetB0 at 128 x 128 px (forward + backward, images per second per
#: device), scaled by (128 / image_size)^2. Assumed, not measured here; a GPU not named uses ``"gpu"``.
TRAIN_IMAGES_PER_S_128: dict[str, float] = {"cpu": 50.0, "T4": 800.0, "P100": 600.0, "gpu": 500.0}

#: How much faster a forward pass alone (prediction) runs than a training step; assumed.
INFERENCE_SPEEDUP: float = 3.0

#: Size of one saved model or checkpoint (``.keras``, EfficientNetB0 with its optimizer state), bytes; assumed.
MODEL_BYTES: int = 60_000_000

#: Header index bytes per image (``index.parquet``, ``skipped.csv``); assumed.
INDEX_BYTES_PER_IMAGE: int = 120

#: Report, figures, overlays and tables of the phases and the audit, bytes; assumed.
REPORT_BYTES: int = 200_000_000

#: Where the ImageNet file is downloaded from when it is not in the Keras cache.
WEIGHTS_HOST: tuple[str, int] = ("storage.googleapis.com", 443)

_GB = 1e9


@dataclass
class Preflight:
    """What :func:`check` found.

    Attributes:
        ok: the plan can finish here (no problem found).
        sections: report lines by section, in order: ``data``, ``weights``, ``devices``, ``space``, ``time``.
        problems: one line per reason the plan cannot finish, each saying how to fix it.
        facts: the figures behind the lines, machine-readable (counts, bytes, seconds, assumptions).
    """

    ok: bool
    sections: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        """The report as lines: each section's name, its lines indented, then the verdict."""
        out: list[str] = []
        for name, lines in self.sections.items():
            out.append(f"{name}:")
            out.extend(f"  {line}" for line in lines)
        verdict = "ok: the plan can finish here" if self.ok else f"STOP: {len(self.problems)} problem(s)"
        out.append(verdict)
        out.extend(f"  - {p}" for p in self.problems)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def as_dict(self) -> dict[str, Any]:
        """``{"ok", "problems", "sections", "facts"}`` for JSON."""
        return {"ok": self.ok, "problems": list(self.problems), "sections": dict(self.sections), "facts": self.facts}


def internet_reachable(host: str = WEIGHTS_HOST[0], port: int = WEIGHTS_HOST[1], timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check(
    config: RunConfig,
    *,
    internet: bool | None = None,
    budget_hours: float = KAGGLE_SESSION_HOURS,
    search: Sequence[str | Path] | None = None,
    header_sample: int = 64,
    pixel_sample: int = 8,
    probe: Callable[[], bool] = internet_reachable,
    seed: int = 0,
) -> Preflight:
    """Check that ``config`` can run to the end here, in seconds, before any long step.

    Args:
        config: the run plan (``data_root`` may be ``"auto"``).
        internet: whether the internet is reachable; ``None``: ``probe()`` is asked, only when a
            download would be needed (``weights = "imagenet"`` and no file in the Keras cache).
        budget_hours: the time the whole plan must fit in (> 0); default a Kaggle GPU session.
        search: folders ``"auto"`` searches (default :data:`brain_audit.rsna.DEFAULT_SEARCH`).
        header_sample: DICOM headers read and timed (estimates the header index's time).
        pixel_sample: slices read and preprocessed end to end and timed (the HU cache's time).
        probe: the connection test (default: a 2-second TCP connect to storage.googleapis.com:443).
        seed: chooses the sampled files.

    Returns:
        A :class:`Preflight`; ``ok`` is False when the data is missing, the weights are unavailable,
        the space is short or the estimated total exceeds ``budget_hours``.
    """
    if budget_hours <= 0:
        raise ValueError(f"`budget_hours` must be > 0. Got {budget_hours} instead.")
    pf = Preflight(ok=True)
    data = _check_data(config, pf, search, header_sample, pixel_sample, seed)
    _check_weights(config, pf, internet, probe)
    devices = _check_devices(config, pf)
    plan = _plan(config, data)
    _check_space(config, pf, plan)
    _check_time(config, pf, data, plan, devices, budget_hours)
    data.pop("image_ids", None)  # facts stay JSON-ready
    pf.facts["plan_slices"] = {k: round(v, 1) for k, v in plan.items()}
    pf.ok = not pf.problems
    return pf


# ---------------------------------------------------------------- (a) data

def _count_dcm(folder: Path) -> tuple[int, list[str]]:
    """``.dcm`` entries of ``folder`` (names only: no stat per file) and their names."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.endswith(".dcm")]
    return len(names), names


def _label_images(path: Path) -> tuple[int, Any]:
    """``(label rows, image IDs)`` of an RSNA label file, fast: the IDs of its ``<image>_any`` rows (one per
    image; :func:`brain_audit.dataset.labels.read_labels` checks the file fully, and takes longer)."""
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    column = pa_csv.read_csv(path).column(0).cast("string")
    any_rows = column.filter(pc.ends_with(column, "_any"))
    ids = pc.unique(pc.utf8_slice_codeunits(any_rows, 0, -len("_any")))
    return len(column), ids.to_pandas()


def _check_data(config: RunConfig, pf: Preflight, search: Any, header_sample: int, pixel_sample: int,
                seed: int) -> dict[str, Any]:
    lines = pf.sections.setdefault("data", [])
    data: dict[str, Any] = {"root": None}
    pf.facts["data"] = data
    try:
        root = resolve_data_root(config.data_root, search)
    except DataNotFoundError as exc:
        lines.append(str(exc))
        pf.problems.append(str(exc))
        return data
    how = "found under the search folders" if str(config.data_root).strip().lower() == "auto" else "data_root"
    if not (root / TRAIN_CSV).is_file() or not (root / TRAIN_DIR).is_dir():
        msg = (f"`data_root` must hold {TRAIN_CSV} and {TRAIN_DIR}/. Got {str(root)!r} instead (set data_root = "
               "\"auto\" to search /kaggle/input, or attach the competition data)")
        lines.append(msg)
        pf.problems.append(msg)
        return data
    data["root"] = str(root)
    lines.append(f"root {root} ({how})")
    n_rows, ids = _label_images(root / TRAIN_CSV)
    n_images = len(ids)
    data.update(label_rows=n_rows, images=n_images)
    lines.append(f"{TRAIN_CSV}: {n_rows:,} label rows, {n_images:,} images")
    n_train, names = _count_dcm(root / TRAIN_DIR)
    data["train_files"] = n_train
    lines.append(f"{TRAIN_DIR}/: {n_train:,} .dcm files")
    if n_train == 0:
        pf.problems.append(f"{root / TRAIN_DIR}: no .dcm file; attach the full competition data")
    if (root / TEST_DIR).is_dir():
        data["test_files"] = _count_dcm(root / TEST_DIR)[0]
        lines.append(f"{TEST_DIR}/: {data['test_files']:,} .dcm files")
    else:
        data["test_files"] = 0
        lines.append(f"{TEST_DIR}/: absent (no test predictions)")
    data["sample_submission"] = (root / SAMPLE_SUBMISSION).is_file()
    lines.append(f"{SAMPLE_SUBMISSION}: {'present' if data['sample_submission'] else 'absent'}")
    data["image_ids"] = ids
    _sample_files(root, names, data, lines, header_sample, pixel_sample, config.image_size, seed)
    _slices_per_patient(config, data, lines)
    return data


def _sample_files(root: Path, names: list[str], data: dict[str, Any], lines: list[str], header_sample: int,
                  pixel_sample: int, size: int, seed: int) -> None:
    """Time ``header_sample`` header reads and ``pixel_sample`` reads + preprocessing on sampled files."""
    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.dicom import read_header, read_hu
    from brain_audit.errors import DicomReadError

    rng = random.Random(seed)
    sample = rng.sample(sorted(names), min(header_sample, len(names)))
    patients, with_patient = set(), 0
    start = time.perf_counter()
    for name in sample:
        try:
            h = read_header(root / TRAIN_DIR / name)
        except DicomReadError:
            continue
        if h["patient_id"] is not None:
            patients.add(h["patient_id"])
            with_patient += 1
    header_s = (time.perf_counter() - start) / max(1, len(sample))
    ok = 0
    start = time.perf_counter()
    for name in sample[:pixel_sample]:
        try:
            preprocess_slice(read_hu(root / TRAIN_DIR / name), size)
            ok += 1
        except DicomReadError:
            continue
    pixel_s = (time.perf_counter() - start) / max(1, min(pixel_sample, len(sample)))
    data.update(header_seconds=header_s, pixel_seconds=pixel_s, sampled_headers=len(sample))
    if len(sample) == len(names) and patients:  # every file read: patients counted, not assumed
        data["sample_patients"], data["sample_slices"] = len(patients), with_patient
    lines.append(f"timed here: {len(sample)} headers at {header_s * 1e3:.1f} ms each; {min(pixel_sample, len(sample))} "
                 f"slices read and preprocessed to {size} px at {pixel_s * 1e3:.1f} ms each")


def _slices_per_patient(config: RunConfig, data: dict[str, Any], lines: list[str]) -> None:
    """Slices per patient: from a header index that answers the data, or every file's header, or RSNA's."""
    from brain_audit.dataset.index import read_index
    from brain_audit.dataset.prepared import index_reuse_problem

    root = Path(data["root"])
    data["index"] = None
    candidates = [("this run's", RunPaths(config.out_dir).index)]
    if config.prepared:
        candidates.insert(0, ("the prepared", Path(config.prepared) / "index"))
    for who, folder in candidates:
        why = index_reuse_problem(folder, root, data["image_ids"]) if folder.is_dir() else f"{folder}: absent"
        if why is None:
            index = read_index(folder)
            spp = len(index) / max(1, index["patient_id"].nunique())
            data.update(index=str(folder), slices_per_patient=spp, index_patients=int(index["patient_id"].nunique()))
            lines.append(f"header index: {who} {folder} answers this data ({len(index):,} slices, "
                         f"{data['index_patients']:,} patients, {spp:.1f} slices per patient)")
            return
        if who == "the prepared":
            lines.append(f"prepared index not usable: {why}")
    if data.get("sample_patients"):
        spp = data["sample_slices"] / data["sample_patients"]
        lines.append(f"slices per patient {spp:.1f} (every file's header read)")
    else:
        spp = RSNA_SLICES_PER_PATIENT
        lines.append(f"slices per patient {spp:.1f} assumed (RSNA 2019: 752,803 slices of 21,784 examinations)")
    data["slices_per_patient"] = spp


# ---------------------------------------------------------------- (b) weights

_MEANING = {
    "imagenet": "ImageNet backbone: Phase 1 trains the head on the frozen backbone (the seed's plan)",
    "pretrained": "this run's domain-pretrained backbone (`brain-audit pretrain` on the pretraining patients)",
    "none": "random initialisation: Phase 1 trains the whole network with BatchNorm trainable; expect a weaker "
            "model than from ImageNet on the same data",
    "file": "a backbone weights file (or Keras' ImageNet file) loaded before Phase 1",
}


def _check_weights(config: RunConfig, pf: Preflight, internet: bool | None, probe: Callable[[], bool]) -> None:
    lines = pf.sections.setdefault("weights", [])
    asked = str(config.weights)
    kind = asked.lower() if asked.lower() in ("imagenet", "pretrained", "none", "") else "file"
    kind = "none" if kind == "" else kind
    facts: dict[str, Any] = {"asked": asked, "kind": kind}
    pf.facts["weights"] = facts
    lines.append(f"weights = {asked!r}: {_MEANING[kind]}")
    if kind == "imagenet":
        from brain_audit.model.weights import IMAGENET_NOTOP_FILENAME, imagenet_weights_available, keras_cache_dir

        cached = imagenet_weights_available()
        facts["in_keras_cache"] = cached
        if cached:
            lines.append(f"{IMAGENET_NOTOP_FILENAME} is in the Keras cache ({keras_cache_dir()}): no download")
            return
        reachable = probe() if internet is None else internet
        facts["internet"] = reachable
        if reachable:
            lines.append(f"{IMAGENET_NOTOP_FILENAME} not in the Keras cache; internet reachable: Keras downloads it")
            return
        problem = (f"weights = \"imagenet\" but {IMAGENET_NOTOP_FILENAME} is not in the Keras cache "
                   f"({keras_cache_dir()}) and the internet is off: attach efficientnetb0_notop.h5 as a dataset and "
                   "set weights to its path (checked by MD5 and installed into the Keras cache), or turn the internet "
                   "on, or set weights = \"none\"")
        lines.append(problem)
        pf.problems.append(problem)
    elif kind == "file":
        path = Path(asked)
        facts["file_exists"] = path.is_file()
        if path.is_file():
            lines.append(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
        else:
            problem = f"weights file {path} does not exist: attach it, or set weights = \"imagenet\" or \"none\""
            lines.append(problem)
            pf.problems.append(problem)
    elif kind == "pretrained":
        backbone = RunPaths(config.out_dir).backbone
        facts["backbone_exists"] = backbone.is_file()
        if backbone.is_file():
            lines.append(f"{backbone} exists: used as it is")
        elif config.pretrain.patients > 0:
            lines.append(f"{backbone} absent: pretraining runs first on {config.pretrain.patients} patients")
        else:
            problem = ("weights = \"pretrained\" but this run has no pretraining output and pretrain.patients = 0: "
                       "set pretrain.patients > 0 (then `brain-audit pretrain`), or weights = \"imagenet\"")
            lines.append(problem)
            pf.problems.append(problem)


# ---------------------------------------------------------------- (c) devices

def _check_devices(config: RunConfig, pf: Preflight) -> dict[str, Any]:
    import tensorflow as tf

    from brain_audit.train.runtime import precision_for_devices

    lines = pf.sections.setdefault("devices", [])
    gpus = tf.config.list_physical_devices("GPU")
    names = [str(tf.config.experimental.get_device_details(g).get("device_name", g.name)) for g in gpus]
    replicas = len(gpus) if len(gpus) >= 2 else 1  # train.runtime.distribution_strategy mirrors over 2 or more
    precision = precision_for_devices()
    kind = "cpu" if not gpus else next((k for k in ("T4", "P100") if all(k in n for n in names)), "gpu")
    devices = {"gpus": names, "replicas": replicas, "precision": precision, "kind": kind}
    pf.facts["devices"] = devices
    lines.append(f"GPUs: {', '.join(names) if names else 'none (CPU only)'}; {replicas} replica(s); "
                 f"precision {precision}")
    for name, batch in (("pretrain", config.pretrain.batch_size), ("phase1", config.phase1.batch_size),
                        ("phase2", config.phase2.batch_size), ("phase4", config.phase4.batch_size)):
        per = batch / replicas
        lines.append(f"{name}: global batch {batch} = {per:g} per replica x {replicas}")
        if per != int(per) or per < 1:
            problem = f"`{name}.batch_size` must be a multiple of the {replicas} replicas. Got {batch} instead."
            pf.problems.append(problem)
    return devices


# ---------------------------------------------------------------- the plan's sizes

def _plan(config: RunConfig, data: dict[str, Any]) -> dict[str, float]:
    """Slices each stage handles, estimated from the image count and slices per patient."""
    images = float(data.get("images", 0) or 0)
    spp = float(data.get("slices_per_patient", RSNA_SLICES_PER_PATIENT))
    patients = images / spp if spp else 0.0
    audit = min(float(config.audit_patients), patients) * spp
    pretrain = min(float(config.pretrain.patients), max(0.0, patients - config.audit_patients)) * spp
    pool = max(0.0, images - audit - pretrain)

    def cohort(plan: Any, within: float) -> float:
        if plan.cohort_size == 0:
            return within
        n = plan.cohort_size * (spp if plan.cohort_unit == "patient" else 1)
        return min(float(n), within)

    phase2 = cohort(config.phase2, pool)
    phase1 = cohort(config.phase1, phase2)  # nested inside Phase 2's cohort
    # 2.5-D: a sampled slice brings up to 2 context neighbours not in the cohort (whole patients bring none)
    neighbours = min(pool, phase2 * (1 + 2 * config.context)) - phase2 if config.phase2.cohort_unit == "slice" else 0.0
    v = config.validation_fraction
    # Phase 5: whole series of its patients, cached besides the phase cohorts (at most the pool; an upper bound,
    # since some of their slices may be in Phase 2's cohort already)
    s = config.phase5
    phase5 = (min(s.patients * spp, pool * (1 - v)) + min(s.validation_patients * spp, pool * v)) if s.enabled else 0.0
    return {"slices_per_patient": spp, "audit": audit, "pretrain": pretrain, "pool": pool, "phase2": phase2,
            "phase1": phase1, "phase5": phase5, "context": neighbours,
            "cached": min(pool, phase2 + phase5) + neighbours + audit + pretrain,
            "train1": phase1 * (1 - v), "val1": phase1 * v,
            "train2": phase2 * (1 - v), "val2": phase2 * v, "test": float(data.get("test_files", 0) or 0)}


# ---------------------------------------------------------------- (d) space

def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_space(config: RunConfig, pf: Preflight, plan: dict[str, float]) -> None:
    lines = pf.sections.setdefault("space", [])
    where = _nearest_existing(Path(config.out_dir))
    free = shutil.disk_usage(where).free
    slice_bytes = config.image_size**2 * 2  # int16, dataset.cache
    cache = plan["cached"] * slice_bytes
    n_models = 2 * (2 + len(config.phase4.dropouts) + (1 if config.pretrain.patients else 0))  # model + checkpoint
    # Phase 5: float16 embeddings of its series (1280 per slice); its GRU model is small
    embeddings = plan["phase5"] * 1280 * 2
    index = float(pf.facts["data"].get("images", 0) or 0) * INDEX_BYTES_PER_IMAGE
    need = cache + index + n_models * MODEL_BYTES + REPORT_BYTES + embeddings
    pf.facts["space"] = {"folder": str(where), "free_bytes": int(free), "planned_bytes": int(need),
                         "cache_bytes": int(cache), "cached_slices": int(round(plan["cached"]))}
    lines.append(f"free where the run writes ({where}): {free / _GB:.1f} GB")
    lines.append(f"HU cache: {plan['cached']:,.0f} slices x {config.image_size}^2 px x 2 bytes = {cache / _GB:.2f} GB "
                 f"(Phase 2 cohort {plan['phase2']:,.0f}, audit {plan['audit']:,.0f}, pretrain {plan['pretrain']:,.0f}"
                 + (f", Phase 5's whole series {plan['phase5']:,.0f}" if plan["phase5"] else "")
                 + f" slices at {plan['slices_per_patient']:.1f} per patient"
                 + (f", at most {plan['context']:,.0f} context neighbours" if plan["context"] else "") + ")")
    lines.append(f"index, {n_models} models and checkpoints, report: {(need - cache) / _GB:.2f} GB (assumed sizes)")
    if need > free:
        problem = (f"not enough space in {where}: the plan needs about {need / _GB:.1f} GB, {free / _GB:.1f} GB free; "
                   "lower image_size or the cohort sizes, or free space")
        lines.append(problem)
        pf.problems.append(problem)


# ---------------------------------------------------------------- (e) time

def _duration(seconds: float) -> str:
    """``"< 1 min"``, ``"42 min"`` or ``"3.4 h"``."""
    if seconds < 60:
        return "< 1 min"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def training_images_per_second(kind: str, image_size: int, replicas: int = 1) -> float:
    """Assumed training throughput (images / s) on ``kind`` devices at ``image_size`` px:
    :data:`TRAIN_IMAGES_PER_S_128` scaled by (128 / image_size)^2, times the replicas."""
    return TRAIN_IMAGES_PER_S_128[kind] * (128.0 / image_size) ** 2 * max(1, replicas)


def _check_time(config: RunConfig, pf: Preflight, data: dict[str, Any], plan: dict[str, float],
                devices: dict[str, Any], budget_hours: float) -> None:
    lines = pf.sections.setdefault("time", [])
    if data.get("root") is None:
        lines.append("no estimate without the data")
        pf.facts["time"] = {}
        return
    rate = training_images_per_second(devices["kind"], config.image_size, devices["replicas"])
    infer = rate * INFERENCE_SPEEDUP
    workers = max(1, config.workers)
    stages: dict[str, float] = {}
    if data.get("index"):
        stages["header index"] = 0.0
    else:
        stages["header index"] = data["images"] * data["header_seconds"] / workers
    stages["HU cache"] = plan["cached"] * data["pixel_seconds"] / workers
    p = config.pretrain
    if p.patients and config.weights == "pretrained" and not pf.facts["weights"].get("backbone_exists"):
        stages["pretraining"] = ((p.warmup_epochs * p.warmup_slices + p.epochs * plan["pretrain"]
                                  * (1 - p.validation_fraction)) / rate
                                 + p.epochs * plan["pretrain"] * p.validation_fraction / infer)
    for n, train, val, plan_n in ((1, "train1", "val1", config.phase1), (2, "train2", "val2", config.phase2)):
        stages[f"phase {n}"] = plan_n.epochs * (plan[train] / rate + plan[val] / infer)
    a = config.phase3
    stages["phase 3"] = (plan["val2"] / infer + (min(a.max_slices, plan["val2"]) + min(a.max_slices, plan["train2"])
                                                  + a.sanity_slices) / rate)
    c = config.phase4
    stages["phase 4"] = len(c.dropouts) * c.epochs * (plan["train2"] / rate + plan["val2"] / infer)
    if config.phase5.enabled:  # embeddings of its series (one inference pass); the GRU's epochs are cheap beside it
        stages["phase 5"] = plan["phase5"] / infer
    stages["audit"] = plan["audit"] / infer + min(plan["audit"], 2 * a.max_errors + a.correct_slices) / rate
    if plan["test"]:
        stages["test predictions"] = plan["test"] * data["pixel_seconds"] / workers + plan["test"] / infer
    total = sum(stages.values())
    pf.facts["time"] = {"stages_seconds": stages, "total_seconds": total, "budget_hours": budget_hours,
                        "train_images_per_second": rate, "inference_images_per_second": infer,
                        "throughput": "assumed, not measured here"}
    lines.append(f"throughput {rate:,.0f} training / {infer:,.0f} predicted images per s on {devices['kind']} at "
                 f"{config.image_size} px x {devices['replicas']} replica(s) (assumed, not measured here); headers and "
                 f"slices timed here, {workers} worker(s)")
    for name, seconds in stages.items():
        said = "reused" if name == "header index" and data.get("index") else _duration(seconds)
        lines.append(f"{name}: {said}")
    lines.append(f"total: {_duration(total)} of a {budget_hours:g} h budget")
    if total > budget_hours * 3600:
        problem = (f"the plan needs about {total / 3600:.1f} h, more than the {budget_hours:g} h budget: lower the "
                   "cohort sizes, epochs or image_size, reuse a prepared index (`prepared`), or split the run "
                   "over sessions (every stage resumes)")
        lines.append(problem)
        pf.problems.append(problem)

