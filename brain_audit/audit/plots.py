"""The clinical audit's figures, for a clinician reader: ROC, predictive values, calibration, decision curve,
flow diagram, confusion matrices and one gallery tile per case.

Every function takes plain arrays, dicts or a table (never a run folder), writes one PNG atomically
(:func:`brain_audit.figures.save_figure`, Agg backend) and returns its path. Fonts are large, axes carry
units, each figure has a one-line title and a legend, and the colours are the Okabe-Ito palette, which
readers with colour-vision deficiency can tell apart. Probabilities and rates are given as fractions in
[0, 1] and drawn as percentages.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from brain_audit.audit.statistics import calibration_bins, wilson_interval
from brain_audit.figures import pyplot, save_figure
from brain_audit.gradcam.maps import resize_map
from brain_audit.windowing import BONE, BRAIN, SUBDURAL, window

__all__ = [
    "ROC_GRID",
    "plot_calibration",
    "plot_case",
    "plot_confusion",
    "plot_decision_curve",
    "plot_flow",
    "plot_predictive_values",
    "plot_roc",
    "roc_band",
]

#: Okabe-Ito colours (Okabe M, Ito K. Color Universal Design, 2008): blue, orange, bluish green, vermillion,
#: reddish purple, sky blue.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")

#: The false-positive-rate grid on which bootstrap ROC curves are averaged vertically.
ROC_GRID = np.linspace(0.0, 1.0, 101)

#: Font sizes for a clinician audience (points).
_RC = {
    "font.size": 13,
    "axes.titlesize": 15,
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.titlesize": 16,
}


def _binary_scores(y: Any, p: Any, y_name: str = "y", p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """1-D truth in {0, 1} and finite scores of the same length, or a ValueError naming the argument."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"`{y_name}` must be 1-D. Got shape {y.shape} instead.")
    if p.shape != y.shape:
        raise ValueError(f"`{p_name}` must have the length of `{y_name}` ({len(y)}). Got shape {p.shape} instead.")
    if len(y) == 0:
        raise ValueError(f"`{y_name}` must not be empty. Got 0 rows instead.")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"`{y_name}` must hold only 0 and 1. Got values {np.unique(y)[:5]} instead.")
    if not np.isfinite(p).all():
        raise ValueError(f"`{p_name}` must be finite. Got {int((~np.isfinite(p)).sum())} non-finite values instead.")
    return y.astype(np.int64), p


def _tpr_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """An ROC curve's sensitivity on a false-positive-rate grid: at a vertical step (several points at one
    FPR) the highest sensitivity reached there, linear between steps."""
    ufpr, inverse = np.unique(fpr, return_inverse=True)
    top = np.full(len(ufpr), -np.inf)
    np.maximum.at(top, inverse, tpr)
    return np.interp(grid, ufpr, top)


