"""Coverage: outcome windows that run into uncovered time are dropped and counted, never cut short."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import bt.cli
from bt.config import load_config
from bt.engine import event_study
from bt.run import run_backtest
from datasets.build import DataHolesError, gold_events, load_trades, span_holes
from datasets.lake import Lake, Partition
from signals.outcome import DROPPED_GAP, DROPPED_PAST_DATA, EXIT_HORIZON, entry_exit

DAY = 86_400_000
HOUR = 3_600_000
T0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
SYM = "HOLEUSDT"


# ---------------------------------------------------------------------------- the kernel
def test_kernel_tells_end_of_data_from_a_gap_and_keeps_windows_inside_coverage():
    # trades every second over [0, 100 s) and [200 s, 300 s); coverage says the middle was not seen
    ts = np.r_[np.arange(0, 100_000, 1000), np.arange(200_000, 300_000, 1000)].astype(np.int64)
    px = np.linspace(100, 101, ts.size)
    cov = np.array([[0, 100_000], [200_000, 300_000]], np.int64)
    trig = np.array([10, 97, 150, 197], np.int64)  # 10 s, 97 s, 250 s, 297 s
    e, x, why = entry_exit(ts, px, trig, latency_ms=0, horizons_ms=[3_000], coverage=cov)
    assert why[:, 0].tolist() == [EXIT_HORIZON, DROPPED_GAP, EXIT_HORIZON, DROPPED_PAST_DATA]
    assert x[0, 0] == 14 and x[1, 0] == -1  # 11 s + 3 s; the one at 97 s would end in the hole
    # Without coverage the old rule holds: only the end of the trades counts.
    _, _, old = entry_exit(ts, px, trig, latency_ms=0, horizons_ms=[3_000])
    assert old[:, 0].tolist() == [EXIT_HORIZON, EXIT_HORIZON, EXIT_HORIZON, DROPPED_PAST_DATA]
    # A window may end exactly at the last covered millisecond, not one past it.
    e, x, why = entry_exit(ts, px, np.array([95]), latency_ms=0, horizons_ms=[3_999, 4_000], coverage=cov)
    assert why[0].tolist() == [EXIT_HORIZON, DROPPED_GAP]


def test_event_study_names_the_gap_reason():
    ts = np.arange(0, 10_000, 1000, dtype=np.int64)
    st = event_study(
        ts,
        np.full(ts.size, 100.0),
        np.array([3, 8]),
        horizons_ms=[1_500],
        coverage=np.array([[0, 5_000], [7_000, 20_000]]),
    )
    assert st["exit_reason"].astype(str).tolist() == ["dropped_gap", "horizon"]
    assert "dropped_gap" in st["exit_reason"].cat.categories


# ---------------------------------------------------------------------------- a lake with holes
def _day(day: int, n: int, seed: int, lo_ms: int = 0, hi_ms: int = DAY, whales_at=()) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(lo_ms, hi_ms, n)) + T0 + day * DAY
    qty = rng.lognormal(0, 0.5, n)
    for k, at in enumerate(whales_at):  # one big taker buy at each of these times of day
        j = int(np.searchsorted(ts, T0 + day * DAY + at))
        ts[j], qty[j] = T0 + day * DAY + at, 500.0
    px = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    side[qty == 500.0] = 1
    return pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": SYM,
            "trade_id": np.arange(n) + day * 10_000_000,
            "ts_ms": ts,
            "price": px,
            "qty": qty,
            "side": side,
        }
    )


WHALES_D1 = [8 * HOUR, 12 * HOUR - 200_000, 12 * HOUR - 30_000]  # the last two: 5 m runs past the recording
WHALES_D3 = [10 * HOUR, DAY - 100_000]  # the last: 5 m runs past the end of the data


@pytest.fixture
def holey(tmp_path):
    """2024-03-01 recorded 00:00–12:00 only, 2024-03-02 missing, 2024-03-03 from an archive."""
    lake = Lake(tmp_path / "lake")
    lake.write_trades(
        _day(0, 20_000, 1, hi_ms=12 * HOUR, whales_at=WHALES_D1),
        coverage=[[T0, T0 + 12 * HOUR]],
        coverage_source="recording",
        id_space="binance_agg_trade",
    )
    lake.write_trades(
        _day(2, 40_000, 3, whales_at=WHALES_D3),
        coverage=[[T0 + 2 * DAY, T0 + 3 * DAY]],
        coverage_source="archive",
        id_space="binance_agg_trade",
    )
    cfg = {
        "name": "holes",
        "data": {
            "lake": str(tmp_path / "lake"),
            "exchange": "binance_usdm",
            "symbol": SYM,
            "start": "2024-03-01",
            "end": "2024-03-03",
        },
        "signal": {"whale": {"min_notional_usd": 20_000}},
        "backtest": {"horizon": "5m", "horizons": ["1m"], "bootstrap": 50},
        "portfolio": {"max_positions": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path, path, lake


def test_span_reports_its_coverage_and_holes(holey):
    _, _, lake = holey
    span = load_trades(lake, "binance_usdm", SYM, "2024-03-01", "2024-03-03")
    assert span.coverage.tolist() == [[T0, T0 + 12 * HOUR], [T0 + 2 * DAY, T0 + 3 * DAY]]
    assert [s["coverage_source"] for s in span.sources] == ["recording", "archive"]
    holes = span_holes(span, "2024-03-01", "2024-03-03")
    assert [(h["kind"], h["text"]) for h in holes] == [
        ("not_covered", "2024-03-01 12:00–24:00 (not covered)"),
        ("no_partition", "2024-03-02 (no partition)"),
    ]
    assert holes[0]["from_ms"] == T0 + 12 * HOUR and holes[1]["to_ms"] == T0 + 2 * DAY
    assert span.holes == holes
    # A wider request adds the missing days at the end; short stretches are not holes.
    assert span_holes(span, "2024-03-01", "2024-03-05")[-1]["text"] == "2024-03-04..2024-03-05 (no partition)"
    assert span_holes(span, "2024-03-03", "2024-03-03") == []


def test_gap_and_end_of_data_are_dropped_and_counted_not_cut_short(holey, capsys):
    tmp, path, lake = holey
    res = run_backtest(load_config(path), results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True)
    m = res.metrics
    # the two late whales of the recording: gap; the one 100 s before the end of the data: end of data
    assert m["dropped"] == {"end_of_data": 1, "gap": 2, "no_entry": 0}
    assert m["n_dropped"] == 3 and m["by_horizon"]["5m"]["dropped"] == m["dropped"]
    assert m["by_horizon"]["1m"]["dropped"] == {"end_of_data": 0, "gap": 1, "no_entry": 0}  # 1 m fits in 100 s
    st = res.study[res.study["horizon"] == "5m"]
    kept = st[~st["exit_reason"].astype(str).str.startswith("dropped")]
    assert len(kept) == 2
    cov = res.signals.span.coverage
    for _, r in kept.iterrows():  # every kept window lies inside one covered interval and is held in full
        k = np.searchsorted(cov[:, 0], r.trigger_ts_ms, side="right") - 1
        assert cov[k, 0] <= r.trigger_ts_ms and r.entry_ts_ms + 300_000 < cov[k, 1]
        assert r.exit_ts_ms > r.entry_ts_ms + 290_000
    assert m["data"]["holes"][0]["text"] == "2024-03-01 12:00–24:00 (not covered)"
    assert m["data"]["coverage"]["intervals"] == cov.tolist() and m["data"]["coverage"]["n_intervals"] == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: data has holes")]
    assert err == ["warning: data has holes: 2024-03-01 12:00–24:00 (not covered), 2024-03-02 (no partition)"]
    # gold agrees: no forward return for a dropped window
    ev = gold_events(res.signals.span, {"min_notional_usd": 20_000}, [300_000], 0)
    late = ev["ts_ms"].isin([T0 + WHALES_D1[1], T0 + WHALES_D1[2], T0 + 2 * DAY + WHALES_D3[1]])
    assert late.sum() == 3 and ev.loc[late, "fwd_ret_5m"].isna().all() and ev.loc[~late, "fwd_ret_5m"].notna().all()


def test_strict_refuses_holes_with_one_error_line(holey, capsys):
    tmp, path, _ = holey
    with pytest.raises(DataHolesError, match="2024-03-02 \\(no partition\\)"):
        run_backtest(
            load_config(path), results_dir=tmp / "r", log_mlflow=False, tearsheet=False, quiet=True, strict=True
        )
    capsys.readouterr()
    rc = bt.cli.main(["run", str(path), "--results", str(tmp / "r"), "--no-mlflow", "--no-tearsheet", "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len([x for x in err if x.startswith("Error:")]) == 1
    assert "--strict" in err[-1] and "2024-03-01 12:00–24:00 (not covered)" in err[-1]
    assert not (tmp / "r" / load_config(path).run_id).exists()


# ---------------------------------------------------------------------------- metadata
def test_two_recordings_of_a_day_union_their_coverage(tmp_path):
    lake = Lake(tmp_path / "lake")
    a, b = _day(0, 500, 1, 0, HOUR), _day(0, 500, 2, 3 * HOUR, 4 * HOUR)
    b["trade_id"] += 1_000
    lake.write_trades(a, coverage=[[T0, T0 + HOUR]], coverage_source="recording", id_space="binance_fill")
    lake.write_trades(
        b, coverage=[[T0 + 3 * HOUR, T0 + 4 * HOUR + 5]], coverage_source="recording", id_space="binance_fill"
    )
    meta = lake.partition_meta(Partition("bronze", "binance_usdm", SYM, pd.Timestamp("2024-03-01").date()))
    assert json.loads(meta["coverage"]) == [[T0, T0 + HOUR], [T0 + 3 * HOUR, T0 + 4 * HOUR + 5]]
    assert meta["coverage_source"] == "recording" and meta["rows"] == "1000"
    # the same recording again changes nothing; one that bridges the hole merges the intervals
    assert not lake.write_trades(
        b, coverage=[[T0 + 3 * HOUR, T0 + 4 * HOUR + 5]], coverage_source="recording", id_space="binance_fill"
    )[0].changed
    lake.write_trades(
        a.iloc[:1], coverage=[[T0 + HOUR - 10, T0 + 3 * HOUR]], coverage_source="recording", id_space="binance_fill"
    )
    span = load_trades(lake, "binance_usdm", SYM, "2024-03-01", "2024-03-01")
    assert span.coverage.tolist() == [[T0, T0 + 4 * HOUR + 5]]


def test_partitions_without_coverage_count_as_first_to_last_trade(tmp_path):
    """A partition written before coverage was recorded (no footer keys) still reads."""
    lake = Lake(tmp_path / "lake")
    df = _day(0, 300, 5, 2 * HOUR, 5 * HOUR)
    p = Partition("bronze", "binance_usdm", SYM, pd.Timestamp("2024-03-01").date())
    table = pa.Table.from_pandas(df.drop(columns=[]), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    lake.store.put(p.key, buf.getvalue())
    span = load_trades(lake, "binance_usdm", SYM, "2024-03-01", "2024-03-01")
    assert span.coverage.tolist() == [[int(df.ts_ms.min()), int(df.ts_ms.max()) + 1]]
    assert span.sources[0]["coverage_source"] == "trades"
    assert [h["kind"] for h in span.holes] == ["not_covered", "not_covered"]
