"""The four training phases of the seed notebook, resumable, on one device or two GPUs.

=====  ==============================  ==========================================================
phase  name                            what it does
=====  ==============================  ==========================================================
1      domain freezing                 backbone frozen, head trained on the Phase-1 cohort
                                       (1,600 patients by default); with no pretrained backbone
                                       the whole network trains instead, and the manifest says so
2      scale-up ("visual cortex")      continues from Phase 1 on the balanced Phase-2 cohort with
                                       the top EfficientNet blocks unfrozen, BatchNorm frozen
3      adversarial audit               Grad-CAM over validation: errors, shortcut flags, and the
                                       hard-negative list (confident false positives, negatives
                                       whose attention sits on bone, calcification or devices)
4      clinical correction             continues from Phase 2 with hard negatives over-sampled,
                                       one candidate per dropout rate; compares them by
                                       precision-recall on validation, picks the operating
                                       threshold for the target sensitivity
=====  ==============================  ==========================================================

Every phase writes ``<out_dir>/phase<N>/``: ``model.keras``, ``history.csv``,
``metrics.json``, ``run.json`` (resolved config, seeds, package versions, input
hashes). Training checkpoints after every epoch (``checkpoint/``); a rerun after a crash
or kill resumes from the last completed epoch, and because every epoch reseeds from
``(seed, epoch)`` and the checkpoint holds the optimizer and RNG state, it finishes
with the same weights as an uninterrupted run.

Hardware: :func:`distribution_strategy` picks ``tf.distribute.MirroredStrategy`` when
more than one GPU is visible (Kaggle T4 x2) and the default strategy otherwise;
:func:`precision_for_devices` picks mixed precision on GPUs of compute capability 7 or
more (T4) and float32 on P100 and CPU.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .config import RunConfig, to_dict
from .errors import ConfigError
from .provenance import atomic_write_bytes, atomic_write_text, file_sha256, run_record, write_csv, write_json
from .predict import any_column, predict_ids, profile_slices
from .rsna import LABEL_COLUMNS, TRAIN_CSV

__all__ = [
    "RunPaths",
    "prepare_data",
    "run_pretrain",
    "run_phase",
    "run_all",
    "set_dropout",
    "distribution_strategy",
    "precision_for_devices",
    "precision_policy",
    "fit_resumable",
    "reseed_model",
]


def distribution_strategy(devices: Sequence[str] | None = None, all_reduce: str = "hierarchical") -> Any:
    """The tf.distribute strategy for the visible hardware.

    Args:
        devices: device names to mirror over; default every visible GPU.
        all_reduce: ``"hierarchical"`` (``HierarchicalCopyAllReduce``, the default) or
            ``"nccl"``. Two-GPU boxes such as Kaggle's T4 x2 often lack a working NCCL
            all-reduce in the preinstalled TensorFlow (``No OpKernel was registered to support
            Op 'NcclAllReduce'``, or a hang at the first step with Keras 3,
            keras-team/keras#21069); hierarchical copy avoids NCCL and costs little at two
            replicas.

    Returns:
        ``MirroredStrategy`` over ``devices`` when there are two or more, else the default
        strategy. Global batch = per-replica batch x ``strategy.num_replicas_in_sync``.
    """
    import tensorflow as tf

    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) < 2:
        return tf.distribute.get_strategy()
    if all_reduce == "hierarchical":
        ops = tf.distribute.HierarchicalCopyAllReduce()
    elif all_reduce == "nccl":
        ops = tf.distribute.NcclAllReduce()
    else:
        raise ValueError(f"`all_reduce` must be 'hierarchical' or 'nccl'. Got {all_reduce!r} instead.")
    return tf.distribute.MirroredStrategy(devices=list(devices), cross_device_ops=ops)


def precision_for_devices() -> str:
    """``"mixed_float16"`` when every visible GPU has compute capability >= 7.0 (T4, V100, A100),
    else ``"float32"`` (P100 has no fast float16 tensor cores; CPU gains nothing)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    for gpu in gpus:
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc is None or tuple(cc) < (7, 0):
            return "float32"
    return "mixed_float16"


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[str]:
    """Set the Keras dtype policy for the duration of a block, then restore the previous one."""
    import keras

    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)