def roc_band(
    y: np.ndarray,
    p: np.ndarray,
    groups: Sequence[Any] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    grid: np.ndarray = ROC_GRID,
) -> dict[str, Any]:
    """The ROC curve and its 95 % band by cluster bootstrap with vertical averaging.

    Each replicate draws the groups (patients) with replacement, keeps every row of a drawn group,
    computes the ROC curve and reads its sensitivity on ``grid``; the band is the 2.5th and 97.5th
    percentile per grid point. Replicates holding one class only are skipped and counted.

    Args:
        y: int (n,) truth in {0, 1}, both classes present.
        p: float (n,) scores (probabilities or logits).
        groups: (n,) cluster labels, e.g. pseudonymised patient IDs; ``None`` makes every row its own group.
        n_boot: bootstrap replicates, >= 1.
        seed: seed of the resampling.
        grid: false-positive rates in [0, 1], increasing.

    Returns:
        dict: ``fpr``, ``tpr`` (the curve of :func:`sklearn.metrics.roc_curve`), ``auc``, ``grid``,
        ``tpr_grid`` (the curve on the grid), ``lower``, ``upper`` (the band on the grid; NaN when no
        replicate had both classes), ``n_groups``, ``n_used`` (replicates with both classes).

    References:
        Fawcett T. An introduction to ROC analysis. Pattern Recognit Lett 2006;27:861-74 (vertical averaging);
        Field CA, Welsh AH. Bootstrapping clustered data. JRSS B 2007;69:369-90.
    """
    y, p = _binary_scores(y, p)
    if len(np.unique(y)) < 2:
        raise ValueError("`y` must hold both classes (0 and 1) for an ROC curve. Got one class only instead.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"`n_boot` must be an integer >= 1. Got {n_boot!r} instead.")
    if groups is None:
        codes = np.arange(len(y))
    else:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError(f"`groups` must have the length of `y` ({len(y)}). Got shape {g.shape} instead.")
        _, codes = np.unique(g, return_inverse=True)
        codes = codes.ravel()
    n_groups = int(codes.max()) + 1
    grid = np.asarray(grid, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, p)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        draws = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        rows = np.repeat(np.arange(len(y)), draws[codes])
        yb = y[rows]
        if yb.min() == yb.max():
            continue
        f, t, _ = roc_curve(yb, p[rows])
        curves.append(_tpr_on_grid(f, t, grid))
    if curves:
        lower, upper = np.percentile(np.asarray(curves), [2.5, 97.5], axis=0)
    else:
        warnings.warn(f"no bootstrap replicate of {n_groups} groups held both classes; the ROC curve has no band",
                      RuntimeWarning, stacklevel=2)
        lower = upper = np.full(len(grid), np.nan)
    return {
        "fpr": fpr,
        "tpr": tpr,
        "auc": float(roc_auc_score(y, p)),
        "grid": grid,
        "tpr_grid": _tpr_on_grid(fpr, tpr, grid),
        "lower": lower,
        "upper": upper,
        "n_groups": n_groups,
        "n_used": len(curves),
    }


def plot_roc(
    path: str | Path,
    y: np.ndarray,
    p: np.ndarray,
    groups: Sequence[Any] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    points: Sequence[Mapping[str, Any]] = (),
    title: str = "ROC curve",
) -> Path:
    """The ROC curve with its 95 % bootstrap band (see :func:`roc_band`), AUC in the legend, the chance diagonal.

    Args:
        path: PNG to write.
        y: int (n,) truth in {0, 1}.
        p: float (n,) scores.
        groups: (n,) patient labels for the cluster bootstrap; ``None``: each row is its own group.
        n_boot: bootstrap replicates.
        seed: seed of the resampling.
        points: operating points to mark, each ``{"label", "sensitivity", "specificity"}`` (fractions).
        title: one-line title.

    Returns:
        The PNG's path.
    """
    marks = []
    for i, pt in enumerate(points):
        missing = {"label", "sensitivity", "specificity"} - set(pt)
        if missing:
            raise ValueError(f"`points[{i}]` must have keys label, sensitivity, specificity. Missing {sorted(missing)}.")
        sens, spec = float(pt["sensitivity"]), float(pt["specificity"])
        if not (0.0 <= sens <= 1.0 and 0.0 <= spec <= 1.0):
            raise ValueError(f"`points[{i}]` sensitivity and specificity must be in [0, 1]. Got {sens}, {spec} instead.")
        marks.append((str(pt["label"]), sens, spec))
    band = roc_band(y, p, groups, n_boot=n_boot, seed=seed)
    unit = "patients" if groups is not None else "cases"
    plt = pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(7.5, 7))
        if band["n_used"]:
            ax.fill_between(100 * band["grid"], 100 * band["lower"], 100 * band["upper"], color=COLOURS[0],
                            alpha=0.22, linewidth=0,
                            label=f"95 % band ({band['n_used']} resamples of {band['n_groups']} {unit})")
        ax.plot(100 * band["fpr"], 100 * band["tpr"], color=COLOURS[0], linewidth=2.5,
                label=f"model, AUC = {band['auc']:.3f}")
        ax.plot([0, 100], [0, 100], color="0.45", linestyle="--", linewidth=1.2, label="chance (AUC = 0.5)")
        markers = ("o", "s", "D", "^", "v", "P")
        for k, (label, sens, spec) in enumerate(marks):
            ax.plot(100 * (1 - spec), 100 * sens, linestyle="none", marker=markers[k % len(markers)], markersize=11,
                    markeredgecolor="black", color=COLOURS[(k + 1) % len(COLOURS)],
                    label=f"{label}: sens. {100 * sens:.1f} %, spec. {100 * spec:.1f} %")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100.5)
        ax.set_aspect("equal")
        ax.set_xlabel("1 − specificity (false-positive rate, %)")
        ax.set_ylabel("Sensitivity (true-positive rate, %)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", framealpha=0.95)
        return save_figure(fig, path)


_PV_KEYS = ("prevalence", "ppv", "ppv_ci95", "npv", "npv_ci95")


