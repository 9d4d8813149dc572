"""A local HTTP server that answers like the public REST APIs of Binance USD-M, Bybit v5 and OKX v5.

Tests point ccxt at it by rewriting ``exchange.urls['api']`` (``--api-url`` on the command line), so
every request goes through ccxt's real HTTP stack, rate limiter and error mapping. The trades it
serves come from the real recorded exchange traffic in ``tests/data/real`` (see its LICENSES.md):

* Binance USD-M ``/fapi/v1/aggTrades``: the recorded BTCUSDT and ETHUSDT ``@trade`` frames of
  2024-08-08 23:54..2024-08-09 00:00, merged into aggTrades the way Binance aggregates (consecutive
  trades with the same time, price and taker side). Aggregate ids are numbered from a fixed base
  (the real ones are not in the recording); ``f``/``l`` are the real trade ids.
* Bybit v5 ``/v5/market/recent-trade``: the recorded linear ``publicTrade`` frames of 2026-08-09
  (BTC, ETH, SOL, DOGE), re-emitted in the REST field names (``execId``, ``price``, ``size``, ...).
* OKX v5 ``/api/v5/market/history-trades``: the recorded BTC-USDT trades of 2022-05-13, served as
  BTC-USDT-SWAP trades (size converted to contracts of 0.01 BTC; ids, prices, times, sides real).

Funding-rate histories are hand-built (the recordings hold none): 8-hourly times with rates from a
fixed formula, in each exchange's field names. Rate-limit and error answers can be injected at the
n-th request to a path, and a request can be held so that a test can kill the client mid-run.

Run ``python tests/servers/exchange_rest.py --port 8765`` to browse it by hand.
"""

from __future__ import annotations

import bisect
import gzip
import io
import json
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from functools import lru_cache
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REAL_DIR = Path(os.environ.get("WHALEBT_REAL_DATA", Path(__file__).resolve().parents[1] / "data" / "real"))

BINANCE_AGG_ID_BASE = {"BTCUSDT": 2_310_000_000, "ETHUSDT": 1_520_000_000}
OKX_CT_VAL = Decimal("0.01")


# ------------------------------------------------------------------ data from the recordings
@lru_cache(maxsize=None)
def load_binance_aggtrades(symbol: str) -> list[dict]:
    """Binance USD-M aggTrades (REST format) rebuilt from the recorded ``@trade`` frames of ``symbol``.

    Cached: callers must not modify the rows.
    """
    path = REAL_DIR / f"binance_usdm_{symbol.lower()}_2024-08-08_stream.txt.gz"
    trades = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if '"e":"trade"' not in line:
                continue
            d = json.loads(line.split(" ", 1)[1])["data"]
            trades.append(d)
    trades.sort(key=lambda d: d["t"])
    out: list[dict] = []
    for d in trades:
        last = out[-1] if out else None
        if last and last["T"] == d["T"] and last["p"] == d["p"] and last["m"] == d["m"]:
            last["q"] = str(Decimal(last["q"]) + Decimal(d["q"]))
            last["l"] = d["t"]
            continue
        out.append({"a": 0, "p": d["p"], "q": d["q"], "f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"]})
    base = BINANCE_AGG_ID_BASE[symbol]
    for i, row in enumerate(out):
        row["a"] = base + i
    return out


def _bybit_records():
    import zstandard

    path = REAL_DIR / "bybit_v5_multi_2026-08-09_frames.jsonl.zst"
    with open(path, "rb") as fh:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
        for line in text:
            yield json.loads(line)


