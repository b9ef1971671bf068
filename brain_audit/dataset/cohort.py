"""Patient-level splits and nested, stratified phase cohorts.

What "patient" means here: a distinct ``patient_id`` of the header index, the pseudonym
of (0010,0020) Patient ID (RSNA's own ``ID_<hex>``, or ``PID_<16 hex>`` for another
dataset: :func:`brain_audit.ids.pseudonym`); no table here ever holds the header's value.
One patient may have several studies and series; every
slice of a patient always lands in the same split, so no patient crosses
train / validation / audit / pretrain. Counts are therefore of two kinds, and every
function says which:

* ``n_audit``, ``n_pretrain`` and ``unit="patient"`` cohort sizes count **patients**;
* ``unit="slice"`` cohort sizes count **slices** (images, one DICOM file each).

:data:`DEFAULT_PHASE_COHORTS` reads Phase 1 as the run configuration states it
(:mod:`brain_audit.config`: 1,600 patients, ``unit="patient"``); drawn inside Phase 2's
20,000-slice cohort, a Phase-1 patient brings only the slices Phase 2 holds, not its whole
study. ``CohortSpec("phase1", 1600, unit="slice")`` gives 1,600 slices instead (what the
seed notebook's sampling of label rows actually does).

Order of choice (each step only sees what the previous left):

1. **audit**: ``n_audit`` patients, stratified, chosen first from the seed alone; they
   never enter a training, validation or pretraining cohort of any phase.
2. **pretrain** (optional): ``n_pretrain`` patients held out for domain pretraining of the
   backbone, disjoint from audit and from every phase's train / validation.
3. **validation** / **train**: the rest, split by patient (``validation`` fraction).
4. Phase cohorts are drawn from train + validation patients; each cohort in the list is
   drawn inside the one before it (Phase 1's inside Phase 2's), so list the largest first.

Stratification: a patient's stratum is the rarest subtype on any of its slices (or
"negative"), a slice's the rarest subtype on it; allocations are proportional with at
least one per (split, stratum) cell when the cell is not empty, so rare subtypes
(epidural: about 0.4 % of RSNA slices) appear in every split. Randomness comes only
from a keyed BLAKE2 hash of (seed, ID): the same seed gives the same choice on any
machine, and an image's rank does not depend on what else is in the pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from brain_audit.errors import CacheError, ConfigError
from brain_audit.ids import ID_RULE, is_safe_id
from brain_audit.provenance import run_record, write_csv, write_json
from brain_audit.rsna import LABEL_COLUMNS, SUBTYPES

__all__ = [
    "SPLITS",
    "CohortSpec",
    "DEFAULT_PHASE_COHORTS",
    "join_images",
    "split_patients",
    "build_cohort",
    "plan_cohorts",
    "add_whole_patients",
    "write_cohorts",
    "read_cohort",
]

#: The four patient-level splits.
SPLITS: tuple[str, ...] = ("audit", "pretrain", "train", "validation")

_IMAGE_COLUMNS = ["patient_id", "study_id", "series_id", "z"]


@dataclasses.dataclass(frozen=True)
class CohortSpec:
    """One phase cohort.

    Attributes:
        name: column suffix in the cohort table (``in_<name>``), e.g. ``"phase2"``.
        n: size, in slices (``unit="slice"``) or patients (``unit="patient"``); > 0.
        balance: wanted fraction of positive (``any = 1``) slices, or of patients with at
            least one positive slice for ``unit="patient"``; ``None`` keeps the pool's own.
        unit: ``"slice"`` or ``"patient"`` (then all the patient's slices in the pool).
    """

    name: str
    n: int
    balance: float | None = 0.5
    unit: Literal["slice", "patient"] = "slice"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"`name` must be a non-empty identifier. Got {self.name!r} instead.")
        if self.n <= 0:
            raise ValueError(f"`n` must be > 0. Got {self.n} instead.")
        if self.balance is not None and not 0.0 <= self.balance <= 1.0:
            raise ValueError(f"`balance` must be in [0, 1] or None. Got {self.balance} instead.")
        if self.unit not in ("slice", "patient"):
            raise ValueError(f"`unit` must be 'slice' or 'patient'. Got {self.unit!r} instead.")


#: The seed's phases as :mod:`brain_audit.config` reads them: Phase 2 a balanced 20,000
#: slices; Phase 1 1,600 patients drawn inside it (each with its slices in Phase 2's cohort).
DEFAULT_PHASE_COHORTS: tuple[CohortSpec, ...] = (
    CohortSpec("phase2", 20_000, balance=0.5, unit="slice"),
    CohortSpec("phase1", 1_600, balance=None, unit="patient"),
)


def _keys(ids: Sequence[str], seed: int, salt: str) -> np.ndarray:
    """uint64 rank of each ID: keyed BLAKE2b of (seed, salt, ID); stable across machines."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Got {seed!r} instead.")
    key = f"{int(seed)}:{salt}".encode()[:64]
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def _allocate(sizes: np.ndarray, n: int, min_one: np.ndarray) -> np.ndarray:
    """Integer quotas per cell summing to min(n, sizes.sum()), proportional to ``sizes``
    (largest remainder), with at least one for every non-empty cell flagged in ``min_one``
    while ``n`` allows (smallest cells first)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(min(n, sizes.sum()))
    q = np.zeros_like(sizes)
    want_one = np.flatnonzero(np.asarray(min_one, bool) & (sizes > 0))
    for i in want_one[np.argsort(sizes[want_one], kind="stable")][:n]:
        q[i] = 1
    rest = n - int(q.sum())
    avail = sizes - q
    if rest > 0 and avail.sum() > 0:
        ideal = rest * avail / avail.sum()
        add = np.minimum(np.floor(ideal).astype(np.int64), avail)
        q += add
        left = rest - int(add.sum())
        frac = ideal - add
        for i in np.argsort(-frac, kind="stable"):
            if left <= 0:
                break
            if q[i] < sizes[i]:
                q[i] += 1
                left -= 1
    return q


def _rarity_order(flags: pd.DataFrame) -> list[str]:
    """Subtypes from rarest to most common by number of positive rows of ``flags``."""
    counts = flags[list(SUBTYPES)].sum()
    return sorted(SUBTYPES, key=lambda s: (counts[s], SUBTYPES.index(s)))


def _stratum(flags: pd.DataFrame, order: list[str]) -> np.ndarray:
    """Rarest positive subtype of each row (``order`` rarest first), ``"negative"`` if none."""
    out = np.full(len(flags), "negative", dtype=object)
    for s in reversed(order):  # the rarest written last wins
        out[flags[s].to_numpy() > 0] = s
    any_only = (flags["any"].to_numpy() > 0) & (out == "negative")
    out[any_only] = "any"  # positive without a subtype (inconsistent file): its own stratum
    return out


def join_images(labels: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Images that have both labels and a readable header.

    Args:
        labels: from :func:`brain_audit.dataset.labels.read_labels` (indexed by image ID).
        index: from :func:`brain_audit.dataset.index.build_index` / ``read_index``.

    Returns:
        DataFrame indexed by image ID (sorted): patient_id, study_id, series_id, z (mm),
        then the six int8 label columns. Labelled images without a header (skipped files)
        and headers without labels are left out, each with a RuntimeWarning giving the count.
    """
    missing_cols = [c for c in _IMAGE_COLUMNS if c not in index.columns]
    if missing_cols:
        raise ValueError(f"`index` must have columns {_IMAGE_COLUMNS}. Missing {missing_cols} instead.")
    common = labels.index.intersection(index.index)
    n_unindexed = len(labels) - len(common)
    if n_unindexed:
        warnings.warn(f"{n_unindexed} labelled image(s) have no header in the index (skipped or not indexed); "
                      "left out", RuntimeWarning, stacklevel=2)
    n_unlabelled = len(index) - len(common)
    if n_unlabelled and len(labels):
        warnings.warn(f"{n_unlabelled} indexed image(s) have no labels; left out", RuntimeWarning, stacklevel=2)
    out = index.loc[common, _IMAGE_COLUMNS].join(labels.loc[common, list(LABEL_COLUMNS)])
    out.index.name = "image_id"
    return out.sort_index()


