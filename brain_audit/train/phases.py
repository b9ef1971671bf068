"""The seed notebook's four training phases.

=====  ====================  ==============================================================================
phase  name                  what it does
=====  ====================  ==============================================================================
1      domain freezing       backbone frozen, head trained on the Phase-1 cohort (1,600 patients by
                             default); with no pretrained backbone the whole network trains, and the
                             manifest says so
2      scale-up              from Phase 1 on the balanced Phase-2 cohort, top EfficientNet blocks
                             unfrozen, BatchNorm frozen
3      adversarial audit     the attention audit of validation (:mod:`brain_audit.audit.attention_audit`:
                             every error, flags against chance, randomisation check, overlays) and the
                             hard-negative list mined from train (:mod:`brain_audit.train.hard_negatives`)
4      clinical correction   from Phase 2 with hard negatives over-sampled, one candidate per dropout
                             rate, compared on validation; the operating thresholds for the target
                             sensitivity (slice and patient) written beside the chosen model
=====  ====================  ==============================================================================

Every phase writes ``<out>/phase<N>/`` (:class:`brain_audit.run_layout.RunPaths`): ``model.keras``,
``history.csv``, ``metrics.json`` and ``run.json`` (resolved config, seeds, package versions, input hashes,
written when the phase starts and again when it ends); with ``head = "six"`` each ``metrics.json`` also carries
``competition``, the RSNA 2019 competition metric on validation with its patient-bootstrap interval and each
label's AUC (for head ``"any"``, a note that it is not available); thresholds and choices use ``any``
(:func:`brain_audit.model.predictions.any_column`). A finished phase is read back, not rerun, and only for
the request its ``run.json`` records: another plan stops with a one-line :class:`ConfigError` (``force``
reruns it). One process at a time writes a run folder (:mod:`brain_audit.run_lock`).

With ``context`` > 0 (2.5-D input) Phase 1 builds the model with ``1 + 2 context`` input channels, every feed
yields them, and every later step reads a model's input through
:meth:`brain_audit.dataset.cache.HUCache.hu_input` at the context of that model
(:func:`brain_audit.model.predictions.model_context`); Grad-CAM maps and pictures show the centre slice.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from brain_audit.audit.attention_audit import attention_audit, field_of_view, truth_lesions
from brain_audit.audit.sections import COMPETITION_NOT_AVAILABLE, competition_section
from brain_audit.audit.statistics import confusion_at, patient_level, threshold_for_sensitivity
from brain_audit.config import RunConfig, with_resolved_data_root
from brain_audit.dataset.feed import make_feed
from brain_audit.errors import ConfigError
from brain_audit.figures import pyplot, save_figure
from brain_audit.model.network import (
    build_model,
    compile_model,
    freeze_backbone,
    recalibrate_batchnorm,
    unfreeze_all,
    unfreeze_top,
)
from brain_audit.model.predictions import any_column, model_context, predict_ids
from brain_audit.model.weights import load_model, save_model
from brain_audit.provenance import (
    atomic_write_bytes,
    read_json,
    remove_temporaries,
    write_csv,
    write_json,
)
from brain_audit.rsna import LABEL_COLUMNS
from brain_audit.run_layout import RunPaths
from brain_audit.run_lock import run_lock
from brain_audit.train.hard_negatives import mine_hard_negatives
from brain_audit.train.prepare import open_run_cache, prepare_data
from brain_audit.train.pretrain import check_backbone, run_pretrain
from brain_audit.train.reuse import (
    _UPSTREAM,
    _check_phase,
    _finished,
    _in_progress,
    _phase_record,
    check_trained,
)
from brain_audit.train.runtime import (
    _seed,
    distribution_strategy,
    fit_resumable,
    precision_for_devices,
    precision_policy,
)

__all__ = ['set_dropout', 'run_phase', 'run_all']


def set_dropout(model: Any, rate: float) -> int:
    """Set the rate of every Dropout layer of the classifier head; returns how many were set.

    Recompile afterwards (the train function reads the rate when it is traced).
    """

    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`rate` must be in [0, 1). Got {rate!r} instead.")
    n = 0
    for layer in model.layers:  # the head only; the backbone's stochastic depth stays as built
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
            n += 1
    return n


def _evaluate(model: Any, cache: Any, config: RunConfig, cohort: str | None, target: float) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``any``: slice- and patient-level, at the target sensitivity; and the
    competition metric with each label's AUC (:func:`_competition`)."""


    ids = list(cache.ids("validation", cohort))
    if len(ids) == 0:
        warnings.warn("the validation split is empty; no metrics", RuntimeWarning, stacklevel=2)
        return {"n": 0}
    y = cache.table.loc[ids, "any"].to_numpy().astype(int)
    every = predict_ids(model, cache, ids, None)
    p = every[:, any_column(config.head)]
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum())}
    if 0 < y.sum() < len(y):
        thr = threshold_for_sensitivity(y, p, target)
        out.update(
            auc=float(roc_auc_score(y, p)),
            average_precision=float(average_precision_score(y, p)),
            threshold=thr,
            at_threshold=confusion_at(y, p, thr),
        )
        patients = cache.table.loc[ids, "patient_id"].to_numpy()
        _, yp, pp = patient_level(patients, y, p)
        if 0 < yp.sum() < len(yp):
            out["patient_auc"] = float(roc_auc_score(yp, pp))
    out["competition"] = _competition(config, cache, ids, every)
    return out


