"""``brain-audit predict``: one-line errors for what a user can get wrong, and a run on a tiny RSNA-layout folder."""

from __future__ import annotations

import pandas as pd
import pytest

from brain_audit.cli import main


def test_a_missing_model_is_one_line_naming_it(data, tmp_path, capsys):
    code = main(["predict", "--model", str(tmp_path / "nope.keras"), "--data-root", str(data[0]),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("brain-audit: error: `--model` must be") and "nope.keras" in err and "Traceback" not in err


@pytest.mark.parametrize("option, folder, named", [("--data-root", "", "stage_2_test"),
                                                    ("--data-root", "absent", "`--data-root` must be a folder"),
                                                    ("--dicom", "absent", "`--dicom` must be a folder")])
def test_a_missing_folder_is_one_line(six_model, tmp_path, capsys, option, folder, named):
    code = main(["predict", "--model", str(six_model[0]), option, str(tmp_path / folder), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err


def test_data_root_and_dicom_are_exclusive(six_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", str(six_model[0]), "--data-root", str(tmp_path), "--dicom", str(tmp_path),
              "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "--dicom: not allowed with argument --data-root" in capsys.readouterr().err


def test_a_run_on_the_rsna_layout_writes_the_submission(data, six_model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", "--model", str(six_model[0]), "--data-root", str(data[0]), "--out", str(out),
                 "--workers", "0", "--batch-size", "4", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0
    assert "12 slices scored (12 now" in text and "3 unreadable" in text and "slices/s" in text
    assert f"submission: {out / 'submission.csv'}" in text and "4 filled" in text
    sample = pd.read_csv(data[0] / "stage_2_sample_submission.csv")
    assert list(pd.read_csv(out / "submission.csv")["ID"]) == list(sample["ID"])
