"""brain_audit.rsna: the names of the RSNA 2019 dataset layout, against the Kaggle competition's own files.

The expected names are those of the competition's data page and its ``stage_2_train.csv``, written out here.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from brain_audit.errors import BrainAuditError, ConfigError, DataNotFoundError
from brain_audit.rsna import (
    LABEL_COLUMNS,
    SUBTYPES,
    TRAIN_CSV,
    TRAIN_DIR,
    find_rsna_root,
    image_path,
    resolve_data_root,
)


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


# ---------------------------------------------------------------- find_rsna_root

COMPETITION = "rsna-intracranial-hemorrhage-detection"


def _root(folder: Path, n_images: int = 2) -> Path:
    """An RSNA-layout root: the label file beside a train folder of ``n_images`` empty .dcm files."""
    (folder / TRAIN_DIR).mkdir(parents=True)
    (folder / TRAIN_CSV).write_text("ID,Label\n")
    for k in range(n_images):
        (folder / TRAIN_DIR / f"ID_{k:09x}.dcm").write_bytes(b"")
    return folder


class TestFindRsnaRoot:
    def test_the_competition_mount(self, tmp_path):
        root = _root(tmp_path / COMPETITION)
        assert find_rsna_root([tmp_path]) == root

    def test_the_nested_mount(self, tmp_path):
        root = _root(tmp_path / COMPETITION / COMPETITION)
        (tmp_path / COMPETITION / "README.txt").write_text("x")
        assert find_rsna_root([tmp_path]) == root

    def test_a_copy_under_another_name_among_decoys(self, tmp_path):
        (tmp_path / "aaa-decoy").mkdir()
        (tmp_path / "aaa-decoy" / TRAIN_CSV).write_text("ID,Label\n")  # a label file without its folder
        (tmp_path / "bbb-decoy" / TRAIN_DIR).mkdir(parents=True)  # a folder without its label file
        (tmp_path / "ccc-decoy").mkdir()
        (tmp_path / "ccc-decoy" / TRAIN_DIR).write_text("a file, not a folder")
        (tmp_path / "ccc-decoy" / TRAIN_CSV).write_text("ID,Label\n")
        root = _root(tmp_path / "zz-my-copy" / "rsna")
        assert find_rsna_root([tmp_path]) == root

    def test_several_roots_the_shallowest_with_a_warning(self, tmp_path):
        deep = _root(tmp_path / "a" / "b" / "c")
        shallow = _root(tmp_path / "z")
        with pytest.warns(RuntimeWarning, match=f"2 RSNA data roots found .*; using the shallowest, {shallow}$"):
            assert find_rsna_root([tmp_path]) == shallow
        assert find_rsna_root([tmp_path / "a"]) == deep

    def test_max_depth(self, tmp_path):
        _root(tmp_path / "1" / "2" / "3")
        assert find_rsna_root([tmp_path], max_depth=3) == tmp_path / "1" / "2" / "3"
        with pytest.raises(DataNotFoundError):
            find_rsna_root([tmp_path], max_depth=2)

    def test_nothing_found_names_every_folder_looked_in_and_the_fix(self, tmp_path):
        (tmp_path / "input" / "some-dataset" / "sub").mkdir(parents=True)
        (tmp_path / "input" / "other").mkdir()
        missing = tmp_path / "nowhere"
        with pytest.raises(DataNotFoundError) as info:
            find_rsna_root([tmp_path / "input", missing, tmp_path / "input"])
        msg = str(info.value)
        assert "\n" not in msg and isinstance(info.value, ConfigError)
        looked = [tmp_path / "input", missing, tmp_path / "input" / "other", tmp_path / "input" / "some-dataset",
                  tmp_path / "input" / "some-dataset" / "sub"]
        assert f"(looked in 5 folder(s), 4 level(s) deep: {', '.join(map(str, looked))})" in msg
        assert msg.startswith("no RSNA data found: no folder holds stage_2_train.csv beside stage_2_train/")
        assert "attach the competition data" in msg and msg.endswith("or set DEMO = True for the phantom demo")

    def test_a_long_list_is_shortened_with_a_count(self, tmp_path):
        for k in range(20):
            (tmp_path / f"d{k:02d}").mkdir()
        with pytest.raises(DataNotFoundError, match=r"looked in 21 folder\(s\).*d10 and 9 more\); attach"):
            find_rsna_root([tmp_path])

    def test_never_lists_the_image_folders(self, tmp_path, monkeypatch):
        root = _root(tmp_path / COMPETITION, n_images=5)
        (root / "stage_2_test").mkdir()
        listed = []
        real = os.scandir

        def counting(path="."):
            listed.append(os.path.basename(os.fspath(path)))
            return real(path)

        monkeypatch.setattr(os, "scandir", counting)
        assert find_rsna_root([tmp_path]) == root
        assert sorted(listed) == sorted([tmp_path.name, COMPETITION])

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
    def test_an_unreadable_image_folder_is_not_entered(self, tmp_path):
        root = _root(tmp_path / COMPETITION)
        (root / TRAIN_DIR).chmod(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert find_rsna_root([tmp_path]) == root
        finally:
            (root / TRAIN_DIR).chmod(0o755)


def test_resolve_data_root(tmp_path):
    root = _root(tmp_path / COMPETITION)
    assert resolve_data_root("auto", [tmp_path]) == root
    assert resolve_data_root("AUTO ", [tmp_path]) == root
    assert resolve_data_root(tmp_path / "x", [tmp_path]) == tmp_path / "x"  # a folder is taken as given
    with pytest.raises(DataNotFoundError):
        resolve_data_root("auto", [tmp_path / "empty"])
