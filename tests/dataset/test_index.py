"""brain_audit.dataset.index: the DICOM header index of the tiny RSNA-layout dataset, against the values
written into its files (tests/support/tiny_rsna.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from brain_audit.dataset import index as index_mod
from brain_audit.dataset.index import build_index, read_index, read_skipped
from brain_audit.dataset.labels import read_labels
from brain_audit.errors import CacheError
from brain_audit.rsna import TRAIN_CSV, TRAIN_DIR
from support.tiny_rsna import SIDE


class TestBuildIndex:
    def test_values_match_what_was_written(self, tiny, tiny_index):
        _, truth = tiny
        _, index, _ = tiny_index
        for image_id, t in truth.items():
            row = index.loc[image_id]
            assert row["patient_id"] == t["patient"] and row["series_id"] == t["series"]
            assert row["z"] == t["z"] and (row["rows"], row["cols"]) == (SIDE, SIDE)
            assert bool(row["wrap_defect"]) == t["wrap"]
            assert row["bits_stored"] == (12 if t["wrap"] else 16)
            assert row["intercept"] == (0.0 if t["wrap"] else -1024.0)
        # headers of the truncated and header-only files are readable: indexed (the cache skips them)
        assert {"ID_truncated0", "ID_headonly00"} <= set(index.index)
        assert len(index) == len(truth) + 2

    def test_unreadable_files_land_in_skipped_csv_with_reason(self, tiny_index):
        _, _, out = tiny_index
        skipped = read_skipped(out).set_index("image_id")
        assert sorted(skipped.index) == ["ID_badheader0", "ID_missing000"]
        assert skipped.loc["ID_missing000", "reason"].startswith("cannot open file")
        assert "not a DICOM file" in skipped.loc["ID_badheader0", "reason"]
        assert skipped.loc["ID_badheader0", "file"] == f"{TRAIN_DIR}/ID_badheader0.dcm"

    def test_identifying_fields_never_stored(self, tiny_index):
        _, index, _ = tiny_index
        forbidden = {"patient_name", "patients_name", "birth_date", "patient_birth_date", "institution_name"}
        assert not forbidden & {c.lower() for c in index.columns}

    def test_killed_run_resumes_reads_only_missing_and_ends_identical(self, tiny, tmp_path, monkeypatch):
        root, _ = tiny
        labels = read_labels(root / TRAIN_CSV)
        full = tmp_path / "full"
        ref = build_index(root, full, labels.index, workers=0, block_size=10, progress=False)
        calls = []
        real = index_mod._read_block

        def dying(block):
            calls.append(len(block))
            if len(calls) == 3:
                raise KeyboardInterrupt  # killed mid-run, after two blocks were written
            return real(block)

        monkeypatch.setattr(index_mod, "_read_block", dying)
        part = tmp_path / "part"
        with pytest.raises(KeyboardInterrupt):
            build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert len(list((part / "parts").glob("part-*.parquet"))) == 2
        assert not (part / "index.parquet").exists()
        monkeypatch.setattr(index_mod, "_read_block", real)
        again = build_index(root, part, labels.index, workers=0, block_size=10, progress=False)
        assert again.attrs["n_read"] == len(labels) - 20
        pd.testing.assert_frame_equal(again, ref)
        assert (part / "index.parquet").read_bytes() == (full / "index.parquet").read_bytes()
        assert (part / "skipped.csv").read_bytes() == (full / "skipped.csv").read_bytes()
        assert not (part / "parts").exists()
        assert build_index(root, part, labels.index, workers=0, progress=False).attrs["n_read"] == 0

    @pytest.mark.slow
    def test_parallel_processes_give_the_same_table(self, tiny, tiny_index, tmp_path):
        root, _ = tiny
        labels, index, out = tiny_index
        par = build_index(root, tmp_path / "par", labels.index, workers=2, block_size=9, progress=False)
        pd.testing.assert_frame_equal(par, index)
        assert (tmp_path / "par" / "skipped.csv").read_bytes() == (out / "skipped.csv").read_bytes()

    def test_missing_root_and_bad_parameters(self, tmp_path):
        with pytest.raises(CacheError, match="no such folder"):
            build_index(tmp_path, tmp_path / "i")
        with pytest.raises(ValueError, match="`block_size` must be > 0. Got 0 instead."):
            build_index(tmp_path, tmp_path / "i", block_size=0)
        with pytest.raises(CacheError, match="no header index here"):
            read_index(tmp_path)
