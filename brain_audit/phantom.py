"""Synthetic head-CT phantom cohorts in the RSNA 2019 layout, with ground truth.

The RSNA data cannot be shipped, so brain_audit brings its own: axial non-contrast head-CT
slices in Hounsfield units with the five RSNA hemorrhage subtypes, hemorrhage mimics and
devices, and plantable Clever-Hans shortcuts, written exactly as the Kaggle dataset is laid
out. Because the generator knows where every lesion and device is, later stages (Grad-CAM,
the audit) can be scored against truth.

Layout written by :func:`generate_cohort` under ``out_dir``::

    stage_2_train/ID_<9 hex>.dcm      one slice per file (brain_audit.dicom.encode_slice)
    stage_2_train.csv                 ID,Label; six rows per image (rsna.LABEL_COLUMNS order)
    phantom_truth/ID_<9 hex>.npz      bool (H, W) masks: head, skull, intracranial, one per
                                      subtype (rsna.SUBTYPES), one per mimic (MIMICS), coil_streaks
    phantom_manifest.json             generator version, every parameter, per-image records,
                                      corrupt files and what is wrong with them

Realism, matched to the HU measured on one real 512 x 512 head-CT slice (issue 3) and to the
literature (``tests/test_phantom.py`` checks the ranges): partial-volume blurred skull with
diploe (median ~750 HU, not a flat 1,500; p95 ~1,300), scalp with subcutaneous fat (median
about -30 HU), intracranial 12..43 HU at p5 / p95, air about -990 HU, noise ~5 HU, pixels
outside the reconstruction circle stored as -3,024 HU padding (read back as air by
:func:`brain_audit.dicom.read_hu`), a curved head holder of ~280 HU under the occiput.
Lesions: epidural lens 62-85 HU, acute subdural crescent 55-78 HU (chronic 14-28 HU),
intraparenchymal clot 62-82 HU with a 14-21 HU edema rim, intraventricular layering
55-75 HU, subarachnoid blood 60-76 HU in sulci and the interhemispheric fissure (lower
after partial volume). See :mod:`brain_audit.phantom_anatomy` for the model.

Study geometry: each patient has one study of ``slices_per_patient`` contiguous axial slices
(Image Position (Patient) z increasing by ``slice_spacing_mm``), centred on the lateral
ventricles and starting no lower than the basal cisterns; the default 20 slices at 5 mm cover
the head from the midbrain / basal cisterns to 7-15 mm below the vertex. RSNA studies hold
~30-40 slices from the skull base, but the skull base itself (orbits, sinuses, petrous bones,
posterior fossa) is not modelled (longer studies repeat the lowest modelled level), and 20
slices keep a 200-patient 512 x 512 cohort within about half a minute of CPU per core on 2
cores (``benchmarks/bench_phantom.py``).

Mimic probabilities are **per image**: ``mimic_probabilities[m] = (p_given_bleed,
p_given_no_bleed)`` is the chance that image shows mimic ``m`` given that the image is
labelled ``any`` = 1 or 0 (the RSNA labels and the CNN are per image, so that is where a
shortcut acts). The mimic's geometry is fixed per patient, so the slices that show it show
the same object. The defaults are equal for bleed and no bleed: a clean cohort.

Determinism: patient ``i`` is drawn from ``numpy.random.SeedSequence(seed, spawn_key=(i, 0,
0))`` and slice ``k`` of it adds noise from ``spawn_key=(i, 1, k)``, so the same config gives
byte-identical files whatever the number of worker processes.

Reruns: :func:`generate_cohort` refuses a folder that already holds phantom output unless it
is a complete cohort of the very same parameters and version, which it then leaves untouched
(``summary["skipped"]`` is True). Delete the folder, or choose another, to regenerate.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import __version__
from . import rsna
from .errors import BrainAuditError, ConfigError
from .phantom_anatomy import MIMICS, PAD_HU_FILE, TRUTH_EXTRA, build_patient, padding_mask, render

__all__ = [
    "MIMICS",
    "TRUTH_KEYS",
    "GENERATOR_VERSION",
    "DEFAULT_SUBTYPE_MIX",
    "DEFAULT_MIMIC_PROBABILITIES",
    "TRUTH_DIR",
    "MANIFEST",
    "PhantomConfig",
    "parse_shortcut",
    "generate_cohort",
    "load_truth",
    "load_manifest",
    "render_slice",
    "render_image",
    "render_counterfactual",
    "preview",
]

#: Version of the generator written to the manifest; bumped when the same config would
#: give different images.
GENERATOR_VERSION = "1.0"

TRUTH_DIR = "phantom_truth"
MANIFEST = "phantom_manifest.json"

#: Keys of every truth file, in file order.
TRUTH_KEYS: tuple[str, ...] = ("head", "skull", "intracranial") + rsna.SUBTYPES + MIMICS + TRUTH_EXTRA

#: Share of each subtype among lesions, after the RSNA 2019 training set (subdural most
#: frequent, epidural rare).
DEFAULT_SUBTYPE_MIX: dict[str, float] = {
    "epidural": 0.05,
    "intraparenchymal": 0.25,
    "intraventricular": 0.16,
    "subarachnoid": 0.22,
    "subdural": 0.32,
}

#: Per-image probability of each mimic given a bleed / no bleed: equal, i.e. no shortcut.
#: Physiologic calcifications are common at their levels; devices are rare.
DEFAULT_MIMIC_PROBABILITIES: dict[str, tuple[float, float]] = {
    "choroid_plexus_calcification": (0.15, 0.15),
    "pineal_calcification": (0.10, 0.10),
    "falx_calcification": (0.05, 0.05),
    "coil": (0.01, 0.01),
    "catheter": (0.01, 0.01),
}

_CORRUPT_KINDS = ("truncated", "header_only")


def _fail(name: str, rule: str, value: Any) -> ConfigError:
    return ConfigError(f"`{name}` must be {rule}. Got {value!r} instead.")


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of one phantom cohort (everything the files depend on).

    Attributes:
        patients: number of patients (one study, one series each); >= 1.
        slices_per_patient: contiguous axial slices per study; 1..128.
        size: rows = columns of every slice, pixels; 64..1024.
        pixel_spacing_mm: in-plane spacing; ``None`` gives a 250 mm field of view
            (0.488 mm at 512, RSNA-typical). The field of view must be 200-400 mm.
        slice_spacing_mm: distance between slices (= slice thickness), mm; (0, 20].
        prevalence: share of patients with a bleed, [0, 1].
        subtype_mix: subtype -> weight of that subtype among a bleeding patient's lesions
            (1-3 distinct subtypes per bleeding patient); keys from ``rsna.SUBTYPES``,
            missing keys weigh 0 once any key is given.
        chronic_subdural_fraction: share of subdural hematomas that are chronic (14-28 HU
            instead of 55-78 HU), [0, 1].
        mimic_probabilities: mimic -> (p_given_bleed, p_given_no_bleed), per image; keys
            from :data:`MIMICS`, missing keys take :data:`DEFAULT_MIMIC_PROBABILITIES`.
        defect_fraction: share of slices written with the RSNA 12-bit wrap defect, [0, 1].
        corrupt_files: extra unreadable files (alternately truncated and header-only).
        seed: non-negative integer.
    """

    patients: int = 20
    slices_per_patient: int = 20
    size: int = 512
    pixel_spacing_mm: float | None = None
    slice_spacing_mm: float = 5.0
    prevalence: float = 0.4
    subtype_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SUBTYPE_MIX))
    chronic_subdural_fraction: float = 0.15
    mimic_probabilities: Mapping[str, Sequence[float]] = field(
        default_factory=lambda: dict(DEFAULT_MIMIC_PROBABILITIES))
    defect_fraction: float = 0.02
    corrupt_files: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        for name, lo, hi in (("patients", 1, None), ("slices_per_patient", 1, 128), ("size", 64, 1024),
                             ("corrupt_files", 0, None), ("seed", 0, None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
                rule = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
                raise _fail(name, rule, v)
            set_(name, int(v))
        spacing = self.pixel_spacing_mm
        if spacing is None:
            spacing = 250.0 / self.size
        if not isinstance(spacing, (int, float)) or not 200.0 <= spacing * self.size <= 400.0:
            raise _fail("pixel_spacing_mm", f"such that size x spacing is 200-400 mm (size {self.size})",
                        self.pixel_spacing_mm)
        set_("pixel_spacing_mm", float(spacing))
        if not isinstance(self.slice_spacing_mm, (int, float)) or not 0 < self.slice_spacing_mm <= 20:
            raise _fail("slice_spacing_mm", "in (0, 20]", self.slice_spacing_mm)
        set_("slice_spacing_mm", float(self.slice_spacing_mm))
        for name in ("prevalence", "chronic_subdural_fraction", "defect_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise _fail(name, "in [0, 1]", v)
            set_(name, float(v))
        mix = dict(self.subtype_mix)
        unknown = sorted(set(mix) - set(rsna.SUBTYPES))
        if unknown:
            raise _fail("subtype_mix", f"keyed by {rsna.SUBTYPES}", unknown[0])
        mix = {s: mix.get(s, 0.0) for s in rsna.SUBTYPES}
        if any(not isinstance(v, (int, float)) or v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise _fail("subtype_mix", "non-negative weights with a positive sum", dict(self.subtype_mix))
        total = float(sum(mix.values()))
        set_("subtype_mix", {s: float(v) / total for s, v in mix.items()})
        probs = dict(self.mimic_probabilities)
        unknown = sorted(set(probs) - set(MIMICS))
        if unknown:
            raise _fail("mimic_probabilities", f"keyed by {MIMICS}", unknown[0])
        resolved = {}
        for m in MIMICS:
            pair = probs.get(m, DEFAULT_MIMIC_PROBABILITIES[m])
            try:
                pb, pn = (float(x) for x in pair)
            except (TypeError, ValueError):
                raise _fail(f"mimic_probabilities[{m!r}]", "a pair (p_given_bleed, p_given_no_bleed)", pair) from None
            if not (0.0 <= pb <= 1.0 and 0.0 <= pn <= 1.0):
                raise _fail(f"mimic_probabilities[{m!r}]", "two probabilities in [0, 1]", pair)
            resolved[m] = (pb, pn)
        set_("mimic_probabilities", resolved)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (mimic pairs as lists); ``PhantomConfig(**d)`` rebuilds the config."""
        d = dataclasses.asdict(self)
        d["subtype_mix"] = dict(self.subtype_mix)
        d["mimic_probabilities"] = {m: list(v) for m, v in self.mimic_probabilities.items()}
        return d

    @property
    def images(self) -> int:
        """Number of readable images (patients x slices)."""
        return self.patients * self.slices_per_patient


def parse_shortcut(text: str) -> tuple[str, tuple[float, float]]:
    """Parse ``"coil:0.3,0.02"`` into ``("coil", (0.3, 0.02))`` (mimic: p_given_bleed, p_given_no_bleed)."""
    name, sep, rest = text.partition(":")
    parts = rest.split(",")
    if not sep or name not in MIMICS or len(parts) != 2:
        raise _fail("shortcut", f"'<mimic>:<p_given_bleed>,<p_given_no_bleed>' with a mimic of {MIMICS}", text)
    try:
        pb, pn = float(parts[0]), float(parts[1])
    except ValueError:
        raise _fail("shortcut", "two numbers after the colon", text) from None
    if not (0.0 <= pb <= 1.0 and 0.0 <= pn <= 1.0):
        raise _fail("shortcut", "two probabilities in [0, 1]", text)
    return name, (pb, pn)


# ----------------------------------------------------------------------------- ids and files
def _hex(n: int, *parts: Any) -> str:
    text = "brain_audit.phantom:" + ":".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _cohort_ids(cfg: PhantomConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Pseudonymous RSNA-style IDs for every patient / image, and for the corrupt files (unique)."""
    used: set[str] = set()

    def unique(n: int, *parts: Any) -> str:
        attempt = 0
        while True:
            h = "ID_" + _hex(n, *parts, attempt)
            if h not in used:
                used.add(h)
                return h
            attempt += 1

    patients = []
    for i in range(cfg.patients):
        patients.append({
            "patient_id": unique(8, cfg.seed, "patient", i),
            "study_instance_uid": unique(10, cfg.seed, "study", i),
            "series_instance_uid": unique(10, cfg.seed, "series", i),
            "image_ids": [unique(9, cfg.seed, "image", i, k) for k in range(cfg.slices_per_patient)],
        })
    corrupt = [unique(9, cfg.seed, "corrupt", j) for j in range(cfg.corrupt_files)]
    return patients, corrupt


def _npz_bytes(masks: Mapping[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz`` (zip of ``.npy``, raw deflate level 1, fixed timestamps) of bool masks.

    ``numpy.savez_compressed`` stamps the current time into the zip, so its bytes change run to
    run; this writer gives byte-identical files and reuses the compressed form of an empty mask.
    """
    local, central = io.BytesIO(), io.BytesIO()
    for key in TRUTH_KEYS:
        crc, size, data = _compressed_npy(np.ascontiguousarray(masks[key], dtype=bool))
        name = f"{key}.npy".encode()
        offset = local.tell()
        # local file header: version 20, no flags, deflate, time 00:00 date 1980-01-01
        local.write(b"PK\x03\x04" + (20).to_bytes(2, "little") + b"\x00\x00" + (8).to_bytes(2, "little")
                    + b"\x00\x00" + (33).to_bytes(2, "little") + crc.to_bytes(4, "little")
                    + len(data).to_bytes(4, "little") + size.to_bytes(4, "little")
                    + len(name).to_bytes(2, "little") + b"\x00\x00" + name)
        local.write(data)
        central.write(b"PK\x01\x02" + (20).to_bytes(2, "little") + (20).to_bytes(2, "little") + b"\x00\x00"
                      + (8).to_bytes(2, "little") + b"\x00\x00" + (33).to_bytes(2, "little")
                      + crc.to_bytes(4, "little") + len(data).to_bytes(4, "little") + size.to_bytes(4, "little")
                      + len(name).to_bytes(2, "little") + b"\x00\x00" * 3 + b"\x00\x00\x00\x00\x00\x00"
                      + offset.to_bytes(4, "little") + name)
    cd = central.getvalue()
    n = len(TRUTH_KEYS)
    end = (b"PK\x05\x06" + b"\x00\x00\x00\x00" + n.to_bytes(2, "little") + n.to_bytes(2, "little")
           + len(cd).to_bytes(4, "little") + local.tell().to_bytes(4, "little") + b"\x00\x00")
    return local.getvalue() + cd + end


@functools.lru_cache(maxsize=8)
def _empty_npy(shape: tuple[int, int]) -> tuple[int, int, bytes]:
    return _deflate_npy(np.zeros(shape, bool))


def _compressed_npy(arr: np.ndarray) -> tuple[int, int, bytes]:
    if not arr.any():
        return _empty_npy(arr.shape)
    return _deflate_npy(arr)


def _deflate_npy(arr: np.ndarray) -> tuple[int, int, bytes]:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(1, 0), allow_pickle=False)
    raw = buf.getvalue()
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    data = comp.compress(raw) + comp.flush()
    return zlib.crc32(raw), len(raw), data


# ----------------------------------------------------------------------------- generation
def _write_patient(out_dir: str, cfg: PhantomConfig, index: int, ids: Mapping[str, Any]) -> dict[str, Any]:
    """Render, encode and write every slice of patient ``index``; return its manifest records."""
    from .dicom import encode_slice
    from .provenance import atomic_write_bytes

    pat = build_patient(cfg, index)
    root = Path(out_dir)
    records = []
    for k in range(cfg.slices_per_patient):
        hu, masks, info = render(pat, k, cfg.mimic_probabilities)
        image_id = ids["image_ids"][k]
        z = round(float(pat.p["z_table0"] + k * cfg.slice_spacing_mm), 3)
        file_hu = hu.copy()
        np.copyto(file_hu, np.float32(PAD_HU_FILE), where=padding_mask(pat))
        defect = bool(pat.defect[k])
        data = encode_slice(
            file_hu, sop_instance_uid=image_id, patient_id=ids["patient_id"],
            study_instance_uid=ids["study_instance_uid"], series_instance_uid=ids["series_instance_uid"],
            z=z, pixel_spacing=(cfg.pixel_spacing_mm, cfg.pixel_spacing_mm), slice_thickness=cfg.slice_spacing_mm,
            wrap_defect=defect)
        atomic_write_bytes(rsna.image_path(root, image_id), data)
        atomic_write_bytes(root / TRUTH_DIR / f"{image_id}.npz", _npz_bytes(masks))
        records.append({
            "image_id": image_id, "patient_id": ids["patient_id"], "patient_index": index, "slice_index": k,
            "study_instance_uid": ids["study_instance_uid"], "series_instance_uid": ids["series_instance_uid"],
            "z": z, "z_anatomical_mm": round(float(info["z_anat"]), 3), "labels": info["labels"],
            "mimics": info["mimics"], "defect": defect,
        })
    lesions = [{"subtype": les.subtype, "hu": round(les.hu, 1),
                "z_center": round(float(pat.p["z_table0"] + (les.zc - pat.z_anat[0])), 3),
                "z_extent_mm": round(2 * les.hz, 1), "chronic": bool(les.params.get("chronic", False))}
               for les in pat.lesions]
    patient = {"patient_id": ids["patient_id"], "patient_index": index,
               "study_instance_uid": ids["study_instance_uid"], "series_instance_uid": ids["series_instance_uid"],
               "bleed": any(r["labels"]["any"] for r in records), "lesions": lesions}
    return {"patient": patient, "images": records}


def _corrupt_file(cfg: PhantomConfig, j: int, image_id: str, ids: Mapping[str, Any], z: float) -> tuple[bytes, dict]:
    from .dicom import encode_slice

    kind = _CORRUPT_KINDS[j % len(_CORRUPT_KINDS)]
    blank = np.full((cfg.size, cfg.size), -1024.0, np.float32)
    data = encode_slice(blank, sop_instance_uid=image_id, patient_id=ids["patient_id"],
                        study_instance_uid=ids["study_instance_uid"],
                        series_instance_uid=ids["series_instance_uid"], z=z,
                        pixel_spacing=(cfg.pixel_spacing_mm, cfg.pixel_spacing_mm),
                        slice_thickness=cfg.slice_spacing_mm)
    pixel_tag = data.rindex(b"\xe0\x7f\x10\x00")
    if kind == "truncated":
        cut = pixel_tag + 12 + cfg.size * cfg.size  # half of the pixel data
        what = f"(7FE0,0010) Pixel Data cut after {cfg.size * cfg.size} of {2 * cfg.size * cfg.size} bytes"
    else:
        cut = pixel_tag
        what = "header only: the file ends before (7FE0,0010) Pixel Data"
    return data[:cut], {"image_id": image_id, "patient_id": ids["patient_id"], "kind": kind, "what": what,
                        "z": z, "labels": {c: 0 for c in rsna.LABEL_COLUMNS}}


def _existing_output(root: Path) -> list[Path]:
    names = (rsna.TRAIN_DIR, rsna.TRAIN_CSV, TRUTH_DIR, MANIFEST)
    return [root / n for n in names if (root / n).exists()]


def generate_cohort(out_dir: str | Path, config: PhantomConfig, *, workers: int = 2,
                    progress: bool = True) -> dict[str, Any]:
    """Write a phantom cohort in the RSNA 2019 layout (see the module docstring).

    Args:
        out_dir: folder to write into (created); must not hold other phantom output.
        config: the cohort's parameters.
        workers: processes rendering patients in parallel (``1``: in this process). The
            files do not depend on it.
        progress: show a tqdm bar over patients.

    Returns:
        Summary: ``out_dir``, ``images`` (readable), ``corrupt_files``, ``patients``,
        ``bleed_patients``, ``positive_images`` (``any`` = 1), ``defect_images``,
        ``label_csv``, ``manifest``, ``train_dir``, ``truth_dir``, ``seconds``,
        ``slices_per_second``, ``skipped`` (True when the folder already held this cohort).

    Raises:
        ConfigError: ``out_dir`` holds phantom output of other parameters, or an unfinished
            run; or ``workers`` < 1.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise _fail("workers", "an integer >= 1", workers)
    root = Path(out_dir)
    params = config.to_dict()
    summary_paths = {
        "out_dir": str(root), "train_dir": str(root / rsna.TRAIN_DIR), "label_csv": str(root / rsna.TRAIN_CSV),
        "truth_dir": str(root / TRUTH_DIR), "manifest": str(root / MANIFEST)}
    existing = _existing_output(root)
    if existing:
        done = _complete_cohort(root, params)
        if done is None:
            raise ConfigError(
                f"{root}: already holds phantom output ({', '.join(p.name for p in existing)}) that is not a "
                "complete cohort of these parameters (other parameters or an interrupted run); delete it or "
                "choose another folder.")
        return {**summary_paths, **done, "seconds": 0.0, "slices_per_second": None, "skipped": True}

    t0 = time.perf_counter()
    patients_ids, corrupt_ids = _cohort_ids(config)
    root.mkdir(parents=True, exist_ok=True)
    (root / rsna.TRAIN_DIR).mkdir(exist_ok=True)
    (root / TRUTH_DIR).mkdir(exist_ok=True)
    results: list[dict[str, Any] | None] = [None] * config.patients
    bar = _progress(config.patients, progress)
    try:
        if workers == 1 or config.patients == 1:
            for i in range(config.patients):
                results[i] = _write_patient(str(root), config, i, patients_ids[i])
                bar.update(1)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # safe beside TensorFlow / threads in the parent
            with ProcessPoolExecutor(max_workers=min(workers, config.patients), mp_context=ctx,
                                     initializer=_init_worker) as pool:
                futures = {pool.submit(_write_patient, str(root), config, i, patients_ids[i]): i
                           for i in range(config.patients)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(1)
    finally:
        bar.close()

    from .provenance import atomic_write_bytes, atomic_write_text, write_json

    images = [rec for res in results for rec in res["images"]]  # type: ignore[index]
    corrupt = []
    for j, image_id in enumerate(corrupt_ids):
        ids = patients_ids[j % config.patients]
        z0 = results[j % config.patients]["images"][0]["z"]  # type: ignore[index]
        data, rec = _corrupt_file(config, j, image_id, ids, round(z0 - (1 + j // config.patients)
                                                                  * config.slice_spacing_mm, 3))
        atomic_write_bytes(rsna.image_path(root, image_id), data)
        corrupt.append(rec)
    rows = ["ID,Label"]
    for rec in sorted(images + corrupt, key=lambda r: r["image_id"]):
        rows.extend(f"{rec['image_id']}_{c},{rec['labels'][c]}" for c in rsna.LABEL_COLUMNS)
    atomic_write_text(root / rsna.TRAIN_CSV, "\n".join(rows) + "\n")
    counts = {
        "images": len(images),
        "corrupt_files": len(corrupt),
        "patients": config.patients,
        "bleed_patients": sum(r["patient"]["bleed"] for r in results),  # type: ignore[index]
        "positive_images": sum(r["labels"]["any"] for r in images),
        "defect_images": sum(r["defect"] for r in images),
    }
    manifest = {
        "generator": {"name": "brain_audit.phantom", "version": GENERATOR_VERSION, "package_version": __version__},
        "seed": config.seed,
        "parameters": params,
        "layout": {"train_dir": rsna.TRAIN_DIR, "label_csv": rsna.TRAIN_CSV, "truth_dir": TRUTH_DIR,
                   "truth_keys": list(TRUTH_KEYS), "label_columns": list(rsna.LABEL_COLUMNS)},
        "counts": counts,
        "patients": [r["patient"] for r in results],  # type: ignore[index]
        "images": images,
        "corrupt": corrupt,
        "complete": True,
    }
    write_json(root / MANIFEST, manifest)
    seconds = time.perf_counter() - t0
    return {**summary_paths, **counts, "seconds": seconds, "slices_per_second": len(images) / max(seconds, 1e-9),
            "skipped": False}


def _init_worker() -> None:
    """One OpenCV thread per worker process: the processes are the parallelism."""
    import cv2

    cv2.setNumThreads(1)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="phantom", unit="patient", disable=not enabled)


def _complete_cohort(root: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """Counts of a complete cohort of ``params`` in ``root``, or None."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (not manifest.get("complete") or manifest.get("parameters") != params
            or manifest.get("generator", {}).get("version") != GENERATOR_VERSION):
        return None
    for rec in manifest["images"]:
        if not (rsna.image_path(root, rec["image_id"]).is_file()
                and (root / TRUTH_DIR / f"{rec['image_id']}.npz").is_file()):
            return None
    return dict(manifest["counts"])


# ----------------------------------------------------------------------------- reading back
def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed ``phantom_manifest.json`` of a cohort (cached while the file is unchanged)."""
    path = Path(out_dir) / MANIFEST
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BrainAuditError(f"{path}: no phantom manifest ({exc.strerror}); is this a phantom cohort?") from exc
    return _load_manifest(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_manifest(path: str, _mtime: int, _size: int) -> dict[str, Any]:
    manifest = json.loads(Path(path).read_text())
    manifest["_by_id"] = {rec["image_id"]: rec for rec in manifest["images"]}
    return manifest


def load_truth(out_dir: str | Path, image_id: str) -> dict[str, np.ndarray]:
    """Ground-truth masks of one image: bool (H, W) per key of :data:`TRUTH_KEYS`.

    Raises:
        BrainAuditError: the truth file is missing (e.g. a corrupt file, which has none).
    """
    path = Path(out_dir) / TRUTH_DIR / f"{image_id}.npz"
    if not path.is_file():
        raise BrainAuditError(f"{path.name}: no phantom truth for {image_id} in {path.parent}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=4)
def _patient(config: PhantomConfig, index: int) -> Any:
    return build_patient(config, index)


def render_slice(config: PhantomConfig, patient_index: int, slice_index: int,
                 mimics: Mapping[str, bool] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one slice of a cohort from its parameters, optionally forcing mimics on or off.

    Args:
        config: the cohort's parameters.
        patient_index, slice_index: 0-based.
        mimics: mimic name -> present; unnamed mimics keep the cohort's own draw.

    Returns:
        ``(hu, truth)``: float32 (H, W) integer-valued HU in [-1024, 3071] (padding outside the
        reconstruction circle as -1024, i.e. as :func:`brain_audit.dicom.read_hu` returns it),
        and the bool (H, W) truth masks of :data:`TRUTH_KEYS`. Without ``mimics`` this equals
        ``read_hu`` of the written file (files with the wrap defect: clipped to [-1000, 3095]).
    """
    if not 0 <= patient_index < config.patients:
        raise _fail("patient_index", f"in [0, {config.patients - 1}]", patient_index)
    if not 0 <= slice_index < config.slices_per_patient:
        raise _fail("slice_index", f"in [0, {config.slices_per_patient - 1}]", slice_index)
    for m in mimics or {}:
        if m not in MIMICS:
            raise _fail("mimic", f"one of {MIMICS}", m)
    hu, masks, _ = render(_patient(config, patient_index), slice_index, config.mimic_probabilities, mimics)
    return hu, masks


def _record(out_dir: str | Path, image_id: str) -> tuple[PhantomConfig, dict[str, Any]]:
    manifest = load_manifest(out_dir)
    rec = manifest["_by_id"].get(image_id)
    if rec is None:
        raise BrainAuditError(f"{image_id}: not a readable image of the phantom cohort in {out_dir}")
    return PhantomConfig(**manifest["parameters"]), rec


def render_image(out_dir: str | Path, image_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Re-render a written image from its cohort's manifest (HU and truth, as :func:`render_slice`)."""
    cfg, rec = _record(out_dir, image_id)
    return render_slice(cfg, rec["patient_index"], rec["slice_index"])


def render_counterfactual(out_dir: str | Path, image_id: str, mimic: str,
                          present: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The same slice with ``mimic`` added (``present=True``) or removed, for intervention tests.

    Anatomy, lesions, other mimics and noise are those of the written image; the HU differ
    from the original only inside the mimic's truth mask (the mask of whichever of the two
    renders shows it), plus ``coil_streaks`` for the coil.

    Returns:
        ``(hu, truth)`` as :func:`render_slice`.
    """
    if mimic not in MIMICS:
        raise _fail("mimic", f"one of {MIMICS}", mimic)
    cfg, rec = _record(out_dir, image_id)
    return render_slice(cfg, rec["patient_index"], rec["slice_index"], {mimic: bool(present)})


# ----------------------------------------------------------------------------- preview
_OUTLINE = {"epidural": "red", "subdural": "gold", "intraparenchymal": "magenta",
            "intraventricular": "cyan", "subarachnoid": "lime"}


def _pick_preview(manifest: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Images showing each subtype, each mimic, then negatives: a deterministic, varied choice."""
    images = manifest["images"]
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()

    def take(pred) -> None:
        hits = [r for r in images if pred(r) and r["image_id"] not in seen]
        if hits and len(chosen) < n:
            r = hits[len(hits) // 2]
            chosen.append(r)
            seen.add(r["image_id"])

    for s in rsna.SUBTYPES:
        take(lambda r, s=s: r["labels"][s] == 1 and sum(r["labels"][t] for t in rsna.SUBTYPES) == 1)
    for s in rsna.SUBTYPES:
        take(lambda r, s=s: r["labels"][s] == 1)
    for m in MIMICS:
        take(lambda r, m=m: m in r["mimics"])
    take(lambda r: sum(r["labels"][t] for t in rsna.SUBTYPES) > 1)
    frac = [0.2, 0.5, 0.8, 0.35, 0.65, 0.1, 0.9]
    k = max(1, len(images) and images[-1]["slice_index"] + 1)
    for f in frac:
        take(lambda r, f=f: r["labels"]["any"] == 0 and r["slice_index"] == int(f * (k - 1)))
    for r in images:
        if len(chosen) >= n:
            break
        if r["image_id"] not in seen:
            chosen.append(r)
            seen.add(r["image_id"])
    return chosen[:n]


def preview(out_dir: str | Path, out_png: str | Path | None = None, n: int = 12) -> Path:
    """A grid of ``n`` slices of a cohort in the brain, subdural and bone windows, lesions outlined.

    The slices are read back from the DICOM files (:func:`brain_audit.dicom.read_hu`); lesion
    outlines come from the truth masks (colours per subtype), mimic outlines in white dashes.

    Returns:
        Path of the PNG (default ``out_dir/phantom_preview.png``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _fail("n", "an integer >= 1", n)
    from .dicom import read_hu
    from .figures import _pyplot, save_figure
    from .windowing import BSB, window

    root = Path(out_dir)
    out_png = Path(out_png) if out_png is not None else root / "phantom_preview.png"
    manifest = load_manifest(root)
    chosen = _pick_preview(manifest, n)
    plt = _pyplot()
    per_row = 2
    rows = math.ceil(len(chosen) / per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3.0 * 3 * per_row, 3.25 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    names = ("brain", "subdural", "bone")
    for i, rec in enumerate(chosen):
        hu = read_hu(rsna.image_path(root, rec["image_id"]))
        truth = load_truth(root, rec["image_id"])
        found = [s for s in rsna.SUBTYPES if rec["labels"][s]]
        for j, ((c, w), name) in enumerate(zip(BSB, names, strict=True)):
            ax = axes[i // per_row][3 * (i % per_row) + j]
            ax.imshow(window(hu, c, w), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j > 0:
                for s in found:
                    ax.contour(truth[s], [0.5], colors=_OUTLINE[s], linewidths=0.7)
                for m in rec["mimics"]:
                    ax.contour(truth[m], [0.5], colors="white", linewidths=0.6, linestyles="dashed")
            if j == 0:
                title = ", ".join(found) if found else "no bleed"
                if rec["mimics"]:
                    title += " | " + ", ".join(m.replace("_calcification", " calc.") for m in rec["mimics"])
                ax.set_title(f"{rec['image_id']} z={rec['z']:.0f}\n{title}", fontsize=7, loc="left")
            else:
                ax.set_title(f"{name} W{w:.0f} L{c:.0f}" + ("  (outlines)" if j == 1 and found else ""),
                             fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.suptitle(f"brain_audit phantom, seed {manifest['seed']}. Outlines (subdural and bone windows): "
                 + ", ".join(f"{s} {c}" for s, c in _OUTLINE.items()) + "; mimics white dashed",
                 fontsize=8, y=0.997)
    return save_figure(fig, out_png, dpi=90)
