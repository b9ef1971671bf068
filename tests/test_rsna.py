"""brain_audit.rsna: the names of the RSNA 2019 dataset layout, against the Kaggle competition's own files.

The expected names are those of the competition's data page and its ``stage_2_train.csv``, written out here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brain_audit.errors import BrainAuditError
from brain_audit.rsna import LABEL_COLUMNS, SUBTYPES, TRAIN_CSV, TRAIN_DIR, image_path


def test_label_columns_in_the_order_of_the_label_file():
    # the six rows of every image in stage_2_train.csv, e.g. ID_12cadc6af_epidural ... ID_12cadc6af_any
    assert LABEL_COLUMNS == ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
    assert SUBTYPES == LABEL_COLUMNS[:5]


def test_layout_names():
    assert (TRAIN_DIR, TRAIN_CSV) == ("stage_2_train", "stage_2_train.csv")


def test_image_path():
    assert image_path("/data/rsna", "ID_0a1b2c3d4") == Path("/data/rsna/stage_2_train/ID_0a1b2c3d4.dcm")
    assert image_path(Path("r"), "ID_0a1b2c3d4", folder="stage_2_test") == Path("r/stage_2_test/ID_0a1b2c3d4.dcm")


@pytest.mark.parametrize("image_id", ["../../../../outside/secret", "/etc/passwd", "..", "ID_1/../x", ""])
def test_image_path_refuses_an_id_that_is_a_path(image_id):
    # the attack: a label row "../../../../outside/secret_any,0" made the index read outside the root
    with pytest.raises(BrainAuditError, match=rf"^`image_id` must be an ID of .* Got {re.escape(repr(image_id))} "
                                              "instead.$"):
        image_path("/data/rsna", image_id)
