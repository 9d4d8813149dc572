"""REST ingestion through ccxt against a local server that answers like Binance, Bybit and OKX.

The server (tests/servers/exchange_rest.py) serves the real recorded trades in each exchange's
REST format; ccxt is pointed at it by rewriting its API URLs, so requests go through ccxt's real
HTTP client, rate limiter and error mapping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from datasets.cli import main as datasets_main
from datasets.lake import Lake
from datasets.schema import validate_bronze
from datasets.sources.rest import (
    Backoff,
    RestError,
    ingest_rest,
    make_client,
    okx_inst_id,
    parse_time_ms,
    point_client_at,
    resume_point,
)
from servers.exchange_rest import (
    ExchangeRestServer,
    binance_418,
    binance_429,
    bybit_10006,
    http_503,
    okx_429,
)

AGG = "/fapi/v1/aggTrades"
OKX_TRADES = "/api/v5/market/history-trades"
BYBIT_TRADES = "/v5/market/recent-trade"
SINCE = parse_time_ms("2024-08-08T22:30")  # 1 h 24 min before the first recorded trade
UNTIL = parse_time_ms("2024-08-10")
FAST = dict(rate_limit_ms=0, progress=False)


@pytest.fixture(scope="module")
def server():
    with ExchangeRestServer() as srv:
        yield srv


@pytest.fixture()
def srv(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def reference(server):
    """Bronze content hashes of uninterrupted runs (the baseline of the crash and retry tests)."""
    server.reset()
    b, o = Lake("memory://"), Lake("memory://")
    run_binance(server, b)
    run_okx(server, o)
    server.reset()
    return {
        "binance": shas(b, "binance_usdm", "BTCUSDT"),
        "okx": shas(o, "okx_swap", "BTCUSDT"),
        "okx_ids": bronze(o, "okx_swap", "BTCUSDT")["trade_id"].tolist(),
    }


def bronze(lake: Lake, exchange: str, symbol: str) -> pd.DataFrame:
    return lake.read("bronze", exchange, symbol, "2000-01-01", "2100-01-01")


def shas(lake: Lake, exchange: str, symbol: str) -> dict[str, str]:
    return {str(p.date): lake.partition_meta(p)["content_sha256"] for p in lake.partitions("bronze", exchange, symbol)}


def run_binance(srv, lake, symbol="BTCUSDT", since=SINCE, until=UNTIL, **kw):
    kw = {"page_limit": 500, "batch_rows": 1500, **FAST, **kw}
    return ingest_rest(lake, "binance_usdm", symbol, since, until, api_url=srv.url, **kw)


# ---------------------------------------------------------------------------- Binance
def test_binance_pagination_stores_every_trade_once(srv):
    lake = Lake("memory://")
    rep = run_binance(srv, lake)
    want = srv.binance_aggtrades["BTCUSDT"]
    got = bronze(lake, "binance_usdm", "BTCUSDT")
    assert len(got) == len(want) == rep.trades == 10447
    assert got["trade_id"].tolist() == [r["a"] for r in want]  # each once, in order
    assert got["ts_ms"].tolist() == [r["T"] for r in want]
    assert got["price"].tolist() == [float(r["p"]) for r in want]
    assert got["qty"].tolist() == [float(r["q"]) for r in want]
    assert got["side"].tolist() == [-1 if r["m"] else 1 for r in want]  # m: buyer was maker → taker sold
    assert [str(t) for t in got.dtypes.iloc[2:]] == ["int64", "int64", "float64", "float64", "int8"]
    validate_bronze(got)
    # How it paged: hour windows until the first trade (never wider than 1 h), then forward by fromId.
    reqs = srv.requests(AGG)
    windows = [r.params for r in reqs if "startTime" in r.params]
    assert [int(p["endTime"]) - int(p["startTime"]) for p in windows] == [3_599_999, 3_599_999]
    assert int(windows[0]["startTime"]) == SINCE
    ids = [int(r.params["fromId"]) for r in reqs if "fromId" in r.params]
    assert ids[0] == want[499]["a"] + 1 and all(b - a == 500 for a, b in zip(ids, ids[1:]))
    assert rep.requests == len(reqs) == 2 + len(ids)
    # Re-running changes nothing and asks only for what may follow the stored data.
    before = shas(lake, "binance_usdm", "BTCUSDT")
    srv.reset()
    again = run_binance(srv, lake)
    assert again.resumed_from == (want[-1]["T"], want[-1]["a"])
    assert [r.params for r in srv.requests(AGG)] == [
        {"symbol": "BTCUSDT", "fromId": str(want[-1]["a"] + 1), "limit": "500"}
    ]
    assert shas(lake, "binance_usdm", "BTCUSDT") == before and again.partitions_changed == []


def test_binance_rest_matches_the_recorded_stream_merged_into_aggtrades(srv):
    """Normalisation parity: REST aggTrades and the WebSocket parser agree on every trade."""
    import gzip

    from datasets.sources.frames import BinanceTradeMerger, parse_binance
    from servers.exchange_rest import REAL_DIR

    lake = Lake("memory://")
    run_binance(srv, lake, symbol="ETHUSDT")
    rest = bronze(lake, "binance_usdm", "ETHUSDT")
    merger, rows = BinanceTradeMerger(), []
    with gzip.open(REAL_DIR / "binance_usdm_ethusdt_2024-08-08_stream.txt.gz", "rt") as fh:
        for line in fh:
            rows += parse_binance(line.split(" ", 1)[1], merger)
    rows += merger.flush()
    live = pd.DataFrame(rows)
    assert len(live) == len(rest) == 6209
    assert (live["ts_ms"].to_numpy() == rest["ts_ms"].to_numpy()).all()
    assert (live["side"].to_numpy() == rest["side"].to_numpy()).all()
    assert (live["price"].to_numpy() == rest["price"].to_numpy()).all()
    assert np.allclose(live["qty"].to_numpy(), rest["qty"].to_numpy(), rtol=1e-12, atol=0)


def test_binance_until_is_exclusive_and_a_later_run_continues_into_the_next_day(srv):
    lake = Lake("memory://")
    midnight = parse_time_ms("2024-08-09")
    first = run_binance(srv, lake, symbol="ETHUSDT", until=midnight)
    want = srv.binance_aggtrades["ETHUSDT"]
    before = [r for r in want if r["T"] < midnight]
    assert first.trades == len(before) == 6194  # the 25 fills after midnight make 15 aggTrades
    assert [str(p.date) for p in lake.partitions("bronze", "binance_usdm", "ETHUSDT")] == ["2024-08-08"]
    srv.reset()
    second = run_binance(srv, lake, symbol="ETHUSDT")
    assert second.resumed_from == (before[-1]["T"], before[-1]["a"])
    assert srv.requests(AGG)[0].params["fromId"] == str(before[-1]["a"] + 1)
    days = {
        str(p.date): int(lake.partition_meta(p)["rows"]) for p in lake.partitions("bronze", "binance_usdm", "ETHUSDT")
    }
    assert second.trades == 15
    assert days == {"2024-08-08": 6194, "2024-08-09": 15}
    assert bronze(lake, "binance_usdm", "ETHUSDT")["trade_id"].tolist() == [r["a"] for r in want]


def test_binance_429_and_418_are_waited_out_as_retry_after_asks(srv, reference, capsys):
    srv.inject(AGG, binance_429(1), at=4)
    srv.inject(AGG, binance_418(1), at=7)
    lake = Lake("memory://")
    rep = run_binance(srv, lake, backoff=Backoff(base_s=30))  # a back-off guess would take 30 s
    assert rep.retries == 2 and rep.waited_s == pytest.approx(2.0)
    log = srv.requests(AGG)
    assert [r.status for r in log[2:8]] == [200, 429, 200, 200, 418, 200]
    assert log[3].params == log[4].params and log[6].params == log[7].params  # the same page again
    assert log[4].t - log[3].t >= 1.0 and log[7].t - log[6].t >= 1.0
    assert shas(lake, "binance_usdm", "BTCUSDT") == reference["binance"]
    err = capsys.readouterr().err
    assert "rate limit" in err and "waiting 1.0 s (as asked), retry 1/8" in err


def test_an_ip_ban_longer_than_max_wait_stops_the_run_keeps_the_batches_and_the_rerun_completes(srv, reference, capsys):
    lake = Lake("memory://crash-418")
    srv.inject(AGG, binance_418(7200), at=9)
    args = [
        "ingest",
        "rest",
        "--exchange",
        "binance_usdm",
        "--symbol",
        "BTCUSDT",
        "--since",
        "2024-08-08T22:30",
        "--until",
        "2024-08-10",
        "--lake",
        "memory://crash-418",
        "--api-url",
        srv.url,
        "--rate-limit-ms",
        "0",
        "--page-limit",
        "500",
        "--batch-rows",
        "1500",
        "--quiet",
    ]
    assert datasets_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error: binance_usdm BTCUSDT: the exchange asks to wait 7200 s (binanceusdm 418")
    assert "longer than the 900 s this run waits. What was fetched is stored; rerun after" in err
    # 8 answered requests: an empty window, then 7 pages of 500. Batches of 1500 were written as
    # they filled; the last 500 were written when the run stopped: 3500 trades, in order.
    part = bronze(lake, "binance_usdm", "BTCUSDT")
    want = srv.binance_aggtrades["BTCUSDT"]
    assert part["trade_id"].tolist() == [r["a"] for r in want[:3500]]
    srv.reset()
    assert datasets_main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"binance_usdm BTCUSDT: {10447 - 3500:,} trades (")
    assert shas(lake, "binance_usdm", "BTCUSDT") == reference["binance"]


def test_resume_after_the_process_is_killed_mid_run_gives_the_same_bronze(srv, reference, tmp_path):
    lake_dir = tmp_path / "lake"
    # Held: the 12th request. Answered before it: an empty window and 10 pages of 500 trades;
    # batches of 1500 were written after pages 3, 6 and 9, page 10 is the batch in flight.
    hold = srv.hold(AGG, at=12)
    cmd = [
        sys.executable,
        "-m",
        "datasets.cli",
        "ingest",
        "rest",
        "--exchange",
        "binance_usdm",
        "--symbol",
        "BTCUSDT",
        "--since",
        "2024-08-08T22:30",
        "--until",
        "2024-08-10",
        "--lake",
        str(lake_dir),
        "--api-url",
        srv.url,
        "--rate-limit-ms",
        "0",
        "--page-limit",
        "500",
        "--batch-rows",
        "1500",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert hold.arrived.wait(60), proc.communicate(timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        hold.release()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    lake = Lake(lake_dir)
    want = srv.binance_aggtrades["BTCUSDT"]
    part = bronze(lake, "binance_usdm", "BTCUSDT")
    assert part["trade_id"].tolist() == [r["a"] for r in want[:4500]]  # a gap-free prefix, batch in flight lost
    assert not [k for k in lake.store.list("") if ".tmp-" in k]
    srv.reset()
    rep = run_binance(srv, lake)
    assert rep.resumed_from == (want[4499]["T"], want[4499]["a"])
    assert srv.requests(AGG)[0].params["fromId"] == str(want[4500]["a"])
    assert shas(lake, "binance_usdm", "BTCUSDT") == reference["binance"]


def test_unknown_symbol_is_a_user_error(srv, capsys):
    rc = datasets_main(
        [
            "ingest",
            "rest",
            "--exchange",
            "binance_usdm",
            "--symbol",
            "NOPEUSDT",
            "--since",
            "2024-08-08T23:00",
            "--until",
            "2024-08-09",
            "--lake",
            "memory://nope",
            "--api-url",
            srv.url,
            "--rate-limit-ms",
            "0",
            "--quiet",
        ]
    )
    assert rc == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "Error: binance_usdm NOPEUSDT: the exchange does not know this symbol: binanceusdm "
        '{"code": -1121, "msg": "Invalid symbol."}. Check --symbol (e.g. BTCUSDT) and --exchange.'
    )
    assert Lake("memory://nope").store.list("") == []


def test_bad_time_is_a_user_error(capsys):
    rc = datasets_main(
        [
            "ingest",
            "rest",
            "--exchange",
            "okx_swap",
            "--symbol",
            "BTCUSDT",
            "--since",
            "yesterday",
            "--lake",
            "memory://x",
        ]
    )
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        "Error: --since: expected a date or time like 2024-06-30 or 2024-06-30T00:00 (UTC) or epoch "
        "milliseconds; got 'yesterday'"
    )


# ---------------------------------------------------------------------------- OKX
def run_okx(srv, lake, **kw):
    kw = {"page_limit": 10, "window_ms": 2_000, "batch_rows": 20, **FAST, **kw}
    return ingest_rest(
        lake,
        "okx_swap",
        "BTCUSDT",
        parse_time_ms("2022-05-13T16:26:58"),
        parse_time_ms("2022-05-13T16:27:20"),
        api_url=srv.url,
        **kw,
    )


def test_okx_windows_read_backwards_store_every_trade_once_in_base_units(srv):
    import json

    from servers.exchange_rest import REAL_DIR

    lake = Lake("memory://")
    rep = run_okx(srv, lake)
    got = bronze(lake, "okx_swap", "BTCUSDT")
    want = srv.okx_trades["BTC-USDT-SWAP"]
    assert rep.trades == len(got) == len(want) == 69
    assert got["trade_id"].tolist() == [int(r["tradeId"]) for r in want]
    # qty is base units: the recorded BTC sizes come back from contracts of 0.01 BTC.
    real = {}
    for line in (REAL_DIR / "okx_v5_multi_2022-05-13_frames.txt").read_text().splitlines():
        if '"channel":"trades","instId":"BTC-USDT"}' in line and '"data"' in line:
            for x in json.loads(line.split(": ", 1)[1])["data"]:
                real[int(x["tradeId"])] = (float(x["sz"]), 1 if x["side"] == "buy" else -1, float(x["px"]))
    assert np.allclose(got["qty"], [real[i][0] for i in got["trade_id"]], rtol=1e-12, atol=0)
    assert got["side"].tolist() == [real[i][1] for i in got["trade_id"]]
    assert got["price"].tolist() == [real[i][2] for i in got["trade_id"]]
    reqs = srv.requests(OKX_TRADES)
    assert all(int(r.params["limit"]) == 10 for r in reqs)
    by_ts = [r.params for r in reqs if r.params["type"] == "2"]
    assert [int(p["after"]) for p in by_ts] == list(
        range(parse_time_ms("2022-05-13T16:27:00"), parse_time_ms("2022-05-13T16:27:21"), 2000)
    )
    assert any(r.params["type"] == "1" for r in reqs)  # a full window paged on by trade id


def test_okx_rate_limit_and_server_errors_then_give_up_and_resume(srv, reference):
    lake = Lake("memory://")
    srv.inject(OKX_TRADES, okx_429(), at=2)
    srv.inject(OKX_TRADES, http_503(), at=9, times=3)
    with pytest.raises(RestError, match=r"gave up after 2 retries; last answer: okx GET .* 503"):
        run_okx(srv, lake, backoff=Backoff(max_retries=2, base_s=0.01))
    log = srv.requests(OKX_TRADES)
    assert [r.status for r in log] == [200, 429] + [200] * 6 + [503, 503, 503]
    part = bronze(lake, "okx_swap", "BTCUSDT")
    ref = reference["okx_ids"]
    assert 0 < len(part) < len(ref)
    assert part["trade_id"].tolist() == ref[: len(part)]  # a prefix
    srv.reset()
    rep = run_okx(srv, lake)
    assert rep.resumed_from == (int(part["ts_ms"].iloc[-1]), int(part["trade_id"].iloc[-1]))
    assert int(srv.requests(OKX_TRADES)[0].params["after"]) == rep.resumed_from[0] + 2000
    assert shas(lake, "okx_swap", "BTCUSDT") == reference["okx"]


# ---------------------------------------------------------------------------- Bybit
def test_bybit_recent_trades_use_archive_ids_and_report_what_rest_cannot_serve(srv, capsys):
    from datasets.sources.bybit_archive import bybit_trade_ids

    want = srv.bybit_trades["SOLUSDT"]
    since = parse_time_ms("2026-08-09T21:00")
    until = parse_time_ms("2026-08-10")
    lake = Lake("memory://")
    # The server's clock stops mid-recording: a first run sees the trades up to then.
    srv.now_ms = int(want[100]["time"])
    first = ingest_rest(lake, "bybit_linear", "SOLUSDT", since, until, api_url=srv.url, **FAST)
    seen = [r for r in want if int(r["time"]) <= srv.now_ms]
    assert first.trades == len(seen) and first.gaps == []
    # Later, with a page of 50, Bybit's 'latest N trades' no longer reaches back to the stored ones.
    srv.now_ms = None
    second = ingest_rest(lake, "bybit_linear", "SOLUSDT", since, until, api_url=srv.url, page_limit=50, **FAST)
    assert second.resumed_from[0] == int(seen[-1]["time"])
    assert len(second.gaps) == 1 and "serves only the latest 50 trades" in second.gaps[0]
    assert "datasets ingest bybit-archive" in capsys.readouterr().err
    srv.reset()
    third = ingest_rest(lake, "bybit_linear", "SOLUSDT", since, until, api_url=srv.url, **FAST)
    assert third.gaps == []
    got = bronze(lake, "bybit_linear", "SOLUSDT")
    assert len(got) == len(want) == 165 and got["trade_id"].is_unique
    assert sorted(got["trade_id"]) == sorted(bybit_trade_ids([r["execId"] for r in want]).tolist())
    row = got.set_index("trade_id").loc[int(bybit_trade_ids([want[0]["execId"]])[0])]
    assert (row["ts_ms"], row["price"], row["qty"], row["side"]) == (
        int(want[0]["time"]),
        float(want[0]["price"]),
        float(want[0]["size"]),
        1 if want[0]["side"] == "Buy" else -1,
    )


def test_bybit_10006_waits_until_the_limit_resets(srv):
    srv.inject(BYBIT_TRADES, bybit_10006(reset_in_ms=600))
    lake = Lake("memory://")
    rep = ingest_rest(
        lake,
        "bybit_linear",
        "BTCUSDT",
        parse_time_ms("2026-08-09"),
        parse_time_ms("2026-08-10"),
        api_url=srv.url,
        backoff=Backoff(base_s=30),
        **FAST,
    )
    log = srv.requests(BYBIT_TRADES)
    assert [r.status for r in log] == [200, 200] and rep.retries == 1
    assert 0.3 <= log[1].t - log[0].t < 5 and rep.trades == 56


# ---------------------------------------------------------------------------- helpers
def test_resume_point_stops_at_the_first_missing_day():
    lake = Lake("memory://")
    day = 86_400_000
    t0 = parse_time_ms("2024-01-01")
    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "BTCUSDT",
            "trade_id": [1, 2, 3, 9],
            "ts_ms": [t0 + 5, t0 + day + 5, t0 + day + 9, t0 + 3 * day],
            "price": 1.0,
            "qty": 1.0,
            "side": 1,
        }
    )
    lake.write_trades(df)
    assert resume_point(lake, "binance_usdm", "BTCUSDT", t0, t0 + 5 * day) == (t0 + day + 9, 3)  # day 3 missing
    assert resume_point(lake, "binance_usdm", "BTCUSDT", t0, t0 + day + 9) == (t0 + day + 5, 2)  # until exclusive
    # since's day is stored (its one trade is before since): the run of stored days still counts.
    assert resume_point(lake, "binance_usdm", "BTCUSDT", t0 + 6, t0 + 5 * day) == (t0 + day + 9, 3)
    assert resume_point(lake, "binance_usdm", "BTCUSDT", t0 + 2 * day, t0 + 5 * day) is None


def test_small_helpers():
    assert parse_time_ms("2024-06-30T00:00") == parse_time_ms("2024-06-30") == 1719705600000
    assert parse_time_ms("2024-06-30T02:00+02:00") == 1719705600000
    assert parse_time_ms("1719705600000") == 1719705600000
    assert okx_inst_id("BTCUSDT") == okx_inst_id("btc-usdt") == okx_inst_id("BTC-USDT-SWAP") == "BTC-USDT-SWAP"
    assert okx_inst_id("ETHUSDC") == "ETH-USDC-SWAP" and okx_inst_id("BTCUSD") == "BTC-USD-SWAP"
    with pytest.raises(ValueError, match="give the OKX instrument id"):
        okx_inst_id("BTCEUR")
    client = make_client("bybit_linear", api_url="http://127.0.0.1:9/x/")
    assert set(client.urls["api"].values()) == {"http://127.0.0.1:9/x"}
    client = make_client("binance_usdm")
    point_client_at(client, "http://h:1")
    assert client.urls["api"]["fapiPublic"] == "http://h:1/fapi/v1"
    with pytest.raises(ValueError, match="expected one of binance_usdm, bybit_linear, okx_swap"):
        make_client("kraken")


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        datasets_main(["ingest", "rest", "--help"])
    assert "Example:\n  datasets ingest rest --exchange binance_usdm" in capsys.readouterr().out
