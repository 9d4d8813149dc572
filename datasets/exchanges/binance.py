"""Binance USD-M futures: symbols, archive layout and checksums, REST paging, WebSocket dialect.

- **Symbols**: Binance names a perpetual like bronze does (``BTCUSDT``); ``BTC-USDT``,
  ``BTC/USDT:USDT`` and ``btcusdt`` are accepted too.
- **Archive** (``data.binance.vision``): daily and monthly zips under ``data/futures/um/``, each
  with a ``.CHECKSUM`` sidecar ``<sha256 hex>  <file name>``, checked by :func:`verify_checksum`.
- **REST** ``/fapi/v1/aggTrades``: :class:`AggTradePager` finds the first trade of a span with
  time windows of at most an hour, then pages forward by ``fromId``; :class:`IdPager` fetches an
  id range (aggTrades, or raw fills from ``/fapi/v1/historicalTrades``). Pagers only build
  requests and read answers; the caller does the HTTP (ccxt in ``datasets ingest rest``,
  aiohttp in the live runner).
- **WebSocket** ``<sym>@aggTrade``: one row per aggTrade, ``trade_id`` = ``a``. ``<sym>@trade``
  carries raw fills: without a merger one row per fill (``trade_id`` = ``t``); through
  :class:`BinanceTradeMerger` consecutive fills with equal ``T``, ``p`` and ``m`` become one
  aggTrade-like row with the id of its **first** fill (an aggTrade's ``f``) and the summed
  quantity, so merged ids increase but are not contiguous. Only ``X == "MARKET"`` fills are
  kept (aggTrades exclude insurance-fund and ADL fills too).
"""

from __future__ import annotations

from whalebt.errors import UserError
import datetime as dt
import hashlib
import json
import os
from typing import Any, Iterable, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

from datasets.exchanges._common import FrameError, Request, Trade, bad_frame, load_json, plain_symbol

__all__ = [
    "EXCHANGE",
    "WS_URL",
    "REST_URL",
    "to_exchange_symbol",
    "from_exchange_symbol",
    "aggtrades_daily_relpath",
    "aggtrades_monthly_relpath",
    "funding_relpath",
    "klines_daily_relpath",
    "klines_monthly_relpath",
    "verify_checksum",
    "AggTradePager",
    "IdPager",
    "agg_trade_rows",
    "historical_trade_rows",
    "CCXT_METHODS",
    "parse_frame",
    "BinanceTradeMerger",
    "stream_names",
    "ws_url",
    "subscribe_messages",
    "control",
]

EXCHANGE = "binance_usdm"
WS_URL = "wss://fstream.binance.com/stream"
REST_URL = "https://fapi.binance.com"
HOUR_MS = 3_600_000
AGG_TRADES = "/fapi/v1/aggTrades"
HISTORICAL_TRADES = "/fapi/v1/historicalTrades"
#: ccxt implicit method of each REST path (``datasets ingest rest`` calls through ccxt)
CCXT_METHODS = {AGG_TRADES: "fapiPublicGetAggTrades", HISTORICAL_TRADES: "fapiPublicGetHistoricalTrades"}


# ---------------------------------------------------------------------------- symbols
def to_exchange_symbol(symbol: str) -> str:
    """``BTCUSDT``, ``btc-usdt``, ``BTC/USDT:USDT`` → ``BTCUSDT`` (what Binance's APIs and archive take)."""
    s = plain_symbol(symbol)
    if not s:
        raise UserError(f"binance_usdm: expected a symbol like BTCUSDT; got {symbol!r}")
    return s


def from_exchange_symbol(symbol: str) -> str:
    """Binance's symbol → the bronze symbol (the same, upper case)."""
    return to_exchange_symbol(symbol)


# ---------------------------------------------------------------------------- archive
def aggtrades_daily_relpath(symbol: str, day: dt.date) -> str:
    return f"data/futures/um/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day.isoformat()}.zip"


def aggtrades_monthly_relpath(symbol: str, year: int, month: int) -> str:
    return f"data/futures/um/monthly/aggTrades/{symbol}/{symbol}-aggTrades-{year:04d}-{month:02d}.zip"


def funding_relpath(symbol: str, year: int, month: int) -> str:
    """Path of a monthly funding file in Binance's archive."""
    return f"data/futures/um/monthly/fundingRate/{symbol}/{symbol}-fundingRate-{year:04d}-{month:02d}.zip"


