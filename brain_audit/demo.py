"""The built-in demo: the seed notebook's whole story on a synthetic phantom cohort, on a laptop CPU.

``brain-audit demo`` (or :func:`run_demo`) takes a phantom cohort through every stage:

1. **phantom**: head-CT studies in the RSNA layout (:mod:`brain_audit.phantom`), with a
   planted Clever-Hans shortcut: aneurysm coils on 30 % of bleeding slices and 2 % of the
   others, as the seed's audit caught in real data;
2. **prepare**: labels, header index, patient splits with the audit patients chosen
   first, nested phase cohorts, int16 HU cache (:func:`brain_audit.train.prepare_data`);
3. **pretrain**: the backbone on patients of its own, the stand-in for ImageNet that
   cannot be downloaded here (:func:`brain_audit.train.run_pretrain`);
4. **phases 1-4**: domain freezing, scale-up, the Grad-CAM audit with hard-negative
   mining, clinical correction with the dropout comparison
   (:func:`brain_audit.train.run_phase`);
5. **clinical audit** of the held-out patients (:func:`brain_audit.audit.audit_holdout`),
   then the shortcut measured by intervention: the same audit slices rendered with and
   without the coil, and the change in probability it causes.

Everything lands in ``OUT/`` (``data/``, ``pretrain/``, ``phase1/`` ... ``phase4/``,
``clinical_audit_report/``, ``demo_summary.json``); a rerun resumes where it stopped.
The sizes are small on purpose (CPU minutes, not GPU hours); they are arguments.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brain_audit.audit.holdout import audit_holdout
from brain_audit.audit.statistics import cluster_bootstrap, wilson_interval
from brain_audit.config import PretrainPlan, RunConfig, load_config
from brain_audit.dataset.cache import open_cache, preprocess_slice
from brain_audit.errors import ConfigError
from brain_audit.gradcam.shortcuts import counterfactual_effect
from brain_audit.model.weights import load_model
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import DEFAULT_MIMIC_PROBABILITIES, PhantomConfig
from brain_audit.phantom.render import render_counterfactual
from brain_audit.provenance import write_json
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock
from brain_audit.train.phases import run_phase
from brain_audit.train.prepare import prepare_data
from brain_audit.train.pretrain import manifest_path, run_pretrain

__all__ = ["DemoPlan", "demo_configs", "run_demo"]


#: Patients the demo needs beyond its audit and pretraining patients (train and validation, both classes).
_MIN_TRAIN_PATIENTS = 8


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo. ``DemoPlan.quick()`` is the test-suite version.

    Attributes:
        patients: phantom patients in all (pretraining, train, validation and audit).
        slices_per_patient: contiguous axial slices per study.
        phantom_size: rows = columns of the written DICOM files, px.
        field_of_view_mm: phantom field of view (200 mm: the head fills most of the frame).
        image_size: model input, px.
        pretrain_patients, audit_patients: patients held out for pretraining and the audit.
        shortcut: (mimic, p given bleed, p given no bleed) planted in the cohort.
        pretrain_epochs, phase1_epochs, phase2_epochs, phase4_epochs: training lengths.
        warmup_epochs, warmup_slices: the formula-driven warm-up before pretraining (at most
            ``warmup_epochs``; :func:`brain_audit.train.pretrain.formula_slices`).
        batch_size: training batch.
        seed: the one seed.
    """

    patients: int = 200
    slices_per_patient: int = 12
    phantom_size: int = 256
    field_of_view_mm: float = 200.0
    image_size: int = 96
    pretrain_patients: int = 80
    audit_patients: int = 30
    shortcut: tuple[str, float, float] = ("coil", 0.3, 0.02)
    pretrain_epochs: int = 14
    warmup_epochs: int = PretrainPlan.warmup_epochs
    warmup_slices: int = PretrainPlan.warmup_slices
    phase1_epochs: int = 6
    phase2_epochs: int = 2
    phase4_epochs: int = 1
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        held_out = self.audit_patients + self.pretrain_patients
        if self.patients < held_out + _MIN_TRAIN_PATIENTS:
            raise ConfigError(
                f"`patients` (--patients) must be >= {held_out + _MIN_TRAIN_PATIENTS}: the demo holds out "
                f"{self.audit_patients} audit and {self.pretrain_patients} pretraining patients and trains and "
                f"validates on at least {_MIN_TRAIN_PATIENTS} more. Got {self.patients} instead."
            )

    @classmethod
    def quick(cls) -> "DemoPlan":
        """A tiny plan for tests: every stage runs, nothing is expected to learn much."""
        return cls(patients=28, slices_per_patient=6, phantom_size=128, image_size=64, pretrain_patients=8,
                   audit_patients=6, pretrain_epochs=1, warmup_epochs=1, warmup_slices=32, phase1_epochs=1,
                   phase2_epochs=1, phase4_epochs=1, batch_size=16)


