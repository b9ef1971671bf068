"""Writing a phantom cohort to disk in the RSNA 2019 layout, with truth and a manifest.

Layout written by :func:`generate_cohort` under ``out_dir``::

    stage_2_train/ID_<9 hex>.dcm      one slice per file (brain_audit.dicom.encode_slice)
    stage_2_train.csv                 ID,Label; six rows per image (rsna.LABEL_COLUMNS order)
    phantom_truth/ID_<9 hex>.npz      bool (H, W) masks, keys TRUTH_KEYS (brain_audit.dataset.masks format)
    phantom_manifest.json             generator version, every parameter, per-image records,
                                      corrupt files and what is wrong with them

With ``test_patients`` > 0, a held-out test split as Kaggle ships it (labels hidden)::

    stage_2_test/ID_<9 hex>.dcm       one slice per file, same rendering as the training files
    stage_2_sample_submission.csv     ID,Label; six rows per test image, every Label 0.5
    phantom_truth/ID_<9 hex>.npz      the test images' masks, as above
    phantom_truth/stage_2_test_labels.csv      the test labels (format of stage_2_train.csv)
    phantom_truth/stage_2_test_manifest.json   the test patients' and images' records

so the test truth lives only under ``phantom_truth/`` and a rehearsal can score a submission.

Study geometry: each patient has one study of ``slices_per_patient`` contiguous axial slices
(Image Position (Patient) z increasing by ``slice_spacing_mm``), centred on the lateral
ventricles and starting no lower than the basal cisterns; the default 20 slices at 5 mm cover
the head from the midbrain / basal cisterns to 7-15 mm below the vertex. RSNA studies hold
~30-40 slices from the skull base, but the skull base itself (orbits, sinuses, petrous bones,
posterior fossa) is not modelled: longer studies repeat the lowest modelled level. Corrupt files (truncated, header only) are listed in the label file,
as RSNA lists its unreadable image, but have no truth.

Mimic probabilities are per image: ``(p_given_bleed, p_given_no_bleed)`` is the chance that
an image labelled ``any`` = 1 or 0 shows the mimic (the labels and the CNN are per image, so
that is where a shortcut acts); the mimic's geometry is fixed per patient.

Determinism: patient ``i`` is drawn from ``numpy.random.SeedSequence(seed, spawn_key=(i, 0, 0))``
and slice ``k`` adds noise from ``spawn_key=(i, 1, k)``, so the same config gives byte-identical
files whatever the number of worker processes. Test patient ``j`` is patient ``patients + j`` of
the same seed (its own streams, IDs drawn after every training and corrupt ID), so the training
files do not depend on ``test_patients``. A folder that already holds phantom output is
refused unless it is a complete cohort of the same parameters and version, which is then left
untouched (``summary["skipped"]``).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brain_audit import __version__, rsna
from brain_audit.dataset.masks import mask_path
from brain_audit.dicom import encode_slice
from brain_audit.errors import ConfigError
from brain_audit.phantom.anatomy import PAD_HU_FILE, padding_mask
from brain_audit.phantom.config import _CORRUPT_KINDS, GENERATOR_VERSION, PhantomConfig, _fail
from brain_audit.phantom.render import build_patient, render
from brain_audit.phantom.truth import MANIFEST, TEST_LABELS, TEST_MANIFEST, TRUTH_DIR, TRUTH_KEYS, write_truth
from brain_audit.provenance import atomic_write_bytes, atomic_write_text, write_json

__all__ = ["generate_cohort"]


def _hex(n: int, *parts: Any) -> str:
    text = "brain_audit.phantom:" + ":".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _cohort_ids(cfg: PhantomConfig) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Pseudonymous RSNA-style IDs for every patient / image, the corrupt files and the test patients (unique)."""
    used: set[str] = set()

    def unique(n: int, *parts: Any) -> str:
        attempt = 0
        while True:
            h = "ID_" + _hex(n, *parts, attempt)
            if h not in used:
                used.add(h)
                return h
            attempt += 1

    def patient(prefix: str, i: int) -> dict[str, Any]:
        return {
            "patient_id": unique(8, cfg.seed, f"{prefix}patient", i),
            "study_instance_uid": unique(10, cfg.seed, f"{prefix}study", i),
            "series_instance_uid": unique(10, cfg.seed, f"{prefix}series", i),
            "image_ids": [unique(9, cfg.seed, f"{prefix}image", i, k) for k in range(cfg.slices_per_patient)],
        }

    patients = [patient("", i) for i in range(cfg.patients)]
    corrupt = [unique(9, cfg.seed, "corrupt", j) for j in range(cfg.corrupt_files)]
    test = [patient("test_", j) for j in range(cfg.test_patients)]  # drawn last: earlier IDs do not depend on it
    return patients, corrupt, test