@lru_cache(maxsize=None)
def load_bybit_trades() -> dict[str, list[dict]]:
    """Bybit linear trades (REST ``recent-trade`` format) per symbol, oldest first."""
    conns: dict[str, str] = {}
    out: dict[str, dict[str, dict]] = {}
    for rec in _bybit_records():
        if rec["t"] in ("connect", "send") and "conn" in rec:
            conns[rec["conn"]] = rec.get("addr", "")
            continue
        if rec["t"] != "recv" or not conns.get(rec["conn"], "").endswith("/linear"):
            continue
        frame = json.loads(rec["data"])
        if not str(frame.get("topic", "")).startswith("publicTrade."):
            continue
        for x in frame["data"]:
            out.setdefault(x["s"], {})[x["i"]] = {
                "execId": x["i"],
                "symbol": x["s"],
                "price": x["p"],
                "size": x["v"],
                "side": x["S"],
                "time": str(x["T"]),
                "isBlockTrade": bool(x.get("BT", False)),
                "isRPITrade": bool(x.get("RPI", False)),
                "seq": str(x.get("seq", "")),
            }
    return {s: sorted(v.values(), key=lambda r: (int(r["time"]), int(r["seq"] or 0))) for s, v in out.items()}


@lru_cache(maxsize=None)
def load_okx_trades() -> dict[str, list[dict]]:
    """OKX BTC-USDT-SWAP trades (REST ``history-trades`` format), oldest first."""
    path = REAL_DIR / "okx_v5_multi_2022-05-13_frames.txt"
    rows: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if '"channel":"trades"' not in line or '"data"' not in line or line.startswith("wss://"):
            continue
        frame = json.loads(line.split(": ", 1)[1])
        for x in frame["data"]:
            if x["instId"] != "BTC-USDT":
                continue
            contracts = (Decimal(x["sz"]) / OKX_CT_VAL).normalize()
            rows[int(x["tradeId"])] = {
                "instId": "BTC-USDT-SWAP",
                "side": x["side"],
                "sz": format(contracts, "f"),
                "px": x["px"],
                "source": "0",
                "tradeId": x["tradeId"],
                "ts": x["ts"],
            }
    return {"BTC-USDT-SWAP": [rows[k] for k in sorted(rows)]}


OKX_INSTRUMENTS = {
    "BTC-USDT-SWAP": {
        "alias": "",
        "baseCcy": "",
        "category": "1",
        "ctMult": "1",
        "ctType": "linear",
        "ctVal": "0.01",
        "ctValCcy": "BTC",
        "expTime": "",
        "instFamily": "BTC-USDT",
        "instId": "BTC-USDT-SWAP",
        "instType": "SWAP",
        "lever": "100",
        "listTime": "1573557408000",
        "lotSz": "0.01",
        "maxIcebergSz": "100000000.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "100000000",
        "maxMktAmt": "",
        "maxMktSz": "12000",
        "maxStopSz": "12000",
        "maxTriggerSz": "100000000.0000000000000000",
        "maxTwapSz": "100000000.0000000000000000",
        "minSz": "0.01",
        "optType": "",
        "quoteCcy": "",
        "settleCcy": "USDT",
        "state": "live",
        "stk": "",
        "tickSz": "0.1",
        "uly": "BTC-USDT",
    },
}

EIGHT_H_MS = 8 * 3600 * 1000


def funding_series(start_ms: int, n: int, seed: int) -> list[tuple[int, str]]:
    """Hand-built 8-hourly funding: rate_k = (((k * 7 + seed) % 11) - 3) * 0.00001, as a decimal string."""
    return [
        (start_ms + k * EIGHT_H_MS, format(Decimal((k * 7 + seed) % 11 - 3) * Decimal("0.00001"), "f"))
        for k in range(n)
    ]


# ------------------------------------------------------------------ canned error answers (real formats)
@dataclass
class Answer:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def binance_429(retry_after_s: int = 1) -> Answer:
    return Answer(
        429,
        json.dumps(
            {
                "code": -1003,
                "msg": "Too many requests; current limit of IP(127.0.0.1) is 2400 "
                "requests per minute. Please use the websocket for live updates to avoid polling the API.",
            }
        ),
        {"Retry-After": str(retry_after_s)},
    )


def binance_418(retry_after_s: int = 2) -> Answer:
    until = int(time.time() * 1000) + retry_after_s * 1000
    return Answer(
        418,
        json.dumps(
            {
                "code": -1003,
                "msg": f"Way too many requests; IP(127.0.0.1) banned until {until}. "
                "Please use the websocket for live updates to avoid bans.",
            }
        ),
        {"Retry-After": str(retry_after_s)},
    )