def klines_monthly_relpath(symbol: str, interval: str, year: int, month: int) -> str:
    return f"data/futures/um/monthly/klines/{symbol}/{interval}/{symbol}-{interval}-{year:04d}-{month:02d}.zip"


def klines_daily_relpath(symbol: str, interval: str, day: dt.date) -> str:
    return f"data/futures/um/daily/klines/{symbol}/{interval}/{symbol}-{interval}-{day.isoformat()}.zip"


def verify_checksum(data: bytes, sidecar: bytes, name: str, error: type[Exception] = ValueError) -> None:
    """Check ``data`` (the file ``name``) against its ``.CHECKSUM`` sidecar, or raise ``error``.

    The sidecar must read ``<64 hex digits>  <name>`` (one line): an empty or malformed sidecar,
    a digest that differs, and a sidecar naming another file are all refused.
    """
    text = sidecar.decode("utf-8", "replace").strip()
    parts = text.split(None, 1)
    digest = parts[0].lower() if parts else ""
    if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise error(f"{name}.CHECKSUM: expected '<sha256 hex>  {name}', got {text[:100]!r}")
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise error(
            f"{name}: checksum mismatch: expected sha256 {digest}, got {got} "
            f"({len(data)} bytes); the download is damaged or changed, fetch it again"
        )
    named = parts[1].strip().lstrip("*")
    if named != name:
        raise error(
            f"{name}.CHECKSUM names {named[:100]!r}, not {name!r}: the sidecar belongs to another file; "
            "fetch both files again"
        )


# ---------------------------------------------------------------------------- REST
def agg_trade_rows(
    rows: Iterable[Mapping[str, Any]], symbol: str, *, by_first_fill: bool = False, error: type[Exception] = ValueError
) -> list[Trade]:
    """``/fapi/v1/aggTrades`` rows → trades (``trade_id`` = ``a``, or ``f`` with ``by_first_fill``)."""
    key = "f" if by_first_fill else "a"
    rows = list(rows)
    try:
        return [
            Trade(EXCHANGE, symbol, int(r[key]), int(r["T"]), float(r["p"]), float(r["q"]), -1 if r["m"] else 1)
            for r in rows
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"binance_usdm aggTrades: expected rows with a, p, q, T, m; got {rows[:1]} ({type(exc).__name__}: {exc})"
        ) from None


def historical_trade_rows(
    rows: Iterable[Mapping[str, Any]], symbol: str, *, error: type[Exception] = ValueError
) -> list[Trade]:
    """``/fapi/v1/historicalTrades`` rows (raw fills) → trades (``trade_id`` = ``id``)."""
    try:
        return [
            Trade(
                EXCHANGE,
                symbol,
                int(r["id"]),
                int(r["time"]),
                float(r["price"]),
                float(r["qty"]),
                -1 if r["isBuyerMaker"] else 1,
            )
            for r in rows
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"binance_usdm historicalTrades: expected rows with id, time, price, qty, isBuyerMaker; "
            f"got {list(rows)[:1]} ({type(exc).__name__}: {exc})"
        ) from None


