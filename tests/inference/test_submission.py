"""brain_audit.inference.submission.write_submission: Kaggle's ID,Label rows from per-image probabilities.

The expected rows are written out by hand for two images; the fallback is their mean, computed here.
"""

from __future__ import annotations

import pandas as pd
import pytest

from brain_audit.errors import ConfigError
from brain_audit.inference.submission import write_submission
from brain_audit.rsna import LABEL_COLUMNS

PROBS = pd.DataFrame([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]],
                     index=["ID_b2", "ID_a1"], columns=list(LABEL_COLUMNS))


def test_without_a_sample_six_rows_per_image_sorted_by_id(tmp_path):
    s = write_submission(PROBS, tmp_path / "submission.csv")
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "ID,Label"
    assert lines[1:7] == ["ID_a1_epidural,0.9", "ID_a1_intraparenchymal,0.8", "ID_a1_intraventricular,0.7",
                          "ID_a1_subarachnoid,0.6", "ID_a1_subdural,0.5", "ID_a1_any,0.4"]
    assert lines[7] == "ID_b2_epidural,0.1" and lines[12] == "ID_b2_any,0.6" and len(lines) == 13
    assert s["rows"] == 12 and s["images"] == 2 and s["filled"] == 0 and s["sample"] is None


def test_a_sample_sets_rows_and_order_and_fills_what_was_not_scored(tmp_path):
    sample = tmp_path / "sample.csv"
    sample.write_text("ID,Label\nID_c3_any,0.5\nID_b2_subdural,0.5\nID_c3_epidural,0.5\nID_b2_any,0.5\n")
    s = write_submission(PROBS, tmp_path / "submission.csv", sample)
    got = pd.read_csv(tmp_path / "submission.csv")
    assert got["ID"].tolist() == ["ID_c3_any", "ID_b2_subdural", "ID_c3_epidural", "ID_b2_any"]
    assert got["Label"].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.6])  # ID_c3: the mean of 0.6 / 0.4 and 0.1 / 0.9
    assert s["filled"] == 1 and s["filled_images"] == ["ID_c3"] and s["scored_not_in_sample"] == 1  # ID_a1
    assert s["fallback_values"]["any"] == pytest.approx(0.5) and s["rows"] == 4 and s["images"] == 2


@pytest.mark.parametrize("text, match", [
    ("Id,Label\nID_a1_any,0.5\n", "must have a column 'ID'"),
    ("ID,Label\nID_a1_any,0.5\nID_a1_bleed,0.5\n", "line 3: `ID` must end in one of"),
])
def test_a_malformed_sample_is_refused_naming_the_line(tmp_path, text, match):
    sample = tmp_path / "sample.csv"
    sample.write_text(text)
    with pytest.raises(ConfigError, match=match):
        write_submission(PROBS, tmp_path / "submission.csv", sample)
    assert not (tmp_path / "submission.csv").exists()


def test_nothing_scored_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least one scored image"):
        write_submission(PROBS.iloc[:0], tmp_path / "submission.csv")
