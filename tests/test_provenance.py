"""brain_audit.provenance: hashing and atomic writes.

Digests are checked against the published test vectors for "abc" (FIPS 180-2 for SHA-256,
RFC 1321 for MD5), not against hashlib output computed here.
"""

from __future__ import annotations

import pytest

from brain_audit.provenance import atomic_path, atomic_write_bytes, file_digest, file_sha256

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
MD5_ABC = "900150983cd24fb0d6963f7d28e17f72"


class TestFileDigest:
    def test_published_vectors(self, tmp_path):
        p = tmp_path / "abc.bin"
        p.write_bytes(b"abc")
        assert file_digest(p) == SHA256_ABC
        assert file_digest(p, "md5") == MD5_ABC
        assert file_sha256(p) == SHA256_ABC

    def test_chunking_does_not_change_the_digest(self, tmp_path):
        p = tmp_path / "abc.bin"
        p.write_bytes(b"abc")
        assert file_digest(p, "md5", chunk=1) == MD5_ABC
        assert file_sha256(p, chunk=2) == SHA256_ABC

    def test_unknown_algorithm(self, tmp_path):
        p = tmp_path / "abc.bin"
        p.write_bytes(b"abc")
        with pytest.raises(ValueError, match="unsupported hash type"):
            file_digest(p, "not-a-hash")


class TestAtomicPath:
    def test_success_moves_the_file_into_place(self, tmp_path):
        final = tmp_path / "sub" / "model.keras"
        with atomic_path(final, suffix=".keras") as tmp:
            assert tmp.parent == final.parent and tmp.name.endswith(".keras") and tmp.is_file()
            assert not final.exists()  # nothing visible under the final name while writing
            tmp.write_bytes(b"new")
        assert final.read_bytes() == b"new"
        assert [p.name for p in final.parent.iterdir()] == ["model.keras"]

    def test_failure_keeps_the_old_file_and_leaves_no_temporary(self, tmp_path):
        final = tmp_path / "out.bin"
        final.write_bytes(b"old")
        with pytest.raises(RuntimeError, match="killed"):
            with atomic_path(final) as tmp:
                tmp.write_bytes(b"half of the ne")
                raise RuntimeError("killed")
        assert final.read_bytes() == b"old"
        assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]

    def test_atomic_write_bytes_goes_through_it(self, tmp_path):
        final = tmp_path / "a" / "b.bin"
        assert atomic_write_bytes(final, b"abc") == final
        assert file_sha256(final) == SHA256_ABC
        assert [p.name for p in final.parent.iterdir()] == ["b.bin"]
