"""Does the four-phase recipe learn? A short Phase 1 + 2 on a phantom cohort with clear bleeds.

The cohort: 130 phantom patients x 8 slices (128 px, 200 mm field of view), bleeds all
intraparenchymal (the clearest subtype: 62-82 HU inside 25-40 HU brain), physiologic
calcifications and devices at their usual rates. 70 patients are held out for domain
pretraining (formula-driven warm-up until it has learned its formula, then 14 augmented epochs), 6 for the audit; Phase 1
(frozen backbone, 4 epochs) and Phase 2 (top blocks unfrozen, 1 epoch) train on the rest and
are scored on their validation patients. About 4 minutes on 2 CPU cores.

The AUC is recomputed here by scikit-learn from the saved models' predictions on the
validation slices read back from the HU cache, not taken from the phase's own metrics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from brain_audit.config import load_config
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig
    from brain_audit.train.phases import run_phase
    from brain_audit.train.prepare import prepare_data
    from brain_audit.train.pretrain import run_pretrain

    out = tmp_path_factory.mktemp("learn")
    generate_cohort(out / "data", PhantomConfig(patients=130, slices_per_patient=8, size=128, pixel_spacing_mm=200 / 128,
                                                prevalence=0.6, subtype_mix={"intraparenchymal": 1.0}, seed=11),
                    progress=False)
    config = load_config(None, [
        f'data_root="{out / "data"}"', f'out_dir="{out / "run"}"', "image_size=64", 'weights="pretrained"', "seed=11",
        "audit_patients=6", "validation_fraction=0.3", "pretrain.patients=70", "pretrain.epochs=14",
        "pretrain.warmup_epochs=12", "phase1.cohort_size=0", "phase1.epochs=4", "phase1.learning_rate=0.001",
        "phase2.cohort_size=0", "phase2.epochs=1", "phase2.learning_rate=0.0001",
    ])
    prepare_data(config, progress=False)
    run_pretrain(config, verbose=0)
    run_phase(config, 1, verbose=0)
    run_phase(config, 2, verbose=0)
    return out / "run"


def _validation_auc(run, phase: int) -> tuple[float, int, int]:
    from sklearn.metrics import roc_auc_score

    from brain_audit.dataset.cache import load_split_arrays, open_cache
    from brain_audit.model.weights import load_model
    from brain_audit.rsna import LABEL_COLUMNS

    cache = open_cache(run / "data" / "cache")
    ids, hu, y6 = load_split_arrays(cache, "validation")
    model = load_model(run / f"phase{phase}" / "model.keras", compile=False)
    p = np.asarray(model.predict(hu, batch_size=64, verbose=0))[:, -1]
    y = y6[:, LABEL_COLUMNS.index("any")]
    return float(roc_auc_score(y, p)), int(len(y)), int(y.sum())


def test_pretraining_leaves_the_plateau(learned):
    run = learned
    manifest = json.loads((run / "pretrain" / "backbone.manifest.json").read_text())
    assert manifest["config"]["warmup_epochs"] == 12
    # the warm-up stopped at the first epoch whose training AUC reached the target, or ran to its cap
    aucs = manifest["warmup_history"]["auc"]
    assert all(a < 0.97 for a in aucs[:-1]) and (aucs[-1] >= 0.97 or len(aucs) == 12), aucs
    assert manifest["metrics"]["warmup_epochs_run"] == len(aucs)
    print("pretraining:", manifest["metrics"], "warm-up AUC per epoch:", [round(a, 3) for a in aucs])
    assert manifest["metrics"]["val_auc_any"] > 0.7, manifest["metrics"]  # 0.83 at seed 11; 0.94-0.95 at seeds 0, 1, 3


@pytest.mark.parametrize("phase", [1, 2])
def test_short_phase_1_and_2_reach_validation_auc_well_above_chance(learned, phase):
    run = learned
    auc, n, positives = _validation_auc(run, phase)
    print(f"phase {phase}: validation AUC {auc:.3f} on {n} slices ({positives} with a bleed)")
    assert n >= 80 and 20 <= positives <= n - 20, (n, positives)
    # with ~30 positives and ~60 negatives the AUC's standard error is ~0.05 at AUC 0.85 and
    # ~0.06 at 0.5 (Hanley & McNeil 1982), so 0.75 is over four standard errors above chance
    assert auc > 0.75, (phase, auc)
    recorded = json.loads((run / f"phase{phase}" / "metrics.json").read_text())
    assert abs(recorded["auc"] - auc) < 1e-3


def test_the_audits_maps_of_the_learned_model_beat_chance(learned, tmp_path):
    """Issue 12's acceptance figures on a model trained clean (no planted shortcut), against phantom truth.

    The attention audit Phase 3 runs (HiResCAM at the fine layer, every error plus a sample of correct calls)
    on the Phase-2 model's validation slices, with the phantom's lesion masks: the median lesion enrichment
    (energy share / area share) is >= 3 with its patient-bootstrap lower bound > 1.5; the pointing game (15 mm)
    beats the best chance baseline by >= 20 points; under 5 % of maps are empty; a uniform map raises no flag on
    these slices; and after the top blocks are re-drawn the maps keep a rank correlation < 0.3.
    """
    from brain_audit.audit.attention_audit import attention_audit, field_of_view, truth_lesions
    from brain_audit.config import AuditPlan
    from brain_audit.dataset.cache import open_cache
    from brain_audit.gradcam.attention import FLAGS, attention_profile
    from brain_audit.model.predictions import predict_ids
    from brain_audit.model.weights import load_model
    from brain_audit.skull import region_masks

    run = learned
    cache = open_cache(run / "data" / "cache")
    ids = list(cache.ids("validation", "phase2"))
    y = cache.table.loc[ids, "any"].to_numpy().astype(int)
    model = load_model(run / "phase2" / "model.keras", compile=False)
    p = predict_ids(model, cache, ids, 0)
    threshold = json.loads((run / "phase2" / "metrics.json").read_text())["threshold"]
    lesions = truth_lesions(run.parent / "data", [i for i, t in zip(ids, y) if t], cache.size)
    findings, summary = attention_audit(model, cache, ids, y, p, threshold, out_dir=tmp_path, plan=AuditPlan(overlays=0),
                                        field_mm=field_of_view(run / "data" / "index", ids), lesions=lesions,
                                        n_boot=1000)
    ev = summary["evidence"]
    print("attention:", summary["map"], "sanity", summary["sanity"]["rho_final"], "enrichment", ev["lesion_enrichment"],
          "pointing", ev["pointing_game"]["model"], ev["pointing_game"]["best_baseline"], ev["empty_maps"])
    assert summary["map"]["cell_mm"] == pytest.approx(200.0 / 16)  # 64 px input: block2b, 16 x 16 cells
    assert ev["lesion_enrichment"]["value"] >= 3 and ev["lesion_enrichment"]["ci"][0] > 1.5
    assert ev["pointing_game"]["difference"]["value"] >= 0.20
    assert ev["empty_maps"]["value"] < 0.05
    assert summary["sanity"]["rho_final"] < 0.3 and summary["trustworthy"]
    # a uniform map over the same slices and regions: no flag at all
    for image_id, hu in zip(findings["image_id"][:40], cache.hu_int16(list(findings["image_id"][:40]))):
        prof = attention_profile(np.ones((8, 8)), masks=region_masks(hu.astype(np.float32)), probability=0.9, label=1)
        assert not any(prof[f] for f in FLAGS), image_id
