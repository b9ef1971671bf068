"""truth"""

from __future__ import annotations

import functools
import io
import json
import os
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brain_audit import rsna
from brain_audit.errors import BrainAuditError
from brain_audit.phantom.anatomy import MIMICS, TRUTH_EXTRA

__all__ = ['TRUTH_DIR', 'MANIFEST', 'TRUTH_KEYS', 'load_manifest', 'load_truth']


TRUTH_DIR = "phantom_truth"


MANIFEST = "phantom_manifest.json"


#: Keys of every truth file, in file order.
TRUTH_KEYS: tuple[str, ...] = ("head", "skull", "intracranial") + rsna.SUBTYPES + MIMICS + TRUTH_EXTRA


def _npz_bytes(masks: Mapping[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz`` (zip of ``.npy``, raw deflate level 1, fixed timestamps) of bool masks.

    ``numpy.savez_compressed`` stamps the current time into the zip, so its bytes change run to
    run; this writer gives byte-identical files and reuses the compressed form of an empty mask.
    """
    local, central = io.BytesIO(), io.BytesIO()
    for key in TRUTH_KEYS:
        crc, size, data = _compressed_npy(np.ascontiguousarray(masks[key], dtype=bool))
        name = f"{key}.npy".encode()
        offset = local.tell()
        # local file header: version 20, no flags, deflate, time 00:00 date 1980-01-01
        local.write(b"PK\x03\x04" + (20).to_bytes(2, "little") + b"\x00\x00" + (8).to_bytes(2, "little")
                    + b"\x00\x00" + (33).to_bytes(2, "little") + crc.to_bytes(4, "little")
                    + len(data).to_bytes(4, "little") + size.to_bytes(4, "little")
                    + len(name).to_bytes(2, "little") + b"\x00\x00" + name)
        local.write(data)
        central.write(b"PK\x01\x02" + (20).to_bytes(2, "little") + (20).to_bytes(2, "little") + b"\x00\x00"
                      + (8).to_bytes(2, "little") + b"\x00\x00" + (33).to_bytes(2, "little")
                      + crc.to_bytes(4, "little") + len(data).to_bytes(4, "little") + size.to_bytes(4, "little")
                      + len(name).to_bytes(2, "little") + b"\x00\x00" * 3 + b"\x00\x00\x00\x00\x00\x00"
                      + offset.to_bytes(4, "little") + name)
    cd = central.getvalue()
    n = len(TRUTH_KEYS)
    end = (b"PK\x05\x06" + b"\x00\x00\x00\x00" + n.to_bytes(2, "little") + n.to_bytes(2, "little")
           + len(cd).to_bytes(4, "little") + local.tell().to_bytes(4, "little") + b"\x00\x00")
    return local.getvalue() + cd + end


@functools.lru_cache(maxsize=8)
def _empty_npy(shape: tuple[int, int]) -> tuple[int, int, bytes]:
    return _deflate_npy(np.zeros(shape, bool))


def _compressed_npy(arr: np.ndarray) -> tuple[int, int, bytes]:
    if not arr.any():
        return _empty_npy(arr.shape)
    return _deflate_npy(arr)


def _deflate_npy(arr: np.ndarray) -> tuple[int, int, bytes]:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(1, 0), allow_pickle=False)
    raw = buf.getvalue()
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    data = comp.compress(raw) + comp.flush()
    return zlib.crc32(raw), len(raw), data


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed ``phantom_manifest.json`` of a cohort (cached while the file is unchanged)."""
    path = Path(out_dir) / MANIFEST
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BrainAuditError(f"{path}: no phantom manifest ({exc.strerror}); is this a phantom cohort?") from exc
    return _load_manifest(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_manifest(path: str, _mtime: int, _size: int) -> dict[str, Any]:
    manifest = json.loads(Path(path).read_text())
    manifest["_by_id"] = {rec["image_id"]: rec for rec in manifest["images"]}
    return manifest


def load_truth(out_dir: str | Path, image_id: str) -> dict[str, np.ndarray]:
    """Ground-truth masks of one image: bool (H, W) per key of :data:`TRUTH_KEYS`.

    Raises:
        BrainAuditError: the truth file is missing (e.g. a corrupt file, which has none).
    """
    path = Path(out_dir) / TRUTH_DIR / f"{image_id}.npz"
    if not path.is_file():
        raise BrainAuditError(f"{path.name}: no phantom truth for {image_id} in {path.parent}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}

