"""The audit's flow of participants: every image and patient from the source to the audited calls.

A STARD-style account (Bossuyt PM et al. STARD 2015. BMJ 2015;351:h5527): how many images the source held,
how many could not be read and why, how many patients went to pretraining, training and validation (never
audited), how many audit slices the cache could not use, and how the audited patients split by truth and by the
model's call. Every count comes from a file the run wrote (``data/summary.json``, ``data/cohort/cohort.csv``,
``data/cache/``), so the numbers add up to the cohort and a lost slice shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from brain_audit.run_layout import RunPaths

__all__ = ["audit_flow", "flow_stages"]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def audit_flow(paths: RunPaths, audited: pd.DataFrame, patients: pd.DataFrame,
               generated: dict[str, int] | None = None) -> dict[str, Any]:
    """The counts of the audit's flow diagram.

    Args:
        paths: the run folder.
        audited: one row per audited slice (``image_id``, ``patient_id``).
        patients: one row per audited patient (``label_any`` 0/1, ``called_bleed`` bool).
        generated: ``{"images", "patients"}`` the source generated, when known (a phantom's manifest).

    Returns:
        JSON-ready dict: ``source`` (labelled images, refused label rows, unreadable files by reason, labelled
        without a file), ``splits`` (patients and slices per split), ``audit`` (cohort slices, skipped by the
        cache with reasons, audited slices and patients, patients by truth and call), ``adds_up`` (the audit
        cohort's slices = audited + skipped).
    """
    data = _read_json(paths.data_summary)
    cohort_csv = paths.cohort / "cohort.csv"
    cohort = pd.read_csv(cohort_csv, dtype={"image_id": str, "patient_id": str}) if cohort_csv.is_file() else None
    splits: dict[str, dict[str, int]] = {}
    audit_ids: set[str] = set()
    if cohort is not None:
        for split, g in cohort.groupby("split"):
            splits[str(split)] = {"patients": int(g["patient_id"].nunique()), "slices": int(len(g))}
        audit_ids = set(cohort.loc[cohort["split"] == "audit", "image_id"])
    skipped_csv = paths.cache / "skipped.csv"
    skipped = pd.read_csv(skipped_csv, dtype=str, keep_default_na=False) if skipped_csv.is_file() else pd.DataFrame(
        columns=["image_id", "reason"])
    audit_skipped = skipped[skipped["image_id"].isin(audit_ids)]
    audited_ids = set(audited["image_id"])
    lost = sorted(audit_ids - audited_ids - set(audit_skipped["image_id"]))
    y = patients["label_any"].astype(int)
    called = patients["called_bleed"].astype(bool)
    labels, index, join = data.get("labels", {}), data.get("index", {}), data.get("join", {})
    return {
        "generated": generated,
        "source": {
            "labelled_images": labels.get("images"),
            "label_rows_refused": labels.get("rows_refused", 0),
            "unreadable_files": index.get("skipped", 0),
            "unreadable_by_reason": index.get("skipped_by_reason", {}),
            "labelled_without_file": join.get("labelled_without_file", 0),
            "indexed_without_labels": join.get("indexed_without_labels", 0),
            "indexed_images": index.get("indexed"),
        },
        "splits": splits,
        "audit": {
            "cohort_slices": len(audit_ids) if cohort is not None else None,
            "skipped_by_cache": int(len(audit_skipped)),
            "skipped_by_reason": audit_skipped["reason"].value_counts().to_dict() if len(audit_skipped) else {},
            "not_audited_without_reason": lost,
            "audited_slices": int(len(audited)),
            "audited_patients": int(len(patients)),
            "bleed_patients": int(y.sum()),
            "no_bleed_patients": int((1 - y).sum()),
            "true_positive": int((called & (y == 1)).sum()),
            "false_negative": int((~called & (y == 1)).sum()),
            "false_positive": int((called & (y == 0)).sum()),
            "true_negative": int((~called & (y == 0)).sum()),
        },
        "adds_up": cohort is None or len(audit_ids) == len(audited_ids & audit_ids) + len(audit_skipped),
    }


def _reasons(by_reason: dict[str, int], limit: int = 3) -> str:
    items = sorted(by_reason.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{n} x {reason[:70]}" for reason, n in items[:limit])
    return text + (f"; {len(items) - limit} other reasons" if len(items) > limit else "")


def flow_stages(flow: dict[str, Any]) -> list[dict[str, Any]]:
    """The flow as boxes for :func:`brain_audit.audit.plots.plot_flow`: ``{"text", "excluded", "split"}`` each."""
    src, splits, audit = flow["source"], flow["splits"], flow["audit"]
    stages: list[dict[str, Any]] = []
    if flow.get("generated"):
        g = flow["generated"]
        stages.append({"text": f"Generated (synthetic phantom): {g['images']} images of {g['patients']} patients",
                       "excluded": None})
    unreadable = src.get("unreadable_files") or 0
    without = src.get("labelled_without_file") or 0
    stages.append({
        "text": f"Labelled images: {src.get('labelled_images')}",
        "excluded": (f"Excluded: {unreadable} unreadable files ({_reasons(src.get('unreadable_by_reason', {}))})"
                     + (f"; {without} labelled without a readable file" if without != unreadable else ""))
        if unreadable or without else None,
    })
    held = {k: v for k, v in splits.items() if k != "audit"}
    held_text = ", ".join(f"{k} {v['patients']} patients / {v['slices']} slices" for k, v in sorted(held.items()))
    total = sum(v["patients"] for v in splits.values())
    stages.append({"text": f"Indexed images: {src.get('indexed_images')}, {total} patients split by patient",
                   "excluded": f"Never audited: {held_text}" if held else None})
    a = splits.get("audit", {})
    skipped = audit["skipped_by_cache"]
    stages.append({"text": f"Audit cohort (chosen first): {a.get('patients', audit['audited_patients'])} patients, "
                           f"{a.get('slices', audit['cohort_slices'])} slices",
                   "excluded": f"Not scored: {skipped} slices the cache could not use "
                               f"({_reasons(audit['skipped_by_reason'])})" if skipped else None})
    stages.append({
        "text": f"Audited: {audit['audited_patients']} patients, {audit['audited_slices']} slices",
        "excluded": None,
        "split": [f"Bleed: {audit['bleed_patients']} patients\ncalled bleed {audit['true_positive']}, "
                  f"missed {audit['false_negative']}",
                  f"No bleed: {audit['no_bleed_patients']} patients\nfalse alarm {audit['false_positive']}, "
                  f"cleared {audit['true_negative']}"],
    })
    return stages
