"""Event study, metrics and portfolio against hand computations and independent oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bt.engine import Costs, FundingSeries, event_study
from bt.metrics import bootstrap_mean_ci, cluster_bootstrap_mean_ci, event_metrics, portfolio_metrics, signal_clusters
from bt.portfolio import simulate_portfolio

# ts (ms) and prices of a tiny hand-made tape
TS = np.array([0, 1000, 2000, 3000, 5000, 8000], dtype=np.int64)
PX = np.array([100.0, 101.0, 102.0, 99.0, 103.0, 104.0])
FEE = 0.0005


def _row(study, signal, horizon_ms):
    r = study[(study["signal"] == signal) & (study["horizon_ms"] == horizon_ms)]
    assert len(r) == 1
    return r.iloc[0]


def test_event_study_hand_computed_entry_exit_fees_and_drops():
    study = event_study(
        TS, PX, np.array([0, 2, 4, 5]), horizons_ms=[3000], latency_ms=0, costs=Costs(fee=FEE), label_threshold=0.01
    )
    # trigger 0 → entry is the next trade (idx 1, 101), exit last trade at or before 1000+3000 (idx 3, 99)
    r = _row(study, 0, 3000)
    assert (r.entry_idx, r.exit_idx, r.exit_reason) == (1, 3, "horizon")
    assert r.gross_return == pytest.approx(99 / 101 - 1, abs=1e-15)
    assert r.net_return == pytest.approx(99 / 101 - 1 - 2 * FEE, abs=1e-15)
    assert not r.label
    # trigger 2 → entry idx 3 (99); exit at or before 6000 → idx 4 (103): +4.04 % ≥ 1 % label
    r = _row(study, 1, 3000)
    assert (r.entry_idx, r.exit_idx) == (3, 4)
    assert r.gross_return == pytest.approx(103 / 99 - 1)
    assert r.label
    # trigger 4 → entry idx 5 at 8000; 8000 + 3000 runs past the last trade: dropped, not truncated
    r = _row(study, 2, 3000)
    assert r.exit_reason == "dropped_past_data" and np.isnan(r.net_return) and not r.label
    # trigger 5 → nothing after it to enter on
    r = _row(study, 3, 3000)
    assert r.exit_reason == "dropped_no_entry" and r.entry_idx == -1


def test_entry_latency_and_slippage():
    study = event_study(
        TS, PX, np.array([2]), horizons_ms=[3000], latency_ms=1500, costs=Costs(fee=FEE, slippage=0.001)
    )
    r = _row(study, 0, 3000)
    # first trade after the trigger at or after 2000 + 1500 → idx 4 (5000); exit ≤ 8000 → idx 5
    assert (r.entry_idx, r.exit_idx) == (4, 5)
    assert r.entry_price == pytest.approx(103 * 1.001)
    assert r.net_return == pytest.approx(104 / (103 * 1.001) - 1 - 2 * FEE)


def test_take_profit_and_stop_loss_checked_on_trade_prices():
    tp = event_study(TS, PX, np.array([0]), horizons_ms=[7000], costs=Costs(fee=0), take_profit=0.015)
    r = _row(tp, 0, 7000)
    assert (r.exit_idx, r.exit_reason, r.exit_price) == (4, "take_profit", 103.0)
    both = event_study(
        TS, PX, np.array([0]), horizons_ms=[7000], costs=Costs(fee=0), take_profit=0.015, stop_loss=0.015
    )
    r = _row(both, 0, 7000)
    assert (r.exit_idx, r.exit_reason) == (3, "stop_loss")  # 99 comes before 103
    # a TP beyond a short horizon's exit does not apply to that horizon
    grid = event_study(TS, PX, np.array([0]), horizons_ms=[1000, 7000], costs=Costs(fee=0), take_profit=0.015)
    assert _row(grid, 0, 1000).exit_reason == "horizon" and _row(grid, 0, 7000).exit_reason == "take_profit"


def _tape(seed, n=3000):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 800, n)).astype(np.int64)
    px = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    return ts, px


def test_horizon_grid_in_one_pass_equals_separate_passes():
    ts, px = _tape(3)
    trig = np.sort(np.random.default_rng(4).choice(len(ts) - 1, 200, replace=False))
    hs = [5_000, 60_000, 300_000]
    one = event_study(ts, px, trig, horizons_ms=hs, latency_ms=250, take_profit=0.004, stop_loss=0.003)
    for h in hs:
        sep = event_study(ts, px, trig, horizons_ms=[h], latency_ms=250, take_profit=0.004, stop_loss=0.003)
        a = one[one["horizon_ms"] == h].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, sep.reset_index(drop=True))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), fee_bps=st.floats(0, 50), slip_bps=st.floats(0, 50))
def test_costs_never_raise_returns(seed, fee_bps, slip_bps):
    ts, px = _tape(seed, 400)
    trig = np.arange(0, 380, 7)
    free = event_study(ts, px, trig, horizons_ms=[20_000], costs=Costs(0.0, 0.0))
    paid = event_study(ts, px, trig, horizons_ms=[20_000], costs=Costs.from_bps(fee_bps, slip_bps))
    ok = np.isfinite(free["net_return"].to_numpy())
    assert (paid["net_return"].to_numpy()[ok] <= free["net_return"].to_numpy()[ok] + 1e-15).all()


def test_funding_is_charged_for_each_print_spanned():
    fs = FundingSeries(np.array([1500, 4000, 9000]), np.array([0.0001, -0.0003, 0.0002]))
    study = event_study(TS, PX, np.array([0]), horizons_ms=[3000], costs=Costs(fee=0), funding=fs)
    r = _row(study, 0, 3000)  # position 1000 → 3000 spans the print at 1500 only: a long pays 1 bp
    assert r.funding_return == pytest.approx(-0.0001)
    assert r.net_return == pytest.approx(99 / 101 - 1 - 0.0001)


def test_event_metrics_golden():
    r = np.array([0.02, -0.01, 0.005, 0.0, 0.011, np.nan])
    lab = np.array([True, False, False, False, True, False])
    m = event_metrics(r, lab, n_boot=500, seed=1)
    x = r[:5]
    assert m["n_signals"] == 5
    assert m["mean_return"] == pytest.approx(x.mean())
    assert m["median_return"] == pytest.approx(0.005)
    assert m["win_rate"] == pytest.approx(3 / 5)
    assert m["hit_rate_1pct"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(2 / 5)
    for p in (10, 25, 50, 75, 90):
        assert m[f"p{p}"] == pytest.approx(np.percentile(x, p))
    # five signals are five clusters: below the minimum for a CI, which is null with its reason
    assert m["n_independent"] == 5 and m["mean_return_ci95"] is None
    assert "5 independent" in m["ci_note"]
    assert event_metrics(np.array([np.nan]), np.array([False]))["n_signals"] == 0
    twelve = np.resize(x, 12)
    m = event_metrics(twelve, np.resize(lab[:5], 12), n_boot=500, seed=1)
    lo, hi = m["mean_return_ci95"]
    assert lo < twelve.mean() < hi and m["ci_note"] is None


def test_signal_clusters_chain_overlapping_windows():
    #  [0,10] [5,12] [11,20] chain into one cluster; [21,30] alone; [25,26] inside it; dropped -1
    start = np.array([0, 5, 11, 21, 25, 40])
    end = np.array([10, 12, 20, 30, 26, -1])
    assert signal_clusters(start, end).tolist() == [0, 0, 0, 1, 1, -1]
    # input order does not matter; a window starting exactly at the previous end overlaps it
    assert signal_clusters(np.array([21, 0, 10]), np.array([30, 10, 20])).tolist() == [1, 0, 0]


def test_clustered_signals_get_no_narrow_ci():
    """158 signals in one burst are one independent observation: no CI, not a 0.35 bps one."""
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.002, 158)
    start = np.sort(rng.integers(0, 8_300, 158))
    cl = signal_clusters(start, start + 30_000)
    m = event_metrics(r, r > 0.01, cluster=cl, n_boot=500)
    assert (m["n_signals"], m["n_independent"]) == (158, 1)
    assert m["mean_return_ci95"] is None and "1 independent signal cluster " in m["ci_note"]


def test_cluster_bootstrap_is_wider_than_iid_on_correlated_chains():
    rng = np.random.default_rng(5)
    # 20 chains of 25 signals each; a chain shares its outcome (common shock) plus small noise
    shock = rng.normal(0.0, 0.01, 20)
    r = np.repeat(shock, 25) + rng.normal(0, 0.0005, 500)
    cl = np.repeat(np.arange(20), 25)
    lo_i, hi_i = bootstrap_mean_ci(r, 1000, seed=0)
    lo_c, hi_c = cluster_bootstrap_mean_ci(r, cl, 1000, seed=0)
    assert (hi_c - lo_c) > 3 * (hi_i - lo_i)
    # one signal per cluster: same distribution as the iid bootstrap
    lo1, hi1 = cluster_bootstrap_mean_ci(r, np.arange(500), 2000, seed=1)
    lo2, hi2 = bootstrap_mean_ci(r, 2000, seed=1)
    assert abs((hi1 - lo1) - (hi2 - lo2)) < 0.15 * (hi2 - lo2)


def test_bootstrap_ci_covers_the_mean_at_about_the_stated_rate():
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        x = rng.normal(0.001, 0.01, 300)
        lo, hi = bootstrap_mean_ci(x, 400, seed=i)
        covered += lo <= 0.001 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_portfolio_one_position_at_a_time_hand_computed():
    ts = np.array([0, 60_000, 120_000, 180_000, 240_000, 300_000], dtype=np.int64)
    px = np.array([100.0, 100.0, 110.0, 105.0, 120.0, 120.0])
    study = event_study(ts, px, np.array([0, 1, 2]), horizons_ms=[120_000], costs=Costs(fee=0.001))
    pf = simulate_portfolio(
        study, ts, px, fee=0.001, init_cash=1000.0, max_positions=1, bar_ms=60_000, start_ms=0, end_ms=300_000
    )
    # signal 0: 60s @100 → 180s @105; signal 1 (entry 120s) overlaps and is skipped; signal 2 enters at 180s
    assert pf.positions["signal"].tolist() == [0, 2]
    units0 = 1000 / (100 * 1.001)
    cash1 = units0 * 105 * 0.999
    units2 = cash1 / (105 * 1.001)
    final = units2 * 120 * 0.999
    assert pf.positions["pnl"].iloc[0] == pytest.approx(cash1 - 1000)
    assert pf.equity.iloc[-1] == pytest.approx(final)
    # marked to market in between: at the 120 s bar the first position is worth units0 × 110
    assert pf.equity.loc[pd.Timestamp(120_000, unit="ms", tz="UTC")] == pytest.approx(units0 * 110)
    two = simulate_portfolio(
        study, ts, px, fee=0.001, init_cash=1000.0, max_positions=2, bar_ms=60_000, start_ms=0, end_ms=300_000
    )
    assert two.positions["signal"].tolist() == [0, 1, 2]
    assert two.positions["allocation"].iloc[0] == pytest.approx(500.0)


def test_portfolio_equity_matches_vectorbt():
    """vectorbt, fed the same orders at the same trade prices, values the account identically."""
    vbt = pytest.importorskip("vectorbt")
    ts, px = _tape(11, 4000)
    ts = ts * 10
    # Triggers far enough apart that no exit shares a trade with the next entry (vectorbt's
    # order array holds one order per row).
    trig = np.arange(10, 3900, 150) + np.random.default_rng(5).integers(0, 50, 26)
    study = event_study(ts, px, trig, horizons_ms=[30_000], costs=Costs(fee=FEE))
    bar = 10_000
    pf = simulate_portfolio(
        study, ts, px, fee=FEE, init_cash=1000.0, max_positions=1, bar_ms=bar, start_ms=0, end_ms=int(ts[-1]) + 1
    )
    size = np.full(len(ts), np.nan)
    for e, x in zip(pf.positions["entry_idx"], pf.positions["exit_idx"]):
        size[e] = np.inf
        size[x] = -np.inf
    port = vbt.Portfolio.from_orders(
        pd.Series(px),
        size=pd.Series(size),
        size_type="amount",
        direction="longonly",
        fees=FEE,
        init_cash=1000.0,
        freq="1s",
    )
    value = port.value().to_numpy()
    bar_end = pf.equity.index[1:].as_unit("ms").asi8
    last = np.searchsorted(ts, bar_end, side="right") - 1
    assert len(pf.positions) > 20
    np.testing.assert_allclose(pf.equity.to_numpy()[1:], value[last], rtol=1e-9)


def test_portfolio_metrics_golden():
    # 40 days of hourly equity: annualised figures come from the 40 daily returns, 365 a year
    rng = np.random.default_rng(2)
    idx = pd.date_range("2024-01-01", periods=40 * 24 + 1, freq="1h", tz="UTC")
    eq = pd.Series(100.0 * np.cumprod(np.r_[1.0, 1 + rng.normal(2e-4, 2e-3, len(idx) - 1)]), index=idx)
    m = portfolio_metrics(
        eq, np.r_[np.zeros(10), np.ones(len(idx) - 10)], n_trades=2, trade_returns=np.array([0.1, -0.05])
    )
    closes = eq.groupby(eq.index.floor("D")).last()
    daily = closes.to_numpy() / np.r_[eq.iloc[0], closes.to_numpy()[:-1]] - 1
    assert daily.size == 41  # 40 full days and the closing instant of the 41st
    assert m["total_return"] == pytest.approx(eq.iloc[-1] / 100 - 1)
    assert m["max_drawdown"] == pytest.approx((eq / eq.cummax() - 1).min())
    assert m["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(365))
    assert m["exposure"] == pytest.approx(1 - 10 / len(idx))
    assert m["trade_win_rate"] == pytest.approx(0.5)
    assert m["n_days"] == pytest.approx(40.0) and m["cagr"] is None and "CAGR needs 90" in m["annualisation_note"]


def test_short_spans_are_not_annualised():
    """Five minutes once gave Sharpe -1154 and CAGR -100 %: now null, with the reason."""
    idx = pd.date_range("2024-07-19 12:00", periods=6, freq="1min", tz="UTC")
    eq = pd.Series([10_000.0, 9_990, 9_985, 9_992, 9_980, 9_975], index=idx)
    m = portfolio_metrics(eq, np.ones(6), n_trades=1, trade_returns=np.array([-0.0025]))
    assert m["sharpe"] is None and m["sortino"] is None and m["cagr"] is None
    assert m["total_return"] == pytest.approx(-0.0025)
    assert "span of 0.00 days" in m["annualisation_note"]
    # 120 days: every figure is there
    idx = pd.date_range("2024-01-01", periods=121, freq="1D", tz="UTC")
    eq = pd.Series(np.linspace(100.0, 110.0, 121) + np.sin(np.arange(121)), index=idx)
    m = portfolio_metrics(eq, np.ones(121), n_trades=0, trade_returns=np.array([]))
    assert m["annualisation_note"] is None
    assert m["cagr"] == pytest.approx((eq.iloc[-1] / eq.iloc[0]) ** (365 / 120) - 1)


def test_portfolio_settles_funding_for_each_print_spanned():
    ts = np.array([0, 60_000, 120_000, 180_000], dtype=np.int64)
    px = np.array([100.0, 100.0, 100.0, 100.0])
    # prints at 90 s (+1 bp, the long pays) and 150 s (-3 bp, the long receives): net +2 bp of notional
    fs = FundingSeries(np.array([90_000, 150_000, 200_000]), np.array([0.0001, -0.0003, 0.0005]))
    study = event_study(ts, px, np.array([0]), horizons_ms=[120_000], costs=Costs(fee=0.0), funding=fs)
    assert study["funding_return"].iloc[0] == pytest.approx(0.0002)
    pf = simulate_portfolio(
        study, ts, px, fee=0.0, init_cash=10_000.0, max_positions=1, bar_ms=60_000, start_ms=0, end_ms=180_000
    )
    assert pf.positions["pnl"].iloc[0] == pytest.approx(2.0)  # +$2 on $10,000 at a flat price
    assert pf.equity.iloc[-1] == pytest.approx(10_002.0)


def test_entry_is_in_a_later_millisecond_than_the_trigger():
    """Fills stamped in the whale's own millisecond are its own order's: never an entry."""
    ts = np.array([0, 1000, 1000, 1000, 1001, 1500, 5000], dtype=np.int64)
    px = np.array([100.0, 100.0, 100.5, 101.0, 102.0, 103.0, 104.0])
    study = event_study(ts, px, np.array([1]), horizons_ms=[1000], latency_ms=0, costs=Costs(fee=0))
    r = _row(study, 0, 1000)
    assert (r.entry_idx, r.entry_ts_ms, r.entry_price) == (4, 1001, 102.0)
    # with a latency the entry is the first trade after trigger + latency (1000 + 500 → 1500 is not later)
    r = _row(event_study(ts, px, np.array([1]), horizons_ms=[1000], latency_ms=500, costs=Costs(fee=0)), 0, 1000)
    assert (r.entry_idx, r.entry_ts_ms) == (6, 5000)
