"""Batched class-activation maps (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM) of one output's logit.

:class:`GradCAM` / :func:`grad_cam` give float32 (N, H, W) maps in [0, 1] at input resolution for a whole
batch in one gradient pass, from the *logit* of one output (the sigmoid's gradient vanishes on confident
slices), at EfficientNet's ``top_activation`` by default (found inside the nested backbone). The input is
whatever the model takes: for :func:`brain_audit.model.build_model`, float32 HU (N, H, W, 1).

What the audits use is :func:`audit_cam`: :data:`AUDIT_METHOD` (HiResCAM) at :func:`audit_layer`, the
deepest block output with at least :data:`AUDIT_MIN_CELLS` cells across, so that one map cell is a small
part of the field of view (``top_activation`` is 3 x 3 at 96 px: one cell is a third of the head).
:attr:`GradCAM.cells` is a map's native resolution; :func:`cell_size_mm` turns it into millimetres.

Keras 3 cannot give ``model.inputs -> nested_layer.output`` as one functional model, so the model is cut at
the backbone into functional pieces that share its layers (no weights are copied), and the logit is
recomputed in float32 from the final Dense layer's input, kernel and bias (float32 gradients also under
mixed precision). The call of a layer inside a model is looked up in ``layer._inbound_nodes`` /
``model._nodes``: Keras has no public accessor; the tests pin the behaviour.

References:
    Selvaraju RR et al. Grad-CAM. ICCV 2017. Chattopadhay A et al. Grad-CAM++. WACV 2018.
    Draelos RL, Carin L. Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural
    networks. arXiv:2011.08891, 2020. Jiang PT et al. LayerCAM. IEEE Trans Image Process 2021.
    Chollet F. Grad-CAM class activation visualization, keras.io/examples/vision/grad_cam (the recipe the
    tests compare against; it averages gradients over the batch axis too, right only for a batch of one).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Literal

import cv2
import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "DEFAULT_LAYERS",
    "METHODS",
    "AUDIT_METHOD",
    "AUDIT_MIN_CELLS",
    "AUDIT_MAX_STRIDE",
    "BLOCK_OUTPUTS",
    "layer_names",
    "find_layer",
    "audit_layer",
    "GradCAM",
    "grad_cam",
    "cached_cam",
    "audit_cam",
    "cell_size_mm",
    "resize_map",
]


#: Layers tried, in order, when ``layer=None``: the EfficientNet's last block (Keras application names).
DEFAULT_LAYERS: tuple[str, ...] = ("top_activation", "top_conv")

Method = Literal["gradcam", "gradcam++", "hirescam", "layercam"]

#: The methods :class:`GradCAM` computes.
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "layercam")

#: The method of the audits (Phase 3, the held-out audit, the hard-negative mining): HiResCAM keeps the
#: gradient at each location, so a fine layer's map follows the model's evidence, and it is the method of
#: the randomisation check (:func:`brain_audit.gradcam.shortcuts.randomization_check`) the audits run.
AUDIT_METHOD: Method = "hirescam"

#: A map explained for the audits has at least this many cells along each side (one cell is at most
#: 1/16 of the field of view; 12.5 mm of a 200 mm field).
AUDIT_MIN_CELLS: int = 16

#: ... and comes from a layer of stride at most 8 (EfficientNet's ``block3b_add`` or shallower): deeper layers
#: mix a bleed with its surroundings over too wide a receptive field to localise it, whatever the input size.
AUDIT_MAX_STRIDE: int = 8

#: EfficientNet's block outputs (the residual stream after each stage), shallow to deep: the layers
#: :func:`audit_layer` chooses from (Keras application names; strides 2, 4, 8, 16, 16, 32, 32, 32).
BLOCK_OUTPUTS: tuple[str, ...] = (
    "block1a_project_bn",
    "block2b_add",
    "block3b_add",
    "block4c_add",
    "block5c_add",
    "block6d_add",
    "block7a_project_bn",
    "top_activation",
)


def _sublayers(model: Any) -> list[Any]:
    return list(getattr(model, "layers", []) or [])


def _is_model(layer: Any) -> bool:

    return isinstance(layer, keras.Model)


def layer_names(model: Any, prefix: str = "") -> list[str]:
    """Every layer name of ``model``, nested sub-models' layers as ``"outer/inner"``, in graph order."""
    names: list[str] = []
    for lay in _sublayers(model):
        names.append(prefix + lay.name)
        if _is_model(lay):
            names.extend(layer_names(lay, prefix + lay.name + "/"))
    return names


