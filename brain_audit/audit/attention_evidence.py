"""Where the model looks, summarised with honest intervals and beside what chance would give.

:func:`attention_evidence` reads a table of attention profiles (rows of
:func:`brain_audit.gradcam.attention.profile_cached` with a patient column) and reports every figure with
a patient-cluster bootstrap interval (slices of one patient are not independent) next to its chance
baseline: each flag's rate beside the rate a uniform map would give on the same slices, the pointing game
and the energy-based pointing game beside their best chance baseline (and the paired difference), the
median lesion enrichment beside 1 (a uniform map), and the share of empty maps. Where every bootstrap
resample gives the same value (e.g. 0 of 50 slices flagged), a zero-width interval would claim a certainty
the data do not hold: a proportion then gets its Wilson interval, and the report says which interval it is.
:func:`attention_markdown` renders the result as a table for the report.

References:
    Field CA, Welsh AH. Bootstrapping clustered data. JRSS-B 2007 (cluster bootstrap).
    Wilson EB. Probable inference, the law of succession, and statistical inference. JASA 1927.
    Zhang J et al. Top-down neural attention by excitation backprop. IJCV 2018 (pointing game).
    Wang H et al. Score-CAM. CVPR Workshops 2020 (energy-based pointing game).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from brain_audit.audit.statistics import cluster_bootstrap, wilson_interval
from brain_audit.gradcam.attention import ENERGY_BASELINES, FLAGS, HIT_BASELINES, chance_flags

__all__ = ["attention_evidence", "attention_markdown"]


def _proportion(flags: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, alpha: float) -> dict[str, Any]:
    """Rate of 0/1 ``flags`` with a cluster-bootstrap interval, or Wilson's where the bootstrap collapses."""
    x = np.asarray(flags, dtype=np.float64)
    if x.size == 0:
        return {"value": None, "ci": [None, None], "interval": "none", "n": 0}
    rate, lo, hi = cluster_bootstrap(x, groups, np.mean, n_boot=n_boot, seed=seed, alpha=alpha)
    interval = "cluster_bootstrap"
    if not hi > lo:  # every resample equal (one patient, or 0 / all flagged): not a certainty
        lo, hi = wilson_interval(int(x.sum()), x.size, alpha)
        interval = "wilson"
    return {"value": rate, "ci": [lo, hi], "interval": interval, "n": int(x.size)}


def _continuous(x: np.ndarray, groups: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int, seed: int,
                alpha: float) -> dict[str, Any]:
    """A statistic of continuous values with a cluster-bootstrap interval; none where it collapses."""
    if x.size == 0:
        return {"value": None, "ci": [None, None], "interval": "none", "n": 0}
    value, lo, hi = cluster_bootstrap(x, groups, statistic, n_boot=n_boot, seed=seed, alpha=alpha)
    if not hi > lo:
        return {"value": value, "ci": [None, None], "interval": "none (all resamples equal)", "n": int(x.size)}
    return {"value": value, "ci": [lo, hi], "interval": "cluster_bootstrap", "n": int(x.size)}