#: Patient-bootstrap resamples of the competition metric on validation (a mean: cheap).
_COMPETITION_BOOT = 1000


def _competition(config: RunConfig, cache: Any, ids: Sequence[str], every: np.ndarray) -> dict[str, Any] | str:
    """The RSNA 2019 competition metric of a six-label model on validation ``ids`` (``every``: its (N, 6)
    probabilities) with a patient-bootstrap interval and each label's AUC (point values); for head ``"any"``
    the note that it is not available (:data:`brain_audit.audit.sections.COMPETITION_NOT_AVAILABLE`)."""
    if config.head != "six":
        return COMPETITION_NOT_AVAILABLE
    table = cache.table.loc[list(ids)]
    return competition_section(table[list(LABEL_COLUMNS)].to_numpy().astype(int), every,
                               table["patient_id"].to_numpy(), n_boot=_COMPETITION_BOOT, seed=config.seed,
                               label_intervals=False)


def _finish_phase(model: Any, out: Path, config: RunConfig, metrics: dict[str, Any], *, phase: int) -> Path:

    path = save_model(model, out / "model.keras")
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", _phase_record(config, phase, "finished"))
    return path


def _feed(cache: Any, config: RunConfig, split: str, batch: int, cohort: str | None, *, train: bool,
          seed: int = 0, sample_weights: dict[str, float] | None = None, augment: bool = False) -> Any:

    return make_feed(
        cache, split, batch, labels=config.head, cohort=cohort, shuffle=train, augment=augment and train,
        seed=seed, sample_weights=sample_weights, context=config.context,
    )


def _train_phase(config: RunConfig, phase: int, cohort: str, plan: Any, build: Callable[[], Any], *,
                 strategy: Any, verbose: int | str, sample_weights: dict[str, float] | None = None,
                 out: Path | None = None, augment: bool = True) -> Any:
    cache = open_run_cache(config)
    out = out or RunPaths(config.out_dir).phase(phase)
    val = _feed(cache, config, "validation", plan.batch_size, cohort, train=False)
    model, history = fit_resumable(
        build,
        lambda e: _feed(cache, config, "train", plan.batch_size, cohort, train=True, seed=_seed(config, phase, e),
                        sample_weights=sample_weights, augment=augment),
        out,
        plan.epochs,
        seed=_seed(config, phase),
        validation_data=val,
        strategy=strategy,
        verbose=verbose,
    )
    return model


