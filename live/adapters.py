"""Exchange adapters: one object per connection over an exchange module of :mod:`datasets.exchanges`.

An adapter binds one exchange's dialect (URLs, subscribe messages, keep-alive, frame parsing,
REST pagers, all in ``datasets/exchanges/<exchange>.py``) to the runner's needs, and does the
REST calls through the runner's async ``get_json``. Rows come out *raw* (Binance ``@trade``
fills unmerged) so that the runner can check ids for gaps and repeats before merging.

Keep-alive, per exchange:
- Binance USD-M: the server pings every 3 minutes and the client answers (done by the
  picows transport); connections are cut after 24 h, so the runner reconnects after
  :attr:`Adapter.max_connection_s` (23 h 50 m) on its own, backfilling the seam over REST.
- Bybit v5: the client sends ``{"op":"ping"}`` every 20 s; the server answers with a pong.
- OKX v5: the client sends the text ``ping`` when quiet; the server answers ``pong`` and
  closes connections idle for 30 s.
"""

from __future__ import annotations

from whalebt.errors import UserError
from whalebt.errors import WhalebtError
from typing import Any, Iterable

import orjson

from datasets.exchanges import binance, bybit, okx
from datasets.exchanges._common import Trade
from datasets.exchanges.okx import OKX_CONTRACT_VALUES, UnknownContractError

__all__ = ["Adapter", "BinanceAdapter", "BybitAdapter", "OkxAdapter", "make_adapter", "ADAPTERS", "RestError"]


class RestError(WhalebtError, RuntimeError):
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

    def bronze_symbol(self, symbol: str) -> str:
        """The symbol as bronze and the parsed rows name it."""
        return symbol.upper()

    def ws_url(self, symbols: list[str], base: str | None = None) -> str:
        return base or self.default_ws_url

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        return []

    def subscription_names(self, symbols: list[str]) -> str:
        """What the connection asks the server for, as logs name it."""
        return ",".join(symbols)

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
async def _drive(get_json, pager) -> list[Trade]:
    """Run a sans-I/O pager of :mod:`datasets.exchanges` over the runner's async ``get_json``."""
    out: list[Trade] = []
    while (req := pager.next_request()) is not None:
        out.extend(pager.feed(await get_json(req.path, req.params, req.headers)))
    return out


class BinanceAdapter(Adapter):
    """Binance USD-M futures combined streams ``<sym>@aggTrade`` (default) or ``<sym>@trade``."""

    exchange = binance.EXCHANGE
    default_ws_url = binance.WS_URL
    default_rest_url = binance.REST_URL
    contiguous_ids = True
    max_connection_s = 23 * 3600 + 50 * 60

    def __init__(self, stream: str = "aggTrade"):
        if stream not in ("aggTrade", "trade"):
            raise UserError(f"Binance stream must be 'aggTrade' or 'trade'; got {stream!r}")
        self.stream = stream
        self.merge_fills = stream == "trade"
        #: with the @trade stream, warm-up rows are aggTrades numbered by their first fill (as merged
        #: fills are); this is the last fill id they cover, where the raw stream continues
        self.last_raw_ids: dict[str, int] = {}

    def streams(self, symbols: list[str]) -> list[str]:
        return binance.stream_names(symbols, self.stream)

    def ws_url(self, symbols: list[str], base: str | None = None) -> str:
        return binance.ws_url(symbols, self.stream, base)

    def subscription_names(self, symbols: list[str]) -> str:
        return ",".join(self.streams(symbols))

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        return binance.subscribe_messages(symbols, url, self.stream)

    def parse(self, text: str | bytes) -> list[Trade]:
        return binance.parse_frame(_json_object(text))

    def control(self, text: str) -> str | None:
        return binance.control(text)

    async def fetch_ids(self, get_json, symbol: str, from_id: int, to_id: int) -> list[Trade]:
        """Trades with ids ``from_id..to_id`` (inclusive) over REST, in id order."""
        return await _drive(get_json, binance.IdPager(symbol, from_id, to_id, stream=self.stream, error=RestError))

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """aggTrades from ``since_ms`` to ``until_ms`` (inclusive)."""
        by_fill = self.stream == "trade"
        pager = binance.AggTradePager(symbol, since_ms, until_ms + 1, by_first_fill=by_fill, error=RestError)
        out = await _drive(get_json, pager)
        if by_fill and pager.last_fill_id is not None:
            self.last_raw_ids[symbol] = pager.last_fill_id
        return out


