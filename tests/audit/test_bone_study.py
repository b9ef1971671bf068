"""brain_audit.audit.bone_study: the interventions on drawn, phantom and real CT slices; the statistics against
hand-computed values and scipy; the study on a hand-built model whose change is known; the run on the quick demo."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from brain_audit.audit.bone_study import (
    FILL_HU,
    bone_mask,
    bone_study,
    mcnemar_exact,
    null_perturbation,
    remove_bone,
)
from brain_audit.audit.statistics import wilson_interval
from brain_audit.rsna import SUBTYPES
from brain_audit.skull import region_masks
from support.heads import SIDE, disc, head_slice

BONE = 300.0  # HU above which a pixel is bone (textbook cortical bone is far above; blood tops out at 90)


def _quiet_masks(hu):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return region_masks(hu)


def _crescent_head():
    """A drawn head whose subdural crescent (70 HU) lies against the inner table on the right."""
    hu, drawn = head_slice()
    hu = hu.astype(np.float32)
    crescent = drawn["intracranial"] & ~disc(21, 32, 29) & (np.mgrid[0:SIDE, 0:SIDE][1] > 32)
    hu[crescent] = 70.0
    return hu, drawn, crescent


# ----------------------------------------------------------------------------- remove_bone
class TestRemoveBone:
    def test_drawn_head_loses_its_skull_and_keeps_a_crescent_touching_the_inner_table(self):
        hu, drawn, crescent = _crescent_head()
        assert (ndimage.binary_dilation(crescent) & drawn["skull"]).any()  # the crescent touches the bone
        out = remove_bone(hu)
        assert out.dtype == np.float32 and out.shape == hu.shape
        np.testing.assert_array_equal(out[drawn["skull"]], np.float32(FILL_HU))
        np.testing.assert_array_equal(out[~drawn["skull"]], hu[~drawn["skull"]])
        np.testing.assert_array_equal(out[crescent], 70.0)
        assert hu[drawn["skull"]].min() == 800  # the input is untouched

    def test_fill_is_a_parameter(self):
        hu, drawn, _ = _crescent_head()
        np.testing.assert_array_equal(remove_bone(hu, fill_hu=-1000.0)[drawn["skull"]], -1000.0)

    def test_real_ct_slice(self):
        pydicom = pytest.importorskip("pydicom")
        from brain_audit.dicom import read_hu

        hu = read_hu(pydicom.data.get_testdata_file("CT_small.dcm"))
        masks = _quiet_masks(hu)
        out = remove_bone(hu, masks)
        changed = out != hu
        assert changed.sum() > 500
        assert (hu[changed] > BONE).all()  # only bone-dense pixels change ...
        assert (out[changed] == FILL_HU).all()  # ... to water
        np.testing.assert_array_equal(out[hu <= BONE], hu[hu <= BONE])  # soft tissue, fat, air untouched

    def test_phantom_extra_axial_blood_survives(self):
        from brain_audit import phantom

        cfg = phantom.PhantomConfig(patients=2, slices_per_patient=8, size=128, seed=3, prevalence=1.0)
        hu, truth = phantom.render_slice(cfg, 0, 3)  # a subdural haematoma along the inner table
        blood = truth["subdural"] & (hu < BONE)  # the truth mask's blood pixels (its rim is partial volume)
        out = remove_bone(hu, _quiet_masks(hu))
        removed = out != hu
        assert blood.sum() > 100
        assert (ndimage.binary_dilation(blood) & removed).sum() > 20  # the blood touches the removed bone
        np.testing.assert_array_equal(out[blood], hu[blood])
        assert removed.sum() > 0.5 * truth["skull"].sum()

    def test_extracranial_metal_goes_intracranial_metal_stays(self):
        hu, _, _ = _crescent_head()
        hu[30:32, 30:32] = 3000.0  # a coil inside
        hu[2:4, 30:32] = 3000.0  # an earring outside the skull, in the scalp
        masks = _quiet_masks(hu)
        assert masks["metal"][30, 30] and masks["metal"][2, 30]
        out = remove_bone(hu, masks)
        assert out[30, 30] == 3000.0 and out[2, 30] == FILL_HU
        assert bone_mask(masks)[2, 30] and not bone_mask(masks)[30, 30]

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"^`hu` must be 2-D \(H, W\)\. Got shape \(2, 8, 8\) instead\.$"):
            remove_bone(np.zeros((2, 8, 8)))
        hu, _, _ = _crescent_head()
        with pytest.raises(ValueError, match=r"^`fill_hu` must be finite\. Got nan instead\.$"):
            remove_bone(hu, fill_hu=float("nan"))


# ----------------------------------------------------------------------------- null_perturbation
class TestNullPerturbation:
    @pytest.mark.parametrize("source", ["drawn", "real"])
    def test_same_number_of_pixels_and_no_bone(self, source):
        if source == "drawn":
            hu, _, _ = _crescent_head()
        else:
            pydicom = pytest.importorskip("pydicom")
            from brain_audit.dicom import read_hu

            hu = read_hu(pydicom.data.get_testdata_file("CT_small.dcm"))
        masks = _quiet_masks(hu)
        bone = remove_bone(hu, masks) != hu
        control = null_perturbation(hu, masks, rng=1)
        changed = control != hu
        assert changed.sum() == bone.sum() > 0
        assert not (changed & bone).any()
        assert (hu[changed] <= BONE).all()  # no bone-dense pixel anywhere changes
        assert not (changed & masks["intracranial"]).any()
        assert (control[changed] == FILL_HU).all()

    def test_band_next_to_the_skull(self):
        hu, drawn, _ = _crescent_head()
        changed = null_perturbation(hu, rng=0) != hu
        scalp = drawn["head"] & ~disc(25, 32, 32)  # the drawn scalp ring, radius 25-27
        assert (changed & scalp).sum() == (scalp & (hu != FILL_HU)).sum()  # the whole scalp goes first
        ring = disc(31, 32, 32)  # then the air nearest to it: nothing far out
        assert not (changed & ~ring).any()

    def test_seeded(self):
        hu, _, _ = _crescent_head()
        np.testing.assert_array_equal(null_perturbation(hu, rng=5), null_perturbation(hu, rng=5))

    def test_no_bone_no_change(self):
        hu = np.full((32, 32), -1000.0, np.float32)
        hu[8:24, 8:24] = 40.0
        np.testing.assert_array_equal(null_perturbation(hu, _quiet_masks(hu)), hu)


# ----------------------------------------------------------------------------- statistics
class TestWilson:
    # Newcombe RG. Two-sided confidence intervals for the single proportion. Stat Med 1998; Table I, method 3.
    @pytest.mark.parametrize("k, n, lo, hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                              (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
    def test_newcombe_table(self, k, n, lo, hi):
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=6e-5)

    def test_by_hand_3_of_10(self):
        # z = 1.959964, z^2 = 3.841459: centre (3 + z^2/2) / (10 + z^2) = 4.920730 / 13.841459 = 0.355507,
        # half z / (10 + z^2) sqrt(3 * 7 / 10 + z^2/4) = 0.141601 * 1.749390 = 0.247715
        assert wilson_interval(3, 10) == pytest.approx((0.107791, 0.603222), abs=2e-6)

    def test_never_zero_width(self):
        for n in (1, 5, 50):
            for k in (0, n):
                lo, hi = wilson_interval(k, n)
                assert hi - lo > 0.01

    def test_bad(self):
        with pytest.raises(ValueError, match=r"^`successes` must be an integer in \[0, n=3\]\. Got 4 instead\.$"):
            wilson_interval(4, 3)
        with pytest.raises(ValueError, match=r"`n` must be an integer >= 1\. Got 0 instead\."):
            wilson_interval(0, 0)


class TestMcNemar:
    def test_hand_built_table(self):
        # 2x2: 10 alarms before and after, 1 resolved, 7 new, 20 quiet before and after.
        before = np.array([1] * 10 + [1] * 1 + [0] * 7 + [0] * 20)
        after = np.array([1] * 10 + [0] * 1 + [1] * 7 + [0] * 20)
        got = mcnemar_exact(before, after)
        # exact two-sided: 2 P(X <= 1 | Binomial(8, 1/2)) = 2 (1 + 8) / 256
        assert got == {"before": 11, "after": 17, "resolved": 1, "new": 7, "p_value": pytest.approx(18 / 256)}

    def test_no_discordant_pairs(self):
        assert mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0


# ----------------------------------------------------------------------------- bone_study on a known model
def _bone_model(bias: float = -0.1):
    """logit = mean over the image of max(HU - 0, 0) where HU >= 300 (bone, else 0) / 100 + bias."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((SIDE, SIDE, 1))
    x = keras.layers.ReLU(threshold=BONE)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(x))
    dense.set_weights([np.array([[0.01]], "float32"), np.array([bias], "float32")])
    return model


