"""brain_audit.dataset.index.index_from_metadata: the header index from a public-style metadata table.

The reference is build_index over the same tiny DICOM files (tests/support/tiny_rsna.py): a table written
from those files' own headers must give the same index.parquet rows, under the same pseudonym key.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from brain_audit.dataset.index import index_from_metadata, read_index, read_skipped
from brain_audit.dicom import read_header
from brain_audit.errors import DicomReadError, MetadataTableError
from brain_audit.ids import KEY_FILE
from brain_audit.rsna import TRAIN_DIR


def _header_table(root):
    """One row per readable tiny file whose header allows a CT slice, as public RSNA tables write them."""
    rows = []
    for path in sorted((root / TRAIN_DIR).glob("*.dcm")):
        try:
            h = read_header(path)
        except DicomReadError:
            continue
        if h["problem"] is not None:  # what only the file tells (Pixel Data cut or missing): not in such tables
            continue
        rows.append({
            "SOPInstanceUID": h["sop_instance_uid"], "PatientID": h["patient_id"],
            "StudyInstanceUID": h["study_instance_uid"], "SeriesInstanceUID": h["series_instance_uid"],
            "ImagePositionPatient": str([f"{v:.6f}" for v in h["image_position"]]),
            "PixelSpacing": str([f"{v:.6f}" for v in h["pixel_spacing"]]),
            "Rows": h["rows"], "Columns": h["columns"], "BitsStored": h["bits_stored"],
            "PixelRepresentation": h["pixel_representation"], "RescaleIntercept": h["rescale_intercept"],
            "RescaleSlope": h["rescale_slope"], "Modality": h["modality"],
        })
    return pd.DataFrame(rows)


def _with_key(tiny_index, tmp_path):
    out = tmp_path / "index"
    out.mkdir()
    shutil.copyfile(tiny_index[2] / KEY_FILE, out / KEY_FILE)  # the same key: the same pseudonyms
    return out


def test_the_same_rows_as_build_index(tiny, tiny_index, tmp_path):
    root, _ = tiny
    table = _header_table(root)
    table.to_csv(tmp_path / "meta.csv", index=False)
    out = _with_key(tiny_index, tmp_path)
    got = index_from_metadata(tmp_path / "meta.csv", root, out)
    expected = tiny_index[1]
    assert len(got) == len(table) == len(expected) == 70
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(read_index(out), read_index(tiny_index[2]))
    assert len(read_skipped(out)) == 0


@pytest.mark.parametrize("style", ["_{k}", "{k}", "parquet"])
def test_split_position_columns_and_parquet(tiny, tiny_index, tmp_path, style):
    root, _ = tiny
    table = _header_table(root)
    xyz = table["ImagePositionPatient"].map(lambda s: [float(v.strip(" '")) for v in s.strip("[]").split(",")])
    if style == "parquet":
        path = tmp_path / "meta.parquet"
        table.to_parquet(path, index=False)
    else:
        table = table.drop(columns="ImagePositionPatient")
        for k in range(3):
            table[f"ImagePositionPatient{style.format(k=k)}"] = xyz.str[k]
        path = tmp_path / "meta.csv"
        table.to_csv(path, index=False)
    got = index_from_metadata(path, root, _with_key(tiny_index, tmp_path))
    pd.testing.assert_frame_equal(got, tiny_index[1])


def test_a_missing_column_is_one_line_naming_it(tiny, tmp_path):
    root, _ = tiny
    _header_table(root).drop(columns=["PatientID"]).to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(MetadataTableError, match=r"^meta\.csv: no column PatientID; a metadata table needs "
                                                 r"SOPInstanceUID, PatientID, .*RescaleSlope \(DICOM keywords"):
        index_from_metadata(tmp_path / "meta.csv", root, tmp_path / "index")
    assert not (tmp_path / "index" / "index.parquet").exists()


def test_bad_rows_are_skipped_with_the_column_named(tiny, tiny_index, tmp_path):
    root, _ = tiny
    table = _header_table(root).astype(object)
    ids = table["SOPInstanceUID"].tolist()
    table.loc[0, "PatientID"] = None
    table.loc[1, "Modality"] = "MR"
    table.loc[2, "RescaleSlope"] = "abc"
    table.loc[3, "Rows"] = None
    table.loc[4, "SOPInstanceUID"] = "../outside"
    extra = table.iloc[[5]].assign(SOPInstanceUID="ID_nofile0000")  # a row without its file
    pd.concat([table, extra]).to_csv(tmp_path / "meta.csv", index=False)
    got = index_from_metadata(tmp_path / "meta.csv", root, _with_key(tiny_index, tmp_path))
    reasons = read_skipped(tmp_path / "index").set_index("image_id")["reason"].to_dict()
    assert reasons[ids[0]] == "(0010,0020) Patient ID missing or unparsable (metadata column PatientID)"
    assert reasons[ids[1]] == "(0008,0060) Modality is 'MR'; expected 'CT'"
    assert reasons[ids[2]] == "(0028,1053) Rescale Slope is 'abc'; not a number (metadata column RescaleSlope)"
    assert reasons[ids[3]] == "(0028,0010) Rows is missing (metadata column Rows)"
    assert reasons["../outside"].startswith("`image_id` must be")
    assert reasons["ID_nofile0000"] == "cannot stat file (No such file or directory)"
    assert len(reasons) == 6
    assert sorted(got.index) == sorted(set(ids) - set(ids[:5]))
    pd.testing.assert_frame_equal(got, tiny_index[1].loc[got.index])


def test_cli_index_metadata(tiny, tmp_path, capsys):
    from brain_audit.cli import main

    root, _ = tiny
    _header_table(root).to_csv(tmp_path / "meta.csv", index=False)
    assert main(["index", str(root), "--metadata", str(tmp_path / "meta.csv"), "--out", str(tmp_path / "ix")]) == 0
    assert capsys.readouterr().out == (f"70 images indexed from meta.csv (14 patients); 0 skipped -> "
                                       f"{tmp_path / 'ix' / 'index.parquet'}\n")
    _header_table(root).drop(columns=["Rows", "RescaleSlope"]).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["index", str(root), "--metadata", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "ix2")]) == 2
    assert capsys.readouterr().err.startswith("brain-audit: error: bad.csv: no column Rows, RescaleSlope; a metadata ")


def test_a_run_starts_from_a_metadata_index(tiny, tmp_path, monkeypatch):
    """Written into <run>/data/index, the table's index spares the run every header it holds."""
    import warnings

    import brain_audit.dataset.index as index_module
    from brain_audit.config import load_config
    from brain_audit.train.prepare import prepare_data

    root, _ = tiny
    _header_table(root).to_csv(tmp_path / "meta.csv", index=False)
    index_from_metadata(tmp_path / "meta.csv", root, tmp_path / "run" / "data" / "index")
    read = []
    real = index_module.read_header
    monkeypatch.setattr(index_module, "read_header", lambda path: read.append(path.rsplit("/", 1)[-1]) or real(path))
    config = load_config(None, [f'data_root="{root}"', f'out_dir="{tmp_path / "run"}"', "image_size=32", "workers=1",
                                "audit_patients=3", "phase1.cohort_size=4", "phase2.cohort_size=0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prepare_data(config, progress=False)
    # only the labelled images the table lacks: the three broken files and the one without a file
    assert sorted(read) == ["ID_badheader0.dcm", "ID_headonly00.dcm", "ID_missing000.dcm", "ID_truncated0.dcm"]
