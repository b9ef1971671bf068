"""brain_audit.train.phases with ``context = 1`` (2.5-D input): a phase trains and predicts on each slice with its
neighbours, on the tiny RSNA dataset (32 px, one epoch, random weights). Slow: TensorFlow's tracing of the
EfficientNetB0 train, test and predict steps alone takes a minute or more on 2 CPU cores, whatever the cohort.

Expected values come from outside the code under test: the HU tiny_rsna wrote for each slice and its neighbours
by z in its series, stacked here by hand and given to ``model.predict``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from brain_audit.config import load_config  # noqa: E402
from brain_audit.model.predictions import model_context, predict_ids  # noqa: E402
from brain_audit.model.weights import load_model  # noqa: E402
from brain_audit.train.phases import run_phase  # noqa: E402
from brain_audit.train.prepare import prepare_data  # noqa: E402
from support.tiny_rsna import SIDE, make_tiny_rsna  # noqa: E402

pytestmark = pytest.mark.slow


def test_phase1_trains_and_predicts_with_neighbours(tmp_path):
    truth = make_tiny_rsna(tmp_path / "data")
    config = load_config(None, [
        f'data_root="{tmp_path / "data"}"', f'out_dir="{tmp_path / "run"}"', f"image_size={SIDE}", "context=1",
        'weights="none"', "workers=1", "seed=3", "audit_patients=3", "validation_fraction=0.3",
        "phase1.cohort_size=6", "phase1.epochs=1", "phase1.batch_size=8", "phase2.cohort_size=0",
        "phase2.balance=0.0",
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tiny dataset's broken files
        cache = prepare_data(config, progress=False)
        metrics = run_phase(config, 1, verbose=0)
    model = load_model(tmp_path / "run" / "phase1" / "model.keras", compile=False)
    assert tuple(model.inputs[0].shape) == (None, SIDE, SIDE, 3) and model_context(model) == 1
    val = list(cache.ids("validation", "phase1"))
    assert metrics["n"] == len(val) > 0
    recorded = json.loads((tmp_path / "run" / "phase1" / "run.json").read_text())["config"]
    assert recorded["context"] == 1

    # by hand: each slice with the one below and above it in its series (by z; the edge slice repeated)
    series: dict[str, list] = {}
    for image_id, t in truth.items():
        series.setdefault(t["series"], []).append((t["z"], image_id))
    stacks = []
    for image_id in val:
        order = [i for _, i in sorted(series[truth[image_id]["series"]])]
        j = order.index(image_id)
        trio = (order[max(j - 1, 0)], image_id, order[min(j + 1, len(order) - 1)])
        stacks.append(np.stack([truth[i]["hu"] for i in trio], axis=-1).astype(np.float32))
    expect = model.predict(np.stack(stacks), verbose=0)[:, 0]
    np.testing.assert_allclose(predict_ids(model, cache, val, 0), expect, rtol=0, atol=1e-5)