def _game(model: pd.Series, baselines: pd.DataFrame, groups: np.ndarray, binary: bool, n_boot: int, seed: int,
          alpha: float) -> dict[str, Any]:
    """A pointing game: the model's mean beside each baseline's mean, and model - best baseline, paired."""
    y = model.to_numpy(dtype=np.float64)
    out: dict[str, Any] = {"n": int(y.size)}
    out["model"] = _proportion(y, groups, n_boot, seed, alpha) if binary else \
        _continuous(y, groups, np.mean, n_boot, seed, alpha)
    means = {b: (float(baselines[b].mean()) if baselines[b].notna().any() else None) for b in baselines}
    out["baselines"] = means
    known = {b: m for b, m in means.items() if m is not None}
    if not known:
        out["best_baseline"] = {"name": None, "value": None}
        out["difference"] = {"value": None, "ci": [None, None], "interval": "none", "n": 0}
        return out
    best = max(known, key=known.get)
    out["best_baseline"] = {"name": best, "value": known[best]}
    keep = baselines[best].notna().to_numpy()
    d = y[keep] - baselines[best].to_numpy(dtype=np.float64)[keep]
    diff = _continuous(d, groups[keep], np.mean, n_boot, seed, alpha)
    if binary and diff["interval"] != "cluster_bootstrap" and d.size:
        # collapsed (e.g. no hit anywhere and one patient): the model's Wilson interval minus the baseline mean
        lo, hi = wilson_interval(int(y[keep].sum()), int(keep.sum()), alpha)
        shift = float(baselines[best].to_numpy(dtype=np.float64)[keep].mean())
        diff.update(ci=[lo - shift, hi - shift], interval="wilson_minus_baseline_mean")
    out["difference"] = diff
    return out


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def attention_evidence(
    table: pd.DataFrame,
    *,
    patient_col: str = "patient_id",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Attention figures with patient-cluster bootstrap intervals, each beside its chance baseline.

    Args:
        table: attention profiles, one row per slice (:func:`brain_audit.gradcam.attention.profile_cached`,
            :func:`~brain_audit.gradcam.attention.audit_batch`) with a patient column; the pointing-game
            columns where lesion masks were given (rows without them are left out of those figures).
        patient_col: the column naming each slice's patient (a pseudonym); the bootstrap resamples
            patients, all their slices coming along.
        n_boot: bootstrap resamples, >= 10.
        seed: seed of the bootstrap.
        alpha: 1 - confidence level.

    Returns:
        JSON-ready dict (no NaN: undefined values are None). Every estimate is a dict ``{"value",
        "ci": [lower, upper], "interval", "n"}`` where ``interval`` is ``"cluster_bootstrap"``
        (percentile, patients resampled), ``"wilson"`` (a proportion whose resamples were all equal;
        slices counted as independent), ``"wilson_minus_baseline_mean"`` (the same for a paired hit-rate
        difference) or ``"none"`` (no rows, or a continuous figure whose resamples were all equal). Keys:

        * ``n_slices``, ``n_patients``, ``alpha``, ``n_boot``, ``seed``;
        * ``flags``: per flag of :data:`~brain_audit.gradcam.attention.FLAGS`, its rate among the slices
          where it is defined, plus ``uniform_map_rate``: the rate a uniform map raises on the same slices
          (:func:`~brain_audit.gradcam.attention.chance_flags`, computed from the area columns);
        * ``pointing_game`` (slices with a non-empty lesion mask): ``model`` (hit rate), ``baselines``
          (mean of each of :data:`~brain_audit.gradcam.attention.HIT_BASELINES`), ``best_baseline``
          (``name``, ``value``: the highest), ``difference`` (mean of hit - best baseline, paired per slice);
        * ``energy_pointing_game``: the same for the lesion energy share and
          :data:`~brain_audit.gradcam.attention.ENERGY_BASELINES`;
        * ``lesion_enrichment``: the median of lesion energy share / lesion area share, with
          ``uniform_map`` = 1.0;
        * ``empty_maps``: share of all-zero maps (``peak_region`` "none"), always with a Wilson interval.

    References:
        Zhang J et al. IJCV 2018 (pointing game); Wang H et al. CVPR Workshops 2020 (energy pointing game);
        Field CA, Welsh AH. JRSS-B 2007 (cluster bootstrap); Wilson EB. JASA 1927.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`table` must be a pandas.DataFrame. Got {type(table).__name__} instead.")
    if patient_col not in table:
        raise ValueError(f"`table` must have a `{patient_col}` column. Got columns {list(table.columns)[:8]} instead.")
    if len(table) == 0:
        raise ValueError("`table` must hold at least one slice. Got 0 rows instead.")
    if table[patient_col].isna().any():
        missing = int(table[patient_col].isna().sum())
        raise ValueError(f"`{patient_col}` must name a patient on every row. Got {missing} missing instead.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"`n_boot` must be an int >= 10. Got {n_boot!r} instead.")
    groups = table[patient_col].astype(str).to_numpy()
    out: dict[str, Any] = {"n_slices": len(table), "n_patients": int(pd.unique(groups).size), "alpha": alpha,
                           "n_boot": int(n_boot), "seed": int(seed)}

    chance = chance_flags(table)
    flags: dict[str, Any] = {}
    for f in FLAGS:
        if f not in table:
            continue
        known = table[f].notna().to_numpy()
        entry = _proportion(table.loc[known, f].astype(bool).to_numpy(), groups[known], n_boot, seed, alpha)
        base = chance.loc[known, f]
        entry["uniform_map_rate"] = float(base.astype(bool).mean()) if known.any() and base.notna().all() else None
        flags[f] = entry
    out["flags"] = flags

    if "pointing_hit" in table and "lesion_area" in table:
        scored = (table["pointing_hit"].notna() & (table["lesion_area"].astype(float) > 0)).to_numpy()
        rows = table[scored]
        out["pointing_game"] = _game(rows["pointing_hit"].astype(bool), rows[list(HIT_BASELINES)].astype(float),
                                     groups[scored], True, n_boot, seed, alpha)
        energy = rows["lesion_energy"].astype(float).notna().to_numpy()
        out["energy_pointing_game"] = _game(rows["lesion_energy"].astype(float)[energy],
                                            rows.loc[energy, list(ENERGY_BASELINES)].astype(float),
                                            groups[scored][energy], False, n_boot, seed, alpha)
        enr = rows["lesion_enrichment"].astype(float).to_numpy()
        fin = np.isfinite(enr)
        entry = _continuous(enr[fin], groups[scored][fin], np.median, n_boot, seed, alpha)
        entry["uniform_map"] = 1.0
        out["lesion_enrichment"] = entry

    empty = (table["peak_region"] == "none").to_numpy() if "peak_region" in table else np.zeros(len(table), bool)
    lo, hi = wilson_interval(int(empty.sum()), empty.size, alpha)
    out["empty_maps"] = {"value": float(empty.mean()), "ci": [lo, hi], "interval": "wilson", "n": int(empty.size)}
    return _json_ready(out)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f} %"


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f} pts"


