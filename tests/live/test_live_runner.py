"""Live runner over a real local WebSocket fed with real recorded frames: parity with the batch kernel.

Every test serves a recording with `live.replay.ReplayServer` (a real websockets server on a free
port, with the exchange's paths, handshake and REST) and runs `live.runner.Runner` against it;
the journal must equal the batch journal of the same trades (`signals.run_batch` over
`recording_trades`), record for record, also with faults injected.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import aiohttp
import numpy as np

from bt.config import parse_config
from datasets.sources.frames import BinanceTradeMerger, parse_binance
from datasets.sources.recordings import iter_frames, recording_trades
from live.decider import Decider
from live.journal import read_journal
from live.replay import FaultPlan, ReplayServer, load_tape
from live.runner import Runner, RunnerOptions, backoff_delay
from signals import run_batch
from signals.journal import JOURNAL_KEYS, journal_record

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BTC = REAL / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
BINANCE_MULTI = REAL / "binance_usdm_multi_2021-07-22_frames.txt"
BYBIT = REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
OKX = REAL / "okx_v5_multi_2022-05-13_frames.txt"

BTC_WHALE = {"min_notional_usd": 100000, "window_s": 10, "q": 0.99, "lookback_s": 120, "min_samples": 60}
SMALL_WHALE = {"min_notional_usd": 200, "window_s": 2, "q": 0.5, "lookback_s": 10, "min_samples": 3}
BYBIT_WHALE = {"min_notional_usd": 5000, "window_s": 2, "q": 0.5, "lookback_s": 10, "min_samples": 3}


def decider_for(whale: dict, exchange: str = "binance_usdm", symbol: str = "BTCUSDT") -> Decider:
    cfg = parse_config(
        {
            "name": "live-test",
            "signal": {"whale": whale},
            "data": {"exchange": exchange, "symbol": symbol, "start": "2024-01-01", "end": "2024-01-01"},
        }
    )
    return Decider.from_config(cfg)


def batch_journal(path: Path, decider: Decider, exchange: str) -> dict[str, list[dict]]:
    """The batch side: bronze trades of the recording → `run_batch` per symbol → journal records."""
    df = recording_trades(path, exchange=exchange)
    out: dict[str, list[dict]] = {}
    for sym, g in df.groupby("symbol", sort=True):
        res = run_batch(g.ts_ms.to_numpy(), g.price.to_numpy(), g.qty.to_numpy(), g.side.to_numpy(), decider.params)
        tid, ts, px, qty = (g[c].to_numpy() for c in ("trade_id", "ts_ms", "price", "qty"))
        out[sym] = [
            journal_record(
                exchange=exchange,
                symbol=sym,
                trade_id=tid[i],
                ts_ms=ts[i],
                price=px[i],
                notional_usd=px[i] * qty[i],
                prob=None,
                decision="long",
                config_id=decider.config_id,
                model=None,
            )
            for i in res.event_idx
        ]
    return out


def per_symbol(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["symbol"], []).append(r)
    return out


def read_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def _wait_quiet(runner: Runner, server: ReplayServer, timeout_s: float = 150.0) -> None:
    """Until the tape has ended and the runner has read everything the server sent."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    await asyncio.wait_for(server.ended_and_closed.wait(), timeout_s)
    last, still = -1, 0
    while still < 6:
        await asyncio.sleep(0.05)
        assert loop.time() < end, "runner did not drain in time"
        still = still + 1 if runner.n_frames == last else 0
        last = runner.n_frames


