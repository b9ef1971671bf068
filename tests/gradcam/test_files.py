"""brain_audit.gradcam.files (audit_files) and the ``gradcam`` command: Grad-CAM over DICOM files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


# ----------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_writes_overlays_and_profiles_for_a_phantom_cohort(tmp_path, capsys):
    import pandas as pd

    from brain_audit.cli import main
    from brain_audit.dataset.labels import read_labels
    from brain_audit.model.network import build_model
    from brain_audit.model.weights import save_model
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig

    cohort = generate_cohort(
        tmp_path / "cohort", PhantomConfig(patients=2, slices_per_patient=3, size=128, corrupt_files=1, seed=5), workers=1, progress=False
    )
    model_path = save_model(build_model(image_size=64, weights=None, seed=1), tmp_path / "m.keras")
    out = tmp_path / "audit"
    rc = main(["gradcam", "--model", str(model_path), "--images", cohort["train_dir"], "--out", str(out),
               "--labels", cohort["label_csv"], "--batch-size", "4"])
    assert rc == 0
    table = pd.read_csv(out / "profiles.csv")
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(table) == cohort["images"] == 6 and len(skipped) == 1
    energy = table[[c for c in table.columns if c.startswith("energy_")]].sum(axis=1)
    np.testing.assert_allclose(energy[table["peak_region"] != "none"], 1.0, atol=1e-9)
    labels = read_labels(cohort["label_csv"])
    assert table.set_index("image_id")["label"].to_dict() == labels.loc[table["image_id"], "any"].to_dict()
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == sorted(table["image_id"])
    printed = capsys.readouterr().out
    assert "6 slices explained, 1 skipped" in printed
    sanity = pd.read_csv(out / "sanity.csv")
    assert sanity["randomised"].tolist() == ["predictions", "efficientnetb0/top", "efficientnetb0/block7a", "efficientnetb0/block6d"]
    import json

    record = json.loads((out / "run.json").read_text())
    assert record["sanity"]["trustworthy"] == (sanity["spearman_mean"].iloc[-1] < 0.3)
    # the audits' maps: HiResCAM at the deepest block with >= 16 cells a side (64 px input: block2b, 16 x 16)
    assert record["n_images"] == 6 and record["config"]["layer"] == "efficientnetb0/block2b_add"
    assert record["config"]["method"] == "hirescam" and record["map_resolution"]["map_cells"] == 16
    # the phantom's 250 mm field of view (128 px at 1.953 mm) over 16 cells: 15.625 mm a cell
    np.testing.assert_allclose(table["cell_mm"], 250.0 / 16, rtol=1e-6)
    assert "sanity check (Adebayo et al. 2018)" in printed


def test_audit_files_feeds_the_model_what_the_cache_stores(tmp_path):
    """A non-square DICOM slice: the probability audit_files reports is the model's on preprocess_slice's
    output (padded to a square with air, resized, int16), not on a stretched resize, and the regions are
    found in the same padded geometry (nothing lands in the padding but air)."""
    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.dicom import encode_slice, read_hu
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.network import build_model

    rows, cols = 96, 64
    yy, xx = np.mgrid[0:rows, 0:cols]
    hu = np.where(np.hypot((yy - 48) / 44, (xx - 32) / 30) < 1, 40.0, -1000.0)
    hu[40:50, 20:30] = 3000.0  # a "coil", to make the prediction depend on geometry
    path = tmp_path / "ID_0abc.dcm"
    path.write_bytes(encode_slice(hu, sop_instance_uid="ID_0abc", patient_id="ID_p", study_instance_uid="ID_s",
                                  series_instance_uid="ID_r"))
    model = build_model(image_size=64, weights=None, seed=3)
    table = audit_files(model, [path], tmp_path / "out", overlays=False, sanity_steps=0)
    expected = model.predict(preprocess_slice(read_hu(path), 64).astype("float32")[None, ..., None], verbose=0)[0, 0]
    assert table.loc[0, "probability"] == pytest.approx(float(expected), abs=1e-5)
    # the padded square is 96 x 96 with 16 air columns each side: outside the head is >= that share
    assert table.loc[0, "area_outside_head"] >= 2 * 16 * 96 / 96**2


def test_a_six_label_model_is_explained_at_its_any_output_by_default(tmp_path):
    """Without ``output_index`` the six-label head's ``any`` unit (the last, 5) is explained and reported."""
    import json

    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.dicom import encode_slice, read_hu
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.network import build_model

    hu = np.full((64, 64), -1000.0)
    hu[8:56, 8:56] = 40.0
    hu[20:30, 20:30] = 75.0
    path = tmp_path / "ID_0abd.dcm"
    path.write_bytes(encode_slice(hu, sop_instance_uid="ID_0abd", patient_id="ID_p", study_instance_uid="ID_s",
                                  series_instance_uid="ID_r"))
    model = build_model(image_size=64, head="six", weights=None, seed=4)
    dense = model.get_layer("predictions")
    kernel, _ = dense.get_weights()
    dense.set_weights([kernel, np.array([-3, -2, -1, 0, 1, 2], "float32")])  # six clearly different units
    table = audit_files(model, [path], tmp_path / "out", overlays=False, sanity_steps=0)
    every = model.predict(preprocess_slice(read_hu(path), 64).astype("float32")[None, ..., None], verbose=0)[0]
    assert table.loc[0, "probability"] == pytest.approx(float(every[5]), abs=1e-5)
    assert np.abs(every[5] - every[:5]).min() > 0.1  # the units differ, so the check above tells them apart
    assert json.loads((tmp_path / "out" / "run.json").read_text())["config"]["output_index"] == 5