def demo_configs(out_dir: str | Path, plan: DemoPlan = DemoPlan(), overrides: Sequence[str] = ()) -> tuple[Any, RunConfig]:
    """The phantom configuration and the run configuration of a demo in ``out_dir``.

    ``overrides`` are ``key=value`` run-config overrides applied last (see :mod:`brain_audit.config`).
    """

    out = Path(out_dir)
    mimic, p_bleed, p_clean = plan.shortcut
    mimics = dict(DEFAULT_MIMIC_PROBABILITIES)
    mimics[mimic] = (p_bleed, p_clean)
    phantom = PhantomConfig(
        patients=plan.patients,
        slices_per_patient=plan.slices_per_patient,
        size=plan.phantom_size,
        pixel_spacing_mm=plan.field_of_view_mm / plan.phantom_size,
        prevalence=0.5,
        mimic_probabilities=mimics,
        defect_fraction=0.02,
        corrupt_files=2,
        seed=plan.seed,
    )
    settings = {
        "data_root": str(out / "data"),
        "out_dir": str(out),
        "image_size": plan.image_size,
        "weights": "pretrained",
        "seed": plan.seed,
        "audit_patients": plan.audit_patients,
        "validation_fraction": 0.25,
        "pretrain.patients": plan.pretrain_patients,
        "pretrain.epochs": plan.pretrain_epochs,
        "pretrain.warmup_epochs": plan.warmup_epochs,
        "pretrain.warmup_slices": plan.warmup_slices,
        "pretrain.batch_size": plan.batch_size,
        "phase1.cohort_size": 0,
        "phase1.epochs": plan.phase1_epochs,
        "phase1.batch_size": plan.batch_size,
        "phase1.learning_rate": 1e-3,
        "phase2.cohort_size": 0,
        "phase2.epochs": plan.phase2_epochs,
        "phase2.batch_size": plan.batch_size,
        "phase2.learning_rate": 1e-4,
        "phase3.max_slices": 256,
        "phase3.overlays": 12,
        "phase4.epochs": plan.phase4_epochs,
        "phase4.batch_size": plan.batch_size,
        "phase4.learning_rate": 1e-4,
    }
    config = load_config(None, [f"{k}={json.dumps(v)}" for k, v in settings.items()] + list(overrides))
    return phantom, config


def _shortcut_intervention(config: RunConfig, mimic: str, limit: int = 48) -> dict[str, Any]:
    """Probability change of the final model when ``mimic`` is removed from / added to audit slices.

    Paired renders of the same slice (:func:`brain_audit.phantom.render_counterfactual`),
    preprocessed exactly as the cache does (:func:`brain_audit.dataset.cache.preprocess_slice`);
    :func:`brain_audit.gradcam.counterfactual_effect` measures ``p_with - p_without``; the mean change carries
    a patient-cluster bootstrap interval, the share of flipped decisions a Wilson interval.
    """
    paths = RunPaths(config.out_dir)
    model = load_model(paths.model(4), compile=False)
    threshold = json.loads(paths.operating_point.read_text())["threshold"]
    images = json.loads((Path(config.data_root) / "phantom_manifest.json").read_text())["images"]
    cache = open_cache(paths.cache, size=config.image_size)
    audit_ids = set(cache.ids("audit"))
    result: dict[str, Any] = {"mimic": mimic, "threshold": threshold}
    for direction, has_it in (("removed", True), ("added", False)):
        pairs, patients = [], []
        for rec in images:
            if rec["image_id"] not in audit_ids or (mimic in rec["mimics"]) != has_it:
                continue  # remove it where it is, add it where it is not
            hu_with, _ = render_counterfactual(config.data_root, rec["image_id"], mimic, True)
            hu_without, _ = render_counterfactual(config.data_root, rec["image_id"], mimic, False)
            pairs.append((preprocess_slice(hu_with, config.image_size), preprocess_slice(hu_without, config.image_size)))
            patients.append(str(cache.table.loc[rec["image_id"], "patient_id"]))
            if len(pairs) >= limit:
                break
        if pairs:
            w, wo = (np.stack([p[i] for p in pairs]).astype(np.float32) for i in (0, 1))
            eff = counterfactual_effect(model, w, wo, threshold=threshold)
            delta = eff["delta"].to_numpy() if direction == "added" else -eff["delta"].to_numpy()
            mean, lo, hi = cluster_bootstrap(delta, patients, np.mean, n_boot=2000, seed=config.seed)
            flips = int(eff["flipped"].sum())
            result[direction] = {"n": len(pairs), "patients": len(set(patients)),
                                 "mean_change": mean, "mean_change_ci95": [lo, hi],
                                 "flip_rate": flips / len(pairs), "flip_rate_ci95": list(wilson_interval(flips, len(pairs)))}
    return result


