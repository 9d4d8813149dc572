"""datasets.exchanges (one home per exchange) and datasets._retry, without network."""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import email.utils
import hashlib
import random
import time
from pathlib import Path

import pytest

from datasets._retry import backoff_s, retry, retry_after_s, retry_async
from datasets.exchanges import binance, bybit, okx
from datasets.exchanges._common import Trade
from servers.exchange_rest import load_binance_aggtrades, load_bybit_trades

REAL = Path(__file__).resolve().parents[1] / "data" / "real"


# ------------------------------------------------------------------ checksum sidecars
class Boom(ValueError):
    pass


DATA = b"PK\x03\x04 some zip bytes"
NAME = "BTCUSDT-aggTrades-2024-03-01.zip"
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(
    "sidecar",
    [f"{DIGEST}  {NAME}\n", f"{DIGEST.upper()}  {NAME}", f"{DIGEST} *{NAME}\r\n"],
)
def test_checksum_accepts_the_sidecar_of_this_file(sidecar):
    binance.verify_checksum(DATA, sidecar.encode(), NAME, Boom)


@pytest.mark.parametrize(
    "sidecar, message",
    [
        (b"", f"{NAME}.CHECKSUM: expected '<sha256 hex>  {NAME}', got ''"),
        (f"{DIGEST[:-1]}  {NAME}".encode(), f"{NAME}.CHECKSUM: expected '<sha256 hex>  {NAME}'"),
        (DIGEST.encode(), f"{NAME}.CHECKSUM: expected '<sha256 hex>  {NAME}'"),  # no file name
        (f"{'z' * 64}  {NAME}".encode(), f"{NAME}.CHECKSUM: expected"),
        (f"{'0' * 64}  {NAME}".encode(), f"{NAME}: checksum mismatch: expected sha256 {'0' * 64}, got {DIGEST} "),
        (f"{DIGEST}  ETHUSDT-aggTrades-2024-03-01.zip".encode(), f"{NAME}.CHECKSUM names 'ETHUSDT-aggTrades-2024"),
    ],
)
def test_checksum_refuses_bad_sidecars_with_the_callers_error(sidecar, message):
    with pytest.raises(Boom) as exc:
        binance.verify_checksum(DATA, sidecar, NAME, Boom)
    assert str(exc.value).startswith(message)


def test_a_sidecar_naming_another_file_is_refused_by_every_binance_reader(tmp_path):
    """Archive ingest, funding ingest and rank all go through the one strict check."""
    from datasets.rank import RankError
    from datasets.sources.binance_archive import ArchiveError, ingest_binance_archive
    from datasets.synth import SynthParams, write_synth_archive

    write_synth_archive(tmp_path / "a", SynthParams(days=1, trades_per_s=0.2, whale_rate_per_day=0))
    rel = binance.aggtrades_daily_relpath("PLANTUSDT", dt.date(2024, 3, 1))
    zpath = tmp_path / "a" / rel
    side = zpath.with_name(zpath.name + ".CHECKSUM")
    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    side.write_text(f"{sha}  PLANTUSDT-aggTrades-2024-03-02.zip\n")  # right digest, wrong file
    with pytest.raises(ArchiveError, match="names 'PLANTUSDT-aggTrades-2024-03-02.zip', not"):
        ingest_binance_archive(tmp_path / "a", "PLANTUSDT", dt.date(2024, 3, 1), dt.date(2024, 3, 1), tmp_path / "lake")
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))
    with pytest.raises(RankError, match="belongs to another file"):
        binance.verify_checksum(zpath.read_bytes(), side.read_bytes(), zpath.name, RankError)


# ------------------------------------------------------------------ symbols: one conversion for ingest and live
@pytest.mark.parametrize(
    "given, inst",
    [
        ("BTCUSDT", "BTC-USDT-SWAP"),
        ("btc-usdt", "BTC-USDT-SWAP"),
        ("BTC-USDT-SWAP", "BTC-USDT-SWAP"),
        (" eth-usdc-swap ", "ETH-USDC-SWAP"),
        ("UNIUSD", "UNI-USD-SWAP"),
        ("BTC-USD", "BTC-USD-SWAP"),
    ],
)
def test_okx_symbols_are_read_the_same_by_ingest_and_live(given, inst):
    from datasets.sources.rest import okx_inst_id as ingest_inst_id
    from live.adapters import OkxAdapter
    from live.adapters import okx_inst_id as live_inst_id

    assert ingest_inst_id(given) == live_inst_id(given) == okx.to_inst_id(given) == inst
    assert okx.from_inst_id(inst) == inst[: -len("-SWAP")].replace("-", "")
    adapter = OkxAdapter()
    assert adapter.bronze_symbol(given) == okx.from_inst_id(inst)
    assert f'"instId": "{inst}"' in adapter.subscribe_messages([given], adapter.default_ws_url)[0]
    adapter.check_symbols([given])  # known contract values