def find_layer(model: Any, name: str) -> list[Any]:
    """The path to layer ``name``: ``[sub_model, ..., layer]`` (depth-first, outer layers first).

    ``name`` is a plain layer name (searched in the model, then inside nested sub-models) or a
    ``"outer/inner"`` path as :func:`layer_names` prints.

    Raises:
        ValueError: no such layer; the message lists the available layers.
    """
    if "/" in name:
        head, rest = name.split("/", 1)
        for lay in _sublayers(model):
            if lay.name == head and _is_model(lay):
                try:
                    return [lay] + find_layer(lay, rest)
                except ValueError:
                    break
    else:
        for lay in _sublayers(model):
            if lay.name == name:
                return [lay]
        for lay in _sublayers(model):
            if _is_model(lay):
                try:
                    return [lay] + find_layer(lay, name)
                except ValueError:
                    continue
    raise ValueError(
        f"`layer` must name a layer of the model or of a nested sub-model. Got {name!r} instead. "
        f"Available: {', '.join(layer_names(model))}"
    )


def _default_layer(model: Any) -> list[Any]:
    for name in DEFAULT_LAYERS:
        try:
            return find_layer(model, name)
        except ValueError:
            continue
    # the last layer with a 4-D (N, h, w, C) output, searched from the end, nested models included
    def last_4d(m: Any) -> list[Any] | None:
        for lay in reversed(_sublayers(m)):
            if _is_model(lay):
                inner = last_4d(lay)
                if inner is not None:
                    return [lay] + inner
            elif not lay.name.startswith("input") and len(getattr(lay.output, "shape", ())) == 4:
                return [lay]
        return None

    path = last_4d(model)
    if path is None:
        raise ValueError(
            "`layer` must be given: the model has no 'top_activation' / 'top_conv' and no layer with a "
            f"4-D output. Got None instead. Available: {', '.join(layer_names(model))}"
        )
    return path


def _map_cells(layer: Any) -> tuple[int | None, int | None]:
    """(h, w) of a layer's 4-D output as built (None where the model leaves it open)."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer called in several graphs has no single output
        return (None, None)
    if len(shape) != 4:
        return (None, None)
    return (None if shape[1] is None else int(shape[1]), None if shape[2] is None else int(shape[2]))


def _walk(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (path, layer) of ``model`` in graph order, nested sub-models' layers as ``"outer/inner"``."""
    out: list[tuple[str, Any]] = []
    for lay in _sublayers(model):
        if _is_model(lay):
            out.extend(_walk(lay, prefix + lay.name + "/"))
        else:
            out.append((prefix + lay.name, lay))
    return out


def audit_layer(model: Any, min_cells: int = AUDIT_MIN_CELLS) -> str:
    """The layer the audits explain: the deepest one whose map has at least ``min_cells`` cells a side.

    Candidates are EfficientNet's block outputs (:data:`BLOCK_OUTPUTS`) when the model has them, else every
    layer with a 4-D output (input layers excluded), of stride at most :data:`AUDIT_MAX_STRIDE`. At 64 px
    input this is ``block2b_add`` (16 x 16), at 96 px ``block2b_add`` (24 x 24), at 128 px ``block3b_add``
    (16 x 16), at 256 px ``block3b_add`` (32 x 32). When no candidate is that fine (a tiny input), the finest
    one is returned.

    Returns:
        The layer's path as :func:`layer_names` prints it (``"efficientnetb0/block2b_add"``).

    Raises:
        ValueError: ``min_cells`` < 1, or a model without any 4-D layer.
    """
    if isinstance(min_cells, bool) or not isinstance(min_cells, (int, np.integer)) or min_cells < 1:
        raise ValueError(f"`min_cells` must be an int >= 1. Got {min_cells!r} instead.")
    layers = [(name, lay) for name, lay in _walk(model) if not name.split("/")[-1].startswith("input")]
    blocks = [(name, lay) for name, lay in layers if name.split("/")[-1] in BLOCK_OUTPUTS]
    sized = [(name, _map_cells(lay)) for name, lay in (blocks or layers)]
    sized = [(name, cells) for name, cells in sized if None not in cells]
    side = model.inputs[0].shape[1]
    if side is not None:
        sized = [(name, cells) for name, cells in sized if int(side) <= AUDIT_MAX_STRIDE * min(cells)] or sized
    if not sized:
        raise ValueError(f"`model` must have a layer with a 4-D output of known size. Got none in: "
                         f"{', '.join(layer_names(model))}")
    fine = [name for name, cells in sized if min(cells) >= min_cells]
    if fine:
        return fine[-1]
    return max(sized, key=lambda item: min(item[1]))[0]


