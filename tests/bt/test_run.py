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
    return pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": symbol,
            "trade_id": np.arange(n) + 1000,
            "ts_ms": ts,
            "price": px,
            "qty": rng.lognormal(0, 1.4, n),
            "side": np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8),
        }
    )


@pytest.fixture
def lake_cfg(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write_trades(_market())
    cfg = {
        "name": "e2e",
        "data": {
            "lake": str(tmp_path / "lake"),
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-02",
        },
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
    for key in (
        "mean_return",
        "median_return",
        "win_rate",
        "hit_rate_1pct",
        "precision",
        "p10",
        "p90",
        "mean_return_ci95",
    ):
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
    assert r.data.params["signal.whale.min_notional_usd"] == "2500.0"  # the resolved rule
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
    assert silver["trade_count"].sum() == len(
        b.signals.span.ts_ms[b.signals.span.ts_ms < extra["ts_ms"].min() // DAY_MS * DAY_MS + DAY_MS]
    )


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
    write_funding(
        Lake(tmp / "lake"),
        "binance_usdm",
        "TESTUSDT",
        pd.DataFrame({"ts_ms": [t0, t0 + hours8, t0 + 2 * hours8], "rate": [1e-4, 1e-4, 1e-4]}),
        source="test",
    )
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


def _register_with_lineage(tracking: str, name: str, lineage: dict | None) -> str:
    """A registered model whose bundled rule is the fixture's; ``lineage`` as a sweep would bundle it."""
    import lightgbm as lgb
    import mlflow

    from bt.registry import connect, log_model_bundle
    from bt.tracking import experiment
    from signals import FEATURE_NAMES, feature_spec_hash

    connect(tracking)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, len(FEATURE_NAMES)))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 4},
        lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
        num_boost_round=5,
    )
    cfg = {
        "whale": {"min_notional_usd": 2500},
        "horizon": "5m",
        "threshold": 0.0,
        "feature_names": list(FEATURE_NAMES),
        "feature_spec_hash": feature_spec_hash(),
    }
    mlflow.set_experiment(experiment_id=experiment(mlflow, "in-sample-test"))
    with mlflow.start_run():
        _, mv = log_model_bundle(booster, cfg, registered_model_name=name, lineage=lineage)
    return f"models:/{name}/{mv}"


def _ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


def test_registered_model_over_its_own_training_span_is_refused_or_split(lake_cfg, capsys, monkeypatch):
    tmp, path, cfg = lake_cfg
    tracking = f"sqlite:///{tmp}/mlflow.db"
    lineage = {
        "lineage_version": 1,
        "exchange": "binance_usdm",
        "symbols": ["TESTUSDT"],
        "ranges_ms": {
            "train": [_ms("2024-03-01 00:00"), _ms("2024-03-01 12:00")],
            "validation": [_ms("2024-03-01 12:30"), _ms("2024-03-01 18:00")],
            "test": [_ms("2024-03-01 18:30"), _ms("2024-03-01 23:59")],
        },
        "partitions": [{"key": "bronze/x", "sha256": "0" * 64, "rows": 1}],
    }
    uri = _register_with_lineage(tracking, "whale-testusdt", lineage)
    from bt.registry import in_sample_overlap, model_lineage

    got = model_lineage(uri)
    assert got["ranges_ms"] == lineage["ranges_ms"]
    assert [o["part"] for o in in_sample_overlap(got, _ms("2024-03-01"), _ms("2024-03-03"))] == ["train", "validation"]
    assert in_sample_overlap(got, _ms("2024-03-02"), _ms("2024-03-03")) == []
    path.write_text(yaml.safe_dump({**cfg, "model": {"uri": uri}}))
    base = [
        "run",
        str(path),
        "--results",
        str(tmp / "results"),
        "--tracking-uri",
        tracking,
        "--no-mlflow",
        "--no-tearsheet",
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    capsys.readouterr()
    assert bt.cli.main(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"Error: span 2024-03-01..2024-03-02 overlaps the training range 2024-03-01 00:00.."
        f"2024-03-01 12:00 of {uri} (and validation 2024-03-01 12:30..2024-03-01 18:00); "
        "pick a span after 2024-03-01 18:00 or pass --allow-in-sample"
    )
    assert bt.cli.main(base + ["--allow-in-sample"]) == 0
    out = capsys.readouterr().out
    assert "out of sample (the figures above):" in out and "in sample (inside the model's" in out
    config = load_config(path)
    m = json.loads((tmp / "results" / config.run_id / "metrics.json").read_text())
    i, o = m["in_sample"], m["out_of_sample"]
    assert i["n_signals"] > 0 and o["n_signals"] > 0
    # Headline = out of sample; the two parts add up to every signal.
    assert m["n_signals"] == o["n_signals"] and m["mean_return"] == pytest.approx(o["mean_return"])
    assert m["headline"] == "out_of_sample"
    trades = pd.read_parquet(tmp / "results" / config.run_id / "trades.parquet")
    primary = trades[trades["horizon"] == "5m"]
    ok = primary[np.isfinite(primary["net_return"])]
    assert int(ok["in_sample"].sum()) == i["n_signals"] and int((~ok["in_sample"]).sum()) == o["n_signals"]
    ts = primary["trigger_ts_ms"]
    inside = (ts <= _ms("2024-03-01 12:00")) | ((ts >= _ms("2024-03-01 12:30")) & (ts <= _ms("2024-03-01 18:00")))
    assert (primary["in_sample"] == inside).all()
    assert i["n_independent"] <= i["n_signals"]
    # A model without lineage: one warning line, and the run goes on.
    old = _register_with_lineage(tracking, "whale-old", None)
    path.write_text(yaml.safe_dump({**cfg, "model": {"uri": old}}))
    assert bt.cli.main(base) == 0
    warn = [x for x in capsys.readouterr().err.splitlines() if "lineage" in x]
    assert warn == [
        f"warning: {old} carries no lineage (registered before whalebt recorded it): its training "
        "ranges are unknown, so in-sample signals cannot be told apart"
    ]
