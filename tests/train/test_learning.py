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
