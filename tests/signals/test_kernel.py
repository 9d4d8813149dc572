"""The per-trade kernel (`signals`): oracles on real trades, whale rules, causality, parity.

Slow references live in `tests/signals/reference_pipeline.py`; the real trades are the Binance
USD-M BTCUSDT recording in `tests/data/real/` (MIT, see LICENSES.md there).
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signals import nb
from signals.config import WhaleParams
from signals.features import FEATURE_NAMES, N_FEATURES, feature_index, feature_spec_hash
from signals.kernel import KernelState, new_state, run_batch, update

from reference_pipeline import (  # beside this file (pytest puts test folders on sys.path)
    load_binance_trade_stream,
    reference_event_codes,
    reference_features,
    reference_flow,
)

ROOT = Path(__file__).resolve().parents[2]
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
COUNT_COLS = [COL[f"trade_count_{w}s"] for w in (1, 5, 30, 60)]
SUM_COLS = [
    COL[f"{k}_{w}s"] for w in (1, 5, 30, 60) for k in ("buy_qty", "sell_qty", "buy_notional_usd", "sell_notional_usd")
]
EXACT_COLS = COUNT_COLS + [
    COL[c] for c in ("ret_1s", "ret_5s", "ret_10s", "ret_30s", "drawup_60s", "drawdown_60s", "notional_usd")
]
DERIVED_COLS = [COL[c] for c in ("rv_30s", "ret_z_1s", "ret_z_5s", "burst_ratio_5s_60s")]
IMB_COLS = [COL["imbalance_5s"], COL["imbalance_30s"]]
FLOW_SMALL = dict(window_s=5, q=0.95, lookback_s=60, min_samples=30)


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return load_binance_trade_stream()


@pytest.fixture(scope="module")
def real_reference(real):
    return reference_features(real["ts_ms"], real["price"], real["qty"], real["side"])


def _args(d):
    return d["ts_ms"], d["price"], d["qty"], d["side"]


def _run_updates(params, ts, price, qty, side, capacity=1 << 16):
    """The live path: one `update` per trade. Returns codes, all rows, flows, thresholds."""
    state = new_state(params, capacity=capacity)
    n = len(ts)
    codes = np.zeros(n, np.int8)
    rows = np.empty((n, N_FEATURES))
    flows, thresholds = np.empty(n), np.empty(n)
    for i in range(n):
        code, feats = update(state, int(ts[i]), float(price[i]), float(qty[i]), int(side[i]))
        codes[i] = code
        rows[i] = state.last_features
        flows[i], thresholds[i] = state.flow_usd, state.flow_threshold_usd
        assert (feats is None) == (code == 0)
        if feats is not None:
            assert np.array_equal(feats, rows[i], equal_nan=True)
    return codes, rows, flows, thresholds, state


def _all_codes(res, n):
    codes = np.zeros(n, np.int8)
    codes[res.event_idx] = res.event_code
    return codes


def _assert_features_close(got, want):
    """Counts, returns, extremes exact; window sums (double-double prefix differences, rounded
    once) within a few ulps of the reference's np.sum."""
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
    for cols, rtol, atol in ((SUM_COLS, 1e-13, 0.0), (DERIVED_COLS, 1e-13, 0.0), (IMB_COLS, 0.0, 1e-13)):
        for c in cols:
            np.testing.assert_allclose(
                got[:, c], want[:, c], rtol=rtol, atol=atol, equal_nan=True, err_msg=FEATURE_NAMES[c]
            )
    for c in EXACT_COLS:
        assert np.array_equal(got[:, c], want[:, c], equal_nan=True), FEATURE_NAMES[c]


