"""The RSNA 2019 competition metric (brain_audit/model/competition.py): by hand, against scikit-learn's log
loss column by column, clipping as Kaggle does, and against the Keras training loss of the six-label head."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from brain_audit.model.competition import KAGGLE_EPS, image_log_losses, weighted_log_loss
from brain_audit.model.network import build_model, compile_model
from brain_audit.rsna import LABEL_COLUMNS
from support.model_inputs import SIZE, hu_images

# columns: epidural, intraparenchymal, intraventricular, subarachnoid, subdural, any
Y = np.array([[0, 0, 0, 0, 0, 0],
              [0, 1, 0, 0, 1, 1]])
P = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.2],
              [0.5, 0.9, 0.1, 0.2, 0.6, 0.7]])


class TestWeightedLogLoss:
    def test_two_images_by_hand(self):
        # image 1, no bleed: five subtypes -ln(0.9), any -ln(0.8) weighted 2; 7 = 5 * 1 + 2
        first = (5 * -math.log(0.9) + 2 * -math.log(0.8)) / 7  # 0.1390128
        # image 2, intraparenchymal + subdural: -ln 0.5, -ln 0.9, -ln 0.9, -ln 0.8, -ln 0.6, 2 * -ln 0.7
        second = (-math.log(0.5) - math.log(0.9) - math.log(0.9) - math.log(0.8) - math.log(0.6)
                  - 2 * math.log(0.7)) / 7  # 0.3358839
        assert image_log_losses(Y, P) == pytest.approx([first, second], rel=1e-12)
        assert weighted_log_loss(Y, P) == pytest.approx(0.237448354, abs=1e-9)
        assert LABEL_COLUMNS[-1] == "any"

    def test_is_the_weighted_mean_of_sklearn_log_loss_per_column(self):
        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, (300, 6))
        p = rng.uniform(0.01, 0.99, (300, 6))
        w = [1, 1, 1, 1, 1, 2]
        columns = [log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(6)]
        assert weighted_log_loss(y, p) == pytest.approx(np.dot(w, columns) / 7, rel=1e-10)
        # other weights are honoured the same way
        w2 = [3, 1, 1, 1, 1, 1]
        assert weighted_log_loss(y, p, weights=w2) == pytest.approx(np.dot(w2, columns) / 8, rel=1e-10)

    def test_zero_and_one_are_clipped_at_1e_15(self):
        y = np.array([[1, 0, 0, 0, 0, 1]])
        p = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]])
        # epidural: true 1, predicted 0 -> -ln(1e-15) = 34.539; intraparenchymal: true 0, predicted 1 ->
        # -ln(1 - (1 - 1e-15)) = 34.434 (1 - 1e-15 rounds in float64); any: true 1, predicted 1 -> -ln(1 - 1e-15),
        # weighted 2; the three right zeros cost -ln(1 - 1e-15) each
        right = -math.log(1 - 1e-15)
        expected = (-math.log(1e-15) - math.log(1 - (1 - 1e-15)) + 3 * right + 2 * right) / 7
        assert weighted_log_loss(y, p) == pytest.approx(expected, rel=1e-9)
        assert expected == pytest.approx(2 * 34.49 / 7, rel=2e-3)
        assert np.isfinite(weighted_log_loss(y, p))
        assert KAGGLE_EPS == 1e-15
        # a looser clip caps the cost lower: -ln(1e-3) each
        assert weighted_log_loss(y, p, eps=1e-3) == pytest.approx(
            (2 * -math.log(1e-3) + (3 + 2) * -math.log(1 - 1e-3)) / 7, rel=1e-9)

    @pytest.mark.parametrize("y, p, match", [
        (np.zeros((2, 5)), np.zeros((2, 5)), r"`y_true` must have shape \(N, 6\)"),
        (np.zeros((2, 6)), np.zeros((3, 6)), r"`y_prob` must have the shape of `y_true` \(2, 6\). Got \(3, 6\)"),
        (np.zeros((0, 6)), np.zeros((0, 6)), r"`y_true` must hold at least one image \(N > 0\)"),
        (np.full((1, 6), 2), np.zeros((1, 6)), r"`y_true` must hold only 0 and 1. Got 2.0 instead."),
        (np.zeros((1, 6)), np.full((1, 6), 1.5), r"`y_prob` must be probabilities in \[0, 1\]. Got 1.5 instead."),
        (np.zeros((1, 6)), np.full((1, 6), np.nan), r"`y_prob` must be probabilities in \[0, 1\]. Got nan"),
    ])
    def test_input_errors(self, y, p, match):
        with pytest.raises(ValueError, match=match):
            weighted_log_loss(y, p)

    def test_weight_and_eps_errors(self):
        with pytest.raises(ValueError, match=r"`weights` must be 6 finite values > 0"):
            weighted_log_loss(Y, P, weights=[1, 1, 1, 1, 2])
        with pytest.raises(ValueError, match=r"`eps` must be in \(0, 0.5\). Got 0 instead."):
            weighted_log_loss(Y, P, eps=0)


def test_keras_training_loss_of_the_six_label_head_is_the_metric():
    """compile_model(head="six") trains on the same quantity; Keras clips at 1e-7 and works in float32, so the
    two agree to float32 precision on predictions away from 0 and 1 (a random-weight network's are)."""
    model = build_model(SIZE, head="six", weights=None, seed=2)
    compile_model(model, 1e-3, "six", jit_compile=False)
    x = hu_images(4, seed=5)
    y = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1]], np.float32)
    p = model.predict(x, batch_size=4, verbose=0).astype(np.float64)
    assert ((p > 1e-6) & (p < 1 - 1e-6)).all()
    keras_loss = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)["loss"]
    assert keras_loss == pytest.approx(weighted_log_loss(y, p), rel=1e-5)
