"""Run configuration: frozen dataclasses, loaded from TOML, overridable from the command line.

A run is described by one :class:`RunConfig`; its four phases by :class:`PhasePlan`
(phases 1 and 2), :class:`AuditPlan` (phase 3) and :class:`CorrectionPlan` (phase 4), the optional
study-level Phase 5 by :class:`StudyPlan`, and
the domain pretraining of the backbone by :class:`PretrainPlan`.
The defaults are the seed notebook's: Phase 1 on a 1,600-patient cohort with the
backbone frozen at learning rate 1e-3; Phase 2 on a balanced 20,000-slice cohort with
the upper backbone unfrozen at 1e-5; Phase 4 comparing dropout 0.5 and 0.2.

TOML layout (every key optional; unknown keys are errors)::

    data_root = "/kaggle/input/rsna-intracranial-hemorrhage-detection"
    out_dir = "runs/rsna"
    image_size = 256
    context = 0          # 2.5-D input: neighbouring slices on each side as extra channels
    seed = 0

    [phase1]
    cohort_size = 1600
    cohort_unit = "patient"
    epochs = 3

    [phase4]
    dropouts = [0.5, 0.2]

    [phase5]            # the study-level sequence model (optional)
    enabled = true
    patients = 1000     # train patients whose whole series are cached for it

Overrides use dotted keys with TOML values: ``phase1.epochs=2``, ``weights="none"``.
Every value is checked, from TOML, an override or Python alike: its type (a bool is not an
int, an int is a number, list items too) and its range; a refusal names the dotted key:
"`phase1.epochs` must be >= 0. Got -1 instead."
Every run writes the resolved configuration next to its outputs
(:func:`brain_audit.provenance.run_record`).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from brain_audit.errors import ConfigError
from brain_audit.rsna import resolve_data_root
from brain_audit.run_layout import RunPaths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "PhasePlan",
    "PretrainPlan",
    "AuditPlan",
    "CorrectionPlan",
    "StudyPlan",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "to_dict",
    "with_resolved_data_root",
    "MAX_CONTEXT",
]

#: Largest ``context`` a run takes: 4 slices on each side (9 channels), about +-2 cm at 5 mm slices.
MAX_CONTEXT = 4


@dataclass(frozen=True)
class PhasePlan:
    """A supervised training phase (1: domain freezing, 2: scale-up with the upper backbone unfrozen).

    Attributes:
        cohort_size: how many units to sample from the training pool; 0 = the whole pool.
        cohort_unit: ``"patient"`` (Phase 1's default: the literal reading of the seed's
            "1,600 patients"; drawn inside Phase 2's cohort, a patient brings the slices of it
            that cohort holds) or ``"slice"`` (Phase 2's "balanced 20,000", and what the seed
            actually sampled: rows of the label table). See :mod:`brain_audit.dataset.cohort`.
        balance: share of positive (``any``) slices after sampling, 0 = keep the natural mix.
        epochs: epochs of this phase.
        learning_rate: Adam learning rate.
        dropout: dropout before the classifier.
        unfrozen_blocks: EfficientNet blocks trained from the top (0 = backbone frozen,
            -1 = the whole network with BatchNormalization trainable, used when no
            pretrained backbone exists).
        batch_size: global batch (per-replica batch x replicas).
        augment: anatomy-respecting augmentation in HU (see the data feed).
    """

    cohort_size: int = 1600
    cohort_unit: str = "patient"
    balance: float = 0.0
    epochs: int = 3
    learning_rate: float = 1e-3
    dropout: float = 0.2
    unfrozen_blocks: int = 0
    batch_size: int = 32
    augment: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.cohort_size >= 0, "cohort_size", "must be >= 0", self.cohort_size)
        _check(self.cohort_unit in ("patient", "slice"), "cohort_unit", "must be 'patient' or 'slice'", self.cohort_unit)
        _check(0.0 <= self.balance < 1.0, "balance", "must be in [0, 1)", self.balance)
        _check(self.epochs >= 0, "epochs", "must be >= 0", self.epochs)
        _check(self.learning_rate > 0, "learning_rate", "must be > 0", self.learning_rate)
        _check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)
        _check(self.unfrozen_blocks >= -1, "unfrozen_blocks", "must be >= -1", self.unfrozen_blocks)
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)


@dataclass(frozen=True)
class AuditPlan:
    """Phase 3: the Grad-CAM audit of the Phase-2 model on the validation split.

    Attributes:
        max_slices: profile at most this many slices (validation findings; train negatives when mining).
        max_errors: explain every false negative and every false positive on validation, up to this many of
            each kind (a seeded random subset beyond it, counted); the held-out audit does the same.
        correct_slices: and a seeded random sample of this many correct calls, the comparison group.
        sanity_slices: the randomisation check (Adebayo et al. 2018) runs on this many fixed slices; always.
        hard_negative_probability: a negative slice scored at or above this is a
            confident false positive, i.e. a hard negative.
        off_brain_share: a negative whose Grad-CAM energy outside the intracranial space
            is at least this share is a hard negative too (attention on bone, devices,
            calcification).
        batch_size: Grad-CAM batch.
        overlays: how many overlay PNGs to write (worst first).
    """

    max_slices: int = 2000
    max_errors: int = 1000
    correct_slices: int = 200
    sanity_slices: int = 32
    hard_negative_probability: float = 0.5
    off_brain_share: float = 0.5
    batch_size: int = 32
    overlays: int = 24

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.max_slices >= 1, "max_slices", "must be >= 1", self.max_slices)
        _check(self.max_errors >= 0, "max_errors", "must be >= 0", self.max_errors)
        _check(self.correct_slices >= 0, "correct_slices", "must be >= 0", self.correct_slices)
        _check(self.sanity_slices >= 0, "sanity_slices", "must be >= 0", self.sanity_slices)
        _check(0 < self.hard_negative_probability < 1, "hard_negative_probability", "must be in (0, 1)",
               self.hard_negative_probability)
        _check(0 < self.off_brain_share <= 1, "off_brain_share", "must be in (0, 1]", self.off_brain_share)
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)
        _check(self.overlays >= 0, "overlays", "must be >= 0", self.overlays)


@dataclass(frozen=True)
class CorrectionPlan:
    """Phase 4: clinical correction from the Phase-2 model.

    Attributes:
        dropouts: dropout rates compared (the seed: 0.5 cost too much sensitivity, 0.2 kept it).
        epochs: epochs per candidate.
        learning_rate: Adam learning rate.
        unfrozen_blocks: EfficientNet blocks trained from the top.
        hard_negative_weight: sampling weight of each Phase-3 hard negative (others 1).
        target_sensitivity: the operating threshold is the highest with at least this
            validation sensitivity (missed bleeds are the costly error).
        batch_size: global batch.
    """

    dropouts: tuple[float, ...] = (0.5, 0.2)
    epochs: int = 2
    learning_rate: float = 1e-5
    unfrozen_blocks: int = 2
    hard_negative_weight: float = 4.0
    target_sensitivity: float = 0.95
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check_types(self)
        _check(len(self.dropouts) >= 1, "dropouts", "must hold at least one rate", self.dropouts)
        _check(all(0 <= d < 1 for d in self.dropouts), "dropouts", "must be in [0, 1)", self.dropouts)
        _check(self.epochs >= 0, "epochs", "must be >= 0", self.epochs)
        _check(self.learning_rate > 0, "learning_rate", "must be > 0", self.learning_rate)
        _check(self.unfrozen_blocks >= -1, "unfrozen_blocks", "must be >= -1", self.unfrozen_blocks)
        _check(self.hard_negative_weight >= 1, "hard_negative_weight", "must be >= 1", self.hard_negative_weight)
        _check(0 < self.target_sensitivity <= 1, "target_sensitivity", "must be in (0, 1]", self.target_sensitivity)
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)


@dataclass(frozen=True)
class PretrainPlan:
    """Domain pretraining of the backbone (``brain-audit pretrain``), the stand-in for ImageNet.

    The plan :func:`brain_audit.train.pretrain.pretrain_backbone` takes, and records in its manifest.

    Attributes:
        patients: patients held out for pretraining, disjoint from audit, train and
            validation (0 = no pretraining split); sizes the run's split, not used by training.
        epochs, learning_rate, batch_size: whole-network training (BatchNorm trainable).
        validation_fraction: held-out share of the pretraining patients.
        augment: anatomy-respecting augmentation in HU (flip, small warp, HU jitter); without
            it a few dozen patients are memorised rather than learned from.
        warmup_epochs, warmup_slices, warmup_target_auc: the formula-driven warm-up that comes
            first (:func:`brain_audit.train.pretrain.formula_slices`), at most ``warmup_epochs``, ending
            at the first epoch whose training AUC reaches ``warmup_target_auc``; from random
            weights EfficientNetB0 otherwise sits at chance for a random number of epochs.
            0 epochs skips it.
    """

    patients: int = 0
    epochs: int = 14
    learning_rate: float = 1e-3
    batch_size: int = 32
    validation_fraction: float = 0.2
    augment: bool = True
    warmup_epochs: int = 12
    warmup_slices: int = 1024
    warmup_target_auc: float = 0.97

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.patients >= 0, "patients", "must be >= 0", self.patients)
        _check(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0", self.warmup_epochs)
        _check(self.warmup_slices >= 1, "warmup_slices", "must be >= 1", self.warmup_slices)
        _check(0.5 < self.warmup_target_auc <= 1, "warmup_target_auc", "must be in (0.5, 1]", self.warmup_target_auc)
        _check(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        _check(self.learning_rate > 0, "learning_rate", "must be > 0", self.learning_rate)
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)
        _check(0 < self.validation_fraction < 1, "validation_fraction", "must be in (0, 1)", self.validation_fraction)


@dataclass(frozen=True)
class StudyPlan:
    """Phase 5 (optional): the study-level sequence model over each series' slices in z order.

    The Phase-4 model embeds every slice of a series; a bidirectional GRU over the series
    (:mod:`brain_audit.model.sequence`) corrects each slice's score from its neighbours and scores the
    study as its most suspicious corrected slice. Trained on train patients only, its thresholds chosen on
    validation for ``phase4.target_sensitivity``; the audit compares it with the max-slice rule.

    Attributes:
        enabled: run Phase 5 (``run_all``, the demo) and compare it in the audit.
        patients, validation_patients: at most this many train and validation patients bring *every* slice of
            theirs to the HU cache for Phase 5 (in no phase cohort: ``cohort.csv`` and phases 1-4 are
            unchanged; ``data/cohort/phase5.csv`` lists the added slices); 0 adds none, and Phase 5 uses the
            series the cache holds whole.
        epochs, learning_rate, batch_size: training (batches of series).
        units: width of the projection and of each GRU direction.
        dropout: dropout on the slice embeddings.
        logit_noise: Gaussian noise (logit units) on the slice model's scores in training.
    """

    enabled: bool = False
    patients: int = 1000
    validation_patients: int = 250
    epochs: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 16
    units: int = 64
    dropout: float = 0.3
    logit_noise: float = 0.5

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.patients >= 0, "patients", "must be >= 0", self.patients)
        _check(self.validation_patients >= 0, "validation_patients", "must be >= 0", self.validation_patients)
        _check(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        _check(self.learning_rate > 0, "learning_rate", "must be > 0", self.learning_rate)
        _check(self.batch_size >= 1, "batch_size", "must be >= 1", self.batch_size)
        _check(self.units >= 1, "units", "must be >= 1", self.units)
        _check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)
        _check(self.logit_noise >= 0, "logit_noise", "must be >= 0", self.logit_noise)


def _phase2_default() -> PhasePlan:
    return PhasePlan(cohort_size=20000, cohort_unit="slice", balance=0.5, epochs=3, learning_rate=1e-5,
                     unfrozen_blocks=2)


@dataclass(frozen=True)
class RunConfig:
    """One four-phase run.

    Attributes:
        data_root: dataset root in the RSNA layout (``stage_2_train/``, ``stage_2_train.csv``), or
            ``"auto"``: the one :func:`brain_audit.rsna.find_rsna_root` finds under ``/kaggle/input``
            (:func:`with_resolved_data_root`; nothing found is a ``DataNotFoundError``, never the phantom).
        out_dir: run folder; each phase writes ``phase<N>/`` inside it.
        image_size: model input, px (HU cache resolution): a multiple of 32 (EfficientNet's
            stride) in [32, 1024].
        context: 2.5-D input, neighbouring slices on each side in [0, 4]: every model of the run reads
            ``1 + 2 context`` channels, channel ``context`` the slice itself and the others its neighbours by z
            within its own series (never another series); at a series end the edge slice is repeated.
            0 (default): one slice. The HU cache is built with these neighbours
            (:func:`brain_audit.dataset.cache.build_cache`).
        head: ``"any"`` (one sigmoid) or ``"six"`` (the six RSNA labels, BCE weighted any = 2).
        weights: ``"imagenet"``; ``"pretrained"`` (the backbone ``brain-audit pretrain`` wrote
            into this run's ``pretrain/``); a path to a backbone weights file or to Keras'
            ImageNet file; or ``"none"`` (random init: Phase 1 then trains the whole network
            with BatchNormalization trainable, and the manifest says so).
        seed: the one seed every phase derives its seeds from, in [0, 2**32).
        audit_patients: patients held out for the clinical audit, chosen first, never trained on.
        validation_fraction: share of the remaining patients used for validation.
        workers: processes for header reading and cache building.
        prepared: a folder outside the run holding an earlier run's ``index/`` (and optionally
            ``cache/``), e.g. an attached Kaggle dataset saved from that run's ``data/``; reused when it
            answers the same data (:mod:`brain_audit.train.prepare`), read only. ``""``: none.
    """

    data_root: str = ""
    out_dir: str = "runs/brain_audit"
    image_size: int = 256
    context: int = 0
    head: str = "any"
    weights: str = "imagenet"
    seed: int = 0
    audit_patients: int = 200
    validation_fraction: float = 0.15
    workers: int = 2
    prepared: str = ""
    pretrain: PretrainPlan = field(default_factory=PretrainPlan)
    phase1: PhasePlan = field(default_factory=PhasePlan)
    phase2: PhasePlan = field(default_factory=_phase2_default)
    phase3: AuditPlan = field(default_factory=AuditPlan)
    phase4: CorrectionPlan = field(default_factory=CorrectionPlan)
    phase5: StudyPlan = field(default_factory=StudyPlan)

    def __post_init__(self) -> None:
        _check_types(self)
        _check(32 <= self.image_size <= 1024 and self.image_size % 32 == 0, "image_size",
               "must be a multiple of 32 (EfficientNet's stride) in [32, 1024]", self.image_size)
        _check(0 <= self.context <= MAX_CONTEXT, "context", f"must be in [0, {MAX_CONTEXT}]", self.context)
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        _check(self.head in ("any", "six"), "head", "must be 'any' or 'six'", self.head)
        _check(self.audit_patients >= 0, "audit_patients", "must be >= 0", self.audit_patients)
        _check(0 < self.validation_fraction < 1, "validation_fraction", "must be in (0, 1)", self.validation_fraction)
        _check(self.workers >= 1, "workers", "must be >= 1", self.workers)

    @property
    def backbone_weights(self) -> str | None:
        """``weights`` as :func:`brain_audit.model.build_model` takes it (``None`` for "none";
        the pretraining output of this run for "pretrained")."""
        if self.weights.lower() in ("none", ""):
            return None
        if self.weights == "pretrained":
            return str(RunPaths(self.out_dir).backbone)
        return self.weights


class _BadValue(ConfigError):
    """A value breaking its rule: "`phase1.epochs` must be >= 0. Got -1 instead." The key gains its
    table's prefix as the error leaves a nested plan (:func:`_from_mapping`)."""

    def __init__(self, key: str, rule: str, value: Any) -> None:
        self.key, self.rule, self.value = key, rule, value
        super().__init__(f"`{key}` {rule}. Got {value!r} instead.")

    def __reduce__(self):  # picklable with its fields
        return (type(self), (self.key, self.rule, self.value))


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise _BadValue(name, rule, value)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


