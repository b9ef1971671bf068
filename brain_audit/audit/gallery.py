"""The report's gallery of errors: every missed-bleed and every false-alarm patient, one picture each.

Each picture is the patient's most suspicious slice (the one its patient score comes from) in the three windows
the model sees, with the audit's attention map (:func:`brain_audit.gradcam.maps.audit_cam`) and the lesion's truth
contour when the data ship masks, so a reader judges each error without opening a viewer. A 2.5-D model's map is
computed from its whole input (the slice and its neighbours) and drawn on the slice itself (the centre channel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from brain_audit.audit.plots import plot_case
from brain_audit.dataset.cache import centre_slice
from brain_audit.gradcam.maps import AUDIT_METHOD, audit_cam
from brain_audit.ids import safe_child
from brain_audit.model.predictions import model_context

__all__ = ["GALLERY_DIR", "error_gallery"]

#: Folder of the gallery inside the report.
GALLERY_DIR = "gallery"

_TITLES = {"false_negative": "missed bleed", "false_positive": "false alarm"}


def error_gallery(model: Any, cache: Any, slices: pd.DataFrame, patients: pd.DataFrame,
                  lesions: Mapping[str, np.ndarray], report_dir: str | Path, *, output_index: int = 0,
                  batch: int = 16) -> list[dict[str, Any]]:
    """Draw ``<report_dir>/gallery/<patient>.png`` for every false-negative and false-positive patient.

    Args:
        model: the audited model.
        cache: the run's HU cache (:class:`brain_audit.dataset.cache.HUCache`).
        slices: the audit's slice table (``image_id``, ``probability``, subtype columns).
        patients: the patient table (``patient_id``, ``outcome``, ``most_suspicious_slice``, ``max_probability``,
            ``subtypes_present``).
        lesions: image ID -> bool (S, S) lesion mask at cache resolution (may be empty).
        report_dir: the report folder.
        output_index: the model output explained.

    Returns:
        One dict per picture: ``patient_id``, ``outcome``, ``image_id``, ``probability``, ``file`` (relative to
        ``report_dir``), ``subtypes_present``; missed bleeds first, then false alarms, each by probability.
    """
    errors = patients[patients["outcome"].isin(list(_TITLES))]
    errors = errors.assign(_o=errors["outcome"].map({"false_negative": 0, "false_positive": 1}))
    errors = errors.sort_values(["_o", "max_probability"], ascending=[True, False])
    if errors.empty:
        return []
    cam = audit_cam(model, output_index)
    context = model_context(model)
    ids = errors["most_suspicious_slice"].astype(str).tolist()
    out = []
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        hu = cache.hu_input(chunk, context)
        maps = cam(hu)
        hu = centre_slice(hu)  # the picture shows the slice itself
        for k, image_id in enumerate(chunk):
            row = errors.iloc[start + k]
            label = slices.loc[slices["image_id"] == image_id]
            slice_bleeds = bool(label["label"].iloc[0]) if len(label) else False
            title = (f"{_TITLES[row['outcome']]}: patient {row['patient_id']}, slice {image_id} "
                     f"(p={row['max_probability']:.3f}, slice {'bleeds' if slice_bleeds else 'has no bleed'})")
            path = safe_child(Path(report_dir) / GALLERY_DIR, str(row["patient_id"]), ".png", what="patient_id")
            plot_case(path, hu[k], cam=maps[k], truth=lesions.get(image_id), title=title)
            out.append({"patient_id": str(row["patient_id"]), "outcome": str(row["outcome"]), "image_id": image_id,
                        "probability": float(row["max_probability"]), "slice_bleeds": slice_bleeds,
                        "subtypes_present": list(row["subtypes_present"]),
                        "file": f"{GALLERY_DIR}/{path.name}", "map": AUDIT_METHOD})
    return out
