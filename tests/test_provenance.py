"""brain_audit.provenance: hashing, atomic writes and the modes of what they write.

Digests are checked against the published test vectors for "abc" (FIPS 180-2 for SHA-256,
RFC 1321 for MD5), not against hashlib output computed here.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from brain_audit.provenance import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    config_differences,
    file_digest,
    file_sha256,
    flat_config,
    remove_temporaries,
    write_json,
)

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


class TestModes:
    """An output has the mode a plain ``open(path, "w")`` gives: 0o666 less the umask (the expected modes are
    written out here); a secret asks for 0o600."""

    @pytest.fixture
    def umask(self):
        old = os.umask(0o022)
        yield lambda mask: os.umask(mask)
        os.umask(old)

    @pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
    def test_files_follow_the_umask(self, tmp_path, umask, mask, expected):
        umask(mask)
        atomic_write_bytes(tmp_path / "a.bin", b"abc")
        write_json(tmp_path / "b.json", {"x": 1})
        with atomic_path(tmp_path / "c.keras", suffix=".keras") as tmp:
            tmp.write_bytes(b"model")
        plain = tmp_path / "plain.txt"
        plain.write_text("reference")  # what the umask gives any other file
        assert stat.S_IMODE(plain.stat().st_mode) == expected
        for name in ("a.bin", "b.json", "c.keras"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name

    def test_a_secret_asks_for_0600(self, tmp_path, umask):
        umask(0o022)
        atomic_write_bytes(tmp_path / "key", b"secret", mode=0o600)
        atomic_write_text(tmp_path / "key.txt", "secret", mode=0o600)
        with atomic_path(tmp_path / "k2", mode=0o600) as tmp:
            tmp.write_bytes(b"secret")
        for name in ("key", "key.txt", "k2"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name

    def test_an_existing_file_takes_the_new_mode(self, tmp_path, umask):
        umask(0o022)
        atomic_write_bytes(tmp_path / "key", b"old", mode=0o600)
        atomic_write_bytes(tmp_path / "key", b"new")
        assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o644


class TestRemoveTemporaries:
    def test_only_the_temporaries_of_atomic_path_go(self, tmp_path):
        import tempfile

        keep = ["manifest.json", ".brain_audit.lock", ".hidden", "a.part", "notes.txt"]
        for name in keep:
            (tmp_path / name).write_text("x")
        (tmp_path / "sub").mkdir()
        made = []
        for folder, final, suffix in ((tmp_path, "images.parquet", ".part"), (tmp_path, "model.keras", ".keras"),
                                      (tmp_path / "sub", "b.weights.h5", ".weights.h5")):
            fd, tmp = tempfile.mkstemp(prefix=f".{final}.", suffix=suffix, dir=folder)  # as atomic_path names them
            os.close(fd)
            made.append(Path(tmp))
        assert sorted(remove_temporaries(tmp_path)) == sorted(made[:2])
        assert made[2].exists()  # not recursive
        assert remove_temporaries(tmp_path, recursive=True) == [made[2]]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "sub"])
        assert list((tmp_path / "sub").iterdir()) == []
        assert remove_temporaries(tmp_path / "missing") == []


class TestConfigDifferences:
    def test_flat_keys_and_json_values(self):
        from brain_audit.config import RunConfig

        flat = flat_config(RunConfig(image_size=64))
        assert flat["image_size"] == 64 and flat["phase1.epochs"] == 3 and flat["phase4.dropouts"] == [0.5, 0.2]
        assert flat["pretrain.augment"] is True and "phase1" not in flat

    def test_differences_in_key_order_against_a_written_record(self, tmp_path):
        from brain_audit.config import load_config

        config = load_config(None, ["phase1.epochs=3", "seed=1"])
        write_json(tmp_path / "run.json", {"config": config})
        recorded = json.loads((tmp_path / "run.json").read_text())["config"]
        asked = load_config(None, ["phase1.epochs=5", "seed=1", "phase1.learning_rate=0.01"])
        keys = ["phase1.epochs", "seed", "phase1.learning_rate", "phase4.dropouts"]
        assert config_differences(recorded, config, keys) == []  # a record equals the config it was written from
        assert config_differences(recorded, asked, keys) == [("phase1.epochs", 3, 5),
                                                             ("phase1.learning_rate", 0.001, 0.01)]
        old = {k: v for k, v in recorded.items() if k != "seed"}  # an older record without the key
        assert config_differences(old, load_config(None, ["seed=2", "phase1.epochs=3"]), keys) == []


def test_read_json_gives_the_object_or_none(tmp_path):
    """What write_json wrote comes back; a missing, half-written or non-object file is None, never an error."""
    from brain_audit.provenance import read_json, write_json

    write_json(tmp_path / "a.json", {"size": 64, "ids": ["ID_1"]})
    assert read_json(tmp_path / "a.json") == {"size": 64, "ids": ["ID_1"]}
    (tmp_path / "half.json").write_text('{"size": 6')
    (tmp_path / "list.json").write_text("[1, 2]")
    assert [read_json(tmp_path / n) for n in ("missing.json", "half.json", "list.json")] == [None, None, None]
