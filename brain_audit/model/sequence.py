"""The study-level model: a bidirectional GRU over a series' slice embeddings, ordered by z.

::

    slice model (Phase 4) on every slice ── GlobalAveragePooling2D features e_t (1280)  and its logits s_t (L)
    series in z order (dataset.series) ──── e (B, T, 1280), s (B, T, L), mask (B, T)
      └─ Dropout(e) ‖ s ─ Dense(units, swish) ─ Bidirectional GRU(units) ─ Dense(L), zero-initialised = delta_t
           └─ sigmoid(s_t + delta_t) ──────────── per-slice probabilities (B, T, L), float32

The output is the slice model's own logit corrected by what the neighbours say, so an untrained sequence model
*is* the slice model and training only learns the correction (a residual over z). A study's probability is its
most suspicious slice under the sequence model (:func:`study_scores`), as the max-slice rule is under the slice
model, so the two aggregations differ only by the context along z. Noise on the slice logits during training
stands in for the gap between the slice model's confidence on its own training slices and on new ones.

This is the 2-D CNN + sequence design of the RSNA 2019 winners (per-slice CNN embeddings, then a recurrent
model over the series; Wang X et al. A deep learning algorithm for automatic detection and classification of
acute intracranial hemorrhages in head CT scans. NeuroImage: Clinical 2021;32:102785).
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from brain_audit.dataset.series import SeriesPack, pack_series, unpack_series
from brain_audit.model.layers import RSNA_LABEL_WEIGHTS, WeightedBinaryCrossentropy

__all__ = ["EMBEDDING_LAYER", "build_sequence_model", "compile_sequence_model", "embedding_model",
           "logit", "pack_inputs", "score_series", "sequence_predict", "study_scores"]

#: The slice model's layer whose output is a slice's embedding (:func:`brain_audit.model.network.build_model`).
EMBEDDING_LAYER = "avg_pool"

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (the RSNA metric's own clip).
_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [1e-7, 1 - 1e-7]; float32, same shape."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q)).astype(np.float32)


def embedding_model(model: keras.Model) -> keras.Model:
    """The slice model with two outputs: its embedding (B, 1280) at :data:`EMBEDDING_LAYER` and its probabilities.

    Input contract: that of ``model`` (float32 HU, (B, S, S, 1 + 2 context)). The embedding is taken before the
    head's dropout, so it is the same in training and inference mode.

    Raises:
        ValueError: ``model`` has no layer ``avg_pool`` (not a :func:`brain_audit.model.network.build_model` model).
    """
    try:
        pooled = model.get_layer(EMBEDDING_LAYER).output
    except ValueError:
        raise ValueError(f"`model` must have a layer {EMBEDDING_LAYER!r} (a build_model network). "
                         f"Got {model.name!r} instead.") from None
    return keras.Model(model.inputs, [pooled, model.outputs[0]], name=f"{model.name}_embedding")


def build_sequence_model(embedding_dim: int, outputs: int, *, units: int = 64, dropout: float = 0.3,
                         logit_noise: float = 0.5, seed: int | None = None) -> keras.Model:
    """The study-level model (see the module docstring); uncompiled.

    Inputs: ``embedding`` float32 (B, T, embedding_dim), ``slice_logit`` float32 (B, T, outputs) (the slice
    model's logits, :func:`logit`), ``mask`` bool (B, T) (True at real slices, False at padding).
    Output: float32 (B, T, outputs) probabilities, one per slice and label (the slice model's label order).

    Args:
        embedding_dim: width of the slice embedding (1280 for EfficientNetB0).
        outputs: labels (1 for ``any``, 6 for the RSNA labels).
        units: width of the projection and of each GRU direction.
        dropout: dropout on the embedding, in [0, 1).
        logit_noise: standard deviation of Gaussian noise added to the slice logits in training (>= 0).
        seed: seeds Keras' generators before any weight is created; None leaves them alone.
    """
    for name, value, lo in (("embedding_dim", embedding_dim, 1), ("outputs", outputs, 1), ("units", units, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}. Got {value!r} instead.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Got {dropout!r} instead.")
    if not (np.isfinite(logit_noise) and logit_noise >= 0):
        raise ValueError(f"`logit_noise` must be >= 0. Got {logit_noise!r} instead.")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    emb = keras.Input((None, int(embedding_dim)), dtype="float32", name="embedding")
    s = keras.Input((None, int(outputs)), dtype="float32", name="slice_logit")
    mask = keras.Input((None,), dtype="bool", name="mask")
    s_noisy = keras.layers.GaussianNoise(float(logit_noise), seed=seed, name="logit_noise")(s)
    e = keras.layers.Dropout(float(dropout), seed=seed, name="embedding_dropout")(emb)
    h = keras.layers.Concatenate(name="features")([e, s_noisy])
    h = keras.layers.Dense(int(units), activation="swish", name="project")(h)
    h = keras.layers.Bidirectional(keras.layers.GRU(int(units), return_sequences=True, seed=seed), name="bigru")(
        h, mask=mask)
    delta = keras.layers.Dense(int(outputs), kernel_initializer="zeros", name="delta")(h)
    z = keras.layers.Add(name="corrected_logit")([s_noisy, delta])
    out = keras.layers.Activation("sigmoid", dtype="float32", name="slice_probability")(z)
    return keras.Model({"embedding": emb, "slice_logit": s, "mask": mask}, out, name="study_sequence")


def compile_sequence_model(model: keras.Model, learning_rate: float) -> keras.Model:
    """Adam and binary cross-entropy per slice (the RSNA weighting, ``any`` x2, for six labels); padding is
    excluded by the ``mask`` given as the sample weight (B, T)."""
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be > 0. Got {learning_rate!r} instead.")
    outputs = int(model.outputs[0].shape[-1])
    weights = RSNA_LABEL_WEIGHTS if outputs == len(RSNA_LABEL_WEIGHTS) else (1.0,) * outputs
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=WeightedBinaryCrossentropy(weights))
    return model


def sequence_predict(model: keras.Model, embedding: np.ndarray, slice_logit: np.ndarray, mask: np.ndarray,
                     batch_size: int = 32) -> np.ndarray:
    """Per-slice probabilities of the study model: float64 (S, T, L); padding positions are NaN."""
    inputs = {"embedding": np.asarray(embedding, np.float32), "slice_logit": np.asarray(slice_logit, np.float32),
              "mask": np.asarray(mask, bool)}
    out = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), dtype=np.float64)
    out[~inputs["mask"]] = np.nan
    return out


def study_scores(probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A series' probability per label: its most suspicious real slice; float64 (S, L) from (S, T, L)."""
    p = np.where(np.asarray(mask, bool)[..., None], np.asarray(probabilities, np.float64), -np.inf)
    return p.max(axis=1)


def pack_inputs(table: pd.DataFrame, embedding: np.ndarray, probabilities: np.ndarray,
                labels: list[str] | None = None) -> tuple[dict[str, np.ndarray], SeriesPack]:
    """The study model's inputs for the slices of ``table`` (rows aligned with ``embedding`` (N, D) and the slice
    model's ``probabilities`` (N, L)), series in z order (:func:`brain_audit.dataset.series.pack_series`).

    Returns:
        ``(inputs, pack)``: ``inputs`` the dict :func:`build_sequence_model` takes; ``pack.y`` the ``labels``.
    """
    emb = np.asarray(embedding, np.float32)
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or len(p) != len(emb):
        raise ValueError(f"`probabilities` must be (N, L) with N = {len(emb)}. Got shape {p.shape} instead.")
    pack = pack_series(table, np.concatenate([emb, logit(p)], axis=1), labels)
    d = emb.shape[1]
    inputs = {"embedding": pack.x[..., :d], "slice_logit": pack.x[..., d:], "mask": pack.mask}
    return inputs, pack


def score_series(model: keras.Model, table: pd.DataFrame, embedding: np.ndarray, probabilities: np.ndarray,
                 batch_size: int = 32) -> np.ndarray:
    """The study model's per-slice probabilities for the slices of ``table``: float64 (N, L), rows in ``table``
    order (each series read whole in z order; see :func:`pack_inputs`)."""
    if len(table) == 0:
        return np.empty((0, int(model.outputs[0].shape[-1])), dtype=np.float64)
    inputs, pack = pack_inputs(table, embedding, probabilities)
    out = sequence_predict(model, inputs["embedding"], inputs["slice_logit"], inputs["mask"], batch_size=batch_size)
    return unpack_series(out, pack)