def _node_of(model: Any, layer: Any) -> Any:
    """The call of ``layer`` inside ``model``'s graph (a layer shared by several models has several)."""
    nodes = getattr(model, "_nodes", None) or ()
    for node in layer._inbound_nodes:
        if node in nodes:
            return node
    return layer._inbound_nodes[-1]


def _final_dense(model: Any) -> tuple[Any, Any]:
    """The final Dense layer and its input tensor in the model's graph (the logit is recomputed from it)."""

    last = model.outputs[0]._keras_history.operation
    if isinstance(last, keras.layers.Activation):  # Dense(linear) followed by Activation("sigmoid")
        last = _node_of(model, last).input_tensors[0]._keras_history.operation
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(
            "`model` must end in a Dense layer (optionally followed by an Activation) so the logit can be "
            f"recomputed. Got a final {type(last).__name__} layer {last.name!r} instead."
        )
    return last, _node_of(model, last).input_tensors[0]


def _two_outputs(model: Any, path: list[Any], final: Any) -> Any:
    """A callable ``x -> (path[-1] output, final)`` sharing ``model``'s layers (see module docstring)."""

    target = path[0]
    if len(path) == 1:
        return keras.Model(model.inputs, [_node_of(model, target).output_tensors[0], final])
    sub = target
    node = _node_of(model, sub)  # the call of the sub-model inside this model's graph
    if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
        raise ValueError(
            f"`layer` inside sub-model {sub.name!r} needs that sub-model to take and give one tensor. "
            f"Got {len(node.input_tensors)} inputs and {len(node.output_tensors)} outputs instead."
        )
    pre = keras.Model(model.inputs, node.input_tensors[0])
    inner = _two_outputs(sub, path[1:], sub.outputs[0])
    post = keras.Model(node.output_tensors[0], final)

    def run(x: Any, training: bool = False) -> tuple[Any, Any]:
        feat, out = inner(pre(x, training=training), training=training)
        return feat, post(out, training=training)

    return run


