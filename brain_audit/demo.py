"""The built-in demo: the seed notebook's whole story on a synthetic phantom cohort, on a laptop CPU.

``brain-audit demo`` (or :func:`run_demo`) takes a phantom cohort through every stage:

1. **phantom**: head-CT studies in the RSNA layout (:mod:`brain_audit.phantom`), with the
   seed's four Clever-Hans shortcuts planted at once (:data:`brain_audit.shortcut_study.STUDY_SHORTCUTS`:
   an aneurysm coil, a polymer catheter, frontal bone and a choroid-plexus calcification, each on
   25 % of bleeding slices and 2 % of the others), as the seed's audit caught them in real data;
2. **prepare**: labels, header index, patient splits with the audit patients chosen
   first, nested phase cohorts, int16 HU cache (:func:`brain_audit.train.prepare_data`);
3. **pretrain**: the backbone on patients of its own cohort, the stand-in for ImageNet that cannot be
   downloaded here (:func:`brain_audit.train.run_pretrain`). It is supervised on the cohort's bleeds, so it
   stands in for the ImageNet start *and* the long fine-tuning a GPU run gives the upper backbone: the step
   where a real model picks up a shortcut. Each model below pretrains on its own cohort, so the clean one
   never sees a planted shortcut anywhere;
4. **phases 1-5**: domain freezing, scale-up, the Grad-CAM audit with hard-negative
   mining, clinical correction with the dropout comparison, and (``DemoPlan.study``) the study-level
   sequence model over whole series (:func:`brain_audit.train.run_phase`; :mod:`brain_audit.train.study`);
5. **clean reference**: a second phantom cohort of the same plan (another seed, so other patients) where
   every planted mimic is equally common with and without a bleed, taken through steps 3 and 4 (Phases 1-2)
   exactly as the demo's (``OUT/clean_reference/``): the model the same pipeline would have given without the
   shortcuts;
6. **shortcut study** (:func:`brain_audit.shortcut_study.run_shortcut_study`): each shortcut caught by
   attention (its flag on the slices holding it in occlusion-sensitivity maps, with the audits' HiResCAM
   beside; shortcut model beside clean model) and by intervention (the mimic added to / removed from audit
   slices), in ``OUT/shortcut_study/``.
7. **clinical audit** of the 200 held-out patients (:func:`brain_audit.audit.audit_holdout`), last, so the
   shortcuts the study found lead its report (``clinical_audit_report/index.html``); with Phase 5 it compares
   the study model with the max-slice rule (:mod:`brain_audit.audit.aggregation`).

Everything lands in ``OUT/`` (``data/``, ``pretrain/``, ``phase1/`` ... ``phase5/``,
``clinical_audit_report/``, ``clean_reference/`` (its own ``data/``, ``pretrain/``, ``phase1/``, ``phase2/``),
``shortcut_study/``,
``demo_summary.json``); a rerun
resumes where it stopped.

References:
    Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
The sizes are small on purpose (CPU minutes, not GPU hours); they are arguments.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from brain_audit.audit.holdout import audit_holdout, refresh_shortcuts
from brain_audit.config import PretrainPlan, RunConfig, load_config
from brain_audit.errors import ConfigError
from brain_audit.phantom.cohort import generate_cohort
from brain_audit.phantom.config import DEFAULT_MIMIC_PROBABILITIES, PhantomConfig
from brain_audit.phantom.lesions import MIMICS
from brain_audit.provenance import write_json
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock
from brain_audit.shortcut_study import STUDY_SHORTCUTS, run_shortcut_study
from brain_audit.train.phases import run_phase
from brain_audit.train.prepare import prepare_data
from brain_audit.train.pretrain import manifest_path, run_pretrain

__all__ = ["DEFAULT_SHORTCUTS", "DemoPlan", "clean_reference_configs", "demo_configs", "run_demo",
           "run_shortcut_stage", "study_demo_folder"]


#: Patients the demo needs beyond its audit and pretraining patients (train and validation, both classes).
_MIN_TRAIN_PATIENTS = 8

#: The demo's planted shortcuts: (mimic, p given bleed, p given no bleed) per image, for each studied shortcut.
DEFAULT_SHORTCUTS: tuple[tuple[str, float, float], ...] = tuple((m, 0.25, 0.02) for m in STUDY_SHORTCUTS)

#: Seed offset of the clean reference's phantom cohort: other patients than the demo's (audit ones included).
_REFERENCE_DIR = "clean_reference"
_REFERENCE_SEED_OFFSET = 1


def _shortcut_entries(value: Any) -> tuple[tuple[str, float, float], ...]:
    """``DemoPlan.shortcut`` as a tuple of (mimic, p_bleed, p_no_bleed) tuples (lists from JSON accepted)."""
    rule = f"a sequence of (mimic, p_given_bleed, p_given_no_bleed) with distinct mimics of {MIMICS}"
    try:
        entries = tuple((str(m), float(pb), float(pn)) for m, pb, pn in value)
    except (TypeError, ValueError):
        raise ConfigError(f"`shortcut` must be {rule}. Got {value!r} instead.") from None
    names = [m for m, _, _ in entries]
    if any(m not in MIMICS for m in names) or len(set(names)) != len(names):
        raise ConfigError(f"`shortcut` must be {rule}. Got {value!r} instead.")
    if not all(0.0 <= p <= 1.0 for _, pb, pn in entries for p in (pb, pn)):
        raise ConfigError(f"`shortcut` must hold probabilities in [0, 1]. Got {value!r} instead.")
    return entries


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo. ``DemoPlan.quick()`` is the test-suite version.

    Attributes:
        patients: phantom patients in all (pretraining, train, validation and audit).
        slices_per_patient: contiguous axial slices per study.
        phantom_size: rows = columns of the written DICOM files, px.
        field_of_view_mm: phantom field of view (200 mm: the head fills most of the frame).
        image_size: model input, px.
        pretrain_patients, audit_patients: patients held out for pretraining (each cohort's own) and the audit
            (200, as the seed's audit: a Wilson interval of about +-6 points on 100 bleeding patients).
        validation_fraction: share of the remaining patients held for validation, where Phase 4 chooses its
            thresholds (0.5 of 200: about 50 bleeding patients for the patient threshold).
        shortcut: the planted shortcuts, a tuple of (mimic, p given bleed, p given no bleed) per image;
            every one is studied (:mod:`brain_audit.shortcut_study`).
        reference_patients: patients of the clean reference cohort (0: as many as the demo trains and
            validates on, ``patients - pretrain_patients - audit_patients``).
        reference_mimic_probability: per-image probability of each planted mimic in the clean reference
            cohort, with and without a bleed alike (so the clean model sees the mimics, uncorrelated).
        study_pairs: counterfactual pairs per shortcut and direction in the shortcut study.
        pretrain_epochs, phase1_epochs, phase2_epochs, phase4_epochs, phase5_epochs: training lengths.
        study: run Phase 5, the study-level sequence model over whole series (every train and validation patient
            brings all its slices), and compare it with the max-slice rule in the audit.
        warmup_epochs, warmup_slices: the formula-driven warm-up before pretraining (at most
            ``warmup_epochs``; :func:`brain_audit.train.pretrain.formula_slices`).
        batch_size: training batch.
        seed: the one seed.
    """

    patients: int = 480
    slices_per_patient: int = 12
    phantom_size: int = 256
    field_of_view_mm: float = 200.0
    image_size: int = 96
    pretrain_patients: int = 80
    audit_patients: int = 200
    validation_fraction: float = 0.5
    shortcut: tuple[tuple[str, float, float], ...] = DEFAULT_SHORTCUTS
    reference_patients: int = 0
    reference_mimic_probability: float = 0.1
    study_pairs: int = 48
    pretrain_epochs: int = 14
    warmup_epochs: int = PretrainPlan.warmup_epochs
    warmup_slices: int = PretrainPlan.warmup_slices
    phase1_epochs: int = 6
    phase2_epochs: int = 2
    phase4_epochs: int = 1
    study: bool = True
    phase5_epochs: int = 30
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shortcut", _shortcut_entries(self.shortcut))
        if self.reference_patients and self.reference_patients < _MIN_TRAIN_PATIENTS:
            raise ConfigError(f"`reference_patients` must be 0 or >= {_MIN_TRAIN_PATIENTS}. "
                              f"Got {self.reference_patients} instead.")
        if self.study_pairs < 1:
            raise ConfigError(f"`study_pairs` must be >= 1. Got {self.study_pairs} instead.")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"`validation_fraction` must be in (0, 1). Got {self.validation_fraction!r} instead.")
        if not 0.0 <= self.reference_mimic_probability <= 1.0:
            raise ConfigError(f"`reference_mimic_probability` must be in [0, 1]. "
                              f"Got {self.reference_mimic_probability!r} instead.")
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
                   phase2_epochs=1, phase4_epochs=1, phase5_epochs=2, batch_size=16, reference_patients=8,
                   study_pairs=16)