async def run_live(
    path: Path,
    exchange: str,
    symbols: list[str],
    decider: Decider,
    journal: Path,
    *,
    faults: FaultPlan | None = None,
    ws_path: str = "",
    stream: str = "aggTrade",
    stop_after_frames: int | None = None,
    http: bool = False,
    check=None,
    start_frame: int = 0,
    **opt_kw,
):
    tape = load_tape(path)
    server = await ReplayServer(tape, faults=faults, start_frame=start_frame).start()
    default_path = {"binance_usdm": "/stream", "bybit_linear": "/v5/public/linear", "okx_swap": "/ws/v5/public"}
    opts = RunnerOptions(
        exchange=exchange,
        symbols=symbols,
        ws_url=server.url + (ws_path or default_path[exchange]),
        rest_url=f"http://127.0.0.1:{server.port}",
        journal=str(journal),
        stream=stream,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        echo=False,
        seed=7,
        http_port=0 if http else None,
        **opt_kw,
    )
    runner = Runner(opts, decider)
    task = asyncio.create_task(runner.run())
    try:
        if stop_after_frames is not None:
            while runner.n_frames < stop_after_frames:
                assert not task.done(), "runner ended early"
                await asyncio.sleep(0.01)
        else:
            await _wait_quiet(runner, server)
        if check is not None:
            await check(runner, server)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await server.stop()
    return runner, server


# ---------------------------------------------------------------------------------------------- parity
PAPER_BACKTEST = {
    "horizon": "30s",
    "entry_latency_ms": 250,
    "fee_bps": 5,
    "slippage_bps": 1,
    "take_profit": 0.0008,
    "stop_loss": 0.0006,
    "label_threshold": 0.0005,
}


def test_btcusdt_recording_parity_with_batch(tmp_path):
    """The real BTCUSDT @trade recording, merged live frame by frame == merged in batch; and every
    `long` paper-traded live exits as `signals.outcome.entry_exit` says on the same trades."""
    from live.paper import read_outcomes
    from signals.outcome import EXIT_REASONS, entry_exit

    cfg = parse_config(
        {
            "name": "paper",
            "signal": {"whale": BTC_WHALE},
            "backtest": PAPER_BACKTEST,
            "data": {"exchange": "binance_usdm", "symbol": "BTCUSDT", "start": "2024-08-08", "end": "2024-08-08"},
        }
    )
    dec = Decider.from_config(cfg)
    assert dec.config_id == decider_for(BTC_WHALE).config_id  # the backtest section is not hashed
    journal, paper = tmp_path / "j.jsonl", tmp_path / "paper.jsonl"
    runner, server = asyncio.run(
        run_live(BTC, "binance_usdm", ["BTCUSDT"], dec, journal, stream="trade", paper=str(paper))
    )
    live = read_lines(journal)
    want = batch_journal(BTC, dec, "binance_usdm")["BTCUSDT"]
    assert len(want) == 741
    assert live == want  # same events, same order, same values, bit for bit
    assert [list(r) for r in live[:1]] == [list(JOURNAL_KEYS)]
    c = runner.counters()
    assert c["trades"] == 10447 and c["frames"] == 21313 == server.sent
    assert c["duplicates"] == c["gaps"] == c["bad_frames"] == c["unfilled"] == 0

    got = {o["trade_id"]: o for o in read_outcomes(paper, dec.config_id)}
    df = recording_trades(BTC)
    ts, px, tid = df.ts_ms.to_numpy(), df.price.to_numpy(), df.trade_id.to_numpy()
    res = run_batch(ts, px, df.qty.to_numpy(), df.side.to_numpy(), dec.params)
    e, x, why = entry_exit(
        ts, px, res.event_idx, latency_ms=250, horizons_ms=[30_000], slippage=1e-4, take_profit=0.0008, stop_loss=0.0006
    )
    outcomes = {}
    for j, i in enumerate(res.event_idx):
        if why[j, 0] < 0 or ts[e[j]] + 30_000 >= ts[-1]:
            continue  # dropped by the batch, or decided by the very last trade: still open live
        entry_px = px[e[j]] * (1 + 1e-4)
        gross = px[x[j, 0]] / entry_px - 1
        outcomes[int(tid[i])] = {
            "entry_trade_id": int(tid[e[j]]),
            "exit_trade_id": int(tid[x[j, 0]]),
            "exit_reason": EXIT_REASONS[int(why[j, 0])],
            "gross_return": gross,
            "net_return": gross - 2 * 5e-4,
            "label": int(gross >= 0.0005),
        }
    assert len(outcomes) > 500
    assert {w["exit_reason"] for w in outcomes.values()} == {"horizon", "take_profit", "stop_loss"}
    assert set(got) == set(outcomes)
    for k, w in outcomes.items():
        assert {f: got[k][f] for f in w} == w


