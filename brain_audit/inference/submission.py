"""The Kaggle submission of the RSNA 2019 challenge: ``ID,Label`` with six rows per image.

Each row is ``ID_<image>_<label>,<probability>`` for the six labels of
:data:`brain_audit.rsna.LABEL_COLUMNS`. With the challenge's sample submission
(``ROOT/stage_2_sample_submission.csv``) the file has exactly its rows, in its order: an image of the
sample that was not scored (unreadable, or no file) gets a stated fallback, the mean probability of
the scored slices for each label; scored images that the sample does not list are left out and counted.

References:
    RSNA Intracranial Hemorrhage Detection, Kaggle 2019: evaluation (weighted multi-label log loss)
    and submission format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from brain_audit.errors import ConfigError
from brain_audit.provenance import atomic_write_text
from brain_audit.rsna import LABEL_COLUMNS, SAMPLE_SUBMISSION, TEST_DIR

__all__ = ["TEST_DIR", "SAMPLE_SUBMISSION", "FALLBACK", "write_submission"]

#: What an image of the sample that was not scored gets, in words (summary.json states it).
FALLBACK = "mean probability of the scored slices, per label"


def _sample_rows(path: Path) -> pd.DataFrame:
    """The sample's rows as (ID, image_id, label); refuses a file that is not ``ID,Label`` with the six labels."""
    try:
        sample = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"{path}: cannot read the sample submission ({exc})") from exc
    if "ID" not in sample.columns:
        raise ConfigError(f"{path}: the sample submission must have a column 'ID'. Got columns "
                          f"{list(sample.columns)} instead.")
    parts = sample["ID"].str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2:
        raise ConfigError(f"{path}: sample IDs must read ID_<image>_<label>. Got {sample['ID'].iloc[0]!r} instead.")
    bad = ~parts[1].isin(LABEL_COLUMNS) | parts[0].isna()
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2
        raise ConfigError(f"{path}: line {line}: `ID` must end in one of {list(LABEL_COLUMNS)}. "
                          f"Got {sample['ID'][bad].iloc[0]!r} instead.")
    return pd.DataFrame({"ID": sample["ID"], "image_id": parts[0], "label": parts[1]})


def write_submission(probabilities: pd.DataFrame, path: str | Path, sample: str | Path | None = None
                     ) -> dict[str, Any]:
    """Write ``submission.csv`` (header ``ID,Label``) from per-image probabilities of the six labels.

    Args:
        probabilities: one row per scored image, indexed by image ID (``ID_<hex>``), with a float column
            per label of :data:`~brain_audit.rsna.LABEL_COLUMNS`, probabilities in [0, 1].
        path: the file to write (atomically).
        sample: the challenge's sample submission; its rows, in its order, are the rows written. ``None``:
            six rows per scored image, images sorted by ID, labels in ``LABEL_COLUMNS`` order.

    Returns:
        ``{"path", "rows", "images", "sample", "filled", "filled_images", "fallback",
        "fallback_values", "scored_not_in_sample"}``: ``filled`` images of the sample had no score and got
        ``fallback_values`` (per label); ``scored_not_in_sample`` scored images are not in the file.

    Raises:
        ConfigError: no image was scored, a label column is missing, or the sample is not ``ID,Label``
            with IDs ending in a label (the message names the file and line).
    """
    missing = [c for c in LABEL_COLUMNS if c not in probabilities.columns]
    if missing:
        raise ConfigError(f"`probabilities` must have a column per label {list(LABEL_COLUMNS)}. Missing {missing}.")
    if not len(probabilities):
        raise ConfigError("a submission needs at least one scored image. Got none.")
    probs = probabilities[list(LABEL_COLUMNS)].astype("float64")
    fallback = {c: float(probs[c].mean()) for c in LABEL_COLUMNS}
    if sample is None:
        long = probs.sort_index().stack()
        rows = pd.DataFrame({"ID": [f"{i}_{c}" for i, c in long.index], "Label": long.to_numpy()})
        filled_images: list[str] = []
        not_in_sample = 0
    else:
        wanted = _sample_rows(Path(sample))
        stacked = probs.stack()
        stacked.index = [f"{i}_{c}" for i, c in stacked.index]
        values = wanted["ID"].map(stacked)
        absent = values.isna()
        values[absent] = wanted.loc[absent, "label"].map(fallback)
        rows = pd.DataFrame({"ID": wanted["ID"], "Label": values.astype("float64")})
        filled_images = sorted(set(wanted.loc[absent, "image_id"]))
        not_in_sample = int((~probs.index.isin(set(wanted["image_id"]))).sum())
    atomic_write_text(path, rows.to_csv(index=False, lineterminator="\n"))
    return {"path": str(path), "rows": int(len(rows)), "images": int(rows["ID"].str.rsplit("_", n=1).str[0].nunique()),
            "sample": None if sample is None else str(sample), "filled": len(filled_images),
            "filled_images": filled_images, "fallback": FALLBACK, "fallback_values": fallback,
            "scored_not_in_sample": not_in_sample}
