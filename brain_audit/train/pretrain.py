"""Domain pretraining of the EfficientNetB0 backbone, the stand-in for ImageNet.

Phase 1 freezes the backbone, which only makes sense on a pretrained one: a frozen random
EfficientNetB0 stays at chance. Where ImageNet weights cannot be had (no internet, no attached
file), or as a start that answers the seed's "ImageNet bias" limit, :func:`pretrain_backbone`
trains the whole network on a *pretraining cohort* of CT slices whose patients are disjoint
from every audit patient, then keeps only the backbone. Two stages, both set by a
:class:`brain_audit.config.PretrainPlan`:

1. **Formula-driven warm-up** (:func:`formula_slices`): generated head-like slices, half of them
   with hyperdense blobs, until an epoch's training AUC reaches ``warmup_target_auc`` (at most
   ``warmup_epochs``). From random weights EfficientNetB0 otherwise sits at chance for a random
   number of epochs; a formula it can learn gets it off that plateau.
2. **Supervised multi-label classification** on the cohort: the audit model's own task on other
   patients, RSNA-weighted binary cross-entropy for six labels (``any`` 2, subtypes 1; plain for
   ``any`` alone), the whole network trained with BatchNormalization, Adam; no self-supervised term.

The classification head is discarded; the backbone is written as ``<name>.weights.h5`` with a
JSON manifest beside it (:func:`manifest_path`), and ``brain_audit.model.build_model(weights=<that
file>)`` loads it. Because the task equals the downstream one, such a backbone is a fair stand-in
only when its patients are disjoint from the audit cohort (checked when patient ids are given).

References:
    Kataoka H, Okayasu K, Matsumoto A, et al. Pre-training without Natural Images. ACCV 2020.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from brain_audit.config import PretrainPlan, RunConfig, to_dict
from brain_audit.dataset.cache import load_split_arrays
from brain_audit.dataset.feed import Augment, augment_batch
from brain_audit.errors import CacheError, ConfigError
from brain_audit.model.network import build_model, compile_model, get_backbone, recalibrate_batchnorm, unfreeze_all
from brain_audit.provenance import atomic_path, config_differences, file_sha256, read_json, run_record, write_json
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock
from brain_audit.train.prepare import open_run_cache
from brain_audit.train.runtime import _seed
from brain_audit.windowing import resize_hu

__all__ = ["run_pretrain", "check_backbone", "PRETRAIN_KEYS", "PretrainResult", "formula_slices", "pretrain_backbone",
           "manifest_path", "cohort_sha256"]


def _objective(plan: PretrainPlan) -> str:
    """The training objective in words, for the manifest; the warm-up is named only when it runs."""
    supervised = "supervised multi-label BCE (RSNA weights for six labels), whole network incl. BatchNormalization"
    warmup = "formula-driven warm-up on generated head-like slices (Kataoka et al. 2020), then "
    return (warmup if plan.warmup_epochs else "") + supervised


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain_backbone` wrote and measured.

    Attributes:
        weights_path: the backbone weights file (``*.weights.h5``).
        manifest_path: its JSON manifest.
        history: Keras history, metric name -> per-epoch values.
        metrics: ``train_loss_last_epoch`` (Keras, training mode), and after the
            BatchNormalization recalibration ``val_loss`` and ``val_auc_any`` (ROC AUC of
            ``any`` on the held-out split, scikit-learn; NaN if it holds one class only).
    """

    weights_path: Path
    manifest_path: Path
    history: dict
    metrics: dict


