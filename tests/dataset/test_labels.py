"""brain_audit.dataset.labels: the RSNA label file, against hand-written files and pandas ``pivot_table``
as a slow reference reader."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_audit.dataset.labels import read_labels
from brain_audit.errors import LabelFileError
from brain_audit.rsna import LABEL_COLUMNS


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def _rows(image: str, values: dict[str, int]) -> str:
    return "".join(f"{image}_{c},{values.get(c, 0)}\n" for c in LABEL_COLUMNS)


class TestReadLabels:
    def test_hand_written_file_with_agreeing_duplicates(self, tmp_path):
        text = ("ID,Label\n" + _rows("ID_aaa", {"subdural": 1, "any": 1}) + _rows("ID_bbb", {})
                + "ID_aaa_subdural,1\n" + "ID_ccc_epidural,1\n" + _rows("ID_ccc", {"epidural": 1, "any": 1})[17:])
        path = _write(tmp_path, text)
        with pytest.warns(RuntimeWarning, match="1 duplicated row"):
            df = read_labels(path)
        assert list(df.index) == ["ID_aaa", "ID_bbb", "ID_ccc"]
        assert list(df.columns) == list(LABEL_COLUMNS)
        assert (df.dtypes == np.int8).all()
        expected = np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], dtype=np.int8)
        np.testing.assert_array_equal(df.to_numpy(), expected)
        assert df.attrs["n_duplicate_rows"] == 1 and df.attrs["n_rows"] == 19

    def test_conflicting_duplicate_names_both_lines(self, tmp_path):
        text = "ID,Label\n" + _rows("ID_aaa", {}) + "ID_aaa_subdural,1\n"
        with pytest.raises(LabelFileError, match=r"conflicting duplicate rows for ID_aaa_subdural: "
                                                 r"line 6 says 0, line 8 says 1"):
            read_labels(_write(tmp_path, text))

    @pytest.mark.parametrize(
        "bad, why",
        [
            ("ID_bbb_epidural,2", r"label is '2'; expected 0 or 1"),
            ("ID_bbb_epidural,1,0", r"expected 2 fields 'ID,Label', got 3"),
            ("ID_bbb_epidurall,0", r"unknown subtype 'epidurall'"),
            ("IDbbbepidural,0", r"no '_<subtype>' suffix in ID 'IDbbbepidural'"),
            ("ID_bbb_epidural,", r"label is ''"),
        ],
    )
    def test_malformed_line_is_named(self, tmp_path, bad, why):
        text = "ID,Label\n" + _rows("ID_aaa", {}) + bad + "\n" + _rows("ID_bbb", {})[18:]
        with pytest.raises(LabelFileError, match=rf"labels.csv: line 8: {why}"):
            read_labels(_write(tmp_path, text))

    def test_blank_lines_do_not_shift_line_numbers(self, tmp_path):
        text = "ID,Label\n\n" + _rows("ID_aaa", {}) + "\nID_bbb_epidural,x\n"
        with pytest.raises(LabelFileError, match=r"line 10: label is 'x'"):
            read_labels(_write(tmp_path, text))

    def test_incomplete_image_and_bad_header(self, tmp_path):
        with pytest.raises(LabelFileError, match=r"image ID_aaa has no row for 'any'"):
            read_labels(_write(tmp_path, "ID,Label\n" + _rows("ID_aaa", {}).rsplit("ID_aaa_any", 1)[0]))
        with pytest.raises(LabelFileError, match=r"line 1: header is 'image,label'"):
            read_labels(_write(tmp_path, "image,label\nID_a_any,0\n"))
        with pytest.raises(LabelFileError, match="cannot open label file"):
            read_labels(tmp_path / "nope.csv")

    def test_any_inconsistent_with_subtypes_warns(self, tmp_path):
        with pytest.warns(RuntimeWarning, match="'any' differs from the OR"):
            df = read_labels(_write(tmp_path, "ID,Label\n" + _rows("ID_aaa", {"subdural": 1})))
        assert df.loc["ID_aaa", "any"] == 0 and df.loc["ID_aaa", "subdural"] == 1

    def test_agrees_with_pandas_pivot_reference(self, tmp_path):
        rng = np.random.default_rng(3)
        ids = [f"ID_{v:09x}" for v in rng.choice(16**9, 2000, replace=False)]
        lab = (rng.random((2000, 6)) < 0.2).astype(int)
        lab[:, 5] = lab[:, :5].max(axis=1)
        rows = [(f"{i}_{c}", v) for i, r in zip(ids, lab) for c, v in zip(LABEL_COLUMNS, r)]
        order = rng.permutation(len(rows))  # rows of one image scattered through the file
        path = _write(tmp_path, "ID,Label\n" + "".join(f"{rows[k][0]},{rows[k][1]}\n" for k in order))
        ref = pd.read_csv(path)
        ref[["image_id", "subtype"]] = ref["ID"].str.rsplit("_", n=1, expand=True)
        ref = ref.pivot_table(index="image_id", columns="subtype", values="Label")[list(LABEL_COLUMNS)]
        got = read_labels(path)
        pd.testing.assert_frame_equal(got.sort_index(), ref.astype(np.int8), check_names=False,
                                      check_index_type=False, check_column_type=False)


RULE = ("an ID of 1 to 128 letters, digits, '_', '-' and '.', not starting with '.' and without '..' or a path "
        "separator")


class TestIdsAreData:
    """An image ID is a name, never a path: unsafe rows are refused by line, the rest is read."""

    def test_traversal_and_absolute_ids_are_refused_by_line(self, tmp_path):
        text = ("ID,Label\n" + _rows("ID_aaa", {}) + "../../../../outside/secret_any,0\n"
                + "\n" + "/etc/passwd_epidural,1\n" + _rows("ID_bbb", {"subdural": 1, "any": 1}))
        with pytest.warns(RuntimeWarning, match=re.escape(
                f"labels.csv: 2 row(s) refused: `image_id` must be {RULE}; line 8 '../../../../outside/secret', "
                "line 10 '/etc/passwd'")):
            df = read_labels(_write(tmp_path, text))
        assert list(df.index) == ["ID_aaa", "ID_bbb"]
        np.testing.assert_array_equal(df.to_numpy(), [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]])
        assert df.attrs["n_refused_rows"] == 2 and df.attrs["n_rows"] == 14
        assert df.attrs["refused"] == [(8, "../../../../outside/secret"), (10, "/etc/passwd")]

    def test_refused_rows_are_counted_all_and_listed_first_hundred(self, tmp_path):
        text = "ID,Label\n" + _rows("ID_aaa", {}) + "".join(f"../x{k}_any,0\n" for k in range(150))
        with pytest.warns(RuntimeWarning, match=r"150 row\(s\) refused"):
            df = read_labels(_write(tmp_path, text))
        assert df.attrs["n_refused_rows"] == 150
        assert df.attrs["refused"] == [(8 + k, f"../x{k}") for k in range(100)]

    def test_a_clean_file_refuses_nothing(self, tmp_path):
        df = read_labels(_write(tmp_path, "ID,Label\n" + _rows("ID_aaa", {}) + _rows("case-01.slice_3", {})))
        assert list(df.index) == ["ID_aaa", "case-01.slice_3"]
        assert (df.attrs["n_refused_rows"], df.attrs["refused"]) == (0, [])

    def test_a_file_of_refused_rows_only_is_an_error(self, tmp_path):
        text = "ID,Label\n" + _rows("../secret", {})
        with pytest.raises(LabelFileError, match="^" + re.escape(
                f"labels.csv: line 2: `image_id` must be {RULE}. Got '../secret' instead (every one of the 6 rows "
                "is refused)") + "$"):
            read_labels(_write(tmp_path, text))

    @pytest.mark.parametrize("text", ["ID,Label\n", "ID,Label\n\n\n", "ID,Label"])
    def test_a_header_without_rows_is_an_error(self, tmp_path, text):
        with pytest.raises(LabelFileError, match=r"^labels\.csv: a label file must have data rows after its header "
                                                 r"'ID,Label'\. Got the header only instead\.$"):
            read_labels(_write(tmp_path, text))