def test_binance_aggtrade_parity_four_symbols_over_raw_ws_subscribe(tmp_path):
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner, _ = asyncio.run(run_live(BINANCE_MULTI, "binance_usdm", syms, dec, journal, ws_path="/ws"))
    want = batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    assert per_symbol(read_lines(journal)) == want
    assert sum(map(len, want.values())) == 30 and runner.counters()["trades"] == 91


def test_bybit_linear_parity(tmp_path):
    dec = decider_for(BYBIT_WHALE, "bybit_linear")
    journal = tmp_path / "j.jsonl"
    syms = ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"]
    runner, server = asyncio.run(run_live(BYBIT, "bybit_linear", syms, dec, journal))
    want = batch_journal(BYBIT, dec, "bybit_linear")
    assert sum(map(len, want.values())) == 103
    assert per_symbol(read_lines(journal)) == want
    assert runner.counters()["trades"] == 327  # the spot connection's 20 trades are not served on /linear


def test_busy_polling_runner_keeps_parity(tmp_path):
    """--busy-poll (spin, rehearse while idle) changes when frames are read, not what is decided."""
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner, _ = asyncio.run(
        run_live(
            BINANCE_MULTI,
            "binance_usdm",
            syms,
            dec,
            journal,
            busy_poll=True,
            faults=FaultPlan(stall_after=40, stall_s=0.3),
        )
    )
    assert per_symbol(read_lines(journal)) == batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    assert runner.counters()["trades"] == 91 and runner._stand_in.counters()["trades"] > 0


def test_okx_swap_trades_reach_the_kernel(tmp_path):
    dec = decider_for({"min_notional_usd": 100}, "okx_swap", "UNIUSD")
    journal = tmp_path / "j.jsonl"
    runner, _ = asyncio.run(run_live(OKX, "okx_swap", ["UNIUSD"], dec, journal))
    assert runner.counters()["trades"] == 1 and runner.feeds["UNIUSD"].last_id == 12883020
    assert read_lines(journal) == []  # its one trade is a taker sell: long-only rules cannot fire
    assert batch_journal(OKX, dec, "okx_swap") == {"UNIUSD": []}


# ---------------------------------------------------------------------------------------------- faults
def test_drops_with_lost_frames_are_backfilled_over_rest(tmp_path):
    """Each connection is cut after 12 frames and the next 3 frames are lost: REST fills every gap."""
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner, server = asyncio.run(
        run_live(BINANCE_MULTI, "binance_usdm", syms, dec, journal, faults=FaultPlan(drop_after=12, lose=3))
    )
    assert per_symbol(read_lines(journal)) == batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    c = runner.counters()
    assert server.connections >= 8 and c["reconnects"] >= 7
    # every trade reached the kernel exactly once; aborting a connection also discards frames still
    # in its send buffer, so more came over REST than `lose` alone
    assert c["trades"] == 91 and c["unfilled"] == 0
    assert c["gaps"] >= 5 and c["backfilled"] >= 3 * (server.connections - 1)


