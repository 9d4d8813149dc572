"""Universes: a two-symbol run equals its single-symbol runs symbol by symbol and pools them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from bt.config import ConfigError, parse_config
from bt.run import run_backtest
from tests.bt.universe_market import SYMBOLS, raw_config, write_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("uni") / "lake"
    write_lake(d)
    return d


def _run(raw, results, **kw):
    return run_backtest(parse_config(raw), results_dir=results, log_mlflow=False, tearsheet=False, quiet=True, **kw)


def test_a_two_symbol_universe_reproduces_each_single_symbol_run_and_pools_them(lake, tmp_path):
    singles = {s: _run(raw_config(lake, symbol=s), tmp_path / "single") for s in SYMBOLS}
    uni = _run(raw_config(lake, symbols=list(SYMBOLS)), tmp_path / "uni", jobs=1)
    m = json.loads((uni.run_dir / "metrics.json").read_text())
    assert set(m["by_symbol"]) == set(SYMBOLS)
    for s in SYMBOLS:
        single = json.loads((singles[s].run_dir / "metrics.json").read_text())
        assert single["n_signals"] > 5
        assert m["by_symbol"][s] == single  # every figure, ids included
        assert set(m["by_symbol"][s]) - {"by_symbol"} <= set(m)  # same keys as the headline
    # pooled: every signal of both symbols, in one study with its symbol
    trades = pd.read_parquet(uni.run_dir / "trades.parquet")
    for s in SYMBOLS:
        mine = trades[trades["symbol"] == s].drop(columns=["exchange", "symbol", "cluster"]).reset_index(drop=True)
        alone = pd.read_parquet(singles[s].run_dir / "trades.parquet").drop(columns="cluster")
        pd.testing.assert_frame_equal(mine, alone)
    assert m["n_signals"] == sum(m["by_symbol"][s]["n_signals"] for s in SYMBOLS)
    assert m["n_whale_events"] == sum(m["by_symbol"][s]["n_whale_events"] for s in SYMBOLS)
    prim = trades[trades["horizon_ms"] == 15 * 60_000]
    assert m["mean_return"] == pytest.approx(float(prim["net_return"].mean()), rel=1e-12)
    assert m["data"]["symbols"] == list(SYMBOLS)
    # journal: both symbols' lines, in time order
    lines = (uni.run_dir / "signals.jsonl").read_text().splitlines()
    alone = [ln for s in SYMBOLS for ln in (singles[s].run_dir / "signals.jsonl").read_text().splitlines()]
    assert sorted(lines) == sorted(alone)
    ts = [json.loads(ln)["ts_ms"] for ln in lines]
    assert ts == sorted(ts)
    # shared portfolio: at most max_positions open at once across symbols, one cash
    pos = pd.read_parquet(uni.run_dir / "positions.parquet")
    assert set(pos["symbol"]) == set(SYMBOLS)
    events = np.r_[pos["entry_ts_ms"].to_numpy(), pos["exit_ts_ms"].to_numpy()]
    kind = np.r_[np.ones(len(pos)), -np.ones(len(pos))]
    order = np.lexsort((kind, events))
    assert np.cumsum(kind[order]).max() <= 2
    eq = pd.read_parquet(uni.run_dir / "equity.parquet")
    assert eq["equity"].iloc[-1] == pytest.approx(10_000 + pos["pnl"].sum(), rel=1e-9)
    assert {f"price_{s}" for s in SYMBOLS} <= set(eq.columns)
    # the resolved config in the run folder runs again to the same folder
    again = parse_config(yaml.safe_load((uni.run_dir / "config.yaml").read_text()))
    assert again.run_id == uni.run_id
    assert (uni.run_dir / "report.html").is_file()


def test_one_plain_entry_in_symbols_is_the_single_symbol_config():
    a = parse_config(raw_config("lake", symbol="AAAUSDT"))
    b = parse_config(raw_config("lake", symbols=["AAAUSDT"]))
    assert a == b and a.run_id == b.run_id and not a.data.is_universe
    c = parse_config(raw_config("lake", symbols={"binance_usdm": ["AAAUSDT"], "bybit_linear": ["BBBUSDT"]}))
    assert c.data.members == (("binance_usdm", "AAAUSDT"), ("bybit_linear", "BBBUSDT"))
    assert "symbols" not in a.resolved()["data"] and "universe" not in a.resolved()["data"]


@pytest.mark.parametrize(
    "data, msg",
    [
        ({}, "data needs symbol"),
        ({"symbol": "AAAUSDT", "symbols": ["AAAUSDT", "BBBUSDT"]}, "not both"),
        ({"symbols": ["AAAUSDT", "AAAUSDT"]}, "listed twice"),
        ({"symbols": ["aaa-usdt", "BBBUSDT"]}, "upper case"),
        ({"symbols": []}, "symbols is empty"),
    ],
)
def test_bad_universes_are_refused_with_one_line(data, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(raw_config("lake", **data))


def _write_klines(root, lambdas: dict[str, float]) -> None:
    """February 2024 daily klines per symbol: log return = lambda × signed flow each day."""
    from datasets.rank import KLINE_COLUMNS

    root.mkdir(parents=True)
    d0 = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)
    for sym, lam in lambdas.items():
        rows = []
        for d in range(29):
            q = (1 if d % 2 else -1) * (1 + d % 3) * 1e6
            o = 100.0
            c = o * float(np.exp(lam * q))
            qv = 2e7
            tbq = (qv + q) / 2
            ot = d0 + d * 86_400_000
            rows.append(
                [ot, o, max(o, c) + 0.5, min(o, c) - 0.5, c, qv / c, ot + 86_399_999, qv, 50_000, tbq / c, tbq, 0]
            )
        pd.DataFrame(rows, columns=list(KLINE_COLUMNS)).to_csv(root / f"{sym}-1d-2024-02.csv", index=False)


def test_a_ranked_universe_resolves_before_the_span_and_runs_on_two_processes(lake, tmp_path, capsys):
    import bt.cli
    from bt.universe import resolve_universe, symbols_on

    _write_klines(tmp_path / "klines", {"AAAUSDT": 1e-9, "BBBUSDT": 3e-9, "CCCUSDT": 0.5e-9})
    rank = {
        "klines": str(tmp_path / "klines"),
        "top": 2,
        "by": "kyle_lambda",
        "lookback_days": 29,
        "filters": {"min_days": 20},
    }
    raw = raw_config(lake, universe={"rank": rank})
    cfg = parse_config(raw)
    assert cfg.data.is_universe and cfg.data.symbols is None
    resolved = resolve_universe(cfg)
    assert resolved.data.symbols == ("BBBUSDT", "AAAUSDT")  # the two largest lambdas, largest first
    assert symbols_on(cfg, "binance_usdm") == ["BBBUSDT", "AAAUSDT"]
    path = tmp_path / "uni.yaml"
    path.write_text(yaml.safe_dump(raw))
    args = ["run", str(path), "--results", str(tmp_path / "r"), "--no-mlflow", "--no-tearsheet"]
    assert bt.cli.main([*args, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "by symbol" in out and "BBBUSDT" in out
    run_dir = tmp_path / "r" / resolved.run_id
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["data"]["symbols"] == ["BBBUSDT", "AAAUSDT"] and written["data"]["universe"]["rank"]["top"] == 2
    assert "symbol" not in written["data"]  # a universe has no single symbol to write
    two = {
        f: (run_dir / f).read_bytes() for f in ("metrics.json", "signals.jsonl", "trades.parquet", "positions.parquet")
    }
    assert bt.cli.main([*args, "--jobs", "1"]) == 0  # one process: the same bytes
    assert {f: (run_dir / f).read_bytes() for f in two} == two
    # bt signals over the same universe writes the run's journal
    assert bt.cli.main(["signals", str(path), "--out", str(tmp_path / "s.jsonl")]) == 0
    assert (tmp_path / "s.jsonl").read_bytes() == two["signals.jsonl"]
    assert "fig-symbols" in (run_dir / "report.html").read_text()
    from bt.compare import write_compare

    page = write_compare([str(run_dir)], tmp_path / "cmp.html").read_text()
    assert "By symbol" in page and "AAAUSDT" in page
    assert bt.cli.main([*args, "--jobs", "0"]) == 1
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_a_rank_with_no_eligible_symbol_says_how_to_see_why(lake, tmp_path):
    from bt.universe import resolve_universe

    _write_klines(tmp_path / "klines", {"AAAUSDT": 1e-9})
    raw = raw_config(lake, universe={"rank": {"klines": str(tmp_path / "klines"), "top": 2, "lookback_days": 29}})
    with pytest.raises(ConfigError, match="no eligible symbol"):
        resolve_universe(parse_config(raw))  # min_days 60 by default: 29 days are too few


def test_a_model_trained_by_a_universe_run_is_one_model_over_every_symbol(lake, tmp_path):
    model = {
        "threshold": {"policy": "top_fraction", "fraction": 0.5, "min_signals": 1},
        "lgbm": {"num_boost_round": 20, "min_data_in_leaf": 5},
    }
    raw = {**raw_config(lake, symbols=list(SYMBOLS)), "model": model}
    one = _run(raw, tmp_path / "a", jobs=1)
    two = _run(raw, tmp_path / "b", jobs=2)
    files = sorted(f.name for f in one.run_dir.iterdir())
    assert {"calibration.parquet", "paths.parquet", "threshold_curve.parquet", "report.html"} <= set(files)
    assert files == sorted(f.name for f in two.run_dir.iterdir())
    for f in files:  # every file: the calibration rows are made in the members' tasks
        assert (one.run_dir / f).read_bytes() == (two.run_dir / f).read_bytes(), f
    m = one.metrics
    mm = m["model_metrics"]
    alone = _run({**raw_config(lake, symbol=SYMBOLS[0]), "model": model}, tmp_path / "c").metrics["model_metrics"]
    # one model: its validation and test sets hold both symbols' events, cut at the same instants
    assert mm["val_n_events"] > alone["val_n_events"] and mm["test_n_events"] > alone["test_n_events"]
    assert mm["test_n_signals"] == m["n_signals"] == sum(m["by_symbol"][s]["n_signals"] for s in SYMBOLS)
    trades = pd.read_parquet(one.run_dir / "trades.parquet")
    assert set(trades["symbol"]) == set(SYMBOLS)
    assert trades["trigger_ts_ms"].min() >= mm["boundaries_ms"]["test"]
    for s in SYMBOLS:
        b = m["by_symbol"][s]
        assert b["model_metrics"] == mm and b["threshold"] == m["threshold"] == mm["threshold"]


def test_universe_members_send_back_their_marks_not_their_tapes_and_pool_over_the_earliest_start(tmp_path):
    """Pooling reads no tape: each member's task samples the pooled portfolio's bars (which start
    at the earliest member's first second, here before the late member's first trade)."""
    from datasets.build import load_trades, open_tape, tape_ends_ms
    from datasets.lake import Lake
    from tests.bt.universe_market import market

    lake = Lake(str(tmp_path / "lake"))
    late_ms = int(pd.Timestamp("2024-03-01 05:00", tz="UTC").value // 1_000_000) + 321
    for sym in SYMBOLS:
        m = market(sym)
        lake.write_trades(m if sym == SYMBOLS[0] else m[m["ts_ms"] >= late_ms])
    for sym in SYMBOLS:  # the span foreseen before the tasks: the tape's own ends
        tape = open_tape(lake, "binance_usdm", sym, "2024-03-01", "2024-03-02")
        assert tape_ends_ms(lake, "binance_usdm", sym, "2024-03-01", "2024-03-02") == (
            tape.first_ts_ms,
            tape.last_ts_ms,
        )
    raw = raw_config(tmp_path / "lake", symbols=list(SYMBOLS))
    one = _run(raw, tmp_path / "a", jobs=1)
    two = _run(raw, tmp_path / "b", jobs=2)
    files = sorted(f.name for f in one.run_dir.iterdir())
    assert files == sorted(f.name for f in two.run_dir.iterdir())
    for f in files:
        assert (one.run_dir / f).read_bytes() == (two.run_dir / f).read_bytes(), f
    for member in two.signals.members:  # no trades came back with the studies
        assert len(member.span.ts_ms) == 0
    eq = pd.read_parquet(two.run_dir / "equity.parquet")
    ends = np.asarray(eq.index.as_unit("ms").asi8, dtype=np.int64)
    assert ends[0] < late_ms  # the late member is marked before its first trade too
    for sym in SYMBOLS:  # the marks: the last trade at or before each bar end, over the whole tape
        span = load_trades(lake, "binance_usdm", sym, "2024-03-01", "2024-03-02")
        at = np.searchsorted(span.ts_ms, ends, side="right") - 1
        want = np.where(at >= 0, span.price[np.maximum(at, 0)], span.price[0])
        np.testing.assert_array_equal(eq[f"price_{sym}"].to_numpy(), want)
