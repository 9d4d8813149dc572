"""Exchange adapters on the real recorded frames of each exchange (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets.sources.frames import FrameError, Trade
from datasets.sources.recordings import iter_frames, recording_trades
from live.adapters import BinanceAdapter, BybitAdapter, OkxAdapter, make_adapter, okx_inst_id

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BINANCE_MULTI = REAL / "binance_usdm_multi_2021-07-22_frames.txt"
BYBIT = REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
OKX = REAL / "okx_v5_multi_2022-05-13_frames.txt"


def _recv(path: Path, url_part: str = "") -> list[str]:
    return [f.text for f in iter_frames(path) if f.direction == "recv" and url_part in (f.url or "")]


def _rows(adapter, texts) -> list[Trade]:
    out = []
    for t in texts:
        out += adapter.parse(t)
    return out


def test_binance_combined_url_and_raw_subscribe():
    a = BinanceAdapter()
    url = a.ws_url(["BTCUSDT", "ETHUSDT"])
    assert url == "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    assert a.subscribe_messages(["BTCUSDT"], url) == []
    local = a.ws_url(["BTCUSDT"], "ws://127.0.0.1:9001/stream")
    assert local == "ws://127.0.0.1:9001/stream?streams=btcusdt@aggTrade"
    raw = "ws://127.0.0.1:9001/ws"
    assert a.ws_url(["BTCUSDT"], raw) == raw
    assert json.loads(a.subscribe_messages(["BTCUSDT"], raw)[0]) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@aggTrade"],
        "id": 1,
    }
    t = BinanceAdapter(stream="trade")
    assert t.merge_fills and t.ws_url(["BTCUSDT"]).endswith("streams=btcusdt@trade")
    assert a.contiguous_ids and a.max_connection_s < 24 * 3600
    with pytest.raises(ValueError, match="must be 'aggTrade' or 'trade'"):
        BinanceAdapter(stream="depth")


def test_binance_adapter_on_real_aggtrade_frames_equals_bronze():
    rows = _rows(BinanceAdapter(), _recv(BINANCE_MULTI))
    assert len(rows) == 91
    got = sorted(rows, key=lambda r: (r.ts_ms, r.trade_id))
    want = recording_trades(BINANCE_MULTI)
    assert [r.trade_id for r in got] == want.trade_id.tolist()
    assert [r.side for r in got] == want.side.tolist()


def test_bybit_subscribe_ping_and_real_frames():
    a = BybitAdapter()
    syms = [f"S{i}USDT" for i in range(12)]
    msgs = [json.loads(m) for m in a.subscribe_messages(syms, a.default_ws_url)]
    assert [len(m["args"]) for m in msgs] == [10, 2] and msgs[0]["op"] == "subscribe"
    assert msgs[0]["args"][0] == "publicTrade.S0USDT"
    assert json.loads(a.app_ping_text) == {"op": "ping"} and a.app_ping_interval_s == 20
    rows = _rows(a, _recv(BYBIT, "/linear"))
    assert len(rows) == 327 and {r.exchange for r in rows} == {"bybit_linear"}
    assert a.control('{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}').startswith("ack")
    assert a.control('{"success":false,"ret_msg":"bad topic","op":"subscribe"}').startswith("error")


def test_okx_subscribe_ping_and_real_frames():
    a = OkxAdapter()
    assert okx_inst_id("BTCUSDT") == "BTC-USDT-SWAP" and okx_inst_id("UNIUSD") == "UNI-USD-SWAP"
    msg = json.loads(a.subscribe_messages(["BTCUSDT", "UNIUSD"], a.default_ws_url)[0])
    assert msg == {
        "op": "subscribe",
        "args": [{"channel": "trades", "instId": "BTC-USDT-SWAP"}, {"channel": "trades", "instId": "UNI-USD-SWAP"}],
    }
    assert a.app_ping_text == "ping" and a.app_ping_interval_s < 30
    rows = _rows(a, _recv(OKX))
    # the recording's spot (69) and dated-futures (4) trades are not swaps: only UNI-USD-SWAP's one
    assert rows == [Trade("okx_swap", "UNIUSD", 12883020, 1652459215150, 5.123, 100 * 10 / 5.123, -1)]
    assert a.control("pong") == "pong"
    with pytest.raises(ValueError, match="ending in USDT, USDC or USD"):
        okx_inst_id("BTCEUR")


def test_okx_unknown_contract_is_caught_before_connecting():
    from datasets.sources.frames import UnknownContractError

    with pytest.raises(UnknownContractError, match="PEPE-USDT-SWAP"):
        OkxAdapter().check_symbols(["BTCUSDT", "PEPEUSDT"])
    OkxAdapter(contract_values={"PEPE-USDT-SWAP": 10_000_000}).check_symbols(["PEPEUSDT"])


@pytest.mark.parametrize("exchange", ["binance_usdm", "bybit_linear", "okx_swap"])
def test_garbage_raises_frame_error(exchange):
    a = make_adapter(exchange)
    for g in ("\x00\x01 this is not JSON", "[1, 2, 3]", '{"stream":"btcusdt@aggTrade","data":{"e":"aggTr'):
        with pytest.raises(FrameError):
            a.parse(g)


def test_make_adapter_rejects_unknown_exchange():
    with pytest.raises(ValueError, match=r"unknown exchange 'kraken'; expected one of \['binance_usdm'"):
        make_adapter("kraken")


@pytest.mark.parametrize(
    "exchange,parse", [("binance_usdm", "parse_binance"), ("bybit_linear", "parse_bybit"), ("okx_swap", "parse_okx")]
)
def test_fast_decoding_reads_and_refuses_as_the_parsers_do(exchange, parse):
    """Adapters decode with orjson; what orjson refuses goes to the parser as text, so rows and
    errors are the parser's own, also for what only `json` reads (NaN, integers beyond 64 bits)."""
    from datasets.sources import frames

    a = make_adapter(exchange)
    kw = {"binance_usdm": {}, "bybit_linear": {"exchange": "bybit_linear"}, "okx_swap": {"exchanges": ("okx_swap",)}}
    parser = getattr(frames, parse)
    big = (
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":%d,"p":"1.5","q":"2",'
        '"f":1,"l":1,"T":1627000000000,"m":true}}' % 2**70
    )
    texts = [
        "\x00\x01 this is not JSON",
        "[1, 2, 3]",
        '"just a string"',
        '{"stream":"x","data":NaN}',
        big,
        b'{"truncated": ',
        "pong",
        *(_recv({"binance_usdm": BINANCE_MULTI, "bybit_linear": BYBIT, "okx_swap": OKX}[exchange])[:40]),
    ]
    for t in texts:
        try:
            want = parser(t, **kw[exchange])
        except FrameError as exc:
            with pytest.raises(FrameError) as got:
                a.parse(t)
            assert str(got.value) == str(exc)
        else:
            assert a.parse(t) == want
    assert BinanceAdapter().parse(big)[0].trade_id == 2**70
