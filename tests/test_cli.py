"""The ``brain-audit`` command line, run in-process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brain_audit.cli import main


def test_help_lists_window(capsys):
    assert main([]) == 2
    assert "window" in capsys.readouterr().out


def test_window_writes_picture_and_skips_bad_file(tmp_path, capsys):
    bad = tmp_path / "ID_broken.dcm"
    bad.write_bytes(b"DICM but not really")
    rc = main(["window", str(bad), "--pydicom-example", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0
    assert "skipped ID_broken.dcm: not a" in captured.err
    assert "1 read, 1 skipped" in captured.out
    png = tmp_path / "out" / "CT_small.png"
    img = np.asarray(Image.open(png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 10  # a real picture, not a blank canvas


def test_window_fails_when_nothing_reads(tmp_path, capsys):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"")
    assert main(["window", str(bad), "--out", str(tmp_path)]) == 1
    assert "x.dcm: empty file" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "brain_audit 0.1.0" in capsys.readouterr().out
