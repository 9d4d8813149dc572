"""Exchange adapters: URLs, subscription protocol, keep-alive, and frames → raw trade rows.

An adapter knows one exchange's WebSocket and REST dialect; no exchange JSON passes it.
Rows come out *raw* (Binance ``@trade`` fills unmerged) so that the runner can check ids
for gaps and repeats before merging; the parsing itself is :mod:`datasets.sources.frames`.

Keep-alive, per exchange:
- Binance USD-M: the server pings every 3 minutes and the client answers (done by the
  picows transport); connections are cut after 24 h, so the runner reconnects after
  :attr:`Adapter.max_connection_s` (23 h 50 m) on its own, backfilling the seam over REST.
- Bybit v5: the client sends ``{"op":"ping"}`` every 20 s; the server answers with a pong.
- OKX v5: the client sends the text ``ping`` when quiet; the server answers ``pong`` and
  closes connections idle for 30 s.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

from datasets.sources.frames import (
    OKX_CONTRACT_VALUES,
    FrameError,
    Trade,
    parse_binance,
    parse_bybit,
    parse_okx,
)

__all__ = ["Adapter", "BinanceAdapter", "BybitAdapter", "OkxAdapter", "make_adapter", "ADAPTERS", "RestError"]


class RestError(RuntimeError):
    """A REST request for backfill or warm-up failed."""


def _json_object(frame: str | bytes) -> dict[str, Any] | str | bytes:
    """The frame decoded, if it is a JSON object; otherwise the frame as it came.

    orjson decodes a trade frame in a fraction of the time of `json`; whatever it refuses
    (not an object, not strict JSON, integers beyond 64 bits) goes to the parser as text, whose
    `json` either reads it as before or words the error the runner logs.
    """
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return frame
    return msg if type(msg) is dict else frame


class Adapter:
    """One exchange's dialect. Subclasses fill in the class attributes and methods."""

    exchange = ""
    default_ws_url = ""
    default_rest_url = ""
    #: trade ids of a symbol are consecutive integers, so a jump is a gap to backfill
    contiguous_ids = False
    #: text of an application-level ping, and how often to send it
    app_ping_text: str | None = None
    app_ping_interval_s = 20.0
    #: reconnect on our own before the exchange cuts the connection
    max_connection_s: float | None = None
    #: raw rows must go through a BinanceTradeMerger before the kernel
    merge_fills = False

    def ws_url(self, symbols: list[str], base: str | None = None) -> str:
        return base or self.default_ws_url

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        return []

    def parse(self, text: str | bytes) -> list[Trade]:
        raise NotImplementedError

    def control(self, text: str) -> str | None:
        """A short description of a control frame (ack, pong, error), or None."""
        return None

    # REST (backfill and warm-up); `get_json(path, params, headers)` is the runner's HTTP call.
    async def fetch_ids(self, get_json, symbol: str, from_id: int, to_id: int) -> list[Trade]:
        raise RestError(f"{self.exchange} has no REST backfill by trade id")

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        raise RestError(f"{self.exchange} has no REST warm-up")