def _derive_seed(*keys: int) -> int:
    """A 31-bit seed derived from non-negative integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] % (2**31 - 1))


def _epoch_seed(seed: int, epoch: int) -> int:
    return _derive_seed(seed, epoch + 1)  # epoch -1 is the initial build


def reseed_model(model: Any, seed: int) -> int:
    """Set the state of every ``keras.random.SeedGenerator`` in ``model`` (dropout, random
    augmentation layers) from ``seed``; returns how many were set.

    A ``.keras`` checkpoint does not carry these states, so without this a resumed run
    would draw other dropout masks than an uninterrupted one.
    """
    import keras

    seen: set[int] = set()
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and id(value) not in seen:
                seen.add(id(value))
                state = value.state
                fill = np.array([seed, count], dtype=state.dtype.name if hasattr(state.dtype, "name") else state.dtype)
                state.assign(fill.reshape(tuple(state.shape)))
                count += 1
    return count


def fit_resumable(
    build: Callable[[], Any],
    train_data: Callable[[int], Any],
    out_dir: str | Path,
    epochs: int,
    *,
    seed: int,
    validation_data: Any = None,
    strategy: Any = None,
    verbose: int | str = "auto",
    callbacks: Sequence[Any] = (),
) -> tuple[Any, list[dict[str, float]]]:
    """Train epoch by epoch with a checkpoint after each, resuming from the last one.

    Args:
        build: returns a *compiled* model for a fresh start (called inside ``strategy.scope()``).
        train_data: ``epoch -> dataset`` for that epoch (its shuffling seeded from the
            epoch, so a resumed epoch sees the same batches as an uninterrupted one).
        out_dir: the phase folder; ``checkpoint/last.keras`` and ``checkpoint/state.json``
            live inside it.
        epochs: total epochs of the phase.
        seed: base seed; epoch ``e`` runs after ``keras.utils.set_random_seed(f(seed, e))``.
        validation_data: passed to ``model.fit``.
        strategy: a tf.distribute strategy (default: the current one).
        verbose: Keras' own progress bars.
        callbacks: extra Keras callbacks.

    Returns:
        (model, history): the trained model and one dict of logs per epoch (``epoch`` first).
    """
    import keras
    import tensorflow as tf

    from .model import load_model, save_model

    if epochs < 0:
        raise ValueError(f"`epochs` must be >= 0. Got {epochs} instead.")
    out = Path(out_dir)
    ckpt = out / "checkpoint" / "last.keras"
    state_path = out / "checkpoint" / "state.json"
    strategy = strategy or tf.distribute.get_strategy()
    history: list[dict[str, float]] = []
    start = 0
    with strategy.scope():
        if ckpt.is_file() and state_path.is_file():
            state = json.loads(state_path.read_text())
            start, history = int(state["completed_epochs"]), list(state["history"])
            model = load_model(ckpt, compile=True)
        else:
            keras.utils.set_random_seed(_epoch_seed(seed, -1))
            model = build()
    for epoch in range(start, epochs):
        keras.utils.set_random_seed(_epoch_seed(seed, epoch))
        reseed_model(model, _epoch_seed(seed, epoch))
        fit = model.fit(
            train_data(epoch),
            validation_data=validation_data,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=verbose,
            callbacks=list(callbacks),
            shuffle=False,  # the dataset shuffles itself, seeded per epoch
        )
        row = {"epoch": epoch + 1, **{k: float(v[-1]) for k, v in fit.history.items()}}
        history.append(row)
        save_model(model, ckpt)
        atomic_write_text(state_path, json.dumps({"completed_epochs": epoch + 1, "history": history}, indent=1))
        _write_history(out / "history.csv", history)
    return model, history


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    import pandas as pd

    write_csv(path, pd.DataFrame(history))





# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: ``data/`` (index, cohort, cache), ``pretrain/``, ``phase1/`` ... ``phase4/``."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "data" / "index"

    @property
    def cohort(self) -> Path:
        return self.root / "data" / "cohort"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    def phase(self, n: int) -> Path:
        return self.root / f"phase{n}"


def _seed(config: RunConfig, *keys: int) -> int:
    return _derive_seed(config.seed, *keys)


def prepare_data(config: RunConfig, progress: bool = True) -> Any:
    """Labels -> header index -> patient splits and nested phase cohorts -> HU cache, for one run.

    Every step is resumable and skips what is done (see :mod:`brain_audit.index`,
    :mod:`brain_audit.cache`). The audit patients are chosen first and never enter a
    training, validation or pretraining cohort (:func:`brain_audit.cohort.plan_cohorts`).

    Returns:
        The opened :class:`brain_audit.cache.HUCache`.
    """
    from .cache import build_cache
    from .cohort import CohortSpec, join_images, plan_cohorts, write_cohorts
    from .index import build_index
    from .labels import read_labels

    root = Path(config.data_root)
    if not (root / TRAIN_CSV).is_file():
        raise ConfigError(f"`data_root` must hold {TRAIN_CSV}. Got {str(root)!r} instead.")
    paths = RunPaths(Path(config.out_dir))
    labels = read_labels(root / TRAIN_CSV)
    index = build_index(root, paths.index, labels.index, workers=config.workers, progress=progress)
    images = join_images(labels, index)
    specs = []
    for name, plan in (("phase2", config.phase2), ("phase1", config.phase1)):
        n = plan.cohort_size
        if n == 0:  # the whole pool
            n = len(images) if plan.cohort_unit == "slice" else images["patient_id"].nunique()
        specs.append(CohortSpec(name, n, balance=plan.balance or None, unit=plan.cohort_unit))
    with warnings.catch_warnings():
        if 0 in (config.phase1.cohort_size, config.phase2.cohort_size):
            # "the whole pool" was asked for; cohort.json records what was drawn
            warnings.filterwarnings("ignore", message="the pool holds", category=RuntimeWarning)
        cohort, patients = plan_cohorts(
            images,
            specs,
            n_audit=config.audit_patients,
            n_pretrain=config.pretrain.patients,
            validation=config.validation_fraction,
            seed=config.seed,
        )
    write_cohorts(paths.cohort, cohort, patients, config=to_dict(config), seed=config.seed)
    return build_cache(cohort, root, paths.cache, size=config.image_size, workers=config.workers, progress=progress)


def _open_cache(config: RunConfig) -> Any:
    from .cache import open_cache

    return open_cache(RunPaths(Path(config.out_dir)).cache, size=config.image_size)


def set_dropout(model: Any, rate: float) -> int:
    """Set the rate of every Dropout layer of the classifier head; returns how many were set.

    Recompile afterwards (the train function reads the rate when it is traced).
    """
    import keras

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`rate` must be in [0, 1). Got {rate!r} instead.")
    n = 0
    for layer in model.layers:  # the head only; the backbone's stochastic depth stays as built
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
            n += 1
    return n


def _evaluate(model: Any, cache: Any, config: RunConfig, cohort: str | None, target: float) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``any``: slice- and patient-level, at the target sensitivity."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from .metrics import confusion_at, patient_level, threshold_for_sensitivity

    ids = list(cache.ids("validation", cohort))
    if len(ids) == 0:
        warnings.warn("the validation split is empty; no metrics", RuntimeWarning, stacklevel=2)
        return {"n": 0}
    y = cache.table.loc[ids, "any"].to_numpy().astype(int)
    p = predict_ids(model, cache, ids, any_column(config.head))
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum())}
    if 0 < y.sum() < len(y):
        thr = threshold_for_sensitivity(y, p, target)
        out.update(
            auc=float(roc_auc_score(y, p)),
            average_precision=float(average_precision_score(y, p)),
            threshold=thr,
            at_threshold=confusion_at(y, p, thr),
        )
        patients = cache.table.loc[ids, "patient_id"].to_numpy()
        _, yp, pp = patient_level(patients, y, p)
        if 0 < yp.sum() < len(yp):
            out["patient_auc"] = float(roc_auc_score(yp, pp))
    return out


def _finish_phase(model: Any, out: Path, config: RunConfig, metrics: dict[str, Any], **extra: Any) -> Path:
    from .model import save_model

    path = save_model(model, out / "model.keras")
    write_json(out / "metrics.json", metrics)
    write_json(
        out / "run.json",
        run_record(config, seeds={"run": config.seed}, inputs=extra.pop("inputs", {}), **extra),
    )
    return path


def run_pretrain(config: RunConfig, verbose: int | str = "auto") -> Path:
    """Domain-pretrain the backbone on the run's ``pretrain`` split (patients disjoint from audit,
    train and validation); writes ``pretrain/backbone.weights.h5`` and its manifest.

    Use ``weights = "pretrained"`` in the run config to start Phase 1 from it.
    """
    from .cache import load_split_arrays
    from .pretrain import pretrain_backbone

    out = RunPaths(Path(config.out_dir)).pretrain / "backbone.weights.h5"
    if out.is_file():
        return out
    cache = _open_cache(config)
    ids, hu, y6 = load_split_arrays(cache, "pretrain")
    if len(ids) == 0:
        raise ConfigError("`pretrain.patients` must be > 0 for `brain-audit pretrain`. Got an empty pretrain split instead.")
    plan = config.pretrain
    audit = cache.table.loc[cache.ids("audit"), "patient_id"].unique()
    labels = y6 if config.head == "six" else y6[:, [LABEL_COLUMNS.index("any")]]
    pretrain_backbone(
        hu,
        labels,
        out,
        input_size=config.image_size,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.learning_rate,
        seed=_seed(config, 0),
        val_fraction=plan.validation_fraction,
        patient_ids=cache.table.loc[ids, "patient_id"].to_numpy(),
        exclude_patients=audit,
        augment=plan.augment,
        warmup_epochs=plan.warmup_epochs,
        warmup_slices=plan.warmup_slices,
        warmup_target_auc=plan.warmup_target_auc,
        verbose=verbose,
    )
    return out


def _feed(cache: Any, config: RunConfig, split: str, batch: int, cohort: str | None, *, train: bool,
          seed: int = 0, sample_weights: dict[str, float] | None = None, augment: bool = False) -> Any:
    from .feed import make_feed

    return make_feed(
        cache, split, batch, labels=config.head, cohort=cohort, shuffle=train, augment=augment and train,
        seed=seed, sample_weights=sample_weights,
    )


def _train_phase(config: RunConfig, phase: int, cohort: str, plan: Any, build: Callable[[], Any], *,
                 strategy: Any, verbose: int | str, sample_weights: dict[str, float] | None = None,
                 out: Path | None = None, augment: bool = True) -> Any:
    cache = _open_cache(config)
    out = out or RunPaths(Path(config.out_dir)).phase(phase)
    val = _feed(cache, config, "validation", plan.batch_size, cohort, train=False)
    model, history = fit_resumable(
        build,
        lambda e: _feed(cache, config, "train", plan.batch_size, cohort, train=True, seed=_seed(config, phase, e),
                        sample_weights=sample_weights, augment=augment),
        out,
        plan.epochs,
        seed=_seed(config, phase),
        validation_data=val,
        strategy=strategy,
        verbose=verbose,
    )
    return model


def _phase1(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:
    from .model import build_model, compile_model, freeze_backbone, unfreeze_all

    plan = config.phase1
    weights = config.backbone_weights
    if weights is not None and not str(weights) == "imagenet" and not Path(weights).is_file():
        raise ConfigError(f"`weights` file not found: {weights!r} (run `brain-audit pretrain` first for 'pretrained')")
    frozen = weights is not None and plan.unfrozen_blocks == 0

    def build() -> Any:
        m = build_model(config.image_size, config.head, plan.dropout, weights=weights, seed=config.seed)
        if frozen:
            freeze_backbone(m)
        elif plan.unfrozen_blocks == -1 or weights is None:
            unfreeze_all(m)
        else:
            from .model import unfreeze_top

            unfreeze_top(m, plan.unfrozen_blocks)
        return compile_model(m, plan.learning_rate, config.head)

    out = RunPaths(Path(config.out_dir)).phase(1)
    model = _train_phase(config, 1, "phase1", plan, build, strategy=strategy, verbose=verbose, augment=plan.augment)
    if not frozen:
        _precise_bn(model, config, "phase1")
    metrics = _evaluate(model, _open_cache(config), config, "phase1", config.phase4.target_sensitivity)
    metrics["training_state"] = (
        "backbone frozen (domain freezing) on pretrained weights"
        if frozen
        else "whole network trained, BatchNormalization trainable: no pretrained backbone, a frozen random "
        "backbone stays at chance"
        if weights is None
        else f"top {plan.unfrozen_blocks} blocks unfrozen"
    )
    metrics["weights"] = str(weights)
    inputs = {"weights": file_sha256(weights)} if weights and Path(weights).is_file() else {}
    _finish_phase(model, out, config, metrics, phase=1, inputs=inputs)
    return metrics


def _precise_bn(model: Any, config: RunConfig, cohort: str, limit: int = 1024) -> None:
    """Re-estimate trainable BatchNormalization statistics on (at most ``limit``) training slices.

    After a short whole-network training the moving averages lag the weights and the
    network predicts a constant in inference mode; see :func:`brain_audit.model.recalibrate_batchnorm`.
    """
    from .model import recalibrate_batchnorm

    cache = _open_cache(config)
    ids = list(cache.ids("train", cohort))
    if not ids:
        return
    step = max(1, len(ids) // limit)
    hu = cache.hu_int16(ids[::step][:limit]).astype(np.float32)[..., None]
    recalibrate_batchnorm(model, hu, batch_size=32)


def _phase2(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:
    from .model import compile_model, load_model, unfreeze_all, unfreeze_top

    plan = config.phase2
    src = RunPaths(Path(config.out_dir)).phase(1) / "model.keras"
    _require(src, 1)

    def build() -> Any:
        m = load_model(src, compile=False)
        set_dropout(m, plan.dropout)
        if plan.unfrozen_blocks == -1:
            unfreeze_all(m, train_batchnorm=False)
        else:
            unfreeze_top(m, plan.unfrozen_blocks)
        return compile_model(m, plan.learning_rate, config.head)

    out = RunPaths(Path(config.out_dir)).phase(2)
    model = _train_phase(config, 2, "phase2", plan, build, strategy=strategy, verbose=verbose, augment=plan.augment)
    metrics = _evaluate(model, _open_cache(config), config, "phase2", config.phase4.target_sensitivity)
    _finish_phase(model, out, config, metrics, phase=2, inputs={"phase1_model": file_sha256(src)})
    return metrics


def _require(path: Path, phase: int) -> None:
    if not path.is_file():
        raise ConfigError(f"phase {phase} has not finished: {path} is missing (run `brain-audit train --phase {phase}`)")


def _truth_lesions(config: RunConfig, ids: Sequence[str], size: int) -> dict[str, np.ndarray] | None:
    """Lesion masks (any subtype) at cache resolution when the data are a phantom cohort with truth."""
    root = Path(config.data_root)
    if not (root / "phantom_truth").is_dir():
        return None
    import cv2

    from .phantom import load_truth
    from .rsna import SUBTYPES

    out = {}
    for image_id in ids:
        try:
            truth = load_truth(root, image_id)
        except (OSError, KeyError, ValueError):
            continue
        lesion = np.zeros(next(iter(truth.values())).shape, dtype=bool)
        for s in SUBTYPES:
            if s in truth:
                lesion |= truth[s].astype(bool)
        out[image_id] = cv2.resize(lesion.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out


def _audit_order(ids: Sequence[str], labels: np.ndarray, limit: int) -> np.ndarray:
    """Positions to audit: every positive first, then negatives, at most ``limit`` (deterministic)."""
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    return np.concatenate([pos, neg])[:limit]


def _phase3(config: RunConfig, verbose: int | str) -> dict[str, Any]:
    """The adversarial audit: Grad-CAM over validation, and hard negatives mined from train."""
    import pandas as pd

    from .gradcam import FLAGS, save_overlay, overlay_title
    from .model import load_model

    plan = config.phase3
    paths = RunPaths(Path(config.out_dir))
    src = paths.phase(2) / "model.keras"
    _require(src, 2)
    out = paths.phase(3)
    model = load_model(src, compile=False)
    cache = _open_cache(config)
    column = any_column(config.head)
    threshold = float(json.loads((paths.phase(2) / "metrics.json").read_text()).get("threshold", 0.5))

    # (1) findings on validation: where does the model look, and when is it right for the wrong reason?
    val_ids = cache.ids("validation", "phase2")
    y_val = cache.table.loc[val_ids, "any"].to_numpy().astype(int)
    order = _audit_order(val_ids, y_val, plan.max_slices)
    ids = [val_ids[i] for i in order]
    y = y_val[order]
    p = predict_ids(model, cache, ids, column)
    rows = profile_slices(model, cache, ids, y, p, threshold, _truth_lesions(config, ids, cache.size),
                          output_index=column, batch_size=plan.batch_size)
    findings = pd.DataFrame(rows)
    if len(findings):
        findings.insert(1, "patient_id", cache.table.loc[findings["image_id"], "patient_id"].to_numpy())
        findings["predicted"] = (findings["probability"] >= threshold).astype(int)
        findings["error"] = np.where(findings["predicted"] == findings["label"], "",
                                     np.where(findings["label"] == 1, "false_negative", "false_positive"))
    write_csv(out / "findings.csv", findings)

    # (2) hard negatives from TRAIN (never validation: Phase 4 trains on them and is judged on validation)
    tr_ids = cache.ids("train", "phase2")
    y_tr = cache.table.loc[tr_ids, "any"].to_numpy().astype(int)
    neg_ids = [tr_ids[i] for i in np.flatnonzero(y_tr == 0)]
    p_neg = predict_ids(model, cache, neg_ids, column) if neg_ids else np.empty(0)
    confident = p_neg >= plan.hard_negative_probability
    # Grad-CAM on the most suspicious negatives (highest probability first), at most max_slices
    top = np.argsort(-p_neg, kind="stable")[: plan.max_slices]
    cam_rows = profile_slices(model, cache, [neg_ids[i] for i in top], np.zeros(len(top), dtype=int),
                              p_neg[top], threshold, output_index=column, batch_size=plan.batch_size)
    off_brain = {r["image_id"]: 1.0 - r["energy_intracranial"] for r in cam_rows if not r["cam_empty"]}
    hard = []
    for i, image_id in enumerate(neg_ids):
        reasons = []
        if confident[i]:
            reasons.append(f"false positive p={p_neg[i]:.3f} >= {plan.hard_negative_probability}")
        share = off_brain.get(image_id)
        if share is not None and share >= plan.off_brain_share:
            reasons.append(f"attention {share:.0%} outside the intracranial space")
        if reasons:
            hard.append({"image_id": image_id, "probability": float(p_neg[i]), "reason": "; ".join(reasons)})
    hard_df = pd.DataFrame(hard, columns=["image_id", "probability", "reason"])
    write_csv(out / "hard_negatives.csv", hard_df)

    # (3) overlays of the worst findings: errors and flagged slices first
    if len(findings) and plan.overlays:
        flagged = findings[list(FLAGS)].fillna(False).astype(bool).any(axis=1)
        worst = findings.assign(_k=(findings["error"] != "").astype(int) * 2 + flagged.astype(int))
        worst = worst.sort_values(["_k", "probability"], ascending=[False, False]).head(plan.overlays)
        from .gradcam import grad_cam

        hu = cache.hu_int16(list(worst["image_id"])).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty maps are counted in metrics.json
            cams = grad_cam(model, hu[..., None], output_index=column)  # one batched pass
        for k, (_, r) in enumerate(worst.iterrows()):
            flags = {f: r[f] for f in FLAGS}
            save_overlay(out / "overlays" / f"{r['image_id']}.png", hu[k], cams[k],
                         title=overlay_title(r["image_id"], r["probability"], flags))

    summary: dict[str, Any] = {"audited_validation_slices": int(len(findings)), "threshold": threshold}
    if len(findings):
        summary["empty_maps"] = int(findings["cam_empty"].sum())  # no positive evidence for 'any' at all
        summary["errors"] = findings["error"].value_counts().drop("", errors="ignore").to_dict()
        summary["flag_rates"] = {
            f: float(findings[f].fillna(False).astype(bool).mean()) for f in FLAGS
        }
        summary["mean_energy"] = {
            c[len("energy_"):]: float(findings[c].mean()) for c in findings.columns if c.startswith("energy_")
        }
        if "lesion_energy" in findings:
            les = findings.dropna(subset=["lesion_energy"])
            if len(les):
                summary["pointing_game"] = {
                    "n": int(len(les)),
                    "lesion_energy_mean": float(les["lesion_energy"].mean()),
                    "lesion_area_mean": float(les["lesion_area"].mean()),
                    "hit_rate": float(les["pointing_hit"].astype(bool).mean()),
                }
    summary["hard_negatives"] = int(len(hard_df))
    summary["train_negatives_scored"] = int(len(neg_ids))
    write_json(out / "metrics.json", summary)
    write_json(out / "run.json", run_record(config, seeds={"run": config.seed}, phase=3,
                                             inputs={"phase2_model": file_sha256(src)}))
    return summary


def _phase4(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:
    """Clinical correction: one candidate per dropout rate, hard negatives over-sampled; pick by
    specificity at the target sensitivity on validation and record the operating threshold."""
    import pandas as pd
    from sklearn.metrics import precision_recall_curve

    from .figures import _pyplot, save_figure
    from .model import compile_model, load_model, save_model, unfreeze_all, unfreeze_top

    plan = config.phase4
    paths = RunPaths(Path(config.out_dir))
    src = paths.phase(2) / "model.keras"
    _require(src, 2)
    _require(paths.phase(3) / "hard_negatives.csv", 3)
    hard = pd.read_csv(paths.phase(3) / "hard_negatives.csv", dtype={"image_id": str})
    weights = {i: float(plan.hard_negative_weight) for i in hard["image_id"]}
    cache = _open_cache(config)
    column = any_column(config.head)
    val_ids = cache.ids("validation", "phase2")
    y_val = cache.table.loc[val_ids, "any"].to_numpy().astype(int)

    candidates = []
    curves = []
    predictions: dict[float, np.ndarray] = {}  # dropout rate -> validation probabilities
    for k, rate in enumerate(plan.dropouts):
        out_c = paths.phase(4) / f"dropout_{rate:g}"

        def build(rate: float = rate) -> Any:
            m = load_model(src, compile=False)
            set_dropout(m, rate)
            if plan.unfrozen_blocks == -1:
                unfreeze_all(m, train_batchnorm=False)
            else:
                unfreeze_top(m, plan.unfrozen_blocks)
            return compile_model(m, plan.learning_rate, config.head)

        if (out_c / "model.keras").is_file():
            model = load_model(out_c / "model.keras", compile=False)
        else:
            model = _train_phase(config, 40 + k, "phase2", plan, build, strategy=strategy, verbose=verbose,
                                 sample_weights=weights, out=out_c, augment=True)
            save_model(model, out_c / "model.keras")
        p = predict_ids(model, cache, list(val_ids), column)
        predictions[rate] = p
        cand: dict[str, Any] = {"dropout": rate, "model": str(out_c / "model.keras")}
        if 0 < y_val.sum() < len(y_val):
            from sklearn.metrics import average_precision_score

            from .metrics import confusion_at, threshold_for_sensitivity

            thr = threshold_for_sensitivity(y_val, p, plan.target_sensitivity)
            conf = confusion_at(y_val, p, thr)
            cand.update(threshold=thr, average_precision=float(average_precision_score(y_val, p)),
                        sensitivity=conf["sensitivity"], specificity=conf["specificity"], ppv=conf["ppv"],
                        sensitivity_at_0_5=confusion_at(y_val, p, 0.5)["sensitivity"])
            prec, rec, _ = precision_recall_curve(y_val, p)
            curves.append((rate, rec, prec, cand["average_precision"]))
        candidates.append(cand)
        write_json(out_c / "metrics.json", cand)

    scored = [c for c in candidates if "specificity" in c]
    if not scored:
        raise ConfigError("phase 4 cannot choose: the validation split needs both positive and negative slices")
    chosen = max(scored, key=lambda c: (c["specificity"], c["average_precision"], c["dropout"]))
    atomic_write_bytes(paths.phase(4) / "model.keras", Path(chosen["model"]).read_bytes())
    operating = {"threshold": chosen["threshold"], "target_sensitivity": plan.target_sensitivity,
                 "dropout": chosen["dropout"], "validation_sensitivity": chosen["sensitivity"],
                 "validation_specificity": chosen["specificity"]}
    operating.update(_patient_operating_point(predictions[chosen["dropout"]], cache, val_ids, y_val,
                                              plan.target_sensitivity))
    write_json(paths.phase(4) / "operating_point.json", operating)

    fig, ax = _pyplot().subplots(figsize=(5, 4.5))
    for rate, rec, prec, ap in curves:
        ax.plot(rec, prec, label=f"dropout {rate:g} (AP {ap:.3f})")
    ax.axvline(plan.target_sensitivity, color="grey", ls="--", lw=1, label=f"target sensitivity {plan.target_sensitivity:g}")
    ax.set_xlabel("sensitivity (recall)")
    ax.set_ylabel("precision (PPV at validation prevalence)")
    ax.set_title("Phase 4 candidates on validation")
    ax.legend(fontsize=8)
    save_figure(fig, paths.phase(4) / "pr_curves.png")

    metrics = {"candidates": candidates, "chosen": chosen, "operating_point": operating,
               "hard_negatives": int(len(hard)), "hard_negative_weight": plan.hard_negative_weight}
    write_json(paths.phase(4) / "metrics.json", metrics)
    write_json(paths.phase(4) / "run.json", run_record(config, seeds={"run": config.seed}, phase=4,
                                                       inputs={"phase2_model": file_sha256(src)}))
    return metrics


def _patient_operating_point(p: np.ndarray, cache: Any, val_ids: Sequence[str], y_val: np.ndarray,
                             target: float) -> dict[str, Any]:
    """The patient-level threshold: a patient's score is its most suspicious slice, so the slice threshold would
    call almost every patient positive; this one is chosen on validation patients for the same target sensitivity.

    ``p``: the chosen model's validation probabilities, aligned with ``val_ids``."""
    from .metrics import confusion_at, patient_level, threshold_for_sensitivity

    patients = cache.table.loc[list(val_ids), "patient_id"].to_numpy()
    _, y_pat, p_pat = patient_level(patients, y_val, p)
    if not 0 < y_pat.sum() < len(y_pat):
        return {"patient_threshold": None, "validation_patients": int(len(y_pat))}
    thr = threshold_for_sensitivity(y_pat, p_pat, target)
    conf = confusion_at(y_pat, p_pat, thr)
    return {"patient_threshold": thr, "validation_patients": int(len(y_pat)),
            "validation_patient_sensitivity": conf["sensitivity"], "validation_patient_specificity": conf["specificity"]}


