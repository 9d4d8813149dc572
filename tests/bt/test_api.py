"""The notebook API (`bt.backtest`, `bt.load_run`, `Run`) and its vectorbt portfolio."""

from __future__ import annotations

import shutil

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import bt
from bt.engine import Costs, event_study
from bt.metrics import daily_returns, portfolio_metrics
from bt.portfolio import simulate_portfolio
from datasets.lake import Lake
from datasets.sources.funding import write_funding
from test_run import _market


@pytest.fixture(scope="module")
def lake_cfg(tmp_path_factory):
    """The test_run market with funding every 8 h (rates of both signs) and slippage: nothing is zero."""
    tmp = tmp_path_factory.mktemp("api")
    lake = Lake(tmp / "lake")
    lake.write_trades(_market())
    t0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
    h8 = 8 * 3_600_000
    write_funding(
        lake,
        "binance_usdm",
        "TESTUSDT",
        pd.DataFrame({"ts_ms": t0 + h8 * np.arange(8), "rate": [3e-4, -2e-4, 1e-4, 4e-4, -1e-4, 2e-4, 1e-4, 5e-4]}),
        source="test",
    )
    cfg = {
        "name": "api",
        "data": {
            "lake": str(tmp / "lake"),
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-02",
        },
        "signal": {"whale": {"min_notional_usd": 2500}},
        # 8 h horizon: positions span funding prints
        "backtest": {"horizon": "8h", "horizons": ["5m"], "fee_bps": 5, "slippage_bps": 2, "bootstrap": 50},
        "portfolio": {"max_positions": 3},
    }
    return tmp, cfg


@pytest.fixture(scope="module")
def run(lake_cfg):
    tmp, cfg = lake_cfg
    return bt.backtest(cfg, results_dir=tmp / "results", log_mlflow=False, tearsheet=False, quiet=True)


def _assert_value_is_equity(pf, equity):
    value = pf.value()
    assert isinstance(value, pd.Series)
    np.testing.assert_allclose(value.loc[equity.index].to_numpy(), equity.to_numpy(), rtol=1e-9, atol=0)


def test_run_reads_the_folder_bt_run_wrote(run, lake_cfg):
    tmp, cfg = lake_cfg
    assert run.path == tmp / "results" / run.run_id and run.config.portfolio.max_positions == 3
    assert run.metrics == json.loads((run.path / "metrics.json").read_text())
    assert run.config.run_id == run.run_id
    assert len(run.events) == 2 * len(run.events[run.events["horizon"] == "8h"])
    primary = run.events[run.events["horizon"] == "8h"]
    assert run.metrics["mean_return"] == pytest.approx(primary["net_return"].mean())
    assert len(run.signals) == run.metrics["n_whale_events"] and set(run.signals["decision"]) == {"long"}
    assert run.signals["trade_id"].tolist() == primary["trigger_trade_id"].tolist()
    assert run.equity.name == "equity" and run.equity.iloc[0] == 10_000.0
    # the same run opened by id and by path
    again = bt.load_run(run.run_id, results_dir=tmp / "results")
    assert again.path == run.path and bt.load_run(run.path).metrics == run.metrics


def test_run_errors_name_what_exists(run, lake_cfg):
    tmp, _ = lake_cfg
    with pytest.raises(FileNotFoundError, match=f"runs in .*results: {run.run_id}"):
        bt.load_run("nope", results_dir=tmp / "results")
    assert run.report_path == run.path / "report.html" and run.report_path.is_file()
    bare = tmp / "bare" / run.run_id
    shutil.copytree(run.path, bare)
    (bare / "report.html").unlink()
    with pytest.raises(FileNotFoundError, match="report.html not found"):
        bt.load_run(bare).report_path
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bt.nothing  # noqa: B018