# ---------------------------------------------------------------------------- Binance USD-M
class BinanceAdapter(Adapter):
    """Binance USD-M futures combined streams ``<sym>@aggTrade`` (default) or ``<sym>@trade``."""

    exchange = "binance_usdm"
    default_ws_url = "wss://fstream.binance.com/stream"
    default_rest_url = "https://fapi.binance.com"
    contiguous_ids = True
    max_connection_s = 23 * 3600 + 50 * 60

    def __init__(self, stream: str = "aggTrade"):
        if stream not in ("aggTrade", "trade"):
            raise ValueError(f"Binance stream must be 'aggTrade' or 'trade'; got {stream!r}")
        self.stream = stream
        self.merge_fills = stream == "trade"
        #: with the @trade stream, warm-up rows are aggTrades numbered by their first fill (as merged
        #: fills are); this is the last fill id they cover, where the raw stream continues
        self.last_raw_ids: dict[str, int] = {}

    def streams(self, symbols: list[str]) -> list[str]:
        return [f"{s.lower()}@{self.stream}" for s in symbols]

    def ws_url(self, symbols: list[str], base: str | None = None) -> str:
        url = base or self.default_ws_url
        parts = urlsplit(url)
        if parts.path.rstrip("/").endswith("/stream") and "streams=" not in parts.query:
            query = urlencode({"streams": "/".join(self.streams(symbols))}, safe="/@")
            return urlunsplit(parts._replace(query=query))
        return url

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        # /stream?streams=... subscribes in the URL; /ws (raw) needs the SUBSCRIBE method
        if "streams=" in urlsplit(url).query:
            return []
        return [json.dumps({"method": "SUBSCRIBE", "params": self.streams(symbols), "id": 1})]

    def parse(self, text: str | bytes) -> list[Trade]:
        return parse_binance(_json_object(text))

    def control(self, text: str) -> str | None:
        if '"result"' in text and '"id"' in text:
            return f"subscription reply {text[:80]}"
        if '"code"' in text and '"msg"' in text:
            return f"error {text[:200]}"
        return None

    async def fetch_ids(self, get_json, symbol: str, from_id: int, to_id: int) -> list[Trade]:
        """Trades with ids ``from_id..to_id`` (inclusive) over REST, in id order."""
        out: list[Trade] = []
        nxt = from_id
        while nxt <= to_id:
            if self.stream == "aggTrade":
                limit = min(1000, to_id - nxt + 1)
                rows = await get_json("/fapi/v1/aggTrades", {"symbol": symbol, "fromId": nxt, "limit": limit})
                batch = [_binance_rest_agg(symbol, r) for r in rows]
            else:
                limit = min(500, to_id - nxt + 1)
                key = os.environ.get("BINANCE_API_KEY")
                rows = await get_json(
                    "/fapi/v1/historicalTrades",
                    {"symbol": symbol, "fromId": nxt, "limit": limit},
                    {"X-MBX-APIKEY": key} if key else None,
                )
                batch = [_binance_rest_trade(symbol, r) for r in rows]
            batch = [t for t in batch if nxt <= t.trade_id <= to_id]
            if not batch:
                break
            out.extend(batch)
            nxt = batch[-1].trade_id + 1
        return out

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """aggTrades from ``since_ms`` to ``until_ms`` (Binance allows one hour per window)."""
        out: list[Trade] = []
        start = since_ms
        while start < until_ms:
            end = min(until_ms, start + 3_600_000 - 1)
            rows = await get_json(
                "/fapi/v1/aggTrades", {"symbol": symbol, "startTime": start, "endTime": end, "limit": 1000}
            )
            raw = list(rows)
            while len(rows) == 1000:  # more in this window: continue by id
                rows = await get_json(
                    "/fapi/v1/aggTrades", {"symbol": symbol, "fromId": int(raw[-1]["a"]) + 1, "limit": 1000}
                )
                more = [r for r in rows if int(r["T"]) <= end]
                raw += more
                if len(more) < len(rows):
                    break
            by_fill = self.stream == "trade"
            out.extend(_binance_rest_agg(symbol, r, by_fill) for r in raw)
            if by_fill and raw:
                self.last_raw_ids[symbol] = int(raw[-1].get("l", raw[-1]["a"]))
            start = end + 1
        return out


