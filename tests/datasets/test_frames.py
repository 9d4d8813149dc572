"""Frame parsers and recording readers on the real recorded exchange traffic in tests/data/real."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.cli import main as datasets_main
from datasets.lake import Lake
from datasets.schema import BRONZE_COLUMNS
from datasets.sources.frames import (
    BinanceTradeMerger,
    FrameError,
    Trade,
    UnknownContractError,
    okx_contract_value,
    parse_binance,
    parse_bybit,
    parse_okx,
)
from datasets.sources.recordings import (
    RecordingFormatError,
    detect_format,
    exchange_for_url,
    iter_frames,
    recording_trades,
)

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BTC = REAL / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
BINANCE_MULTI = REAL / "binance_usdm_multi_2021-07-22_frames.txt"
BYBIT = REAL / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
OKX = REAL / "okx_v5_multi_2022-05-13_frames.txt"

# (rows, taker buys, first id, last id, first ts_ms, last ts_ms, sum qty) per (exchange, symbol),
# read off the recordings in tests/data/real (their origin: tests/data/real/LICENSES.md).
GOLDEN = {
    ("binance_usdm", "AKROUSDT"): (8, 3, 14888302, 14888309, 1626992742134, 1626992769315, 154408.0),
    ("binance_usdm", "CTKUSDT"): (38, 29, 16599292, 16599329, 1626992741421, 1626992770366, 16983.0),
    ("binance_usdm", "KEEPUSDT"): (5, 3, 1211537, 1211541, 1626992756696, 1626992767937, 4165.0),
    ("binance_usdm", "SUSHIUSDT"): (40, 12, 87353230, 87353269, 1626992744108, 1626992767990, 2212.0),
    ("bybit_linear", "BTCUSDT"): (56, 6, 6092320284799281263, 1855571801069365425, 1786310819680, 1786310859455, 7.039),
    ("bybit_linear", "DOGEUSDT"): (
        83,
        76,
        1058817823235090439,
        6423886982969567827,
        1786310823790,
        1786310861416,
        446624.0,
    ),
    ("bybit_linear", "ETHUSDT"): (23, 17, 931101266363820360, 9069188125087214088, 1786310820346, 1786310853063, 11.67),
    ("bybit_linear", "SOLUSDT"): (
        165,
        13,
        2703313583826284468,
        9221396970779815083,
        1786310821322,
        1786310860132,
        5697.4,
    ),
    ("bybit_spot", "BTCUSDT"): (
        11,
        5,
        2290000001189048101,
        2290000001189048111,
        1786310822605,
        1786310861700,
        0.013138,
    ),
    ("bybit_spot", "ETHUSDT"): (9, 3, 2280000001739247417, 2280000001739247461, 1786310821917, 1786310860447, 1.68421),
    ("okx_swap", "UNIUSD"): (1, 0, 12883020, 12883020, 1652459215150, 1652459215150, 195.198126),
    ("okx_spot", "BTCUSDT"): (69, 44, 338476307, 338476375, 1652459224818, 1652459235576, 3.486575),
    ("binance_usdm", "BTCUSDT"): (10447, 4834, 5266583935, 5266605247, 1723161256322, 1723161599643, 2429.366),
}


def _summary(df: pd.DataFrame) -> dict:
    out = {}
    for (ex, sym), g in df.groupby(["exchange", "symbol"]):
        out[(ex, sym)] = (
            len(g),
            int((g.side > 0).sum()),
            int(g.trade_id.iloc[0]),
            int(g.trade_id.iloc[-1]),
            int(g.ts_ms.iloc[0]),
            int(g.ts_ms.iloc[-1]),
            round(float(g.qty.sum()), 6),
        )
    return out


def _golden(*keys):
    return {k: GOLDEN[k] for k in keys}


@pytest.fixture(scope="module")
def btc_raw_fills() -> list[tuple[int, Trade]]:
    """(frame number, raw fill) of every @trade frame of the BTCUSDT recording, in file order."""
    out = []
    with gzip.open(BTC, "rt") as fh:
        for n, line in enumerate(fh):
            text = line.partition(" ")[2]
            for row in parse_binance(text):
                out.append((n, row))
    return out


# ---------------------------------------------------------------- recordings → bronze
def test_formats_are_detected():
    assert detect_format(BTC) == "hftbacktest"
    assert detect_format(BINANCE_MULTI) == "cryptofeed"
    assert detect_format(OKX) == "cryptofeed"
    assert detect_format(BYBIT) == "cryptofeed-jsonl"


def test_unknown_format_error_names_the_formats(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello world\n")
    with pytest.raises(RecordingFormatError) as e:
        list(iter_frames(bad))
    msg = str(e.value)
    assert "notes.txt: not a recording layout" in msg and "'hello world'" in msg
    for name in ("hftbacktest", "cryptofeed", "cryptofeed-jsonl"):
        assert name + ":" in msg


def test_truncated_line_names_its_line_number(tmp_path):
    p = tmp_path / "cut.txt"
    p.write_text(BINANCE_MULTI.read_text().splitlines()[0] + "\n1626992741.06: {}\nGARBAGE LINE\n")
    with pytest.raises(RecordingFormatError, match=r"cut.txt line 3: does not fit the cryptofeed layout"):
        list(iter_frames(p))


def test_iter_frames_directions_urls_and_exact_times():
    frames = list(iter_frames(OKX))
    assert frames[0].direction == "connect" and frames[0].url == "wss://ws.okx.com:8443/ws/v5/public"
    assert frames[0].recv_ns == 1652459224530060500
    assert [f.direction for f in frames[1:4]] == ["send"] * 3
    assert json.loads(frames[1].text)["op"] == "subscribe"
    assert sum(f.direction == "recv" for f in frames) == 410
    by = list(iter_frames(BYBIT))
    urls = {f.url for f in by if f.direction == "recv"}
    assert urls == {"wss://stream.bybit.com/v5/public/linear", "wss://stream.bybit.com/v5/public/spot"}
    assert sum(f.direction == "send" for f in by) == 24
    hft = iter_frames(BTC)
    first = next(hft)
    assert first == (1723161255030314667, "recv", None, first.text) and first.text.startswith('{"stream"')


def test_binance_aggtrades_91_and_golden_rows():
    df = recording_trades(BINANCE_MULTI)
    assert len(df) == 91
    assert _summary(df) == _golden(*[k for k in GOLDEN if k[0] == "binance_usdm" and k[1] != "BTCUSDT"])
    assert list(df.columns) == list(BRONZE_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items() if c not in ("exchange", "symbol")} == {
        c: t for c, t in BRONZE_COLUMNS.items() if c not in ("exchange", "symbol")
    }
    row = df[df.trade_id == 14888302].iloc[0]  # akrousdt: "p":"0.01731","q":"312","m":true
    assert (row.symbol, row.ts_ms, row.price, row.qty, row.side) == ("AKROUSDT", 1626992742134, 0.01731, 312.0, -1)


def test_bybit_linear_327_trades_and_spot_kept_out_by_default():
    df = recording_trades(BYBIT)
    assert len(df) == 327
    assert set(df.exchange) == {"bybit_linear"}
    assert _summary(df) == _golden(*[k for k in GOLDEN if k[0] == "bybit_linear"])
    spot = recording_trades(BYBIT, exchange="bybit_spot")
    assert _summary(spot) == _golden(("bybit_spot", "BTCUSDT"), ("bybit_spot", "ETHUSDT"))
    # ids come from the trades' UUIDs (the archive's rule): unique, and rows are in (ts_ms, id) order
    for _, g in df.groupby("symbol"):
        assert g.trade_id.is_unique
        assert list(zip(g.ts_ms, g.trade_id)) == sorted(zip(g.ts_ms, g.trade_id))


def test_okx_swap_only_by_default_with_contract_conversion():
    df = recording_trades(OKX)
    assert _summary(df) == _golden(("okx_swap", "UNIUSD"))
    # UNI-USD-SWAP is coin-margined: 100 contracts of 10 USD at 5.123 USD
    assert df.qty.iloc[0] == pytest.approx(100 * 10 / 5.123, rel=1e-15)
    assert _summary(recording_trades(OKX, exchange="okx_spot")) == _golden(("okx_spot", "BTCUSDT"))
    fut = recording_trades(OKX, exchange="okx_futures")
    assert len(fut) == 4 and set(fut.symbol) == {"BTCUSD220527"}


def test_btcusdt_stream_merges_21313_fills_into_10447_rows(btc_raw_fills):
    assert len(btc_raw_fills) == 21313
    df = recording_trades(BTC)
    assert _summary(df) == _golden(("binance_usdm", "BTCUSDT"))
    raw_qty = sum(r.qty for _, r in btc_raw_fills)
    assert df.qty.sum() == pytest.approx(raw_qty, rel=1e-12)


def test_symbol_filter_accepts_any_spelling():
    df = recording_trades(BYBIT, symbols=["btc-usdt", "ethusdt"])
    assert sorted(set(df.symbol)) == ["BTCUSDT", "ETHUSDT"] and len(df) == 56 + 23


def test_exchange_for_url():
    assert exchange_for_url("wss://fstream.binance.com/stream?streams=a@aggTrade") == "binance_usdm"
    assert exchange_for_url("wss://stream.binance.com:9443/ws") == "binance_spot"
    assert exchange_for_url("wss://stream.bybit.com/v5/public/linear") == "bybit_linear"
    assert exchange_for_url("wss://stream.bybit.com/v5/public/spot") == "bybit_spot"
    assert exchange_for_url("wss://ws.okx.com:8443/ws/v5/public") == "okx"
    assert exchange_for_url("ws://127.0.0.1:9001/stream") is None


# ---------------------------------------------------------------- @trade merge
def _merge_reference(fills: list[Trade]) -> list[Trade]:
    """Slow pandas reference: runs of consecutive fills with equal (T, p, m)."""
    df = pd.DataFrame(fills, columns=list(Trade._fields))
    key = df[["ts_ms", "price", "side"]]
    run = (key != key.shift()).any(axis=1).cumsum()
    g = df.groupby(run, sort=False)
    out = pd.DataFrame(
        {
            "trade_id": g.trade_id.first(),
            "ts_ms": g.ts_ms.first(),
            "price": g.price.first(),
            "qty": g.qty.sum(),
            "side": g.side.first(),
        }
    )
    return [
        Trade("binance_usdm", "BTCUSDT", int(r.trade_id), int(r.ts_ms), float(r.price), float(r.qty), int(r.side))
        for r in out.itertuples()
    ]


def test_merge_frame_by_frame_equals_batch_reference(btc_raw_fills):
    merger = BinanceTradeMerger()
    incremental: list[Trade] = []
    with gzip.open(BTC, "rt") as fh:
        for line in fh:
            incremental += parse_binance(line.partition(" ")[2], merger)
    incremental += merger.flush()
    ref = _merge_reference([r for _, r in btc_raw_fills])
    assert len(incremental) == len(ref) == 10447
    a = pd.DataFrame(incremental)
    b = pd.DataFrame(ref)
    pd.testing.assert_frame_equal(a[["trade_id", "ts_ms", "price", "side"]], b[["trade_id", "ts_ms", "price", "side"]])
    np.testing.assert_allclose(a.qty, b.qty, rtol=1e-12)
    # the merged row keeps its first fill's id, so ids stay increasing
    assert a.trade_id.is_monotonic_increasing and a.trade_id.is_unique


def test_merge_is_independent_of_how_fills_are_chunked(btc_raw_fills):
    fills = [r for _, r in btc_raw_fills[:4000]]
    whole_m = BinanceTradeMerger()
    whole = whole_m.push_many(fills) + whole_m.flush()

    @settings(max_examples=40, deadline=None)
    @given(cuts=st.lists(st.integers(min_value=0, max_value=len(fills)), max_size=40))
    def check(cuts):
        m = BinanceTradeMerger()
        pieces: list[Trade] = []
        lo = 0
        for hi in sorted(set(cuts)) + [len(fills)]:
            pieces += m.push_many(fills[lo:hi])
            lo = hi
        assert pieces + m.flush() == whole

    check()


def test_merger_drops_replayed_fills_and_keeps_symbols_apart():
    m = BinanceTradeMerger()
    a = Trade("binance_usdm", "BTCUSDT", 10, 1000, 100.0, 1.0, 1)
    b = Trade("binance_usdm", "BTCUSDT", 11, 1000, 100.0, 2.0, 1)
    e = Trade("binance_usdm", "ETHUSDT", 50, 1000, 100.0, 5.0, 1)
    c = Trade("binance_usdm", "BTCUSDT", 12, 1001, 100.0, 1.0, 1)
    assert m.push(a) == [] and m.push(e) == [] and m.push(b) == [] and m.push(b) == [] and m.push(a) == []
    assert m.push(c) == [Trade("binance_usdm", "BTCUSDT", 10, 1000, 100.0, 3.0, 1)]
    assert m.last_raw_id("binance_usdm", "BTCUSDT") == 12
    assert m.flush("ETHUSDT") == [e] and m.pending() == 1
    assert m.flush() == [c] and m.pending() == 0


def test_non_market_fills_are_not_trades():
    fr = {
        "stream": "btcusdt@trade",
        "data": {
            "e": "trade",
            "E": 1,
            "T": 1,
            "s": "BTCUSDT",
            "t": 7,
            "p": "1",
            "q": "2",
            "X": "INSURANCE_FUND",
            "m": False,
        },
    }
    assert parse_binance(fr) == []


# ---------------------------------------------------------------- non-trade and malformed frames
def _first_recv(path: Path, needle: str) -> str:
    return next(f.text for f in iter_frames(path) if f.direction == "recv" and needle in f.text)


@pytest.mark.parametrize(
    "path,needle,parser",
    [
        (BINANCE_MULTI, "@bookTicker", parse_binance),
        (BINANCE_MULTI, "@depth@100ms", parse_binance),
        (BINANCE_MULTI, "@kline_1m", parse_binance),
        (BTC, '"lastUpdateId"', parse_binance),  # REST depth snapshot without a stream key
        (BYBIT, '"op":"subscribe"', parse_bybit),
        (BYBIT, "orderbook.200.", parse_bybit),
        (BYBIT, '"topic":"tickers.', parse_bybit),
        (OKX, '"event":"subscribe"', parse_okx),
        (OKX, '"channel":"books"', parse_okx),
    ],
)
def test_real_non_trade_frames_give_no_rows(path, needle, parser):
    assert parser(_first_recv(path, needle)) == []


def test_pongs_give_no_rows():
    assert parse_okx("pong") == []
    assert parse_bybit('{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}') == []
    assert parse_binance('{"result":null,"id":1}') == []


@pytest.mark.parametrize(
    "parser,frame,match",
    [
        (parse_binance, "not json", r"binance_usdm: expected a JSON frame; got 'not json'"),
        (parse_binance, "[1, 2]", r"binance_usdm: expected a JSON object"),
        (
            parse_binance,
            '{"stream":"x@aggTrade","data":{"e":"aggTrade","s":"XUSDT","a":1,"T":2,"p":"1"}}',
            r"aggTrade needs s, a, T, p, q, m.*KeyError: 'q'",
        ),
        (
            parse_binance,
            '{"stream":"x@aggTrade","data":{"e":"aggTrade","s":"X","a":1,"T":2,"p":"one","q":"1","m":true}}',
            r"could not convert string to float",
        ),
        (
            parse_binance,
            '{"stream":"x@trade","data":{"e":"trade","s":"X","t":1,"T":2,"p":"1","q":"1","m":"no"}}',
            r"expected true/false",
        ),
        (parse_bybit, '{"topic":"publicTrade.BTCUSDT","data":{"T":1}}', r"publicTrade needs a 'data' list"),
        (
            parse_bybit,
            '{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"BTCUSDT","S":"Hold","v":"1","p":"1","seq":1}]}',
            r"side S must be Buy or Sell",
        ),
        (
            parse_okx,
            '{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP"}]}',
            r"trades rows need instId, tradeId, px, sz, side, ts",
        ),
        (parse_okx, b"\xff\xfe", r"okx: expected a UTF-8 JSON frame"),
    ],
)
def test_malformed_frames_raise_frame_error(parser, frame, match):
    with pytest.raises(FrameError, match=match):
        parser(frame)


def test_bybit_ids_follow_the_archive_rule_and_frames_are_time_id_ordered():
    """WebSocket and archive number a Bybit trade alike (UUID top 63 bits), so they dedupe in the lake."""
    from datasets.sources.bybit_archive import bybit_trade_ids

    multi = [
        f.text
        for f in iter_frames(BYBIT)
        if f.direction == "recv" and "publicTrade." in f.text and len(json.loads(f.text).get("data", [])) > 1
    ]
    assert multi
    for text in multi:
        rows = parse_bybit(text)
        raw = json.loads(text)["data"]
        assert sorted(r.trade_id for r in rows) == sorted(bybit_trade_ids([t["i"] for t in raw]).tolist())
        assert [(r.ts_ms, r.trade_id) for r in rows] == sorted((r.ts_ms, r.trade_id) for r in rows)
        assert parse_bybit(text) == rows
    uuid_only = (
        '{"topic":"publicTrade.BTCUSDT","data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"1","p":"2",'
        '"i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7"}]}'
    )
    (r,) = parse_bybit(uuid_only)
    assert r.trade_id == 0xA9188A0A82BC50DEBE6003EEDBE3CDD7 >> 65 and 0 < r.trade_id < 2**63


def test_okx_unknown_linear_contract_says_how_to_fix():
    fr = {
        "arg": {"channel": "trades", "instId": "PEPE-USDT-SWAP"},
        "data": [{"instId": "PEPE-USDT-SWAP", "tradeId": "5", "px": "0.00001", "sz": "3", "side": "buy", "ts": "9"}],
    }
    with pytest.raises(UnknownContractError, match=r"contract_values=\{'PEPE-USDT-SWAP'"):
        parse_okx(fr)
    (row,) = parse_okx(fr, contract_values={"PEPE-USDT-SWAP": 10_000_000})
    assert row == Trade("okx_swap", "PEPEUSDT", 5, 9, 0.00001, 30_000_000.0, 1)
    assert okx_contract_value("BTC-USDT-SWAP") == (0.01, "linear")
    assert okx_contract_value("BTC-USD-SWAP") == (100.0, "inverse")


# ---------------------------------------------------------------- `datasets ingest recording`
def test_ingest_recording_is_idempotent(tmp_path, capsys):
    lake_dir = tmp_path / "lake"
    argv = ["ingest", "recording", str(BYBIT), "--lake", str(lake_dir)]
    assert datasets_main(argv) == 0
    out = capsys.readouterr().out
    assert "327 trades, 4 of 4 partitions changed" in out and "raw/recordings/" + BYBIT.name + ": stored" in out
    lake = Lake(str(lake_dir))
    assert lake.store.get(f"raw/recordings/{BYBIT.name}") == BYBIT.read_bytes()
    before = {p.key: lake.partition_meta(p)["content_sha256"] for p in lake.partitions("bronze")}
    assert len(before) == 4
    assert datasets_main(argv) == 0
    out = capsys.readouterr().out
    assert "already stored, identical; 327 trades, 0 of 4 partitions changed" in out
    assert {p.key: lake.partition_meta(p)["content_sha256"] for p in lake.partitions("bronze")} == before
    got = lake.read("bronze", "bybit_linear", "SOLUSDT", "2026-08-09", "2026-08-09")
    # text columns may come back as object or pandas strings; values and numeric dtypes must match
    as_obj = {"exchange": object, "symbol": object}
    pd.testing.assert_frame_equal(got.astype(as_obj), recording_trades(BYBIT, symbols=["SOLUSDT"]).astype(as_obj))


def test_ingest_recording_user_errors(tmp_path, capsys):
    lake_dir = tmp_path / "lake"
    assert datasets_main(["ingest", "recording", str(OKX), "--lake", str(lake_dir), "--symbols", "FOOUSDT"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "Error: okx_v5_multi_2022-05-13_frames.txt holds no trades for binance_usdm, bybit_linear, "
        "okx_swap and symbols FOOUSDT; check --exchange/--symbols (nothing was written)"
    )
    assert not lake_dir.exists() or not any(lake_dir.rglob("*.parquet"))
    bad = tmp_path / "bad.txt"
    bad.write_text(BINANCE_MULTI.read_text().splitlines()[0] + "\n1626992741.1: {not json\n")
    assert datasets_main(["ingest", "recording", str(bad), "--lake", str(lake_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: bad.txt, frame 2: binance_usdm: expected a JSON frame; got '{not json'")
    assert err.endswith("Pass skip_bad_frames=True (--skip-bad-frames) to count and skip such frames")
    assert datasets_main(["ingest", "recording", str(tmp_path / "nope.gz"), "--lake", str(lake_dir)]) == 1
    assert "does not exist or is not a file" in capsys.readouterr().err


def test_out_of_range_numbers_are_frame_errors_not_crashes():
    """A regression: an infinite time (`1e999`) raised OverflowError, which the runner does not catch."""
    frame = (
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":5,"s":"BTCUSDT","p":"1","q":"1",'
        '"f":1,"l":1,"T":1e999,"m":false}}'
    )
    with pytest.raises(FrameError):
        parse_binance(frame)
    with pytest.raises(FrameError):
        parse_bybit(
            '{"topic":"publicTrade.BTCUSDT","data":[{"T":1e999,"s":"BTCUSDT","S":"Buy","v":"1","p":"2",'
            '"i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7"}]}'
        )
    with pytest.raises(FrameError):
        parse_okx(
            {
                "arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"},
                "data": [{"instId": "BTC-USDT-SWAP", "tradeId": "5", "px": "1", "sz": "3", "side": "buy", "ts": 1e999}],
            }
        )
