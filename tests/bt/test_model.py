"""Model pipeline on synthetic event tables: purged splits, threshold policies, one test evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt.config import ModelConfig, SplitConfig, ThresholdConfig, parse_model_config
from bt.model import (
    EventTable,
    choose_threshold,
    event_table,
    fit_validate,
    purged_splits,
    train_and_evaluate,
    train_booster,
)

DAY = 86_400_000
H = 3_600_000


def planted_table(n=3000, days=30, effect=0.02, seed=0, k=6) -> EventTable:
    """Events whose return rises with feature 0 (planted) or not (effect=0)."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, days * DAY - 2 * H, n)).astype(np.int64)
    end = ts + H - rng.integers(0, 1000, n)
    X = rng.normal(size=(n, k))
    X[rng.random(X.shape) < 0.05] = np.nan
    gross = effect * (np.nan_to_num(X[:, 0]) > 1.0) + rng.normal(0, 0.006, n)
    return EventTable(ts, end, X, gross - 0.001, gross >= 0.01, tuple(f"x{i}" for i in range(k)))


def cfg(**kw) -> ModelConfig:
    base = {"features": None, "lgbm": {"num_boost_round": 60, "num_leaves": 7}}
    base.update(kw)
    return ModelConfig.model_validate(base)


# --- purge -------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 300),
    horizon_min=st.integers(1, 600),
    train=st.floats(0.2, 0.7),
    val=st.floats(0.1, 0.25),
    folds=st.sampled_from([0, 2, 3, 5]),
    window=st.sampled_from(["expanding", "rolling"]),
    purge_extra_min=st.integers(0, 120),
    seed=st.integers(0, 2**31 - 1),
)
def test_no_training_outcome_reaches_a_later_split(n, horizon_min, train, val, folds, window, purge_extra_min, seed):
    rng = np.random.default_rng(seed)
    span = (0, 20 * DAY)
    h = horizon_min * 60_000
    ts = np.sort(rng.integers(span[0], span[1], n)).astype(np.int64)
    # Outcome windows up to the horizon plus entry latency; some end past the span (kept: the
    # test part may hold them, nothing earlier may).
    end = ts + rng.integers(0, h + 5000, n)
    split = SplitConfig(
        train=train,
        validation=val,
        test=round(1 - train - val, 12),
        walk_forward=folds,
        window=window,
        purge=f"{horizon_min + purge_extra_min}m",
    )
    s = purged_splits(ts, end, split, span_ms=span, horizon_ms=h)
    assert s.purge_ms >= h
    test_start = s.boundaries_ms["test"]
    assert np.all(ts[s.test] >= test_start)
    for tr, va in s.folds:
        if va.size:
            va_start = ts[va].min()
            # No training outcome reaches into this validation fold, nor any training trigger
            # falls within the purge gap before it.
            if tr.size:
                assert end[tr].max() < va_start or end[tr].max() < _fold_start(s, va, ts)
                assert np.all(ts[tr] < _fold_start(s, va, ts) - s.purge_ms)
        assert np.all(end[tr] < test_start) and np.all(end[va] < test_start)
        assert np.all(ts[va] < test_start - s.purge_ms)
        assert not set(tr.tolist()) & set(va.tolist())
    assert not set(s.validation.tolist()) & set(s.test.tolist())
    assert not set(s.train.tolist()) & set(s.test.tolist())
    # Everything is accounted for: used or purged.
    used = set(s.test.tolist()) | set(s.validation.tolist())
    for tr, _ in s.folds:
        used |= set(tr.tolist())
    assert len(used) + s.n_purged == n


def _fold_start(s, va, ts):
    """The boundary a validation fold starts at (the largest boundary not after its first event)."""
    if len(s.folds) == 1:
        return s.boundaries_ms["validation"]
    first = ts[va].min()
    k = len(s.folds)
    edges = [
        s.boundaries_ms["start"] + round(i * (s.boundaries_ms["test"] - s.boundaries_ms["start"]) / (k + 1))
        for i in range(k + 2)
    ]
    return max(e for e in edges if e <= first)


