"""brain_audit.model.sequence: the study-level model over a series' slice embeddings in z order."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.special import logit as scipy_logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from brain_audit.model.sequence import (
    build_sequence_model,
    compile_sequence_model,
    embedding_model,
    logit,
    pack_inputs,
    score_series,
    sequence_predict,
    study_scores,
)
from brain_audit.model.weights import load_model, save_model


def _toy(n_series: int, t: int, d: int, seed: int):
    """A series rule no slice can tell alone: a slice bleeds when its *lower* neighbour's feature 0 is positive."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_series, t, d)).astype(np.float32)
    y = np.zeros((n_series, t, 1), np.float32)
    y[:, 1:, 0] = emb[:, :-1, 0] > 0
    lengths = rng.integers(t // 2, t + 1, size=n_series)
    mask = np.arange(t)[None] < lengths[:, None]
    emb[~mask] = 0.0
    y[~mask] = 0.0
    return emb, np.zeros((n_series, t, 1), np.float32), mask, y


def test_logit_matches_scipy_and_clips_the_ends():
    p = np.array([1e-3, 0.25, 0.5, 0.9])
    np.testing.assert_allclose(logit(p), scipy_logit(p), rtol=1e-6)
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_an_untrained_model_is_the_slice_model():
    # delta starts at zero: the study model's output is sigmoid(slice logit) exactly, whatever the neighbours say
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 5, 8)).astype(np.float32)
    s = rng.normal(size=(3, 5, 2)).astype(np.float32)
    mask = np.ones((3, 5), bool)
    model = build_sequence_model(8, 2, units=4, seed=0)
    out = sequence_predict(model, emb, s, mask)
    np.testing.assert_allclose(out, expit(s.astype(np.float64)), rtol=1e-5)


def test_it_learns_a_neighbour_rule_that_a_per_slice_model_cannot():
    emb, s, mask, y = _toy(260, 10, 6, seed=1)
    train, test = slice(0, 200), slice(200, 260)
    model = compile_sequence_model(build_sequence_model(6, 1, units=16, dropout=0.0, logit_noise=0.0, seed=0), 1e-2)
    model.fit({"embedding": emb[train], "slice_logit": s[train], "mask": mask[train]}, y[train],
              sample_weight=mask[train].astype(np.float32), epochs=15, batch_size=20, verbose=0)
    p = sequence_predict(model, emb[test], s[test], mask[test])
    m = mask[test]
    auc_sequence = roc_auc_score(y[test][m][:, 0], p[m][:, 0])
    # the best a model of the slice's own features can do (scikit-learn, fitted on the same training slices)
    per_slice = LogisticRegression().fit(emb[train][mask[train]], y[train][mask[train]][:, 0])
    auc_slice = roc_auc_score(y[test][m][:, 0], per_slice.predict_proba(emb[test][m])[:, 1])
    assert auc_sequence > 0.95
    assert auc_slice < 0.65


def test_padding_changes_nothing_and_the_model_round_trips(tmp_path):
    emb, s, mask, _ = _toy(6, 7, 4, seed=2)
    s = np.random.default_rng(3).normal(size=s.shape).astype(np.float32)
    model = build_sequence_model(4, 1, units=8, seed=1)
    # move the delta off zero so that the neighbours matter
    w = model.get_layer("delta").get_weights()
    model.get_layer("delta").set_weights([np.full_like(w[0], 0.3), np.full_like(w[1], -0.1)])
    p = sequence_predict(model, emb, s, mask)
    longer = sequence_predict(model, np.pad(emb, ((0, 0), (0, 5), (0, 0))), np.pad(s, ((0, 0), (0, 5), (0, 0))),
                              np.pad(mask, ((0, 0), (0, 5))))
    np.testing.assert_allclose(longer[:, :7][mask], p[mask], rtol=1e-5, atol=1e-7)
    assert np.isnan(p[~mask]).all()
    save_model(model, tmp_path / "study.keras")
    again = sequence_predict(load_model(tmp_path / "study.keras", compile=False), emb, s, mask)
    np.testing.assert_array_equal(again[mask], p[mask])


def test_study_scores_are_the_most_suspicious_real_slice():
    p = np.array([[[0.1], [0.7], [0.9]], [[0.2], [0.3], [0.99]]])
    mask = np.array([[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(study_scores(p, mask), [[0.9], [0.3]])


def test_score_series_reads_each_series_in_z_order_whatever_the_row_order():
    # a study model whose delta reads only the *previous* slice would be order-sensitive: check rows are
    # rescored identically when the table is shuffled, and differ from a model fed the reversed order
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"series_id": ["A"] * 5 + ["B"] * 4, "z": rng.permutation(9).astype(float)},
                         index=[f"ID_{k}" for k in range(9)])
    emb = rng.normal(size=(9, 4)).astype(np.float32)
    prob = rng.uniform(0.05, 0.95, size=(9, 1))
    model = build_sequence_model(4, 1, units=6, seed=2)
    w = model.get_layer("delta").get_weights()
    model.get_layer("delta").set_weights([rng.normal(size=w[0].shape).astype(np.float32), w[1]])
    out = score_series(model, table, emb, prob)
    perm = rng.permutation(9)
    shuffled = score_series(model, table.iloc[perm], emb[perm], prob[perm])
    np.testing.assert_allclose(shuffled, out[perm], rtol=1e-5)
    # by hand for series A: its slices sorted by z, fed as one sequence
    a = table.index[table["series_id"] == "A"]
    order = [table.index.get_loc(i) for i in table.loc[a].sort_values("z").index]
    direct = sequence_predict(model, emb[order][None], logit(prob[order])[None], np.ones((1, len(order)), bool))[0]
    np.testing.assert_allclose(out[order], direct, rtol=1e-5)
    inputs, pack = pack_inputs(table, emb, prob, None)
    assert pack.series.tolist() == ["A", "B"] and inputs["embedding"].shape == (2, 5, 4)


def test_the_embedding_model_exposes_the_pooled_features_and_the_probabilities(model_any):
    from support.model_inputs import SIZE

    hu = np.random.default_rng(5).normal(40, 20, size=(2, SIZE, SIZE, 1)).astype(np.float32)
    emb, prob = embedding_model(model_any).predict(hu, verbose=0)
    pooled = keras.Model(model_any.inputs, model_any.get_layer("avg_pool").output).predict(hu, verbose=0)
    np.testing.assert_allclose(emb, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prob, model_any.predict(hu, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`model` must have a layer 'avg_pool'"):
        embedding_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