class AggTradePager:
    """The aggTrades of ``[lo_ms, hi_ms)``, page by page, without doing any I/O.

    Loop: ``req = pager.next_request()`` (None when done), fetch it, ``pager.feed(rows)`` → the
    page's trades inside the span. Until a first trade is found the pager asks for time windows
    of ``window_ms`` (Binance allows at most an hour); then it pages forward by ``fromId`` until a
    page reaches ``hi_ms`` or comes back short. ``from_id`` starts by id at once (resuming).

    Attributes:
        position_ms: how far the pages have got (for progress).
        last_fill_id: the ``l`` (last raw fill id) of the last trade returned.
    """

    def __init__(
        self,
        symbol: str,
        lo_ms: int,
        hi_ms: int,
        *,
        limit: int = 1000,
        window_ms: int = HOUR_MS,
        from_id: int | None = None,
        by_first_fill: bool = False,
        error: type[Exception] = ValueError,
    ):
        if not 1 <= window_ms <= HOUR_MS:
            raise UserError(f"binance_usdm time windows must be 1 ms..1 h; got {window_ms} ms")
        self.symbol, self.lo, self.hi, self.limit, self.window_ms = symbol, int(lo_ms), int(hi_ms), limit, window_ms
        self.from_id, self.by_first_fill, self.error = from_id, by_first_fill, error
        self.position_ms = self.lo
        self.last_fill_id: int | None = None
        self._w = self.lo
        self._done = False
        self._asked: Request | None = None

    def next_request(self) -> Request | None:
        if self._done or (self.from_id is None and self._w >= self.hi):
            self._done = True
            return None
        if self.from_id is None:
            end = min(self._w + self.window_ms, self.hi) - 1
            params: dict[str, Any] = {"symbol": self.symbol, "startTime": self._w, "endTime": end, "limit": self.limit}
        else:
            params = {"symbol": self.symbol, "fromId": self.from_id, "limit": self.limit}
        self._asked = Request(AGG_TRADES, params)
        return self._asked

    def feed(self, rows: list[Mapping[str, Any]]) -> list[Trade]:
        """The answer to the last request → its trades in ``[lo_ms, hi_ms)``, oldest first."""
        asked = self._asked
        if asked is None:
            raise RuntimeError("feed() without a request from next_request()")
        self._asked = None
        by_window = "startTime" in asked.params
        if not rows:
            if by_window:
                self._w = int(asked.params["endTime"]) + 1
                self.position_ms = self._w
            else:
                self._done = True
            return []
        trades = agg_trade_rows(rows, self.symbol, by_first_fill=self.by_first_fill, error=self.error)
        last_ts = trades[-1].ts_ms
        self.position_ms = last_ts
        if last_ts >= self.hi or (not by_window and len(rows) < self.limit):
            self._done = True
        try:
            self.from_id = int(rows[-1]["a"]) + 1
        except (KeyError, TypeError, ValueError):
            raise self.error(f"binance_usdm aggTrades: a row without an id a: {rows[-1]!r}") from None
        kept = [i for i, t in enumerate(trades) if self.lo <= t.ts_ms < self.hi]
        if kept:
            r = rows[kept[-1]]
            self.last_fill_id = int(r.get("l", r["a"]))
        return [trades[i] for i in kept]


class IdPager:
    """Trades with ids ``from_id..to_id`` (inclusive), in id order, without doing any I/O.

    ``stream="aggTrade"`` pages ``/fapi/v1/aggTrades`` (1000 a page); ``"trade"`` pages the raw
    fills of ``/fapi/v1/historicalTrades`` (500 a page; sends ``BINANCE_API_KEY`` if set). Stops
    at ``to_id`` or when a page has nothing new.
    """

    def __init__(self, symbol: str, from_id: int, to_id: int, *, stream: str = "aggTrade", error=ValueError):
        self.symbol, self.next_id, self.to_id, self.stream, self.error = symbol, from_id, to_id, stream, error
        self._done = False

    def next_request(self) -> Request | None:
        if self._done or self.next_id > self.to_id:
            return None
        if self.stream == "aggTrade":
            limit = min(1000, self.to_id - self.next_id + 1)
            return Request(AGG_TRADES, {"symbol": self.symbol, "fromId": self.next_id, "limit": limit})
        limit = min(500, self.to_id - self.next_id + 1)
        key = os.environ.get("BINANCE_API_KEY")
        return Request(
            HISTORICAL_TRADES,
            {"symbol": self.symbol, "fromId": self.next_id, "limit": limit},
            {"X-MBX-APIKEY": key} if key else None,
        )

    def feed(self, rows: list[Mapping[str, Any]]) -> list[Trade]:
        if self.stream == "aggTrade":
            batch = agg_trade_rows(rows, self.symbol, error=self.error)
        else:
            batch = historical_trade_rows(rows, self.symbol, error=self.error)
        batch = [t for t in batch if self.next_id <= t.trade_id <= self.to_id]
        if not batch:
            self._done = True
            return []
        self.next_id = batch[-1].trade_id + 1
        return batch


# ---------------------------------------------------------------------------- WebSocket
def stream_names(symbols: list[str], stream: str = "aggTrade") -> list[str]:
    return [f"{s.lower()}@{stream}" for s in symbols]


def ws_url(symbols: list[str], stream: str = "aggTrade", base: str | None = None) -> str:
    """A combined-stream URL (``/stream?streams=...``) subscribes in the URL itself."""
    url = base or WS_URL
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/stream") and "streams=" not in parts.query:
        query = urlencode({"streams": "/".join(stream_names(symbols, stream))}, safe="/@")
        return urlunsplit(parts._replace(query=query))
    return url


def subscribe_messages(symbols: list[str], url: str, stream: str = "aggTrade") -> list[str]:
    # /stream?streams=... subscribes in the URL; /ws (raw) needs the SUBSCRIBE method
    if "streams=" in urlsplit(url).query:
        return []
    return [json.dumps({"method": "SUBSCRIBE", "params": stream_names(symbols, stream), "id": 1})]