def formula_slices(n: int, image_size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Formula-driven head-like CT slices for the warm-up stage of :func:`pretrain_backbone`.

    Each slice: air (-1000 HU) outside a skull ring (1000 HU +- 50, width 5 % of the side)
    around a brain disc (25-45 HU, noise SD 4 HU) of radius 34-42 % of the side, centre
    jittered by +-3 px; with probability 1/2 the slice carries one or two discs of 60-80 HU
    (noise SD 4 HU, radius 5-10 % of the side) inside the brain and is labelled 1. No anatomy,
    no patient: a formula the network can learn in a few epochs from random weights (the
    idea of Kataoka et al., "Pre-training without Natural Images", ACCV 2020).

    Args:
        n: number of slices (>= 1).
        image_size: side in pixels (>= 8).
        seed: the generator's seed (same seed, same slices).

    Returns:
        ``(hu, labels)``: float32 (n, image_size, image_size) in HU and float32 (n,) 0 / 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an int >= 1. Got {n!r} instead.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"`image_size` must be an int >= 8. Got {image_size!r} instead.")
    size = int(image_size)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n, size, size), np.float32)
    labels = np.zeros(n, np.float32)
    for i in range(n):
        cy, cx = size / 2 + rng.uniform(-3, 3, 2)
        r = size * rng.uniform(0.34, 0.42)
        d = np.hypot(yy - cy, xx - cx)
        im = np.full((size, size), -1000.0, np.float32)
        im[d < r + size * 0.05] = 1000.0 + rng.normal(0, 50)
        brain = d < r
        im[brain] = rng.uniform(25, 45) + rng.normal(0, 4, brain.sum())
        if rng.random() < 0.5:
            labels[i] = 1.0
            for _ in range(rng.integers(1, 3)):
                a, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, r * 0.6)
                blob = (np.hypot(yy - cy - rr * np.sin(a), xx - cx - rr * np.cos(a)) < size * rng.uniform(0.05, 0.1)) & brain
                im[blob] = rng.uniform(60, 80) + rng.normal(0, 4, blob.sum())
        images[i] = im
    return images, labels


def _StopAtAUC(target: float) -> Any:
    """A Keras callback ending training after the first epoch whose training AUC of ``any`` reaches ``target``."""
    import keras

    class StopAtAUC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            auc = logs.get("auc", logs.get("auc_any"))  # head "any" / head "six" (brain_audit.model.compile_model)
            if auc is not None and auc >= target:
                self.model.stop_training = True

    return StopAtAUC()


def _augmented_batches_class():
    import keras


    class AugmentedBatches(keras.utils.PyDataset):
        """Shuffled, augmented batches; epoch ``e`` batch ``i`` is a pure function of (seed, e, i)."""

        def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, aug: Any, seed: int) -> None:
            super().__init__()
            self.x, self.y, self.batch_size, self.aug, self.seed = x, y, batch_size, aug, seed
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(x))

        def __len__(self) -> int:
            return int(np.ceil(len(self.x) / self.batch_size))

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            rng = np.random.default_rng([self.seed, self.epoch, i])
            return augment_batch(self.x[idx], self.aug, rng), self.y[idx]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    return AugmentedBatches


def _AugmentedBatches(x: np.ndarray, y: np.ndarray, batch_size: int, aug: Any, seed: int) -> Any:
    return _augmented_batches_class()(x, y, batch_size, aug, seed)


def manifest_path(weights_path: str | Path) -> Path:
    """``backbone.weights.h5`` -> ``backbone.manifest.json`` (same folder)."""
    weights_path = Path(weights_path)
    stem = weights_path.name[: -len(".weights.h5")] if weights_path.name.endswith(".weights.h5") else weights_path.stem
    return weights_path.with_name(stem + ".manifest.json")