def demo_configs(out_dir: str | Path, plan: DemoPlan = DemoPlan(), overrides: Sequence[str] = ()) -> tuple[Any, RunConfig]:
    """The phantom configuration and the run configuration of a demo in ``out_dir``.

    ``overrides`` are ``key=value`` run-config overrides applied last (see :mod:`brain_audit.config`).
    """

    out = Path(out_dir)
    mimics = dict(DEFAULT_MIMIC_PROBABILITIES)
    mimics.update({m: (pb, pn) for m, pb, pn in plan.shortcut})
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
    config = load_config(None, _assignments(_run_settings(out, plan)) + list(overrides))
    return phantom, config


def _assignments(settings: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def _run_settings(out: Path, plan: DemoPlan) -> dict[str, Any]:
    """The run-config settings of a demo in ``out`` (before overrides)."""
    return {
        "data_root": str(out / "data"),
        "out_dir": str(out),
        "image_size": plan.image_size,
        "weights": "pretrained",
        "seed": plan.seed,
        "audit_patients": plan.audit_patients,
        "validation_fraction": plan.validation_fraction,
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
        "phase5.enabled": plan.study,
        "phase5.patients": plan.patients,
        "phase5.validation_patients": plan.patients,
        "phase5.epochs": plan.phase5_epochs,
    }


def clean_reference_configs(out_dir: str | Path, plan: DemoPlan = DemoPlan(),
                            overrides: Sequence[str] = ()) -> tuple[PhantomConfig, RunConfig]:
    """The phantom and run configuration of the demo's clean reference model, in ``<out_dir>/clean_reference``.

    The same plan as :func:`demo_configs` with three changes: every planted mimic is equally common with and
    without a bleed (``plan.reference_mimic_probability``), so it predicts nothing; the cohort has
    ``plan.reference_patients`` patients for training and validation plus ``plan.pretrain_patients`` for
    pretraining its own backbone (none held out for an audit), drawn from another seed, so none of them is one
    of the demo's audit patients. Only the pretraining and Phases 1 and 2 are run on it.
    """
    out = Path(out_dir)
    phantom, _ = demo_configs(out_dir, plan, overrides)
    patients = plan.reference_patients or plan.patients - plan.pretrain_patients - plan.audit_patients
    patients += plan.pretrain_patients
    mimics = dict(phantom.mimic_probabilities)
    mimics.update({m: (plan.reference_mimic_probability,) * 2 for m, _, _ in plan.shortcut})
    reference = dataclasses.replace(phantom, patients=patients, mimic_probabilities=mimics,
                                    seed=plan.seed + _REFERENCE_SEED_OFFSET)
    root = out / _REFERENCE_DIR
    settings = {"data_root": str(root / "data"), "out_dir": str(root), "audit_patients": 0,
                "pretrain.patients": plan.pretrain_patients, "weights": "pretrained", "phase5.enabled": False}
    clean = load_config(None, _assignments(_run_settings(out, plan)) + list(overrides) + _assignments(settings))
    return reference, clean


def _train_clean_reference(out_dir: str | Path, plan: DemoPlan, overrides: Sequence[str], verbose: int | str,
                           progress: bool) -> dict[str, Any]:
    """Generate, prepare, pretrain and train (Phases 1-2, resumable) the clean reference; its Phase-2 metrics."""
    phantom, config = clean_reference_configs(out_dir, plan, overrides)
    generate_cohort(config.data_root, phantom)
    prepare_data(config, progress=progress)
    run_pretrain(config, verbose=verbose)
    phases = {n: run_phase(config, n, verbose=verbose) for n in (1, 2)}
    return {"patients": phantom.patients, "seed": phantom.seed, "phase1_auc": phases[1].get("auc"),
            "phase2_auc": phases[2].get("auc"), "threshold": phases[2].get("threshold")}


def _aggregation_figures(agg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The audit's slice-versus-volume comparison, in brief, for ``demo_summary.json``."""
    if not agg:
        return None
    out: dict[str, Any] = {"verdict": agg["verdict"]}
    for level in ("patient_level", "slice_level"):
        e = agg[level]
        out[level] = {rule: {"auc": e[rule]["auc"], "auc_ci95": e[rule]["auc_ci95"],
                             "sensitivity": e[rule]["at_threshold"]["sensitivity"],
                             "specificity": e[rule]["at_threshold"]["specificity"]}
                      for rule in ("max_slice", "study_model")}
        out[level]["difference"] = {m: {"difference": d["difference"], "ci95": d["ci95"]}
                                    for m, d in e["difference"].items()}
    return out


def _study_figures(study: dict[str, Any]) -> dict[str, Any]:
    """The key figures of a shortcut study for ``demo_summary.json``."""
    out: dict[str, Any] = {"thresholds": study["thresholds"]}
    for mimic, e in study["shortcuts"].items():
        row: dict[str, Any] = {k: e.get(k) for k in ("flag", "slices", "patients", "caught")}
        for kind, a in e.get("attention", {}).items():
            row[kind] = {k: a.get(k) for k in ("difference", "difference_ci95", "ratio", "uniform_map_rate", "caught")}
            for name in ("shortcut_model", "clean_model"):
                r = a.get(name) or {}
                row[kind][f"rate_{name}"] = r.get("rate")
                row[kind][f"rate_{name}_ci95"] = r.get("rate_ci95")
        for direction, d in e.get("intervention", {}).items():
            row[direction] = {name: {k: d[name].get(k) for k in ("n", "mean_change", "mean_change_ci95", "flip_rate",
                                                                   "flip_rate_ci95")}
                              for name in ("shortcut_model", "clean_model")}
            row[direction].update({k: d.get(k) for k in ("difference", "difference_ci95", "caught")})
        out[mimic] = row
    return out


def run_shortcut_stage(out_dir: str | Path, plan: DemoPlan = DemoPlan(), overrides: Sequence[str] = (), *,
                       verbose: int | str = 0, progress: bool = False, n_boot: int = 2000,
                       limit: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or reuse) the clean reference of a demo in ``out_dir`` and run the shortcut study on it.

    The demo's stages up to Phase 4 must have finished. ``limit``: counterfactual pairs per shortcut and direction
    (default ``plan.study_pairs``). Returns ``(reference, study)``: the clean reference's figures and
    :func:`brain_audit.shortcut_study.run_shortcut_study`'s summary.
    """
    reference = _train_clean_reference(out_dir, plan, overrides, verbose, progress)
    return reference, _study(out_dir, plan, overrides, n_boot, limit)


def _study(out_dir: str | Path, plan: DemoPlan, overrides: Sequence[str], n_boot: int,
           limit: int | None) -> dict[str, Any]:
    _, config = demo_configs(out_dir, plan, overrides)
    _, clean = clean_reference_configs(out_dir, plan, overrides)
    return run_shortcut_study(config, clean, [m for m, _, _ in plan.shortcut], n_boot=n_boot,
                              limit=plan.study_pairs if limit is None else limit)


def study_demo_folder(out_dir: str | Path, *, n_boot: int = 2000, limit: int | None = None, verbose: int | str = 0,
                      progress: bool = False) -> dict[str, Any]:
    """Rerun the shortcut study of a finished demo in ``out_dir`` (``brain-audit shortcut-study``).

    The plan and overrides are read back from ``demo_summary.json``; the demo's models are reused, the clean
    reference trained only where it has not finished (:func:`run_shortcut_stage`). ``demo_summary.json`` is
    updated with the new figures and returned.

    Raises:
        ConfigError: ``out_dir`` holds no ``demo_summary.json``, or another process writes it.
    """
    path = Path(out_dir) / "demo_summary.json"
    if not path.is_file():
        raise ConfigError(f"`--out` must be a finished demo folder (with demo_summary.json). Got {str(out_dir)!r} "
                          "instead.")
    with run_lock(out_dir):
        summary = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(DemoPlan)}
        plan = DemoPlan(**{k: v for k, v in summary["plan"].items() if k in fields})
        overrides = summary.get("overrides", [])
        reference, study = run_shortcut_stage(out_dir, plan, overrides, verbose=verbose, progress=progress,
                                              n_boot=n_boot, limit=limit)
        summary.update(clean_reference=reference, shortcut_study=_study_figures(study))
        _, config = demo_configs(out_dir, plan, overrides)
        refresh_shortcuts(config, n_boot=n_boot)  # the audit report's headline follows the new study
        summary.pop("shortcut_intervention", None)
        write_json(path, summary)
    return summary


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
    if config.context:  # refused before hours of work, not at the shortcut study
        raise ConfigError(f"`context` must be 0 for the demo (its shortcut study edits one slice, not its "
                          f"neighbours). Got {config.context} instead.")
    ref_phantom, ref_config = clean_reference_configs(out_dir, plan, overrides)
    generate_cohort(config.data_root, phantom)
    generate_cohort(ref_config.data_root, ref_phantom)
    lap("phantom")
    prepare_data(config, progress=progress)
    prepare_data(ref_config, progress=progress)
    lap("prepare")
    run_pretrain(config, verbose=verbose)
    lap("pretrain")
    phases = {}
    for n in (1, 2, 3, 4, 5) if config.phase5.enabled else (1, 2, 3, 4):
        phases[n] = run_phase(config, n, verbose=verbose)
        lap(f"phase{n}")
    reference = _train_clean_reference(out_dir, plan, overrides, verbose, progress)
    lap("clean_reference")
    study = _study(out_dir, plan, overrides, n_boot=2000, limit=None)
    lap("shortcut_study")
    audit = audit_holdout(config, n_boot=2000)  # after the study: its findings lead the report
    lap("audit")

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
        "phase5": {k: phases[5].get(k) for k in ("series", "validation", "operating_point")} if 5 in phases else None,
        "audit_aggregation": _aggregation_figures(audit.get("aggregation")),
        "clean_reference": reference,
        "shortcut_study": _study_figures(study),
        "overrides": list(overrides),
    }
    write_json(Path(config.out_dir) / "demo_summary.json", summary)
    return summary
