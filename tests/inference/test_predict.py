"""brain_audit.inference.predict_folder: a folder of DICOM files scored as training prepared slices, resumably.

Expected values come from outside the code under test: the model applied in the test to
``preprocess_slice(read_hu(file))`` and to its flip, the z written into each file, the sample submission's
rows, ``audit.statistics.patient_level`` for the study maxima, and the identifiers written into the headers.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_audit.audit.statistics import patient_level
from brain_audit.dataset.cache import preprocess_slice
from brain_audit.dicom import read_hu
from brain_audit.errors import ConfigError, WeightsFileNotFoundError
from brain_audit.inference import predict_folder
from brain_audit.rsna import LABEL_COLUMNS
from support.scoring import BAD, BIRTH_DATE, NAMES, PATIENTS, SERIES_UIDS, SIZE, STUDY_UIDS, spread_model

P_COLUMNS = [f"p_{c}" for c in LABEL_COLUMNS]
OUTPUTS = ("slices.csv", "studies.csv", "unreadable.csv", "submission.csv")


def by_hand(model, paths, flip: bool = False) -> np.ndarray:
    """The model on each file as training saw it: read_hu -> preprocess_slice (int16) -> float32 (N, S, S, 1)."""
    x = np.stack([preprocess_slice(read_hu(p), SIZE) for p in paths]).astype(np.float32)[..., None]
    if flip:
        x = np.flip(x, axis=2)
    return np.asarray(model.predict(x, verbose=0), dtype=np.float64)


def read_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


class TestScores:
    def test_unreadable_files_are_listed_with_their_reason_and_every_other_slice_is_scored(self, scored, data):
        out, summary = scored
        truth = data[1]
        unreadable = pd.read_csv(out / "unreadable.csv")
        assert list(unreadable["image_id"]) == sorted(BAD)
        for row in unreadable.itertuples():
            assert row.reason.startswith(BAD[row.image_id]), row
            assert row.file == f"{row.image_id}.dcm"
        slices = pd.read_csv(out / "slices.csv")
        assert sorted(slices["image_id"]) == sorted(truth["good"])
        assert summary["scored"] == len(truth["good"]) == 12 and summary["unreadable"] == 3
        assert summary["files"] == 15 and summary["read_this_run"] == 15 and summary["scored_this_run"] == 12

    def test_probabilities_equal_the_model_on_the_training_path(self, scored, data, six_model):
        slices = pd.read_csv(scored[0] / "slices.csv").set_index("image_id")
        ids = sorted(data[1]["good"])
        expected = by_hand(six_model[1], [data[1]["good"][i]["path"] for i in ids])
        assert expected.std(axis=0).min() > 0.02  # the model's outputs differ between slices: the test can fail
        np.testing.assert_allclose(slices.loc[ids, P_COLUMNS].to_numpy(), expected, rtol=0, atol=1e-5)

    def test_flip_tta_is_the_mean_over_the_image_and_its_left_right_flip(self, data, six_model, tmp_path):
        summary = predict_folder(six_model[1], data[0] / "stage_2_test", tmp_path, tta=True, workers=0,
                                 progress=False)
        assert summary["tta"] is True
        ids = sorted(data[1]["good"])
        paths = [data[1]["good"][i]["path"] for i in ids]
        plain, flipped = by_hand(six_model[1], paths), by_hand(six_model[1], paths, flip=True)
        assert np.abs(plain - flipped).max() > 0.01  # the flip matters to this model
        got = pd.read_csv(tmp_path / "slices.csv").set_index("image_id").loc[ids, P_COLUMNS].to_numpy()
        np.testing.assert_allclose(got, (plain + flipped) / 2, rtol=0, atol=1e-5)

    def test_slices_are_ordered_by_z_within_their_series(self, scored, data):
        slices = pd.read_csv(scored[0] / "slices.csv")
        good = data[1]["good"]
        np.testing.assert_array_equal(slices["z"], [good[i]["z"] for i in slices["image_id"]])
        for _, g in slices.groupby("series_id"):
            written = sorted(g["image_id"], key=lambda i: good[i]["z"])  # z order from the files' truth
            assert list(g.sort_values("slice_index")["image_id"]) == written
            assert sorted(g["slice_index"]) == list(range(len(g)))
        # one study holds two series; the series of each slice is the one written
        raw_series = slices["image_id"].map(lambda i: good[i]["series"])
        assert (slices.groupby("series_id")["image_id"].count().sort_values().tolist()
                == raw_series.value_counts().sort_values().tolist())
        assert slices.groupby("study_id")["series_id"].nunique().sort_values().tolist() == [1, 2]

    def test_no_identifier_of_the_headers_reaches_an_output(self, scored):
        out = scored[0]
        raw = [*PATIENTS, *NAMES, *(n.replace("^", " ") for n in NAMES), *STUDY_UIDS,
               *(u for s in SERIES_UIDS for u in s), BIRTH_DATE, "SMITH", "JONES"]
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {*OUTPUTS, "summary.json"} and any(p.suffix == ".parquet" for p in files)
        for p in files:
            data = p.read_bytes()
            for value in raw:
                assert value.encode() not in data, f"{value} in {p.name}"
        slices = pd.read_csv(out / "slices.csv")
        assert slices["patient_id"].str.fullmatch(r"PID_[0-9a-f]{16}").all()
        assert slices["study_id"].str.fullmatch(r"STU_[0-9a-f]{16}").all()
        assert slices["series_id"].str.fullmatch(r"SER_[0-9a-f]{16}").all()


class TestSubmission:
    def test_rows_are_the_sample_rows_in_order_six_per_image(self, scored, data):
        out = scored[0]
        sample = pd.read_csv(data[0] / "stage_2_sample_submission.csv")
        sub = pd.read_csv(out / "submission.csv")
        assert list(sub.columns) == ["ID", "Label"]
        assert list(sub["ID"]) == list(sample["ID"])
        assert sub["ID"].is_unique and len(sub) == 6 * len(data[1]["sample_ids"])
        assert sub["Label"].between(0, 1).all()

    def test_scored_images_carry_their_probabilities_and_the_rest_the_stated_fallback(self, scored, data):
        out, summary = scored
        slices = pd.read_csv(out / "slices.csv").set_index("image_id")
        sub = pd.read_csv(out / "submission.csv").set_index("ID")["Label"]
        for i in data[1]["good"]:
            np.testing.assert_array_equal(sub[[f"{i}_{c}" for c in LABEL_COLUMNS]].to_numpy(),
                                          slices.loc[i, P_COLUMNS].to_numpy())
        filled = sorted(BAD) + ["ID_0missing1"]
        mean = slices[P_COLUMNS].mean().to_numpy()
        for i in filled:
            np.testing.assert_allclose(sub[[f"{i}_{c}" for c in LABEL_COLUMNS]].to_numpy(), mean, rtol=0, atol=1e-12)
        s = summary["submission"]
        assert s["filled"] == 4 and s["filled_images"] == sorted(filled) and s["scored_not_in_sample"] == 0
        assert "mean" in s["fallback"] and s["rows"] == len(sub)

    def test_scored_images_missing_from_the_sample_are_left_out_and_counted(self, data, six_model, tmp_path):
        sample = data[0] / "stage_2_sample_submission.csv"
        rows = sample.read_text().splitlines()
        keep = [r for r in rows if not r.startswith(("ID_000000000_", "ID_000000001_"))]
        short = tmp_path / "sample.csv"
        short.write_text("\n".join(keep) + "\n")
        summary = predict_folder(six_model[1], data[0] / "stage_2_test", tmp_path / "out", workers=0,
                                 sample_submission=short, progress=False)
        assert summary["submission"]["scored_not_in_sample"] == 2
        sub = pd.read_csv(tmp_path / "out" / "submission.csv")
        assert list(sub["ID"]) == [r.split(",")[0] for r in keep[1:]]

    def test_an_any_model_writes_no_submission_and_says_why(self, data, tmp_path):
        path = tmp_path / "any.keras"
        spread_model(path, head="any")
        summary = predict_folder(path, data[0] / "stage_2_test", tmp_path / "out", workers=0, progress=False)
        assert summary["submission"] is None and "six" in summary["submission_reason"]
        assert not (tmp_path / "out" / "submission.csv").exists()
        assert list(pd.read_csv(tmp_path / "out" / "slices.csv").columns)[-1] == "p_any"


class TestStudies:
    def test_a_run_folder_flags_studies_at_its_patient_threshold(self, scored, data, six_model, tmp_path):
        run = tmp_path / "run"
        (run / "phase4").mkdir(parents=True)
        shutil.copy(six_model[0], run / "phase4" / "model.keras")
        slices = pd.read_csv(scored[0] / "slices.csv")
        _, _, p_study = patient_level(slices["study_id"], np.zeros(len(slices), int), slices["p_any"], reduce="max")
        threshold = float(np.mean(p_study))  # between the two studies' maxima: one flagged, one not
        (run / "phase4" / "operating_point.json").write_text(json.dumps({"threshold": 0.01,
                                                                          "patient_threshold": threshold}))
        summary = predict_folder(run, data[0] / "stage_2_test", tmp_path / "out", workers=0, progress=False)
        studies = pd.read_csv(tmp_path / "out" / "studies.csv")
        slices = pd.read_csv(tmp_path / "out" / "slices.csv")  # this folder's key gives its own pseudonyms
        _, _, p_study = patient_level(slices["study_id"], np.zeros(len(slices), int), slices["p_any"], reduce="max")
        np.testing.assert_array_equal(studies["p_any_max"], p_study)  # patient_level sorts IDs as studies.csv does
        np.testing.assert_array_equal(studies["flagged"], (p_study >= threshold).astype(int))
        assert sorted(studies["flagged"]) == [0, 1] and summary["flagged"] == 1
        assert summary["threshold"] == threshold and "patient_threshold" in summary["threshold_source"]
        assert studies["slices"].tolist() == slices.groupby("study_id").size().tolist()

    def test_a_run_folder_without_phase_4_is_refused(self, data, tmp_path):
        with pytest.raises(ConfigError, match="finished Phase 4.*phase4"):
            predict_folder(tmp_path, data[0] / "stage_2_test", tmp_path / "out", workers=0, progress=False)


class TestResume:
    def test_a_rerun_scores_only_what_is_missing_and_ends_byte_identical(self, scored, data, six_model, tmp_path):
        out = scored[0]
        reference = read_bytes(out)
        copy = tmp_path / "copy"
        shutil.copytree(out, copy)
        parts = sorted((copy / "parts").glob("part-*.parquet"))
        assert len(parts) == 3  # 15 files in chunks of 5
        lost = pd.read_parquet(parts[1])
        parts[1].unlink()
        for name in OUTPUTS:
            (copy / name).unlink()
        again = predict_folder(six_model[1], data[0] / "stage_2_test", copy, workers=0, chunk=5, progress=False)
        assert again["read_this_run"] == len(lost) == 5
        assert again["scored_this_run"] == int(lost["reason"].isna().sum())
        assert read_bytes(copy) == reference

    def test_an_interrupted_run_resumes_from_its_parts(self, scored, data, six_model, tmp_path):
        out = scored[0]
        reference = read_bytes(out)
        partial = tmp_path / "partial"
        (partial / "parts").mkdir(parents=True)
        shutil.copy(out / "pseudonym.key", partial / "pseudonym.key")
        shutil.copy(out / "parts" / "request.json", partial / "parts" / "request.json")
        kept = min((out / "parts").glob("part-*.parquet"))
        shutil.copy(kept, partial / "parts" / kept.name)
        (partial / "parts" / ".part-x.parquet.abcd1234.part").write_bytes(b"half")  # a killed writer's temporary
        summary = predict_folder(six_model[1], data[0] / "stage_2_test", partial, workers=0, chunk=5, progress=False)
        assert summary["read_this_run"] == 15 - len(pd.read_parquet(kept)) == 10
        assert read_bytes(partial) == reference
        assert not (partial / "parts" / ".part-x.parquet.abcd1234.part").exists()
        # nothing left to score: a second rerun reads no file and writes the same tables
        again = predict_folder(six_model[1], data[0] / "stage_2_test", partial, workers=0, chunk=5, progress=False)
        assert again["read_this_run"] == 0 and again["slices_per_second"] is None
        assert read_bytes(partial) == reference

    def test_a_changed_file_is_scored_again_and_another_request_starts_over(self, data, six_model, tmp_path):
        src = tmp_path / "stage_2_test"
        shutil.copytree(data[0] / "stage_2_test", src)
        out = tmp_path / "out"
        predict_folder(six_model[1], src, out, workers=0, chunk=5, progress=False)
        touched = src / "ID_000000003.dcm"
        st = touched.stat()
        os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert predict_folder(six_model[1], src, out, workers=0, chunk=5, progress=False)["read_this_run"] == 1
        with pytest.warns(RuntimeWarning, match="tta=False"):  # parts of another request are never mixed
            summary = predict_folder(six_model[1], src, out, tta=True, workers=0, chunk=5, progress=False)
        assert summary["read_this_run"] == 15


class TestWorkersAndLayouts:
    def test_worker_processes_give_the_same_tables(self, scored, data, six_model, tmp_path):
        predict_folder(six_model[1], data[0] / "stage_2_test", tmp_path, workers=2, chunk=5, progress=False)
        # pseudonyms are keyed per output folder: compare the probabilities and unreadable lists by image
        mine = pd.read_csv(tmp_path / "slices.csv").set_index("image_id").sort_index()
        ref = pd.read_csv(scored[0] / "slices.csv").set_index("image_id").sort_index()
        np.testing.assert_array_equal(mine[P_COLUMNS + ["z", "slice_index"]], ref[P_COLUMNS + ["z", "slice_index"]])
        assert (tmp_path / "unreadable.csv").read_bytes() == (scored[0] / "unreadable.csv").read_bytes()

    def test_the_dicom_layout_searches_recursively_and_lists_what_is_not_dicom(self, data, six_model, tmp_path):
        folder = tmp_path / "export"
        for k, (i, t) in enumerate(sorted(data[1]["good"].items())[:4]):
            dest = folder / f"series{k % 2}" / f"IM{k:04d}"  # DICOM files without an extension
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(t["path"], dest)
        (folder / "README.txt").write_text("not an image\n")
        out = folder / "scored"  # inside the folder: its own outputs are never scored
        summary = predict_folder(six_model[1], folder, out, layout="dicom", workers=0, progress=False)
        slices = pd.read_csv(out / "slices.csv")
        assert sorted(slices["image_id"]) == ["series0/IM0000", "series0/IM0002", "series1/IM0001", "series1/IM0003"]
        unreadable = pd.read_csv(out / "unreadable.csv")
        assert unreadable["image_id"].tolist() == ["README.txt"]
        assert unreadable["reason"].str.contains("not a DICOM file").all()
        assert summary["submission"] is None and "layout" in summary["submission_reason"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a rerun finds everything done, its outputs included, and reads nothing
            assert predict_folder(six_model[1], folder, out, layout="dicom", workers=0,
                                  progress=False)["read_this_run"] == 0


    def test_a_folder_with_nothing_readable_gives_empty_tables_and_no_submission(self, six_model, tmp_path):
        folder = tmp_path / "stage_2_test"
        folder.mkdir()
        (folder / "ID_0e0e0e0e0.dcm").write_bytes(b"\0" * 64)
        summary = predict_folder(six_model[1], folder, tmp_path / "out", workers=0, progress=False)
        assert summary["scored"] == 0 and summary["unreadable"] == 1 and summary["studies"] == 0
        assert summary["submission"] is None and summary["submission_reason"] == "no slice could be scored"
        assert len(pd.read_csv(tmp_path / "out" / "slices.csv")) == 0
        assert list(pd.read_csv(tmp_path / "out" / "studies.csv").columns) == ["study_id", "patient_id", "slices",
                                                                               "p_any_max"]


class TestArguments:
    def test_a_missing_model_file_is_named(self, data, tmp_path):
        with pytest.raises(WeightsFileNotFoundError, match="nope.keras: no such model file"):
            predict_folder(tmp_path / "nope.keras", data[0] / "stage_2_test", tmp_path / "out", progress=False)

    def test_a_missing_folder_is_named(self, six_model, tmp_path):
        with pytest.raises(ConfigError, match=r"`dicom_dir` must be a folder of DICOM files\. Got '.*absent'"):
            predict_folder(six_model[0], tmp_path / "absent", tmp_path / "out", progress=False)

    @pytest.mark.parametrize("name, value", [("batch_size", 0), ("chunk", 0), ("workers", -1), ("threshold", 1.5)])
    def test_out_of_range_arguments_are_refused(self, six_model, data, tmp_path, name, value):
        with pytest.raises(ConfigError, match=f"`{name}` must be"):
            predict_folder(six_model[0], data[0] / "stage_2_test", tmp_path, progress=False, **{name: value})