def test_btcusdt_drop_repeat_garbage_and_stall_still_match_batch(tmp_path):
    """Everything at once on the real BTCUSDT tape: the journal is still the batch journal."""
    dec = decider_for(BTC_WHALE)
    journal = tmp_path / "j.jsonl"
    faults = FaultPlan(drop_after=6000, lose=40, repeat=25, stall_after=9000, stall_s=1.5, garbage_every=997)
    runner, server = asyncio.run(
        run_live(BTC, "binance_usdm", ["BTCUSDT"], dec, journal, stream="trade", faults=faults, stale_s=0.4)
    )
    assert read_lines(journal) == batch_journal(BTC, dec, "binance_usdm")["BTCUSDT"]
    c = runner.counters()
    # every garbage frame that arrived was counted and skipped; an aborted connection may swallow one
    assert server.garbage_sent - 3 <= c["bad_frames"] <= server.garbage_sent and c["bad_frames"] >= 18
    assert c["duplicates"] >= 25 * 3  # repeated frames after each reconnect, dropped by id
    assert c["gaps"] >= 3 and c["backfilled"] >= 40 * 3 and c["unfilled"] == 0
    assert c["reconnects"] >= 4  # three drops and the stall
    assert c["trades"] == 10447


def test_unfillable_gap_is_counted_not_invented(tmp_path):
    """With REST unreachable the lost trades stay lost: counted, logged, and nothing is doubled."""
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner2, _ = asyncio.run(_run_dead_rest(journal.with_name("j2.jsonl"), dec, syms))
    c = runner2.counters()
    assert c["unfilled"] > 0 and c["backfilled"] == 0 and c["trades"] == 91 - c["unfilled"]
    assert c["duplicates"] == 0
    ids = [r["trade_id"] for r in read_lines(journal.with_name("j2.jsonl"))]
    assert len(ids) == len(set(ids))


async def _run_dead_rest(journal: Path, dec: Decider, syms: list[str]):
    tape = load_tape(BINANCE_MULTI)
    server = await ReplayServer(tape, faults=FaultPlan(drop_after=30, lose=5)).start()
    opts = RunnerOptions(
        exchange="binance_usdm",
        symbols=syms,
        ws_url=server.url + "/stream",
        rest_url="http://127.0.0.1:9",
        journal=str(journal),
        backoff_base_s=0.01,
        backoff_cap_s=0.02,
        rest_retries=1,
        echo=False,
        seed=3,
    )
    runner = Runner(opts, dec)
    task = asyncio.create_task(runner.run())
    try:
        await _wait_quiet(runner, server)
    finally:
        runner.stop()
        await task
        await server.stop()
    return runner, server


# ---------------------------------------------------------------------------------------------- restart
def _merge_boundary_after(n_frames: int) -> int:
    """A frame count at or after `n_frames` where the next @trade fill starts a new merged row,
    so that stopping there leaves no half-merged row behind."""
    merger = BinanceTradeMerger()
    k = 0
    for fr in iter_frames(BTC):
        if '@trade"' not in fr.text:
            continue
        (row,) = parse_binance(fr.text)
        out = merger.push(row)
        if k >= n_frames + 1 and out:
            return k  # fill number k (0-based) completed the previous row: stop after k frames
        k += 1
    raise AssertionError("no boundary found")


def test_restart_resumes_from_the_journal_without_re_emitting(tmp_path):
    dec = decider_for(BTC_WHALE)
    journal = tmp_path / "j.jsonl"
    stop_at = _merge_boundary_after(9000)
    r1, _ = asyncio.run(
        run_live(
            BTC,
            "binance_usdm",
            ["BTCUSDT"],
            dec,
            journal,
            stream="trade",
            faults=FaultPlan(stall_after=stop_at, stall_s=60),
            stop_after_frames=stop_at,
        )
    )
    first = read_lines(journal)
    want = batch_journal(BTC, dec, "binance_usdm")["BTCUSDT"]
    assert 0 < len(first) < len(want) and first == want[: len(first)]
    # the restart replays the whole day from its start (as a warm-up would) with the same journal
    r2, _ = asyncio.run(run_live(BTC, "binance_usdm", ["BTCUSDT"], dec, journal, stream="trade"))
    assert read_lines(journal) == want
    assert r2.counters()["suppressed"] == len(first)
    st = read_journal(journal, exchange="binance_usdm", config_id=dec.config_id)
    assert st.records == len(want) and st.other_configs == 0