def run_phase(config: RunConfig, phase: int, *, strategy: Any = None, verbose: int | str = "auto",
              force: bool = False) -> dict[str, Any]:
    """Run one phase (1-4) of ``config``; a finished phase is read back, not rerun (unless ``force``).

    Mixed precision is used on GPUs of compute capability >= 7 (:func:`precision_for_devices`);
    ``strategy`` defaults to :func:`distribution_strategy`.

    Returns:
        The phase's ``metrics.json`` as a dict.
    """
    if phase not in (1, 2, 3, 4):
        raise ConfigError(f"`phase` must be 1, 2, 3 or 4. Got {phase!r} instead.")
    out = RunPaths(Path(config.out_dir)).phase(phase)
    done = (out / "metrics.json").is_file() and (
        (out / "hard_negatives.csv").is_file() if phase == 3 else (out / "model.keras").is_file()
    )
    if done and not force:
        return json.loads((out / "metrics.json").read_text())
    strategy = strategy or distribution_strategy()
    with precision_policy(precision_for_devices()):
        if phase == 1:
            return _phase1(config, strategy, verbose)
        if phase == 2:
            return _phase2(config, strategy, verbose)
        if phase == 3:
            return _phase3(config, verbose)
        return _phase4(config, strategy, verbose)


def run_all(config: RunConfig, *, pretrain: bool | None = None, verbose: int | str = "auto",
            progress: bool = True) -> dict[int, dict[str, Any]]:
    """Prepare the data, pretrain when ``weights == "pretrained"`` (or ``pretrain``), then phases 1-4."""
    prepare_data(config, progress=progress)
    if pretrain or (pretrain is None and config.weights == "pretrained"):
        run_pretrain(config, verbose=verbose)
    return {n: run_phase(config, n, verbose=verbose) for n in (1, 2, 3, 4)}
