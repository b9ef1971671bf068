"""The classifier: Hounsfield units in, hemorrhage probabilities out.

``layers`` (the MultiWindow layer, the RSNA-weighted loss, a per-column AUC), ``competition`` (the RSNA 2019
competition metric, weighted multi-label log loss), ``network``
(EfficientNetB0 assembly, freezing states, precise BatchNorm), ``weights`` (ImageNet file
offline, save / load) and ``predictions`` (the model applied to HU arrays or cached slices).

Input contract: float32 HU (B, S, S, 1 + 2 * context); the windows are applied inside the network.
"""

from __future__ import annotations

from brain_audit.model.competition import image_log_losses, weighted_log_loss
from brain_audit.model.layers import RSNA_LABEL_WEIGHTS, ColumnAUC, MultiWindow, WeightedBinaryCrossentropy
from brain_audit.model.network import (
    BACKBONE_NAME,
    backbone_blocks,
    block_of,
    build_model,
    compile_model,
    freeze_backbone,
    get_backbone,
    recalibrate_batchnorm,
    unfreeze_all,
    unfreeze_top,
)
from brain_audit.model.predictions import any_column, model_context, predict, predict_ids
from brain_audit.model.weights import (
    IMAGENET_NOTOP_FILENAME,
    IMAGENET_NOTOP_MD5,
    imagenet_weights_available,
    install_imagenet_weights,
    keras_cache_dir,
    load_model,
    save_model,
)

__all__ = [
    "RSNA_LABEL_WEIGHTS",
    "MultiWindow",
    "WeightedBinaryCrossentropy",
    "ColumnAUC",
    "image_log_losses",
    "weighted_log_loss",
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
    "IMAGENET_NOTOP_FILENAME",
    "IMAGENET_NOTOP_MD5",
    "keras_cache_dir",
    "imagenet_weights_available",
    "install_imagenet_weights",
    "save_model",
    "load_model",
    "any_column",
    "model_context",
    "predict",
    "predict_ids",
]
