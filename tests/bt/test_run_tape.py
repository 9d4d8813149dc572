"""`bt run` reads a span day by day (datasets.tape.DayTape) and writes what the whole span in one piece writes.

The reference run is the same config with the tape swapped for the whole span loaded at once
(`load_trades`, the kernel over the concatenated arrays, every step on the full arrays).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bt.config import parse_config
from datasets.build import ensure_silver, load_trades, open_tape
from datasets.lake import Lake

SYM = "TAPEUSDT"
DAYS = 60
MISSING = "2024-03-21"  # a day with no partition: a hole inside the span
FILES = (
    "metrics.json",
    "signals.jsonl",
    "trades.parquet",
    "positions.parquet",
    "equity.parquet",
    "paths.parquet",
    "price.parquet",
)


def _write_market(lake_dir: Path, exchange: str, seed: int, shift_ms: int = 0) -> None:
    from datasets.synth import SynthParams, generate_days

    lake = Lake(str(lake_dir))
    p = SynthParams(
        symbol=SYM,
        days=DAYS,
        trades_per_s=0.05,
        seed=seed,
        whale_rate_per_day=8,
        plant_effect_bps=40,
        plant_horizon_s=900,
        whale_notional_usd=200_000,
    )
    for day, d in generate_days(p):
        if str(day) == MISSING:
            continue
        ts = d["ts_ms"] + shift_ms
        keep = ts // 86_400_000 == d["ts_ms"] // 86_400_000  # stay inside the day's partition
        lake.write_trades(
            pd.DataFrame(
                {
                    "exchange": exchange,
                    "symbol": SYM,
                    "trade_id": d["agg_trade_id"][keep],
                    "ts_ms": ts[keep],
                    "price": d["price"][keep],
                    "qty": d["qty"][keep],
                    "side": d["side"][keep],
                }
            )
        )


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tape") / "lake"
    _write_market(d, "binance_usdm", 7)
    _write_market(d, "okx_swap", 7, shift_ms=137)  # the same market seen 137 ms later: a price venue
    return d


def _config(lake_dir: Path, **backtest) -> dict:
    return {
        "name": "tape",
        "data": {
            "lake": str(lake_dir),
            "exchange": "binance_usdm",
            "symbol": SYM,
            "start": "2024-03-01",
            "end": "2024-04-29",
        },
        "signal": {"whale": {"min_notional_usd": 150_000}},
        "backtest": {"horizon": "30m", "horizons": ["5m", "26h"], "bootstrap": 50, "entry_latency_ms": 250, **backtest},
        "portfolio": {"max_positions": 2},
    }


def _run(raw: dict, results: Path, whole: bool, monkeypatch):
    import bt.run as run

    lake = Path(raw["data"]["lake"])
    for layer in ("silver", "gold"):
        shutil.rmtree(lake / layer, ignore_errors=True)
    tapes = []
    with monkeypatch.context() as m:
        if whole:  # the reference: every trade of the span in memory, kernel over it in one piece
            m.setattr(run, "open_tape", lambda lk, ex, sym, s, e: load_trades(lk, ex, sym, s, e))
            m.setattr(run, "refresh_silver", ensure_silver)
        else:

            def opened(*a, **k):
                tapes.append(open_tape(*a, **k))
                return tapes[-1]

            m.setattr(run, "open_tape", opened)
        res = run.run_backtest(parse_config(raw), results_dir=results, log_mlflow=False, tearsheet=False, quiet=True)
    gold = {p.relative_to(lake): p.read_bytes() for p in sorted((lake / "gold").rglob("*.parquet"))}
    silver = {p.relative_to(lake): p.read_bytes() for p in sorted((lake / "silver").rglob("*.parquet"))}
    return res, tapes, gold, silver


def _same_folders(a: Path, b: Path) -> None:
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("backtest", [{}, {"take_profit": 0.003, "stop_loss": 0.003}], ids=["horizon", "tp_sl"])
def test_day_by_day_run_equals_whole_span(lake_dir, tmp_path, monkeypatch, backtest):
    raw = _config(lake_dir, **backtest)
    whole, _, gold_w, silver_w = _run(raw, tmp_path / "whole", True, monkeypatch)
    daily, tapes, gold_d, silver_d = _run(raw, tmp_path / "daily", False, monkeypatch)
    _same_folders(whole.run_dir, daily.run_dir)
    assert gold_d == gold_w and len(gold_d) == DAYS - 1  # same variant, fingerprint and rows per day
    assert silver_d == silver_w
    m = json.loads((daily.run_dir / "metrics.json").read_text())
    assert m["n_signals"] > 50 and m["data"]["n_trades"] > 200_000
    reasons = set(daily.study["exit_reason"].astype(str))
    assert "dropped_gap" in reasons and "dropped_past_data" in reasons  # the hole and the span's end
    if backtest:
        assert {"take_profit", "stop_loss"} <= reasons
    # Never more than a few days of trades held at once (cache of 3 + the window being evaluated).
    (tape,) = tapes
    assert tape.n_days == DAYS - 1 and tape.loads >= tape.n_days
    assert tape.peak_days <= 4, tape
    assert not tape._full


def test_cross_venue_day_by_day_equals_whole_span(lake_dir, tmp_path, monkeypatch):
    raw = _config(lake_dir)
    raw["data"]["price_exchange"] = "okx_swap"
    whole, _, _, _ = _run(raw, tmp_path / "whole", True, monkeypatch)
    daily, tapes, _, _ = _run(raw, tmp_path / "daily", False, monkeypatch)
    _same_folders(whole.run_dir, daily.run_dir)
    assert len(tapes) == 2 and max(t.peak_days for t in tapes) <= 4
    assert (daily.study["trigger_idx"] >= 0).all() and len(daily.study)


def test_tape_searches_equal_whole_span(lake_dir):
    lake = Lake(str(lake_dir))
    span = load_trades(lake, "binance_usdm", SYM, "2024-03-01", "2024-04-29")
    tape = open_tape(lake, "binance_usdm", SYM, "2024-03-01", "2024-04-29", cache_days=1)
    assert len(tape) == len(span) and tape.sources == span.sources
    assert np.array_equal(tape.coverage, span.coverage)
    assert (tape.first_ts_ms, tape.last_ts_ms) == (span.first_ts_ms, span.last_ts_ms)
    rng = np.random.default_rng(3)
    q = rng.integers(span.ts_ms[0] - 10_000, span.ts_ms[-1] + 10_000, 3000)
    qf = q + rng.random(q.size)
    assert np.array_equal(tape.last_at_or_before(q), np.searchsorted(span.ts_ms, q, side="right") - 1)
    idx = rng.integers(0, len(span), 50)
    sub = tape.sample([q, qf], idx)
    assert np.array_equal(sub.ts_ms, span.ts_ms[sub.gidx]) and np.array_equal(sub.price, span.price[sub.gidx])
    for x in (q, qf):  # the sub-tape answers those searches with the same trades
        got = sub.gidx[np.searchsorted(sub.ts_ms, x, side="right") - 1]
        want = np.searchsorted(span.ts_ms, x, side="right") - 1
        assert np.array_equal(np.where(want >= 0, got, -1), want)
    assert np.array_equal(sub.gidx[sub.local(idx)], idx)
    assert np.array_equal(tape.at(idx)[0], span.ts_ms[idx])
    assert np.array_equal(tape.trade_index(span.ts_ms[idx], span.trade_id[idx]), idx)
    assert tape.peak_days <= 1


def test_a_partition_holding_another_day_is_an_error_line(tmp_path):
    from datasets.tape import TapeOrderError

    lake = Lake(str(tmp_path / "lake"))
    day = pd.Timestamp("2024-03-02", tz="UTC").value // 1_000_000
    rows = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": SYM,
            "trade_id": [1, 2],
            "ts_ms": [day - 5, day + 5],
            "price": [100.0, 100.5],
            "qty": [1.0, 2.0],
            "side": np.asarray([1, -1], np.int8),
        }
    )
    lake.write("bronze", rows, "binance_usdm", SYM, "2024-03-02", mode="replace")  # written by hand, not split
    tape = open_tape(lake, "binance_usdm", SYM, "2024-03-01", "2024-03-02")
    with pytest.raises(TapeOrderError, match="holds trades outside 2024-03-02; rewrite it through Lake.write_trades"):
        tape.day(0)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_reads_each_day_once(lake_dir, tmp_path, monkeypatch, jobs):
    """One read of each day serves silver, the kernel, gold's and the event study's outcome windows
    and the events' trade indices; the portfolio's and report's marks (``DayTape.sample``) read its
    times and prices alone, and the tape's first and last trade times the ``ts_ms`` of two days.
    Counted on the real loaders, with gold built by the run and with gold cached; ``jobs`` 2: in
    this process (the kernel's day chunks read their days in theirs)."""
    from collections import Counter

    import bt.run as run

    raw = _config(lake_dir)
    lake = Path(raw["data"]["lake"])
    for layer in ("silver", "gold"):
        shutil.rmtree(lake / layer, ignore_errors=True)
    reads: list[tuple[Counter, Counter]] = []

    def opened(*a, **k):
        tape = open_tape(*a, **k)
        load_day, load_columns = tape._load_day, tape._load_columns
        whole, cols = Counter(), Counter()

        def counting_day(day: int):
            whole[day] += 1
            return load_day(day)

        def counting_columns(day: int, columns: list[str]):
            cols[(day, tuple(columns))] += 1
            return load_columns(day, columns)

        tape._load_day, tape._load_columns = counting_day, counting_columns
        reads.append((whole, cols))
        return tape

    monkeypatch.setattr(run, "open_tape", opened)
    got = {}
    for case in ("built", "cached"):
        got[case] = run.run_backtest(
            parse_config(raw), results_dir=tmp_path / case, log_mlflow=False, tearsheet=False, quiet=True, jobs=jobs
        )
    assert not got["built"].signals.gold_cached and got["cached"].signals.gold_cached
    _same_folders(got["built"].run_dir, got["cached"].run_dir)
    assert len(reads) == 2
    n = DAYS - 1
    for whole, cols in reads:
        assert len(whole) == n and max(whole.values()) == 1, sorted(whole.items())
        assert {c for _, c in cols} <= {("ts_ms", "price"), ("ts_ms",)} and max(cols.values()) == 1, cols
        assert sorted(d for d, c in cols if c == ("ts_ms",)) == [0, n - 1]  # the first and last trade times
        assert len([d for d, c in cols if c == ("ts_ms", "price")]) <= n