def plot_predictive_values(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    title: str = "Predictive values at deployment prevalence",
) -> Path:
    """PPV and NPV (%) against the prevalence of bleeds where the model is deployed (%), with interval bands.

    Two panels, so that an NPV near 99 % keeps its own scale beside a PPV that falls with prevalence.

    Args:
        path: PNG to write.
        rows: one dict per prevalence, fractions: ``prevalence`` in (0, 1), ``ppv``, ``ppv_ci95`` ([lo, hi]),
            ``npv``, ``npv_ci95`` (e.g. :func:`brain_audit.audit.statistics.predictive_values_at_prevalence`
            at 0.5 %-10 %). NaN values leave a gap.
        title: one-line title.

    Returns:
        The PNG's path.
    """
    if len(rows) == 0:
        raise ValueError("`rows` must hold at least one prevalence. Got an empty sequence instead.")
    for i, r in enumerate(rows):
        missing = [k for k in _PV_KEYS if k not in r]
        if missing:
            raise ValueError(f"`rows[{i}]` must have keys {', '.join(_PV_KEYS)}. Missing {missing}.")
        if not 0.0 < float(r["prevalence"]) < 1.0:
            raise ValueError(f"`rows[{i}]['prevalence']` must be a fraction in (0, 1). Got {r['prevalence']!r} instead.")
    rows = sorted(rows, key=lambda r: float(r["prevalence"]))
    prev = 100 * np.array([float(r["prevalence"]) for r in rows])
    plt = pyplot()
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
        for ax, key, name, colour in ((axes[0], "ppv", "PPV", COLOURS[3]), (axes[1], "npv", "NPV", COLOURS[0])):
            value = 100 * np.array([float(r[key]) for r in rows], dtype=np.float64)
            ci = 100 * np.array([[float(v) for v in r[f"{key}_ci95"]] for r in rows], dtype=np.float64)
            ax.fill_between(prev, ci[:, 0], ci[:, 1], color=colour, alpha=0.22, linewidth=0, label="95 % interval")
            ax.plot(prev, value, color=colour, linewidth=2.5, marker="o", markersize=7, label=name)
            ax.set_xlabel("Prevalence of bleeds at deployment (%)")
            ax.set_ylabel(f"{name} (%)")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", framealpha=0.95)
        axes[0].set_title("Positive predictive value")
        axes[1].set_title("Negative predictive value")
        fig.suptitle(title)
        return save_figure(fig, path)