@pytest.fixture(scope="module")
def known_study():
    """24 drawn heads (8 patients x 3) with skulls of different thickness through the hand-built bone model."""
    outers = [23 + (i % 4) for i in range(24)]  # outer radius 23-26 px, inner 21: 4 skull thicknesses
    hu = np.stack([head_slice(outer=o, scalp=29)[0] for o in outers])
    skull_px = np.array([(disc(o, 32, 32) & ~disc(21, 32, 32)).sum() for o in outers])
    labels = np.array([1] * 12 + [0] * 12)
    sub = np.zeros((24, len(SUBTYPES)), int)
    sub[0:6, SUBTYPES.index("intraparenchymal")] = 1
    sub[5:12, SUBTYPES.index("subdural")] = 1  # slice 5 in both deep and superficial
    patients = np.repeat([f"P{k}" for k in range(8)], 3)
    result = bone_study(_bone_model(), hu, labels=labels, subtypes=sub, patient_ids=patients, threshold=0.5,
                        n_boot=200, seed=0)
    # by hand: the bone model's logit falls by 800 HU x skull pixels / 64^2 / 100 when the skull goes
    expected = -800.0 * skull_px / SIDE**2 / 100.0
    return result, expected, labels


class TestBoneStudyKnownModel:
    def test_logit_change_is_the_bone_the_model_sees(self, known_study):
        result, expected, _ = known_study
        slices = result["slices"]
        np.testing.assert_allclose(slices["dlogit_bone_removed"], expected, atol=2e-5)
        np.testing.assert_array_equal(slices["dlogit_control"], 0.0)  # the control touches no bone

    def test_groups(self, known_study):
        result, _, _ = known_study
        g = result["summary"]["groups"]
        assert (g["deep"]["n_slices"], g["superficial"]["n_slices"], g["subarachnoid"]["n_slices"],
                g["negative"]["n_slices"]) == (6, 7, 0, 12)
        assert (g["deep"]["n_patients"], g["superficial"]["n_patients"], g["negative"]["n_patients"]) == (2, 3, 4)
        assert result["slices"]["groups"][5] == "deep;superficial"

    def test_direction_share_and_wilcoxon(self, known_study):
        result, expected, labels = known_study
        neg = result["summary"]["groups"]["negative"]
        assert neg["bone_removed"]["rose"] == 0 and neg["bone_removed"]["share_rose"] == 0.0
        assert neg["bone_removed"]["share_rose_ci95"] == pytest.approx(wilson_interval(0, 12))  # hand-checked above
        assert neg["bone_removed"]["share_rose_ci95"][1] > 0.2
        assert neg["bone_removed"]["median_delta_logit"] == pytest.approx(np.median(expected[labels == 0]), abs=2e-5)
        assert neg["bone_removed"]["wilcoxon_p"] == pytest.approx(stats.wilcoxon(expected[labels == 0]).pvalue)
        assert np.isnan(neg["control"]["wilcoxon_p"]) and neg["control"]["unchanged"] == 12

    def test_bone_against_control(self, known_study):
        result, expected, labels = known_study
        vs = result["summary"]["groups"]["negative"]["bone_vs_control"]
        assert vs["rose"] == 0  # the control leaves the bone model's score as it is
        assert vs["median_delta_logit"] == pytest.approx(np.median(expected[labels == 0]), abs=2e-5)

    def test_bootstrap_only_from_ten_slices(self, known_study):
        result, expected, labels = known_study
        g = result["summary"]["groups"]
        assert g["deep"]["bone_removed"]["median_delta_logit_ci95"].startswith("not estimable")
        lo, hi = g["negative"]["bone_removed"]["median_delta_logit_ci95"]
        d = expected[labels == 0]
        assert d.min() - 1e-5 <= lo <= np.median(d) <= hi <= d.max() + 1e-5 and lo < hi

    def test_false_alarms_resolved(self, known_study):
        result, _, _ = known_study
        neg = result["summary"]["groups"]["negative"]
        # every negative scores sigmoid(800 x >= 276 px / 64^2 / 100 - 0.1) > 0.5 as is, sigmoid(-0.1) < 0.5 without
        assert neg["bone_removed"]["false_alarms"] == {"before": 12, "after": 0, "resolved": 12, "new": 0,
                                                       "p_value": pytest.approx(2 * 0.5**12)}
        assert neg["control"]["false_alarms"]["p_value"] == 1.0

    def test_subtypes_as_a_table_and_errors(self):
        hu = np.stack([head_slice()[0]] * 2)
        sub = pd.DataFrame(np.zeros((2, 5), int), columns=list(SUBTYPES))
        out = bone_study(_bone_model(), hu, labels=[0, 0], subtypes=sub, patient_ids=["a", "b"], threshold=0.5,
                         n_boot=10)
        assert out["summary"]["groups"]["negative"]["n_slices"] == 2
        with pytest.raises(ValueError, match=r"^`labels` must be 2 values of 0 or 1\. Got 2 values \[0, 2\] instead"):
            bone_study(_bone_model(), hu, labels=[0, 2], subtypes=sub, patient_ids=["a", "b"], threshold=0.5)
        with pytest.raises(ValueError, match=r"^`threshold` must be in \[0, 1\]\. Got 1\.5 instead\.$"):
            bone_study(_bone_model(), hu, labels=[0, 0], subtypes=sub, patient_ids=["a", "b"], threshold=1.5)