def test_a_file_whose_name_is_no_id_is_skipped_with_its_reason_and_the_rest_goes_on(tmp_path):
    """The file stem names the overlay; a stem outside the ID rule (a space) is recorded, never used as a name."""
    from brain_audit.dicom import encode_slice
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.network import build_model

    hu = np.full((64, 64), -1000.0)
    hu[8:56, 8:56] = 40.0
    for name in ("ID_0abc", "IM 0001"):
        (tmp_path / f"{name}.dcm").write_bytes(encode_slice(hu, sop_instance_uid="ID_0abc", patient_id="ID_p",
                                                             study_instance_uid="ID_s", series_instance_uid="ID_r"))
    out = tmp_path / "out"
    table = audit_files(build_model(image_size=64, weights=None, seed=3), [tmp_path], out, sanity_steps=0)
    assert table["image_id"].tolist() == ["ID_0abc"] and table.attrs["n_skipped"] == 1
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["file"].str.endswith("IM 0001.dcm").all()
    assert skipped["reason"].str.contains("IM 0001.dcm: `image_id` must be an ID").all()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["ID_0abc.png"]


# ----------------------------------------------------------------------------- argument checks
def test_arguments_are_refused_before_any_file_is_read(tmp_path):
    """Each bad argument is a ConfigError (one line at the command line) naming it; no output is written."""
    from brain_audit.errors import ConfigError
    from brain_audit.gradcam.files import audit_files
    from brain_audit.model.network import build_model

    model = build_model(image_size=32, weights=None, seed=1)
    out = tmp_path / "out"
    cases = [
        (dict(batch_size=0), r"^`batch_size` must be an int >= 1\. Got 0 instead\.$"),
        (dict(batch_size=True), r"^`batch_size` must be an int >= 1\. Got True instead\.$"),
        (dict(sanity_steps=-1), r"^`sanity_steps` must be an int >= 0\. Got -1 instead\.$"),
        (dict(seed=-3), r"^`seed` must be an int >= 0\. Got -3 instead\.$"),
        (dict(threshold=1.5), r"^`threshold` must be in \[0, 1\]\. Got 1\.5 instead\.$"),
        (dict(method="cam"), r"^`method` must be one of \('gradcam', 'gradcam\+\+', 'hirescam', 'layercam'\)\. Got 'cam' instead\.$"),
        (dict(output_index=1), r"^`output_index` must be in \[0, 0\]\. Got 1 instead\.$"),  # the "any" head: one unit
        (dict(layer="nope"), r"^`layer` must name a layer of the model or of a nested sub-model\. Got 'nope' instead; "
                             r"the last of its \d+ layers: .*, predictions$"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            audit_files(model, [tmp_path / "missing.dcm"], out, **kwargs)
    assert not out.exists()
