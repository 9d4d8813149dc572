"""`--start/--end/--symbol/--set` override a run config before validation (bt run, bt signals, bt sweep, bt audit)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
from bt.config import ConfigError, apply_overrides, load_config, parse_config, parse_override_value
from datasets.lake import Lake

DAY_MS = 86_400_000


def _market(n=30_000, days=3, seed=1, symbol="TESTUSDT"):
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


RAW = {
    "name": "ovr",
    "data": {"exchange": "binance_usdm", "symbol": "TESTUSDT", "start": "2024-03-01", "end": "2024-03-03"},
    "signal": {"whale": {"min_notional_usd": 2500}},
    "backtest": {"horizon": "5m", "bootstrap": 100},
}


@pytest.fixture
def cfg_path(tmp_path):
    raw = {**RAW, "data": {**RAW["data"], "lake": str(tmp_path / "lake")}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_set_values_are_read_as_yaml():
    assert parse_override_value("2e6") == 2_000_000.0  # YAML 1.1 alone would give the string '2e6'
    assert parse_override_value("20") == 20
    assert parse_override_value("[5m, 1h]") == ["5m", "1h"]
    assert parse_override_value("null") is None
    assert parse_override_value("plain text") == "plain text"


def test_overrides_equal_the_edited_config(cfg_path):
    over = load_config(
        cfg_path,
        overrides=[
            ("data.start", "2024-03-02"),
            ("data.symbol", "ETHUSDT"),
            ("signal.whale.min_notional_usd", parse_override_value("2e6")),
            ("model.threshold.min_signals", parse_override_value("20")),
        ],
    )
    raw = yaml.safe_load(cfg_path.read_text())
    raw["data"].update(start="2024-03-02", symbol="ETHUSDT")
    raw["signal"]["whale"]["min_notional_usd"] = 2000000
    raw["model"] = {"threshold": {"min_signals": 20}}
    edited = parse_config(raw)
    assert over == edited and over.run_id == edited.run_id and over.config_id == edited.config_id
    assert over.model is not None and over.model.threshold.min_signals == 20


def test_an_unknown_override_key_gets_the_configs_did_you_mean(cfg_path):
    with pytest.raises(ConfigError, match=r"unknown key 'backtest\.horizn'.*Did you mean 'horizon'\?"):
        load_config(cfg_path, overrides=[("backtest.horizn", "1h")])
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*Did you mean 'model'\?"):
        load_config(cfg_path, overrides=[("modle.seed", 1)])
    with pytest.raises(ConfigError, match=r"did you mean 'min_notional_usd'"):
        load_config(cfg_path, overrides=[("signal.whale.min_notionl_usd", 1)])
    with pytest.raises(ConfigError, match=r"cannot set data\.start\.day: data\.start is 2024-03-01, not a mapping"):
        apply_overrides(yaml.safe_load(cfg_path.read_text()), [("data.start.day", 1)])


def test_bt_run_with_overrides_writes_the_resolved_config(tmp_path, cfg_path, capsys):
    Lake(tmp_path / "lake").write_trades(_market())
    results = tmp_path / "results"
    rc = bt.cli.main(
        [
            "run",
            str(cfg_path),
            "--no-mlflow",
            "--no-tearsheet",
            "--json",
            "--results",
            str(results),
            "--start",
            "2024-03-02",
            "--end",
            "2024-03-03",
            "--set",
            "signal.whale.min_notional_usd=4e3",
            "--set",
            "backtest.horizons=[1m]",
        ]
    )
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["data"]["start"] == "2024-03-02" and metrics["data"]["end"] == "2024-03-03"
    run_dir = results / metrics["run_id"]
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    # every default filled in, the overrides applied, and the model key present
    assert written["data"]["start"] == "2024-03-02" and written["signal"]["whale"]["min_notional_usd"] == 4000.0
    assert written["backtest"]["horizons"] == ["1m"] and written["backtest"]["entry_latency_ms"] == 0
    assert written["portfolio"] == {"max_positions": 1, "init_cash": 10000.0, "bar": "1m"} and "model" in written
    # the run folder's config.yaml is the config the ids come from: it reproduces them
    again = parse_config(written)
    assert again.run_id == metrics["run_id"] and again.config_id == metrics["config_id"]
    # bt signals takes the same overrides and gives the run's journal
    out = tmp_path / "sig.jsonl"
    assert (
        bt.cli.main(
            [
                "signals",
                str(cfg_path),
                "--out",
                str(out),
                "--start",
                "2024-03-02",
                "--set",
                "signal.whale.min_notional_usd=4e3",
                "--set",
                "backtest.horizons=[1m]",
            ]
        )
        == 0
    )
    assert out.read_bytes() == (run_dir / "signals.jsonl").read_bytes()


def test_overrides_on_every_command_that_takes_a_config(cfg_path, capsys):
    for cmd in (["run"], ["signals", "--out", "-"], ["sweep", "--trials", "1"], ["audit"]):
        rc = bt.cli.main([cmd[0], str(cfg_path), *cmd[1:], "--set", "backtest.horizn=1h"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1, (cmd, err)
        assert err[0].startswith(f"Error: {cfg_path} (with backtest.horizn='1h'): unknown key 'backtest.horizn'")
        assert "Did you mean 'horizon'?" in err[0]


def test_set_needs_key_equals_value(cfg_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bt.cli.main(["run", str(cfg_path), "--set", "backtest.horizon"])
    assert exc.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_a_config_file_reads_2e6_as_a_number(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: e\ndata: {exchange: binance_usdm, symbol: BTCUSDT, start: 2024-03-01, end: 2024-03-01}\n"
        "signal: {whale: {min_notional_usd: 2e6}}\nbacktest: {bootstrap: 1e3}\n"
    )
    cfg = load_config(p)
    assert cfg.signal.whale.min_notional_usd == 2e6 and cfg.backtest.bootstrap == 1000
