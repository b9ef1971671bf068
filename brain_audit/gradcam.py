"""Grad-CAM that can be trusted, and the measurements of where the model looks.

Maps
    :class:`GradCAM` / :func:`grad_cam` give float32 (N, H, W) maps in [0, 1] at input resolution,
    for a whole batch in one gradient pass, from the *logit* of one output (not the sigmoid, whose
    gradient vanishes on confident slices), at the EfficientNet's last convolutional block by default
    (``top_activation``, found inside a nested backbone). Grad-CAM++ is available as ``method``.

Input contract
    The maps are of whatever the model takes. For :func:`brain_audit.model.build_model` that is raw
    Hounsfield units, float32 (N, H, W, 1) (the windows are inside the network); (N, H, W) is accepted
    and given a channel axis.

How the gradient reaches a layer inside a nested backbone (Keras 3)
    Keras cannot give ``model.inputs -> nested_layer.output`` as one functional model, because the
    nested layer's tensor lives in the backbone's own graph. The model is therefore cut at the
    backbone into three functional pieces that share the trained layers (no weights are copied):
    ``pre`` (model inputs -> the tensor the outer graph feeds the backbone, read from the backbone's
    inbound node), ``inner`` (backbone inputs -> [target layer output, backbone output]) and
    ``post`` (backbone output -> input of the final Dense layer); this recurses for deeper nesting.
    The logit is then recomputed in float32 as ``dense_input @ kernel + bias`` from the final Dense
    layer's own variables, so the sigmoid is never in the gradient path and mixed-precision models
    (float16 activations) give float32 gradients. Keras 3 has no public accessor for "the call of
    this layer inside that model", so the node is looked up in ``layer._inbound_nodes`` /
    ``model._nodes`` (private attributes, stable across Keras 3.0-3.15; the tests pin the behaviour).

Where the map falls (the Phase 3 audit)
    :func:`attention_profile` shares the map's energy among disjoint regions found from HU
    (:mod:`brain_audit.skull`: intracranial, skull, calcified foci, metal, scalp, head holder, outside
    the head), scores the pointing game against a lesion mask where truth is known (phantoms), and
    raises the documented flags ``bone_focus``, ``calcification_focus``, ``device_focus``,
    ``outside_head_focus`` and ``right_for_wrong_reason``. :func:`audit_batch` does it for a batch of
    HU arrays (Phase 3 on the cache), :func:`audit_files` for DICOM files (``brain-audit gradcam``),
    writing the seed's overlay pictures (:func:`save_overlay`).

Shortcut tests that do not rely on saliency (saliency can mislead)
    :func:`stratified_metrics` (AUC, sensitivity, specificity with and without each mimic; real data),
    :func:`counterfactual_effect` (probability change between paired phantom slices with and without a
    device or calcification) and :func:`randomization_check` (Adebayo et al.'s cascading randomisation:
    maps that survive randomised weights are not trustworthy).

References:
    Selvaraju RR et al. Grad-CAM: Visual explanations from deep networks via gradient-based
    localization. ICCV 2017.
    Chattopadhay A et al. Grad-CAM++: Generalized gradient-based visual explanations for deep
    convolutional networks. WACV 2018.
    Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
    Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
    Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
    Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020; DeGrave AJ et al.
    AI for radiographic COVID-19 detection selects shortcuts over signal. Nat Mach Intell 2021.
    Chollet F. Grad-CAM class activation visualization. keras.io/examples/vision/grad_cam (the recipe
    the tests compare against; it averages gradients over the batch axis too, which is only right
    for a batch of one).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Literal, Sequence

import numpy as np

__all__ = [
    "DEFAULT_LAYERS",
    "GradCAM",
    "grad_cam",
    "find_layer",
    "layer_names",
    "BONE_FOCUS_SHARE",
    "OUTSIDE_HEAD_FOCUS_SHARE",
    "INTRACRANIAL_MIN_SHARE",
    "HIT_RADIUS_PX",
    "FLAGS",
    "attention_profile",
    "MIMIC_REGIONS",
    "mimic_presence",
    "stratified_metrics",
    "counterfactual_effect",
    "SANITY_MAX_RHO",
    "randomization_check",
    "overlay_title",
    "save_overlay",
    "profile_columns",
    "audit_batch",
    "audit_files",
]

#: Layers tried, in order, when ``layer=None``: the EfficientNet's last block (Keras application names).
DEFAULT_LAYERS: tuple[str, ...] = ("top_activation", "top_conv")

Method = Literal["gradcam", "gradcam++"]


# ----------------------------------------------------------------------------- model plumbing
def _sublayers(model: Any) -> list[Any]:
    return list(getattr(model, "layers", []) or [])


def _is_model(layer: Any) -> bool:
    import keras

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


def _node_of(model: Any, layer: Any) -> Any:
    """The call of ``layer`` inside ``model``'s graph (a layer shared by several models has several)."""
    nodes = getattr(model, "_nodes", None) or ()
    for node in layer._inbound_nodes:
        if node in nodes:
            return node
    return layer._inbound_nodes[-1]