def cohort_sha256(hu_images: np.ndarray, labels: np.ndarray, patient_ids: Sequence[str] | None = None) -> str:
    """SHA-256 over the images (float32 bytes), labels (float32) and patient ids of a cohort."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(hu_images, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.float32).tobytes())
    if patient_ids is not None:
        digest.update("\n".join(map(str, patient_ids)).encode("utf-8"))
    return digest.hexdigest()


def _split(n: int, val_fraction: float, seed: int, patient_ids: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if patient_ids is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(n * val_fraction)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    ids = np.asarray([str(p) for p in patient_ids])
    unique = np.unique(ids)
    rng.shuffle(unique)
    n_val = max(1, int(round(len(unique) * val_fraction)))
    val = np.isin(ids, unique[:n_val])
    return np.flatnonzero(~val), np.flatnonzero(val)


def pretrain_backbone(
    hu_images: np.ndarray,
    labels: np.ndarray,
    out_path: str | Path,
    plan: PretrainPlan = PretrainPlan(),
    *,
    image_size: int = 96,
    seed: int = 0,
    dropout: float = 0.2,
    patient_ids: Sequence[str] | None = None,
    exclude_patients: Iterable[str] | None = None,
    verbose: int | str = "auto",
    jit_compile: bool | str = "auto",
    record: Mapping[str, Any] | None = None,
) -> PretrainResult:
    """Train EfficientNetB0 whole on a pretraining cohort and write its backbone weights.

    Input contract: ``hu_images`` float HU, (N, H, W) or (N, H, W, 1 + 2 * context); resized
    to ``image_size`` here (:func:`brain_audit.windowing.resize_hu`, area interpolation) if
    needed. ``labels``: (N,) or (N, 1) for ``any`` alone, or (N, 6) in
    :data:`brain_audit.rsna.LABEL_COLUMNS` order; 0 / 1.

    The network is :func:`brain_audit.model.build_model` with ``weights=None``, every layer
    trainable including BatchNormalization, Adam at ``plan.learning_rate``: first the warm-up
    on ``plan.warmup_slices`` :func:`formula_slices` (seeded from ``seed``; skipped when
    ``plan.warmup_epochs`` is 0), then ``plan.epochs`` on the cohort, whose held-out share
    ``plan.validation_fraction`` is split by patient when ``patient_ids`` are given (else by
    slice). With ``plan.augment`` each training batch is flipped, warped and intensity-jittered
    in HU (:class:`brain_audit.dataset.feed.Augment` defaults), seeded by (seed, epoch, batch).
    Deterministic for a given ``seed`` on one device (``keras.utils.set_random_seed``;
    shuffling from ``seed``). ``plan.patients`` is not used here (it sizes a run's split).

    Args:
        out_path: weights file to write; must end in ``.weights.h5``. The manifest goes to
            :func:`manifest_path` of it: the plan and the run-level settings, the objective,
            seed, package versions, cohort SHA-256, per-epoch history, final metrics, the
            backbone file's SHA-256.
        plan: epochs, learning rate, batch size, held-out share, augmentation and warm-up.
        image_size: model input, px (>= 32).
        seed: the one seed (weights, dropout, split, shuffling, augmentation, warm-up slices).
        dropout: dropout before the (discarded) classifier.
        patient_ids: N patient ids (for the split and the disjointness check).
        exclude_patients: audit patients; any overlap with ``patient_ids`` is an error.
        verbose: passed to ``model.fit``.
        jit_compile: passed to :func:`brain_audit.model.compile_model` (XLA pays off over
            many steps; a compile costs tens of seconds on CPU).
        record: further top-level fields of the manifest (:func:`run_pretrain` records the run's
            configuration there, to check a later reuse against it).

    Returns:
        :class:`PretrainResult`.

    Raises:
        ValueError: bad shapes or parameters, or pretraining patients that are audit patients.
    """
    import keras

    out_path = Path(out_path)
    if not out_path.name.endswith(".weights.h5"):
        raise ValueError(f"`out_path` must end in '.weights.h5'. Got {str(out_path)!r} instead.")
    if not isinstance(plan, PretrainPlan):
        raise ValueError(f"`plan` must be a brain_audit.config.PretrainPlan. Got {type(plan).__name__} instead.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"`image_size` must be an int >= 32. Got {image_size!r} instead.")
    x = np.asarray(hu_images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] % 2 != 1:
        raise ValueError(f"`hu_images` must be (N, H, W) or (N, H, W, 1 + 2 * context). Got shape {x.shape} instead.")
    y = np.asarray(labels, dtype=np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] not in (1, len(LABEL_COLUMNS)):
        raise ValueError(
            f"`labels` must be (N,), (N, 1) or (N, {len(LABEL_COLUMNS)}) with N = {x.shape[0]}. "
            f"Got shape {y.shape} instead."
        )
    if patient_ids is not None and len(patient_ids) != x.shape[0]:
        raise ValueError(f"`patient_ids` must have N = {x.shape[0]} entries. Got {len(patient_ids)} instead.")
    if exclude_patients is not None:
        if patient_ids is None:
            raise ValueError("`exclude_patients` needs `patient_ids` to check the cohorts are disjoint.")
        overlap = sorted(set(map(str, patient_ids)) & set(map(str, exclude_patients)))
        if overlap:
            raise ValueError(
                f"pretraining cohort shares {len(overlap)} patients with the audit cohort "
                f"(e.g. {overlap[:3]}); the pretraining cohort must be disjoint"
            )
    image_size, seed, batch_size = int(image_size), int(seed), int(plan.batch_size)
    if x.shape[1:3] != (image_size, image_size):
        x = np.stack([np.stack([resize_hu(im[..., c], image_size) for c in range(x.shape[-1])], -1) for im in x])

    head = "six" if y.shape[1] == len(LABEL_COLUMNS) else "any"
    context = (x.shape[-1] - 1) // 2
    settings = {
        **dataclasses.asdict(plan),
        "image_size": image_size,
        "seed": seed,
        "dropout": float(dropout),
        "head": head,
        "context": context,
        "augmentation": dataclasses.asdict(Augment()) if plan.augment else None,
        "objective": _objective(plan),
    }
    cohort_hash = cohort_sha256(x, y, patient_ids)
    train_idx, val_idx = _split(len(x), plan.validation_fraction, seed, patient_ids)

    model = build_model(image_size=image_size, head=head, dropout=dropout, weights=None, seed=seed, context=context)
    unfreeze_all(model, train_batchnorm=True)
    compile_model(model, lr=plan.learning_rate, head=head, jit_compile=jit_compile)
    t0 = time.perf_counter()
    warmup_history: dict = {}
    if plan.warmup_epochs:
        xw, yw = formula_slices(plan.warmup_slices, image_size, seed=seed)
        xw = np.repeat(xw[..., None], x.shape[-1], axis=-1)  # 2.5D: the formula slice as its own neighbours
        yw = np.repeat(yw[:, None], y.shape[1], axis=1)  # every column (subtypes unknown): the blob label
        warmup_history = model.fit(xw, yw, epochs=plan.warmup_epochs, batch_size=batch_size, shuffle=True,
                                   verbose=verbose, callbacks=[_StopAtAUC(plan.warmup_target_auc)]).history
    # No validation inside fit: until the BatchNormalization statistics are recalibrated
    # below, inference-mode metrics are meaningless (the moving statistics lag the trained
    # weights); the held-out split is scored once, afterwards.
    if plan.augment:
        batches = _AugmentedBatches(x[train_idx], y[train_idx], batch_size, Augment(), seed)
        history = model.fit(batches, epochs=plan.epochs, verbose=verbose).history
    else:
        history = model.fit(
            x[train_idx], y[train_idx], epochs=plan.epochs, batch_size=batch_size, shuffle=True, verbose=verbose
        ).history
    recalibrate_batchnorm(model, x[train_idx], batch_size=batch_size)
    seconds = time.perf_counter() - t0

    from sklearn.metrics import roc_auc_score

    p_val = model.predict(x[val_idx], batch_size=batch_size, verbose=0)
    y_any = y[val_idx, -1]  # ``any`` is the last of LABEL_COLUMNS, and the only column of head "any"
    val_auc = float(roc_auc_score(y_any, p_val[:, -1])) if len(np.unique(y_any)) == 2 else float("nan")
    val_loss = float(model.compute_loss(y=y[val_idx], y_pred=p_val))
    metrics = {
        "train_loss_last_epoch": float(history["loss"][-1]),
        "val_loss": val_loss,
        "val_auc_any": val_auc,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "train_seconds": round(seconds, 1),
    }
    if warmup_history:
        metrics["warmup_epochs_run"] = len(warmup_history["loss"])
        metrics["warmup_train_loss_last_epoch"] = float(warmup_history["loss"][-1])

    with atomic_path(out_path, suffix=".weights.h5") as tmp:
        get_backbone(model).save_weights(tmp, overwrite=True)
    record = run_record(
        config=settings,
        seeds={"seed": seed},
        inputs={"cohort_sha256": cohort_hash},
        kind="brain_audit.pretrain_backbone",
        backbone={"architecture": "EfficientNetB0", "include_top": False, "imagenet_input_rescaling": False},
        weights_file=out_path.name,
        weights_sha256=file_sha256(out_path),
        n_patients=None if patient_ids is None else int(len(set(map(str, patient_ids)))),
        n_slices=int(len(x)),
        history={k: [float(v) for v in vals] for k, vals in history.items()},
        warmup_history={k: [float(v) for v in vals] for k, vals in warmup_history.items()},
        metrics=metrics,
        keras_backend=keras.backend.backend(),
        **dict(record or {}),
    )
    man = write_json(manifest_path(out_path), record)
    return PretrainResult(weights_path=out_path, manifest_path=man, history=record["history"], metrics=metrics)


#: The settings a run's pretrained backbone depends on: its plan, the input, the labels, the seed and the
#: patients it is trained on (those left after the audit patients, drawn with the run's seed).
PRETRAIN_KEYS = (*(f"pretrain.{f.name}" for f in dataclasses.fields(PretrainPlan)), "image_size", "context", "head",
                 "seed", "audit_patients")


def _shown(value: Any) -> str:
    return json.dumps(value)


def _refusal(stage: str, config: RunConfig, detail: str, verb: str = "trained") -> ConfigError:
    """The one-line refusal to reuse a stage of a run folder that answers another request."""
    again = "retrain" if verb == "trained" else "rerun"
    return ConfigError(f"{stage} in {config.out_dir} was {verb} {detail}. Use --force to {again} it, or another --out.")


def _differing(diffs: Sequence[tuple[str, Any, Any]]) -> str:
    """``with KEY=OLD; this run asks NEW`` for the first difference, naming the other differing keys."""
    key, old, new = diffs[0]
    text = f"with {key}={_shown(old)}; this run asks {_shown(new)}"
    if len(diffs) > 1:
        text += f" (other keys differ too: {', '.join(k for k, _, _ in diffs[1:])})"
    return text


def _split_digest(cache: Any, split: str) -> str:
    """SHA-256 of a split's image IDs, patients and labels in the cache table (not of its pixels)."""
    t = cache.table[cache.table["split"] == split].sort_index()
    rows = t.reset_index()[["image_id", "patient_id", *LABEL_COLUMNS]].astype(str).to_numpy().tolist()
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def check_backbone(config: RunConfig) -> None:
    """Refuse the run's pretrained backbone if it was trained for other settings than ``config``'s.

    Compares the run configuration its manifest records on :data:`PRETRAIN_KEYS` (a manifest of an
    older version: the plan, ``image_size`` and ``head``) and, when the run's cache opens, the
    pretraining split (its image IDs, patients and labels). Nothing to check without a backbone.

    Raises:
        ConfigError: one line naming the first differing key and both values, e.g. ``pretrain in runs/x
            was trained with pretrain.epochs=14; this run asks 3. Use --force to retrain it, or another --out.``
    """
    out = RunPaths(config.out_dir).backbone
    manifest = read_json(manifest_path(out))
    if manifest is None:
        return
    if isinstance(manifest.get("run_config"), dict):
        recorded = manifest["run_config"]
    else:  # written before the run configuration was recorded: what pretrain_backbone's own settings say
        settings = manifest.get("config") or {}
        recorded = {"pretrain": {f.name: settings[f.name] for f in dataclasses.fields(PretrainPlan) if f.name in settings},
                    **{k: settings[k] for k in ("image_size", "head") if k in settings}}
    diffs = config_differences(recorded, config, PRETRAIN_KEYS)
    if diffs:
        raise _refusal("pretrain", config, _differing(diffs))
    if manifest.get("pretrain_split"):
        try:
            cache = open_run_cache(config)
        except CacheError:  # no cache (yet) at this size: nothing to compare the split with
            return
        if _split_digest(cache, "pretrain") != manifest["pretrain_split"]:
            raise _refusal("pretrain", config, "on another pretraining split (its patients or labels have changed "
                           "since; see data/cohort/cohort.csv)")


def run_pretrain(config: RunConfig, verbose: int | str = "auto", *, force: bool = False) -> Path:
    """Domain-pretrain the backbone on the run's ``pretrain`` split (patients disjoint from audit,
    train and validation); writes ``pretrain/backbone.weights.h5`` and its manifest. With ``context`` > 0 the
    pretraining model reads the run's 2.5-D input (the backbone itself takes the three windows either way).

    Use ``weights = "pretrained"`` in the run config to start Phase 1 from it. A backbone the run
    folder already holds (weights and manifest) is reused when it was trained for the same settings
    (:func:`check_backbone`), retrained with ``force``, and otherwise refused. The run folder is held
    for the whole call (:func:`brain_audit.run_lock.run_lock`).

    Raises:
        ConfigError: the run folder is in use by another process; the backbone it holds was trained
            for other settings (and not ``force``); the pretrain split is empty.
    """
    with run_lock(config.out_dir):
        out = RunPaths(config.out_dir).backbone
        if not force and out.is_file() and manifest_path(out).is_file():
            check_backbone(config)
            return out
        cache = open_run_cache(config)
        ids, hu, y6 = load_split_arrays(cache, "pretrain", context=config.context)  # 2.5-D: the run's neighbours
        if len(ids) == 0:
            raise ConfigError("`pretrain.patients` must be > 0 for `brain-audit pretrain`. Got an empty pretrain split "
                              "instead.")
        audit = cache.table.loc[cache.ids("audit"), "patient_id"].unique()
        labels = y6 if config.head == "six" else y6[:, [LABEL_COLUMNS.index("any")]]
        manifest_path(out).unlink(missing_ok=True)  # weights without a manifest are never reused
        pretrain_backbone(
            hu,
            labels,
            out,
            config.pretrain,
            image_size=config.image_size,
            seed=_seed(config, 0),
            patient_ids=cache.table.loc[ids, "patient_id"].to_numpy(),
            exclude_patients=audit,
            verbose=verbose,
            record={"run_config": to_dict(config), "pretrain_split": _split_digest(cache, "pretrain")},
        )
        return out