def plot_calibration(
    path: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_bins: int = 10,
    title: str = "Calibration (reliability diagram)",
) -> Path:
    """Reliability diagram: observed bleed rate against mean predicted probability in equal-width bins.

    Each non-empty bin (:func:`brain_audit.audit.statistics.calibration_bins`) is a point with its Wilson
    95 % interval; the diagonal is perfect calibration. A lower panel shows how the predictions are spread
    (histogram of ``p`` per curve).

    Args:
        path: PNG to write.
        curves: name -> ``(y, p)``: int (n,) truth in {0, 1} and float (n,) probabilities in [0, 1], e.g.
            ``{"as trained": ..., "Platt recalibrated (fitted on validation)": ...}``.
        n_bins: equal-width bins over [0, 1], >= 1.
        title: one-line title.

    Returns:
        The PNG's path.

    References:
        Wilson EB. JASA 1927 (the per-bin interval).
    """
    if len(curves) == 0:
        raise ValueError("`curves` must hold at least one (y, p). Got an empty mapping instead.")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"`n_bins` must be an integer >= 1. Got {n_bins!r} instead.")
    data = {}
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"`curves[{name!r}]` must be a pair (y, p). Got {len(pair)} items instead.")
        y, p = _binary_scores(pair[0], pair[1], f"curves[{name!r}][0]", f"curves[{name!r}][1]")
        if p.min() < 0.0 or p.max() > 1.0:
            raise ValueError(f"`curves[{name!r}][1]` must be probabilities in [0, 1]. "
                             f"Got values in [{p.min():g}, {p.max():g}] instead.")
        data[name] = (y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    plt = pyplot()
    with plt.rc_context(_RC):
        fig, (ax, hist) = plt.subplots(2, 1, figsize=(8, 9), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        ax.plot([0, 100], [0, 100], color="0.45", linestyle="--", linewidth=1.2, label="perfect calibration")
        markers = ("o", "s", "D", "^", "v", "P")
        for k, (name, (y, p)) in enumerate(data.items()):
            colour = COLOURS[k % len(COLOURS)]
            bins = calibration_bins(y, p, n_bins)
            x = np.array([b["mean_predicted"] for b in bins])
            obs = np.array([b["observed_rate"] for b in bins])
            ci = np.array([wilson_interval(round(b["observed_rate"] * b["count"]), b["count"]) for b in bins])
            err = np.vstack([obs - ci[:, 0], ci[:, 1] - obs]).clip(min=0.0)
            ax.errorbar(100 * x, 100 * obs, yerr=100 * err, color=colour, marker=markers[k % len(markers)],
                        markersize=8, linewidth=2, capsize=4, label=f"{name} (n = {len(y)})")
            hist.hist(100 * p, bins=100 * edges, histtype="step", linewidth=2, color=colour, label=name)
        ax.set_xlim(0, 100)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("Observed rate of bleeds (%)\n(Wilson 95 % interval)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        hist.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.45), framealpha=0.95)
        hist.set_xlabel("Predicted probability of a bleed (%)")
        hist.set_ylabel("Count")
        hist.grid(alpha=0.3)
        return save_figure(fig, path)


_DCA_COLUMNS = ("threshold", "net_benefit", "treat_all", "treat_none")


def plot_decision_curve(path: str | Path, table: Any, title: str = "Decision curve: net benefit of acting on the model") -> Path:
    """Net benefit of the model, of treating all and of treating none against the threshold probability.

    Args:
        path: PNG to write.
        table: pandas DataFrame with columns ``threshold`` (fraction in [0, 1]), ``net_benefit``,
            ``treat_all``, ``treat_none`` (net benefit: true positives per patient minus false positives
            weighted by the threshold odds).
        title: one-line title.

    Returns:
        The PNG's path. The y-axis runs from slightly below 0 to 1.1 x the larger of the model's and
        treat-all's maximum, so the steep fall of treat-all does not flatten the curves.

    References:
        Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
        Med Decis Making 2006;26:565-74.
    """
    missing = [c for c in _DCA_COLUMNS if c not in getattr(table, "columns", ())]
    if missing:
        raise ValueError(f"`table` must be a DataFrame with columns {', '.join(_DCA_COLUMNS)}. Missing {missing}.")
    if len(table) == 0:
        raise ValueError("`table` must hold at least one threshold. Got 0 rows instead.")
    t = table.sort_values("threshold")
    x = 100 * t["threshold"].to_numpy(dtype=np.float64)
    model = t["net_benefit"].to_numpy(dtype=np.float64)
    treat_all = t["treat_all"].to_numpy(dtype=np.float64)
    treat_none = t["treat_none"].to_numpy(dtype=np.float64)
    top = np.nanmax(np.concatenate([model, treat_all, [0.0]])) * 1.1
    top = top if top > 0 else 0.01
    plt = pyplot()
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9, 6))
        ax.plot(x, model, color=COLOURS[0], linewidth=2.8, label="model")
        ax.plot(x, treat_all, color=COLOURS[1], linewidth=2.2, linestyle="--", label="treat all (act on every scan)")
        ax.plot(x, treat_none, color="0.25", linewidth=2.0, linestyle=":", label="treat none")
        ax.set_ylim(-0.08 * top, top)
        ax.set_xlim(x.min(), x.max())
        ax.set_xlabel("Threshold probability (%)")
        ax.set_ylabel("Net benefit (true positives per patient)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", framealpha=0.95)
        return save_figure(fig, path)


# Flow-diagram geometry, in inches (the axes are drawn 1 data unit = 1 inch).
_FLOW_WIDTH = 10.0
_MAIN_X, _MAIN_W = 0.3, 5.2
_SIDE_X, _SIDE_W = 6.4, 3.4
_LINE, _PAD, _GAP = 0.24, 0.16, 0.45
_CHAR = 0.088  # mean character width at 12 pt, inches


def _wrap(text: str, width_in: float) -> str:
    chars = max(8, int((width_in - 2 * _PAD) / _CHAR))
    return "\n".join(textwrap.fill(part, chars) if part else "" for part in str(text).split("\n"))


def _box_height(wrapped: str) -> float:
    return wrapped.count("\n") * _LINE + _LINE + 2 * _PAD


def _flow_box(ax: Any, x: float, top: float, width: float, wrapped: str, face: str) -> float:
    from matplotlib.patches import FancyBboxPatch

    h = _box_height(wrapped)
    ax.add_patch(FancyBboxPatch((x, top - h), width, h, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=face, edgecolor="black", linewidth=1.4))
    ax.text(x + width / 2, top - h / 2, wrapped, ha="center", va="center", fontsize=12, linespacing=1.25)
    return h


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.4,
                                                      "shrinkA": 0, "shrinkB": 0, "mutation_scale": 18})