def test_journal_group_commit_syncs_a_burst_once_and_echoes_only_synced_lines(tmp_path, monkeypatch):
    import live.journal as lj

    syncs, echoed = [], []

    def fake_sync(fd):  # record what the file holds at each fdatasync
        syncs.append(len((tmp_path / "j.jsonl").read_text().splitlines()))

    monkeypatch.setattr(lj, "_sync", fake_sync)
    w = lj.JournalWriter(tmp_path / "j.jsonl", echo=echoed.append)
    w.write({"n": 0})  # no event loop: committed at once
    assert syncs == [1] and len(echoed) == 1

    async def burst():
        for n in range(1, 4):
            w.write({"n": n})
        assert echoed == ['{"n": 0}'] and syncs == [1]  # appended, not yet synced or announced
        await asyncio.sleep(0)
        assert syncs == [1, 4] and echoed == [json.dumps({"n": n}) for n in range(4)]

    asyncio.run(burst())
    w.write({"n": 4})
    w.close()
    assert syncs == [1, 4, 5] and len(echoed) == 5


def test_half_written_last_line_is_cut_before_appending(tmp_path):
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    want = batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    good = json.dumps(want["CTKUSDT"][0])
    journal.write_text(good + "\n" + good[:37])  # a crash in the middle of the second line
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    asyncio.run(run_live(BINANCE_MULTI, "binance_usdm", syms, dec, journal))
    assert per_symbol(read_lines(journal)) == want


