"""A hand-built HU cache for the 2.5-D tests: two series whose z interleave (B's 3 and 4 mm lie between A's 0 and
5 mm), z spaced unevenly, image IDs whose alphabetical order is not their z order, table rows and shard rows in
shuffled orders; every slice filled with its own HU value (:data:`CODE`), so a channel tells which slice it holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from brain_audit.dataset.cache import CACHE_FORMAT, HUCache, open_cache
from brain_audit.rsna import LABEL_COLUMNS

#: series -> [(image_id, z)] listed here by z, bottom to top
SERIES = {
    "SER_A": [("ID_m", 0.0), ("ID_c", 5.0), ("ID_x", 7.5), ("ID_a", 20.0), ("ID_k", 21.0)],
    "SER_B": [("ID_z", -10.0), ("ID_b", 3.0), ("ID_n", 4.0)],
}
#: image ID -> the HU value of every pixel of its slice
CODE = {"ID_m": 10, "ID_c": 20, "ID_x": 30, "ID_a": 40, "ID_k": 50, "ID_z": -10, "ID_b": -20, "ID_n": -30}


def hand_built_cache(folder: Path, context: int = 2, side: int = 4) -> HUCache:
    """The cache of :data:`SERIES` in ``folder``, its manifest saying it was built with ``context``."""
    rows = [(i, s, z) for s, members in SERIES.items() for i, z in members]
    order = [5, 2, 7, 0, 3, 6, 1, 4]  # stored (shard row) order: neither z nor ID order
    stored = [rows[k] for k in order]
    (folder / "shards").mkdir(parents=True)
    np.save(folder / "shards" / "train-00000.npy",
            np.stack([np.full((side, side), CODE[i], np.int16) for i, _, _ in stored]))
    table = pd.DataFrame({"image_id": [i for i, _, _ in stored], "shard": "train-00000",
                          "row": np.arange(len(stored), dtype="int32"), "split": "train", "role": "sample",
                          "patient_id": "P", "study_id": "S", "series_id": [s for _, s, _ in stored],
                          "z": [z for _, _, z in stored], **{c: np.int8(0) for c in LABEL_COLUMNS}})
    table = table.sample(frac=1.0, random_state=3)  # the table's rows shuffled too
    table.to_parquet(folder / "images.parquet", index=False)
    pd.DataFrame(columns=["image_id", "file", "reason"]).to_csv(folder / "skipped.csv", index=False)
    manifest = {"config": {"format": CACHE_FORMAT}, "size": side, "context": context,
                "shards": [{"name": "train-00000", "n": len(stored)}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return open_cache(folder)