def test_purge_drops_exactly_the_overlapping_events():
    # Boundary at 600 (60 % of 0..1000), test at 800; horizon 50.
    ts = np.array([100, 540, 549, 551, 600, 700, 760, 790, 800, 900])
    end = np.array([150, 560, 599, 601, 650, 740, 799, 810, 850, 950])
    s = purged_splits(ts, end, SplitConfig(), span_ms=(0, 1000), horizon_ms=50)
    assert s.train.tolist() == [0, 1, 2]  # 551 triggers inside the gap (>= 600 - 50)
    assert s.validation.tolist() == [4, 5]  # 760 is in the gap before 800; 790 ends after it
    assert s.test.tolist() == [8, 9]
    assert s.n_purged == 3


# --- threshold policies ------------------------------------------------------------------------


def test_precision_target_picks_the_best_mean_among_precise_enough_thresholds():
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    ret = np.array([0.01, 0.03, -0.01, 0.02, 0.0, -0.02, 0.01, -0.01])
    lab = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
    c = ThresholdConfig(policy="precision_target", precision_target=0.6, min_signals=2, step=0.1)
    got = choose_threshold(prob, ret, lab, c)
    # t=0.8: 2 signals, precision 1, mean 0.02; t=0.6: 4 signals, prec .75, mean .0125;
    # t=0.7: prec .667, mean .01; t=0.5: prec .6, mean .01 -> 0.8 wins.
    assert got.threshold == pytest.approx(0.8) and got.rule == "precision_target"
    assert got.n_signals == 2 and got.mean_return == pytest.approx(0.02) and got.precision == 1.0


def test_fallbacks_are_named():
    prob = np.array([0.9, 0.8, 0.7, 0.6])
    ret = np.array([-0.01, 0.02, 0.01, -0.03])
    lab = np.zeros(4, bool)
    c = ThresholdConfig(policy="precision_target", precision_target=0.5, min_signals=2, step=0.1)
    got = choose_threshold(prob, ret, lab, c)
    assert got.rule == "fallback:max_mean_return" and got.threshold == pytest.approx(0.7)
    c2 = ThresholdConfig(policy="precision_target", min_signals=10, step=0.1)
    got2 = choose_threshold(prob, ret, lab, c2)
    assert got2.rule == "fallback:take_all" and got2.threshold == 0.0 and got2.n_signals == 4
    assert choose_threshold(np.empty(0), np.empty(0), np.empty(0, bool), c).rule.startswith("take_all")


def test_top_fraction_and_fixed():
    prob = np.linspace(0.05, 0.95, 10)
    ret = np.zeros(10)
    lab = np.zeros(10, bool)
    got = choose_threshold(
        prob, ret, lab, ThresholdConfig(policy="top_fraction", fraction=0.3, step=0.05, min_signals=3)
    )
    assert got.n_signals == 3 and got.threshold == pytest.approx(0.75)
    assert choose_threshold(prob, ret, lab, ThresholdConfig(policy="fixed", value=0.42)).threshold == 0.42


def _burst_and_spread():
    """25 high-prob events inside one hour (windows overlap: one cluster) and 15 spread a day apart."""
    burst_ts = np.arange(25, dtype=np.int64) * 60_000  # one a minute, 1 h windows
    spread_ts = 2 * DAY + np.arange(15, dtype=np.int64) * DAY
    ts = np.concatenate([burst_ts, spread_ts])
    prob = np.concatenate([np.full(25, 0.9), np.full(15, 0.3)])
    ret = np.concatenate([np.full(25, 0.02), np.full(15, 0.001)])
    lab = np.concatenate([np.ones(25, bool), np.zeros(15, bool)])
    return ts, prob, ret, lab