def test_warm_up_from_lake_mutes_history_and_continues_the_kernel(tmp_path):
    """Warm-up from a lake holding the first half of the day: the stream repeats it (dropped as
    repeats by id); the journal holds exactly the batch events after the warm-up."""
    from datasets.lake import Lake

    dec = decider_for(SMALL_WHALE)
    df = recording_trades(BINANCE_MULTI)
    split_ts = int(df.ts_ms.iloc[len(df) // 2])
    lake = Lake(str(tmp_path / "lake"))
    lake.write_trades(df[df.ts_ms <= split_ts], mode="merge")
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner, _ = asyncio.run(
        run_live(
            BINANCE_MULTI,
            "binance_usdm",
            syms,
            dec,
            journal,
            warmup_from="lake",
            lake=str(tmp_path / "lake"),
            warmup_s=3600,
            clock_ms=lambda: split_ts,
        )
    )
    want = {
        s: [r for r in recs if r["ts_ms"] > split_ts]
        for s, recs in batch_journal(BINANCE_MULTI, dec, "binance_usdm").items()
    }
    got = per_symbol(read_lines(journal))
    assert {s: got.get(s, []) for s in want} == want
    n_warm = int((df.ts_ms <= split_ts).sum())
    c = runner.counters()
    assert c["duplicates"] == n_warm and c["trades"] == 91
    assert c["suppressed"] == sum(
        1 for recs in batch_journal(BINANCE_MULTI, dec, "binance_usdm").values() for r in recs if r["ts_ms"] <= split_ts
    )


def test_warm_up_over_rest_then_stream_continues_exactly(tmp_path):
    """The market has run for half the tape: warm-up fetches that half from REST /fapi/v1/aggTrades by
    time, the stream carries on from there, and the journal is the batch journal after the warm-up."""
    dec = decider_for(SMALL_WHALE)
    tape = load_tape(BINANCE_MULTI)
    half = len(tape.frames) // 2
    df = recording_trades(BINANCE_MULTI)
    t_split = max(json.loads(f.text)["data"]["T"] for f in tape.frames[:half] if "aggtrade" in f.key)
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    runner, server = asyncio.run(
        run_live(
            BINANCE_MULTI,
            "binance_usdm",
            syms,
            dec,
            journal,
            start_frame=half,
            warmup_from="rest",
            warmup_s=600,
            clock_ms=lambda: t_split + 1,
        )
    )
    full = batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    want = {s: [r for r in recs if r["ts_ms"] > t_split] for s, recs in full.items()}
    got = per_symbol(read_lines(journal))
    assert {s: got.get(s, []) for s in want} == want and sum(map(len, want.values())) > 5
    c = runner.counters()
    assert c["trades"] == 91 and c["unfilled"] == 0
    assert c["suppressed"] == sum(len(v) for v in full.values()) - sum(len(v) for v in want.values())
    assert server.rest_requests >= 4  # one aggTrades window per symbol at least


def test_trade_stream_warm_up_from_rest_aggtrades_continues_on_raw_fill_ids(tmp_path):
    """Binance @trade with a REST warm-up: aggTrades (numbered by first fill, as merged fills are)
    warm the kernel, the raw stream continues after their last fill id; the journal is the tail of
    the batch journal, nothing repeated and nothing missing."""
    dec = decider_for(BTC_WHALE)
    tape = load_tape(BTC)
    trade_pos = [i for i, f in enumerate(tape.frames) if f.key.endswith("@trade")]
    half = trade_pos[len(trade_pos) // 2]
    t_split = (
        json.loads(tape.frames[half - 1].text)["data"]["T"]
        if tape.frames[half - 1].key.endswith("@trade")
        else max(json.loads(tape.frames[i].text)["data"]["T"] for i in trade_pos if i < half)
    )
    journal = tmp_path / "j.jsonl"
    runner, server = asyncio.run(
        run_live(
            BTC,
            "binance_usdm",
            ["BTCUSDT"],
            dec,
            journal,
            stream="trade",
            start_frame=half,
            warmup_from="rest",
            warmup_s=900,
            clock_ms=lambda: t_split + 1,
        )
    )
    want = batch_journal(BTC, dec, "binance_usdm")["BTCUSDT"]
    got = read_lines(journal)
    assert 0 < len(got) < len(want) and got == want[len(want) - len(got) :]
    c = runner.counters()
    assert c["suppressed"] + len(got) == len(want) and c["trades"] == 10447 and c["unfilled"] == 0


# ---------------------------------------------------------------------------------------------- HTTP
def test_health_metrics_and_signals_endpoints(tmp_path):
    dec = decider_for(SMALL_WHALE)
    journal = tmp_path / "j.jsonl"
    seen: dict = {}

    async def check(runner: Runner, server: ReplayServer):
        base = f"http://127.0.0.1:{runner.http_port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                seen["metrics"] = await r.text()
            async with s.get(base + "/signals?limit=3") as r:
                seen["signals"] = await r.json()
            async with s.get(base + "/signals?limit=x") as r:
                seen["bad_limit"] = (r.status, await r.json())
            async with s.get(base + "/health") as r:
                seen["health"] = (r.status, await r.json())

    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    asyncio.run(
        run_live(
            BINANCE_MULTI,
            "binance_usdm",
            syms,
            dec,
            journal,
            http=True,
            check=check,
            faults=FaultPlan(garbage_every=20),
        )
    )
    m = seen["metrics"]
    assert 'whalebt_live_trades_total{symbol="CTKUSDT"} 38' in m
    assert 'whalebt_live_signals_total{decision="long",symbol="SUSHIUSDT"} 12' in m
    assert 'whalebt_live_bad_frames_total{exchange="binance_usdm"} 4' in m
    assert "# TYPE whalebt_live_receipt_to_decision_seconds histogram" in m
    assert 'whalebt_live_receipt_to_decision_seconds_bucket{le="+Inf"} 91' in m
    lines = read_lines(journal)
    assert seen["signals"] == lines[-3:]
    assert seen["bad_limit"] == (400, {"error": "limit must be a whole number >= 0; got 'x'"})
    status, body = seen["health"]
    assert body["ready"] is True and body["symbols"]["CTKUSDT"]["trades"] == 38
    assert status in (200, 503) and (status == 200) == body["ok"]


def test_backoff_is_exponential_with_full_jitter_and_capped():
    import random

    rng = random.Random(0)
    draws = [[backoff_delay(a, 0.5, 30.0, rng) for _ in range(2000)] for a in range(8)]
    for a, d in enumerate(draws):
        hi = min(30.0, 0.5 * 2**a)
        assert 0 <= min(d) and max(d) <= hi
        assert math.isclose(float(np.mean(d)), hi / 2, rel_tol=0.1)


# ---------------------------------------------------------------------------------------------- transport
def test_listener_hands_over_whole_messages_text_as_str():
    """Fragments are assembled; text arrives as str (bytes if it is not UTF-8), binary as bytes; a
    close frame is answered; nothing reaches the runner once it stops."""
    from picows import WSMsgType
    from picows.picows import _make_test_ws_frame as frame

    from live.runner import _Listener

    class Collect:
        _stopping = False

        def __init__(self):
            self.got = []

        def on_message(self, payload, t_recv_ns):
            self.got.append(payload)

    class Transport:
        def __init__(self):
            self.calls = []

        def send_close(self, code, message):
            self.calls.append(("close", code, message))

        def disconnect(self):
            self.calls.append(("disconnect",))

    runner, tr = Collect(), Transport()
    lis = _Listener(runner)
    T, B, C = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
    for kind, payload, fin in [
        (T, b'{"a":1}', True),
        (T, b'{"b":', False),
        (C, b"2", False),
        (C, b"}", True),
        (B, b"\x01\x02", True),
        (T, b"\xff\xfe", True),
        (WSMsgType.PONG, b"", True),
        (B, b"x", False),
        (C, b"y", True),
    ]:
        lis.on_ws_frame(tr, frame(kind, payload, fin, False))
    assert runner.got == ['{"a":1}', '{"b":2}', b"\x01\x02", b"\xff\xfe", b"xy"]
    assert lis.n_messages == 5
    close = frame(WSMsgType.CLOSE, (1000).to_bytes(2, "big") + b"bye", True, False)
    lis.on_ws_frame(tr, close)
    assert tr.calls[0][0] == "close" and tr.calls[1] == ("disconnect",)
    runner._stopping = True
    lis.on_ws_frame(tr, frame(T, b"late", True, False))
    assert runner.got[-1] == b"xy" and lis.n_messages == 6


def test_idle_rehearsal_touches_no_real_state():
    """Rehearsing the frame path while idle (--busy-poll) leaves every real counter, kernel state,
    id and metric as it was, and does run trades (and the model) through a stand-in."""
    dec = decider_for(SMALL_WHALE)
    texts = [f.text for f in iter_frames(BINANCE_MULTI) if '"ctkusdt@aggTrade"' in f.text][:10]

    async def main():
        runner = Runner(RunnerOptions(exchange="binance_usdm", symbols=["CTKUSDT"], echo=False), dec)
        runner.journal = type("NoJournal", (), {"write": lambda self, rec: None})()
        runner.feeds["CTKUSDT"].live = True
        for t in texts:
            runner.handle_frame(t, 0)
        feed = runner.feeds["CTKUSDT"]
        before = (
            runner.counters(),
            feed.last_id,
            feed.state.nb.iv.copy(),
            runner.metrics.render(),
            list(runner.recent),
        )
        for _ in range(30):
            runner._rehearse()
        after = (runner.counters(), feed.last_id, feed.state.nb.iv.copy(), runner.metrics.render(), list(runner.recent))
        return before, after, runner._stand_in

    before, after, stand_in = asyncio.run(main())
    assert before[0] == after[0] and before[1] == after[1] and (before[2] == after[2]).all()
    assert before[3] == after[3] and before[4] == after[4]
    c = stand_in.counters()
    assert c["frames"] == 30 and c["trades"] >= 29