def bybit_10006(reset_in_ms: int = 500) -> Answer:
    now = int(time.time() * 1000)
    return Answer(
        200,
        json.dumps({"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": now}),
        {"X-Bapi-Limit": "600", "X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": str(now + reset_in_ms)},
    )


def okx_429() -> Answer:
    return Answer(429, json.dumps({"msg": "Too Many Requests", "code": "50011"}))


def http_503() -> Answer:
    return Answer(
        503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", content_type="text/html"
    )


# ------------------------------------------------------------------ the server
@dataclass
class Logged:
    t: float  # time.monotonic() at arrival
    path: str
    params: dict[str, str]
    status: int = 0


class Hold:
    """A request held open until ``release()``: lets a test kill the client mid-run."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._release = threading.Event()

    def release(self) -> None:
        self._release.set()


def _ok(payload) -> Answer:
    return Answer(200, json.dumps(payload, separators=(",", ":")))


class ExchangeRestServer:
    """Binance USD-M, Bybit v5 and OKX v5 public REST on ``127.0.0.1:<port>``, in a thread."""

    def __init__(self, port: int = 0):
        self.binance_aggtrades = {s: load_binance_aggtrades(s) for s in ("BTCUSDT", "ETHUSDT")}
        self.bybit_trades = load_bybit_trades()
        self.okx_trades = load_okx_trades()
        self.okx_instruments = dict(OKX_INSTRUMENTS)
        t0 = 1719792000000  # 2024-07-01 00:00 UTC
        self.binance_funding = {"BTCUSDT": funding_series(t0, 276, 1), "ETHUSDT": funding_series(t0, 276, 4)}
        self.bybit_funding = {"BTCUSDT": funding_series(t0, 276, 2)}
        self.okx_funding = {"BTC-USDT-SWAP": funding_series(t0, 276, 3)}
        self.now_ms: int | None = None  # trades after this time are not visible yet (None: all)
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._faults: dict[str, list[tuple[int, int, Answer]]] = {}
        self._holds: dict[str, tuple[int, Hold]] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ExchangeRestServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="exchange-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for _n, hold in self._holds.values():
            hold.release()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ExchangeRestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget injected answers, holds, the request log and the clock (between tests)."""
        with self._lock:
            for _n, hold in self._holds.values():
                hold.release()
            self._faults.clear()
            self._holds.clear()
            self._counts.clear()
            self.log.clear()
            self.now_ms = None

    def inject(self, path: str, answer: Answer, at: int = 1, times: int = 1) -> None:
        """Answer the ``at``-th .. ``at+times-1``-th requests to ``path`` (counted from now) with ``answer``."""
        with self._lock:
            base = self._counts.get(path, 0)
            self._faults.setdefault(path, []).append((base + at, base + at + times - 1, answer))

    def hold(self, path: str, at: int) -> Hold:
        """Hold the ``at``-th request to ``path`` (counted from now) until released."""
        h = Hold()
        with self._lock:
            self._holds[path] = (self._counts.get(path, 0) + at, h)
        return h

    def requests(self, path: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path == path]

    def visible(self, ts_ms: int) -> bool:
        return self.now_ms is None or ts_ms <= self.now_ms

    # -------------------------------------------------------------- dispatch
    def _answer(self, path: str, q: dict[str, str]) -> Answer:
        with self._lock:
            n = self._counts[path] = self._counts.get(path, 0) + 1
            entry = Logged(time.monotonic(), path, q)
            self.log.append(entry)
            hold = self._holds.get(path)
            faults = self._faults.get(path, [])
        if hold and hold[0] == n:
            hold[1].arrived.set()
            hold[1]._release.wait(60)
        for lo, hi, answer in faults:
            if lo <= n <= hi:
                entry.status = answer.status
                return answer
        route = ROUTES.get(path)
        answer = (
            route(self, q)
            if route
            else Answer(404, json.dumps({"code": -5000, "msg": f"Path {path}, Method GET is invalid"}))
        )
        entry.status = answer.status
        return answer

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parsed = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
                answer = server._answer(parsed.path, q)
                body = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed while the request was held

            def log_message(self, format, *args) -> None:  # noqa: A002 (http.server API)
                pass

        return Handler