# ----------------------------------------------------------------------------- the run on the quick demo
@pytest.mark.slow
def test_run_bone_study_on_the_quick_run(quick_run, tmp_path):
    from brain_audit.audit.bone_study import run_bone_study
    from support.run_copy import copy_run

    config, out, _ = quick_run
    config, run, _ = copy_run(config, out, tmp_path / "run")
    summary = run_bone_study(config, n_boot=50)
    d = run / "clinical_audit_report" / "bone_study"
    for name in ("slices.csv", "summary.json", "bone_study.md", "bone_study.png", "run.json"):
        assert (d / name).is_file(), name
    slices = pd.read_csv(d / "slices.csv", dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    audit = pd.read_csv(run / "clinical_audit_report" / "slices.csv", dtype={"image_id": str}).set_index("image_id")
    # the unchanged scores are the held-out audit's, computed there by another path (predict_ids over the cache)
    np.testing.assert_allclose(slices["p_orig"], audit.loc[slices["image_id"], "probability"], atol=1e-5)
    np.testing.assert_allclose(slices["dlogit_bone_removed"],
                               np.log(np.clip(slices["p_bone_removed"], 1e-7, 1 - 1e-7)
                                      / np.clip(1 - slices["p_bone_removed"], 1e-7, 1))
                               - np.log(np.clip(slices["p_orig"], 1e-7, 1 - 1e-7)
                                        / np.clip(1 - slices["p_orig"], 1e-7, 1)), atol=1e-4)
    assert json.loads((d / "summary.json").read_text())["n_slices"] == len(slices) == summary["n_slices"]
    neg = slices["label"] == 0
    assert summary["groups"]["negative"]["n_slices"] == int(neg.sum())
    thr = json.loads((run / "phase4" / "operating_point.json").read_text())["threshold"]
    assert summary["groups"]["negative"]["bone_removed"]["false_alarms"]["before"] == int(
        (slices.loc[neg, "p_orig"] >= thr).sum())
    assert (slices["pixels_changed"] > 0).mean() > 0.8
    md = (d / "bone_study.md").read_text()
    assert md.startswith("**Synthetic phantom cohort, not a clinical result")
    assert md.count("| figure | bone removed | control |") == 4


class TestBoneStudyContext:
    def test_a_neighbours_skull_is_removed_by_its_own_mask(self):
        """A 2.5-D input (N, S, S, 3) through a bone model that reads channel 0 only (the slice below): the logit
        change is that neighbour's skull (outer radius 26 px), not the slice's own (23 px); ``pixels_changed``
        counts the slice itself."""
        keras = pytest.importorskip("keras")
        inp = keras.Input((SIDE, SIDE, 3))
        x = keras.layers.Lambda(lambda t: t[..., :1])(inp)
        x = keras.layers.ReLU(threshold=BONE)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        dense = keras.layers.Dense(1, activation="sigmoid")
        model = keras.Model(inp, dense(x))
        dense.set_weights([np.array([[0.01]], "float32"), np.array([-0.1], "float32")])
        below, centre, above = (head_slice(outer=o, scalp=29)[0] for o in (26, 23, 24))
        hu = np.repeat(np.stack([below, centre, above], axis=-1)[None], 4, axis=0)
        result = bone_study(model, hu, labels=[1, 1, 0, 0], subtypes=np.zeros((4, len(SUBTYPES)), int),
                            patient_ids=["P0", "P0", "P1", "P1"], threshold=0.5, n_boot=20, seed=0)
        slices = result["slices"]
        skull_below = (disc(26, 32, 32) & ~disc(21, 32, 32)).sum()
        np.testing.assert_allclose(slices["dlogit_bone_removed"], -800.0 * skull_below / SIDE**2 / 100.0, atol=2e-5)
        np.testing.assert_array_equal(slices["dlogit_control"], 0.0)  # the control touches no bone on any channel
        skull_centre = (disc(23, 32, 32) & ~disc(21, 32, 32)).sum()
        assert (slices["pixels_changed"] == skull_centre).all()

    def test_an_even_channel_count_is_refused(self):
        with pytest.raises(ValueError, match=r"`hu_slices` must be \(N, H, W\) or \(N, H, W, 1 \+ 2 \* context\) "
                                             r"with N > 0. Got shape \(1, 8, 8, 2\) instead."):
            bone_study(None, np.zeros((1, 8, 8, 2)), labels=[0], subtypes=np.zeros((1, 5)), patient_ids=["P"],
                       threshold=0.5)
