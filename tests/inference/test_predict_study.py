"""predict_folder with a run's study model (Phase 5): each series rescored whole, in z order, from the parts.

Expected values come from outside the code under test: the slice model's embedder applied in the test to
``preprocess_slice(read_hu(file))`` of every readable file, the series and z written into the files, and
``model.sequence.score_series`` on them (embeddings rounded to float16 as the parts and Phase 5 store them).

The slice model's probabilities move by ~1e-6 with the other slices of a batch (float32 sums in another order),
so the runs compared to ~1e-6 or exactly score one slice per call (``batch_size=1``), as ``by_hand``
(conftest.study_by_hand) does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_audit.cli import main
from brain_audit.errors import ConfigError
from brain_audit.inference import predict_folder
from brain_audit.inference.study import find_study_model
from brain_audit.rsna import LABEL_COLUMNS
from support.dicom_files import edited

P_COLUMNS = [f"p_{c}" for c in LABEL_COLUMNS]
S_COLUMNS = [f"p_study_{c}" for c in LABEL_COLUMNS]
OUTPUTS = ("slices.csv", "studies.csv", "unreadable.csv", "submission.csv")


def read_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def study_scored(data, study_run, tmp_path_factory):
    """(out folder, summary) of predict_folder on the test folder with the study run, in chunks of 5 files."""
    out = tmp_path_factory.mktemp("study_predicted")
    summary = predict_folder(study_run[0], data[0] / "stage_2_test", out, workers=0, chunk=5, batch_size=1,
                             progress=False)
    return out, summary


class TestStudyScores:
    def test_study_columns_equal_score_series_on_the_same_files(self, study_scored, data, study_run, six_model,
                                                                 by_hand):
        slices = pd.read_csv(study_scored[0] / "slices.csv").set_index("image_id")
        good = data[1]["good"]
        ids = sorted(good)
        p_slice, p_study = by_hand(six_model[1], study_run[1], good, ids)
        np.testing.assert_allclose(slices.loc[ids, S_COLUMNS].to_numpy(), p_study, rtol=0, atol=1e-6)
        np.testing.assert_allclose(slices.loc[ids, P_COLUMNS].to_numpy(), p_slice, rtol=0, atol=1e-6)
        assert np.abs(p_study - p_slice).max() > 0.05  # the study model changes the scores: the test can fail
        _, reversed_z = by_hand(six_model[1], study_run[1], good, ids, z_sign=-1.0)
        assert np.abs(reversed_z - p_study).max() > 1e-3  # and the order along z matters to it

    def test_studies_are_flagged_at_the_phase5_threshold_and_the_summary_names_the_model(self, study_scored,
                                                                                         study_run):
        out, summary = study_scored
        slices = pd.read_csv(out / "slices.csv")
        studies = pd.read_csv(out / "studies.csv").set_index("study_id")
        expected = slices.groupby("study_id")["p_study_any"].max()
        np.testing.assert_array_equal(studies.loc[expected.index, "p_study_any_max"], expected)
        np.testing.assert_array_equal(studies.loc[expected.index, "p_any_max"],
                                      slices.groupby("study_id")["p_any"].max())  # the slice columns stay
        threshold = json.loads((study_run[0] / "phase5" / "operating_point.json").read_text())["patient_threshold"]
        np.testing.assert_array_equal(studies["flagged_study"], (studies["p_study_any_max"] >= threshold).astype(int))
        assert sorted(studies["flagged_study"]) == [0, 1]  # the threshold lies between the two studies
        s = summary["study_model"]
        assert summary["submission_scores"] == "study model" and summary["study_reason"] is None
        assert s["path"] == str(study_run[2])
        assert s["sha256"] == hashlib.sha256(study_run[2].read_bytes()).hexdigest()
        assert s["slices_scored"] == 12 and s["slices_kept_slice_model"] == 0 and s["flagged"] == 1
        assert s["threshold"] == threshold and s["threshold_source"] == "phase5/operating_point.json patient_threshold"

    def test_the_submission_holds_the_study_probabilities(self, study_scored, data):
        out = study_scored[0]
        slices = pd.read_csv(out / "slices.csv").set_index("image_id")
        sub = pd.read_csv(out / "submission.csv").set_index("ID")["Label"]
        for i in data[1]["good"]:
            np.testing.assert_array_equal(sub[[f"{i}_{c}" for c in LABEL_COLUMNS]].to_numpy(),
                                          slices.loc[i, S_COLUMNS].to_numpy())
        assert list(sub.index) == list(pd.read_csv(data[0] / "stage_2_sample_submission.csv")["ID"])

    def test_tta_flips_for_the_slice_columns_only_and_a_slice_without_series_keeps_its_score(
            self, data, study_run, six_model, tmp_path, by_hand):
        good = data[1]["good"]
        folder = tmp_path / "stage_2_test"
        folder.mkdir()
        ids = sorted(good)[:5]  # one whole series
        for i in ids:
            shutil.copy(good[i]["path"], folder)
        other = good[sorted(good)[6]]["path"].read_bytes()  # a slice of another series, its series UID removed
        (folder / "ID_0f0f0f0f0.dcm").write_bytes(edited(other, SeriesInstanceUID=None))
        summary = predict_folder(study_run[0], folder, tmp_path / "out", tta=True, workers=0, batch_size=1,
                                 progress=False)
        slices = pd.read_csv(tmp_path / "out" / "slices.csv").set_index("image_id")
        plain, p_study = by_hand(six_model[1], study_run[1], good, ids)
        flipped, _ = by_hand(six_model[1], study_run[1], good, ids, flip=True)
        assert np.abs(plain - flipped).max() > 0.01  # the flip matters to this model
        np.testing.assert_allclose(slices.loc[ids, P_COLUMNS].to_numpy(), (plain + flipped) / 2, rtol=0, atol=1e-6)
        np.testing.assert_allclose(slices.loc[ids, S_COLUMNS].to_numpy(), p_study, rtol=0, atol=1e-6)
        assert pd.isna(slices.loc["ID_0f0f0f0f0", "series_id"])
        np.testing.assert_array_equal(slices.loc["ID_0f0f0f0f0", S_COLUMNS].to_numpy(dtype=float),
                                      slices.loc["ID_0f0f0f0f0", P_COLUMNS].to_numpy(dtype=float))
        assert summary["study_model"]["slices_scored"] == 5 and summary["study_model"]["slices_kept_slice_model"] == 1


class TestOrderAndResume:
    def test_files_of_a_series_renamed_and_shuffled_give_identical_scores(self, study_scored, data, study_run,
                                                                          tmp_path):
        good = data[1]["good"]
        rng = np.random.default_rng(3)
        names = {i: f"{'abc'[k % 3]}/IM{n:03d}" for k, (i, n) in
                 enumerate(zip(sorted(good), rng.permutation(len(good))))}  # no name follows z or the series
        folder = tmp_path / "export"
        for i, name in names.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(good[i]["path"], folder / name)
        out = tmp_path / "out"
        out.mkdir()
        shutil.copy(study_scored[0] / "pseudonym.key", out / "pseudonym.key")  # the same series IDs
        summary = predict_folder(study_run[0], folder, out, layout="dicom", workers=0, chunk=2, batch_size=1,
                                 progress=False)
        assert summary["submission"] is None and summary["study_model"]["slices_scored"] == 12
        mine = pd.read_csv(out / "slices.csv").set_index("image_id")
        ref = pd.read_csv(study_scored[0] / "slices.csv").set_index("image_id")
        back = mine.rename(index={v: k for k, v in names.items()}).loc[ref.index]
        np.testing.assert_array_equal(back[S_COLUMNS + ["slice_index"]], ref[S_COLUMNS + ["slice_index"]])
        np.testing.assert_array_equal(back["series_id"], ref["series_id"])

    def test_an_interrupted_run_resumes_to_the_same_bytes(self, study_scored, data, study_run, tmp_path):
        out = study_scored[0]
        reference = read_bytes(out)
        partial = tmp_path / "partial"
        (partial / "parts").mkdir(parents=True)
        shutil.copy(out / "pseudonym.key", partial / "pseudonym.key")
        shutil.copy(out / "parts" / "request.json", partial / "parts" / "request.json")
        kept = sorted((out / "parts").glob("part-*.parquet"))[1]
        shutil.copy(kept, partial / "parts" / kept.name)
        assert pd.read_parquet(kept)["embedding"].notna().sum() > 0  # the part holds embeddings
        summary = predict_folder(study_run[0], data[0] / "stage_2_test", partial, workers=0, chunk=5, batch_size=1,
                                 progress=False)
        assert summary["read_this_run"] == 10
        assert read_bytes(partial) == reference

    def test_no_study_is_as_without_phase5_and_parts_scored_before_phase5_are_scored_again(
            self, study_scored, data, study_run, six_model, tmp_path, capsys, make_run):
        run = tmp_path / "run"
        make_run(run, six_model[0], study=False)
        a, b = tmp_path / "a", tmp_path / "b"
        for out in (a, b):  # one pseudonym key: the same series IDs, the same series batches, the same bytes
            out.mkdir()
            shutil.copy(study_scored[0] / "pseudonym.key", out / "pseudonym.key")
        before = predict_folder(run, data[0] / "stage_2_test", a, workers=0, chunk=5, batch_size=1, progress=False)
        assert before["study_model"] is None and "phase5" in before["study_reason"]
        assert before["submission_scores"] == "slice model"
        assert "p_study_any" not in pd.read_csv(a / "slices.csv").columns
        code = main(["predict", "--model", str(study_run[0]), "--data-root", str(data[0]), "--out", str(b),
                     "--no-study", "--workers", "0", "--chunk", "5", "--batch-size", "1", "--quiet"])
        assert code == 0 and "submission scored by the slice model" in capsys.readouterr().out
        assert read_bytes(b) == read_bytes(a)  # --no-study: the outputs of a run without Phase 5
        assert "embedding" not in json.loads((b / "parts" / "request.json").read_text())

        shutil.copytree(study_run[0] / "phase5", run / "phase5")  # Phase 5 finishes after `a` was scored
        with pytest.warns(RuntimeWarning, match=r"embedding=None \(now \{'layer': 'avg_pool'"):
            after = predict_folder(run, data[0] / "stage_2_test", a, workers=0, chunk=5, batch_size=1,
                                   progress=False)
        assert after["read_this_run"] == 15 and after["submission_scores"] == "study model"
        slices = pd.read_csv(a / "slices.csv").set_index("image_id").sort_index()
        ref = pd.read_csv(study_scored[0] / "slices.csv").set_index("image_id").sort_index()
        np.testing.assert_array_equal(slices[P_COLUMNS + S_COLUMNS], ref[P_COLUMNS + S_COLUMNS])


class TestSwitch:
    def test_study_true_without_phase5_is_refused_naming_the_file(self, data, six_model, tmp_path, capsys, make_run):
        run = tmp_path / "run"
        make_run(run, six_model[0], study=False)
        with pytest.raises(ConfigError, match=r"finished Phase 5: .*phase5/model\.keras is missing"):
            predict_folder(run, data[0] / "stage_2_test", tmp_path / "out", study=True, progress=False)
        with pytest.raises(ConfigError, match=r"`study` needs a run folder .* Got the model file"):
            predict_folder(six_model[0], data[0] / "stage_2_test", tmp_path / "out", study=True, progress=False)
        assert not (tmp_path / "out").exists()
        code = main(["predict", "--model", str(run), "--data-root", str(data[0]), "--out", str(tmp_path / "o"),
                     "--study", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "phase5/model.keras is missing" in err

    def test_a_phase5_of_another_slice_model_is_not_used(self, study_run, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(study_run[0], run)
        assert find_study_model(run, None)[0].path == run / "phase5" / "model.keras"
        (run / "phase5" / "run.json").write_text(json.dumps({"inputs": {"phase4_model": "0" * 64}}))
        with pytest.raises(ConfigError, match="another Phase-4 model"):
            find_study_model(run, True)
        with pytest.warns(RuntimeWarning, match="another Phase-4 model"):
            assert find_study_model(run, None)[0] is None
        assert find_study_model(run, False) == (None, "not asked for (study=False)")