@pytest.mark.parametrize("bad", ["BTCEUR", "BTC-USD-220527", "BTC-USD-220527-C-30000", "-USDT", ""])
def test_okx_symbols_that_are_not_swaps_are_refused_alike(bad):
    from datasets.sources.rest import okx_inst_id as ingest_inst_id
    from live.adapters import okx_inst_id as live_inst_id

    for convert in (ingest_inst_id, live_inst_id):
        with pytest.raises(ValueError, match="expected a symbol ending in USDT, USDC or USD"):
            convert(bad)


def test_okx_archive_wants_the_full_swap_id_and_suggests_it():
    assert okx.check_swap_inst_id("btc-usdt-swap") == "BTC-USDT-SWAP"
    with pytest.raises(ValueError, match=r"got 'BTC-USDT' \(did you mean BTC-USDT-SWAP\?\)"):
        okx.check_swap_inst_id("BTC-USDT")
    with pytest.raises(ValueError, match=r"got 'BTC-USD-220527'$"):
        okx.check_swap_inst_id("BTC-USD-220527")


def test_binance_and_bybit_symbols():
    for mod in (binance, bybit):
        assert mod.to_exchange_symbol("btc-usdt") == mod.to_exchange_symbol("BTC/USDT:USDT") == "BTCUSDT"
        assert mod.from_exchange_symbol("BTCUSDT") == "BTCUSDT"
        with pytest.raises(ValueError, match="expected a symbol like BTCUSDT"):
            mod.to_exchange_symbol("--")


# ------------------------------------------------------------------ REST paging on recorded pages
class Pages:
    """Answers aggTrades requests from recorded rows the way /fapi/v1/aggTrades does."""

    def __init__(self, rows: list[dict]):
        self.rows, self.ids, self.asked = rows, [r["a"] for r in rows], []

    def __call__(self, req) -> list[dict]:
        self.asked.append(req)
        q, limit = req.params, req.params["limit"]
        if "fromId" in q:
            i = bisect.bisect_left(self.ids, q["fromId"])
            return self.rows[i : i + limit]
        assert q["endTime"] - q["startTime"] < 3_600_000
        return [r for r in self.rows if q["startTime"] <= r["T"] <= q["endTime"]][:limit]


def drive(pager, answer) -> list[Trade]:
    out: list[Trade] = []
    while (req := pager.next_request()) is not None:
        out.extend(pager.feed(answer(req)))
    return out


def test_aggtrade_pager_finds_the_first_trade_by_window_then_pages_by_id():
    rows = load_binance_aggtrades("BTCUSDT")
    lo, hi = rows[100]["T"] - 3 * 3_600_000, rows[-50]["T"]  # hours before the first wanted trade
    pages = Pages(rows)
    got = drive(binance.AggTradePager("BTCUSDT", lo, hi, limit=500), pages)
    want = [r for r in rows if lo <= r["T"] < hi]
    assert [t.trade_id for t in got] == [r["a"] for r in want]
    assert got[0] == Trade(
        "binance_usdm",
        "BTCUSDT",
        want[0]["a"],
        want[0]["T"],
        float(want[0]["p"]),
        float(want[0]["q"]),
        -1 if want[0]["m"] else 1,
    )
    windows = [r.params for r in pages.asked if "startTime" in r.params]
    assert [w["startTime"] for w in windows] == [lo + i * 3_600_000 for i in range(len(windows))]
    assert len(windows) >= 3  # the empty hours, then the hour with the first trade
    by_id = [r.params["fromId"] for r in pages.asked if "fromId" in r.params]
    assert by_id and all(b > a for a, b in zip(by_id, by_id[1:]))


def test_aggtrade_pager_resumes_by_id_and_stops_on_a_short_page():
    rows = load_binance_aggtrades("ETHUSDT")
    pages = Pages(rows)
    pager = binance.AggTradePager("ETHUSDT", rows[0]["T"], rows[-1]["T"] + 10**9, limit=1000, from_id=rows[10]["a"])
    got = drive(pager, pages)
    assert [t.trade_id for t in got] == [r["a"] for r in rows[10:]]
    assert all("fromId" in r.params for r in pages.asked)
    assert pager.position_ms == rows[-1]["T"] and pager.last_fill_id == rows[-1]["l"]