def test_portfolio_is_the_run_equity_with_funding_slippage_and_three_slots(run):
    m = run.metrics
    assert m["costs"]["funding"] and run.positions["funding_return"].abs().min() > 0
    pf = run.portfolio
    _assert_value_is_equity(pf, run.equity)
    assert pf.total_return() == pytest.approx(m["portfolio"]["total_return"], rel=1e-9)
    stats = pf.stats()
    assert stats["Total Trades"] == m["portfolio"]["n_trades"] == len(run.positions)
    assert stats["Max Drawdown [%]"] == pytest.approx(-100 * m["portfolio"]["max_drawdown"], rel=1e-6)
    rr = pf.trades.records_readable
    assert len(rr) == len(run.positions)
    # each vectorbt trade is one position: same prices, size and pnl
    rr = rr.sort_values("Entry Timestamp", kind="stable").reset_index(drop=True)
    pos = run.positions
    np.testing.assert_allclose(rr["Avg Entry Price"], pos["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(rr["Avg Exit Price"], pos["exit_price"], rtol=1e-12)
    np.testing.assert_allclose(rr["Size"], pos["units"], rtol=1e-9)
    np.testing.assert_allclose(rr["PnL"], pos["pnl"], rtol=1e-7, atol=1e-9)
    assert (rr["Entry Timestamp"] - pd.to_datetime(pos["entry_ts_ms"], unit="ms", utc=True)).abs().max() < pd.Timedelta(
        1, "us"
    )
    assert pf.plot() is not None


def test_yaml_config_one_slot(lake_cfg):
    tmp, cfg = lake_cfg
    one = {**cfg, "name": "api1", "portfolio": {"max_positions": 1, "bar": "5m"}}
    path = tmp / "one.yaml"
    path.write_text(yaml.safe_dump(one))
    run = bt.backtest(path, results_dir=tmp / "results", log_mlflow=False, tearsheet=False, quiet=True)
    assert run.config.portfolio.bar == "5m"
    pf = run.portfolio
    _assert_value_is_equity(pf, run.equity)
    assert pf.total_return() == pytest.approx(run.metrics["portfolio"]["total_return"], rel=1e-9)
    assert len(pf.trades.records_readable) == run.metrics["portfolio"]["n_trades"] > 0


def test_orders_in_one_millisecond_and_on_a_bar_end():
    """An exit and the next entry in the same millisecond, both on a bar end (test_engine's hand case)."""
    from bt.api import build_portfolio

    ts = np.array([0, 60_000, 120_000, 180_000, 240_000, 300_000], dtype=np.int64)
    px = np.array([100.0, 100.0, 110.0, 105.0, 120.0, 120.0])
    study = event_study(ts, px, np.array([0, 1, 2]), horizons_ms=[120_000], costs=Costs(fee=0.001))
    for slots in (1, 2):
        sim = simulate_portfolio(
            study, ts, px, fee=0.001, init_cash=1000.0, max_positions=slots, bar_ms=60_000, start_ms=0, end_ms=300_000
        )
        pf = build_portfolio(
            sim.positions,
            sim.equity,
            sim.price,
            fee=0.001,
            slippage=0.0,
            init_cash=1000.0,
            max_positions=slots,
            bar="1m",
        )
        _assert_value_is_equity(pf, sim.equity)
        assert len(pf.trades.records_readable) == len(sim.positions) == slots + 1


def test_our_statistics_are_quantstats_where_they_say_so():
    """bt.metrics keeps its own formulas (no 8 s vectorbt import per run); these match quantstats."""
    import quantstats as qs

    rng = np.random.default_rng(3)
    idx = pd.date_range("2024-01-01", periods=45 * 24 + 1, freq="1h", tz="UTC")
    eq = pd.Series(100.0 * np.cumprod(np.r_[1.0, 1 + rng.normal(1e-4, 3e-3, len(idx) - 1)]), index=idx)
    m = portfolio_metrics(eq, np.ones(len(idx)), n_trades=0, trade_returns=np.array([]))
    daily = daily_returns(eq)
    daily.index = daily.index.tz_localize(None)
    assert m["sharpe"] == pytest.approx(qs.stats.sharpe(daily, periods=365), rel=1e-12)
    assert m["sortino"] == pytest.approx(qs.stats.sortino(daily, periods=365), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(eq.tz_localize(None)), rel=1e-12)
    assert m["total_return"] == pytest.approx(qs.stats.comp(daily), rel=1e-12)


def test_import_bt_stays_light():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bt; bt.__all__"], capture_output=True, text=True, check=True
    ).stderr
    for mod in ("bt.api", "bt.run", "pandas", "vectorbt"):
        assert f" {mod}\n" not in out and f"| {mod}\n" not in out, f"`import bt` imports {mod}"


def test_a_universe_run_portfolio_is_one_group_over_its_symbols_with_shared_cash(tmp_path):
    """Two symbols, two slots shared by them: one vectorbt group of (symbol, slot) columns, one cash."""
    from tests.bt.universe_market import SYMBOLS, raw_config, write_lake

    write_lake(tmp_path / "lake")
    run = bt.backtest(
        raw_config(tmp_path / "lake", symbols=list(SYMBOLS)),
        results_dir=tmp_path / "results",
        log_mlflow=False,
        tearsheet=False,
        quiet=True,
    )
    assert set(run.positions["symbol"]) == set(SYMBOLS)
    pf = run.portfolio
    assert list(pf.wrapper.columns) == [(s, k) for s in SYMBOLS for k in range(2)]
    _assert_value_is_equity(pf, run.equity)
    assert pf.total_return() == pytest.approx(run.metrics["portfolio"]["total_return"], rel=1e-9)
    rr = pf.trades.records_readable
    assert len(rr) == run.metrics["portfolio"]["n_trades"] == len(run.positions)
    # each trade is on its own symbol's columns, at the position's prices
    rr = rr.sort_values(["Entry Timestamp", "Column"], kind="stable").reset_index(drop=True)
    pos = run.positions.sort_values(["entry_ts_ms", "symbol"], kind="stable").reset_index(drop=True)
    assert [c[0] for c in rr["Column"]] == pos["symbol"].tolist()
    np.testing.assert_allclose(rr["Avg Entry Price"], pos["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(rr["PnL"], pos["pnl"], rtol=1e-7, atol=1e-9)