def run_demo(out_dir: str | Path = "demo_out", plan: DemoPlan = DemoPlan(), *, overrides: Sequence[str] = (),
             verbose: int | str = 2, progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out_dir`` (resumable) and return its summary (also ``demo_summary.json``).

    ``overrides``: run-config ``key=value`` overrides (e.g. ``"phase3.max_slices=32"``). ``out_dir`` is held
    for the whole demo (:func:`brain_audit.run_lock.run_lock`): a second demo into it is refused.
    """
    with run_lock(out_dir):
        return _run_demo_locked(out_dir, plan, overrides, verbose, progress)


def _run_demo_locked(out_dir: str | Path, plan: DemoPlan, overrides: Sequence[str], verbose: int | str,
                     progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 1)

    phantom, config = demo_configs(out_dir, plan, overrides)
    generate_cohort(config.data_root, phantom)
    lap("phantom")
    prepare_data(config, progress=progress)
    lap("prepare")
    run_pretrain(config, verbose=verbose)
    lap("pretrain")
    phases = {}
    for n in (1, 2, 3, 4):
        phases[n] = run_phase(config, n, verbose=verbose)
        lap(f"phase{n}")
    audit = audit_holdout(config, n_boot=500)
    lap("audit")
    try:
        intervention = _shortcut_intervention(config, plan.shortcut[0])
    except (KeyError, ValueError, OSError) as exc:  # a phantom without counterfactual support
        intervention = {"error": f"{type(exc).__name__}: {exc}"}
    lap("intervention")

    pre_manifest = manifest_path(RunPaths(config.out_dir).backbone)
    pre = json.loads(pre_manifest.read_text()) if pre_manifest.is_file() else {}
    summary = {
        "plan": dataclasses.asdict(plan),
        "seconds": timings,
        "pretrain": pre.get("metrics", {}),
        "phase1_auc": phases[1].get("auc"),
        "phase2_auc": phases[2].get("auc"),
        "phase3": {k: phases[3].get(k) for k in ("map", "coverage", "errors", "hard_negatives", "trustworthy")}
        | {"sanity_rho_final": (phases[3].get("sanity") or {}).get("rho_final"),
           "evidence": phases[3].get("evidence")},
        "phase4": phases[4].get("operating_point"),
        "audit_patient_level": {
            k: audit["patient_level"].get(k) for k in ("auc", "auc_ci95", "sensitivity_ci95", "specificity_ci95")
        },
        "audit_deployment_ppv": audit["patient_level"]["deployment"],
        "audit_attention": {k: audit["attention"].get(k) for k in ("map", "coverage", "trustworthy", "evidence")}
        | {"sanity_rho_final": (audit["attention"].get("sanity") or {}).get("rho_final")},
        "bone_study": {g: {arm: {k: e[arm][k] for k in ("share_rose", "share_rose_ci95", "median_delta_logit",
                                                          "median_delta_logit_ci95", "wilcoxon_p")}
                            for arm in ("bone_removed", "control")}
                       for g, e in (audit.get("bone_study") or {}).get("groups", {}).items()},
        "shortcut_intervention": intervention,
    }
    write_json(Path(config.out_dir) / "demo_summary.json", summary)
    return summary