def _number(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _estimate(e: dict[str, Any], fmt: Callable[[float | None], str]) -> str:
    if e.get("value") is None:
        return "n/a"
    lo, hi = e["ci"]
    mark = {"cluster_bootstrap": "", "wilson": " W", "wilson_minus_baseline_mean": " W"}.get(e["interval"], " ‡")
    ci = "no interval" if lo is None else f"{fmt(lo)} to {fmt(hi)}"
    return f"{fmt(e['value'])} ({ci}){mark}"


def attention_markdown(evidence: dict[str, Any]) -> str:
    """A compact Markdown table of :func:`attention_evidence`: figure | model (95 % CI) | chance baseline.

    Intervals are patient-cluster bootstrap percentiles unless marked ``W`` (Wilson) or ``‡`` (none: every
    resample equal); a footnote says so.
    """
    level = f"{100.0 * (1.0 - evidence.get('alpha', 0.05)):g} %"
    lines = [f"| figure | model ({level} CI) | chance baseline |", "|---|---|---|"]
    for f, e in evidence.get("flags", {}).items():
        lines.append(f"| {f}, share of slices (n={e['n']}) | {_estimate(e, _pct)} | "
                     f"{_pct(e.get('uniform_map_rate'))} (uniform map) |")
    for key, title in (("pointing_game", "pointing game, hit rate"),
                       ("energy_pointing_game", "energy pointing game, lesion share")):
        g = evidence.get(key)
        if g is None:
            continue
        best = g["best_baseline"]
        name = (best["name"] or "none").replace("baseline_hit_", "").replace("baseline_energy_", "")
        lines.append(f"| {title} (n={g['n']}) | {_estimate(g['model'], _pct)} | {_pct(best['value'])} ({name}) |")
        lines.append(f"| {title}, minus best baseline | {_estimate(g['difference'], _points)} | +0.0 pts |")
    e = evidence.get("lesion_enrichment")
    if e is not None:
        lines.append(f"| median lesion enrichment (n={e['n']}) | {_estimate(e, _number)} | 1.00 (uniform map) |")
    e = evidence["empty_maps"]
    lines.append(f"| empty maps (n={e['n']}) | {_estimate(e, _pct)} | n/a |")
    lines.append("")
    lines.append(f"Intervals: percentile bootstrap over patients ({evidence.get('n_boot')} resamples, "
                 f"{evidence.get('n_patients')} patients); W: Wilson score interval (slices as independent), used "
                 "where every resample gave the same value; ‡: no interval (every resample equal).")
    return "\n".join(lines) + "\n"
