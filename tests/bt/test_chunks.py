"""Gold built in parallel day chunks (bt.chunks) equals the kernel run over the span in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bt.chunks as chunks
from datasets.build import kernel_days, open_tape, tape_gold_events
from datasets.lake import Lake
from signals import WhaleParams

SYM = "CHUNKUSDT"
DAYS = 24


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    from datasets.synth import SynthParams, generate_days

    d = tmp_path_factory.mktemp("chunks") / "lake"
    lake = Lake(str(d))
    p = SynthParams(
        symbol=SYM,
        days=DAYS,
        trades_per_s=0.2,
        seed=11,
        whale_rate_per_day=12,
        plant_effect_bps=40,
        plant_horizon_s=900,
        whale_notional_usd=200_000,
    )
    for _, day in generate_days(p):
        lake.write_trades(
            pd.DataFrame(
                {
                    "exchange": "binance_usdm",
                    "symbol": SYM,
                    "trade_id": day["agg_trade_id"],
                    "ts_ms": day["ts_ms"],
                    "price": day["price"],
                    "qty": day["qty"],
                    "side": day["side"],
                }
            )
        )
    return d


def _tape(lake_dir: Path):
    return open_tape(Lake(str(lake_dir)), "binance_usdm", SYM, "2024-03-01", "2024-03-24")


WHALES = [
    {"min_notional_usd": 150_000},
    {
        "min_notional_usd": 150_000,
        "window_s": 30,
        "q": 0.995,
        "lookback_s": 1800,
        "min_samples": 600,
        "cooldown_s": 120,
    },
]


def _same(a, b) -> None:
    assert np.array_equal(a.idx, b.idx) and np.array_equal(a.code, b.code)
    assert np.array_equal(a.feat, b.feat, equal_nan=True)


@pytest.mark.parametrize("whale", WHALES, ids=["notional", "flow_cooldown"])
def test_chunks_equal_one_process(lake_dir, whale):
    tape = _tape(lake_dir)
    params = WhaleParams.from_dict(whale)
    one, _ = kernel_days(tape, params, range(tape.n_days))
    assert len(one.idx) > 100
    ev, stats = chunks.chunk_events(tape, params, 3)
    assert stats.chunks == 3 and stats.recomputed == 0  # every warm-up reproduced its seam
    _same(ev, one)
    frame = chunks.chunked_gold_events(tape, whale, [300_000, 900_000], 250, 2)
    pd.testing.assert_frame_equal(frame, tape_gold_events(tape, whale, [300_000, 900_000], 250), check_exact=True)


def test_short_warmup_is_caught_and_recomputed(lake_dir, monkeypatch):
    tape = _tape(lake_dir)
    params = WhaleParams.from_dict(WHALES[1])
    one, _ = kernel_days(tape, params, range(tape.n_days))
    # 10 s and 50 trades of warm-up cannot rebuild a 30 min flow history: the seam check refuses it and the
    # chunk is run again from the previous chunk's end state.
    monkeypatch.setattr(chunks, "WARMUP_TRADES", 50)
    ev, stats = chunks.chunk_events(tape, params, 3, warm_ms=10_000)
    assert stats.recomputed == 2
    _same(ev, one)


def test_plan_chunks(lake_dir):
    tape = _tape(lake_dir)
    plan = chunks.plan_chunks(tape, 3)
    assert len(plan) == 3 and plan[0].start == 0 and plan[-1].stop == tape.n_days
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:]))
    assert all(len(r) >= chunks.MIN_CHUNK_DAYS for r in plan)
    rows = [int(tape.rows[r.start : r.stop].sum()) for r in plan]
    assert max(rows) - min(rows) <= 2 * int(tape.rows.max())  # about equal trades
    assert chunks.plan_chunks(tape, 1) == [range(tape.n_days)]
    assert len(chunks.plan_chunks(tape, 64)) == DAYS // chunks.MIN_CHUNK_DAYS


def test_bt_run_jobs_equal_one_process(lake_dir, tmp_path):
    from bt.config import parse_config
    from bt.run import run_backtest

    raw = {
        "name": "chunks",
        "data": {
            "lake": str(lake_dir),
            "exchange": "binance_usdm",
            "symbol": SYM,
            "start": "2024-03-01",
            "end": "2024-03-24",
        },
        "signal": {"whale": WHALES[1]},
        "backtest": {"horizon": "15m", "bootstrap": 50},
    }
    folders = []
    for jobs in (1, 2):
        for layer in ("silver", "gold"):
            import shutil

            shutil.rmtree(lake_dir / layer, ignore_errors=True)
        res = run_backtest(
            parse_config(raw),
            results_dir=tmp_path / str(jobs),
            log_mlflow=False,
            tearsheet=False,
            quiet=True,
            jobs=jobs,
        )
        folders.append(res.run_dir)
    for name in ("metrics.json", "signals.jsonl", "trades.parquet", "equity.parquet"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