def test_aggtrade_pager_by_first_fill_and_bad_rows():
    rows = load_binance_aggtrades("BTCUSDT")[:5]
    pager = binance.AggTradePager("BTCUSDT", 0, 10**13, from_id=0, by_first_fill=True)
    req = pager.next_request()
    assert req == binance.Request("/fapi/v1/aggTrades", {"symbol": "BTCUSDT", "fromId": 0, "limit": 1000})
    assert [t.trade_id for t in pager.feed(rows)] == [r["f"] for r in rows]
    assert pager.next_request() is None  # a short page by id ends the span
    pager = binance.AggTradePager("BTCUSDT", 0, 10**13, from_id=0, error=Boom)
    pager.next_request()
    with pytest.raises(Boom, match="binance_usdm aggTrades: expected rows with a, p, q, T, m"):
        pager.feed([{"a": 1, "T": 2}])
    with pytest.raises(ValueError, match="time windows must be 1 ms..1 h"):
        binance.AggTradePager("BTCUSDT", 0, 1, window_ms=3_600_001)


def test_id_pager_fetches_an_id_range(monkeypatch):
    rows = load_binance_aggtrades("BTCUSDT")
    lo, hi = rows[3]["a"], rows[2503]["a"]
    pages = Pages(rows)
    got = drive(binance.IdPager("BTCUSDT", lo, hi), pages)
    assert [t.trade_id for t in got] == [r["a"] for r in rows[3:2504]]
    assert [r.params["limit"] for r in pages.asked] == [1000, 1000, 501]
    monkeypatch.setenv("BINANCE_API_KEY", "k")
    req = binance.IdPager("BTCUSDT", 5, 7, stream="trade").next_request()
    assert req.path == "/fapi/v1/historicalTrades" and req.headers == {"X-MBX-APIKEY": "k"}
    assert req.params == {"symbol": "BTCUSDT", "fromId": 5, "limit": 3}


def test_bybit_rest_rows_match_the_websocket_parser():
    rows = load_bybit_trades()["BTCUSDT"]
    rest = bybit.recent_trade_rows(list(reversed(rows)))  # the API answers newest first
    frame = {
        "topic": "publicTrade.BTCUSDT",
        "data": [
            {"T": r["time"], "s": r["symbol"], "S": r["side"], "v": r["size"], "p": r["price"], "i": r["execId"]}
            for r in rows
        ],
    }
    assert rest == bybit.parse_frame(frame) and len(rest) == len(rows) > 10


def test_okx_rows_become_base_units():
    row = {"instId": "BTC-USDT-SWAP", "tradeId": "7", "px": "30000", "sz": "3", "side": "sell", "ts": "1652459215150"}
    assert okx.trade_rows([row]) == [Trade("okx_swap", "BTCUSDT", 7, 1652459215150, 30000.0, 3 * 0.01, -1)]
    inverse = dict(row, instId="BTC-USD-SWAP")
    assert okx.trade_rows([inverse])[0].qty == 3 * 100 / 30000
    assert okx.trade_rows([dict(row, instId="BTC-USDT")]) == []  # spot is not kept by default
    with pytest.raises(okx.UnknownContractError, match="PEPE-USDT-SWAP"):
        okx.trade_rows([dict(row, instId="PEPE-USDT-SWAP")])


# ------------------------------------------------------------------ the retry helper
def test_backoff_delays():
    assert [backoff_s(i, 0.5, 30.0) for i in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_s(100, 1.0) == 2.0**30  # no overflow
    a, b = random.Random(3), random.Random(3)
    for i in range(10):  # full jitter, drawn as the live runner always drew it
        assert backoff_s(i, 0.5, 30.0, a) == b.uniform(0.0, min(30.0, 0.5 * 2**i))


def test_retry_after_forms():
    assert retry_after_s("3") == 3.0 and retry_after_s(" 1.5 ") == 1.5
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after_s(when) <= 61
    assert retry_after_s(when, http_date=False) is None
    assert retry_after_s(email.utils.formatdate(0, usegmt=True)) == 0.0


def test_retry_waits_as_told_and_gives_up_with_the_last_error():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    assert retry(flaky, retries=5, delay=lambda i, e: backoff_s(i, 0.1), sleep=waits.append) == "ok"
    assert waits == [0.1, 0.2]
    calls.clear()
    waits.clear()
    with pytest.raises(ConnectionError, match="try 2"):
        retry(flaky, retries=1, delay=lambda i, e: 1.0, sleep=waits.append)
    assert waits == [1.0]

    def broken():
        raise KeyError("not retried")

    with pytest.raises(KeyError):
        retry(broken, retries=3, delay=lambda i, e: 1 / 0, retry_on=(ConnectionError,))


def test_retry_async():
    seen: list[BaseException] = []

    async def main():
        n = [0]

        async def flaky():
            n[0] += 1
            if n[0] == 1:
                raise TimeoutError("slow")
            return n[0]

        def delay(i, exc):
            seen.append(exc)
            return 0.0

        return await retry_async(flaky, retries=2, delay=delay, retry_on=(TimeoutError,))

    assert asyncio.run(main()) == 2
    assert [str(e) for e in seen] == ["slow"]