@st.composite
def trade_streams(draw, min_size=1, max_size=160):
    """Ordered trades with bursts (equal ms), second-scale gaps, minute gaps and hour gaps,
    prices on a tick grid (so many zero returns), and sizes from tiny to whale."""
    n = draw(st.integers(min_size, max_size))
    gap = st.one_of(
        st.just(0),
        st.integers(0, 40),
        st.integers(0, 2_500),
        st.integers(0, 70_000),
        st.sampled_from([3_600_000, 7_200_000]),
    )
    dts = draw(st.lists(gap, min_size=n, max_size=n))
    ticks = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    qty = draw(
        st.lists(st.sampled_from([0.001, 0.01, 0.25, 1.5, 40.0]) | st.floats(1e-3, 60.0), min_size=n, max_size=n)
    )
    side = draw(st.lists(st.sampled_from([1, -1]), min_size=n, max_size=n))
    ts = 1_723_161_000_000 + np.cumsum(np.array(dts, np.int64))
    price = 100.0 + 0.5 * np.maximum(np.cumsum(ticks), -150)
    return ts, price, np.array(qty), np.array(side, np.int8)


# --- feature spec ---------------------------------------------------------------------------


def test_feature_names_are_unique_with_units_and_hash_is_pinned():
    assert len(FEATURE_NAMES) == N_FEATURES == 33
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    assert FEATURE_NAMES[:5] == (
        "buy_qty_1s",
        "sell_qty_1s",
        "buy_notional_usd_1s",
        "sell_notional_usd_1s",
        "trade_count_1s",
    )
    assert feature_index("notional_usd") == N_FEATURES - 1
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        feature_index("nope")
    # Golden value: a model bundle pins this; change FEATURE_VERSION with any definition.
    assert feature_spec_hash() == "144752ce4d8db378"


# --- oracles on real trades -----------------------------------------------------------------


def test_every_feature_matches_reference_on_real_btcusdt_trades(real, real_reference):
    assert len(real["ts_ms"]) == 21_313
    res = run_batch(*_args(real), WhaleParams(min_notional_usd=1e5), all_features=True)
    _assert_features_close(res.features, real_reference)
    # The recording has plenty of equal-millisecond trades and starts without history.
    assert np.sum(np.diff(real["ts_ms"]) == 0) > 10_000
    assert np.isnan(res.features[0, COL["ret_1s"]])


@pytest.mark.parametrize("min_notional_usd,cooldown_s", [(5e4, 0.0), (1e5, 0.0), (1e5, 2.5), (1e6, 0.0)])
def test_notional_rule_matches_reference_exactly(real, min_notional_usd, cooldown_s):
    p = WhaleParams(min_notional_usd=min_notional_usd, cooldown_s=cooldown_s)
    res = run_batch(*_args(real), p)
    want = reference_event_codes(*_args(real), min_notional_usd=min_notional_usd, cooldown_s=cooldown_s)
    assert np.array_equal(_all_codes(res, len(want)), want)
    assert res.event_idx.size == np.count_nonzero(want) > 0
    assert np.all(real["side"][res.event_idx] == 1), "long-only: taker buys trigger"


@pytest.mark.parametrize(
    "flow,extra",
    [
        (FLOW_SMALL, {}),
        (dict(window_s=1, q=0.9, lookback_s=30, min_samples=10), dict(min_notional_usd=2e5, cooldown_s=1.0)),
    ],
)
def test_flow_rule_matches_reference_on_real_trades(real, flow, extra):
    p = WhaleParams(**flow, **extra)
    codes, rows, flows, thr, _ = _run_updates(p, *_args(real))
    ref_flow, ref_thr = reference_flow(
        *_args(real), flow["window_s"], flow["q"], flow["lookback_s"], flow["min_samples"]
    )
    np.testing.assert_allclose(flows, ref_flow, rtol=1e-9)
    assert np.array_equal(np.isnan(thr), np.isnan(ref_thr))
    np.testing.assert_allclose(thr, ref_thr, rtol=1e-9, equal_nan=True)
    want = reference_event_codes(*_args(real), **flow, **extra)
    assert np.array_equal(codes, want)
    assert np.count_nonzero(codes & nb.EV_FLOW) > 20
    assert np.all(real["side"][codes != 0] == 1)


