"""The classifier: Hounsfield units in, hemorrhage probabilities out, and its training states.

::

    HU (B, S, S, 1 + 2 * context), float32
      └─ MultiWindow ──────────── brain / subdural / bone, float in [0, 255]   (B, S, S, 3)
           └─ EfficientNetB0 ───── nested sub-model "efficientnetb0", no top;   (B, S/32, S/32, 1280)
                │                  rescales / normalises internally
                └─ GlobalAveragePooling2D ─ Dropout ─ Dense sigmoid (float32)    (B, 1) or (B, 6)

The windows live inside the network, so a saved model takes raw HU and nothing is lost to 8 bits. Training
states (recompile with :func:`compile_model` after every change): :func:`freeze_backbone` (Phase 1 on a
pretrained backbone), :func:`unfreeze_top` (Phase 2: whole top blocks, BatchNorm frozen, as the Keras
transfer-learning guide requires) and :func:`unfreeze_all` (domain pretraining; Phase 1 without a
pretrained backbone).

References:
    Tan M, Le QV. EfficientNet. ICML 2019, arXiv:1905.11946.
    Chollet F. Transfer learning & fine-tuning, keras.io/guides/transfer_learning/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from brain_audit.errors import WeightsFileError, WeightsFileNotFoundError
from brain_audit.model.layers import RSNA_LABEL_WEIGHTS, ColumnAUC, MultiWindow, WeightedBinaryCrossentropy
from brain_audit.model.weights import _is_imagenet_file, install_imagenet_weights
from brain_audit.rsna import LABEL_COLUMNS

__all__ = [
    "BACKBONE_NAME",
    "build_model",
    "get_backbone",
    "block_of",
    "backbone_blocks",
    "freeze_backbone",
    "unfreeze_top",
    "unfreeze_all",
    "compile_model",
    "recalibrate_batchnorm",
]


#: Name of the nested EfficientNetB0 sub-model (Keras' own name; the ImageNet file name derives from it).
BACKBONE_NAME = "efficientnetb0"


_HEADS = {"any": 1, "six": len(LABEL_COLUMNS)}


def _make_backbone(image_size: int, weights: str | Path | None) -> keras.Model:
    shape = (image_size, image_size, 3)
    if weights is None:
        return keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape)
    if isinstance(weights, str) and weights == "imagenet":
        return keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=shape)
    if not isinstance(weights, (str, Path)):
        raise ValueError(f"`weights` must be 'imagenet', a file path or None. Got {weights!r} instead.")
    path = Path(weights)
    if not path.is_file():
        raise WeightsFileNotFoundError(f"{path}: no such weights file (`weights` must be 'imagenet', a file path or None)")
    if _is_imagenet_file(path):
        install_imagenet_weights(path)
        return keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=shape)
    backbone = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape)
    try:
        backbone.load_weights(path)
    except (OSError, ValueError) as exc:  # h5py's OSError for a non-HDF5 file, Keras' ValueError for another graph
        raise WeightsFileError(f"{path}: not a weights file of EfficientNetB0 ({type(exc).__name__}: {exc})") from exc
    return backbone


def build_model(
    image_size: int = 256,
    head: Literal["any", "six"] = "any",
    dropout: float = 0.2,
    weights: str | Path | None = "imagenet",
    trainable_windows: bool = False,
    seed: int | None = None,
    *,
    context: int = 0,
    window_function: Literal["linear_exact", "sigmoid"] | None = None,
    name: str = "brain_audit_effnetb0",
) -> keras.Model:
    """HU input -> MultiWindow -> EfficientNetB0 (nested, no top) -> GAP -> Dropout -> Dense sigmoid.

    Input contract: float32 HU, shape (B, image_size, image_size, 1 + 2 * context); the
    slices already resized to ``image_size`` (:func:`brain_audit.windowing.resize_hu`).
    Output: float32 probabilities (B, 1) for ``head="any"`` or (B, 6) for ``head="six"``
    in :data:`brain_audit.rsna.LABEL_COLUMNS` order (five subtypes, then ``any``), also
    under a mixed-precision policy (the output layer is float32).

    The model is returned uncompiled with every layer trainable; set the training state
    (:func:`freeze_backbone`, :func:`unfreeze_top`, :func:`unfreeze_all`) and then call
    :func:`compile_model`.

    Args:
        image_size: image side in pixels, >= 32 (EfficientNet's minimum).
        head: ``"any"`` (1 output) or ``"six"`` (the RSNA labels).
        dropout: dropout rate before the classifier, in [0, 1).
        weights: ``"imagenet"`` (Keras cache, else a download), a path to Keras'
            ``efficientnetb0_notop.h5`` (installed into the cache, identical graph), a path
            to a domain backbone weights file (e.g. ``*.weights.h5`` from
            :func:`brain_audit.train.pretrain.pretrain_backbone`), or ``None`` (random init).
            See the module docstring.
        trainable_windows: learn window centres and widths (Lee et al. 2018).
        seed: seeds Keras' global generators (``keras.utils.set_random_seed``) before any
            weight is created, and the dropout layer; ``None`` leaves them alone.
        context: neighbouring slices on each side (2.5D); see :class:`MultiWindow`.
        window_function: see :class:`MultiWindow`.
        name: model name.

    Returns:
        An uncompiled :class:`keras.Model` whose layer ``"efficientnetb0"`` is the backbone.

    References:
        Tan M, Le QV. EfficientNet. ICML 2019, arXiv:1905.11946.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"`image_size` must be an int >= 32. Got {image_size!r} instead.")
    if head not in _HEADS:
        raise ValueError(f"`head` must be one of {tuple(_HEADS)}. Got {head!r} instead.")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"`dropout` must be in [0, 1). Got {dropout!r} instead.")
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ValueError(f"`context` must be an int >= 0. Got {context!r} instead.")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    image_size = int(image_size)
    inputs = keras.Input((image_size, image_size, 1 + 2 * int(context)), dtype="float32", name="hu")
    x = MultiWindow(function=window_function, trainable_windows=trainable_windows, name="multi_window")(inputs)
    backbone = _make_backbone(image_size, weights)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(float(dropout), seed=seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(_HEADS[head], activation="sigmoid", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested EfficientNetB0 of a :func:`build_model` model (or the backbone itself)."""
    if model.name == BACKBONE_NAME:
        return model
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError:
        raise ValueError(f"`model` has no nested backbone named {BACKBONE_NAME!r}; build it with build_model") from None


_BLOCK_RE = re.compile(r"^(block\d+[a-z])_")


def block_of(layer_name: str) -> str:
    """EfficientNet unit of a backbone layer: ``"block6d"`` for ``block6d_expand_conv``,
    ``"top"`` for ``top_conv`` / ``top_bn`` / ``top_activation``, else ``"stem"``
    (input rescaling / normalisation and ``stem_*``)."""
    m = _BLOCK_RE.match(layer_name)
    if m:
        return m.group(1)
    return "top" if layer_name.startswith("top_") else "stem"


def backbone_blocks(model: keras.Model) -> list[str]:
    """The backbone's units from input to output: ``["stem", "block1a", ..., "block7a", "top"]``
    (18 for EfficientNetB0). :func:`unfreeze_top` counts them from the end."""
    seen: list[str] = []
    for layer in get_backbone(model).layers:
        unit = block_of(layer.name)
        if unit not in seen:
            seen.append(unit)
    return seen


def _set_backbone(model: keras.Model, units: set[str], train_batchnorm: bool) -> None:
    backbone = get_backbone(model)
    backbone.trainable = True  # the container; each layer is then set explicitly
    for layer in backbone.layers:
        bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = block_of(layer.name) in units and (train_batchnorm or not bn)
    if not any(layer.trainable for layer in backbone.layers):
        backbone.trainable = False


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Phase 1 on a pretrained backbone: the whole backbone frozen (BatchNormalization in
    inference mode); the head and any trainable windows / slice mix stay as they are.

    Recompile afterwards (:func:`compile_model`). Returns ``model`` (changed in place).
    """
    get_backbone(model).trainable = False
    return model


def unfreeze_top(model: keras.Model, blocks: int) -> keras.Model:
    """Phase 2: make the top ``blocks`` whole units of the backbone trainable.

    Units are counted from the output: 1 = ``top`` (``top_conv``/``top_bn``), 2 = also
    ``block7a``, 3 = also ``block6d``, ... (see :func:`backbone_blocks`). A unit is
    always unfrozen whole, never half a block; every BatchNormalization layer stays frozen
    (inference mode), as the Keras transfer-learning guide requires for fine-tuning.
    ``blocks=0`` is :func:`freeze_backbone`. Recompile afterwards.

    Raises:
        ValueError: ``blocks`` outside [0, number of units].
    """
    units = backbone_blocks(model)
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or not 0 <= blocks <= len(units):
        raise ValueError(f"`blocks` must be in [0, {len(units)}]. Got {blocks!r} instead.")
    _set_backbone(model, set(units[len(units) - int(blocks) :]), train_batchnorm=False)
    return model


def unfreeze_all(model: keras.Model, train_batchnorm: bool = True) -> keras.Model:
    """The whole backbone trainable; BatchNormalization too unless ``train_batchnorm=False``.

    For domain pretraining and for Phase 1 without any pretrained backbone. Recompile afterwards.
    """
    _set_backbone(model, set(backbone_blocks(model)), train_batchnorm=train_batchnorm)
    return model


def compile_model(
    model: keras.Model,
    lr: float,
    head: Literal["any", "six"] | None = None,
    *,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile with Adam, binary cross-entropy and ROC AUC metrics. Call after every
    change of trainable state: Keras gathers the trainable variables when it builds the
    train function, so a change without recompiling is silently ignored.

    Loss: plain binary cross-entropy for ``head="any"``; for ``head="six"`` the RSNA
    weighting (``any`` 2, each subtype 1; :class:`WeightedBinaryCrossentropy`). Metrics:
    ``auc`` (``"any"``), or ``auc_any`` (the ``any`` column) and ``auc_mean`` (mean over
    the six labels) for ``"six"``.

    Args:
        lr: Adam learning rate, > 0.
        head: ``None`` infers it from the number of outputs.
    """
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be > 0. Got {lr!r} instead.")
    outputs = model.outputs[0].shape[-1]
    if head is None:
        head = "six" if outputs == _HEADS["six"] else "any"
    if head not in _HEADS:
        raise ValueError(f"`head` must be one of {tuple(_HEADS)}. Got {head!r} instead.")
    if _HEADS[head] != outputs:
        raise ValueError(f"`head` {head!r} needs {_HEADS[head]} outputs; the model has {outputs}.")
    if head == "six":
        loss = WeightedBinaryCrossentropy(RSNA_LABEL_WEIGHTS)
        metrics = [
            ColumnAUC(column=LABEL_COLUMNS.index("any"), name="auc_any"),
            keras.metrics.AUC(multi_label=True, num_labels=len(LABEL_COLUMNS), name="auc_mean"),
        ]
    else:
        loss = keras.losses.BinaryCrossentropy(name="bce")
        metrics = [keras.metrics.AUC(name="auc")]
    model.compile(optimizer=keras.optimizers.Adam(float(lr)), loss=loss, metrics=metrics, jit_compile=jit_compile)
    return model


def recalibrate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> keras.Model:
    """Re-estimate the moving mean / variance of every trainable BatchNormalization layer
    as the exact average of batch statistics over ``images`` ("precise BN").

    After a short whole-network training the moving averages (momentum 0.99 in Keras'
    EfficientNet, so ~100 steps of memory) still lag the weights, and the network in
    inference mode predicts a constant even when training accuracy is high (measured
    here: training AUC 0.99, held-out AUC 0.5 after 60 steps). This pass replaces them
    with the mean over batches of the batch statistics, computed with the network in
    training mode and its weights unchanged. Frozen BatchNormalization layers are left alone.

    Input contract: ``images`` as the model's input (float32 HU, (N, S, S, C)).

    References:
        Wu Y, Johnson J. Rethinking "Batch" in BatchNorm. arXiv:2105.07576 (2021), "PreciseBN".
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1. Got {batch_size!r} instead.")
    images = np.asarray(images, dtype=np.float32)
    bns = [
        layer
        for layer in get_backbone(model).layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not bns or len(images) == 0:
        return model
    momenta = [bn.momentum for bn in bns]
    # the other layers must not change: dropout is the only training-mode effect outside BN
    try:
        for k, start in enumerate(range(0, len(images), batch_size)):
            for bn in bns:
                bn.momentum = k / (k + 1.0)  # running mean of batch statistics; k = 0 overwrites
            model(images[start : start + batch_size], training=True)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return model