def _phase1(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:

    plan = config.phase1
    weights = config.backbone_weights
    if weights is not None and not str(weights) == "imagenet" and not Path(weights).is_file():
        raise ConfigError(f"`weights` file not found: {weights!r} (run `brain-audit pretrain` first for 'pretrained')")
    frozen = weights is not None and plan.unfrozen_blocks == 0

    def build() -> Any:
        m = build_model(config.image_size, config.head, plan.dropout, weights=weights, seed=config.seed,
                        context=config.context)
        if frozen:
            freeze_backbone(m)
        elif plan.unfrozen_blocks == -1 or weights is None:
            unfreeze_all(m)
        else:

            unfreeze_top(m, plan.unfrozen_blocks)
        return compile_model(m, plan.learning_rate, config.head)

    out = RunPaths(config.out_dir).phase(1)
    model = _train_phase(config, 1, "phase1", plan, build, strategy=strategy, verbose=verbose, augment=plan.augment)
    if not frozen:
        _precise_bn(model, config, "phase1")
    metrics = _evaluate(model, open_run_cache(config), config, "phase1", config.phase4.target_sensitivity)
    metrics["training_state"] = (
        "backbone frozen (domain freezing) on pretrained weights"
        if frozen
        else "whole network trained, BatchNormalization trainable: no pretrained backbone, a frozen random "
        "backbone stays at chance"
        if weights is None
        else f"top {plan.unfrozen_blocks} blocks unfrozen"
    )
    metrics["weights"] = str(weights)
    _finish_phase(model, out, config, metrics, phase=1)
    return metrics


def _precise_bn(model: Any, config: RunConfig, cohort: str, limit: int = 1024) -> None:
    """Re-estimate trainable BatchNormalization statistics on (at most ``limit``) training slices.

    After a short whole-network training the moving averages lag the weights and the
    network predicts a constant in inference mode; see :func:`brain_audit.model.recalibrate_batchnorm`.
    """

    cache = open_run_cache(config)
    ids = list(cache.ids("train", cohort))
    if not ids:
        return
    step = max(1, len(ids) // limit)
    hu = cache.hu_input(ids[::step][:limit], model_context(model))
    recalibrate_batchnorm(model, hu, batch_size=32)


def _phase2(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:

    plan = config.phase2
    src = RunPaths(config.out_dir).model(1)
    _require(src, 1)

    def build() -> Any:
        m = load_model(src, compile=False)
        set_dropout(m, plan.dropout)
        if plan.unfrozen_blocks == -1:
            unfreeze_all(m, train_batchnorm=False)
        else:
            unfreeze_top(m, plan.unfrozen_blocks)
        return compile_model(m, plan.learning_rate, config.head)

    out = RunPaths(config.out_dir).phase(2)
    model = _train_phase(config, 2, "phase2", plan, build, strategy=strategy, verbose=verbose, augment=plan.augment)
    metrics = _evaluate(model, open_run_cache(config), config, "phase2", config.phase4.target_sensitivity)
    _finish_phase(model, out, config, metrics, phase=2)
    return metrics


def _require(path: Path, phase: int) -> None:
    if not path.is_file():
        raise ConfigError(f"phase {phase} has not finished: {path} is missing (run `brain-audit train --phase {phase}`)")


def _phase3(config: RunConfig, verbose: int | str) -> dict[str, Any]:
    """The adversarial audit: Grad-CAM over validation, and hard negatives mined from train."""


    plan = config.phase3
    paths = RunPaths(config.out_dir)
    src = paths.model(2)
    _require(src, 2)
    out = paths.phase(3)
    model = load_model(src, compile=False)
    cache = open_run_cache(config)
    column = any_column(config.head)
    threshold = float(json.loads((paths.phase(2) / "metrics.json").read_text()).get("threshold", 0.5))

    # (1) findings on validation: every error and a sample of correct calls, measured against chance and
    # against randomised weights (audit.attention_audit; overlays of missed bleeds and false alarms)
    val_ids = list(cache.ids("validation", "phase2"))
    y_val = cache.table.loc[val_ids, "any"].to_numpy().astype(int)
    every_val = predict_ids(model, cache, val_ids, None)
    p_val = every_val[:, column]
    findings, attention = attention_audit(
        model, cache, val_ids, y_val, p_val, threshold, out_dir=out, plan=plan, field_mm=field_of_view(paths.index, val_ids),
        lesions=truth_lesions(config.data_root, [i for i, t in zip(val_ids, y_val) if t == 1], cache.size),
        output_index=column, seed=config.seed,
    )

    # (2) hard negatives from TRAIN (never validation: Phase 4 trains on them and is judged on validation)
    tr_ids = cache.ids("train", "phase2")
    y_tr = cache.table.loc[tr_ids, "any"].to_numpy().astype(int)
    hard_df = mine_hard_negatives(
        model, cache, [tr_ids[i] for i in np.flatnonzero(y_tr == 0)], output_index=column, threshold=threshold,
        probability=plan.hard_negative_probability, off_brain_share=plan.off_brain_share,
        max_profiled=plan.max_slices, batch_size=plan.batch_size,
    )
    write_csv(out / "hard_negatives.csv", hard_df)

    summary: dict[str, Any] = {"audited_validation_slices": int(len(findings)), "threshold": threshold, **attention}
    if len(findings):
        summary["empty_maps"] = int(findings["cam_empty"].sum())  # no positive evidence for 'any' at all
        summary["errors"] = {k: v["total"] for k, v in attention["coverage"].items()
                             if k in ("false_negative", "false_positive")}
    summary["hard_negatives"] = int(len(hard_df))
    summary["train_negatives_scored"] = int(hard_df.attrs["scored"])
    if val_ids:  # the audited Phase-2 model's competition metric on the same validation slices
        summary["competition"] = _competition(config, cache, val_ids, every_val)
    write_json(out / "metrics.json", summary)
    write_json(out / "run.json", _phase_record(config, 3, "finished"))
    return summary


def _phase4(config: RunConfig, strategy: Any, verbose: int | str) -> dict[str, Any]:
    """Clinical correction: one candidate per dropout rate, hard negatives over-sampled; pick by
    specificity at the target sensitivity on validation and record the operating threshold."""


    plan = config.phase4
    paths = RunPaths(config.out_dir)
    src = paths.model(2)
    _require(src, 2)
    _require(paths.phase(3) / "hard_negatives.csv", 3)
    hard = pd.read_csv(paths.phase(3) / "hard_negatives.csv", dtype={"image_id": str})
    weights = {i: float(plan.hard_negative_weight) for i in hard["image_id"]}
    cache = open_run_cache(config)
    column = any_column(config.head)
    val_ids = cache.ids("validation", "phase2")
    y_val = cache.table.loc[val_ids, "any"].to_numpy().astype(int)

    candidates = []
    curves = []
    predictions: dict[float, np.ndarray] = {}  # dropout rate -> validation probabilities
    for k, rate in enumerate(plan.dropouts):
        out_c = paths.phase(4) / f"dropout_{rate:g}"

        def build(rate: float = rate) -> Any:
            m = load_model(src, compile=False)
            set_dropout(m, rate)
            if plan.unfrozen_blocks == -1:
                unfreeze_all(m, train_batchnorm=False)
            else:
                unfreeze_top(m, plan.unfrozen_blocks)
            return compile_model(m, plan.learning_rate, config.head)

        if (out_c / "model.keras").is_file():
            model = load_model(out_c / "model.keras", compile=False)
        else:
            model = _train_phase(config, 40 + k, "phase2", plan, build, strategy=strategy, verbose=verbose,
                                 sample_weights=weights, out=out_c, augment=True)
            save_model(model, out_c / "model.keras")
        every = predict_ids(model, cache, list(val_ids), None)
        p = every[:, column]
        predictions[rate] = p
        cand: dict[str, Any] = {"dropout": rate, "model": str(out_c / "model.keras")}
        if len(val_ids):
            cand["competition"] = _competition(config, cache, val_ids, every)
        if 0 < y_val.sum() < len(y_val):


            thr = threshold_for_sensitivity(y_val, p, plan.target_sensitivity)
            conf = confusion_at(y_val, p, thr)
            cand.update(threshold=thr, average_precision=float(average_precision_score(y_val, p)),
                        sensitivity=conf["sensitivity"], specificity=conf["specificity"], ppv=conf["ppv"],
                        sensitivity_at_0_5=confusion_at(y_val, p, 0.5)["sensitivity"])
            prec, rec, _ = precision_recall_curve(y_val, p)
            curves.append((rate, rec, prec, cand["average_precision"]))
        candidates.append(cand)
        write_json(out_c / "metrics.json", cand)

    scored = [c for c in candidates if "specificity" in c]
    if not scored:
        raise ConfigError("phase 4 cannot choose: the validation split needs both positive and negative slices")
    chosen = max(scored, key=lambda c: (c["specificity"], c["average_precision"], c["dropout"]))
    atomic_write_bytes(paths.model(4), Path(chosen["model"]).read_bytes())
    operating = {"threshold": chosen["threshold"], "target_sensitivity": plan.target_sensitivity,
                 "dropout": chosen["dropout"], "validation_sensitivity": chosen["sensitivity"],
                 "validation_specificity": chosen["specificity"]}
    operating.update(_patient_operating_point(predictions[chosen["dropout"]], cache, val_ids, y_val,
                                              plan.target_sensitivity))
    write_json(paths.operating_point, operating)

    fig, ax = pyplot().subplots(figsize=(5, 4.5))
    for rate, rec, prec, ap in curves:
        ax.plot(rec, prec, label=f"dropout {rate:g} (AP {ap:.3f})")
    ax.axvline(plan.target_sensitivity, color="grey", ls="--", lw=1, label=f"target sensitivity {plan.target_sensitivity:g}")
    ax.set_xlabel("sensitivity (recall)")
    ax.set_ylabel("precision (PPV at validation prevalence)")
    ax.set_title("Phase 4 candidates on validation")
    ax.legend(fontsize=8)
    save_figure(fig, paths.phase(4) / "pr_curves.png")

    metrics = {"candidates": candidates, "chosen": chosen, "operating_point": operating,
               "competition": chosen.get("competition", COMPETITION_NOT_AVAILABLE),
               "hard_negatives": int(len(hard)), "hard_negative_weight": plan.hard_negative_weight}
    write_json(paths.phase(4) / "metrics.json", metrics)
    write_json(paths.phase(4) / "run.json", _phase_record(config, 4, "finished"))
    return metrics


def _patient_operating_point(p: np.ndarray, cache: Any, val_ids: Sequence[str], y_val: np.ndarray,
                             target: float) -> dict[str, Any]:
    """The patient-level threshold: a patient's score is its most suspicious slice, so the slice threshold would
    call almost every patient positive; this one is chosen on validation patients for the same target sensitivity.

    ``p``: the chosen model's validation probabilities, aligned with ``val_ids``."""

    patients = cache.table.loc[list(val_ids), "patient_id"].to_numpy()
    _, y_pat, p_pat = patient_level(patients, y_val, p)
    if not 0 < y_pat.sum() < len(y_pat):
        return {"patient_threshold": None, "validation_patients": int(len(y_pat))}
    thr = threshold_for_sensitivity(y_pat, p_pat, target)
    conf = confusion_at(y_pat, p_pat, thr)
    return {"patient_threshold": thr, "validation_patients": int(len(y_pat)),
            "validation_patient_sensitivity": conf["sensitivity"], "validation_patient_specificity": conf["specificity"]}


def run_phase(config: RunConfig, phase: int, *, strategy: Any = None, verbose: int | str = "auto",
              force: bool = False) -> dict[str, Any]:
    """Run one phase (1-4, or the optional study stage 5, :mod:`brain_audit.train.study`) of ``config``; a
    finished phase is read back, not rerun (unless ``force``).

    A finished phase, or an unfinished one with a checkpoint to resume, is reused only for the request
    its ``run.json`` records: the same values of every key of :func:`phase_keys` and the same input files
    (cohort, the model it started from; by SHA-256). Otherwise it stops with a :class:`ConfigError` that
    names the differing key and both values; ``force`` deletes the phase folder and runs it again. The
    phases it starts from are checked the same way, and the run folder is held for the whole call
    (:func:`brain_audit.run_lock.run_lock`).

    Mixed precision is used on GPUs of compute capability >= 7 (:func:`precision_for_devices`);
    ``strategy`` defaults to :func:`distribution_strategy`.

    Returns:
        The phase's ``metrics.json`` as a dict.

    Raises:
        ConfigError: the run folder is in use by another process; the phase (or one it starts from) was
            trained for another request, e.g. ``phase 1 in runs/x was trained with phase1.epochs=3; this run
            asks 5. Use --force to retrain it, or another --out.``; an earlier phase has not finished.
    """
    config = with_resolved_data_root(config)  # data_root = "auto": the folder found, as prepare_data saw it
    if phase not in (1, 2, 3, 4, 5):
        raise ConfigError(f"`phase` must be 1, 2, 3, 4 or 5. Got {phase!r} instead.")
    with run_lock(config.out_dir):
        paths = RunPaths(config.out_dir)
        out = paths.phase(phase)
        done = _finished(paths, phase)
        if force or not (done or _in_progress(out)):
            shutil.rmtree(out, ignore_errors=True)  # nothing of it is kept: no stale file survives the new run
        else:
            record = read_json(out / "run.json")
            if record is not None:  # (a phase written before run.json recorded it is trusted as before)
                _check_phase(config, phase, record)
            if done:
                return json.loads((out / "metrics.json").read_text())
            remove_temporaries(out, recursive=True)  # of the killed run being resumed
        for n in _UPSTREAM[phase]:
            record = read_json(paths.phase(n) / "run.json")
            if record is not None and _finished(paths, n):
                _check_phase(config, n, record)
        if phase == 1 and config.weights == "pretrained":
            check_backbone(config)
        write_json(out / "run.json", _phase_record(config, phase, "started"))
        strategy = strategy or distribution_strategy()
        with precision_policy(precision_for_devices()):
            if phase == 1:
                return _phase1(config, strategy, verbose)
            if phase == 2:
                return _phase2(config, strategy, verbose)
            if phase == 3:
                return _phase3(config, verbose)
            if phase == 4:
                return _phase4(config, strategy, verbose)
            from brain_audit.train.study import train_study  # imports this module's neighbours

            return train_study(config, strategy=strategy, verbose=verbose)


def run_all(config: RunConfig, *, pretrain: bool | None = None, verbose: int | str = "auto",
            progress: bool = True, force: bool = False) -> dict[int, dict[str, Any]]:
    """Prepare the data, pretrain when ``weights == "pretrained"`` (or ``pretrain``), then phases 1-4, and the
    study stage (phase 5) when ``phase5.enabled``.

    The run folder is held throughout. Before the data are prepared, the trained stages the folder holds
    are checked against ``config`` (:func:`check_trained`), so that a changed ``image_size`` stops here
    instead of after the cache was rebuilt for it; ``force`` retrains every stage instead.
    """
    with run_lock(config.out_dir):
        pretrain = bool(pretrain or (pretrain is None and config.weights == "pretrained"))
        if not force:
            check_trained(config, pretrain=pretrain)
        prepare_data(config, progress=progress)
        if pretrain:
            run_pretrain(config, verbose=verbose, force=force)
        phases = (1, 2, 3, 4, 5) if config.phase5.enabled else (1, 2, 3, 4)
        return {n: run_phase(config, n, verbose=verbose, force=force) for n in phases}

