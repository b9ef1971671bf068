"""The bone-removal study: does the model score a bleed higher once the skull is gone, and is that more than
"any change to the image moves the score"?

Every slice is scored three times with the same model: as is, with the bone removed (:func:`remove_bone`) and
with a control change of the same area that removes no bone (:func:`null_perturbation`). Per group of slices
(:data:`GROUPS`) the study reports, for each changed arm against the original: the share of slices whose
probability rose (Wilson interval), the median change in logit (patient-cluster bootstrap interval), the
Wilcoxon signed-rank p-value, and for negatives the change in false alarms at the operating threshold (exact
McNemar test). :func:`run_bone_study` runs it on a finished run's audit patients and writes
``<run>/clinical_audit_report/bone_study/``: ``slices.csv``, ``summary.json``, ``bone_study.md``,
``bone_study.png`` and ``run.json``.

Order of operations: HU at the model's input size (the cache's int16) -> region masks
(:func:`brain_audit.skull.region_masks`) -> bone removed / control -> model (windows inside it) ->
probabilities -> clipped logits -> per-group statistics. A 2.5-D model (``context`` > 0) reads each slice with
its neighbours; both changes are made to every channel, each by its own masks (the skull is removed from the
neighbours too, so no channel still shows it).

References:
    Wilson EB. Probable inference, the law of succession, and statistical inference. JASA 1927.
    Wilcoxon F. Individual comparisons by ranking methods. Biometrics Bulletin 1945.
    McNemar Q. Note on the sampling error of the difference between correlated proportions. Psychometrika 1947.
    Field CA, Welsh AH. Bootstrapping clustered data. JRSS-B 2007.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from brain_audit.audit.statistics import bootstrap_ci, wilson_interval
from brain_audit.config import RunConfig, with_resolved_data_root
from brain_audit.dataset.cache import open_cache
from brain_audit.errors import ConfigError
from brain_audit.figures import pyplot, save_figure
from brain_audit.model.predictions import any_column, model_context, predict
from brain_audit.model.weights import load_model
from brain_audit.audit.source import data_line, data_source
from brain_audit.provenance import atomic_write_text, file_sha256, run_record, write_csv, write_json
from brain_audit.rsna import SUBTYPES
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock
from brain_audit.skull import BONE_HU, region_masks

__all__ = [
    "ARMS",
    "FILL_HU",
    "GROUPS",
    "MIN_BOOTSTRAP_SLICES",
    "bone_mask",
    "bone_study",
    "bone_study_markdown",
    "mcnemar_exact",
    "null_perturbation",
    "remove_bone",
    "run_bone_study",
]

#: HU written where bone was: water. It lies inside the soft-tissue range the model sees on every slice (CSF
#: 0-15 HU, scalp fat to -130 HU), renders black in the brain window like stripped bone, and adds no air edge at
#: the brain surface that could read as pneumocephalus (air, -1000 HU, as brain-extraction masks use, does).
FILL_HU: float = 0.0

#: The groups of the study: name -> subtypes whose positive slices belong to it; ``negative`` is label 0.
#: A slice with subtypes of several groups counts in each (its change is then reported once per group).
GROUPS: dict[str, tuple[str, ...]] = {
    "deep": ("intraparenchymal", "intraventricular"),
    "superficial": ("subdural", "epidural"),
    "subarachnoid": ("subarachnoid",),
    "negative": (),
}

#: The two changed images each slice is scored on, besides the original.
ARMS: tuple[str, ...] = ("bone_removed", "control")

#: Fewer slices than this in a group: the bootstrap interval is "not estimable".
MIN_BOOTSTRAP_SLICES: int = 10

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (a saturated sigmoid gives 0 or 1).
EPS: float = 1e-7

_WILCOXON_ZERO_METHOD = "wilcox"
_NOT_ESTIMABLE = f"not estimable (< {MIN_BOOTSTRAP_SLICES} slices)"


# ----------------------------------------------------------------------------- the two interventions
def _as_hu(hu: np.ndarray) -> np.ndarray:
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    return x


def bone_mask(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """The pixels :func:`remove_bone` replaces: the skull, and metal outside the intracranial space.

    Extracranial metal (dental work, skull-base or craniotomy hardware, ear rings) is removed with the bone: it is
    hyperdense matter outside the brain, as the skull is, and brain extraction removes it too. Intracranial metal
    (coils, clips, shunt tips) is kept: it is inside the brain and a known mimic, not part of the skull.

    Args:
        masks: :func:`brain_audit.skull.region_masks` of the slice (``skull``, ``metal``, ``intracranial``).

    Returns:
        bool (H, W).
    """
    return np.asarray(masks["skull"], bool) | (np.asarray(masks["metal"], bool) & ~np.asarray(masks["intracranial"],
                                                                                             bool))


def remove_bone(hu: np.ndarray, masks: Mapping[str, np.ndarray] | None = None, fill_hu: float = FILL_HU) -> np.ndarray:
    """The slice with its skull (and extracranial metal) replaced by ``fill_hu``.

    The skull is :func:`brain_audit.skull.region_masks`' ``skull``: bone above 300 HU connected to the largest
    bone component. Extra-axial blood (epidural, subdural: 50-90 HU, inside the inner table) is far below that
    threshold and is never replaced; nor is anything inside the intracranial space (:func:`bone_mask`).

    Args:
        hu: float32 (H, W) in Hounsfield units.
        masks: the slice's region masks, if computed already (else computed here).
        fill_hu: HU written over the bone; default :data:`FILL_HU` (water, 0 HU: see there why not air).

    Returns:
        float32 (H, W) in HU, a new array; every pixel outside :func:`bone_mask` equals ``hu``.
    """
    x = _as_hu(hu)
    if not np.isfinite(fill_hu):
        raise ValueError(f"`fill_hu` must be finite. Got {fill_hu!r} instead.")
    masks = region_masks(x) if masks is None else masks
    out = x.copy()
    out[bone_mask(masks)] = np.float32(fill_hu)
    return out


def null_perturbation(hu: np.ndarray, masks: Mapping[str, np.ndarray] | None = None, fill_hu: float = FILL_HU,
                      rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """The control of :func:`remove_bone`: as many pixels set to ``fill_hu``, none of them bone.

    The changed pixels are the band just outside the bone: scalp and soft tissue first, then the air around the
    head, nearest to the bone first (Euclidean distance to :func:`bone_mask`; ties broken at random by ``rng``).
    So the change has the area of the bone removal, lies beside it and, like it, replaces pixels far from
    ``fill_hu`` (scalp 40 HU, air -1000 HU against bone at hundreds of HU), but leaves every skull, metal,
    intracranial and calcified pixel, and any other pixel above :data:`brain_audit.skull.BONE_HU` (facial bone,
    a dense head holder), as it is. Pixels that already equal ``fill_hu`` are not chosen, so exactly as
    many pixels change as in :func:`remove_bone` (bone is > 300 HU, so each of its pixels changes for a fill
    below that). A slice without bone is returned unchanged.

    Args:
        hu: float32 (H, W) in Hounsfield units.
        masks: the slice's region masks, if computed already (else computed here).
        fill_hu: HU written (the same as the bone removal it controls).
        rng: generator or seed of the tie-breaking.

    Returns:
        float32 (H, W) in HU, a new array.

    Warns:
        RuntimeWarning: fewer candidate pixels than bone pixels (all candidates are then changed).
    """
    x = _as_hu(hu)
    masks = region_masks(x) if masks is None else masks
    removed = bone_mask(masks)
    keep = removed | masks["metal"] | masks["intracranial"] | masks["calcification"] | masks["skull"] | (x > BONE_HU)
    target = int(np.count_nonzero(removed & (x != np.float32(fill_hu))))
    out = x.copy()
    if target == 0:
        return out
    candidates = np.flatnonzero(~keep & (x != np.float32(fill_hu)))
    if candidates.size < target:
        warnings.warn(f"only {candidates.size} pixels outside the bone can change, fewer than the {target} bone "
                      "pixels; all of them are changed", RuntimeWarning, stacklevel=2)
    distance = ndimage.distance_transform_edt(~removed).ravel()[candidates]
    tie = np.random.default_rng(rng).random(candidates.size)
    chosen = candidates[np.lexsort((tie, distance))[:target]]
    out.ravel()[chosen] = np.float32(fill_hu)
    return out


# ----------------------------------------------------------------------------- the statistics
def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of paired 0/1 outcomes (e.g. a false alarm before and after a change).

    Only the discordant pairs count: ``resolved`` (1 before, 0 after) and ``new`` (0 before, 1 after); under
    the null each is Binomial(resolved + new, 1/2), tested two-sided with :func:`scipy.stats.binomtest`.

    Returns:
        dict with ``before``, ``after`` (counts of 1), ``resolved``, ``new`` and ``p_value`` (1.0 without
        discordant pairs).

    References:
        McNemar Q. Psychometrika 1947.
    """
    b0 = np.asarray(before).astype(bool).ravel()
    b1 = np.asarray(after).astype(bool).ravel()
    if b0.shape != b1.shape:
        raise ValueError(f"`before` and `after` must have the same length. Got {b0.size} and {b1.size} instead.")
    resolved = int(np.sum(b0 & ~b1))
    new = int(np.sum(~b0 & b1))
    p = float(stats.binomtest(resolved, resolved + new, 0.5).pvalue) if resolved + new else 1.0
    return {"before": int(b0.sum()), "after": int(b1.sum()), "resolved": resolved, "new": new, "p_value": p}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(q / (1.0 - q))