# ---------------------------------------------------------------------------- Bybit v5
class BybitAdapter(Adapter):
    """Bybit v5 public linear ``publicTrade.<SYM>``."""

    exchange = bybit.EXCHANGE
    default_ws_url = bybit.WS_URL
    default_rest_url = bybit.REST_URL
    app_ping_text = bybit.PING_TEXT
    app_ping_interval_s = 20.0

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        return bybit.subscribe_messages(symbols)

    def parse(self, text: str | bytes) -> list[Trade]:
        return bybit.parse_frame(_json_object(text), exchange=self.exchange)

    def control(self, text: str) -> str | None:
        return bybit.control(text)

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """The last 1000 trades (all Bybit serves publicly), kept from ``since_ms``."""
        req = bybit.recent_trades_request(symbol)
        body = await get_json(req.path, req.params)
        try:
            rows = body["result"]["list"]
        except (KeyError, TypeError):
            raise RestError(f"bybit recent-trade: expected result.list; got {str(body)[:200]}") from None
        out = bybit.recent_trade_rows(rows, error=RestError)
        return [t for t in out if since_ms <= t.ts_ms <= until_ms]


# ---------------------------------------------------------------------------- OKX v5
okx_inst_id = okx.to_inst_id


class OkxAdapter(Adapter):
    """OKX v5 public ``trades`` on SWAP instruments (``BTCUSDT`` ↔ ``BTC-USDT-SWAP``)."""

    exchange = okx.EXCHANGE
    default_ws_url = okx.WS_URL
    default_rest_url = okx.REST_URL
    app_ping_text = okx.PING_TEXT
    app_ping_interval_s = 20.0

    def __init__(self, contract_values: dict[str, Any] | None = None):
        self.contract_values = contract_values

    def bronze_symbol(self, symbol: str) -> str:
        """``BTCUSDT``, ``BTC-USDT`` or ``BTC-USDT-SWAP`` → ``BTCUSDT``."""
        return okx.from_inst_id(okx.to_inst_id(symbol))

    def subscribe_messages(self, symbols: list[str], url: str) -> list[str]:
        return okx.subscribe_messages(symbols)

    def check_symbols(self, symbols: Iterable[str]) -> None:
        """Fail before connecting if a linear swap's contract value is unknown."""
        for s in symbols:
            okx.contract_value(okx.to_inst_id(s), self.contract_values)

    def parse(self, text: str | bytes) -> list[Trade]:
        return okx.parse_frame(_json_object(text), exchanges=("okx_swap",), contract_values=self.contract_values)

    def control(self, text: str) -> str | None:
        return okx.control(text)

    async def fetch_since(self, get_json, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        """The last 500 trades OKX serves on /api/v5/market/trades, kept from ``since_ms``."""
        inst = okx.to_inst_id(symbol)
        req = okx.recent_trades_request(inst)
        body = await get_json(req.path, req.params)
        try:
            rows = list(reversed(body["data"]))
        except (KeyError, TypeError):
            raise RestError(f"okx market/trades: expected data; got {str(body)[:200]}") from None
        try:
            out = okx.trade_rows(rows, exchanges=("okx_swap",), contract_values=self.contract_values)
        except UnknownContractError:
            raise
        except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise RestError(f"okx market/trades rows need instId, tradeId, px, sz, side, ts: {exc!r}") from None
        return [t for t in out if since_ms <= t.ts_ms <= until_ms]


ADAPTERS = {"binance_usdm": BinanceAdapter, "bybit_linear": BybitAdapter, "okx_swap": OkxAdapter}


def make_adapter(exchange: str, **kwargs: Any) -> Adapter:
    """The adapter of an exchange name (``binance_usdm``, ``bybit_linear``, ``okx_swap``)."""
    try:
        cls = ADAPTERS[exchange]
    except KeyError:
        raise UserError(f"unknown exchange {exchange!r}; expected one of {sorted(ADAPTERS)}") from None
    if exchange == "binance_usdm":
        return cls(stream=kwargs.get("stream") or "aggTrade")
    if exchange == "okx_swap":
        return cls(contract_values=kwargs.get("contract_values"))
    return cls()


__all__ += ["okx_inst_id", "OKX_CONTRACT_VALUES"]
