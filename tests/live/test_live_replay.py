"""The replay server speaks each exchange's paths, handshake, keep-alive and REST (real sockets)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from datasets.sources.recordings import RecordingFormatError, iter_frames
from live.replay import FaultPlan, ReplayServer, load_tape

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BTC = REAL / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
BINANCE_MULTI = REAL / "binance_usdm_multi_2021-07-22_frames.txt"
BYBIT = REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
OKX = REAL / "okx_v5_multi_2022-05-13_frames.txt"


@pytest.fixture(scope="module")
def multi_tape():
    return load_tape(BINANCE_MULTI)


def test_tapes_keep_data_frames_and_their_routing_keys():
    keys = load_tape(BINANCE_MULTI).keys()
    assert keys["ctkusdt@aggtrade"] == 38 and keys["sushiusdt@bookticker"] > 0
    by = load_tape(BYBIT)
    assert by.family == "bybit" and by.keys()["linear|publicTrade.SOLUSDT"] == 57
    assert "spot|publicTrade.BTCUSDT" in by.keys()
    ok = load_tape(OKX)
    assert ok.family == "okx" and ok.keys()["trades|UNI-USD-SWAP"] == 1  # acks and pongs left out


def test_non_recordings_are_refused(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("just text\n")
    with pytest.raises(RecordingFormatError, match="not a recording layout"):
        load_tape(p)


async def _recv_n(ws, n: int, timeout: float = 10.0) -> list[str]:
    return [await asyncio.wait_for(ws.recv(), timeout) for _ in range(n)]


def test_binance_combined_stream_sends_recorded_frames_byte_for_byte(multi_tape):
    want = [
        f.text
        for f in iter_frames(BINANCE_MULTI)
        if f.direction == "recv" and ('"ctkusdt@aggTrade"' in f.text or '"akrousdt@aggTrade"' in f.text)
    ]

    async def main():
        server = await ReplayServer(multi_tape).start()
        try:
            async with connect(server.url + "/stream?streams=ctkusdt@aggTrade/akrousdt@aggTrade") as ws:
                got = await _recv_n(ws, len(want))
                with pytest.raises(ConnectionClosed) as e:
                    await asyncio.wait_for(ws.recv(), 10)
                assert e.value.rcvd.code == 1000 and e.value.rcvd.reason == "end of recording"
        finally:
            await server.stop()
        return got

    assert asyncio.run(main()) == want and len(want) == 46


def test_binance_raw_ws_subscribe_list_and_unknown_method(multi_tape):
    async def main():
        server = await ReplayServer(multi_tape, speed=1000).start()
        try:
            async with connect(server.url + "/ws") as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["sushiusdt@aggTrade"], "id": 7}))
                assert json.loads(await ws.recv()) == {"result": None, "id": 7}
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                await ws.send(json.dumps({"method": "NOPE", "id": 9}))
                msgs = [json.loads(m) for m in await _recv_n(ws, 6)]
        finally:
            await server.stop()
        return msgs

    msgs = asyncio.run(main())
    assert {"result": ["sushiusdt@aggtrade"], "id": 8} in msgs
    assert any(m.get("code") == 2 and m.get("id") == 9 for m in msgs)
    trades = [m for m in msgs if m.get("e") == "aggTrade"]
    assert trades and all(m["s"] == "SUSHIUSDT" and "stream" not in m for m in trades)  # raw frames


def test_bybit_subscribe_ack_ping_pong_and_topic_filter():
    async def main():
        server = await ReplayServer(load_tape(BYBIT)).start()
        try:
            async with connect(server.url + "/v5/public/linear") as ws:
                await ws.send(json.dumps({"op": "ping", "req_id": "p1"}))
                pong = json.loads(await ws.recv())
                await ws.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": "s1"}))
                ack = json.loads(await ws.recv())
                frames = [json.loads(m) for m in await _recv_n(ws, 5)]
        finally:
            await server.stop()
        return pong, ack, frames

    pong, ack, frames = asyncio.run(main())
    assert pong["op"] == "ping" and pong["ret_msg"] == "pong" and pong["success"] is True
    assert ack == {"success": True, "ret_msg": "", "conn_id": "replay-1", "req_id": "s1", "op": "subscribe"}
    assert {f["topic"] for f in frames} == {"publicTrade.BTCUSDT"}
    assert frames[0]["data"][0]["i"] == "a9188a0a-82bc-50de-be60-03eedbe3cdd7"  # linear, not the spot one


def test_okx_subscribe_events_and_text_ping():
    async def main():
        server = await ReplayServer(load_tape(OKX)).start()
        try:
            async with connect(server.url + "/ws/v5/public") as ws:
                await ws.send("ping")
                pong = await ws.recv()
                arg = {"channel": "trades", "instId": "UNI-USD-SWAP"}
                await ws.send(json.dumps({"op": "subscribe", "args": [arg]}))
                ack = json.loads(await ws.recv())
                frame = json.loads(await ws.recv())
        finally:
            await server.stop()
        return pong, ack, frame

    pong, ack, frame = asyncio.run(main())
    assert pong == "pong"
    assert ack == {"event": "subscribe", "arg": {"channel": "trades", "instId": "UNI-USD-SWAP"}, "connId": "replay-1"}
    assert frame["data"][0]["tradeId"] == "12883020"


def test_wrong_path_is_closed_with_the_paths_that_exist():
    async def main():
        server = await ReplayServer(load_tape(BYBIT)).start()
        try:
            async with connect(server.url + "/stream?streams=btcusdt@trade") as ws:
                with pytest.raises(ConnectionClosed) as e:
                    await ws.recv()
        finally:
            await server.stop()
        return e.value.rcvd

    rcvd = asyncio.run(main())
    assert rcvd.code == 1008 and rcvd.reason == "path '/stream' not served; this bybit replay serves /v5/public/linear"


def test_rest_serves_only_what_has_been_played(multi_tape):
    async def main():
        server = await ReplayServer(multi_tape).start()
        base = f"http://127.0.0.1:{server.port}"
        out = {}
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/fapi/v1/aggTrades", params={"symbol": "CTKUSDT", "fromId": "0"}) as r:
                    out["before"] = (r.status, await r.json())
                async with connect(server.url + "/stream?streams=ctkusdt@aggTrade") as ws:
                    await _recv_n(ws, 38)
                async with s.get(
                    base + "/fapi/v1/aggTrades", params={"symbol": "CTKUSDT", "fromId": "16599300", "limit": "5"}
                ) as r:
                    out["page"] = await r.json()
                async with s.get(base + "/fapi/v1/aggTrades", params={"fromId": "1"}) as r:
                    out["nosym"] = (r.status, await r.json())
                async with s.get(base + "/fapi/v1/klines", params={"symbol": "CTKUSDT"}) as r:
                    out["404"] = r.status
        finally:
            await server.stop()
        return out

    out = asyncio.run(main())
    assert out["before"] == (200, [])
    assert [r["a"] for r in out["page"]] == [16599300, 16599301, 16599302, 16599303, 16599304]
    assert set(out["page"][0]) == {"a", "p", "q", "f", "l", "T", "m"}
    assert out["nosym"] == (400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."})
    assert out["404"] == 404


def test_recorded_pace_times_speed():
    tape = load_tape(BYBIT)
    frames = [f for f in tape.frames if f.key == "linear|publicTrade.ETHUSDT"]
    span_s = (frames[-1].recv_ns - frames[0].recv_ns) / 1e9
    speed = 40.0

    async def main():
        server = await ReplayServer(tape, speed=speed).start()
        try:
            async with connect(server.url + "/v5/public/linear") as ws:
                await ws.send(json.dumps({"op": "subscribe", "args": ["publicTrade.ETHUSDT"]}))
                await ws.recv()
                await ws.recv()
                t0 = time.perf_counter()
                await _recv_n(ws, len(frames) - 1, timeout=30)
                return time.perf_counter() - t0
        finally:
            await server.stop()

    elapsed = asyncio.run(main())
    assert span_s / speed * 0.9 <= elapsed <= span_s / speed + 5.0


def test_faults_drop_lose_repeat_and_garbage(multi_tape):
    async def main():
        server = await ReplayServer(
            multi_tape, faults=FaultPlan(drop_after=10, lose=2, repeat=1, garbage_every=7)
        ).start()
        received: list[list[str]] = []
        try:
            for _ in range(2):
                got = []
                async with connect(server.url + "/stream?streams=ctkusdt@aggTrade") as ws:
                    try:
                        while True:
                            got.append(await asyncio.wait_for(ws.recv(), 10))
                    except ConnectionClosed:
                        pass
                received.append(got)
        finally:
            await server.stop()
        return received, server

    (first, second), server = asyncio.run(main())
    ids = lambda msgs: [json.loads(m)["data"]["a"] for m in msgs if m.startswith('{"stream"')]  # noqa: E731
    garbage = [m for m in first + second if not m.startswith('{"stream"') or not m.endswith("}")]
    assert len(ids(first)) == 10 and garbage
    a1, a2 = ids(first), ids(second)
    # 2 lost, then 1 repeated: the second connection starts 1 past the first's last id
    assert a2[0] == a1[-1] + 2
    assert server.connections == 2