# ------------------------------------------------------------------ Binance USD-M
def _binance_error(code: int, msg: str, status: int = 400) -> Answer:
    return Answer(status, json.dumps({"code": code, "msg": msg}))


def _int(q: dict[str, str], key: str) -> int | None:
    return int(q[key]) if q.get(key, "") != "" else None


def binance_agg_trades(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    rows = srv.binance_aggtrades.get(q.get("symbol", ""))
    if rows is None:
        return _binance_error(-1121, "Invalid symbol.")
    limit = _int(q, "limit") or 500
    if not 1 <= limit <= 1000:
        return _binance_error(-1130, "Data sent for parameter 'limit' is not valid.")
    if srv.now_ms is not None:
        rows = [r for r in rows if srv.visible(r["T"])]
    from_id, start, end = _int(q, "fromId"), _int(q, "startTime"), _int(q, "endTime")
    if from_id is not None:
        if start is not None or end is not None:
            return _binance_error(-1128, "Combination of optional parameters invalid.")
        i = bisect.bisect_left([r["a"] for r in rows], from_id) if rows and rows[0]["a"] < from_id else 0
        out = rows[i : i + limit]
    elif start is not None or end is not None:
        start = start if start is not None else end - 3_600_000
        end = end if end is not None else start + 3_600_000
        if end - start > 3_600_000:
            return _binance_error(-1127, "More than 1 hours between startTime and endTime.")
        out = [r for r in rows if start <= r["T"] <= end][:limit]
    else:
        out = rows[-limit:]
    return _ok(out)


def binance_funding_rate(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    series = srv.binance_funding.get(q.get("symbol", ""))
    if series is None:
        return _binance_error(-1121, "Invalid symbol.")
    limit = _int(q, "limit") or 100
    if not 1 <= limit <= 1000:
        return _binance_error(-1130, "Data sent for parameter 'limit' is not valid.")
    start, end = _int(q, "startTime"), _int(q, "endTime")
    sel = [(t, r) for t, r in series if (start is None or t >= start) and (end is None or t <= end)]
    sel = sel[:limit] if start is not None else sel[-limit:]
    sym = q["symbol"]
    return _ok([{"symbol": sym, "fundingTime": t, "fundingRate": r, "markPrice": "61800.30000000"} for t, r in sel])


def binance_exchange_info(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    symbols = []
    for sym in sorted(set(srv.binance_aggtrades) | set(srv.binance_funding)):
        symbols.append(
            {
                "symbol": sym,
                "pair": sym,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "baseAsset": sym[:-4],
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": 2,
                "quantityPrecision": 3,
                "underlyingType": "COIN",
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "filters": [],
                "orderTypes": ["LIMIT", "MARKET"],
                "timeInForce": ["GTC", "IOC"],
            }
        )
    return _ok(
        {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "futuresType": "U_MARGINED",
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }
    )


# ------------------------------------------------------------------ Bybit v5
def _bybit(result: dict, code: int = 0, msg: str = "OK") -> Answer:
    return _ok({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": int(time.time() * 1000)})


def bybit_recent_trade(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    cat = q.get("category", "")
    if cat not in ("spot", "linear", "inverse", "option"):
        return _bybit({}, 10001, "params error: category is invalid")
    rows = srv.bybit_trades.get(q.get("symbol", "")) if cat == "linear" else None
    if rows is None:
        return _bybit({}, 10001, "params error: symbol invalid")
    limit = _int(q, "limit") or 500
    if not 1 <= limit <= 1000:
        return _bybit({}, 10001, "params error: limit is invalid")
    visible = [r for r in rows if srv.visible(int(r["time"]))]
    return _bybit({"category": cat, "list": visible[::-1][:limit]})


def bybit_funding_history(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    if q.get("category") not in ("linear", "inverse"):
        return _bybit({}, 10001, "params error: category is invalid")
    series = srv.bybit_funding.get(q.get("symbol", ""))
    if series is None:
        return _bybit({}, 10001, "params error: symbol invalid")
    start, end = _int(q, "startTime"), _int(q, "endTime")
    if start is not None and end is None:
        return _bybit({}, 10001, "params error: endTime is required when startTime is set")
    limit = _int(q, "limit") or 200
    if not 1 <= limit <= 200:
        return _bybit({}, 10001, "params error: limit is invalid")
    sel = [(t, r) for t, r in series if (start is None or t >= start) and (end is None or t <= end)]
    sel = sel[::-1][:limit]
    return _bybit(
        {
            "category": q["category"],
            "list": [{"symbol": q["symbol"], "fundingRate": r, "fundingRateTimestamp": str(t)} for t, r in sel],
        }
    )


# ------------------------------------------------------------------ OKX v5
def _okx(data: list, code: str = "0", msg: str = "", status: int = 200) -> Answer:
    return Answer(status, json.dumps({"code": code, "msg": msg, "data": data}, separators=(",", ":")))


def _okx_no_inst() -> Answer:
    return _okx([], "51001", "Instrument ID, Instrument ID code, or Spread ID doesn't exist.", status=400)


def okx_history_trades(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    rows = srv.okx_trades.get(q.get("instId", ""))
    if rows is None:
        return _okx_no_inst()
    kind = q.get("type", "1") or "1"
    limit = _int(q, "limit") or 100
    if not 1 <= limit <= 100 or kind not in ("1", "2"):
        return _okx([], "51000", "Parameter limit error" if kind in ("1", "2") else "Parameter type error", status=400)
    after, before = _int(q, "after"), _int(q, "before")
    sel = [r for r in rows if srv.visible(int(r["ts"]))]
    if kind == "2":
        if before is not None:
            return _okx([], "51000", "Parameter before error", status=400)
        if after is not None:
            sel = [r for r in sel if int(r["ts"]) < after]
    else:
        if after is not None:
            sel = [r for r in sel if int(r["tradeId"]) < after]
        if before is not None:
            sel = [r for r in sel if int(r["tradeId"]) > before]
    return _okx(sel[::-1][:limit])


def okx_instruments(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    if q.get("instType") not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
        return _okx([], "51000", "Parameter instType error", status=400)
    inst = q.get("instId")
    if inst:
        row = srv.okx_instruments.get(inst)
        if row is None or row["instType"] != q["instType"]:
            return _okx_no_inst()
        return _okx([row])
    return _okx([r for r in srv.okx_instruments.values() if r["instType"] == q["instType"]])


def okx_funding_history(srv: ExchangeRestServer, q: dict[str, str]) -> Answer:
    series = srv.okx_funding.get(q.get("instId", ""))
    if series is None:
        return _okx_no_inst()
    limit = _int(q, "limit") or 100
    if not 1 <= limit <= 100:
        return _okx([], "51000", "Parameter limit error", status=400)
    after, before = _int(q, "after"), _int(q, "before")
    sel = [(t, r) for t, r in series if (after is None or t < after) and (before is None or t > before)]
    return _okx(
        [
            {
                "fundingRate": r,
                "fundingTime": str(t),
                "instId": q["instId"],
                "instType": "SWAP",
                "method": "current_period",
                "realizedRate": r,
            }
            for t, r in sel[::-1][:limit]
        ]
    )


ROUTES = {
    "/fapi/v1/aggTrades": binance_agg_trades,
    "/fapi/v1/fundingRate": binance_funding_rate,
    "/fapi/v1/exchangeInfo": binance_exchange_info,
    "/v5/market/recent-trade": bybit_recent_trade,
    "/v5/market/funding/history": bybit_funding_history,
    "/api/v5/market/history-trades": okx_history_trades,
    "/api/v5/public/instruments": okx_instruments,
    "/api/v5/public/funding-rate-history": okx_funding_history,
}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    srv = ExchangeRestServer(args.port).start()
    print(f"serving on {srv.url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
