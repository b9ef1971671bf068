"""What every training phase runs on: devices, precision, seeds and the resumable fit loop.

:func:`distribution_strategy` mirrors over two or more GPUs (Kaggle T4 x2) with hierarchical-copy
all-reduce; :func:`precision_for_devices` picks mixed float16 on GPUs of compute capability >= 7 (T4) and
float32 on P100 and CPU. :func:`fit_resumable` checkpoints after every epoch and reseeds each epoch from
``(seed, epoch)``, so a run resumed after a kill ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from brain_audit.config import RunConfig
from brain_audit.model.weights import load_model, save_model
from brain_audit.provenance import atomic_write_text, write_csv

__all__ = ["distribution_strategy", "precision_for_devices", "precision_policy", "reseed_model", "fit_resumable"]


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

    write_csv(path, pd.DataFrame(history))


def _seed(config: RunConfig, *keys: int) -> int:
    return _derive_seed(config.seed, *keys)
