"""The model's own Keras layers, loss and metric, registered for safe-mode loading.

:class:`MultiWindow` turns HU into the brain / subdural / bone channels inside the network (DICOM PS3.3
C.11.2.1.3.2 windows, or Lee et al.'s trainable sigmoid windows); :class:`WeightedBinaryCrossentropy` is the
RSNA 2019 weighted log loss (``any`` 2, each subtype 1; Flanders et al., Radiology: AI 2020);
:class:`ColumnAUC` is the ROC AUC of one output column.
"""

from __future__ import annotations

from typing import Literal, Sequence

import keras
import numpy as np
from keras import ops

from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.windowing import BSB, Window

__all__ = ["RSNA_LABEL_WEIGHTS", "MultiWindow", "WeightedBinaryCrossentropy", "ColumnAUC"]


#: RSNA 2019 weighted log loss, in :data:`brain_audit.rsna.LABEL_COLUMNS` order (five subtypes, then ``any``).
RSNA_LABEL_WEIGHTS: tuple[float, ...] = tuple(2.0 if c == "any" else 1.0 for c in LABEL_COLUMNS)


_FUNCTIONS = ("linear_exact", "sigmoid")


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

