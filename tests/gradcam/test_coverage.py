"""brain_audit.gradcam.coverage: which slices an attention audit explains, checked on hand-built outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brain_audit.gradcam.coverage import coverage_sample, field_of_view_mm, sanity_positions


def test_every_error_then_a_random_sample_of_correct_calls():
    # positions:      0    1    2    3    4    5    6    7    8    9
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.4, 0.7, 0.1, 0.6, 0.2, 0.3, 0.8, 0.0])
    # at 0.5: FN = 1, 2; FP = 3, 5; TP = 0, 8; TN = 4, 6, 7, 9
    pos, summary = coverage_sample(y, p, 0.5, correct_slices=3, seed=1)
    assert pos[:4].tolist() == [1, 2, 3, 5]
    assert len(pos) == 7 and set(pos[4:]) <= {0, 8, 4, 6, 7, 9} and len(set(pos)) == 7
    assert summary["false_negative"] == {"total": 2, "profiled": 2}
    assert summary["false_positive"] == {"total": 2, "profiled": 2}
    assert summary["true_positive"]["total"] == 2 and summary["true_negative"]["total"] == 4
    assert summary["true_positive"]["profiled"] + summary["true_negative"]["profiled"] == 3
    # the same seed gives the same sample; all correct calls when the sample asks for more than there are
    assert coverage_sample(y, p, 0.5, correct_slices=3, seed=1)[0].tolist() == pos.tolist()
    assert sorted(coverage_sample(y, p, 0.5, correct_slices=99)[0][4:].tolist()) == [0, 4, 6, 7, 8, 9]


def test_errors_beyond_the_cap_are_drawn_and_counted():
    y = np.zeros(50, int)
    p = np.full(50, 0.9)  # 50 false positives
    pos, summary = coverage_sample(y, p, 0.5, max_errors=10, correct_slices=0)
    assert len(pos) == 10 and len(set(pos)) == 10
    assert summary["false_positive"] == {"total": 50, "profiled": 10}


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`max_errors` must be an int >= 0\. Got -1 instead\."):
        coverage_sample([0, 1], [0.1, 0.9], 0.5, max_errors=-1)
    with pytest.raises(ValueError, match=r"`probabilities` must hold one entry per label \(2\)\. Got 3 instead\."):
        coverage_sample([0, 1], [0.1, 0.9, 0.2], 0.5)


def test_sanity_sample_is_fixed_and_half_positive():
    y = np.array([1] * 10 + [0] * 30)
    a = sanity_positions(y, 8, seed=3)
    assert a.tolist() == sanity_positions(y, 8, seed=3).tolist()
    assert len(a) == 8 and y[a].sum() == 4
    one = np.array([1, 0, 0, 0, 0])
    assert one[sanity_positions(one, 4)].sum() == 1 and len(sanity_positions(one, 4)) == 4  # one positive exists
    assert len(sanity_positions(np.array([1, 0]), 16)) == 2


def test_field_of_view_of_the_padded_square():
    rows = pd.DataFrame({"rows": [512, 256, 512], "cols": [512, 320, 512], "spacing_row": [0.488, 0.8, np.nan],
                         "spacing_col": [0.488, 0.7, np.nan]})
    fov = field_of_view_mm(rows)
    assert fov[0] == pytest.approx(512 * 0.488) and fov[1] == pytest.approx(max(256 * 0.8, 320 * 0.7))
    assert np.isnan(fov[2])
