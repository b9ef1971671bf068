"""brain_audit.ids: the ID rule against hand-picked safe and hostile names, pseudonyms against ``hmac`` computed
here from the rule the module docstring states, and the key file's bytes and mode."""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from pathlib import Path

import pytest

from brain_audit.errors import BrainAuditError, CacheError
from brain_audit.ids import (
    KEY_FILE,
    is_pseudonym,
    is_rsna_id,
    is_safe_id,
    load_or_create_key,
    pseudonym,
    safe_child,
    validate_id,
)

RULE = ("an ID of 1 to 128 letters, digits, '_', '-' and '.', not starting with '.' and without '..' or a path "
        "separator")
SAFE = ["ID_63eb1e259", "ID_0", "case-01.slice_3", "1.2.840.113619.2.55", "a", "A" * 128, "x.", "-x"]
HOSTILE = ["", ".", "..", "../../../../outside/secret", "/etc/passwd", "a/b", "a\\b", "ID_1/../../x", "x..y",
           ".hidden", "ID 1", "ID_1\n", "ID_1\x00", "A" * 129, "ID_é", "C:x", None, 7, b"ID_1"]


class TestValidateId:
    @pytest.mark.parametrize("value", SAFE)
    def test_plain_ids_pass_unchanged(self, value):
        assert is_safe_id(value) and validate_id(value) is value

    @pytest.mark.parametrize("value", HOSTILE)
    def test_hostile_ids_are_refused_with_the_rule(self, value):
        assert not is_safe_id(value)
        with pytest.raises(BrainAuditError, match="^" + re.escape(f"`image_id` must be {RULE}. Got {value!r} instead.")
                           + "$"):
            validate_id(value)

    def test_message_names_the_source_and_the_field(self):
        with pytest.raises(BrainAuditError, match=r"^cohort\.csv: line 7: `patient_id` must be an ID .* Got '\.\./x'"):
            validate_id("../x", "patient_id", "cohort.csv: line 7")


class TestSafeChild:
    def test_a_plain_id_is_a_direct_child(self, tmp_path):
        assert safe_child(tmp_path / "patients", "PID_0123", ".json") == tmp_path / "patients" / "PID_0123.json"

    @pytest.mark.parametrize("name", ["../../escape/x", "/tmp/x", "..", ""])
    def test_a_traversal_never_becomes_a_path(self, tmp_path, name):
        with pytest.raises(BrainAuditError, match=re.escape(f"Got {name!r} instead.")):
            safe_child(tmp_path, name, ".png")

    def test_a_link_placed_in_the_folder_by_its_owner_is_allowed(self, tmp_path):
        (tmp_path / "elsewhere.dcm").write_bytes(b"x")
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "ID_1.dcm").symlink_to(tmp_path / "elsewhere.dcm")
        assert safe_child(tmp_path / "data", "ID_1", ".dcm").read_bytes() == b"x"


class TestPseudonym:
    KEY = bytes(range(32))

    def test_keyed_hash_of_kind_and_value(self):
        # HMAC-SHA256 (RFC 2104) of "<kind>\0<value>", first 16 hex digits, with the kind's prefix
        for kind, prefix in (("patient", "PID"), ("study", "STU"), ("series", "SER")):
            value = {"patient": "MRN123456", "study": "1.2.3.4", "series": "1.2.3.4.5"}[kind]
            ref = hmac.new(self.KEY, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()[:16]
            got = pseudonym(value, kind, self.KEY)
            assert got == f"{prefix}_{ref}" and is_pseudonym(got, kind) and is_safe_id(got)

    def test_stable_per_key_different_across_keys_and_kinds(self):
        assert pseudonym("MRN123456", "patient", self.KEY) == pseudonym("MRN123456", "patient", bytes(self.KEY))
        assert pseudonym("MRN123456", "patient", self.KEY) != pseudonym("MRN123456", "patient", b"\x01" * 32)
        assert pseudonym("1.2.3", "study", self.KEY)[4:] != pseudonym("1.2.3", "series", self.KEY)[4:]

    @pytest.mark.parametrize("value", ["ID_0abc", "ID_63eb1e259", "ID_1f"])
    def test_rsna_pseudonyms_pass_through(self, value):
        assert is_rsna_id(value)
        assert pseudonym(value, "patient", self.KEY) == value

    @pytest.mark.parametrize("value", ["ID_0ABC", "ID_", "ID_xyz", "id_0abc", "ID_0abc ", "../ID_0abc", "MRN123456"])
    def test_anything_else_is_hashed(self, value):
        assert not is_rsna_id(value)
        assert pseudonym(value, "patient", self.KEY).startswith("PID_")

    def test_a_traversal_patient_id_becomes_a_plain_name(self):
        assert is_safe_id(pseudonym("../../../escape/x", "patient", self.KEY))

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match=r"`kind` must be one of \['patient', 'series', 'study'\]. Got 'x'"):
            pseudonym("a", "x", self.KEY)


class TestKey:
    def test_created_once_private_and_reused(self, tmp_path):
        key, created = load_or_create_key(tmp_path / "index")
        path = tmp_path / "index" / KEY_FILE
        assert created and len(key) == 32 and path.read_bytes() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_or_create_key(tmp_path / "index") == (key, False)
        assert [p.name for p in (tmp_path / "index").iterdir()] == [KEY_FILE]  # no temporary file left
        assert load_or_create_key(tmp_path / "other")[0] != key

    def test_a_damaged_key_is_refused(self, tmp_path):
        (tmp_path / KEY_FILE).write_bytes(b"")
        with pytest.raises(CacheError, match=r"pseudonym\.key: `pseudonym.key` must hold 32 bytes. Got 0 instead"):
            load_or_create_key(tmp_path)

    def test_a_key_created_by_another_run_in_between_wins(self, tmp_path, monkeypatch):
        import os

        theirs = b"\x07" * 32
        real_link = os.link

        def racing_link(src, dst):  # the other run links its key first
            Path(dst).write_bytes(theirs)
            return real_link(src, dst)

        monkeypatch.setattr(os, "link", racing_link)
        assert load_or_create_key(tmp_path) == (theirs, False)
        assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]