def test_min_signals_counts_independent_signals_not_raw_ones():
    ts, prob, ret, lab = _burst_and_spread()
    c = ThresholdConfig(policy="max_mean_return", min_signals=10, step=0.1)
    # Raw counting (no windows): the burst's 25 signals pass min_signals and win.
    raw = choose_threshold(prob, ret, lab, c)
    assert raw.threshold == pytest.approx(0.4) and raw.n_independent == 25
    # With outcome windows the burst is one independent signal: only the lower thresholds (the
    # burst + 15 spread events = 16 clusters) keep 10.
    got = choose_threshold(prob, ret, lab, c, ts_ms=ts, end_ts_ms=ts + H)
    assert got.threshold == pytest.approx(0.1) and got.rule == "max_mean_return"
    assert got.n_signals == 40 and got.n_independent == 16
    # The window may be given as entry latency + horizon instead of exit times.
    assert choose_threshold(prob, ret, lab, c, ts_ms=ts, window_ms=H) == got
    pt = choose_threshold(
        prob, ret, lab, ThresholdConfig(precision_target=0.7, min_signals=10, step=0.1), ts_ms=ts, end_ts_ms=ts + H
    )
    assert pt.rule == "fallback:max_mean_return" and pt.threshold == pytest.approx(0.1)


def test_top_fraction_and_fixed_enforce_min_signals():
    ts, prob, ret, lab = _burst_and_spread()
    # top_fraction 0.5 alone would take the burst (25 of 40 events >= 50 %): one cluster.
    c = ThresholdConfig(policy="top_fraction", fraction=0.5, min_signals=10, step=0.1)
    got = choose_threshold(prob, ret, lab, c, ts_ms=ts, end_ts_ms=ts + H)
    assert got.threshold == pytest.approx(0.3) and got.n_independent == 16 and got.rule == "top_fraction"
    # Two validation events can never make a top_fraction winner with min_signals 20.
    two = choose_threshold(
        np.array([0.9, 0.2]),
        np.array([0.05, -0.01]),
        np.array([True, False]),
        ThresholdConfig(policy="top_fraction", fraction=0.2),
        ts_ms=np.array([0, DAY]),
        end_ts_ms=np.array([H, DAY + H]),
    )
    assert two.threshold == 0.0 and two.rule == "top_fraction:fallback:take_all"
    # fixed keeps its value but says it is below the minimum (a sweep prunes such a trial).
    f = choose_threshold(
        prob, ret, lab, ThresholdConfig(policy="fixed", value=0.5, min_signals=10), ts_ms=ts, end_ts_ms=ts + H
    )
    assert f.threshold == 0.5 and f.rule == "fixed:below_min_signals" and not f.feasible
    assert f.n_signals == 25 and f.n_independent == 1
    ok = choose_threshold(
        prob, ret, lab, ThresholdConfig(policy="fixed", value=0.2, min_signals=10), ts_ms=ts, end_ts_ms=ts + H
    )
    assert ok.rule == "fixed" and ok.feasible and ok.n_independent == 16


def test_independent_counts_match_signal_clusters():
    from bt.metrics import n_independent, signal_clusters
    from bt.model import independent_counts

    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(0, 10 * DAY, 500)).astype(np.int64)
    end = ts + rng.integers(0, 3 * H, 500)
    prob = rng.random(500)
    grid = np.round(np.arange(0.05, 1.0, 0.05), 10)
    got = independent_counts(prob, ts, end, grid)
    want = [n_independent(signal_clusters(ts[prob >= t], end[prob >= t])) for t in grid]
    assert got.tolist() == want


def test_window_arguments_are_checked():
    ts, prob, ret, lab = _burst_and_spread()
    with pytest.raises(ValueError, match="pass end_ts_ms"):
        choose_threshold(prob, ret, lab, ThresholdConfig(), ts_ms=ts)
    with pytest.raises(ValueError, match="one value per event"):
        choose_threshold(prob, ret, lab, ThresholdConfig(), ts_ms=ts[:3], window_ms=H)


# --- training and evaluation -------------------------------------------------------------------


def test_threshold_and_validation_never_read_test_rows():
    t = planted_table()
    c = cfg()
    span = (0, 30 * DAY)
    s = purged_splits(t.ts_ms, t.end_ts_ms, c.split, span_ms=span, horizon_ms=H)
    v1 = fit_validate(t, s, c)
    # Scramble every test row (features, returns, labels): validation is unchanged.
    X = t.X.copy()
    ret = t.net_return.copy()
    lab = t.label.copy()
    X[s.test] = 0.0
    ret[s.test] = -1.0
    lab[s.test] = ~lab[s.test]
    t2 = EventTable(t.ts_ms, t.end_ts_ms, X, ret, lab, t.feature_names)
    v2 = fit_validate(t2, s, c)
    assert v1.threshold == v2.threshold and v1.value == v2.value
    np.testing.assert_array_equal(v1.val_prob, v2.val_prob)


