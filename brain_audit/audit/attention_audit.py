"""The attention audit of a set of cached slices, as Phase 3 and the held-out audit run it.

One procedure for both: which slices (:func:`brain_audit.gradcam.coverage.coverage_sample`: every error up to a
cap, a seeded sample of correct calls), the maps the audits use (:func:`brain_audit.gradcam.maps.audit_cam`:
HiResCAM at a layer fine enough to resolve a bleed) profiled against the regions and, when the data ship
them, the lesion masks (:func:`brain_audit.gradcam.attention.profile_cached`); every figure beside its chance
baseline with patient-cluster intervals (:func:`brain_audit.audit.attention_evidence.attention_evidence`);
the cascading-randomisation check on a fixed sample, always; overlays of missed bleeds and false alarms with
the truth contour. The map's native resolution in mm is in every output; the pointing game's tolerance is
:data:`~brain_audit.gradcam.attention.HIT_RADIUS_MM` wherever the header index gives the pixel spacing. A 2.5-D
model reads each slice with its neighbours (:func:`~brain_audit.model.predictions.model_context`); its maps,
regions and overlays are those of the slice itself (the centre channel).

References:
    Adebayo J et al. Sanity checks for saliency maps. NeurIPS 2018.
    Draelos RL, Carin L. HiResCAM. arXiv:2011.08891, 2020.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from brain_audit.audit.attention_evidence import attention_evidence
from brain_audit.dataset.masks import has_masks, lesion_mask, mask_path, read_masks
from brain_audit.errors import BrainAuditError
from brain_audit.gradcam.attention import FLAGS, HIT_RADIUS_MM, profile_cached
from brain_audit.gradcam.coverage import coverage_sample, field_of_view_mm, sanity_positions
from brain_audit.gradcam.maps import AUDIT_METHOD, audit_cam, cell_size_mm
from brain_audit.gradcam.overlays import overlay_title, save_overlay
from brain_audit.gradcam.shortcuts import SANITY_MAX_RHO, randomization_check
from brain_audit.ids import safe_child
from brain_audit.model.predictions import model_context
from brain_audit.provenance import write_csv

__all__ = ["attention_audit", "truth_lesions", "field_of_view"]


def truth_lesions(data_root: str | Path, ids: Sequence[str], size: int) -> dict[str, np.ndarray] | None:
    """Lesion masks (union of the subtypes) at cache resolution, when the data ship segmentation masks.

    Reads the dataset mask format (:mod:`brain_audit.dataset.masks`; a phantom cohort's truth is in it);
    images without a mask file are left out, an unreadable one is left out with a warning; None when the
    data ship no masks at all.
    """
    root = Path(data_root)
    if not has_masks(root):
        return None
    out = {}
    for image_id in ids:
        try:
            if not mask_path(root, image_id).is_file():
                continue
            lesion = lesion_mask(read_masks(root, image_id))
        except BrainAuditError as exc:
            warnings.warn(f"{exc}; audited without its lesion mask", RuntimeWarning, stacklevel=2)
            continue
        out[image_id] = cv2.resize(lesion.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out


def field_of_view(index_dir: str | Path, ids: Sequence[str]) -> dict[str, float]:
    """Image ID -> field of view of its padded square in mm, from a header index folder (``index.parquet``)."""
    index = pd.read_parquet(Path(index_dir) / "index.parquet",
                            columns=["image_id", "rows", "cols", "spacing_row", "spacing_col"])
    index = index.drop_duplicates("image_id").set_index("image_id").reindex(list(ids))
    return dict(zip(index.index, field_of_view_mm(index)))


class _Pictures:
    """The profiled slices most worth a picture, kept with their HU and map while profiling runs.

    Up to ``k`` in all, taken in turn from three queues so none crowds out the others: missed bleeds
    (lowest probability first), false alarms (highest first), correct calls with a flag (highest first).
    """

    _KINDS = ("false_negative", "false_positive", "flagged")

    def __init__(self, k: int, threshold: float) -> None:
        self.k, self.threshold = int(k), float(threshold)
        self._queues: dict[str, list[tuple[tuple[float, int], dict[str, Any], np.ndarray, np.ndarray]]] = {
            kind: [] for kind in self._KINDS}
        self._seen = 0

    def __call__(self, table: pd.DataFrame, hu: np.ndarray, maps: np.ndarray) -> None:
        if self.k <= 0:
            return
        flagged = table[list(FLAGS)].fillna(False).astype(bool).any(axis=1).to_numpy()
        called = table["probability"].to_numpy() >= self.threshold
        label = table["label"].to_numpy().astype(bool)
        for i, row in enumerate(table.to_dict("records")):
            self._seen += 1
            if label[i] and not called[i]:
                kind, key = "false_negative", row["probability"]
            elif called[i] and not label[i]:
                kind, key = "false_positive", -row["probability"]
            elif flagged[i]:
                kind, key = "flagged", -row["probability"]
            else:
                continue
            queue = self._queues[kind]
            queue.append(((key, self._seen), row, hu[i], maps[i]))
            queue.sort(key=lambda item: item[0])
            del queue[self.k :]

    @property
    def kept(self) -> list[tuple[str, dict[str, Any], np.ndarray, np.ndarray]]:
        """``(kind, profile row, HU (S, S), map (S, S))``, the three queues interleaved, at most ``k``."""
        out = []
        queues = [list(self._queues[kind]) for kind in self._KINDS]
        while len(out) < self.k and any(queues):
            for kind, queue in zip(self._KINDS, queues):
                if queue and len(out) < self.k:
                    _, row, hu, cam = queue.pop(0)
                    out.append((kind, row, hu, cam))
        return out


def attention_audit(
    model: Any,
    cache: Any,
    ids: Sequence[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    *,
    out_dir: str | Path,
    plan: Any,
    field_mm: Mapping[str, float] | None = None,
    lesions: Mapping[str, np.ndarray] | None = None,
    output_index: int = 0,
    seed: int = 0,
    n_boot: int = 2000,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Explain a set of cached slices and measure the explanations against chance and randomisation.

    Args:
        model: the Keras model (HU input) whose ``probabilities`` are given.
        cache: an opened :class:`brain_audit.dataset.cache.HUCache` holding ``ids``.
        ids: image IDs of the slices to choose from (e.g. every validation or audit slice).
        labels: (N,) true 0/1 labels of the explained output.
        probabilities: (N,) the model's probabilities for them.
        threshold: the operating threshold.
        out_dir: folder for ``findings.csv``, ``sanity.csv`` and ``overlays/<image_id>.png``.
        plan: the run's :class:`brain_audit.config.AuditPlan` (``max_slices``, ``max_errors``,
            ``correct_slices``, ``sanity_slices``, ``overlays``, ``batch_size``).
        field_mm: image ID -> field of view of its padded square, mm (for a map cell in mm).
        lesions: image ID -> bool lesion mask at cache resolution (pointing game, truth contours).
        output_index: the explained unit of the final Dense layer.
        seed: seed of the samples and of the randomisation check.
        n_boot: bootstrap resamples of the evidence's intervals.

    Returns:
        ``(findings, summary)``: one row per profiled slice (``image_id``, ``patient_id``, ``outcome``,
        ``cam_empty``, ``cell_mm``, profile columns); ``summary`` with ``coverage``, ``map``, ``sanity`` and
        ``evidence`` (JSON-ready). ``findings.csv`` and ``sanity.csv`` are written atomically.
    """
    out = Path(out_dir)
    ids = list(ids)
    y = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=np.float64)
    positions, coverage = coverage_sample(y, p, threshold, max_errors=plan.max_errors,
                                          correct_slices=plan.correct_slices, seed=seed)
    if len(positions) > plan.max_slices:
        coverage["truncated_to_max_slices"] = int(plan.max_slices)
        positions = positions[: plan.max_slices]
    pick = [ids[i] for i in positions]
    cam = audit_cam(model, output_index)
    side = int(cam.input_shape[1])
    cells = int(cam.cells[0] or side)
    pictures = _Pictures(plan.overlays, threshold)
    fov = np.array([np.nan if field_mm is None else float(field_mm.get(i, np.nan)) for i in pick], dtype=np.float64)
    pixel_mm = {i: mm / side for i, mm in zip(pick, fov) if np.isfinite(mm) and mm > 0}  # pointing game in mm
    findings = profile_cached(model, cache, pick, y[positions], p[positions], threshold, dict(lesions or {}) or None,
                              output_index=output_index, batch_size=plan.batch_size, on_batch=pictures,
                              pixel_mm=pixel_mm, hit_radius_mm=HIT_RADIUS_MM)
    if len(findings):
        findings.insert(1, "patient_id", cache.table.loc[pick, "patient_id"].to_numpy())
        called = findings["probability"].to_numpy() >= threshold
        truth = findings["label"].to_numpy().astype(bool)
        findings.insert(2, "outcome", np.where(truth, np.where(called, "true_positive", "false_negative"),
                                               np.where(called, "false_positive", "true_negative")))
        findings.insert(3, "cam_empty", findings["peak_region"] == "none")
        findings.insert(4, "cell_mm", fov / cells)
    write_csv(out / "findings.csv", findings)

    sanity: dict[str, Any] = {"slices": 0}
    if plan.sanity_slices and ids:
        chosen = sanity_positions(y, plan.sanity_slices, seed=seed)
        hu = cache.hu_input([ids[i] for i in chosen], model_context(model))  # as the model reads them (2.5-D)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            check = randomization_check(model, hu, layer=cam.layer, output_index=output_index, seed=seed,
                                        method=AUDIT_METHOD)
        write_csv(out / "sanity.csv", check["table"])
        sanity = {"slices": int(len(chosen)), "rho_final": check["rho_final"], "trustworthy": check["trustworthy"],
                  "max_rho": SANITY_MAX_RHO, "steps": check["table"].to_dict("records")}

    lesion_map = dict(lesions or {})
    kept = pictures.kept  # built once: the overlays and the summary's counts
    for kind, row, hu, cam_map in kept:
        title = overlay_title(row["image_id"], row["probability"], row) + f"  [{kind.replace('_', ' ')}]"
        save_overlay(safe_child(out / "overlays", row["image_id"], ".png"), hu, cam_map, title=title,
                     truth=lesion_map.get(row["image_id"]), method=f"{cam.method}, {cells} x {cells} cells")

    finite = fov[np.isfinite(fov)]
    resolution = cell_size_mm(cells, side, float(np.median(finite)) if finite.size else None)
    summary = {
        "coverage": coverage,
        "map": {"method": cam.method, "layer": cam.layer, **resolution},
        "sanity": sanity,
        "overlays": {kind: sum(1 for k, *_ in kept if k == kind) for kind in _Pictures._KINDS},
        "evidence": attention_evidence(findings, n_boot=n_boot, seed=seed) if len(findings) else {},
    }
    # trustworthy only when the check ran and the maps did not survive it (a NaN rho is not < the bound)
    summary["trustworthy"] = bool(sanity.get("trustworthy", False))
    return findings, summary
