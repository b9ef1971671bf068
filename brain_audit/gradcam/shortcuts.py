"""Shortcut tests that do not trust saliency: intervention and the randomisation sanity check.

:func:`counterfactual_effect` measures the change in probability between paired slices that differ only by a
mimic (a device, a calcification); :func:`randomization_check` re-draws the weights from the output backwards
and asks whether the maps change (maps that survive randomisation show the image, not the model).

References:
    Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
    Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from brain_audit.gradcam.maps import Method, _is_model, _sublayers, cached_cam, find_layer
from brain_audit.model.predictions import predict
from brain_audit.skull import region_masks

__all__ = ["counterfactual_effect", "SANITY_MAX_RHO", "randomization_check"]


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

    a, b = np.asarray(hu_with), np.asarray(hu_without)
    if a.shape != b.shape:
        raise ValueError(f"`hu_with` and `hu_without` must have one shape. Got {a.shape} and {b.shape} instead.")
    if a.shape[0] == 0:
        raise ValueError("`hu_with` must hold at least one slice. Got an empty batch instead.")
    pw = predict(model, a, batch_size)[:, output_index]
    po = predict(model, b, batch_size)[:, output_index]
    frame = pd.DataFrame({"p_with": pw, "p_without": po, "delta": pw - po, "flipped": (pw >= threshold) != (po >= threshold)})
    frame.attrs["mean_delta"] = float(frame["delta"].mean())
    frame.attrs["flip_rate"] = float(frame["flipped"].mean())
    return frame


#: After the cascade is randomised, a trustworthy method's maps keep a mean Spearman rank correlation with
#: the trained maps below this (Adebayo et al. 2018 show edge-detector-like methods staying near 1; maps
#: that depend on the weights drop towards 0).
SANITY_MAX_RHO: float = 0.3


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


def _head_pixels(hu_batch: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, H, W) bool: the head of each slice (centre channel of a 2.5D input), all True where none is found."""
    x = np.asarray(hu_batch, dtype=np.float32)
    if x.ndim == 4:
        x = x[..., x.shape[-1] // 2]
    out = np.ones((len(x),) + tuple(shape), dtype=bool)
    for i, hu in enumerate(x):
        head = region_masks(hu)["head"] if min(hu.shape) >= 8 else np.zeros(hu.shape, bool)
        if head.shape == tuple(shape) and head.sum() >= 16:
            out[i] = head
    return out


def randomization_check(
    model: Any,
    hu_batch: np.ndarray,
    layer: str | None = None,
    output_index: int = 0,
    steps: int = 4,
    seed: int = 0,
    method: Method = "gradcam",
    head_only: bool = True,
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
        hu_batch: float (N, H, W) HU slices, or (N, H, W, 1 + 2 context) for a 2.5-D model (a few are enough).
        layer, output_index, method: as in :func:`grad_cam` (the audits pass :func:`audit_layer` and
            :data:`AUDIT_METHOD`).
        steps: number of cascade steps (groups randomised cumulatively), >= 1; the default 4 re-draws the
            head, EfficientNet's ``top``, ``block7a`` and ``block6d``.
        head_only: compare the maps over the head only (:func:`brain_audit.skull.region_masks` of the HU;
            all pixels where a slice has no head): outside it both maps are near zero and would agree
            trivially, which on CT (half of every slice is air) inflates the correlation of any two maps.
        seed: seed of the re-drawn weights.

    Returns:
        dict: ``table`` (pandas.DataFrame: ``step``, ``randomised`` group, ``spearman_mean``,
        ``spearman_min`` over the batch; a map that randomisation makes all-zero counts as rho = 0),
        ``rho_final`` (mean rho after the last step), ``trustworthy`` (``rho_final <``
        :data:`SANITY_MAX_RHO`), ``layer``, ``method`` and ``slices`` (the batch size).

    References:
        Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
    """

    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1. Got {steps!r} instead.")
    cam_fn = cached_cam(model, layer, output_index, method)
    path = find_layer(model, cam_fn.layer)
    groups = _weight_groups(model, path)[: int(steps)]
    original = [v.numpy().copy() for v in model.weights]
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        base = cam_fn(hu_batch)
        within = _head_pixels(hu_batch, base.shape[1:]) if head_only else np.ones(base.shape, dtype=bool)
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
            for a, b, keep in zip(base, maps, within):
                a, b = a[keep], b[keep]
                if not a.any() or not b.any() or a.std() == 0 or b.std() == 0:
                    rhos.append(0.0)
                else:
                    rhos.append(float(spearmanr(a, b)[0]))
            rows.append({"step": step, "randomised": name, "spearman_mean": float(np.mean(rhos)), "spearman_min": float(np.min(rhos))})
    finally:
        for var, w in zip(model.weights, original):
            var.assign(w)
    table = pd.DataFrame(rows)
    rho_final = float(table["spearman_mean"].iloc[-1]) if len(table) else float("nan")
    return {"table": table, "rho_final": rho_final, "trustworthy": bool(rho_final < SANITY_MAX_RHO),
            "layer": cam_fn.layer, "method": method, "slices": int(len(base))}