def _final_dense(model: Any) -> tuple[Any, Any]:
    """The final Dense layer and its input tensor in the model's graph (the logit is recomputed from it)."""
    import keras

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
    import keras

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


# ----------------------------------------------------------------------------- Grad-CAM
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
        method: ``"gradcam"`` (Selvaraju et al. 2017) or ``"gradcam++"`` (Chattopadhay et al. 2018,
            second- and third-order terms from the exponential of the logit, as in their eq. 19).

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
        import tensorflow as tf

        if method not in ("gradcam", "gradcam++"):
            raise ValueError(f"`method` must be 'gradcam' or 'gradcam++'. Got {method!r} instead.")
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
        shape = tuple(model.inputs[0].shape)
        self.input_shape = shape
        spec = tf.TensorSpec((None,) + tuple(shape[1:]), tf.float32)
        self._fn = tf.function(self._maps_and_logits, input_signature=[spec], reduce_retracing=True)

    @property
    def model(self) -> Any:
        """The explained model (None once it has been garbage-collected)."""
        return self._model()

    def _maps_and_logits(self, x: Any) -> tuple[Any, Any]:
        import tensorflow as tf

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
        if self.method == "gradcam":
            weights = tf.reduce_mean(grads, axis=(1, 2))  # per sample: (N, C), never over the batch
        else:
            # Grad-CAM++ with the exponential output: alpha = g^2 / (2 g^2 + sum A g^3)
            g2, g3 = grads**2, grads**3
            denom = 2.0 * g2 + tf.reduce_sum(feat, axis=(1, 2), keepdims=True) * g3
            alpha = tf.math.divide_no_nan(g2, tf.where(tf.abs(denom) > 0, denom, tf.ones_like(denom)))
            weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
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
        import tensorflow as tf

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
    return _cached(model, layer, output_index, method)._maps(hu_batch, return_logits=False, stacklevel=3)


def _cached(model: Any, layer: str | None, output_index: int, method: Method = "gradcam") -> GradCAM:
    """The :class:`GradCAM` of these arguments, built once per model (its traced function reads the
    model's variables live, so later weight changes are seen)."""
    per_model = _CACHE.setdefault(model, {})
    key = (layer, int(output_index) if isinstance(output_index, (int, np.integer)) else output_index, method)
    if key not in per_model:
        per_model[key] = GradCAM(model, layer=layer, output_index=output_index, method=method)
    return per_model[key]


# ----------------------------------------------------------------------------- where the map falls
#: Energy share on the skull above which a map is ``bone_focus`` (the skull is about 6 % of a real
#: slice's area and 5-10 % at model resolution, so 0.35 is several times chance).
BONE_FOCUS_SHARE: float = 0.35
#: Energy share outside the head (air, pillows, head holder) above which a map is ``outside_head_focus``
#: (nothing there can show a bleed; coarse maps leak a few per cent over the scalp edge).
OUTSIDE_HEAD_FOCUS_SHARE: float = 0.25
#: Intracranial energy share below which the attention is "mostly off the intracranial space"
#: (``right_for_wrong_reason`` for a correct prediction).
INTRACRANIAL_MIN_SHARE: float = 0.5
#: Radius, in pixels of the map / masks, of the pointing game (Zhang et al. 2018 use 15 px) and of the
#: small-target flags: ``device_focus`` / ``calcification_focus`` when the map's peak lies within this
#: distance of metal / a calcified focus. Small foci hold too few pixels for an energy share to mean
#: anything at Grad-CAM's resolution (7 x 7 cells at 224 px), so their flags use the peak.
HIT_RADIUS_PX: float = 15.0

#: Flag names of :func:`attention_profile`, in column order.
FLAGS: tuple[str, ...] = ("bone_focus", "calcification_focus", "device_focus", "outside_head_focus", "right_for_wrong_reason")


