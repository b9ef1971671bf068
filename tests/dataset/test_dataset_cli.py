"""The data sub-commands of the command line (index, cohort, cache, feed) on the tiny RSNA-layout dataset."""

from __future__ import annotations

import warnings

import pytest

from brain_audit.dataset.cache import open_cache
from brain_audit.dataset.cohort import read_cohort


class TestCli:
    def test_labels_index_cohort_cache_feed_from_the_shell(self, tiny, tmp_path, capsys):
        from brain_audit.cli import main

        root, truth = tiny
        w = tmp_path / "work"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert main(["index", str(root), "--out", str(w / "index"), "--workers", "0", "--quiet"]) == 0
            out = capsys.readouterr()
            # not DICOM, no file, header only, truncated: the index keeps none of the four
            assert f"{len(truth)} images indexed" in out.out and "4 skipped" in out.out
            assert "skipped ID_badheader0: not a DICOM file" in out.err
            assert "skipped ID_headonly00: (7FE0,0010) Pixel Data is missing (header only)" in out.err
            assert main(["cohort", str(root), "--index", str(w / "index"), "--out", str(w / "cohort"),
                         "--cohort", "phase2:30:0.5", "--cohort", "phase1:4:natural:patient",
                         "--n-audit", "3", "--validation", "0.3", "--seed", "7"]) == 0
            out = capsys.readouterr().out
            assert "audit: 3 patients" in out and "phase2: 30 slices" in out
            cohort = read_cohort(w / "cohort")
            assert cohort["in_phase2"].sum() == 30
            p1 = cohort[cohort["in_phase1"]]
            assert p1["patient_id"].nunique() == 4 and p1["in_phase2"].all()
            assert main(["cache", str(root), "--cohort", str(w / "cohort"), "--out", str(w / "cache"),
                         "--size", "16", "--workers", "0", "--quiet"]) == 0
            out = capsys.readouterr().out
        cache = open_cache(w / "cache", size=16)
        assert not cohort.index.isin(["ID_truncated0", "ID_headonly00"]).any()  # filtered at the index
        assert f"{len(cohort)} slices cached at 16 x 16" in out
        assert main(["feed", str(w / "cache"), "--split", "train", "--batch-size", "4", "--batches", "1",
                     "--labels", "six"]) == 0
        out = capsys.readouterr().out
        assert "hu float32 (4, 16, 16, 1)" in out and "y float32 (4, 6)" in out
        assert len(cache.ids("train")) > 0

    def test_bad_cohort_spec_is_a_usage_error(self, capsys):
        from brain_audit.cli import main

        with pytest.raises(SystemExit):
            main(["cohort", ".", "--cohort", "phase1"])
        assert "expected NAME:N[:BALANCE[:UNIT]]" in capsys.readouterr().err