def plot_flow(path: str | Path, stages: Sequence[Mapping[str, Any]], title: str = "Flow of patients through the audit") -> Path:
    """A STARD-style flow diagram: the stages as boxes stacked top to bottom, joined by arrows.

    A stage's ``excluded`` text is a side box to the right, reached by an arrow that leaves the downward
    arrow to the next stage (so it reads as "excluded on the way"); on the last stage it sits beside the box.
    The last stage may carry ``split``: boxes side by side below it (e.g. "with bleed" / "without bleed").
    Long texts are wrapped; the figure's height follows the number and length of the stages.

    Args:
        path: PNG to write.
        stages: one dict per stage: ``{"text": str, "excluded": str | None, "split": [str, ...] (last stage only)}``.
            Newlines in a text are kept.
        title: one-line title.

    Returns:
        The PNG's path.

    References:
        Bossuyt PM, Reitsma JB, Bruns DE, et al. STARD 2015: an updated list of essential items for reporting
        diagnostic accuracy studies. BMJ 2015;351:h5527 (the flow diagram, item 19).
    """
    if len(stages) == 0:
        raise ValueError("`stages` must hold at least one stage. Got an empty sequence instead.")
    for i, s in enumerate(stages):
        if not isinstance(s, Mapping) or not str(s.get("text", "")).strip():
            raise ValueError(f"`stages[{i}]` must be a dict with a non-empty 'text'. Got {s!r} instead.")
        if s.get("split") and i != len(stages) - 1:
            raise ValueError(f"`stages[{i}]['split']` is allowed on the last stage only (stage {len(stages) - 1}).")
    plt = pyplot()
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(_FLOW_WIDTH, 1.0))
        ax = fig.add_axes((0, 0, 1, 1))
        y = 0.0
        last = len(stages) - 1
        for i, s in enumerate(stages):
            main = _wrap(s["text"], _MAIN_W)
            h = _flow_box(ax, _MAIN_X, y, _MAIN_W, main, "#DCEBF7")
            x_mid = _MAIN_X + _MAIN_W / 2
            excluded = s.get("excluded")
            side = _wrap(excluded, _SIDE_W) if excluded else None
            if i < last:
                gap = max(_GAP * 2, _box_height(side) + 2 * 0.15) if side else _GAP * 2
                bottom = y - h
                _arrow(ax, (x_mid, bottom), (x_mid, bottom - gap))
                if side:
                    y_side = bottom - gap / 2
                    hs = _box_height(side)
                    _flow_box(ax, _SIDE_X, y_side + hs / 2, _SIDE_W, side, "#FBE5D6")
                    _arrow(ax, (x_mid, y_side), (_SIDE_X, y_side))
                y = bottom - gap
            else:
                bottom = y - h
                if side:
                    hs = _box_height(side)
                    y_side = y - h / 2
                    _flow_box(ax, _SIDE_X, y_side + hs / 2, _SIDE_W, side, "#FBE5D6")
                    _arrow(ax, (_MAIN_X + _MAIN_W, y_side), (_SIDE_X, y_side))
                y = bottom
                split = [str(t) for t in (s.get("split") or [])]
                if split:
                    sep = 0.3
                    width = (_FLOW_WIDTH - 2 * _MAIN_X - (len(split) - 1) * sep) / len(split)
                    texts = [_wrap(t, width) for t in split]
                    top = y - _GAP * 2
                    centres = [_MAIN_X + k * (width + sep) + width / 2 for k in range(len(texts))]
                    bar = y - _GAP
                    ax.plot([x_mid, x_mid], [y, bar], color="black", linewidth=1.4)
                    ax.plot([min(centres + [x_mid]), max(centres + [x_mid])], [bar, bar], color="black", linewidth=1.4)
                    heights = []
                    for centre, text in zip(centres, texts):
                        heights.append(_flow_box(ax, centre - width / 2, top, width, text, "#E2F0D9"))
                        _arrow(ax, (centre, bar), (centre, top))
                    y = top - max(heights)
        ax.set_xlim(0, _FLOW_WIDTH)
        ax.set_ylim(y - 0.1, 0.1)
        ax.axis("off")
        fig.set_size_inches(_FLOW_WIDTH, 0.2 - y)
        fig.suptitle(title, y=1.0, va="bottom")
        return save_figure(fig, path)