@given(stream=trade_streams(max_size=80))
@HYP
def test_features_match_reference_on_generated_streams(stream):
    res = run_batch(*stream, WhaleParams(min_notional_usd=1e3), all_features=True)
    want = reference_features(*stream)
    assert np.array_equal(np.isnan(res.features), np.isnan(want))
    # Sizes span 5 orders of magnitude inside one window, hour gaps empty it: prefix differences
    # stay within a few ulps of each window's own sum, whatever the totals behind it.
    for c in SUM_COLS:
        np.testing.assert_allclose(res.features[:, c], want[:, c], rtol=1e-13, atol=0.0)
    for c in EXACT_COLS:
        assert np.array_equal(res.features[:, c], want[:, c], equal_nan=True), FEATURE_NAMES[c]


# --- the flow history: two heaps and the quantile ------------------------------------------------


@given(
    stream=trade_streams(min_size=5, max_size=120),
    lookback=st.integers(1, 25),
    window_s=st.integers(1, 4),
    q=st.sampled_from([0.01, 0.5, 0.77, 0.9, 0.99]),
    data=st.data(),
)
@HYP
def test_flow_threshold_is_np_quantile_of_the_history_bit_for_bit(stream, lookback, window_s, q, data):
    min_samples = data.draw(st.integers(1, lookback))
    ts, price, qty, side = stream
    ts = ts[0] + (ts - ts[0]) // 7  # denser seconds: more closes per example
    state = new_state(WhaleParams(window_s=window_s, q=q, lookback_s=lookback, min_samples=min_samples))
    for i in range(len(ts)):
        update(state, int(ts[i]), float(price[i]), float(qty[i]), int(side[i]))
        n = int(state.nb.iv[nb.IV_HIST_N])
        ring = state.nb.hist[:n]
        lo_n, L = int(state.nb.iv[nb.IV_LO_N]), state.nb.hist.shape[0]
        lo, hi = state.nb.hv[:lo_n], -state.nb.hv[L : L + n - lo_n]
        # the two heaps hold the history, split at rank floor((n - 1) q), each in heap order,
        # and know where each sample sits
        assert np.array_equal(np.sort(np.concatenate([lo, hi])), np.sort(ring))
        if n:
            assert lo_n == min(math.floor((n - 1) * q), n - 1) + 1
            assert hi.size == 0 or lo.max() <= hi.min()
        for base, size in ((0, lo_n), (L, n - lo_n)):
            keys = state.nb.hv[base : base + size]
            assert np.all(keys[1:] <= keys[(np.arange(1, size) - 1) // 2])
            assert np.array_equal(state.nb.hpos[state.nb.hs[base : base + size]], base + np.arange(size))
        if n >= min_samples:
            assert state.flow_threshold_usd == np.quantile(ring, q)  # bit for bit
        else:
            assert math.isnan(state.flow_threshold_usd)


def test_flow_rule_survives_hours_of_empty_seconds_in_bounded_time():
    p = WhaleParams(window_s=60, q=0.99, lookback_s=3600, min_samples=60)
    ts = (
        np.array([0, 500, 1_000, 90_000, 30 * 86_400_000, 30 * 86_400_000 + 5, 60 * 86_400_000], np.int64)
        + 1_700_000_000_000
    )
    price = np.full(ts.size, 100.0)
    qty = np.array([1.0, 2.0, 1.0, 3.0, 0.5, 0.5, 0.1])
    side = np.array([1, 1, -1, 1, 1, 1, 1], np.int8)
    run_batch(ts[:2], price[:2], qty[:2], side[:2], p)  # compile outside the clock
    t0 = time.perf_counter()
    res = run_batch(ts, price, qty, side, p, all_features=True)
    assert time.perf_counter() - t0 < 1.0, "a month-long gap must cost O(lookback + window), not O(gap)"
    # After the gap the history is 3600 zero seconds: any taker buy is above its quantile.
    assert list(res.event_idx) == [4, 5, 6]
    assert res.state.flow_threshold_usd == 0.0
    np.testing.assert_array_equal(res.features[4, COUNT_COLS], [1, 1, 1, 1])


def test_flow_rule_matches_reference_across_a_two_hour_gap():
    rng = np.random.default_rng(3)
    t = np.sort(np.concatenate([rng.integers(0, 400_000, 300), rng.integers(7_600_000, 8_000_000, 300)]))
    ts = 1_700_000_000_000 + t.astype(np.int64)
    price = 100 + np.round(np.cumsum(rng.normal(0, 0.05, t.size)), 1)
    qty = rng.lognormal(0, 1.5, t.size)
    side = np.where(rng.random(t.size) < 0.55, 1, -1).astype(np.int8)
    flow = dict(window_s=7, q=0.8, lookback_s=600, min_samples=20)
    codes, _, flows, thr, _ = _run_updates(WhaleParams(**flow), ts, price, qty, side)
    ref_flow, ref_thr = reference_flow(ts, price, qty, side, **flow)
    np.testing.assert_allclose(flows, ref_flow, rtol=1e-9)
    np.testing.assert_allclose(thr, ref_thr, rtol=1e-9, equal_nan=True)
    assert np.array_equal(codes, reference_event_codes(ts, price, qty, side, **flow))


# --- causality and parity ------------------------------------------------------------------------

BOTH = WhaleParams(min_notional_usd=2_000.0, window_s=2, q=0.7, lookback_s=20, min_samples=3, cooldown_s=0.5)


@given(stream=trade_streams(min_size=2), future=trade_streams(max_size=60), data=st.data())
@HYP
def test_appending_future_trades_never_changes_the_past(stream, future, data):
    ts, price, qty, side = stream
    k = data.draw(st.integers(1, len(ts)))
    past = run_batch(ts[:k], price[:k], qty[:k], side[:k], BOTH, all_features=True)
    f_ts = ts[k - 1] + (future[0] - future[0][0])  # future trades start at or after the past
    full = run_batch(
        np.concatenate([ts[:k], f_ts]),
        np.concatenate([price[:k], future[1]]),
        np.concatenate([qty[:k], future[2]]),
        np.concatenate([side[:k], future[3]]),
        BOTH,
        all_features=True,
    )
    assert np.array_equal(full.features[:k], past.features, equal_nan=True)
    assert np.array_equal(_all_codes(full, len(full.features))[:k], _all_codes(past, k))


def test_batch_equals_repeated_update_bit_for_bit_on_real_trades(real):
    p = WhaleParams(min_notional_usd=1e5, **FLOW_SMALL)
    codes, rows, _, _, st_upd = _run_updates(p, *_args(real), capacity=2)
    res = run_batch(*_args(real), p, all_features=True)
    assert np.array_equal(res.features, rows, equal_nan=True)
    assert np.array_equal(_all_codes(res, len(codes)), codes)
    assert np.array_equal(res.event_features, rows[res.event_idx], equal_nan=True)
    assert st_upd.capacity > 2  # the live path grew its ring too


@given(stream=trade_streams(max_size=120), burst=st.integers(0, 3000), data=st.data())
@HYP
def test_batch_equals_repeated_update_with_bursts_that_grow_the_ring(stream, burst, data):
    ts, price, qty, side = stream
    at = data.draw(st.integers(0, len(ts)))
    # A burst of `burst` trades in one millisecond forces several ring doublings.
    ts = np.insert(ts, at, np.full(burst, ts[at - 1] if at else ts[0]))
    price = np.insert(price, at, np.full(burst, price[at - 1] if at else price[0]))
    qty = np.insert(qty, at, np.full(burst, 0.003))
    side = np.insert(side, at, np.where(np.arange(burst) % 3 == 0, -1, 1).astype(np.int8))
    codes, rows, _, _, _ = _run_updates(BOTH, ts, price, qty, side, capacity=2)
    res = run_batch(ts, price, qty, side, BOTH, state=new_state(BOTH, capacity=4), all_features=True)
    assert np.array_equal(res.features, rows, equal_nan=True)
    assert np.array_equal(_all_codes(res, len(ts)), codes)
    big = run_batch(ts, price, qty, side, BOTH, all_features=True)  # default capacity
    assert np.array_equal(big.features, rows, equal_nan=True)


@given(stream=trade_streams(min_size=2), data=st.data())
@HYP
def test_split_run_with_carried_state_equals_one_run(stream, data):
    ts, price, qty, side = stream
    k = data.draw(st.integers(0, len(ts)))
    one = run_batch(ts, price, qty, side, BOTH, all_features=True)
    first = run_batch(ts[:k], price[:k], qty[:k], side[:k], BOTH, all_features=True)
    second = run_batch(ts[k:], price[k:], qty[k:], side[k:], BOTH, state=first.state, all_features=True)
    assert np.array_equal(np.concatenate([first.features, second.features]), one.features, equal_nan=True)
    assert np.array_equal(np.concatenate([first.event_idx, second.event_idx + k]), one.event_idx)
    assert np.array_equal(np.concatenate([first.event_code, second.event_code]), one.event_code)
    for a, b in zip(second.state.nb, one.state.nb):
        assert np.array_equal(a, b, equal_nan=True)


def test_event_buffer_grows_when_most_trades_fire(real):
    p = WhaleParams(min_notional_usd=1.0)  # every taker buy fires
    res = run_batch(*_args(real), p)
    assert res.event_idx.size == np.count_nonzero(real["side"] == 1) > 1024
    want = reference_event_codes(*_args(real), min_notional_usd=1.0)
    assert np.array_equal(_all_codes(res, len(want)), want)


def test_copy_forks_the_state(real):
    p = WhaleParams(min_notional_usd=1e5, **FLOW_SMALL)
    a = run_batch(*[x[:5000] for x in _args(real)], p).state
    b = a.copy()
    tail = [x[5000:6000] for x in _args(real)]
    ra = run_batch(*tail, p, state=a, all_features=True)
    rb = run_batch(*tail, p, state=b, all_features=True)
    assert np.array_equal(ra.features, rb.features, equal_nan=True)
    assert a.n_trades == b.n_trades == 6000


# --- edge cases ----------------------------------------------------------------------------------


def test_first_trade_has_nan_returns_and_trivial_windows():
    state = new_state(WhaleParams(min_notional_usd=50.0))
    code, feats = update(state, 1_700_000_000_000, 100.0, 2.0, 1)
    assert code == nb.EV_NOTIONAL
    row = dict(zip(FEATURE_NAMES, feats))
    assert all(math.isnan(row[f"ret_{k}s"]) for k in (1, 5, 10, 30))
    assert math.isnan(row["ret_z_1s"]) and math.isnan(row["ret_z_5s"])
    assert row["rv_30s"] == 0.0 and row["burst_ratio_5s_60s"] == 12.0
    assert row["imbalance_5s"] == row["imbalance_30s"] == 1.0
    assert row["drawup_60s"] == row["drawdown_60s"] == 0.0
    assert row["buy_qty_60s"] == 2.0 and row["sell_qty_60s"] == 0.0
    assert row["trade_count_1s"] == 1.0 and row["notional_usd"] == 200.0


def test_equal_timestamps_share_windows_in_arrival_order():
    t0 = 1_700_000_000_000
    ts = np.array([t0] * 4 + [t0 + 1000, t0 + 1000], np.int64)
    price = np.array([100.0, 101.0, 99.0, 100.5, 102.0, 98.0])
    qty = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    side = np.array([1, -1, 1, -1, 1, 1], np.int8)
    f = run_batch(ts, price, qty, side, WhaleParams(min_notional_usd=1e9), all_features=True).features
    # At t0 + 1000 the 1 s window (ts > t - 1000) no longer holds the t0 trades.
    np.testing.assert_array_equal(f[:, COL["trade_count_1s"]], [1, 2, 3, 4, 1, 2])
    np.testing.assert_array_equal(f[:, COL["trade_count_5s"]], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(f[:4, COL["buy_qty_5s"]], [1, 1, 4, 4])
    assert np.all(np.isnan(f[:4, COL["ret_1s"]]))
    # The 1 s reference of the later trades is the last of the four at t0 (ts <= t - 1000).
    assert f[4, COL["ret_1s"]] == 102.0 / 100.5 - 1.0 and f[5, COL["ret_1s"]] == 98.0 / 100.5 - 1.0
    assert f[3, COL["drawup_60s"]] == 100.5 / 99.0 - 1.0


def test_huge_gaps_empty_every_window_exactly():
    ts = np.array([0, 10, 3 * 3_600_000, 3 * 3_600_000 + 10], np.int64) + 1_700_000_000_000
    res = run_batch(
        ts,
        np.array([100.0, 101.0, 90.0, 91.0]),
        np.array([3.0, 1.0, 0.5, 0.25]),
        np.array([1, -1, -1, 1], np.int8),
        WhaleParams(min_notional_usd=1e9),
        all_features=True,
    )
    row = dict(zip(FEATURE_NAMES, res.features[2]))
    assert row["buy_qty_60s"] == 0.0 and row["sell_qty_60s"] == 0.5  # exactly, no residue
    assert row["ret_30s"] == 90.0 / 101.0 - 1.0  # the last trade at or before t - 30 s
    # rv_30s covers the same path as ret_30s: the one return from that reference.
    assert row["rv_30s"] == abs(math.log(90.0) - math.log(101.0))
    assert not math.isnan(row["ret_1s"]) and row["drawup_60s"] == 0.0
    row = dict(zip(FEATURE_NAMES, res.features[3]))
    assert row["rv_30s"] == math.sqrt((math.log(90.0) - math.log(101.0)) ** 2 + (math.log(91.0) - math.log(90.0)) ** 2)


def test_small_windows_stay_exact_after_a_lifetime_of_volume():
    # Totals run from the first trade on: $1e15 of prints earlier must not blur a window
    # holding a few dollars (plain float totals would lose every digit of it).
    t0 = 1_700_000_000_000
    ts = np.array([t0, t0 + 1, t0 + 86_400_000, t0 + 86_400_001, t0 + 86_400_002], np.int64)
    price = np.array([1e5, 1e5, 3.0, 3.0, 7.0])
    qty = np.array([5e9, 5e9, 0.1, 0.2, 0.3])
    side = np.array([1, -1, 1, -1, 1], np.int8)
    f = run_batch(ts, price, qty, side, WhaleParams(min_notional_usd=1e20), all_features=True).features
    row = dict(zip(FEATURE_NAMES, f[4]))
    assert row["buy_qty_1s"] == 0.1 + 0.3 and row["sell_qty_1s"] == 0.2
    assert row["buy_notional_usd_1s"] == 3.0 * 0.1 + 7.0 * 0.3 and row["sell_notional_usd_1s"] == 3.0 * 0.2
    assert row["trade_count_60s"] == 3


# --- boundary errors --------------------------------------------------------------------------


def test_out_of_order_trade_raises_and_leaves_the_state_alone():
    state = new_state(WhaleParams(min_notional_usd=1.0, window_s=5))
    update(state, 2_000, 10.0, 1.0, 1)
    before = [a.copy() for a in state.nb]
    with pytest.raises(ValueError, match="ts_ms 1000 is before the previous trade's 2000"):
        update(state, 1_000, 10.0, 1.0, 1)
    with pytest.raises(ValueError, match="invalid trade"):
        update(state, 3_000, -1.0, 1.0, 1)
    with pytest.raises(ValueError, match="side=0"):
        update(state, 3_000, 10.0, 1.0, 0)
    for name, a, b in zip(state.nb._fields, before, state.nb):
        if name != "iv":
            assert np.array_equal(a, b, equal_nan=True), name
    keep = np.arange(nb.N_IV) != nb.IV_LAST_STATUS
    assert np.array_equal(before[0][keep], state.nb.iv[keep])


def test_run_batch_rejects_bad_input_with_the_offending_position():
    p = WhaleParams(min_notional_usd=1.0)
    ts = np.array([1, 3, 2], np.int64)
    ones = np.ones(3)
    with pytest.raises(ValueError, match=r"ts_ms\[2\]=2 < ts_ms\[1\]=3"):
        run_batch(ts, ones, ones, np.ones(3, np.int8), p)
    with pytest.raises(ValueError, match=r"side\[1\]=0"):
        run_batch(np.arange(3), ones, ones, np.array([1, 0, 1]), p)
    with pytest.raises(ValueError, match="price has 2 values but ts_ms has 3"):
        run_batch(np.arange(3), ones[:2], ones, np.ones(3, np.int8), p)
    with pytest.raises(ValueError, match="state was built for"):
        run_batch(np.arange(3), ones, ones, np.ones(3, np.int8), p, state=new_state(WhaleParams(min_notional_usd=2.0)))
    done = run_batch(np.arange(3) + 10, ones, ones, np.ones(3, np.int8), p)
    with pytest.raises(ValueError, match="before the state's last trade"):
        run_batch(np.arange(3), ones, ones, np.ones(3, np.int8), p, state=done.state)


def test_whale_params_validation_and_round_trip():
    with pytest.raises(ValueError, match=r"unknown whale params key\(s\): 'windows_s' \(did you mean 'window_s'\?\)"):
        WhaleParams.from_dict({"windows_s": 5})
    with pytest.raises(ValueError, match="no whale rule set"):
        WhaleParams.from_dict({})
    with pytest.raises(ValueError, match="q must be a quantile strictly between 0 and 1"):
        WhaleParams.from_dict({"window_s": 5, "q": 1.0})
    with pytest.raises(ValueError, match="min_samples .* exceeds lookback_s"):
        WhaleParams(window_s=5, lookback_s=10, min_samples=11)
    with pytest.raises(ValueError, match="only apply to the flow rule"):
        WhaleParams.from_dict({"min_notional_usd": 1e6, "q": 0.9})
    with pytest.raises(ValueError, match="window_s must be a whole number"):
        WhaleParams(window_s=True)
    with pytest.raises(ValueError, match="min_notional_usd must be a number > 0"):
        WhaleParams(min_notional_usd=float("nan"))
    with pytest.raises(TypeError):
        new_state({"min_notional_usd": 1.0})
    for p in (
        WhaleParams(min_notional_usd=1_000_000),
        WhaleParams(window_s=60, q=0.95, cooldown_s=30),
        WhaleParams(min_notional_usd=5e5, window_s=1, lookback_s=600, min_samples=600),
    ):
        assert WhaleParams.from_dict(p.to_dict()) == p
    assert WhaleParams(min_notional_usd=1_000_000) == WhaleParams(min_notional_usd=1e6)


def test_signals_imports_no_io_layer_and_reexports_the_api():
    # Statically: no I/O layer, clock, file, socket or YAML module in signals/ (numba itself
    # imports yaml and socket, so sys.modules cannot tell).
    forbidden = {
        "bt",
        "datasets",
        "live",
        "pandas",
        "pyarrow",
        "yaml",
        "socket",
        "os",
        "io",
        "pathlib",
        "time",
        "datetime",
        "asyncio",
        "aiohttp",
        "websockets",
        "requests",
    }
    for path in sorted((ROOT / "signals").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            hits = [n for n in names if n.split(".")[0] in forbidden]
            assert not hits, f"{path.name} imports {hits}"
    code = (
        "import sys, signals\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'bt', 'datasets', 'live', 'pandas'})\n"
        "assert not bad, bad\n"
        "assert hasattr(signals, '__file__') and signals.__file__, 'stale editable install'\n"
        "missing = [n for n in ('WhaleParams', 'KernelState', 'BatchResult', 'new_state', 'update',\n"
        "                       'run_batch', 'FEATURE_NAMES', 'feature_spec_hash') if n not in signals.__all__]\n"
        "assert not missing, missing\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert KernelState.__module__ == "signals.kernel"