class GradCAM:
    """Batched Grad-CAM (or Grad-CAM++) of one output of a Keras model; build once, call per batch.

    Args:
        model: a functional Keras model ending in a Dense layer (sigmoid or linear; 1 or more units),
            e.g. :func:`brain_audit.model.build_model`. Its weights are used, never copied or changed.
        layer: name of the convolutional layer to explain (``"outer/inner"`` paths accepted); ``None``
            takes :data:`DEFAULT_LAYERS` (EfficientNet's ``top_activation``) inside any nested backbone,
            else the last layer with a 4-D output.
        output_index: which unit of the final Dense layer (0 for ``head="any"``; 0-5 in
            :data:`brain_audit.rsna.LABEL_COLUMNS` order for the six-label head).
        method: ``"gradcam"`` (Selvaraju et al. 2017: channel weights = gradients averaged over space),
            ``"gradcam++"`` (Chattopadhay et al. 2018, second- and third-order terms from the exponential
            of the logit, as in their eq. 19), ``"hirescam"`` (Draelos & Carin 2020: relu of the sum over
            channels of gradient x activation at each location, no averaging) or ``"layercam"`` (Jiang et
            al. 2021: as HiResCAM with the gradients' negative part dropped first).

    Attributes:
        layer: the explained layer's path (``"outer/inner"``).
        cells: (h, w), the explained layer's native map size (one cell = input side / h pixels).

    Raises:
        ValueError: unknown layer (the message lists the available ones), output index out of range,
            a model without a final Dense layer, or an unknown method.
    """

    def __init__(
        self,
        model: Any,
        layer: str | None = None,
        output_index: int = 0,
        method: Method = "gradcam",
    ) -> None:

        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}. Got {method!r} instead.")
        path = _default_layer(model) if layer is None else find_layer(model, layer)
        dense, dense_in = _final_dense(model)
        units = int(dense.units)
        if not isinstance(output_index, (int, np.integer)) or not 0 <= int(output_index) < units:
            raise ValueError(f"`output_index` must be in [0, {units - 1}]. Got {output_index!r} instead.")
        self._model = weakref.ref(model)  # no strong reference: the per-model cache of grad_cam can let go
        self.layer = "/".join(p.name for p in path)
        self.output_index = int(output_index)
        self.method = method
        self.n_outputs = units
        self._dense = dense
        self._run = _two_outputs(model, path, dense_in)
        self.cells = _map_cells(path[-1])
        shape = tuple(model.inputs[0].shape)
        self.input_shape = shape
        spec = tf.TensorSpec((None,) + tuple(shape[1:]), tf.float32)
        self._fn = tf.function(self._maps_and_logits, input_signature=[spec], reduce_retracing=True)

    @property
    def model(self) -> Any:
        """The explained model (None once it has been garbage-collected)."""
        return self._model()

    def _maps_and_logits(self, x: Any) -> tuple[Any, Any]:

        kernel = tf.cast(self._dense.kernel, tf.float32)
        bias = tf.cast(self._dense.bias, tf.float32) if self._dense.use_bias else 0.0
        with tf.GradientTape() as tape:
            tape.watch(x)  # records the path even when every weight is frozen
            feat, dense_in = self._run(x, training=False)
            logits = tf.matmul(tf.cast(dense_in, tf.float32), kernel) + bias  # (N, units), float32
            target = logits[:, self.output_index]
        # each sample's logit depends only on its own features (inference mode), so the gradient of
        # the sum is the per-sample gradient: one backward pass for the batch
        grads = tf.cast(tape.gradient(target, feat), tf.float32)  # (N, h, w, C)
        feat = tf.cast(feat, tf.float32)
        if self.method == "hirescam":  # gradient x activation at each location, summed over channels
            cam = tf.nn.relu(tf.reduce_sum(grads * feat, axis=-1))
        elif self.method == "layercam":  # positive gradients only
            cam = tf.nn.relu(tf.reduce_sum(tf.nn.relu(grads) * feat, axis=-1))
        elif self.method == "gradcam":
            weights = tf.reduce_mean(grads, axis=(1, 2))  # per sample: (N, C), never over the batch
        else:
            # Grad-CAM++ with the exponential output: alpha = g^2 / (2 g^2 + sum A g^3)
            g2, g3 = grads**2, grads**3
            denom = 2.0 * g2 + tf.reduce_sum(feat, axis=(1, 2), keepdims=True) * g3
            alpha = tf.math.divide_no_nan(g2, tf.where(tf.abs(denom) > 0, denom, tf.ones_like(denom)))
            weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
        if self.method in ("gradcam", "gradcam++"):
            cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feat, weights))
        cam = tf.image.resize(cam[..., None], tf.shape(x)[1:3], method="bilinear")[..., 0]  # to input size
        return cam, logits

    def __call__(self, hu_batch: np.ndarray, return_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Maps of one batch.

        Args:
            hu_batch: float (N, H, W) or (N, H, W, C) in the model's input units (HU for
                ``build_model``); one gradient pass for the whole batch.
            return_logits: also return the logits of every output from the same pass.

        Returns:
            float32 (N, H, W) in [0, 1] at input resolution (bilinear upsampling of the layer's map,
            then each map divided by its maximum); with ``return_logits``, also float32 (N, units).

        Warns:
            RuntimeWarning: a map that is zero everywhere (no positive evidence for the output at
                that layer); it is returned as zeros, never divided by zero.
        """
        return self._maps(hu_batch, return_logits, stacklevel=3)

    def _maps(self, hu_batch: np.ndarray, return_logits: bool, stacklevel: int) -> Any:

        x = np.asarray(hu_batch, dtype=np.float32)
        want = len(self.input_shape)
        if x.ndim == want - 1:
            x = x[..., None]
        if x.ndim != want or (self.input_shape[-1] is not None and x.shape[-1] != self.input_shape[-1]):
            raise ValueError(
                f"`hu_batch` must be (N, H, W) or {('N',) + tuple(self.input_shape[1:])}. Got shape {np.shape(hu_batch)} instead."
            )
        if x.shape[0] == 0:
            raise ValueError("`hu_batch` must hold at least one image. Got an empty batch instead.")
        cam, logits = self._fn(tf.constant(x))
        cam = cam.numpy()
        cam = np.maximum(cam, 0.0, out=cam).astype(np.float32, copy=False)
        peak = cam.reshape(len(cam), -1).max(axis=1)
        zero = ~(peak > 0)
        if zero.any():
            warnings.warn(
                f"grad_cam: {int(zero.sum())} of {len(cam)} maps are zero everywhere (no positive evidence "
                f"for output {self.output_index} at {self.layer!r}); returned as zeros.",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
        scale = np.where(zero, 1.0, peak).astype(np.float32)
        cam /= scale[:, None, None]
        if return_logits:
            return cam, logits.numpy().astype(np.float32)
        return cam


_CACHE: "weakref.WeakKeyDictionary[Any, dict[tuple, GradCAM]]" = weakref.WeakKeyDictionary()


def grad_cam(
    model: Any,
    hu_batch: np.ndarray,
    layer: str | None = None,
    output_index: int = 0,
    method: Method = "gradcam",
) -> np.ndarray:
    """Grad-CAM maps of a batch: float32 (N, H, W) in [0, 1] at input resolution.

    One gradient pass per call, gradients pooled over space per sample (never over the batch), of the
    logit of unit ``output_index`` of the final Dense layer (pre-sigmoid, recomputed from the Dense
    layer's input, kernel and bias in float32). The traced function is cached per model, layer,
    output and method, so calling this in a loop does not rebuild it.

    Args:
        model: functional Keras model ending in a Dense layer; for ``build_model`` its input is HU.
        hu_batch: float (N, H, W) or (N, H, W, 1) in the model's input units (HU for ``build_model``).
        layer: layer to explain; ``None`` = EfficientNet ``top_activation`` (nested backbones searched).
        output_index: unit of the final Dense layer (0 for one output, 0-5 for the six RSNA labels).
        method: ``"gradcam"`` or ``"gradcam++"``.

    Returns:
        float32 (N, H, W) in [0, 1]; a map with no positive evidence is all zeros (with a warning).

    Raises:
        ValueError: unknown layer (message lists the layers available), bad output index or shape.

    References:
        Selvaraju RR et al. ICCV 2017; Chattopadhay A et al. WACV 2018.
    """
    return cached_cam(model, layer, output_index, method)._maps(hu_batch, return_logits=False, stacklevel=3)


def cached_cam(model: Any, layer: str | None, output_index: int, method: Method = "gradcam") -> GradCAM:
    """The :class:`GradCAM` of these arguments, built once per model (its traced function reads the
    model's variables live, so later weight changes are seen)."""
    per_model = _CACHE.setdefault(model, {})
    key = (layer, int(output_index) if isinstance(output_index, (int, np.integer)) else output_index, method)
    if key not in per_model:
        per_model[key] = GradCAM(model, layer=layer, output_index=output_index, method=method)
    return per_model[key]


def audit_cam(model: Any, output_index: int = 0) -> GradCAM:
    """The maps the audits use: :data:`AUDIT_METHOD` at :func:`audit_layer` of ``model`` (built once per model)."""
    per_model = _CACHE.setdefault(model, {})
    key = ("audit", int(output_index) if isinstance(output_index, (int, np.integer)) else output_index)
    if key not in per_model:
        per_model[key] = cached_cam(model, audit_layer(model), output_index, AUDIT_METHOD)
    return per_model[key]


def cell_size_mm(cells: int, input_size: int, field_of_view_mm: float | None) -> dict[str, Any]:
    """A map's native resolution in the units a reader checks: cells a side, pixels and mm per cell.

    Args:
        cells: the map's native cells along one side (:attr:`GradCAM.cells`).
        input_size: the model's input side, px (one cell = ``input_size / cells`` px).
        field_of_view_mm: the slice's field of view along that side (the padded square the cache resizes:
            ``max(rows x row spacing, columns x column spacing)``), or None when the spacing is unknown.

    Returns:
        ``{"map_cells": cells, "cell_px": ..., "cell_mm": ... or None, "cell_fraction_of_field": 1 / cells}``.
    """
    if isinstance(cells, bool) or not isinstance(cells, (int, np.integer)) or cells < 1:
        raise ValueError(f"`cells` must be an int >= 1. Got {cells!r} instead.")
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < cells:
        raise ValueError(f"`input_size` must be an int >= cells ({cells}). Got {input_size!r} instead.")
    mm = None
    if field_of_view_mm is not None and np.isfinite(field_of_view_mm):
        if field_of_view_mm <= 0:
            raise ValueError(f"`field_of_view_mm` must be > 0. Got {field_of_view_mm!r} instead.")
        mm = float(field_of_view_mm) / int(cells)
    return {"map_cells": int(cells), "cell_px": int(input_size) / int(cells), "cell_mm": mm,
            "cell_fraction_of_field": 1.0 / int(cells)}


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:

    c = np.asarray(cam, dtype=np.float32)
    if c.shape == tuple(shape):
        return c
    return cv2.resize(c, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)

