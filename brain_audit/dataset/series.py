"""Series as ordered sequences: the slices of one CT series sorted along z, packed into padded arrays.

A study-level model (:mod:`brain_audit.model.sequence`) reads a series as the radiologist scrolls it: slice
after slice in Image Position (Patient) z order (DICOM PS3.3 C.7.6.2.1.1; the header index's ``z``), never in
file or ID order. Ties in z (duplicate positions) are broken by image ID, so the order is the same on any
machine. A series is the pseudonymous ``series_id`` of the index (:mod:`brain_audit.dataset.index`).

:func:`complete_series` says which series a cache holds whole (every indexed slice cached), since a sequence
model trained or judged on a series with holes would see neighbours that are not neighbours.
:func:`pack_series` turns per-slice rows (features and labels) into ``(S, T, D)`` arrays padded at the end with
zeros and a boolean mask; :func:`unpack_series` maps per-position outputs back to the rows.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["SeriesPack", "order_series", "complete_series", "pack_series", "unpack_series"]

_ORDER_COLUMNS = ("series_id", "z")


def order_series(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` sorted by series, then z (ascending), then image ID; with ``position``.

    Args:
        table: indexed by image ID, with columns ``series_id`` and ``z`` (mm, Image Position (Patient) z).

    Returns:
        A copy sorted by (series_id, z, image_id) with two more columns: ``position`` (0-based rank of
        the slice in its series, lowest z first) and ``length`` (slices of its series in ``table``).

    Raises:
        ValueError: a column is missing, or a z is not finite (the order would be undefined).
    """
    missing = [c for c in _ORDER_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"`table` must have columns {list(_ORDER_COLUMNS)}. Got {list(table.columns)} instead.")
    z = pd.to_numeric(table["z"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(z).all():
        bad = table.index[~np.isfinite(z)][0]
        raise ValueError(f"`z` must be finite for every slice. Got {table.loc[bad, 'z']} for {bad} instead.")
    out = table.copy()
    out["_id"] = out.index.astype(str)
    out["z"] = z
    out = out.sort_values(["series_id", "z", "_id"], kind="stable").drop(columns="_id")
    out["position"] = out.groupby("series_id", sort=False).cumcount().astype(np.int64)
    out["length"] = out.groupby("series_id", sort=False)["position"].transform("size").astype(np.int64)
    return out


def complete_series(cached: pd.DataFrame, index: pd.DataFrame) -> pd.Index:
    """Series of which ``cached`` holds every slice the header ``index`` lists.

    Args:
        cached: rows of the cache (or any subset), with ``series_id``.
        index: the header index (:func:`brain_audit.dataset.index.read_index`), with ``series_id``.

    Returns:
        The ``series_id`` values, sorted. A series with a slice the index lists but the cache lacks (not
        drawn into the cohort, or unreadable) is left out.
    """
    have = cached.groupby("series_id").size()
    need = index.groupby("series_id").size().reindex(have.index).fillna(np.inf)
    whole = have.index[have.to_numpy() >= need.to_numpy()]
    return pd.Index(sorted(whole.astype(str)), name="series_id")


@dataclasses.dataclass(frozen=True)
class SeriesPack:
    """Series packed for a sequence model.

    Attributes:
        x: float32 (S, T, D): per-slice features of S series, padded with zeros to the longest (T).
        mask: bool (S, T): True where a real slice is.
        y: float32 (S, T, L) labels (zeros at padding), or None when none were given.
        series: (S,) series IDs, sorted.
        image_ids: object (S, T): the image ID at each real position ("" at padding).
        rows: int64 (S, T): the row of the input table at each position (-1 at padding).
    """

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray | None
    series: np.ndarray
    image_ids: np.ndarray
    rows: np.ndarray


def pack_series(table: pd.DataFrame, features: np.ndarray, labels: Sequence[str] | None = None) -> SeriesPack:
    """Per-slice rows -> padded per-series arrays in z order (:func:`order_series`).

    Args:
        table: indexed by image ID, with ``series_id``, ``z`` and the ``labels`` columns; one row per slice.
        features: float (N, D), row ``i`` the features of ``table``'s row ``i``.
        labels: label columns to pack as ``y`` (e.g. ``["any"]``), or None.

    Returns:
        :class:`SeriesPack`; positions past a series' end are zeros with ``mask`` False.
    """
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or len(f) != len(table):
        raise ValueError(f"`features` must be (N, D) with N = {len(table)} rows of `table`. "
                         f"Got shape {f.shape} instead.")
    ordered = order_series(table.assign(_row=np.arange(len(table))))
    series = ordered["series_id"].astype(str).unique()
    s_of = pd.Index(series).get_indexer(ordered["series_id"].astype(str))
    t_of = ordered["position"].to_numpy()
    n_s, n_t = len(series), int(ordered["length"].max()) if len(ordered) else 0
    x = np.zeros((n_s, n_t, f.shape[1]), dtype=np.float32)
    mask = np.zeros((n_s, n_t), dtype=bool)
    rows = np.full((n_s, n_t), -1, dtype=np.int64)
    ids = np.full((n_s, n_t), "", dtype=object)
    src = ordered["_row"].to_numpy()
    x[s_of, t_of] = f[src]
    mask[s_of, t_of] = True
    rows[s_of, t_of] = src
    ids[s_of, t_of] = ordered.index.astype(str).to_numpy()
    y = None
    if labels is not None:
        lab = ordered[list(labels)].to_numpy(dtype=np.float32)
        y = np.zeros((n_s, n_t, len(labels)), dtype=np.float32)
        y[s_of, t_of] = lab
    return SeriesPack(x=x, mask=mask, y=y, series=series, image_ids=ids, rows=rows)


def unpack_series(values: np.ndarray, pack: SeriesPack) -> np.ndarray:
    """Per-position outputs (S, T, ...) back to the rows of the table :func:`pack_series` was given.

    Returns:
        (N, ...) with row ``i`` the value at the position of input row ``i``.
    """
    v = np.asarray(values)
    if v.shape[:2] != pack.mask.shape:
        raise ValueError(f"`values` must start with the pack's shape {pack.mask.shape}. Got {v.shape} instead.")
    n = int(pack.mask.sum())
    out = np.empty((n, *v.shape[2:]), dtype=v.dtype)
    out[pack.rows[pack.mask]] = v[pack.mask]
    return out