def _binance_rest_agg(symbol: str, r: dict[str, Any], by_first_fill: bool = False) -> Trade:
    try:
        tid = int(r["f"]) if by_first_fill else int(r["a"])
        return Trade("binance_usdm", symbol, tid, int(r["T"]), float(r["p"]), float(r["q"]), -1 if r["m"] else 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise RestError(f"binance aggTrades row needs a, T, p, q, m; got {r!r} ({exc})") from None


def _binance_rest_trade(symbol: str, r: dict[str, Any]) -> Trade:
    try:
        return Trade(
            "binance_usdm",
            symbol,
            int(r["id"]),
            int(r["time"]),
            float(r["price"]),
            float(r["qty"]),
            -1 if r["isBuyerMaker"] else 1,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RestError(
            f"binance historicalTrades row needs id, time, price, qty, isBuyerMaker; got {r!r} ({exc})"
        ) from None


# ---------------------------------------------------------------------------- Bybit v5
class BybitAdapter(Adapter):
    """Bybit v5 public linear ``publicTrade.<SYM>``."""

    exchange = "bybit_linear"
    default_ws_url = "wss://stream.bybit.com/v5/public/linear"
    default_rest_url = "https://api.bybit.com"
    app_ping_text = '{"op":"ping"}'
    app_ping_interval_s = 20.0

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        topics = [f"publicTrade.{s.upper()}" for s in symbols]
        # Bybit takes at most 10 args per subscribe request
        return [
            json.dumps({"op": "subscribe", "args": topics[i : i + 10], "req_id": f"whalebt-{i // 10}"})
            for i in range(0, len(topics), 10)
        ]

    def parse(self, text: str | bytes) -> list[Trade]:
        return parse_bybit(_json_object(text), exchange=self.exchange)

    def control(self, text: str) -> str | None:
        if '"op"' in text and '"success"' in text:
            ok = '"success":true' in text.replace(" ", "")
            return ("ack " if ok else "error ") + text[:200]
        return None

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """The last 1000 trades (all Bybit serves publicly), kept from ``since_ms``."""
        body = await get_json("/v5/market/recent-trade", {"category": "linear", "symbol": symbol, "limit": 1000})
        try:
            rows = body["result"]["list"]
        except (KeyError, TypeError):
            raise RestError(f"bybit recent-trade: expected result.list; got {str(body)[:200]}") from None
        frame = {
            "topic": f"publicTrade.{symbol}",
            "data": [
                {
                    "T": r["time"],
                    "s": r["symbol"],
                    "S": r["side"],
                    "v": r["size"],
                    "p": r["price"],
                    "i": r["execId"],
                    **({"seq": r["seq"]} if "seq" in r else {}),
                }
                for r in reversed(rows)
            ],
        }
        try:
            out = parse_bybit(frame, exchange=self.exchange)
        except FrameError as exc:
            raise RestError(f"bybit recent-trade rows: {exc}") from None
        return [t for t in out if since_ms <= t.ts_ms <= until_ms]


# ---------------------------------------------------------------------------- OKX v5
def okx_inst_id(symbol: str) -> str:
    """``BTCUSDT`` → ``BTC-USDT-SWAP``; ``UNIUSD`` → ``UNI-USD-SWAP``."""
    s = symbol.upper()
    for quote in ("USDT", "USDC", "USD"):
        if s.endswith(quote) and len(s) > len(quote):
            return f"{s[: -len(quote)]}-{quote}-SWAP"
    raise ValueError(f"cannot tell the quote currency of {symbol!r}; expected a symbol ending in USDT, USDC or USD")


class OkxAdapter(Adapter):
    """OKX v5 public ``trades`` on SWAP instruments (``BTCUSDT`` ↔ ``BTC-USDT-SWAP``)."""

    exchange = "okx_swap"
    default_ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    default_rest_url = "https://www.okx.com"
    app_ping_text = "ping"
    app_ping_interval_s = 20.0

    def __init__(self, contract_values: dict[str, Any] | None = None):
        self.contract_values = contract_values

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        args = [{"channel": "trades", "instId": okx_inst_id(s)} for s in symbols]
        return [json.dumps({"op": "subscribe", "args": args})]

    def check_symbols(self, symbols: Iterable[str]) -> None:
        """Fail before connecting if a linear swap's contract value is unknown."""
        from datasets.sources.frames import okx_contract_value

        for s in symbols:
            okx_contract_value(okx_inst_id(s), self.contract_values)

    def parse(self, text: str | bytes) -> list[Trade]:
        return parse_okx(_json_object(text), exchanges=("okx_swap",), contract_values=self.contract_values)

    def control(self, text: str) -> str | None:
        if text == "pong":
            return "pong"
        if '"event"' in text:
            return text[:200]
        return None

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """The last 500 trades OKX serves on /api/v5/market/trades, kept from ``since_ms``."""
        inst = okx_inst_id(symbol)
        body = await get_json("/api/v5/market/trades", {"instId": inst, "limit": 500})
        try:
            rows = list(reversed(body["data"]))
        except (KeyError, TypeError):
            raise RestError(f"okx market/trades: expected data; got {str(body)[:200]}") from None
        try:
            out = parse_okx(
                {"arg": {"channel": "trades", "instId": inst}, "data": rows},
                exchanges=("okx_swap",),
                contract_values=self.contract_values,
            )
        except FrameError as exc:
            raise RestError(f"okx market/trades rows: {exc}") from None
        return [t for t in out if since_ms <= t.ts_ms <= until_ms]


ADAPTERS = {"binance_usdm": BinanceAdapter, "bybit_linear": BybitAdapter, "okx_swap": OkxAdapter}


def make_adapter(exchange: str, **kwargs: Any) -> Adapter:
    """The adapter of an exchange name (``binance_usdm``, ``bybit_linear``, ``okx_swap``)."""
    try:
        cls = ADAPTERS[exchange]
    except KeyError:
        raise ValueError(f"unknown exchange {exchange!r}; expected one of {sorted(ADAPTERS)}") from None
    if exchange == "binance_usdm":
        return cls(stream=kwargs.get("stream") or "aggTrade")
    if exchange == "okx_swap":
        return cls(contract_values=kwargs.get("contract_values"))
    return cls()


__all__ += ["okx_inst_id", "OKX_CONTRACT_VALUES"]
