"""Numba tree evaluation equals LightGBM's own predict, on random data and on kernel features."""

from __future__ import annotations

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from signals.trees_nb import (
    ensemble_from_booster,
    ensemble_from_dump,
    ensemble_from_model_string,  # noqa: E402
    predict_proba,
    predict_proba_row_nb,
    predict_raw_row_nb,
)


def _random_rows(rng, n, k):
    X = rng.normal(size=(n, k))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    X[rng.random(X.shape) < 0.02] = -0.0
    X[rng.random(X.shape) < 0.02] = 1e-36  # below LightGBM's zero threshold: counts as 0
    X[rng.random(X.shape) < 0.02] = -1e-36
    X[rng.random(X.shape) < 0.01] = 1e300
    return X


def _train(params, X, y, rounds=80):
    base = {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 15, "seed": 1}
    return lgb.train({**base, **params}, lgb.Dataset(X, y), num_boost_round=rounds)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"zero_as_missing": True},
        {"use_missing": False},
        {"boosting": "rf", "bagging_fraction": 0.6, "bagging_freq": 1},
        {"objective": "binary", "sigmoid": 0.7},
        {"boosting": "dart", "drop_rate": 0.2},
        {"num_leaves": 63, "min_data_in_leaf": 5},
    ],
    ids=["default", "zero_as_missing", "no_missing", "rf", "sigmoid_0.7", "dart", "deep"],
)
def test_equals_booster_predict_on_random_data_with_nan(params):
    rng = np.random.default_rng(0)
    X = _random_rows(rng, 4000, 12)
    signal = np.nan_to_num(X[:, 0], posinf=5) + (X[:, 3] == 0) * 1.5 + np.isnan(X[:, 5]) * 1.0
    y = (signal + rng.normal(0, 0.7, len(X)) > 0.6).astype(int)
    booster = _train(params, X, y)
    ens = ensemble_from_booster(booster)
    Xt = _random_rows(np.random.default_rng(1), 3000, 12)
    want = booster.predict(Xt, num_threads=1)
    got = predict_proba(ens, Xt)
    assert np.max(np.abs(got - want)) <= 1e-12
    raw_want = booster.predict(Xt[:50], raw_score=True, num_threads=1)
    raw_got = np.array([predict_raw_row_nb(x, ens) for x in Xt[:50]])
    assert np.max(np.abs(raw_got - raw_want)) <= 1e-12


def test_single_row_kernel_matches_batch():
    rng = np.random.default_rng(2)
    X = _random_rows(rng, 1000, 5)
    booster = _train({}, X, (np.nan_to_num(X[:, 1]) > 0).astype(int), rounds=20)
    ens = ensemble_from_booster(booster)
    batch = predict_proba(ens, X[:100])
    rows = np.array([predict_proba_row_nb(X[i], ens) for i in range(100)])
    np.testing.assert_array_equal(batch, rows)


def test_best_iteration_and_model_string_round_trip():
    rng = np.random.default_rng(3)
    X = _random_rows(rng, 3000, 6)
    y = (np.nan_to_num(X[:, 0]) + rng.normal(0, 1, len(X)) > 0).astype(int)
    dtrain = lgb.Dataset(X[:2000], y[:2000])
    dval = lgb.Dataset(X[2000:], y[2000:], reference=dtrain)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "learning_rate": 0.3},
        dtrain,
        num_boost_round=300,
        valid_sets=[dval],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < booster.best_iteration < 300
    ens = ensemble_from_booster(booster)
    assert ens.roots.shape[0] == booster.best_iteration
    np.testing.assert_allclose(predict_proba(ens, X), booster.predict(X), rtol=0, atol=1e-12)
    ens2 = ensemble_from_model_string(booster.model_to_string())
    np.testing.assert_allclose(predict_proba(ens2, X), booster.predict(X, num_iteration=-1), atol=1e-12)


def test_equals_booster_on_kernel_features():
    from datasets.synth import SynthParams, generate_days
    from signals import FEATURE_NAMES, WhaleParams, run_batch

    _, day = next(iter(generate_days(SynthParams(days=1, trades_per_s=3.0, seed=5))))
    tr = {k: v[:60_000] for k, v in day.items()}  # ~5.5 hours
    res = run_batch(
        tr["ts_ms"],
        tr["price"],
        tr["qty"],
        tr["side"],
        WhaleParams.from_dict({"min_notional_usd": 50_000}),
        all_features=True,
    )
    F = res.features
    assert F.shape[1] == len(FEATURE_NAMES) and np.isnan(F).any()  # early rows lack return refs
    # Label: price 5 minutes later is up (any target works; the point is realistic inputs).
    later = np.searchsorted(tr["ts_ms"], tr["ts_ms"] + 300_000)
    ok = later < len(F)
    y = (tr["price"][np.minimum(later, len(F) - 1)] > tr["price"]).astype(int)
    idx = np.flatnonzero(ok)[::7]
    booster = _train({"num_leaves": 31}, F[idx], y[idx], rounds=120)
    ens = ensemble_from_booster(booster)
    want = booster.predict(F, num_threads=1)
    got = predict_proba(ens, F)
    assert np.max(np.abs(got - want)) <= 1e-12
    # ...and on the events the kernel fired, which is what backtest and live score.
    np.testing.assert_allclose(
        predict_proba(ens, res.event_features), booster.predict(res.event_features, num_threads=1), rtol=0, atol=1e-12
    )


def test_refuses_what_it_cannot_evaluate():
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.integers(0, 4, 500), rng.normal(size=500)])
    y = (X[:, 0] == 2).astype(int)
    cat = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(X, y, categorical_feature=[0]),
        num_boost_round=5,
    )
    with pytest.raises(ValueError, match="categorical split"):
        ensemble_from_booster(cat)
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lgb.Dataset(X, rng.integers(0, 3, 500)),
        num_boost_round=2,
    )
    with pytest.raises(ValueError, match="single-output model"):
        ensemble_from_booster(multi)
    with pytest.raises(ValueError, match="unsupported LightGBM objective"):
        ensemble_from_dump({"objective": "lambdarank", "tree_info": []})
    ens = ensemble_from_booster(_train({}, X, y, rounds=3))
    with pytest.raises(ValueError, match="expected a feature matrix with 2 columns"):
        predict_proba(ens, np.zeros((3, 5)))


def test_single_leaf_trees_and_empty_models():
    # A constant label gives trees that are single leaves; the sum is still LightGBM's.
    X = np.random.default_rng(5).normal(size=(200, 3))
    booster = _train({}, X, np.zeros(200, int), rounds=3)
    ens = ensemble_from_booster(booster)
    np.testing.assert_allclose(predict_proba(ens, X), booster.predict(X), atol=1e-12)
    empty = ensemble_from_dump({"objective": "binary sigmoid:1", "tree_info": [], "max_feature_idx": 2})
    assert predict_proba(empty, X[:2]).tolist() == [0.5, 0.5]