def _resize_to(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    c = np.asarray(cam, dtype=np.float32)
    if c.shape == tuple(shape):
        return c
    return cv2.resize(c, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


def _distance_to(mask: np.ndarray, point: tuple[int, int]) -> float:
    """Euclidean distance in pixels from ``point`` to the nearest True pixel of ``mask`` (inf if empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return float("inf")
    return float(np.sqrt(np.min((ys - point[0]) ** 2 + (xs - point[1]) ** 2)))


def attention_profile(
    cam: np.ndarray,
    hu: np.ndarray | None = None,
    masks: dict[str, np.ndarray] | None = None,
    lesion_mask: np.ndarray | None = None,
    *,
    probability: float | None = None,
    label: int | None = None,
    threshold: float = 0.5,
    hit_radius_px: float = HIT_RADIUS_PX,
) -> dict[str, Any]:
    """Where one Grad-CAM map falls: energy shares per region, pointing game, shortcut flags.

    Order of operations: regions from ``masks`` (or :func:`brain_audit.skull.region_masks` of ``hu``),
    made disjoint by :func:`brain_audit.skull.disjoint_regions`; the map resized (bilinear) to the
    masks' shape, negative values clipped; energy = sum of the map's values.

    Args:
        cam: float (h, w) map, >= 0 (e.g. one map of :func:`grad_cam`); any scale.
        hu: float (H, W) HU of the same slice; used only when ``masks`` is None.
        masks: region masks (H, W) bool as :func:`brain_audit.skull.region_masks` gives, or phantom
            truth masks with the same keys; missing keys count as empty.
        lesion_mask: optional bool (H, W) ground truth of the lesion (phantoms).
        probability: the model's probability for the explained output (for ``right_for_wrong_reason``).
        label: the true 0/1 label of that output.
        threshold: decision threshold on ``probability``.
        hit_radius_px: pointing-game and small-target radius in pixels of (H, W).

    Returns:
        dict with

        * ``energy_<region>`` for each disjoint region (metal, calcification, skull, intracranial,
          scalp, head_holder, outside_head, other): share of the map's energy, float, summing to 1
          (all 0.0 for an all-zero map, with a warning);
        * ``area_<region>``: the region's share of the image, the chance level of its energy share;
        * ``peak_y``, ``peak_x``, ``peak_region``: the map's maximum and the region holding it;
        * with ``lesion_mask``: ``lesion_energy`` (energy-based pointing game, Wang et al. 2020),
          ``lesion_area`` (its chance level), ``pointing_distance_px`` and ``pointing_hit``
          (peak within ``hit_radius_px`` of the lesion, Zhang et al. 2018);
        * the flags of :data:`FLAGS` (bool; ``right_for_wrong_reason`` is None without probability
          and label): ``bone_focus`` energy_skull >= :data:`BONE_FOCUS_SHARE`; ``outside_head_focus``
          energy_outside_head + energy_head_holder >= :data:`OUTSIDE_HEAD_FOCUS_SHARE`;
          ``device_focus`` / ``calcification_focus`` the peak within ``hit_radius_px`` of metal /
          a calcified focus; ``right_for_wrong_reason`` a correct prediction (``probability >=
          threshold`` equals ``label``) with energy_intracranial < :data:`INTRACRANIAL_MIN_SHARE`.

    Warns:
        RuntimeWarning: an all-zero map (shares 0, flags False), or an empty lesion mask.

    References:
        Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
        Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
    """
    from .skull import DISJOINT_ORDER, disjoint_regions, region_masks

    if masks is None:
        if hu is None:
            raise ValueError("`masks` or `hu` must be given. Got neither instead.")
        masks = region_masks(hu)
    parts = disjoint_regions(masks)
    shape = next(iter(parts.values())).shape
    c = np.asarray(cam, dtype=np.float32)
    if c.ndim != 2:
        raise ValueError(f"`cam` must be 2-D (h, w). Got shape {c.shape} instead.")
    if not np.isfinite(c).all():
        raise ValueError("`cam` must be finite. Got NaN or infinity instead.")
    if hit_radius_px < 0:
        raise ValueError(f"`hit_radius_px` must be >= 0. Got {hit_radius_px!r} instead.")
    c = np.maximum(_resize_to(c, shape), 0.0)
    total = float(c.sum(dtype=np.float64))
    zero = not total > 0
    if zero:
        warnings.warn("attention_profile: the map is zero everywhere; energy shares are 0 and flags False.", RuntimeWarning, stacklevel=2)
    out: dict[str, Any] = {}
    names = list(DISJOINT_ORDER) + ["other"]
    for name in names:
        out[f"energy_{name}"] = 0.0 if zero else float(c[parts[name]].sum(dtype=np.float64) / total)
    for name in names:
        out[f"area_{name}"] = float(parts[name].mean())
    py, px = np.unravel_index(int(np.argmax(c)), c.shape)
    out["peak_y"], out["peak_x"] = int(py), int(px)
    out["peak_region"] = "none" if zero else next(n for n in names if parts[n][py, px])
    if lesion_mask is not None:
        lesion = np.asarray(lesion_mask, dtype=bool)
        if lesion.shape != shape:
            raise ValueError(f"`lesion_mask` must have the masks' shape {shape}. Got {lesion.shape} instead.")
        if not lesion.any():
            warnings.warn("attention_profile: the lesion mask is empty; pointing game not scored.", RuntimeWarning, stacklevel=2)
        dist = _distance_to(lesion, (py, px)) if not zero else float("inf")
        out["lesion_energy"] = 0.0 if zero else float(c[lesion].sum(dtype=np.float64) / total)
        out["lesion_area"] = float(lesion.mean())
        out["pointing_distance_px"] = dist
        out["pointing_hit"] = bool(lesion.any() and dist <= hit_radius_px)
    metal = np.asarray(masks.get("metal", np.zeros(shape, bool)), dtype=bool)
    calc = np.asarray(masks.get("calcification", np.zeros(shape, bool)), dtype=bool)
    out["bone_focus"] = bool(out["energy_skull"] >= BONE_FOCUS_SHARE)
    out["calcification_focus"] = bool(not zero and _distance_to(calc, (py, px)) <= hit_radius_px)
    out["device_focus"] = bool(not zero and _distance_to(metal, (py, px)) <= hit_radius_px)
    out["outside_head_focus"] = bool(out["energy_outside_head"] + out["energy_head_holder"] >= OUTSIDE_HEAD_FOCUS_SHARE)
    if probability is not None and label is not None:
        correct = bool((probability >= threshold) == bool(label))
        out["right_for_wrong_reason"] = bool(correct and not zero and out["energy_intracranial"] < INTRACRANIAL_MIN_SHARE)
    else:
        out["right_for_wrong_reason"] = None
    return out


# ----------------------------------------------------------------------------- stratify and intervene
#: Mimic columns of :func:`mimic_presence`, named for the region they come from.
MIMIC_REGIONS: tuple[str, ...] = ("metal", "calcification", "head_holder")


def mimic_presence(masks: dict[str, np.ndarray], min_pixels: int = 1) -> dict[str, bool]:
    """Which hemorrhage mimics a slice holds, from its region masks (real data: :func:`region_masks` of HU).

    Returns:
        dict ``{"metal": bool, "calcification": bool, "head_holder": bool}``: the mask has at least
        ``min_pixels`` pixels.
    """
    if min_pixels < 1:
        raise ValueError(f"`min_pixels` must be >= 1. Got {min_pixels!r} instead.")
    return {m: bool(np.count_nonzero(masks.get(m, ())) >= min_pixels) for m in MIMIC_REGIONS}


def stratified_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    presence: Any,
    threshold: float = 0.5,
) -> Any:
    """Discrimination by presence of each mimic: a shortcut shows as metrics that move with the mimic.

    A model that learned "coil means bleed" scores well where coils and bleeds co-occur and fails
    on bleeds without a coil and on normals with one; the overall AUC hides it. Stratifying by the
    mimic is the first of the shortcut tests that do not rely on saliency (Geirhos et al. 2020;
    DeGrave et al. 2021).

    Args:
        y_true: (N,) 0/1 labels (``any``, or one subtype).
        y_prob: (N,) probabilities.
        presence: per-slice mimic presence: a DataFrame or a mapping ``name -> (N,) bool``
            (e.g. rows of :func:`mimic_presence`, or phantom truth).
        threshold: decision threshold for sensitivity and specificity.

    Returns:
        pandas.DataFrame with one row for all slices and two per mimic (present / absent): ``mimic``,
        ``present``, ``n``, ``n_positive``, ``prevalence``, ``auc`` (scikit-learn ``roc_auc_score``;
        NaN with one class), ``sensitivity``, ``specificity`` (:func:`brain_audit.metrics.confusion_at`).

    References:
        Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
        DeGrave AJ et al. AI for radiographic COVID-19 detection selects shortcuts over signal.
        Nat Mach Intell 2021.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from .metrics import confusion_at

    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    table = pd.DataFrame(presence) if not isinstance(presence, pd.DataFrame) else presence
    if len(table) != y.size or p.size != y.size:
        raise ValueError(
            f"`y_true`, `y_prob` and `presence` must have one row per slice. Got {y.size}, {p.size} and {len(table)} instead."
        )

    def row(mimic: str, present: Any, sel: np.ndarray) -> dict[str, Any]:
        ys, ps = y[sel], p[sel]
        rec: dict[str, Any] = {"mimic": mimic, "present": present, "n": int(sel.sum()), "n_positive": int(ys.sum())}
        rec["prevalence"] = float(ys.mean()) if ys.size else float("nan")
        rec["auc"] = float(roc_auc_score(ys, ps)) if 0 < ys.sum() < ys.size else float("nan")
        if ys.size:
            cm = confusion_at(ys, ps, threshold)
            rec["sensitivity"], rec["specificity"] = cm["sensitivity"], cm["specificity"]
        else:
            rec["sensitivity"] = rec["specificity"] = float("nan")
        return rec

    rows = [row("all", "any", np.ones(y.size, dtype=bool))]
    for mimic in table.columns:
        flag = table[mimic].to_numpy().astype(bool)
        rows.append(row(str(mimic), True, flag))
        rows.append(row(str(mimic), False, ~flag))
    return pd.DataFrame(rows)


def _predict(model: Any, hu: np.ndarray, batch_size: int) -> np.ndarray:
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim == len(model.inputs[0].shape) - 1:
        x = x[..., None]
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def counterfactual_effect(
    model: Any,
    hu_with: np.ndarray,
    hu_without: np.ndarray,
    output_index: int = 0,
    threshold: float = 0.5,
    batch_size: int = 32,
) -> Any:
    """Change in probability caused by a mimic, from paired slices that differ only by it.

    The phantom renders each slice twice (:func:`brain_audit.phantom.render_counterfactual`): with the
    device / calcification and without, same anatomy and lesions. A model that uses the mimic as a
    shortcut changes its answer; one that reads the bleed does not. This is an intervention, so
    unlike a saliency map it cannot mislead about what the model uses.

    Args:
        model: Keras model, input in HU (``build_model``).
        hu_with: float (N, H, W) HU with the mimic.
        hu_without: float (N, H, W) HU of the same slices without it.
        output_index: output column.
        threshold: decision threshold (a pair "flips" when the decision differs).
        batch_size: prediction batch size.

    Returns:
        pandas.DataFrame, one row per pair: ``p_with``, ``p_without``, ``delta`` (= p_with - p_without)
        and ``flipped`` (bool). Its ``attrs["mean_delta"]`` and ``attrs["flip_rate"]`` summarise it.
    """
    import pandas as pd

    a, b = np.asarray(hu_with), np.asarray(hu_without)
    if a.shape != b.shape:
        raise ValueError(f"`hu_with` and `hu_without` must have one shape. Got {a.shape} and {b.shape} instead.")
    if a.shape[0] == 0:
        raise ValueError("`hu_with` must hold at least one slice. Got an empty batch instead.")
    pw = _predict(model, a, batch_size)[:, output_index]
    po = _predict(model, b, batch_size)[:, output_index]
    frame = pd.DataFrame({"p_with": pw, "p_without": po, "delta": pw - po, "flipped": (pw >= threshold) != (po >= threshold)})
    frame.attrs["mean_delta"] = float(frame["delta"].mean())
    frame.attrs["flip_rate"] = float(frame["flipped"].mean())
    return frame


# ----------------------------------------------------------------------------- sanity check
#: After the whole cascade is randomised, a trustworthy method's maps keep a mean Spearman rank
#: correlation with the trained maps below this (Adebayo et al. 2018 show edge-detector-like methods
#: staying near 1; Grad-CAM drops towards 0).
SANITY_MAX_RHO: float = 0.5


def _weight_groups(model: Any, path: list[Any]) -> list[tuple[str, list[Any]]]:
    """Layers with weights from the output backwards, grouped: the head layers one by one, then the
    units of the sub-model on the way to ``path`` (EfficientNet: ``top``, ``block7a``, ``block6d``, ...)."""
    groups: list[tuple[str, list[Any]]] = []
    sub = path[0] if len(path) > 1 else None
    for lay in reversed(model.layers):
        if lay is sub:
            inner: dict[str, list[Any]] = {}
            for il in reversed(_flat_layers(sub)):
                if il.weights:
                    inner.setdefault(il.name.split("_")[0], []).append(il)
            groups.extend((f"{sub.name}/{k}", v) for k, v in inner.items())
        elif lay.weights and not _is_model(lay):
            groups.append((lay.name, [lay]))
    return groups


def _flat_layers(model: Any) -> list[Any]:
    out: list[Any] = []
    for lay in _sublayers(model):
        out.extend(_flat_layers(lay) if _is_model(lay) else [lay])
    return out


def randomization_check(
    model: Any,
    hu_batch: np.ndarray,
    layer: str | None = None,
    output_index: int = 0,
    steps: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018): do the maps depend on the weights?

    From the output backwards, the weights of one more group of layers are re-drawn at each step
    (the head's Dense layer, then EfficientNet's ``top`` unit, ``block7a``, ...: normal with each
    variable's own mean and standard deviation; BatchNormalization moving statistics kept, so the
    network stays numerically sane) and the maps recomputed. The Spearman rank correlation of each
    map with the trained model's map must fall; a method whose maps survive randomisation unchanged
    shows the image, not the model, and is reported as not trustworthy. The model's weights are
    restored on return, also after an error.

    Args:
        model: the trained Keras model.
        hu_batch: float (N, H, W) HU slices (a few are enough).
        layer, output_index: as in :func:`grad_cam`.
        steps: number of cascade steps (groups randomised cumulatively), >= 1.
        seed: seed of the re-drawn weights.

    Returns:
        dict: ``table`` (pandas.DataFrame: ``step``, ``randomised`` group, ``spearman_mean``,
        ``spearman_min`` over the batch; a map that randomisation makes all-zero counts as rho = 0),
        ``rho_final`` (mean rho after the last step) and ``trustworthy`` (``rho_final <``
        :data:`SANITY_MAX_RHO`).

    References:
        Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1. Got {steps!r} instead.")
    cam_fn = _cached(model, layer, output_index)
    path = find_layer(model, cam_fn.layer)
    groups = _weight_groups(model, path)[: int(steps)]
    original = [v.numpy().copy() for v in model.weights]
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        base = cam_fn(hu_batch)
    rows = []
    try:
        for step, (name, layers) in enumerate(groups, start=1):
            for lay in layers:
                for var in lay.weights:
                    if "moving" in var.path:
                        continue
                    w = var.numpy()
                    sd = float(w.std()) or 0.05
                    var.assign(rng.normal(float(w.mean()), sd, w.shape).astype(w.dtype))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                maps = cam_fn(hu_batch)
            rhos = []
            for a, b in zip(base, maps):
                if not a.any() or not b.any() or a.std() == 0 or b.std() == 0:
                    rhos.append(0.0)
                else:
                    rhos.append(float(spearmanr(a.ravel(), b.ravel())[0]))
            rows.append({"step": step, "randomised": name, "spearman_mean": float(np.mean(rhos)), "spearman_min": float(np.min(rhos))})
    finally:
        for var, w in zip(model.weights, original):
            var.assign(w)
    table = pd.DataFrame(rows)
    rho_final = float(table["spearman_mean"].iloc[-1]) if len(table) else float("nan")
    return {"table": table, "rho_final": rho_final, "trustworthy": bool(rho_final < SANITY_MAX_RHO)}


# ----------------------------------------------------------------------------- pictures
def overlay_title(image_id: str, probability: float | None = None, flags: dict[str, Any] | Sequence[str] = ()) -> str:
    """The overlay's title: ``"ID_0a1b2c3d4  p(any)=0.93  flags: device_focus, bone_focus"``."""
    if isinstance(flags, dict):
        flags = [k for k in FLAGS if flags.get(k)]
    parts = [str(image_id)]
    if probability is not None:
        parts.append(f"p={probability:.3f}")
    parts.append("flags: " + (", ".join(flags) if flags else "none"))
    return "  ".join(parts)


def save_overlay(path: Any, hu: np.ndarray, cam: np.ndarray, title: str = "", alpha: float = 0.45) -> Any:
    """The seed's picture: the CT in the brain window on the left, the Grad-CAM heat map over it on the right (PNG).

    Args:
        path: PNG to write (atomically, via :func:`brain_audit.figures.save_figure`).
        hu: float (H, W) HU of the slice.
        cam: float (h, w) map in [0, 1]; resized (bilinear) to (H, W).
        title: figure title, e.g. :func:`overlay_title` (never identifying DICOM fields).
        alpha: opacity of the heat map, in [0, 1].
    """
    from .figures import _pyplot, save_figure
    from .windowing import BRAIN, window

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Got {alpha!r} instead.")
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    plt = _pyplot()
    gray = window(x, *BRAIN)
    heat = np.clip(_resize_to(cam, x.shape), 0.0, 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    axes[0].imshow(gray, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"CT, brain window (W{BRAIN.width:g} L{BRAIN.center:g})", fontsize=9)
    axes[1].imshow(gray, cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- batches -> table
def profile_columns(lesion: bool = False) -> list[str]:
    """Columns of :func:`attention_profile` (and of the audit tables built from it), in order."""
    from .skull import DISJOINT_ORDER

    names = list(DISJOINT_ORDER) + ["other"]
    cols = [f"energy_{n}" for n in names] + [f"area_{n}" for n in names] + ["peak_y", "peak_x", "peak_region"]
    if lesion:
        cols += ["lesion_energy", "lesion_area", "pointing_distance_px", "pointing_hit"]
    return cols + list(FLAGS)


def audit_batch(
    model: Any,
    hu_batch: np.ndarray,
    *,
    masks: Sequence[dict[str, np.ndarray]] | None = None,
    lesion_masks: Sequence[np.ndarray | None] | None = None,
    labels: Sequence[int | None] | np.ndarray | None = None,
    image_ids: Sequence[str] | None = None,
    layer: str | None = None,
    output_index: int = 0,
    method: Method = "gradcam",
    threshold: float = 0.5,
    hit_radius_px: float = HIT_RADIUS_PX,
) -> tuple[Any, np.ndarray]:
    """Grad-CAM and attention profiles of a batch of HU slices already at the model's input size.

    What Phase 3 (``brain_audit.train``) and the audit tables call on the HU cache: one gradient pass
    (the probabilities come from the same pass), then :func:`attention_profile` per slice.

    Args:
        model: Keras model, HU input (``build_model``).
        hu_batch: float (N, S, S) or (N, S, S, C) HU at the model's input size.
        masks: per-slice region masks at any resolution (e.g. :func:`brain_audit.skull.region_masks`
            of the full-resolution slice, or phantom truth); default: ``region_masks`` of the HU given
            (channel ``C // 2``, the centre slice of a 2.5D input, as :class:`brain_audit.model.MultiWindow`).
        lesion_masks: per-slice lesion truth (bool, the masks' shape) or None entries.
        labels: per-slice 0/1 labels of the explained output, or None entries.
        image_ids: per-slice IDs for the ``image_id`` column (default ``"0"``, ``"1"``, ...).
        layer, output_index, method: as in :func:`grad_cam`.
        threshold, hit_radius_px: as in :func:`attention_profile`.

    Returns:
        ``(table, maps)``: pandas.DataFrame with ``image_id``, ``probability``, ``label``, the columns of
        :func:`profile_columns` and ``has_metal`` / ``has_calcification`` / ``has_head_holder``; and the
        float32 (N, S, S) maps. Zero maps are kept (``peak_region`` "none") and warned about once.
    """
    import pandas as pd

    from .skull import region_masks

    x = np.asarray(hu_batch, dtype=np.float32)
    n = len(x)
    for name, seq in (("masks", masks), ("lesion_masks", lesion_masks), ("labels", labels), ("image_ids", image_ids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{name}` must hold one entry per slice ({n}). Got {len(seq)} instead.")
    cam_fn = _cached(model, layer, output_index, method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        maps, logits = cam_fn._maps(x, return_logits=True, stacklevel=2)
    for w in caught:
        warnings.warn(str(w.message), RuntimeWarning, stacklevel=2)
    probs = 1.0 / (1.0 + np.exp(-logits[:, output_index].astype(np.float64)))
    rows = []
    for i in range(n):
        m = masks[i] if masks is not None else region_masks(x[i] if x.ndim == 3 else x[i, ..., x.shape[-1] // 2])
        label = None if labels is None or labels[i] is None else int(labels[i])
        lesion = None if lesion_masks is None else lesion_masks[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps already warned about above
            prof = attention_profile(maps[i], masks=m, lesion_mask=lesion, probability=float(probs[i]), label=label,
                                     threshold=threshold, hit_radius_px=hit_radius_px)
        row = {"image_id": str(image_ids[i]) if image_ids is not None else str(i), "probability": float(probs[i]), "label": label}
        row.update(prof)
        row.update({f"has_{k}": v for k, v in mimic_presence(m).items()})
        rows.append(row)
    return pd.DataFrame(rows), maps


# ----------------------------------------------------------------------------- files -> overlays + table
def _dicom_files(images: Sequence[Any]) -> list[Any]:
    from pathlib import Path

    files: list[Path] = []
    for item in images:
        p = Path(item)
        files.extend(sorted(p.glob("*.dcm")) if p.is_dir() else [p])
    return files


def audit_files(
    model: Any,
    images: Sequence[Any],
    out_dir: Any,
    *,
    layer: str | None = None,
    output_index: int = 0,
    method: Method = "gradcam",
    batch_size: int = 16,
    labels: Any = None,
    threshold: float = 0.5,
    overlays: bool = True,
    sanity_steps: int = 4,
    seed: int = 0,
) -> Any:
    """Grad-CAM audit of DICOM slices: an overlay PNG per slice and one table of attention profiles.

    Each file is read to HU (:func:`brain_audit.dicom.read_hu`); regions are found at full
    resolution (:func:`brain_audit.skull.region_masks`); the HU are resized to the model's input
    size (:func:`brain_audit.windowing.resize_hu`) and explained in batches (:class:`GradCAM`, which
    also gives the probability from the same pass); the map is resized back and profiled
    (:func:`attention_profile`). Unreadable files are listed in ``skipped.csv`` with their reason and
    the rest go on.

    Writes into ``out_dir``: ``overlays/<image_id>.png``, ``profiles.csv`` (one row per slice:
    ``image_id``, ``file``, ``probability``, ``label``, the profile columns and mimic presence),
    ``skipped.csv``, ``sanity.csv`` (the Adebayo randomisation check of the maps) and ``run.json`` (:func:`brain_audit.provenance.run_record`).

    Args:
        model: Keras model taking one HU slice per sample, (N, S, S, 1) (``build_model(context=0)``).
        images: DICOM files and / or folders (their ``*.dcm``, sorted).
        out_dir: output folder (created).
        layer, output_index, method: as in :func:`grad_cam`.
        batch_size: slices per gradient pass, >= 1.
        labels: optional RSNA label table (:func:`brain_audit.labels.read_labels`), used for the
            ``label`` column and ``right_for_wrong_reason``; column = the explained output's label.
        threshold: decision threshold for ``right_for_wrong_reason``.
        overlays: write the PNGs.
        sanity_steps: cascade steps of :func:`randomization_check`, run on the first (up to 8) slices
            and written to ``sanity.csv`` and ``run.json`` (``trustworthy``); 0 skips it.
        seed: seed of the randomisation check.

    Returns:
        pandas.DataFrame of the profiles (as written to ``profiles.csv``); ``attrs["n_skipped"]`` counts
        the unreadable files.
    """
    from pathlib import Path

    import pandas as pd

    from .dicom import read_hu
    from .errors import BrainAuditError, ConfigError
    from .provenance import file_fingerprint, run_record, write_csv, write_json
    from .rsna import LABEL_COLUMNS
    from .skull import region_masks
    from .windowing import resize_hu

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1. Got {batch_size!r} instead.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1 or shape[1] is None:
        raise ConfigError(
            f"`model` must take single HU slices (N, S, S, 1). Got input shape {shape} instead "
            "(a 2.5D model with context slices needs its neighbours; audit it from the dataset feed)."
        )
    size = (int(shape[1]), int(shape[2]))
    cam_fn = _cached(model, layer, output_index, method)
    column = LABEL_COLUMNS[output_index] if cam_fn.n_outputs == len(LABEL_COLUMNS) else "any"
    out = Path(out_dir)
    files = _dicom_files(images)
    tables: list[Any] = []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[Any, np.ndarray, dict[str, np.ndarray]]] = []
    first: list[np.ndarray] = []  # model-size HU of the first slices, for the sanity check

    def flush() -> None:
        if not pending:
            return
        ids = [Path(f).stem for f, _, _ in pending]
        labs = [int(labels.loc[i, column]) if labels is not None and i in labels.index else None for i in ids]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero maps are recorded as peak_region "none"
            small = np.stack([resize_hu(hu, size) for _, hu, _ in pending])
            first.extend(small[: max(0, 8 - len(first))])
            part, maps = audit_batch(
                model, small, masks=[m for _, _, m in pending],
                labels=labs, image_ids=ids, layer=layer, output_index=output_index, method=method, threshold=threshold,
            )
        part.insert(1, "file", [str(f) for f, _, _ in pending])
        tables.append(part)
        if overlays:
            for (f, hu, _), cam, rec in zip(pending, maps, part.to_dict("records")):
                title = overlay_title(rec["image_id"], rec["probability"], rec)
                save_overlay(out / "overlays" / f"{rec['image_id']}.png", hu, cam, title=title)
        pending.clear()

    for f in files:
        try:
            hu = read_hu(f)
        except (BrainAuditError, OSError) as exc:
            skipped.append({"file": str(f), "reason": str(exc)})
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            masks = region_masks(hu)
        if caught:  # degenerate but legal (no head, open skull): say which file, carry on
            note = "; ".join(str(w.message) for w in caught)
            warnings.warn(f"{Path(f).name}: {note}", RuntimeWarning, stacklevel=2)
        pending.append((f, hu, masks))
        if len(pending) >= batch_size:
            flush()
    flush()
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image_id", "file", "probability", "label"])
    table.attrs["n_skipped"] = len(skipped)
    write_csv(out / "profiles.csv", table)
    write_csv(out / "skipped.csv", pd.DataFrame(skipped, columns=["file", "reason"]))
    sanity: dict[str, Any] = {}
    if sanity_steps and first:
        check = randomization_check(model, np.stack(first), layer=layer, output_index=output_index, steps=sanity_steps, seed=seed)
        write_csv(out / "sanity.csv", check["table"])
        sanity = {"rho_final": check["rho_final"], "trustworthy": check["trustworthy"], "steps": int(sanity_steps)}
        if not check["trustworthy"]:
            warnings.warn(
                f"audit_files: the maps survive randomisation of the top {sanity_steps} layer groups (Spearman "
                f"{check['rho_final']:.2f} >= {SANITY_MAX_RHO}); they are not trustworthy evidence of what the model uses.",
                RuntimeWarning,
                stacklevel=2,
            )
    table.attrs["sanity"] = sanity
    write_json(
        out / "run.json",
        run_record(
            config={"layer": cam_fn.layer, "output_index": output_index, "method": method, "batch_size": int(batch_size),
                    "threshold": threshold, "input_size": list(size)},
            inputs={str(f): file_fingerprint(f) for f in files if Path(f).exists()},
            n_images=len(table),
            n_skipped=len(skipped),
            sanity=sanity,
        ),
    )
    return table
