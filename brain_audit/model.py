"""The classifier: Hounsfield units in, hemorrhage probabilities out.

::

    HU (B, S, S, 1 + 2 * context), float32
      └─ MultiWindow ──────────── brain / subdural / bone, float in [0, 255]   (B, S, S, 3)
           └─ EfficientNetB0 ───── nested sub-model named ``"efficientnetb0"``,  (B, S/32, S/32, 1280)
                │                  no top; rescales / normalises internally
                └─ GlobalAveragePooling2D ─ Dropout ─ Dense sigmoid (float32)    (B, 1) or (B, 6)

The windows live inside the network, so a saved ``.keras`` model takes raw HU and
nothing is lost to 8 bits (:mod:`brain_audit.windowing` is the numpy reference of
the same windows). The backbone is a nested :class:`keras.Model`, which is what
:func:`freeze_backbone`, :func:`unfreeze_top` and Grad-CAM look up with
:func:`get_backbone`.

Backbone weights (``build_model(weights=...)``):

* ``"imagenet"``: Keras' own file ``efficientnetb0_notop.h5``, from the Keras cache
  (``$KERAS_HOME/models/``, default ``~/.keras/models/``) or downloaded from
  ``https://storage.googleapis.com/keras-applications/`` when missing (needs internet).
  Check the cache with :func:`imagenet_weights_available`.
* a path to that same ImageNet file (Kaggle with internet off, file attached as a
  dataset): recognised by its MD5, copied into the Keras cache by
  :func:`install_imagenet_weights` and built exactly as ``"imagenet"``. Keras adds an
  extra input ``Rescaling(1/sqrt(stddev))`` only when ``weights == "imagenet"``
  (keras/src/applications/efficientnet.py; tensorflow/tensorflow#62193), so passing the
  file as a path straight to Keras would build a different graph and feed the
  ImageNet filters wrongly scaled inputs. Routing the file through the cache gives the
  identical graph by construction.
* a path to a domain backbone (``*.weights.h5`` written by
  :func:`brain_audit.pretrain.pretrain_backbone`, or another EfficientNetB0 backbone
  file): loaded into the randomly initialised graph (no ImageNet rescaling).
* ``None``: random initialisation (He-style ``VarianceScaling`` of Keras).

Training states (call :func:`compile_model` after *every* change; Keras collects the
trainable variables when the train function is built):

* :func:`freeze_backbone`: Phase 1 on a pretrained backbone, head (and trainable windows) only.
* :func:`unfreeze_top`: Phase 2, the top ``blocks`` whole EfficientNet blocks trainable,
  every BatchNormalization frozen (Keras transfer-learning guide).
* :func:`unfreeze_all`: the whole network, BatchNormalization trainable by default: domain
  pretraining, and Phase 1 when no pretrained backbone exists (a frozen random backbone
  stays at chance, measured in issue 5).

References:
    Tan M, Le QV. EfficientNet: Rethinking Model Scaling for Convolutional Neural
    Networks. ICML 2019, arXiv:1905.11946.
    Lee H, Kim M, Do S. Practical Window Setting Optimization for Medical Image Deep
    Learning. NeurIPS ML4H 2018, arXiv:1812.00572.
    Chollet F. Transfer learning & fine-tuning, https://keras.io/guides/transfer_learning/
    (BatchNormalization stays in inference mode when fine-tuning).
    Flanders AE et al. The RSNA 2019 Brain CT Hemorrhage Challenge. Radiology: AI 2020
    (weighted log loss: ``any`` 2, each subtype 1).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal, Sequence

import keras
import numpy as np
from keras import ops

from .rsna import LABEL_COLUMNS
from .windowing import BSB, Window

__all__ = [
    "BACKBONE_NAME",
    "IMAGENET_NOTOP_FILENAME",
    "IMAGENET_NOTOP_MD5",
    "RSNA_LABEL_WEIGHTS",
    "MultiWindow",
    "WeightedBinaryCrossentropy",
    "ColumnAUC",
    "build_model",
    "get_backbone",
    "backbone_blocks",
    "block_of",
    "freeze_backbone",
    "unfreeze_top",
    "unfreeze_all",
    "compile_model",
    "recalibrate_batchnorm",
    "save_model",
    "load_model",
    "keras_cache_dir",
    "imagenet_weights_available",
    "install_imagenet_weights",
]

#: Name of the nested EfficientNetB0 sub-model (Keras' own name; the ImageNet file name derives from it).
BACKBONE_NAME = "efficientnetb0"

#: File Keras looks for in ``<keras cache>/models/`` for ``EfficientNetB0(include_top=False, weights="imagenet")``;
#: ``BASE_WEIGHTS_PATH + name + "_notop.h5"`` in keras/src/applications/efficientnet.py.
IMAGENET_NOTOP_FILENAME = "efficientnetb0_notop.h5"

#: Its MD5 (``WEIGHTS_HASHES["b0"][1]`` in keras/src/applications/efficientnet.py), which Keras checks.
IMAGENET_NOTOP_MD5 = "50bc09e76180e00e4465e1a485ddc09d"

_IMAGENET_URL = "https://storage.googleapis.com/keras-applications/" + IMAGENET_NOTOP_FILENAME

#: RSNA 2019 weighted log loss, in :data:`brain_audit.rsna.LABEL_COLUMNS` order (five subtypes, then ``any``).
RSNA_LABEL_WEIGHTS: tuple[float, ...] = tuple(2.0 if c == "any" else 1.0 for c in LABEL_COLUMNS)

_HEADS = {"any": 1, "six": len(LABEL_COLUMNS)}
_FUNCTIONS = ("linear_exact", "sigmoid")


# ---------------------------------------------------------------- MultiWindow
@keras.saving.register_keras_serializable(package="brain_audit")
class MultiWindow(keras.layers.Layer):
    """Hounsfield units -> brain / subdural / bone channels in [0, 255], inside the network.

    Input contract: float HU, shape (B, H, W, C) with C = 1 + 2 * context slices (odd);
    the centre slice is channel ``C // 2``. Output: (B, H, W, len(windows)) in the
    layer's compute dtype, pixel values in [0, 255], the input contract of Keras
    EfficientNet (which rescales and normalises itself).

    Window functions (``function``):

    * ``"linear_exact"`` (default): ``255 * clip((x - c) / w + 0.5, 0, 1)``, exactly
      :func:`brain_audit.windowing.window` (DICOM PS3.3 C.11.2.1.3.2) times 255. Its gradient
      with respect to ``c`` and ``w`` is zero for every pixel outside the window.
    * ``"sigmoid"``: ``255 / (1 + exp(-2 ln(1/eps - 1) (x - c) / w))``, exactly
      :func:`brain_audit.windowing.sigmoid_window` times 255 (``eps`` from 0 / 1 at the window
      edges). This is Lee et al.'s window-setting-optimisation sigmoid with upper bound 1;
      every pixel contributes a gradient to ``c`` and ``w``, so it is the default when the
      windows are trainable.

    Trainable windows (``trainable_windows=True``, Lee et al. 2018): ``centers`` and ``widths``
    (HU, float32, shape (n,)) are weights initialised at ``windows``; widths are kept >= 0 by a
    non-negativity constraint and read as ``max(width, 1 HU)``. Fixed windows are the same
    weights, non-trainable, so a saved model always carries the windows it used.

    2.5D input (C > 1): each output channel k is ``sum_s mix[s, k] * window_k(slice s)``
    with a trainable ``slice_mix`` (C, n) initialised to the centre slice only, so at
    initialisation the layer equals the single-slice model and a 2D-pretrained backbone
    sees the inputs it was trained on; training may learn to use the neighbours. With C == 1
    there is no mixing weight.

    Mixed precision: inputs are taken as float32 whatever the policy (HU need more than
    float16's 11 bits), computed in float32, and the output is cast to the compute dtype.

    Args:
        windows: (center, width) in HU per output channel; default :data:`brain_audit.windowing.BSB`.
        function: ``"linear_exact"`` or ``"sigmoid"``; ``None`` picks ``"sigmoid"`` if the
            windows are trainable, else ``"linear_exact"``.
        trainable_windows: learn centres and widths.
        eps: sigmoid value at the window edges, in (0, 0.5).

    References:
        Lee H, Kim M, Do S. Practical Window Setting Optimization for Medical Image Deep
        Learning. arXiv:1812.00572 (2018).
    """

    def __init__(
        self,
        windows: Sequence[Window | tuple[float, float]] = BSB,
        function: Literal["linear_exact", "sigmoid"] | None = None,
        trainable_windows: bool = False,
        eps: float = 1.0 / 255.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        windows = [tuple(float(v) for v in w) for w in windows]
        if len(windows) == 0 or any(len(w) != 2 for w in windows):
            raise ValueError(f"`windows` must be a non-empty sequence of (center, width). Got {windows!r} instead.")
        for c, w in windows:
            if not (np.isfinite(c) and np.isfinite(w) and w > 0):
                raise ValueError(f"`windows` widths must be finite and > 0. Got {(c, w)!r} instead.")
        if function is None:
            function = "sigmoid" if trainable_windows else "linear_exact"
        if function not in _FUNCTIONS:
            raise ValueError(f"`function` must be one of {_FUNCTIONS}. Got {function!r} instead.")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"`eps` must be in (0, 0.5). Got {eps!r} instead.")
        self.windows = windows
        self.function = function
        self.trainable_windows = bool(trainable_windows)
        self.eps = float(eps)

    @property
    def input_dtype(self):  # HU stay float32 under mixed precision
        return "float32"

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        if channels is None or channels < 1 or channels % 2 != 1:
            raise ValueError(
                f"`MultiWindow` input must have 1 + 2 * context channels (odd). Got shape {tuple(input_shape)} instead."
            )
        n = len(self.windows)
        self.centers = self.add_weight(
            name="centers",
            shape=(n,),
            dtype="float32",
            initializer=keras.initializers.Constant(0.0),
            trainable=self.trainable_windows,
        )
        self.widths = self.add_weight(
            name="widths",
            shape=(n,),
            dtype="float32",
            initializer=keras.initializers.Constant(1.0),
            trainable=self.trainable_windows,
            constraint=keras.constraints.NonNeg(),
        )
        self.centers.assign(np.array([c for c, _ in self.windows], dtype=np.float32))
        self.widths.assign(np.array([w for _, w in self.windows], dtype=np.float32))
        self.slice_mix = None
        if channels > 1:
            mix = np.zeros((channels, n), dtype=np.float32)
            mix[channels // 2, :] = 1.0
            self.slice_mix = self.add_weight(
                name="slice_mix", shape=(channels, n), dtype="float32", initializer="zeros", trainable=True
            )
            self.slice_mix.assign(mix)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")[..., None]  # (B, H, W, C, 1)
        c = ops.cast(self.centers, "float32")
        w = ops.maximum(ops.cast(self.widths, "float32"), 1.0)
        if self.function == "linear_exact":
            y = ops.clip(ops.multiply(ops.subtract(x, c), ops.divide(1.0, w)) + 0.5, 0.0, 1.0)
        else:
            gain = 2.0 * float(np.log(1.0 / self.eps - 1.0))
            y = ops.sigmoid(ops.multiply(ops.subtract(x, c), ops.divide(gain, w)))
        # y: (B, H, W, C, n)
        if self.slice_mix is None:
            y = y[..., 0, :]
        else:
            y = ops.sum(y * ops.cast(self.slice_mix, "float32"), axis=-2)
        return ops.cast(y * 255.0, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.windows),)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            windows=[list(w) for w in self.windows],
            function=self.function,
            trainable_windows=self.trainable_windows,
            eps=self.eps,
        )
        return config


# ---------------------------------------------------------------- loss and metric
@keras.saving.register_keras_serializable(package="brain_audit")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy averaged over labels with per-label weights (RSNA weighted log loss).

    Per sample: ``sum_l w_l * BCE(y_l, p_l) / sum_l w_l``; the batch mean of that.
    ``y_true`` and ``y_pred`` are (B, L) with probabilities (not logits) in ``y_pred``.

    Args:
        label_weights: L weights, > 0; default :data:`RSNA_LABEL_WEIGHTS` (``any`` = 2, subtypes 1).
    """

    def __init__(self, label_weights: Sequence[float] = RSNA_LABEL_WEIGHTS, name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        label_weights = [float(v) for v in label_weights]
        if not label_weights or any(not (np.isfinite(v) and v > 0) for v in label_weights):
            raise ValueError(f"`label_weights` must be non-empty and all > 0. Got {label_weights!r} instead.")
        self.label_weights = label_weights

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        per_label = ops.binary_crossentropy(y_true, y_pred, from_logits=False)
        weights = ops.convert_to_tensor(np.asarray(self.label_weights, dtype=np.float32))
        return ops.sum(per_label * weights, axis=-1) / float(sum(self.label_weights))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(label_weights=list(self.label_weights))
        return config


@keras.saving.register_keras_serializable(package="brain_audit")
class ColumnAUC(keras.metrics.AUC):
    """ROC AUC of one output column of a multi-label head (e.g. ``any`` of the six-label head)."""

    def __init__(self, column: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, self.column], y_pred[:, self.column], sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(column=self.column)
        return config


# ---------------------------------------------------------------- ImageNet weights, offline
def keras_cache_dir() -> Path:
    """The Keras cache folder as Keras resolves it: ``$KERAS_HOME``, else ``~/.keras``;
    ``/tmp/.keras`` when that folder is missing or not writable (``keras.utils.get_file``
    does the same; Keras creates its home at import). Downloads go to its ``models/``."""
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path("~").expanduser()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    if not os.access(base, os.W_OK):  # keras.utils.get_file falls back likewise
        base = Path("/tmp") / ".keras"
    return base


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_weights_available(cache_dir: str | Path | None = None) -> bool:
    """Whether ``weights="imagenet"`` would build without a download.

    True when ``<cache_dir>/models/efficientnetb0_notop.h5`` exists and has the MD5 Keras
    checks (a file with another hash would make Keras download again). Never downloads.

    Args:
        cache_dir: Keras cache folder; default :func:`keras_cache_dir`.
    """
    path = Path(cache_dir if cache_dir is not None else keras_cache_dir()) / "models" / IMAGENET_NOTOP_FILENAME
    return path.is_file() and _md5(path) == IMAGENET_NOTOP_MD5


def install_imagenet_weights(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Copy Keras' ImageNet EfficientNetB0 no-top file into the Keras cache (offline use).

    On Kaggle with internet off, attach the file ``efficientnetb0_notop.h5`` as a dataset
    and call this once (or pass its path to :func:`build_model`, which does). The copy is
    atomic; an identical file already in place is left alone.

    Args:
        source: path to ``efficientnetb0_notop.h5`` (any file name; identified by MD5).
        cache_dir: Keras cache folder; default :func:`keras_cache_dir`.

    Returns:
        The path in the cache.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` is not the file Keras expects (MD5 differs).
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such weights file")
    digest = _md5(source)
    if digest != IMAGENET_NOTOP_MD5:
        raise ValueError(
            f"{source.name}: MD5 {digest} is not Keras' {IMAGENET_NOTOP_FILENAME} ({IMAGENET_NOTOP_MD5}); "
            "Keras would discard it and download again"
        )
    target_dir = Path(cache_dir if cache_dir is not None else keras_cache_dir()) / "models"
    target = target_dir / IMAGENET_NOTOP_FILENAME
    if target.is_file() and _md5(target) == IMAGENET_NOTOP_MD5:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{IMAGENET_NOTOP_FILENAME}.", suffix=".part", dir=target_dir)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _is_imagenet_file(path: Path) -> bool:
    if path.name.endswith(".weights.h5") or path.suffix != ".h5":
        return False
    if path.name == IMAGENET_NOTOP_FILENAME:
        return True  # by name: a wrong hash is then reported by install_imagenet_weights
    return _md5(path) == IMAGENET_NOTOP_MD5


# ---------------------------------------------------------------- the model
def _make_backbone(input_size: int, weights: str | Path | None) -> keras.Model:
    shape = (input_size, input_size, 3)
    if weights is None:
        return keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape)
    if isinstance(weights, str) and weights == "imagenet":
        return keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=shape)
    if not isinstance(weights, (str, Path)):
        raise ValueError(f"`weights` must be 'imagenet', a file path or None. Got {weights!r} instead.")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file (`weights` must be 'imagenet', a file path or None)")
    if _is_imagenet_file(path):
        install_imagenet_weights(path)
        return keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=shape)
    backbone = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=shape)
    backbone.load_weights(path)
    return backbone


def build_model(
    input_size: int = 256,
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

    Input contract: float32 HU, shape (B, input_size, input_size, 1 + 2 * context); the
    slices already resized to ``input_size`` (:func:`brain_audit.windowing.resize_hu`).
    Output: float32 probabilities (B, 1) for ``head="any"`` or (B, 6) for ``head="six"``
    in :data:`brain_audit.rsna.LABEL_COLUMNS` order (five subtypes, then ``any``), also
    under a mixed-precision policy (the output layer is float32).

    The model is returned uncompiled with every layer trainable; set the training state
    (:func:`freeze_backbone`, :func:`unfreeze_top`, :func:`unfreeze_all`) and then call
    :func:`compile_model`.

    Args:
        input_size: image side in pixels, >= 32 (EfficientNet's minimum).
        head: ``"any"`` (1 output) or ``"six"`` (the RSNA labels).
        dropout: dropout rate before the classifier, in [0, 1).
        weights: ``"imagenet"`` (Keras cache, else a download), a path to Keras'
            ``efficientnetb0_notop.h5`` (installed into the cache, identical graph), a path
            to a domain backbone weights file (e.g. ``*.weights.h5`` from
            :func:`brain_audit.pretrain.pretrain_backbone`), or ``None`` (random init).
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
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 32:
        raise ValueError(f"`input_size` must be an int >= 32. Got {input_size!r} instead.")
    if head not in _HEADS:
        raise ValueError(f"`head` must be one of {tuple(_HEADS)}. Got {head!r} instead.")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"`dropout` must be in [0, 1). Got {dropout!r} instead.")
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ValueError(f"`context` must be an int >= 0. Got {context!r} instead.")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    input_size = int(input_size)
    inputs = keras.Input((input_size, input_size, 1 + 2 * int(context)), dtype="float32", name="hu")
    x = MultiWindow(function=window_function, trainable_windows=trainable_windows, name="multi_window")(inputs)
    backbone = _make_backbone(input_size, weights)
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


# ---------------------------------------------------------------- save / load
def save_model(model: keras.Model, path: str | Path) -> Path:
    """Save as a ``.keras`` archive atomically (temporary file + ``os.replace``).

    The archive holds the architecture (no Lambda layers, so loading is safe-mode),
    the weights including window settings, and the optimizer state if compiled.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"`path` must end in '.keras'. Got {str(path)!r} instead.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by :func:`save_model`, in Keras' safe mode.

    The custom objects (:class:`MultiWindow`, :class:`WeightedBinaryCrossentropy`,
    :class:`ColumnAUC`) are registered when this module is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    return keras.models.load_model(path, compile=compile, safe_mode=True)