def _median(_: np.ndarray, d: np.ndarray) -> float:
    return float(np.median(d))


def _arm_figures(delta: np.ndarray, rose: np.ndarray, patients: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """The three figures of one arm in one group (``delta``: change in logit per slice)."""
    n = int(delta.size)
    k = int(rose.sum())
    lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
    out: dict[str, Any] = {
        "rose": k,
        "share_rose": k / n if n else float("nan"),
        "share_rose_ci95": [lo, hi],
        "unchanged": int(np.sum(delta == 0.0)),
        "median_delta_logit": float(np.median(delta)) if n else float("nan"),
        "median_delta_logit_ci95": _NOT_ESTIMABLE,
        "wilcoxon_p": float("nan"),
    }
    if n >= MIN_BOOTSTRAP_SLICES:
        _, blo, bhi = bootstrap_ci(_median, np.zeros(n, dtype=int), delta, groups=patients, n_boot=n_boot, seed=seed)
        out["median_delta_logit_ci95"] = [blo, bhi]
    if np.count_nonzero(delta):
        out["wilcoxon_p"] = float(stats.wilcoxon(delta, zero_method=_WILCOXON_ZERO_METHOD).pvalue)
    return out


def _subtype_table(subtypes: Any, n: int) -> pd.DataFrame:
    if isinstance(subtypes, pd.DataFrame):
        missing = [s for s in SUBTYPES if s not in subtypes.columns]
        if missing:
            raise ValueError(f"`subtypes` must have the columns {list(SUBTYPES)}. Got {list(subtypes.columns)} instead.")
        table = subtypes.loc[:, list(SUBTYPES)].reset_index(drop=True)
    else:
        arr = np.asarray(subtypes)
        if arr.shape != (n, len(SUBTYPES)):
            raise ValueError(f"`subtypes` must be ({n}, {len(SUBTYPES)}) in the order {list(SUBTYPES)}. "
                             f"Got shape {arr.shape} instead.")
        table = pd.DataFrame(arr, columns=list(SUBTYPES))
    if len(table) != n:
        raise ValueError(f"`subtypes` must have {n} rows. Got {len(table)} instead.")
    return table.astype(int)


def _group_members(labels: np.ndarray, sub: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for name, members in GROUPS.items():
        if members:
            out[name] = (labels == 1) & (sub[list(members)].to_numpy() > 0).any(axis=1)
        else:
            out[name] = labels == 0
    return out


def bone_study(
    model: Any,
    hu_slices: np.ndarray,
    *,
    labels: Sequence[int],
    subtypes: Any,
    patient_ids: Sequence[str],
    threshold: float,
    image_ids: Sequence[str] | None = None,
    output_index: int = 0,
    batch_size: int = 64,
    fill_hu: float = FILL_HU,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score every slice as is, with the bone removed and with the control change, and compare per group.

    Groups (:data:`GROUPS`): ``deep`` (intraparenchymal, intraventricular), ``superficial`` (subdural,
    epidural), ``subarachnoid`` (positive slices with a subtype of the group) and ``negative`` (label 0). A
    slice with subtypes of several groups counts in each; a positive slice without any subtype in none.

    Per group and arm (:data:`ARMS`), against the original: ``share_rose`` (probability strictly higher; ties
    count as not risen) with its Wilson 95 % interval; ``median_delta_logit`` with a 95 % percentile interval
    from a bootstrap over patients (all slices of a drawn patient come along; "not estimable" below
    :data:`MIN_BOOTSTRAP_SLICES` slices); ``wilcoxon_p``, the two-sided signed-rank test of the logit changes
    with ``zero_method="wilcox"`` (slices whose logit did not change carry no sign and are dropped; NaN when
    none changed). ``bone_vs_control`` gives the same figures for the bone-removed logit against the control's,
    slice by slice: the effect of removing bone beyond that of an equal change. For ``negative`` also ``false_alarms``: slices at or above ``threshold`` before and after,
    with the exact McNemar p-value of the discordant pairs.

    Args:
        model: a Keras model taking HU (N, H, W, 1 + 2 context) (windows inside the model) to sigmoid probabilities.
        hu_slices: (N, H, W) HU at the model's input size (int16 from the cache or float32), or (N, H, W,
            1 + 2 context) for a 2.5-D model (:meth:`brain_audit.dataset.cache.HUCache.hu_input`). Both changes
            are made to every channel, each by its own region masks: the skull is removed from the slice and from
            each neighbour, and the control changes the same area on each; ``pixels_changed`` counts the slice
            itself (the centre channel).
        labels: (N,) 0/1 ``any`` labels.
        subtypes: (N, 5) 0/1 in the order of :data:`brain_audit.rsna.SUBTYPES`, or a DataFrame with those columns.
        patient_ids: (N,) the clusters of the bootstrap.
        threshold: the operating threshold (called a bleed when ``p >= threshold``).
        image_ids: (N,) names of the slices in the table (default ``"0"``, ``"1"``, ...).
        output_index: the model output that scores ``any`` bleed.
        batch_size: prediction batch.
        fill_hu: HU of both changes.
        n_boot: bootstrap resamples; seed: seed of the bootstrap and the control's tie-breaking.

    Returns:
        dict with ``summary`` (JSON-ready: settings, counts, ``groups``) and ``slices`` (DataFrame: image_id,
        patient_id, label, groups, pixels_changed, p_orig, p_bone_removed, p_control, logit_orig,
        dlogit_bone_removed, dlogit_control).

    Warns:
        RuntimeWarning: slices on which no bone was found (both changes leave them as they are).

    References:
        Wilson 1927; Wilcoxon 1945; McNemar 1947; Field & Welsh 2007 (see the module docstring).
    """
    x = np.asarray(hu_slices)
    if x.ndim not in (3, 4) or x.shape[0] == 0 or (x.ndim == 4 and x.shape[-1] % 2 != 1):
        raise ValueError(f"`hu_slices` must be (N, H, W) or (N, H, W, 1 + 2 * context) with N > 0. Got shape "
                         f"{x.shape} instead.")
    n = x.shape[0]
    y = np.asarray(labels).astype(int).ravel()
    if y.shape != (n,) or not np.isin(y, (0, 1)).all():
        raise ValueError(f"`labels` must be {n} values of 0 or 1. Got {y.size} values {sorted(set(y.tolist()))[:5]} "
                         "instead.")
    patients = np.asarray(patient_ids).astype(str).ravel()
    if patients.shape != (n,):
        raise ValueError(f"`patient_ids` must have {n} entries. Got {patients.size} instead.")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1]. Got {threshold!r} instead.")
    if n_boot < 10:
        raise ValueError(f"`n_boot` must be >= 10. Got {n_boot!r} instead.")
    names = [str(i) for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(names) != n:
        raise ValueError(f"`image_ids` must have {n} entries. Got {len(names)} instead.")
    sub = _subtype_table(subtypes, n)

    rng = np.random.default_rng(seed)
    chw = x[..., None] if x.ndim == 3 else x  # (N, H, W, C); C = 1 + 2 context, the slice itself at C // 2
    centre = chw.shape[-1] // 2
    removed = np.empty(chw.shape, dtype=np.float32)
    control = np.empty(chw.shape, dtype=np.float32)
    changed = np.zeros(n, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no bone on a slice: counted and warned once below
        for i in range(n):
            for c in range(chw.shape[-1]):  # every channel by its own masks (a neighbour's skull is its own)
                hu = chw[i, ..., c].astype(np.float32)
                masks = region_masks(hu)
                removed[i, ..., c] = remove_bone(hu, masks, fill_hu)
                control[i, ..., c] = null_perturbation(hu, masks, fill_hu, rng)
                if c == centre:
                    changed[i] = int(np.count_nonzero(removed[i, ..., c] != hu))
    if (changed == 0).any():
        warnings.warn(f"{int((changed == 0).sum())} of {n} slices have no bone; both changes leave them as they are",
                      RuntimeWarning, stacklevel=2)

    p = {"orig": predict(model, chw.astype(np.float32), batch_size)[:, output_index]}
    p["bone_removed"] = predict(model, removed, batch_size)[:, output_index]
    p["control"] = predict(model, control, batch_size)[:, output_index]
    logit = {k: _logit(v) for k, v in p.items()}
    members = _group_members(y, sub)

    slices = pd.DataFrame({
        "image_id": names,
        "patient_id": patients,
        "label": y,
        "groups": [";".join(g for g in GROUPS if members[g][i]) for i in range(n)],
        "pixels_changed": changed,
        "p_orig": p["orig"],
        "p_bone_removed": p["bone_removed"],
        "p_control": p["control"],
        "logit_orig": logit["orig"],
        "dlogit_bone_removed": logit["bone_removed"] - logit["orig"],
        "dlogit_control": logit["control"] - logit["orig"],
    })

    groups: dict[str, Any] = {}
    for g, m in members.items():
        entry: dict[str, Any] = {
            "subtypes": list(GROUPS[g]),
            "n_slices": int(m.sum()),
            "n_patients": len(np.unique(patients[m])),
            "mean_pixels_changed": float(changed[m].mean()) if m.any() else float("nan"),
        }
        for arm in ARMS:
            delta = slices[f"dlogit_{arm}"].to_numpy()[m]
            entry[arm] = _arm_figures(delta, p[arm][m] > p["orig"][m], patients[m], n_boot, seed)
            if g == "negative":
                entry[arm]["false_alarms"] = mcnemar_exact(p["orig"][m] >= threshold, p[arm][m] >= threshold)
        # the direct contrast: bone removal against the control change, slice by slice
        d_vs = (logit["bone_removed"] - logit["control"])[m]
        entry["bone_vs_control"] = _arm_figures(d_vs, p["bone_removed"][m] > p["control"][m], patients[m], n_boot,
                                                seed)
        groups[g] = entry

    summary = {
        "fill_hu": float(fill_hu),
        "threshold": float(threshold),
        "n_slices": int(n),
        "n_patients": len(np.unique(patients)),
        "slices_without_bone": int((changed == 0).sum()),
        "logit_clip": EPS,
        "wilcoxon_zero_method": _WILCOXON_ZERO_METHOD,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "groups": groups,
    }
    return {"summary": summary, "slices": slices}


# ----------------------------------------------------------------------------- the report
def _fmt_ci(ci: Any, digits: int = 2) -> str:
    if isinstance(ci, str):
        return ci
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def bone_study_markdown(summary: Mapping[str, Any]) -> str:
    """``bone_study.md``: one table per group, figure | bone removed | control."""
    lines = [
        "# Bone-removal study",
        "",
        (f"Each slice scored as is, with the skull replaced by {summary['fill_hu']:g} HU, and with a control change "
         "of the same area that removes no bone (scalp and air beside the skull). Share rose: Wilson 95 % interval; "
         f"median change in logit: bootstrap over patients ({summary['n_boot']} resamples); Wilcoxon signed-rank "
         f"(zero_method={summary['wilcoxon_zero_method']}). A slice with subtypes of several groups counts in each."),
        "",
    ]
    for g, e in summary["groups"].items():
        subtypes = f" ({', '.join(e['subtypes'])})" if e["subtypes"] else " (label 0)"
        lines += [f"## {g}{subtypes}: {e['n_slices']} slices, {e['n_patients']} patients", "",
                  "| figure | bone removed | control |", "|---|---|---|"]
        if not e["n_slices"]:
            lines += ["| slices | 0 | 0 |", ""]
            continue
        n = e["n_slices"]
        rows = [
            ("probability rose (95 % CI)", lambda a, n=n: f"{a['rose']} / {n} = {100 * a['share_rose']:.0f} % "
                                                     f"{_fmt_ci([100 * v for v in a['share_rose_ci95']], 0)}"),
            ("median change in logit (95 % CI)", lambda a: f"{a['median_delta_logit']:+.3f} "
                                                          f"{_fmt_ci(a['median_delta_logit_ci95'], 3)}"),
            ("Wilcoxon p", lambda a: f"{a['wilcoxon_p']:.3g}"),
            ("logit unchanged", lambda a: str(a["unchanged"])),
        ]
        if g == "negative":
            rows += [
                ("false alarms before -> after", lambda a: f"{a['false_alarms']['before']} -> "
                                                          f"{a['false_alarms']['after']} (-{a['false_alarms']['resolved']}"
                                                          f" +{a['false_alarms']['new']})"),
                ("McNemar exact p", lambda a: f"{a['false_alarms']['p_value']:.3g}"),
            ]
        lines += [f"| {name} | {fmt(e['bone_removed'])} | {fmt(e['control'])} |" for name, fmt in rows]
        v = e["bone_vs_control"]
        contrast = (f"Bone removed against the control, slice by slice: scored higher on {v['rose']} / {n}; median "
                    f"logit difference {v['median_delta_logit']:+.3f} {_fmt_ci(v['median_delta_logit_ci95'], 3)}, "
                    f"Wilcoxon p {v['wilcoxon_p']:.3g}.")
        lines += ["", contrast, ""]
    return "\n".join(lines)


def _plot(slices: pd.DataFrame, path: Path) -> Path:
    """Paired plot: per group (rows) and arm (columns), one line per slice from p as is to p after."""
    plt = pyplot()
    fig, axes = plt.subplots(len(GROUPS), len(ARMS), figsize=(3.2 * len(ARMS), 2.6 * len(GROUPS)), squeeze=False)
    for r, g in enumerate(GROUPS):
        rows = slices[slices["groups"].str.split(";").apply(lambda gs, g=g: g in gs)]
        for c, arm in enumerate(ARMS):
            ax = axes[r][c]
            before, after = rows["p_orig"].to_numpy(), rows[f"p_{arm}"].to_numpy()
            for b, a in zip(before, after):
                ax.plot([0, 1], [b, a], color="tab:red" if a > b else "tab:blue", alpha=0.35, linewidth=0.8)
            ax.set_xticks([0, 1], ["as is", arm.replace("_", " ")])
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{g} (n={len(rows)}): {arm.replace('_', ' ')}", fontsize=9)
            if c == 0:
                ax.set_ylabel("probability of bleed")
    fig.suptitle("probability before -> after (red: rose, blue: fell or equal)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def run_bone_study(
    config: RunConfig,
    *,
    model_path: str | Path | None = None,
    model: Any = None,
    n_boot: int = 2000,
    batch_size: int = 64,
    fill_hu: float = FILL_HU,
) -> dict[str, Any]:
    """The bone-removal study on a finished run's audit patients, written to ``<run>/clinical_audit_report/bone_study/``.

    Reads the run like :func:`brain_audit.audit.holdout.audit_holdout`: the audit split of the HU cache (int16 HU
    at the model's input size), its labels, the Phase-4 model and the threshold of ``phase4/operating_point.json``.
    Writes ``slices.csv``, ``summary.json``, ``bone_study.md``, ``bone_study.png`` and ``run.json`` atomically,
    holding the run folder's lock.

    Args:
        config: the run (its ``out_dir`` holds ``data/cache`` and ``phase4/``).
        model_path: the model to study; default ``phase4/model.keras``.
        model: that model already loaded (the held-out audit passes its own), or None to load it.
        n_boot, batch_size, fill_hu: as in :func:`bone_study` (the seed is the run's).

    Returns:
        The summary (also ``summary.json``), with ``model`` and ``output_dir`` added.

    Raises:
        ConfigError: no finished Phase 4 or an empty audit split.
    """
    config = with_resolved_data_root(config)
    with run_lock(config.out_dir):
        paths = RunPaths(config.out_dir)
        model_path, operating = paths.finished_model("the bone study", model_path)
        threshold = float(operating["threshold"])
        cache = open_cache(paths.cache, size=config.image_size)
        ids = list(cache.ids("audit"))
        if not ids:
            raise ConfigError("`audit_patients` must be > 0 for the bone study. Got an empty audit split instead.")
        table = cache.table.loc[ids]
        model = load_model(model_path, compile=False) if model is None else model
        result = bone_study(
            model, cache.hu_input(ids, model_context(model), dtype=np.int16), labels=table["any"].to_numpy(),
            subtypes=table[list(SUBTYPES)],
            patient_ids=table["patient_id"].to_numpy(), threshold=threshold, image_ids=ids,
            output_index=any_column(config.head), batch_size=batch_size, fill_hu=fill_hu, n_boot=n_boot,
            seed=config.seed,
        )
        out = paths.bone_study
        summary = {"model": str(model_path), **result["summary"], "output_dir": str(out)}
        write_csv(out / "slices.csv", result["slices"])
        write_json(out / "summary.json", summary)
        atomic_write_text(out / "bone_study.md",
                          data_line(data_source(config.data_root)) + "\n\n" + bone_study_markdown(summary))
        _plot(result["slices"], out / "bone_study.png")
        write_json(out / "run.json", run_record(config, seeds={"run": config.seed},
                                                inputs={"model": file_sha256(model_path)}, n_boot=n_boot,
                                                fill_hu=fill_hu))
    return summary