#: What a value of each field type must be, as the messages say it.
_TYPE_NAMES = {int: "an int", float: "a number", str: "a string", bool: "true or false"}


def _is_a(value: Any, tp: type) -> bool:
    """``value`` is a ``tp``: a bool is not an int or a number; an int is a number (float)."""
    if tp is bool or isinstance(value, bool):
        return tp is bool and isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real)
    if tp is int:
        return isinstance(value, numbers.Integral)
    if tp is str:
        return isinstance(value, (str, os.PathLike))  # data_root, out_dir, weights: a Path from Python
    return isinstance(value, tp)


def _check_types(plan: Any) -> None:
    """Refuse a field of the wrong type (a bool for an int, a string in a list of rates) and normalise
    the right ones: ints given for numbers become floats, a list of rates a tuple of floats."""
    for name, tp in _field_types(type(plan)).items():
        value = getattr(plan, name)
        if typing.get_origin(tp) is tuple:  # tuple[float, ...]
            item = typing.get_args(tp)[0]
            ok = isinstance(value, (list, tuple)) and all(_is_a(v, item) for v in value)
            _check(ok, name, f"must be a list of {_TYPE_NAMES[item].split(' ', 1)[1]}s", value)
            object.__setattr__(plan, name, tuple(item(v) for v in value))
        elif tp in _TYPE_NAMES:
            _check(_is_a(value, tp), name, f"must be {_TYPE_NAMES[tp]}", value)
            object.__setattr__(plan, name, os.fspath(value) if tp is str else tp(value))
        elif dataclasses.is_dataclass(tp):
            _check(isinstance(value, tp), name, f"must be a table of {tp.__name__} keys", value)


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """A TOML value for field ``key`` of type ``tp``: tables become plans; types are checked by the plan."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _BadValue(key, "must be a table", value)
        return _from_mapping(tp, value, prefix=f"{key}.")
    return value


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key `{prefix}{unknown[0]}`; known keys: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(prefix + k, hints[k], v) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except _BadValue as exc:
        if not prefix:
            raise
        raise _BadValue(prefix + exc.key, exc.rule, exc.value) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A configuration as a plain dict (for JSON manifests)."""
    return dataclasses.asdict(config)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string such as a path


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Return ``config`` with ``key=value`` overrides applied (dotted keys, TOML values).

    Raises:
        ConfigError: a malformed override, an unknown key, or a value of the wrong type.
    """
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. phase1.epochs=2)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"unknown key `{key.strip()}` in override {item!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown key `{key.strip()}` in override {item!r}")
        node[parts[-1]] = _parse_value(raw.strip())
    return _from_mapping(RunConfig, data)


def with_resolved_data_root(config: RunConfig) -> RunConfig:
    """``config`` with ``data_root = "auto"`` replaced by the folder :func:`brain_audit.rsna.find_rsna_root`
    finds (any other value is returned unchanged). Call once where a run starts, so every later stage
    and record sees the real folder.

    Raises:
        DataNotFoundError: ``"auto"`` and no RSNA data under ``/kaggle/input``.
    """
    if str(config.data_root).strip().lower() != "auto":
        return config
    return dataclasses.replace(config, data_root=str(resolve_data_root(config.data_root)))


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Load a :class:`RunConfig` from a TOML file (or the defaults when ``path`` is None), then apply overrides.

    Raises:
        ConfigError: unreadable TOML (the message names the file), unknown keys, bad values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{p.name}: cannot read ({exc.strerror or exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p.name}: not valid TOML ({exc})") from exc
    try:
        config = _from_mapping(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{Path(path).name if path else 'defaults'}: {exc}") from exc
    return apply_overrides(config, overrides)
