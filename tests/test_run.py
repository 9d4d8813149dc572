"""`bt run` / `bt signals` end to end on a small lake: files, MLflow, caching, journal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
import datasets.cli
from bt.config import load_config
from bt.run import compute_signals, run_backtest
from datasets.lake import Lake, Partition
from signals.journal import JOURNAL_KEYS

DAY_MS = 86_400_000


def _market(n=60_000, days=2, seed=0, symbol="TESTUSDT"):
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
    ts = np.sort(rng.integers(0, days * DAY_MS, n)) + t0
    px = 100 * np.exp(np.cumsum(rng.normal(0, 3e-4, n)))
    return pd.DataFrame({"exchange": "binance_usdm", "symbol": symbol, "trade_id": np.arange(n) + 1000,
                         "ts_ms": ts, "price": px, "qty": rng.lognormal(0, 1.4, n),
                         "side": np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)})


@pytest.fixture
def lake_cfg(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write_trades(_market())
    cfg = {
        "name": "e2e",
        "data": {"lake": str(tmp_path / "lake"), "exchange": "binance_usdm", "symbol": "TESTUSDT",
                 "start": "2024-03-01", "end": "2024-03-02"},
        "signal": {"whale": {"min_notional_usd": 2500}},
        "backtest": {"horizon": "5m", "horizons": ["1m"], "fee_bps": 5, "bootstrap": 200},
        "portfolio": {"max_positions": 2},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path, path, cfg


def test_bt_run_writes_the_run_folder_and_logs_to_mlflow(lake_cfg, capsys):
    tmp, path, _ = lake_cfg
    uri = f"sqlite:///{tmp}/mlflow.db"
    rc = bt.cli.main(["run", str(path), "--results", str(tmp / "results"), "--tracking-uri", uri])
    assert rc == 0
    config = load_config(path)
    run_dir = tmp / "results" / config.run_id
    for f in ("config.yaml", "metrics.json", "signals.jsonl", "trades.parquet", "tearsheet.html"):
        assert (run_dir / f).is_file(), f
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_signals"] > 50 and set(m["by_horizon"]) == {"5m", "1m"}
    for key in ("mean_return", "median_return", "win_rate", "hit_rate_1pct", "precision", "p10", "p90",
                "mean_return_ci95"):
        assert key in m
    assert {"total_return", "sharpe", "sortino", "max_drawdown", "exposure", "n_trades"} <= set(m["portfolio"])
    assert len(m["data"]["partitions"]) == 2 and all(len(p["sha256"]) == 64 for p in m["data"]["partitions"])
    trades = pd.read_parquet(run_dir / "trades.parquet")
    primary = trades[trades["horizon"] == "5m"]
    assert np.isclose(primary["net_return"].mean(), m["mean_return"])
    assert "tearsheet" in capsys.readouterr().out
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["backtest"]["entry_latency_ms"] == 0 and resolved["portfolio"]["max_positions"] == 2

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["whalebt"], output_format="list")
    assert len(runs) == 1
    r = runs[0]
    assert r.data.tags["whalebt.run_id"] == config.run_id
    assert r.data.metrics["n_signals"] == m["n_signals"]
    assert r.data.params["signal.whale.min_notional_usd"] == "2500"
    assert json.loads(r.data.tags["whalebt.data_partitions"]) == m["data"]["partitions"]


def test_cached_rerun_is_identical_and_config_change_rebuilds_gold(lake_cfg):
    tmp, path, cfg = lake_cfg
    config = load_config(path)
    a = run_backtest(config, results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    b = run_backtest(config, results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    assert not a.signals.gold_cached and b.signals.gold_cached
    assert a.metrics == b.metrics
    cfg2 = {**cfg, "signal": {"whale": {"min_notional_usd": 4000}}}
    path.write_text(yaml.safe_dump(cfg2))
    c = run_backtest(load_config(path), results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    assert not c.signals.gold_cached and c.metrics["n_whale_events"] < a.metrics["n_whale_events"]
    assert c.run_id != a.run_id
    lake = Lake(cfg["data"]["lake"])
    variants = {p.split("/")[1] for p in lake.store.list("gold/")}
    assert len(variants) == 2


def test_changed_bronze_invalidates_silver_and_gold(lake_cfg):
    tmp, path, cfg = lake_cfg
    config = load_config(path)
    a = run_backtest(config, results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    lake = Lake(cfg["data"]["lake"])
    extra = _market(n=500, days=1, seed=9)
    extra["trade_id"] += 10_000_000
    extra["qty"] *= 50  # big trades: more whales
    lake.write_trades(extra, mode="merge")
    b = run_backtest(config, results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    assert not b.signals.gold_cached
    assert b.metrics["n_whale_events"] > a.metrics["n_whale_events"]
    silver = lake.read_partition(Partition("silver", "binance_usdm", "TESTUSDT", pd.Timestamp("2024-03-01").date()))
    assert silver["trade_count"].sum() == len(b.signals.span.ts_ms[b.signals.span.ts_ms < extra["ts_ms"].min() // DAY_MS * DAY_MS + DAY_MS])


def test_bt_signals_journal_matches_the_run(lake_cfg, capsys):
    tmp, path, _ = lake_cfg
    out = tmp / "signals.jsonl"
    assert bt.cli.main(["signals", str(path), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all(tuple(rec) == JOURNAL_KEYS for rec in lines)
    assert all(rec["decision"] == "long" and rec["prob"] is None and rec["model"] is None for rec in lines)
    config = load_config(path)
    assert {rec["config_id"] for rec in lines} == {config.config_id}
    sig = compute_signals(config)
    assert [r["trade_id"] for r in lines] == sig.events["trade_id"].tolist()
    assert all(r["notional_usd"] >= 2500 for r in lines)


def test_datasets_build_caches_gold(lake_cfg, capsys):
    tmp, path, _ = lake_cfg
    assert datasets.cli.main(["build", str(path)]) == 0
    assert "(built)" in capsys.readouterr().err
    assert datasets.cli.main(["build", str(path)]) == 0
    assert "(cached)" in capsys.readouterr().err


def test_cross_exchange_view_prices_positions_on_the_other_venue(lake_cfg):
    """Whales detected on Binance, positions entered and exited on trades of a second venue."""
    tmp, path, cfg = lake_cfg
    lake = Lake(cfg["data"]["lake"])
    other = _market(n=40_000, seed=21)
    other["exchange"] = "okx_swap"
    other["price"] = other["price"] * 1.5  # a different tape: returns must come from it
    lake.write_trades(other)
    cross = {**cfg, "name": "cross", "data": {**cfg["data"], "price_exchange": "okx_swap"}}
    path.write_text(yaml.safe_dump(cross))
    res = run_backtest(load_config(path), results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    assert res.metrics["data"]["price_exchange"] == "okx_swap" and len(res.metrics["data"]["price_partitions"]) == 2
    study = res.study[res.study["horizon"] == "5m"]
    ok = study[study["exit_idx"] >= 0]
    assert len(ok) > 50
    o_ts, o_px = np.sort(other["ts_ms"].to_numpy()), other.sort_values(["ts_ms", "trade_id"])["price"].to_numpy()
    for _, r in ok.head(40).iterrows():
        trig = r["trigger_ts_ms"]
        # entry: the first trade of the other venue after the trigger, at or after the trigger time
        last_before = int(np.searchsorted(o_ts, trig, side="right")) - 1
        e = max(last_before + 1, int(np.searchsorted(o_ts, trig, side="left")))
        x = int(np.searchsorted(o_ts, o_ts[e] + 300_000, side="right")) - 1
        assert (r["entry_idx"], r["exit_idx"]) == (e, x)
        assert r["entry_price"] == o_px[e] and r["exit_price"] == o_px[x]
        assert r["gross_return"] == pytest.approx(o_px[x] / o_px[e] - 1)


def test_missing_funding_is_measured_warned_and_can_be_required(lake_cfg, capsys):
    """Funding for the first day only: coverage is the share of signals held inside it, one
    warning line says so, and `backtest.funding: required` refuses the run."""
    from bt.config import parse_config
    from datasets.sources.funding import write_funding

    tmp, _, cfg = lake_cfg
    t0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
    hours8 = 8 * 3_600_000
    write_funding(Lake(tmp / "lake"), "binance_usdm", "TESTUSDT",
                  pd.DataFrame({"ts_ms": [t0, t0 + hours8, t0 + 2 * hours8], "rate": [1e-4, 1e-4, 1e-4]}),
                  source="test")
    res = run_backtest(parse_config(cfg), results_dir=tmp / "results", log_mlflow=False, tearsheet=False)
    m = res.metrics
    held = res.study[(res.study["horizon"] == "5m") & (res.study["exit_idx"] >= 0)]
    covered = (held["exit_ts_ms"] < t0 + 3 * hours8).mean()  # last print 16:00 + one interval
    assert 0.3 < m["funding_coverage"] < 0.7 and m["funding_coverage"] == pytest.approx(covered)
    err = capsys.readouterr().err
    warn = [line for line in err.splitlines() if line.startswith("warning: funding")]
    assert len(warn) == 1 and "of the signals' holding windows" in warn[0]
    strict = {**cfg, "backtest": {**cfg["backtest"], "funding": "required"}}
    from bt.run import FundingMissingError

    with pytest.raises(FundingMissingError, match="backtest.funding is 'required'"):
        run_backtest(parse_config(strict), results_dir=tmp / "results", log_mlflow=False, tearsheet=False)


def test_headline_counts_independent_signals_per_horizon(lake_cfg):
    from bt.config import parse_config

    tmp, _, cfg = lake_cfg
    m = run_backtest(parse_config(cfg), results_dir=tmp / "results", log_mlflow=False, tearsheet=False).metrics
    for h in ("5m", "1m"):
        b = m["by_horizon"][h]
        assert 0 < b["n_independent"] < b["n_signals"]
    # longer windows chain more signals together
    assert m["by_horizon"]["5m"]["n_independent"] < m["by_horizon"]["1m"]["n_independent"]
    assert m["n_independent"] == m["by_horizon"]["5m"]["n_independent"]