def control(text: str) -> str | None:
    """A short description of a subscription reply or error frame, or None."""
    if '"result"' in text and '"id"' in text:
        return f"subscription reply {text[:80]}"
    if '"code"' in text and '"msg"' in text:
        return f"error {text[:200]}"
    return None


def parse_frame(
    frame: str | bytes | Mapping[str, Any],
    merger: "BinanceTradeMerger | None" = None,
    *,
    exchange: str = EXCHANGE,
) -> list[Trade]:
    """Trades of one Binance combined-stream (or raw-stream) frame.

    Args:
        frame: the frame's text or decoded JSON.
        merger: for ``@trade`` frames, merges raw fills into aggTrade-like rows (see the
            module doc); rows come out when a later fill differs, or on ``merger.flush()``.
            Without one, ``@trade`` fills come out one row each.
        exchange: exchange name put on the rows.

    Raises:
        FrameError: not JSON, not an object, or a trade event with missing or bad fields.
    """
    msg = load_json(frame, exchange)
    if type(msg) is not dict:
        raise bad_frame(exchange, "expected a JSON object", msg)
    data = msg.get("data", msg) if "stream" in msg else msg
    if type(data) is not dict:
        if isinstance(data, list):  # e.g. !markPrice@arr: not trades
            return []
        raise bad_frame(exchange, "expected 'data' to be an object", msg)
    kind = data.get("e")
    if kind == "aggTrade":
        try:
            row = Trade(
                exchange,
                str(data["s"]).upper(),
                int(data["a"]),
                int(data["T"]),
                float(data["p"]),
                float(data["q"]),
                -1 if _flag(data["m"]) else 1,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise bad_frame(exchange, "aggTrade needs s, a, T, p, q, m", msg, exc) from None
        return [row]
    if kind == "trade":
        try:
            x = data.get("X", "MARKET")
            row = Trade(
                exchange,
                str(data["s"]).upper(),
                int(data["t"]),
                int(data["T"]),
                float(data["p"]),
                float(data["q"]),
                -1 if _flag(data["m"]) else 1,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise bad_frame(exchange, "trade needs s, t, T, p, q, m", msg, exc) from None
        if x != "MARKET":
            return []
        return merger.push(row) if merger is not None else [row]
    return []


def _flag(v: Any) -> bool:
    if v is True or v is False:
        return v
    raise TypeError(f"expected true/false, got {v!r}")


class BinanceTradeMerger:
    """Merges consecutive raw Binance fills with equal ``T``, ``p`` and side, per symbol.

    Works one fill at a time, so the live runner and a batch read give the same rows:
    a merged row is emitted when the symbol's next fill differs (or on :meth:`flush`), and
    keeps the first fill's id with the summed qty. The cost is that a merged row is decided
    one fill late; a feed that goes quiet holds its last row until then or ``flush``.
    """

    __slots__ = ("_pending", "_last_id")

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], list] = {}
        self._last_id: dict[tuple[str, str], int] = {}

    def push(self, row: Trade) -> list[Trade]:
        """Add one raw fill; return the rows it completes (zero or one).

        A fill whose id is not above the last one seen for its symbol is a repeat (a
        reconnect that replays frames) and is dropped.
        """
        key = (row.exchange, row.symbol)
        last = self._last_id.get(key)
        if last is not None and row.trade_id <= last:
            return []
        self._last_id[key] = row.trade_id
        cur = self._pending.get(key)
        if cur is not None and cur[3] == row.ts_ms and cur[4] == row.price and cur[6] == row.side:
            cur[5] += row.qty
            return []
        self._pending[key] = list(row)
        return [] if cur is None else [Trade(*cur)]

    def push_many(self, rows: Iterable[Trade]) -> list[Trade]:
        out: list[Trade] = []
        for r in rows:
            out.extend(self.push(r))
        return out

    def flush(self, symbol: str | None = None) -> list[Trade]:
        """Emit and forget pending rows (all symbols, or one), in symbol order."""
        keys = sorted(k for k in self._pending if symbol is None or k[1] == symbol)
        return [Trade(*self._pending.pop(k)) for k in keys]

    def pending(self) -> int:
        """Number of symbols with a row waiting for its next fill."""
        return len(self._pending)

    def last_raw_id(self, exchange: str, symbol: str) -> int | None:
        """Id of the last raw fill accepted for a symbol (for gap checks on raw ids)."""
        return self._last_id.get((exchange, symbol))


__all__ += ["FrameError"]