def test_planted_effect_beats_the_plain_whale_rule_out_of_sample():
    t = planted_table(effect=0.02)
    res = train_and_evaluate(
        t,
        cfg(threshold={"policy": "precision_target", "precision_target": 0.5, "min_signals": 20}),
        span_ms=(0, 30 * DAY),
        horizon_ms=H,
        n_boot=200,
    )
    m = res.metrics
    assert m["test_n_signals"] >= 20
    assert m["test_mean_return"] > m["baseline_mean_return"] + 0.005
    assert m["threshold_rule"] == "precision_target"
    assert res.test_signal.sum() == m["test_n_signals"]
    # Test metrics count independent signals (1 h windows overlap) and so does validation.
    assert 0 < m["test_n_independent"] < m["test_n_signals"]
    assert 0 < m["val_n_independent"] <= m["val_n_signals"]


def test_walk_forward_reports_each_fold_and_refits():
    t = planted_table()
    c = cfg(split={"walk_forward": 3})
    s = purged_splits(t.ts_ms, t.end_ts_ms, c.split, span_ms=(0, 30 * DAY), horizon_ms=H)
    seen = []
    v = fit_validate(t, s, c, on_fold=lambda j, val: seen.append((j, val)))
    assert [j for j, _ in seen] == [0, 1, 2]
    assert v.val_idx.size == sum(va.size for _, va in s.folds)
    # The final model was refit on train + validation: more data than the last fold's train.
    assert v.booster.num_trees() == 60


def test_imbalance_options_change_the_model():
    t = planted_table(n=1500)
    preds = {}
    for method in ("none", "class_weight", "downsample"):
        b = train_booster(t.X, t.label, cfg(imbalance={"method": method, "neg_keep": 0.3}))
        preds[method] = b.predict(t.X[:200])
    assert preds["class_weight"].mean() > preds["none"].mean()  # positives weighted up
    assert preds["downsample"].mean() > preds["none"].mean()  # negatives thinned out


def test_training_is_deterministic():
    t = planted_table(n=800)
    a = train_booster(t.X, t.label, cfg()).predict(t.X)
    b = train_booster(t.X, t.label, cfg()).predict(t.X)
    np.testing.assert_array_equal(a, b)


def test_model_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown key 'model.treshold'"):
        parse_model_config({"treshold": {}})
    with pytest.raises(ValueError, match="train \\+ validation \\+ test must be 1"):
        parse_model_config({"split": {"train": 0.5, "validation": 0.2, "test": 0.2}})
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        parse_model_config({"features": ["nope"]})
    with pytest.raises(ValueError, match="lgbm may not set"):
        parse_model_config({"lgbm": {"objective": "regression"}})
    with pytest.raises(ValueError, match=r"model.sweep: sweep lgbm.num_leaves: need numbers with low < high"):
        parse_model_config({"sweep": {"lgbm": {"num_leaves": {"low": 5, "high": 2}}}})


def test_event_table_from_trades_by_hand():
    ts = np.array([0, 1000, 2000, 3000, 4000, 5000], np.int64)
    px = np.array([100.0, 101.0, 102.0, 103.0, 104.0, 105.0])
    X = np.arange(9, dtype=float).reshape(3, 3)
    table, keep = event_table(
        ts, px, np.array([0, 1, 4]), X, ("a", "b", "c"), horizon_ms=2000, fee=0.001, label_threshold=0.015
    )
    # trigger 0: entry 1 (101), exit at ts <= 3000 -> 103: 103/101 - 1 - 0.002
    # trigger 1: entry 2 (102) -> exit ts 4000 (104); trigger 4: entry 5000 + 2000 > last: dropped
    assert keep.tolist() == [True, True, False]
    np.testing.assert_allclose(table.net_return, [103 / 101 - 1 - 0.002, 104 / 102 - 1 - 0.002])
    assert table.label.tolist() == [True, True]
    assert table.end_ts_ms.tolist() == [3000, 4000]
    np.testing.assert_array_equal(table.X, X[:2])