def split_patients(
    images: pd.DataFrame,
    *,
    n_audit: int = 200,
    n_pretrain: int = 0,
    validation: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Assign every patient to audit, pretrain, train or validation.

    Args:
        images: from :func:`join_images` (needs ``patient_id`` and the label columns).
        n_audit: audit **patients**, chosen first (>= 0).
        n_pretrain: **patients** held out for domain pretraining, chosen second (>= 0).
        validation: fraction of the remaining **patients** for validation, in [0, 1).
        seed: the only source of randomness.

    Returns:
        DataFrame indexed by patient_id (sorted): ``split`` (one of :data:`SPLITS`),
        ``stratum`` (rarest subtype of the patient or "negative"), ``n_slices`` and
        ``n_positive`` (slices with ``any = 1``). A subtype present in the data but absent
        from a split warns (RuntimeWarning): too few patients have it.
    """
    for name, v in (("n_audit", n_audit), ("n_pretrain", n_pretrain), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"`{name}` must be an integer >= 0. Got {v!r} instead.")
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real) or not 0.0 <= validation < 1.0:
        raise ConfigError(f"`validation` must be in [0, 1). Got {validation!r} instead.")
    flags = images.groupby("patient_id", sort=True)[list(LABEL_COLUMNS)].max()
    n_pat = len(flags)
    if n_pat == 0:
        raise ConfigError("the data holds no patient to split (a label file without data rows, "
                          "or no labelled image in the header index)")
    if n_audit + n_pretrain >= n_pat:
        # Named by the run configuration's keys (`n_audit` is its audit_patients): what the user sets.
        most = n_pat - 1 - n_pretrain
        if most >= 0:
            fix = (f"set audit_patients to at most {most} "
                   f"(`--set audit_patients={most}`, or `--n-audit {most}` for `brain-audit cohort`)")
        else:
            fix = f"set audit_patients + pretrain.patients to at most {n_pat - 1}"
        raise ConfigError(
            f"`audit_patients` + `pretrain.patients` must be < the number of patients in the data ({n_pat}), leaving "
            f"some to train on. Got {n_audit} + {n_pretrain} instead; {fix}."
        )
    table = pd.DataFrame(index=flags.index)
    table["stratum"] = _stratum(flags, _rarity_order(flags))
    table["n_slices"] = images.groupby("patient_id").size().reindex(table.index).astype("int64")
    table["n_positive"] = images.groupby("patient_id")["any"].sum().reindex(table.index).astype("int64")
    table["split"] = ""
    keys = pd.Series(_keys(table.index, seed, "split"), index=table.index)

    def take(n: int, split: str, min_cells: int) -> None:
        free = table[table["split"] == ""]
        counts = free.groupby("stratum").size()
        quotas = _allocate(counts.to_numpy(), n, (counts.index != "negative") & (counts.to_numpy() >= min_cells))
        for stratum, q in zip(counts.index, quotas):
            members = free.index[free["stratum"] == stratum]
            chosen = keys.loc[members].sort_values(kind="stable").index[:q]
            table.loc[chosen, "split"] = split

    take(n_audit, "audit", 3)
    take(n_pretrain, "pretrain", 3)
    n_rest = int((table["split"] == "").sum())
    take(int(round(validation * n_rest)), "validation", 2)
    table.loc[table["split"] == "", "split"] = "train"
    used = [s for s in SPLITS if s != "pretrain" and (table["split"] == s).any()]
    _warn_missing_subtypes(flags, table["split"], used)
    return table[["split", "stratum", "n_slices", "n_positive"]]


def _warn_missing_subtypes(flags: pd.DataFrame, split: pd.Series, splits: list[str]) -> None:
    present = [s for s in SUBTYPES if flags[s].any()]
    gaps = []
    for sp in splits:
        f = flags[split.reindex(flags.index).to_numpy() == sp]
        gaps += [f"{s} in {sp}" for s in present if not f[s].any()]
    if gaps:
        warnings.warn(f"no positive case of {', '.join(gaps)} (too few patients carry it)", RuntimeWarning,
                      stacklevel=3)


def build_cohort(
    images: pd.DataFrame,
    split: pd.Series | pd.DataFrame,
    n: int,
    *,
    balance: float | None = 0.5,
    unit: Literal["slice", "patient"] = "slice",
    seed: int = 0,
    pool: Sequence[str] = ("train", "validation"),
    within: Sequence[str] | pd.Index | None = None,
) -> pd.DataFrame:
    """Draw one stratified cohort from the patients of ``pool``.

    Args:
        images: from :func:`join_images`.
        split: the ``split`` column of :func:`split_patients` (or the whole table).
        n: cohort size: **slices** for ``unit="slice"``, **patients** for ``unit="patient"``.
        balance: fraction of positive (``any = 1``) slices (or patients with a positive slice);
            ``None`` keeps the pool's. Short of positives or negatives, the cohort takes all
            there are and warns.
        unit: ``"slice"`` samples slices; ``"patient"`` samples patients and keeps all their
            slices that are in the pool.
        seed: the only source of randomness (the same ``seed`` and a pool holding the
            cohort give the same cohort).
        pool: splits to draw from; never ``"audit"`` together with a training split.
        within: image IDs the cohort must stay inside (nesting: Phase 1 inside Phase 2).

    Returns:
        The rows of ``images`` chosen (indexed by image ID, sorted) with a ``split`` column.
    """
    spec = CohortSpec("cohort", n, balance, unit)  # validates n, balance, unit
    if isinstance(split, pd.DataFrame):
        split = split["split"]
    bad = [p for p in pool if p not in SPLITS]
    if bad or not pool:
        raise ValueError(f"`pool` must be a non-empty subset of {SPLITS}. Got {tuple(pool)!r} instead.")
    if "audit" in pool and any(p != "audit" for p in pool):
        raise ValueError(f"`pool` must not mix 'audit' with other splits. Got {tuple(pool)!r} instead.")
    table = images.copy()
    table["split"] = split.reindex(table["patient_id"]).to_numpy()
    table = table[table["split"].isin(list(pool))]
    if within is not None:
        table = table[table.index.isin(pd.Index(within))]
    if not len(table):
        raise ValueError(f"the pool {tuple(pool)} holds no image; cannot draw a cohort of {n}")

    if spec.unit == "slice":
        units = table
        flags = table[list(LABEL_COLUMNS)]
        ids = table.index
    else:
        flags = table.groupby("patient_id", sort=True)[list(LABEL_COLUMNS)].max()
        units = pd.DataFrame({"split": table.groupby("patient_id", sort=True)["split"].first()})
        ids = flags.index
    stratum = _stratum(flags, _rarity_order(flags))
    keys = _keys(ids, seed, f"cohort-{spec.unit}")
    positive = flags["any"].to_numpy() > 0
    cell = pd.Series(list(zip(units["split"].to_numpy(), stratum)), index=ids)
    frame = pd.DataFrame({"cell": cell.to_numpy(), "key": keys, "pos": positive}, index=ids)

    n_avail = len(frame)
    n_take = min(n, n_avail)
    if n > n_avail:
        warnings.warn(f"the pool holds {n_avail} {spec.unit}s; cohort has {n_avail} instead of {n}",
                      RuntimeWarning, stacklevel=2)
    if balance is None:
        groups = [(frame, n_take)]
    else:
        n_pos_avail, n_neg_avail = int(positive.sum()), int((~positive).sum())
        n_pos = int(round(n_take * balance))
        n_neg = n_take - n_pos
        if n_pos > n_pos_avail or n_neg > n_neg_avail:
            warnings.warn(
                f"balance {balance} asks {n_pos} positive and {n_neg} negative {spec.unit}s; the pool has "
                f"{n_pos_avail} and {n_neg_avail}; taking what there is",
                RuntimeWarning, stacklevel=2,
            )
        groups = [(frame[frame["pos"]], min(n_pos, n_pos_avail)), (frame[~frame["pos"]], min(n_neg, n_neg_avail))]

    chosen: list[pd.Index] = []
    for sub, q_total in groups:
        if q_total <= 0 or not len(sub):
            continue
        cells = sub.groupby("cell", sort=True).size()
        is_pos_cell = np.array([c[1] != "negative" for c in cells.index])
        quotas = _allocate(cells.to_numpy(), q_total, is_pos_cell)
        for c, q in zip(cells.index, quotas):
            members = sub[sub["cell"] == c]
            chosen.append(members.sort_values("key", kind="stable").index[:q])
    picked = chosen[0].append(chosen[1:]) if chosen else pd.Index([])
    if spec.unit == "slice":
        out = table.loc[table.index.isin(picked)]
    else:
        out = table[table["patient_id"].isin(picked)]
    return out.sort_index()


def plan_cohorts(
    images: pd.DataFrame,
    specs: Sequence[CohortSpec] = DEFAULT_PHASE_COHORTS,
    *,
    n_audit: int = 200,
    n_pretrain: int = 0,
    validation: float = 0.1,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits and nested phase cohorts in one table: what the HU cache and the feed read.

    Args:
        images: from :func:`join_images`.
        specs: phase cohorts, each drawn inside the one before it (largest first).
        n_audit, n_pretrain, validation, seed: see :func:`split_patients`.

    Returns:
        ``(cohort, patients)``. ``cohort`` is indexed by image ID (sorted) with
        patient_id, study_id, series_id, z, ``split``, the six labels and a bool column
        ``in_<name>`` per spec; it holds every image of the first (largest) cohort, every
        slice of the audit patients (``split="audit"``) and every slice of the pretrain
        patients (``split="pretrain"``). ``patients`` is :func:`split_patients`' table.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"`specs` names must be unique. Got {names} instead.")
    patients = split_patients(images, n_audit=n_audit, n_pretrain=n_pretrain, validation=validation, seed=seed)
    split = patients["split"]
    cohorts: list[pd.DataFrame] = []
    within = None
    for spec in specs:
        c = build_cohort(images, split, spec.n, balance=spec.balance, unit=spec.unit, seed=seed, within=within)
        cohorts.append(c)
        within = c.index
    table = images.copy()
    table["split"] = split.reindex(table["patient_id"]).to_numpy()
    keep = table["split"].isin(["audit", "pretrain"])
    if cohorts:
        keep |= table.index.isin(cohorts[0].index)
    out = table[keep].copy()
    for spec, c in zip(specs, cohorts):
        out[f"in_{spec.name}"] = out.index.isin(c.index)
    cols = [*_IMAGE_COLUMNS, "split", *LABEL_COLUMNS, *[f"in_{s.name}" for s in specs]]
    return out[cols].sort_index(), patients


def add_whole_patients(
    cohort: pd.DataFrame,
    images: pd.DataFrame,
    patients: pd.DataFrame,
    *,
    n_train: int,
    n_validation: int,
    seed: int = 0,
) -> pd.DataFrame:
    """``cohort`` with every slice of ``n_train`` train and ``n_validation`` validation patients added.

    For a study-level model (Phase 5), which needs whole series: the patients are drawn stratified
    (:func:`build_cohort` with ``unit="patient"``, ``balance=None``) from their own split of
    :func:`split_patients`, never from the audit or pretraining patients. Rows the cohort holds already are
    kept as they are; added rows are in no phase cohort (every ``in_<name>`` False). ``0`` adds none from that
    split; more than the split holds takes all of it.

    Returns:
        The cohort table with the added rows, indexed by image ID (sorted), same columns.
    """
    split = patients["split"]
    added = []
    for name, n in (("train", n_train), ("validation", n_validation)):
        n = min(int(n), int((split == name).sum()))
        if n > 0:
            added.append(build_cohort(images, split, n, balance=None, unit="patient", seed=seed, pool=(name,)))
    if not added:
        return cohort
    extra = pd.concat(added)
    extra = extra.loc[~extra.index.isin(cohort.index)].copy()
    for col in [c for c in cohort.columns if c.startswith("in_")]:
        extra[col] = False
    return pd.concat([cohort, extra[cohort.columns]]).sort_index()


def write_cohorts(
    out_dir: str | Path,
    cohort: pd.DataFrame,
    patients: pd.DataFrame,
    *,
    config: dict | None = None,
    seed: int | None = None,
) -> Path:
    """Write ``cohort.csv`` (every image with its split), ``patients.csv`` and ``cohort.json``.

    ``cohort.json`` holds the run record (config, seed, versions) and counts of images,
    patients and positives per split and per cohort. Returns the path of ``cohort.csv``.
    """
    out_dir = Path(out_dir)
    frame = cohort.reset_index()
    path = write_csv(out_dir / "cohort.csv", frame)
    write_csv(out_dir / "patients.csv", patients.reset_index())
    counts: dict[str, dict] = {}
    for sp, g in cohort.groupby("split"):
        counts[f"split:{sp}"] = _counts(g)
    for col in [c for c in cohort.columns if c.startswith("in_")]:
        g = cohort[cohort[col]]
        counts[col[3:]] = _counts(g) | {f"split:{sp}": len(h) for sp, h in g.groupby("split")}
    write_json(out_dir / "cohort.json", run_record(config=config, seeds={"cohort": seed} if seed is not None else {},
                                                   counts=counts))
    return path


def _counts(g: pd.DataFrame) -> dict:
    return {
        "images": len(g),
        "patients": int(g["patient_id"].nunique()),
        "positive_images": {c: int(g[c].sum()) for c in LABEL_COLUMNS},
    }


def read_cohort(path: str | Path) -> pd.DataFrame:
    """A ``cohort.csv`` back as written (indexed by image ID, labels int8, ``in_*`` bool).

    Raises:
        CacheError: no such table, a column missing, or an ``image_id`` / ``patient_id``
            that breaks the ID rule of :mod:`brain_audit.ids` (a hand-edited table: the
            message names the line), since later stages build file names from both.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "cohort.csv"
    if not path.exists():
        raise CacheError(f"{path}: no cohort table here; run plan_cohorts / `brain-audit cohort` first")
    frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "study_id": str, "series_id": str,
                                     "split": str, **{c: "int8" for c in LABEL_COLUMNS}})
    missing = [c for c in ["image_id", *_IMAGE_COLUMNS, "split", *LABEL_COLUMNS] if c not in frame.columns]
    if missing:
        raise CacheError(f"{path.name}: columns {missing} missing; not a cohort table")
    for col in ("image_id", "patient_id"):
        bad = np.flatnonzero(~frame[col].map(is_safe_id).to_numpy(bool))
        if bad.size:
            raise CacheError(f"{path.name}: line {bad[0] + 2}: `{col}` must be {ID_RULE}. "
                             f"Got {frame[col].iloc[bad[0]]!r} instead.")
    for c in frame.columns:
        if c.startswith("in_"):
            frame[c] = frame[c].astype(bool)
    return frame.set_index("image_id")