def _write_patient(out_dir: str, cfg: PhantomConfig, index: int, ids: Mapping[str, Any],
                   folder: str = rsna.TRAIN_DIR) -> dict[str, Any]:
    """Render, encode and write every slice of patient ``index`` into ``folder``; return its manifest records."""
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
        atomic_write_bytes(rsna.image_path(root, image_id, folder), data)
        write_truth(root, image_id, masks)
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
    """The bytes of corrupt file ``j`` (alternately truncated and header only) and its manifest record."""
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


def _label_rows(records: list[dict[str, Any]], value: Any = None) -> str:
    """``ID,Label`` text, six rows per record in ``rsna.LABEL_COLUMNS`` order, sorted by image ID;
    the record's labels, or ``value`` for every row (a sample submission)."""
    rows = ["ID,Label"]
    for rec in sorted(records, key=lambda r: r["image_id"]):
        rows.extend(f"{rec['image_id']}_{c},{rec['labels'][c] if value is None else value}"
                    for c in rsna.LABEL_COLUMNS)
    return "\n".join(rows) + "\n"


def _existing_output(root: Path) -> list[Path]:
    names = (rsna.TRAIN_DIR, rsna.TRAIN_CSV, rsna.TEST_DIR, rsna.SAMPLE_SUBMISSION, TRUTH_DIR, MANIFEST)
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
        ``label_csv``, ``manifest``, ``train_dir``, ``truth_dir``, ``test_patients``,
        ``test_images``, ``test_dir``, ``sample_submission``, ``test_labels`` (under
        ``truth_dir``), ``seconds``, ``slices_per_second`` (training and test slices),
        ``skipped`` (True when the folder already held this cohort).

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
        "truth_dir": str(root / TRUTH_DIR), "manifest": str(root / MANIFEST),
        "test_dir": str(root / rsna.TEST_DIR), "sample_submission": str(root / rsna.SAMPLE_SUBMISSION),
        "test_labels": str(root / TRUTH_DIR / TEST_LABELS)}
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
    patients_ids, corrupt_ids, test_ids = _cohort_ids(config)
    # test patient j is patient `patients + j` of the seed, written to the test folder
    jobs = [(i, ids, rsna.TRAIN_DIR) for i, ids in enumerate(patients_ids)] + [
        (config.patients + j, ids, rsna.TEST_DIR) for j, ids in enumerate(test_ids)]
    root.mkdir(parents=True, exist_ok=True)
    (root / rsna.TRAIN_DIR).mkdir(exist_ok=True)
    (root / TRUTH_DIR).mkdir(exist_ok=True)
    if test_ids:
        (root / rsna.TEST_DIR).mkdir(exist_ok=True)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    bar = _progress(len(jobs), progress)
    try:
        if workers == 1 or len(jobs) == 1:
            for n, (i, ids, folder) in enumerate(jobs):
                results[n] = _write_patient(str(root), config, i, ids, folder)
                bar.update(1)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # safe beside TensorFlow / threads in the parent
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                     initializer=_init_worker) as pool:
                futures = {pool.submit(_write_patient, str(root), config, i, ids, folder): n
                           for n, (i, ids, folder) in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(1)
    finally:
        bar.close()

    test_results = results[config.patients:]
    results = results[:config.patients]
    images = [rec for res in results for rec in res["images"]]  # type: ignore[index]
    corrupt = []
    for j, image_id in enumerate(corrupt_ids):
        ids = patients_ids[j % config.patients]
        z0 = results[j % config.patients]["images"][0]["z"]  # type: ignore[index]
        data, rec = _corrupt_file(config, j, image_id, ids, round(z0 - (1 + j // config.patients)
                                                                  * config.slice_spacing_mm, 3))
        atomic_write_bytes(rsna.image_path(root, image_id), data)
        corrupt.append(rec)
    atomic_write_text(root / rsna.TRAIN_CSV, _label_rows(images + corrupt))
    test_images = [rec for res in test_results for rec in res["images"]]  # type: ignore[index]
    if test_images:
        atomic_write_text(root / TRUTH_DIR / TEST_LABELS, _label_rows(test_images))
        write_json(root / TRUTH_DIR / TEST_MANIFEST, {
            "counts": {"test_images": len(test_images), "test_patients": config.test_patients,
                       "bleed_patients": sum(r["patient"]["bleed"] for r in test_results),  # type: ignore[index]
                       "positive_images": sum(r["labels"]["any"] for r in test_images)},
            "patients": [r["patient"] for r in test_results],  # type: ignore[index]
            "images": test_images})
        atomic_write_text(root / rsna.SAMPLE_SUBMISSION, _label_rows(test_images, value="0.5"))
    counts = {
        "images": len(images),
        "corrupt_files": len(corrupt),
        "patients": config.patients,
        "bleed_patients": sum(r["patient"]["bleed"] for r in results),  # type: ignore[index]
        "positive_images": sum(r["labels"]["any"] for r in images),
        "defect_images": sum(r["defect"] for r in images),
        "test_patients": config.test_patients,
        "test_images": len(test_images),
    }
    manifest = {
        "generator": {"name": "brain_audit.phantom", "version": GENERATOR_VERSION, "package_version": __version__},
        "seed": config.seed,
        "parameters": params,
        "layout": {"train_dir": rsna.TRAIN_DIR, "label_csv": rsna.TRAIN_CSV, "truth_dir": TRUTH_DIR,
                   "truth_keys": list(TRUTH_KEYS), "label_columns": list(rsna.LABEL_COLUMNS),
                   "test_dir": rsna.TEST_DIR, "sample_submission": rsna.SAMPLE_SUBMISSION,
                   "test_labels": f"{TRUTH_DIR}/{TEST_LABELS}", "test_manifest": f"{TRUTH_DIR}/{TEST_MANIFEST}"},
        "counts": counts,
        "patients": [r["patient"] for r in results],  # type: ignore[index]
        "images": images,
        "corrupt": corrupt,
        "complete": True,
    }
    write_json(root / MANIFEST, manifest)
    seconds = time.perf_counter() - t0
    return {**summary_paths, **counts, "seconds": seconds,
            "slices_per_second": (len(images) + len(test_images)) / max(seconds, 1e-9),
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
    images = [(rec["image_id"], rsna.TRAIN_DIR) for rec in manifest["images"]]
    if params.get("test_patients"):
        try:
            test = json.loads((root / TRUTH_DIR / TEST_MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not ((root / rsna.SAMPLE_SUBMISSION).is_file() and (root / TRUTH_DIR / TEST_LABELS).is_file()):
            return None
        images += [(rec["image_id"], rsna.TEST_DIR) for rec in test["images"]]
    for image_id, folder in images:
        if not (rsna.image_path(root, image_id, folder).is_file() and mask_path(root, image_id).is_file()):
            return None
    return {"test_patients": 0, "test_images": 0, **manifest["counts"]}  # manifests before the test split

