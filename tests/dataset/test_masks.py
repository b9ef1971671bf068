"""Tests of brain_audit.dataset.masks: the on-disk mask format, its reader and its writer.

Reference values come from outside the module: numpy's own ``savez_compressed`` / ``np.load``,
the stdlib ``zipfile`` reader, and masks drawn by hand.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest

from brain_audit.dataset.masks import (
    MASK_DIR,
    encode_masks,
    has_masks,
    lesion_mask,
    mask_path,
    read_masks,
    write_masks,
)
from brain_audit.errors import BrainAuditError


def _masks(seed: int = 0, shape: tuple[int, int] = (48, 40)) -> dict[str, np.ndarray]:
    """Sparse random masks, one empty, one full, keys in a non-alphabetical order."""
    rng = np.random.default_rng(seed)
    return {
        "head": np.ones(shape, bool),
        "subdural": rng.random(shape) < 0.05,
        "epidural": np.zeros(shape, bool),
        "coil": rng.random(shape) < 0.01,
        "intraparenchymal": rng.random(shape) < 0.2,
    }


class TestEncodeMasks:
    def test_same_masks_same_bytes(self):
        a = encode_masks(_masks(1))
        b = encode_masks({k: v.copy() for k, v in _masks(1).items()})
        assert a == b
        assert a != encode_masks(_masks(2))

    def test_numpy_reads_what_savez_compressed_would_give(self, tmp_path):
        masks = _masks(3)
        np.savez_compressed(tmp_path / "ref.npz", **masks)  # numpy's own writer as the reference
        with np.load(tmp_path / "ref.npz") as ref, np.load(io.BytesIO(encode_masks(masks))) as ours:
            assert ours.files == ref.files == list(masks)
            for key in ref.files:
                assert ours[key].dtype == np.dtype(bool) and ours[key].shape == (48, 40)
                np.testing.assert_array_equal(ours[key], ref[key])

    def test_fixed_timestamp_and_deflate(self):
        with zipfile.ZipFile(io.BytesIO(encode_masks(_masks()))) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == [f"{k}.npy" for k in _masks()]
            assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
            assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
            assert zf.testzip() is None  # every CRC checks out
            # a 48 x 40 all-False mask compresses to far less than its 1,920 bytes
            assert zf.getinfo("epidural.npy").compress_size < 100

    def test_non_bool_input_is_cast(self):
        arr = np.array([[0, 2], [0, 1]], np.uint8)
        with np.load(io.BytesIO(encode_masks({"subdural": arr}))) as z:
            np.testing.assert_array_equal(z["subdural"], [[False, True], [False, True]])

    @pytest.mark.parametrize(
        "masks, message",
        [({"a/b": np.zeros((2, 2), bool)}, r"`masks` keys must be names of letters, digits and '_'. Got 'a/b'"),
         ({"a": np.zeros((2, 2), bool), "b": np.zeros((2, 3), bool)},
          r"`masks\['b'\]` must be of shape \(2, 2\). Got shape \(2, 3\) instead."),
         ({"a": np.zeros(4, bool)}, r"`masks\['a'\]` must be 2-D. Got shape \(4,\) instead.")],
    )
    def test_invalid(self, masks, message):
        with pytest.raises(BrainAuditError, match=message):
            encode_masks(masks)


class TestMaskPath:
    @pytest.mark.parametrize("image_id", ["ID_63eb1e259", "ID_0", "case-01.slice_3", "A" * 128])
    def test_plain_ids(self, tmp_path, image_id):
        assert mask_path(tmp_path, image_id) == tmp_path / "phantom_truth" / f"{image_id}.npz"

    @pytest.mark.parametrize(
        "image_id",
        ["../ID_1", "..", ".", "", "a/b", "a\\b", "/etc/passwd", "ID_1/../../x", "x..y", ".hidden", "ID 1",
         "A" * 129, "ID_1\x00", None],
    )
    def test_ids_that_are_not_file_names_raise(self, tmp_path, image_id):
        rule = re.escape("`image_id` must be an ID of 1 to 128 letters, digits, '_', '-' and '.', not starting "
                         "with '.' and without '..' or a path separator. Got ")
        with pytest.raises(BrainAuditError, match="^" + rule + re.escape(f"{image_id!r} instead.") + "$"):
            mask_path(tmp_path, image_id)

    def test_no_read_outside_the_mask_folder(self, tmp_path):
        np.savez(tmp_path / "secret.npz", subdural=np.ones((2, 2), bool))
        (tmp_path / MASK_DIR).mkdir()
        with pytest.raises(BrainAuditError, match=r"Got '\.\./secret' instead"):
            read_masks(tmp_path, "../secret")


class TestReadMasks:
    def test_round_trip(self, tmp_path):
        masks = _masks(4)
        path = write_masks(tmp_path, "ID_0a1b", masks)
        assert path == tmp_path / MASK_DIR / "ID_0a1b.npz"
        back = read_masks(tmp_path, "ID_0a1b")
        assert list(back) == list(masks)
        for key, arr in masks.items():
            assert back[key].dtype == np.dtype(bool)
            np.testing.assert_array_equal(back[key], arr)
        assert not list((tmp_path / MASK_DIR).glob("*.part"))  # written atomically, no leftovers

    def test_reads_numpy_written_files(self, tmp_path):
        (tmp_path / MASK_DIR).mkdir()
        np.savez_compressed(tmp_path / MASK_DIR / "ID_ff.npz", subarachnoid=np.eye(3, dtype=bool))
        np.testing.assert_array_equal(read_masks(tmp_path, "ID_ff")["subarachnoid"], np.eye(3, dtype=bool))

    def test_missing_file(self, tmp_path):
        with pytest.raises(BrainAuditError, match=r"^ID_000\.npz: no masks for ID_000 in .*phantom_truth$"):
            read_masks(tmp_path, "ID_000")

    def test_not_an_npz(self, tmp_path):
        (tmp_path / MASK_DIR).mkdir()
        (tmp_path / MASK_DIR / "ID_1.npz").write_bytes(b"not a zip file")
        with pytest.raises(BrainAuditError, match=r"^ID_1\.npz: not a mask file"):
            read_masks(tmp_path, "ID_1")

    def test_pickled_objects_are_refused(self, tmp_path):
        (tmp_path / MASK_DIR).mkdir()
        np.savez(tmp_path / MASK_DIR / "ID_2.npz", subdural=np.array([{"x": 1}], dtype=object))
        with pytest.raises(BrainAuditError, match=r"^ID_2\.npz: not a mask file"):
            read_masks(tmp_path, "ID_2")

    def test_non_bool_entry_names_the_key(self, tmp_path):
        (tmp_path / MASK_DIR).mkdir()
        np.savez(tmp_path / MASK_DIR / "ID_3.npz", head=np.ones((4, 4), bool), subdural=np.ones((4, 4), np.uint8))
        with pytest.raises(BrainAuditError,
                           match=r"^ID_3\.npz: mask 'subdural' must be a bool \(H, W\) array. Got uint8 \(4, 4\)"):
            read_masks(tmp_path, "ID_3")

    def test_shape_mismatch_names_the_key(self, tmp_path):
        (tmp_path / MASK_DIR).mkdir()
        np.savez(tmp_path / MASK_DIR / "ID_4.npz", head=np.ones((4, 4), bool), epidural=np.ones((4, 5), bool))
        with pytest.raises(BrainAuditError, match=r"^ID_4\.npz: mask 'epidural' must have the shape \(4, 4\)"):
            read_masks(tmp_path, "ID_4")

    def test_has_masks(self, tmp_path):
        assert not has_masks(tmp_path)
        (tmp_path / MASK_DIR).mkdir()
        assert has_masks(tmp_path)


class TestLesionMask:
    def test_union_of_the_subtypes_only(self):
        z = np.zeros((3, 4), bool)
        sdh, sah, head, coil = z.copy(), z.copy(), ~z, z.copy()
        sdh[0, 0] = True
        sah[2, 3] = True
        coil[1, 1] = True
        got = lesion_mask({"head": head, "subdural": sdh, "coil": coil, "subarachnoid": sah})
        expected = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)  # by hand
        np.testing.assert_array_equal(got, expected)

    def test_no_subtype_key_is_no_blood(self):
        got = lesion_mask({"head": np.ones((2, 5), bool)})
        assert got.shape == (2, 5) and got.dtype == np.dtype(bool) and not got.any()

    def test_empty(self):
        with pytest.raises(BrainAuditError, match=r"`masks` must hold at least one mask"):
            lesion_mask({})