def plot_confusion(path: str | Path, matrices: Mapping[str, Mapping[str, int]], title: str = "Calls against the truth") -> Path:
    """One 2 x 2 confusion matrix per entry: rows the truth (bleed / no bleed), columns the model's call.

    Each cell shows its count, large, and beneath it the row percentage (the bleed row: sensitivity and
    miss rate; the no-bleed row: false-positive rate and specificity). The shade follows the row percentage.

    Args:
        path: PNG to write.
        matrices: name -> ``{"tp", "fp", "fn", "tn"}`` non-negative counts, e.g. ``{"patients": ..., "slices": ...}``.
        title: one-line title.

    Returns:
        The PNG's path.
    """
    if len(matrices) == 0:
        raise ValueError("`matrices` must hold at least one confusion matrix. Got an empty mapping instead.")
    cells = {}
    for name, m in matrices.items():
        missing = [k for k in ("tp", "fp", "fn", "tn") if k not in m]
        if missing:
            raise ValueError(f"`matrices[{name!r}]` must have keys tp, fp, fn, tn. Missing {missing}.")
        counts = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]])
        if not all(float(v).is_integer() and v >= 0 for v in counts.ravel()):
            raise ValueError(f"`matrices[{name!r}]` counts must be integers >= 0. Got {dict(m)!r} instead.")
        cells[name] = counts.astype(np.int64)
    plt = pyplot()
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(cells), figsize=(6.0 * len(cells), 5.4), squeeze=False, layout="constrained")
        for ax, (name, counts) in zip(axes[0], cells.items()):
            totals = counts.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)
            ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1.25)
            for r in range(2):
                for c in range(2):
                    dark = np.nan_to_num(share[r, c]) > 0.6
                    colour = "white" if dark else "black"
                    ax.text(c, r - 0.08, f"{counts[r, c]:,}", ha="center", va="center", fontsize=24,
                            fontweight="bold", color=colour)
                    pct = "—" if np.isnan(share[r, c]) else f"{100 * share[r, c]:.1f} % of row"
                    ax.text(c, r + 0.22, pct, ha="center", va="center", fontsize=12, color=colour)
            ax.set_xticks([0, 1], ["bleed", "no bleed"])
            ax.set_yticks([0, 1], ["bleed", "no bleed"])
            ax.set_xlabel("Model's call")
            ax.set_ylabel("Truth")
            ax.set_title(f"{name} (n = {int(counts.sum()):,})")
            ax.tick_params(length=0)
        fig.suptitle(title)
        return save_figure(fig, path)


def plot_case(
    path: str | Path,
    hu: np.ndarray,
    cam: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """One gallery tile: the slice in the brain, subdural and bone windows, and the attention map over it.

    Args:
        path: PNG to write.
        hu: float (H, W) in Hounsfield units.
        cam: optional float (h, w) attention map in [0, 1] (clipped), resized bilinearly to (H, W) and drawn
            in jet at opacity 0.45 over the brain window as a fourth panel.
        truth: optional bool (H, W) lesion mask; its outline (lime) is drawn on every panel.
        title: one-line title (a pseudonym, the probability and the call; never an identifying DICOM field).

    Returns:
        The PNG's path.
    """
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (H, W). Got shape {x.shape} instead.")
    if truth is not None and np.shape(truth) != x.shape:
        raise ValueError(f"`truth` must have the slice's shape {x.shape}. Got {np.shape(truth)} instead.")
    if cam is not None and np.ndim(cam) != 2:
        raise ValueError(f"`cam` must be 2-D (h, w). Got shape {np.shape(cam)} instead.")
    panels = [(window(x, *w), f"{name} W{w.width:g} L{w.center:g}")
              for w, name in ((BRAIN, "brain"), (SUBDURAL, "subdural"), (BONE, "bone"))]
    plt = pyplot()
    with plt.rc_context(_RC):
        n = 4 if cam is not None else 3
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.6))
        for ax, (image, name) in zip(axes, panels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(name)
        if cam is not None:
            heat = np.clip(resize_map(np.asarray(cam, dtype=np.float32), x.shape), 0.0, 1.0)
            axes[3].imshow(panels[0][0], cmap="gray", vmin=0, vmax=1)
            axes[3].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[3].set_title("attention (blue low, red high)")
        for ax in axes:
            ax.axis("off")
            if truth is not None and np.any(truth):
                ax.contour(np.asarray(truth, dtype=np.float32), levels=[0.5], colors="lime", linewidths=1.2)
        if title:
            fig.suptitle(title)
        return save_figure(fig, path)
