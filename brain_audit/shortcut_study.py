"""The seed's shortcuts, planted in a phantom cohort and caught twice: by attention and by intervention.

The seed notebook's Grad-CAM caught its model right for the wrong reasons: aneurysm coils, catheters, frontal
bone and choroid-plexus / falx calcifications (Geirhos et al. 2020 call it shortcut learning). The demo plants
each of them as a mimic correlated with the bleed label (:mod:`brain_audit.phantom`) and trains a *clean
reference* model on a cohort where the same mimics occur equally with and without a bleed. For every planted
shortcut this module then measures, on the same held-out slices for both models:

(a) **attention** (:func:`shortcut_evidence`): on the slices that hold the mimic (the phantom manifest's
    ``images[...]["mimics"]``), the share whose map peaks within 15 mm of the planted object (the pointing game
    on the phantom's truth mask of the mimic, beside its chance priors) and the share raising the audit's
    matching flag of :data:`SHORTCUT_FLAGS` (:func:`brain_audit.gradcam.attention.attention_profile`, which
    needs no truth), for two kinds of map (:data:`ATTENTION_MAPS`): occlusion sensitivity
    (:mod:`brain_audit.gradcam.occlusion`), which decides, and the audits' HiResCAM beside it; each rate with a
    Wilson interval; the paired difference (shortcut model - clean model, same slices) with a patient-cluster
    bootstrap interval; their ratio; and the rate chance gives (the uniform map's for the flags, 0 by
    construction; the best prior's for the pointing game);
(b) **intervention** (:func:`intervention`): the mimic added to slices without it and removed from slices with
    it (:func:`counterfactual_pairs`: :func:`brain_audit.phantom.render.render_counterfactual`, then
    :func:`brain_audit.dataset.cache.preprocess_slice`, exactly as the cache was built); the mean change in
    probability caused by the intervention (patient-cluster bootstrap interval) and the share of decisions it
    flips at each model's operating threshold (Wilson interval).

:func:`run_shortcut_study` does both for a finished demo and its clean reference and writes
``<out>/shortcut_study/``: ``summary.json``, ``shortcut_study.md`` (one table row per shortcut),
``attention.csv`` (one row per profiled slice and model) and ``pairs.csv`` (one row per counterfactual pair).

References:
    Geirhos R, Jacobsen J-H, Michaelis C, et al. Shortcut learning in deep neural networks. Nature Machine
    Intelligence 2020;2:665-673.
    Zech JR, Badgeley MA, Liu M, et al. Variable generalization performance of a deep learning model to detect
    pneumonia in chest radiographs. PLOS Medicine 2018 (a confounder caught by intervention).
    Draelos RL, Carin L. HiResCAM. arXiv:2011.08891, 2020 (the audits' maps).
    Zeiler MD, Fergus R. Visualizing and understanding convolutional networks. ECCV 2014 (occlusion).
    Adebayo J, Muelly M, Abelson H, Kim B. Post hoc explanations may be ineffective for detecting unknown
    spurious correlation. ICLR 2022 (gradient maps of a model that uses a spurious tag and of one that does not
    can look alike, as the HiResCAM columns here show).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from brain_audit.audit.attention_audit import field_of_view
from brain_audit.audit.source import data_line, data_source
from brain_audit.audit.statistics import cluster_bootstrap, paired_difference_interval, wilson_interval
from brain_audit.config import RunConfig
from brain_audit.dataset.cache import open_cache, preprocess_slice
from brain_audit.dataset.masks import has_masks, mask_path, read_masks
from brain_audit.errors import ConfigError
from brain_audit.gradcam.attention import HIT_BASELINES, audit_batch, chance_flags
from brain_audit.gradcam.occlusion import occlusion_maps
from brain_audit.gradcam.shortcuts import counterfactual_effect
from brain_audit.model.predictions import any_column
from brain_audit.model.weights import load_model
from brain_audit.phantom.lesions import MIMICS
from brain_audit.phantom.render import render_counterfactual
from brain_audit.provenance import atomic_write_text, write_csv, write_json
from brain_audit.run_layout import RunPaths

__all__ = [
    "ATTENTION_MAPS",
    "CAUGHT_RATIO",
    "SHORTCUT_FLAGS",
    "STUDY_SHORTCUTS",
    "CounterfactualPairs",
    "counterfactual_pairs",
    "intervention",
    "run_shortcut_study",
    "shortcut_evidence",
]


#: Mimic -> the attention flag that catches it (:data:`brain_audit.gradcam.attention.FLAGS`). Devices, metal or
#: polymer, fall in the regions' ``device`` mask (:func:`brain_audit.skull.region_masks`); a frontal-bone spur
#: adds skull; the physiologic calcifications are calcified foci.
SHORTCUT_FLAGS: dict[str, str] = {
    "choroid_plexus_calcification": "calcification_focus",
    "pineal_calcification": "calcification_focus",
    "falx_calcification": "calcification_focus",
    "coil": "device_focus",
    "catheter": "device_focus",
    "catheter_metal_tip": "device_focus",
    "frontal_bone": "bone_focus",
}

#: The four shortcuts the demo plants and studies, one per kind the seed's Grad-CAM caught: a metal device, a
#: polymer device, bone, a calcification (choroid plexus: the commonest of the three at its levels).
STUDY_SHORTCUTS: tuple[str, ...] = ("coil", "catheter", "frontal_bone", "choroid_plexus_calcification")

#: The two intervention directions: the mimic added to slices without it, removed from slices with it.
DIRECTIONS: tuple[str, ...] = ("added", "removed")

_MODELS: tuple[str, ...] = ("shortcut_model", "clean_model")

#: Maps whose flags the study counts, the first one deciding "caught by attention": occlusion sensitivity
#: (:func:`brain_audit.gradcam.occlusion.occlusion_maps`, a change of the model's own logit, so it can only point
#: at an object the decision uses) and the audits' HiResCAM (:func:`brain_audit.gradcam.maps.audit_cam`), whose
#: gradient x activation maps also light a salient object a model does not use.
ATTENTION_MAPS: tuple[str, ...] = ("occlusion", "hirescam")

#: A shortcut is caught by attention when the shortcut model's flag rate is at least this many times the clean
#: model's and the paired difference's 95 % interval lies above 0.
CAUGHT_RATIO: float = 3.0


def _check_mimic(mimic: str) -> str:
    if mimic not in SHORTCUT_FLAGS:
        raise ConfigError(f"`mimic` must be one of {MIMICS}. Got {mimic!r} instead.")
    return mimic


@dataclass(frozen=True)
class CounterfactualPairs:
    """Slices rendered twice, with and without one mimic, everything else equal.

    Attributes:
        mimic: the mimic (a name of :data:`~brain_audit.phantom.lesions.MIMICS`).
        direction: ``"added"`` (the written slice lacked it) or ``"removed"`` (it held it).
        image_ids: (N,) image IDs.
        patients: (N,) patient of each pair (the bootstrap's clusters).
        with_mimic, without_mimic: float32 (N, S, S) HU at the model's input size.
        unchanged: candidates skipped because the two renders were equal (the mimic cannot appear at that level).
        candidates: slices of that direction the pairs were drawn from (with / without the mimic).
    """

    mimic: str
    direction: str
    image_ids: list[str]
    patients: list[str]
    with_mimic: np.ndarray
    without_mimic: np.ndarray
    unchanged: int = 0
    candidates: int = 0

    def __len__(self) -> int:
        return len(self.image_ids)


def counterfactual_pairs(data_root: str | Path, image_ids: Sequence[str], patients: Mapping[str, str], mimic: str,
                         image_size: int, *, limit: int = 48, seed: int = 0) -> dict[str, CounterfactualPairs]:
    """Render the mimic added to / removed from slices of a phantom cohort, preprocessed as the cache does.

    Candidates are the ``image_ids`` without the mimic (``"added"``) and with it (``"removed"``), per the
    cohort's ``phantom_manifest.json``. Each direction visits its candidates in a seeded random order
    (``numpy.random.default_rng(seed)``), renders the slice with and without the mimic
    (:func:`brain_audit.phantom.render.render_counterfactual`: same anatomy, lesions, other mimics and noise),
    resizes both with :func:`brain_audit.dataset.cache.preprocess_slice` and keeps the pair unless the two are
    equal (a mimic that cannot appear at that level), until ``limit`` pairs are kept.

    Args:
        data_root: the phantom cohort's folder (with ``phantom_manifest.json``).
        image_ids: the slices to draw from (e.g. every audit slice).
        patients: image ID -> patient ID.
        mimic: the mimic to add / remove.
        image_size: the model's input side, px.
        limit: pairs per direction, >= 1.
        seed: seed of the visiting order.

    Returns:
        ``{"added": CounterfactualPairs, "removed": CounterfactualPairs}`` (either may hold 0 pairs).
    """
    _check_mimic(mimic)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ConfigError(f"`limit` must be an integer >= 1. Got {limit!r} instead.")
    wanted = set(map(str, image_ids))
    images = json.loads((Path(data_root) / "phantom_manifest.json").read_text())["images"]
    out = {}
    for k, (direction, has_it) in enumerate((("added", False), ("removed", True))):
        candidates = [r["image_id"] for r in images if r["image_id"] in wanted and (mimic in r["mimics"]) == has_it]
        order = np.random.default_rng([seed, k]).permutation(len(candidates))
        kept, w, wo, unchanged = [], [], [], 0
        for i in order:
            image_id = candidates[i]
            a = preprocess_slice(render_counterfactual(data_root, image_id, mimic, True)[0], image_size)
            b = preprocess_slice(render_counterfactual(data_root, image_id, mimic, False)[0], image_size)
            if np.array_equal(a, b):
                unchanged += 1
                continue
            kept.append(image_id)
            w.append(a.astype(np.float32))
            wo.append(b.astype(np.float32))
            if len(kept) >= limit:
                break
        empty = np.zeros((0, image_size, image_size), np.float32)
        out[direction] = CounterfactualPairs(
            mimic, direction, kept, [str(patients[i]) for i in kept], np.stack(w) if w else empty,
            np.stack(wo) if wo else empty, unchanged, len(candidates))
    return out


def _rate(flags: np.ndarray) -> dict[str, Any]:
    k, n = int(np.sum(flags)), len(flags)
    return {"flagged": k, "n": n, "rate": k / n if n else None, "rate_ci95": list(wilson_interval(k, n)) if n else None}


def intervention(model: Any, threshold: float, pairs: CounterfactualPairs, *, output_index: int = 0,
                 n_boot: int = 2000, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """What adding or removing a mimic does to one model's probability, pair by pair.

    ``change`` is the probability after the intervention minus before: ``p_with - p_without`` for ``"added"``,
    ``p_without - p_with`` for ``"removed"`` (:func:`brain_audit.gradcam.shortcuts.counterfactual_effect`); a
    model that uses the mimic as a bleed sign has positive mean change when it is added and negative when it is
    removed, a model that reads the bleed has none. A pair *flips* when the decision at ``threshold``
    (positive: ``p >= threshold``) differs between the two renders.

    Args:
        model: Keras model, HU input (float32 (N, S, S, 1) in Hounsfield units, ``build_model``).
        threshold: the model's operating threshold.
        pairs: :func:`counterfactual_pairs` of one direction, at the model's input size.
        output_index: the explained output (``any``).
        n_boot: patient-cluster bootstrap resamples (:func:`brain_audit.audit.statistics.cluster_bootstrap`).
        seed: the bootstrap's seed.

    Returns:
        ``(summary, table)``: ``summary`` with ``n`` pairs, ``patients``, ``unchanged_renders``,
        ``mean_change`` and its 95 % patient-cluster bootstrap interval ``mean_change_ci95``, ``flips``,
        ``flip_rate`` and its Wilson interval ``flip_rate_ci95`` (``n`` 0: no figures); ``table`` one row per
        pair (``image_id``, ``patient_id``, ``p_with``, ``p_without``, ``change``, ``flipped``).

    References:
        Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
    """
    summary: dict[str, Any] = {"n": len(pairs), "patients": len(set(pairs.patients)),
                               "unchanged_renders": pairs.unchanged, "threshold": float(threshold)}
    if not len(pairs):
        return summary, pd.DataFrame(columns=["image_id", "patient_id", "p_with", "p_without", "change", "flipped"])
    eff = counterfactual_effect(model, pairs.with_mimic[..., None], pairs.without_mimic[..., None],
                                output_index=output_index, threshold=threshold)
    sign = 1.0 if pairs.direction == "added" else -1.0
    change = sign * eff["delta"].to_numpy(dtype=np.float64)
    mean, lo, hi = cluster_bootstrap(change, pairs.patients, np.mean, n_boot=n_boot, seed=seed)
    flips = int(eff["flipped"].sum())
    summary.update(mean_change=mean, mean_change_ci95=[lo, hi], flips=flips, flip_rate=flips / len(pairs),
                   flip_rate_ci95=list(wilson_interval(flips, len(pairs))))
    table = pd.DataFrame({"image_id": pairs.image_ids, "patient_id": pairs.patients,
                          "p_with": eff["p_with"].to_numpy(np.float64), "p_without": eff["p_without"].to_numpy(np.float64),
                          "change": change, "flipped": eff["flipped"].to_numpy(bool)})
    return summary, table


def _profile(model: Any, hu: np.ndarray, labels: np.ndarray | None, threshold: float, output_index: int,
             batch_size: int, kind: str, pixel_mm: Sequence[float] | float | None,
             objects: np.ndarray | None) -> pd.DataFrame:
    """Attention profiles of ``hu`` (:func:`brain_audit.gradcam.attention.audit_batch`), ``batch_size`` at a time,
    of the audits' maps (``kind`` ``"hirescam"``) or of occlusion-sensitivity maps (``"occlusion"``); the
    pointing game scored against ``objects`` (the planted mimic's masks) when given."""
    parts = []
    mm = np.broadcast_to(np.asarray(pixel_mm if pixel_mm is not None else np.nan, dtype=np.float64), (len(hu),))
    for start in range(0, len(hu), batch_size):
        sel = slice(start, start + batch_size)
        maps = occlusion_maps(model, hu[sel], output_index=output_index) if kind == "occlusion" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-zero map raises no flag
            table, _ = audit_batch(model, hu[sel], labels=None if labels is None else labels[sel],
                                   output_index=output_index, threshold=threshold, maps=maps,
                                   lesion_masks=None if objects is None else list(objects[sel]),
                                   pixel_mm=[None if not np.isfinite(v) else float(v) for v in mm[sel]])
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def _attention(flags: Mapping[str, np.ndarray], chance: np.ndarray | float, groups: Sequence[str], n_boot: int,
               seed: int) -> dict[str, Any]:
    """Rates of one map kind's flag for both models, their paired difference, ratio, chance rate and verdict
    (``chance``: the per-slice flags of a uniform map, or a rate)."""
    out: dict[str, Any] = {name: _rate(flags[name]) for name in _MODELS}
    s, c = flags["shortcut_model"], flags["clean_model"]
    diff = s.astype(np.float64) - c.astype(np.float64)
    d, lo, hi = cluster_bootstrap(diff, groups, np.mean, n_boot=n_boot, seed=seed)
    method = "patient-cluster bootstrap"
    if not hi > lo:  # every resample gave the same difference (e.g. no slice flagged by either model)
        lo, hi = paired_difference_interval(int(np.sum(s & c)), int(np.sum(s & ~c)), int(np.sum(~s & c)),
                                            int(np.sum(~s & ~c)))
        method = "Newcombe paired score (the bootstrap was degenerate)"
    ratio = _ratio(out["shortcut_model"]["rate"], out["clean_model"]["rate"])
    caught = bool(ratio is not None and ratio >= CAUGHT_RATIO and lo > 0)
    out.update(difference=d, difference_ci95=[lo, hi], difference_ci_method=method, ratio=ratio, caught=caught)
    if np.ndim(chance):
        out["uniform_map_rate"] = _rate(np.asarray(chance, dtype=bool))["rate"]
    else:
        out["chance_rate"] = float(chance)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a / b if b > 0 else (None if a == 0 else math.inf)


def shortcut_evidence(model: Any, clean_model: Any, mimic: str, hu: np.ndarray, patients: Sequence[str], *,
                      labels: np.ndarray | None = None, thresholds: tuple[float, float] = (0.5, 0.5),
                      pairs: Mapping[str, CounterfactualPairs] | None = None, image_ids: Sequence[str] | None = None,
                      output_index: tuple[int, int] = (0, 0), pixel_mm: Sequence[float] | float | None = None,
                      object_masks: np.ndarray | None = None, maps: Sequence[str] = ATTENTION_MAPS,
                      n_boot: int = 2000, seed: int = 0,
                      batch_size: int = 32) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """A shortcut caught by attention and by intervention: a shortcut model beside a clean one, on the same slices.

    Attention, for each kind of map in ``maps`` (:data:`ATTENTION_MAPS`): both models' maps of every slice in
    ``hu`` (slices that hold the mimic), profiled against the regions of the same HU
    (:func:`brain_audit.skull.region_masks`, the peak flags' tolerance :data:`~brain_audit.gradcam.attention.
    HIT_RADIUS_MM` when ``pixel_mm`` is given); the matching flag (:data:`SHORTCUT_FLAGS`) counted per model with
    a Wilson interval; the paired difference of rates (per slice: shortcut flag - clean flag) with a
    patient-cluster bootstrap interval; the ratio of rates (inf when only the shortcut model flags, None when
    neither does); the rate a uniform map would have on these slices
    (:func:`brain_audit.gradcam.attention.chance_flags`; 0 by construction for the peak flags, computed rather
    than assumed); and ``caught`` (ratio >= :data:`CAUGHT_RATIO` and the difference's interval above 0). With
    ``object_masks`` (where the mimic is on each slice: the phantom's truth), the same figures for the map
    *pointing at the planted object* (the pointing game, Zhang et al. 2018: every peak pixel within 15 mm of it;
    ``object``), with the best chance prior's hit rate beside them (``chance_rate``); this decides
    ``caught["attention"]``, the audit flag does without masks. Intervention: :func:`intervention` of both models on each direction of ``pairs``, the paired difference of
    their mean changes (per pair: shortcut model's change - clean model's change) with a patient-cluster bootstrap
    interval, and ``caught`` (the interval of the difference lies on the shortcut's side of 0: above for
    ``added``, below for ``removed``).

    Args:
        model, clean_model: Keras models, HU input (float32 (N, S, S, 1) in Hounsfield units).
        mimic: the planted mimic (a key of :data:`SHORTCUT_FLAGS`).
        hu: float32 (N, S, S) HU at the models' input size, the slices that hold the mimic.
        patients: (N,) patient of each slice (the bootstrap's clusters).
        labels: optional (N,) true 0/1 labels (for ``right_for_wrong_reason`` in the tables).
        thresholds: operating thresholds of (model, clean_model).
        pairs: optional :func:`counterfactual_pairs` output for the intervention.
        image_ids: (N,) IDs for the table (default ``"0"``, ``"1"``, ...).
        output_index: the explained output of (model, clean_model).
        pixel_mm: size of one pixel of ``hu`` in mm, one number or one per slice (None: pixels).
        object_masks: optional bool (N, S, S), the planted mimic on each slice at the models' input size.
        maps: kinds of map to profile (of :data:`ATTENTION_MAPS`); the first decides ``caught["attention"]``.
        n_boot, seed: patient-cluster bootstrap resamples and seed.
        batch_size: slices per gradient pass.

    Returns:
        ``(summary, attention, pairs_table)``: JSON-ready ``summary`` (``mimic``, ``flag``, ``slices``,
        ``patients``, ``attention``: map kind -> ``shortcut_model`` / ``clean_model`` rates, ``difference`` and
        ``difference_ci95``, ``ratio``, ``uniform_map_rate``, ``caught``, and ``object`` (the same for the pointing
        game on the planted object, ``chance_rate`` and ``chance_baseline`` instead of the uniform map's rate) when
        ``object_masks`` are given; ``intervention``: direction -> both
        models' :func:`intervention` figures, ``difference``, ``difference_ci95``, ``caught``; ``caught``:
        ``{"attention": ..., "intervention": ...}``); ``attention`` one row per slice, map kind and model
        (profile columns, ``model``, ``map``); ``pairs_table`` one row per pair and model.

    References:
        Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020.
        Zeiler MD, Fergus R. Visualizing and understanding convolutional networks. ECCV 2014 (occlusion).
    """
    flag = SHORTCUT_FLAGS[_check_mimic(mimic)]
    for kind in maps:
        if kind not in ATTENTION_MAPS:
            raise ConfigError(f"`maps` must hold kinds of {ATTENTION_MAPS}. Got {kind!r} instead.")
    if not maps:
        raise ConfigError(f"`maps` must hold at least one kind of {ATTENTION_MAPS}. Got none instead.")
    x = np.asarray(hu, dtype=np.float32)
    groups = [str(p) for p in patients]
    if len(groups) != len(x):
        raise ValueError(f"`patients` must hold one entry per slice ({len(x)}). Got {len(groups)} instead.")
    ids = [str(i) for i in (image_ids if image_ids is not None else range(len(x)))]
    objects = None if object_masks is None else np.asarray(object_masks, dtype=bool)
    if objects is not None and objects.shape[0] != len(x):
        raise ValueError(f"`object_masks` must hold one mask per slice ({len(x)}). Got {objects.shape[0]} instead.")
    summary: dict[str, Any] = {"mimic": mimic, "flag": flag, "slices": len(x), "patients": len(set(groups)),
                               "attention": {}}
    tables = []
    for kind in maps:
        if not len(x):
            summary["attention"][kind] = {**{name: _rate(np.zeros(0, bool)) for name in _MODELS}, "difference": None,
                                          "difference_ci95": None, "ratio": None, "uniform_map_rate": None,
                                          "caught": False}
            continue
        flags, hits = {}, {}
        for name, m, thr, col in zip(_MODELS, (model, clean_model), thresholds, output_index):
            t = _profile(m, x, labels, thr, col, batch_size, kind, pixel_mm, objects)
            t.insert(0, "model", name)
            t.insert(1, "map", kind)
            t.insert(2, "patient_id", groups)
            t["image_id"] = ids
            tables.append(t)
            flags[name] = t[flag].fillna(False).astype(bool).to_numpy()
            if objects is not None:
                hits[name] = t["pointing_hit"].fillna(False).astype(bool).to_numpy()
        chance = chance_flags(tables[-1])[flag].fillna(False).astype(bool).to_numpy()
        summary["attention"][kind] = _attention(flags, chance, groups, n_boot, seed)
        if objects is not None:  # chance: the best prior's expected hit rate (uniform, centre, head, intracranial)
            priors = {b: float(np.nanmean(tables[-1][b].to_numpy(dtype=np.float64))) for b in HIT_BASELINES}
            best = max(priors, key=lambda b: priors[b])
            obj = _attention(hits, priors[best], groups, n_boot, seed)
            obj["chance_baseline"] = best.removeprefix("baseline_hit_")
            summary["attention"][kind]["object"] = obj
    rows = []
    summary["intervention"] = {}
    for direction, pair in (pairs or {}).items():
        per_model: dict[str, Any] = {}
        changes = []
        for name, m, thr, col in zip(_MODELS, (model, clean_model), thresholds, output_index):
            s, t = intervention(m, thr, pair, output_index=col, n_boot=n_boot, seed=seed)
            per_model[name] = s
            changes.append(t["change"].to_numpy(dtype=np.float64))
            rows.append(t.assign(mimic=mimic, direction=direction, model=name))
        per_model["candidates"] = pair.candidates
        per_model["caught"] = False
        if len(pair):  # paired: the same renders through both models
            d, lo, hi = cluster_bootstrap(changes[0] - changes[1], pair.patients, np.mean, n_boot=n_boot, seed=seed)
            per_model.update(difference=d, difference_ci95=[lo, hi], caught=bool(lo > 0 if direction == "added"
                                                                                 else hi < 0))
        summary["intervention"][direction] = per_model
    first = summary["attention"][maps[0]]
    summary["caught"] = {"attention": (first.get("object") or first)["caught"],
                         "intervention": any(v["caught"] for v in summary["intervention"].values())}
    attention = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    pairs_table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return summary, attention, pairs_table


def _models(config: RunConfig, clean_config: RunConfig) -> tuple[tuple[Any, float], tuple[Any, float]]:
    """(model, threshold) of the demo's final model and of the clean reference (Phase 2, its own validation)."""
    paths, clean = RunPaths(config.out_dir), RunPaths(clean_config.out_dir)
    model_path, operating = paths.finished_model("the shortcut study")
    for path, what in ((clean.model(2), "the clean reference's Phase-2 model"),
                       (clean.phase(2) / "metrics.json", "its Phase-2 metrics")):
        if not path.is_file():
            raise ConfigError(f"{what} must exist: {path} is missing (run `brain-audit demo` first).")
    threshold = float(operating["threshold"])
    clean_threshold = json.loads((clean.phase(2) / "metrics.json").read_text()).get("threshold")
    if clean_threshold is None:
        raise ConfigError(f"the clean reference's Phase-2 metrics must hold a threshold: {clean.phase(2)} has none "
                          "(its validation split needs both classes).")
    return ((load_model(model_path, compile=False), threshold),
            (load_model(clean.model(2), compile=False), float(clean_threshold)))


def _cell(rate: Mapping[str, Any] | None) -> str:
    if not rate or rate.get("rate") is None:
        return "-"
    lo, hi = rate["rate_ci95"]
    return f"{rate['flagged']}/{rate['n']} = {rate['rate']:.0%} ({lo:.0%}-{hi:.0%})"


def _change_cell(e: Mapping[str, Any] | None) -> str:
    if not e or not e.get("n"):
        return "-"
    lo, hi = e["mean_change_ci95"]
    flo, fhi = e["flip_rate_ci95"]
    return (f"{e['mean_change']:+.3f} ({lo:+.3f} to {hi:+.3f}); flips {e['flips']}/{e['n']} "
            f"= {e['flip_rate']:.0%} ({flo:.0%}-{fhi:.0%})")


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else ("inf" if math.isinf(ratio) else f"{ratio:.2f}")


def _figure_text(a: Mapping[str, Any], label: str) -> str:
    lo, hi = a["difference_ci95"]
    s, c = a["shortcut_model"], a["clean_model"]
    chance = (f"; chance {a['chance_rate']:.0%} ({a['chance_baseline']})" if "chance_rate" in a else "")
    return (f"{label}: {s['flagged']}/{s['n']} vs {c['flagged']}/{c['n']} = {s['rate']:.0%} vs {c['rate']:.0%}, "
            f"ratio {_ratio_text(a.get('ratio'))}, difference {a['difference']:+.2f} ({lo:+.2f} to {hi:+.2f}){chance}")


def _attention_cell(a: Mapping[str, Any] | None, flag: str) -> str:
    if not a or a.get("difference") is None:
        return "-"
    parts = [_figure_text(a["object"], "on the object")] if a.get("object") else []
    return "<br>".join(parts + [_figure_text(a, flag)])


def _markdown(summary: Mapping[str, Any]) -> str:
    kinds = list(next(iter(summary["shortcuts"].values()), {}).get("attention", {}))
    names = {"occlusion": "occlusion sensitivity", "hirescam": "HiResCAM (the audits' maps)"}
    lines = [
        "# Shortcut study: the seed's shortcuts, planted and caught",
        "",
        (f"Shortcut model: the demo's Phase-4 model (threshold {summary['thresholds']['shortcut_model']:.4g}); clean "
         f"model: the clean reference's Phase-2 model (threshold {summary['thresholds']['clean_model']:.4g}), "
         "trained where every studied mimic is equally common with and without a bleed. Both are measured on the "
         f"same {summary['audit_slices']} slices of the demo's audit patients; one seed."),
        "",
        ("Attention, on the slices holding the mimic, shortcut model vs clean model, per kind of map (occlusion "
         "sensitivity: the drop in the model's logit when a 25 mm window is replaced by its local median, Zeiler & "
         "Fergus 2014; and the audits' HiResCAM): the share whose peak lies within 15 mm of the planted object "
         "(pointing game on the phantom's truth; chance: the best of a uniform, centre, in-head or intracranial "
         "peak) and the share raising the audit's matching flag (which needs no truth; a uniform map raises none); "
         "ratio = shortcut rate / clean rate; difference = shortcut - clean on the same slices (patient-cluster "
         "bootstrap 95 % CI, Newcombe's paired interval where every resample agrees). Caught by attention: "
         f"{names.get(kinds[0], kinds[0]) if kinds else '-'}, peak on the object, ratio >= {CAUGHT_RATIO:g} with "
         "the difference's CI above 0. "
         "Intervention: mean change in probability (patient-cluster bootstrap 95 % CI) and decisions flipped at "
         "each model's threshold (Wilson 95 % CI), shortcut model / clean model. Caught by intervention: the "
         "paired difference of changes (shortcut - clean) has its CI on the shortcut's side of 0 in a direction."),
        "",
        ("| shortcut | flag | " + " | ".join(f"attention: {names.get(k, k)}" for k in kinds)
         + " | added: mean change (CI), flips (CI) | removed: mean change (CI), flips (CI) "
         "| caught by attention / intervention |"),
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for mimic, e in summary["shortcuts"].items():
        cells = []
        for direction in DIRECTIONS:
            d = e["intervention"].get(direction) or {}
            text = "<br>".join(f"{name.split('_')[0]}: {_change_cell(d.get(name))}" for name in _MODELS)
            if d.get("difference") is not None:
                lo, hi = d["difference_ci95"]
                text += f"<br>difference {d['difference']:+.3f} ({lo:+.3f} to {hi:+.3f})"
            cells.append(text)
        caught = e.get("caught", {})
        verdict = " / ".join("yes" if caught.get(k) else "no" for k in ("attention", "intervention"))
        attention = " | ".join(_attention_cell(e["attention"].get(k), e["flag"]) for k in kinds)
        lines.append(f"| {mimic} | {e['flag']} | {attention} | {cells[0]} | {cells[1]} | {verdict} |")
    lines += ["", "Reference: Geirhos R et al. Shortcut learning in deep neural networks. Nat Mach Intell 2020."]
    return "\n".join(lines) + "\n"


def _object_masks(data_root: str | Path, ids: Sequence[str], mimic: str, size: int) -> np.ndarray | None:
    """Where ``mimic`` is on each slice (the dataset masks, a phantom's truth), padded and resized as the cache's
    HU (:func:`brain_audit.dataset.cache.preprocess_slice`; a pixel counts if any of it is covered); None without
    masks or when a slice has none."""
    root = Path(data_root)
    if not ids or not has_masks(root):
        return None
    out = []
    for image_id in ids:
        if not mask_path(root, image_id).is_file():
            return None
        m = read_masks(root, image_id).get(mimic)
        if m is None:
            return None
        h, w = m.shape
        side = max(h, w)
        square = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = m
        out.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA) > 0)
    return np.stack(out)


def run_shortcut_study(config: RunConfig, clean_config: RunConfig, shortcuts: Sequence[str] = STUDY_SHORTCUTS, *,
                       out_dir: str | Path | None = None, limit: int = 48, max_slices: int = 64, n_boot: int = 2000,
                       ) -> dict[str, Any]:
    """Every planted shortcut caught by attention and by intervention, on a finished demo's audit patients.

    The shortcut model is the demo's Phase-4 model at its operating threshold; the clean model the clean
    reference's Phase-2 model at the threshold of its own Phase-2 validation metrics. Per shortcut: the audit
    slices holding the mimic (at most ``max_slices``, in cache order), read from the demo's HU cache, for
    :func:`shortcut_evidence`; :func:`counterfactual_pairs` of the audit slices (``limit`` per direction) for
    the intervention. Recomputed on each call (minutes; nothing is trained here).

    Args:
        config: the demo's run configuration (data root, run folder, image size, seed).
        clean_config: the clean reference's run configuration (its run folder).
        shortcuts: the mimics to study (keys of :data:`SHORTCUT_FLAGS`).
        out_dir: where to write (default ``<config.out_dir>/shortcut_study``).
        limit: counterfactual pairs per shortcut and direction.
        max_slices: slices profiled per shortcut.
        n_boot: patient-cluster bootstrap resamples.

    Returns:
        The summary written to ``summary.json`` (``thresholds``, ``audit_slices``, ``shortcuts``: mimic ->
        :func:`shortcut_evidence` summary; a ratio of rates whose clean rate is 0 is written as ``Infinity``).

    Raises:
        ConfigError: either run has ``context`` > 0. A counterfactual renders the mimic into (or out of) one
            slice; a 2.5-D model would see it on the slice but not on its neighbours, an object no scanner makes,
            so the study runs on one-slice models only.
    """
    for m in shortcuts:
        _check_mimic(m)
    for c in (config, clean_config):
        if c.context:
            raise ConfigError(f"`context` must be 0 for the shortcut study (its counterfactuals edit one slice, not "
                              f"its neighbours). Got {c.context} instead.")
    out = Path(out_dir) if out_dir is not None else RunPaths(config.out_dir).shortcut_study
    (model, threshold), (clean_model, clean_threshold) = _models(config, clean_config)
    cache = open_cache(RunPaths(config.out_dir).cache, size=config.image_size)
    audit_ids = list(cache.ids("audit"))
    patients = {i: str(p) for i, p in zip(audit_ids, cache.table.loc[audit_ids, "patient_id"])}
    images = json.loads((Path(config.data_root) / "phantom_manifest.json").read_text())["images"]
    present = {r["image_id"]: set(r["mimics"]) for r in images}
    summary: dict[str, Any] = {"thresholds": {"shortcut_model": threshold, "clean_model": clean_threshold},
                               "models": {"shortcut_model": str(RunPaths(config.out_dir).model(4)),
                                          "clean_model": str(RunPaths(clean_config.out_dir).model(2))},
                               "audit_slices": len(audit_ids), "limit": limit, "n_boot": n_boot, "shortcuts": {}}
    attention, pair_rows = [], []
    columns = (any_column(config.head), any_column(clean_config.head))
    field_mm = field_of_view(RunPaths(config.out_dir).index, audit_ids)
    for mimic in shortcuts:
        ids = [i for i in audit_ids if mimic in present.get(i, ())][:max_slices]
        objects = _object_masks(config.data_root, ids, mimic, cache.size)
        hu = cache.hu_int16(ids).astype(np.float32) if ids else np.zeros((0, cache.size, cache.size), np.float32)
        labels = cache.table.loc[ids, "any"].to_numpy().astype(int) if ids else None
        pairs = counterfactual_pairs(config.data_root, audit_ids, patients, mimic, config.image_size, limit=limit,
                                     seed=config.seed)
        e, table, pairs_table = shortcut_evidence(
            model, clean_model, mimic, hu, [patients[i] for i in ids], labels=labels,
            thresholds=(threshold, clean_threshold), pairs=pairs, image_ids=ids, output_index=columns,
            pixel_mm=[field_mm.get(i, math.nan) / cache.size for i in ids], object_masks=objects, n_boot=n_boot,
            seed=config.seed)
        summary["shortcuts"][mimic] = e
        attention.append(table.assign(mimic=mimic))
        pair_rows.append(pairs_table)
    write_csv(out / "attention.csv", pd.concat(attention, ignore_index=True) if attention else pd.DataFrame())
    write_csv(out / "pairs.csv", pd.concat(pair_rows, ignore_index=True) if pair_rows else pd.DataFrame())
    summary["output_dir"] = str(out)
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "shortcut_study.md", data_line(data_source(config.data_root)) + "\n\n" + _markdown(summary))
    return summary
