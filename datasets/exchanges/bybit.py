"""Bybit v5 (linear perpetuals): symbols, archive layout, REST trades, WebSocket dialect.

- **Symbols**: as bronze (``BTCUSDT``); separators and ``:USDT`` suffixes are dropped.
- **Archive** (``public.bybit.com``): ``trading/SYM/SYMYYYY-MM-DD.csv.gz``.
- **Trade ids**: a linear trade's id is a UUID (``i`` on the WebSocket, ``execId`` over REST,
  ``trdMatchID`` in the archive); every source keeps its top 63 bits, so a trade read from a
  recording, from REST and from the archive is stored once. A numeric id (spot) is kept as is.
- **REST** ``/v5/market/recent-trade``: only the latest 1000 trades, newest first, no cursor.
- **WebSocket** ``publicTrade.<SYM>``: ``S`` is the taker side. Frames do not say which market
  they come from (the connection URL does), so the caller passes ``exchange``.
"""

from __future__ import annotations

from whalebt.errors import UserError
import datetime as dt
import json
import uuid

import numpy as np
from typing import Any, Iterable, Mapping

from datasets.exchanges._common import Request, Trade, bad_frame, load_json, plain_symbol

__all__ = [
    "EXCHANGE",
    "WS_URL",
    "REST_URL",
    "ARCHIVE_URL",
    "to_exchange_symbol",
    "from_exchange_symbol",
    "archive_relpath",
    "trade_id",
    "recent_trades_request",
    "recent_trade_rows",
    "parse_frame",
    "subscribe_messages",
    "control",
    "PING_TEXT",
]

EXCHANGE = "bybit_linear"
WS_URL = "wss://stream.bybit.com/v5/public/linear"
REST_URL = "https://api.bybit.com"
ARCHIVE_URL = "https://public.bybit.com"
PING_TEXT = '{"op":"ping"}'
RECENT_TRADES = "/v5/market/recent-trade"


def to_exchange_symbol(symbol: str) -> str:
    """``BTCUSDT``, ``btc-usdt``, ``BTC/USDT:USDT`` → ``BTCUSDT``."""
    s = plain_symbol(symbol)
    if not s:
        raise UserError(f"bybit_linear: expected a symbol like BTCUSDT; got {symbol!r}")
    return s


def from_exchange_symbol(symbol: str) -> str:
    """Bybit's symbol → the bronze symbol (the same, upper case)."""
    return to_exchange_symbol(symbol)


def archive_relpath(symbol: str, day: dt.date) -> str:
    """``trading/BTCUSDT/BTCUSDT2024-01-01.csv.gz``."""
    return f"trading/{symbol}/{symbol}{day.isoformat()}.csv.gz"


_MASK63 = (1 << 63) - 1


def trade_id(i: Any) -> int:
    """The id every Bybit source agrees on: a UUID → its top 63 bits; a numeric id as is (63 bits)."""
    if isinstance(i, str) and i.isdigit():
        return int(i) & _MASK63
    if isinstance(i, str):
        return uuid.UUID(i).int >> 65
    raise ValueError("trade has no id i")


def trade_ids(ids: Any, *, error: type[Exception] = ValueError) -> np.ndarray:
    """int64 ids of ``trdMatchID`` strings: a UUID's top 63 bits, a numeric id as is.

    Same as ``[uuid.UUID(s).int >> 65 for s in ids]`` for UUIDs, vectorised over the
    36-character canonical form (the common case); anything else goes through the slow path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.chunked_array([ids]) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
    arr = pa.chunked_array([arr]) if isinstance(arr, pa.Array) else arr
    arr = arr.combine_chunks().cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.empty(0, np.int64)
    lengths = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    if arr.null_count == 0 and (lengths == 36).all():
        offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4)
        data = np.frombuffer(arr.buffers()[2], np.uint8)
        chars = data[offsets[0] : offsets[0] + 36 * n].reshape(n, 36)
        hexpos = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17]  # the first 64 bits
        if (chars[:, [8, 13, 18, 23]] == ord("-")).all():
            try:
                top = np.frombuffer(bytes.fromhex(chars[:, hexpos].tobytes().decode("ascii")), ">u8")
            except (ValueError, UnicodeDecodeError):
                top = None  # not all hex: the slow path says which id is bad
            if top is not None:
                return (top >> np.uint64(1)).astype(np.int64)
    return np.array([_one_id(s, error) for s in arr.to_pylist()], dtype=np.int64)


def _one_id(s: str | None, error: type[Exception]) -> int:
    if s is None:
        raise error("trdMatchID is empty; expected a UUID or a number")
    try:
        return trade_id(s.strip())
    except ValueError:
        raise error(f"trdMatchID {s!r} is neither a UUID nor a number") from None


# ---------------------------------------------------------------------------- REST
def recent_trades_request(symbol: str, limit: int = 1000) -> Request:
    return Request(RECENT_TRADES, {"category": "linear", "symbol": symbol, "limit": limit})


def recent_trade_rows(rows: Iterable[Mapping[str, Any]], *, error: type[Exception] = ValueError) -> list[Trade]:
    """``/v5/market/recent-trade`` rows (newest first) → trades, oldest first, ordered by (time, id)."""
    rows = list(rows)
    out: list[Trade] = []
    try:
        for r in reversed(rows):
            side = r["side"]
            if side not in ("Buy", "Sell"):
                raise ValueError(f"side must be Buy or Sell, got {side!r}")
            out.append(
                Trade(
                    EXCHANGE,
                    plain_symbol(str(r["symbol"])),
                    trade_id(str(r["execId"])),
                    int(r["time"]),
                    float(r["price"]),
                    float(r["size"]),
                    1 if side == "Buy" else -1,
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise error(
            f"bybit recent-trade: expected rows with execId, symbol, price, size, side, time; "
            f"got {rows[:1]} ({type(exc).__name__}: {exc})"
        ) from None
    out.sort(key=lambda tr: (tr.ts_ms, tr.trade_id))
    return out


# ---------------------------------------------------------------------------- WebSocket
def subscribe_messages(symbols: list[str]) -> list[str]:
    topics = [f"publicTrade.{s.upper()}" for s in symbols]
    # Bybit takes at most 10 args per subscribe request
    return [
        json.dumps({"op": "subscribe", "args": topics[i : i + 10], "req_id": f"whalebt-{i // 10}"})
        for i in range(0, len(topics), 10)
    ]


def control(text: str) -> str | None:
    if '"op"' in text and '"success"' in text:
        ok = '"success":true' in text.replace(" ", "")
        return ("ack " if ok else "error ") + text[:200]
    return None


def parse_frame(frame: str | bytes | Mapping[str, Any], *, exchange: str = EXCHANGE) -> list[Trade]:
    """Trades of one Bybit v5 public frame (``publicTrade.<SYM>``).

    Args:
        frame: the frame's text or decoded JSON.
        exchange: which market the connection serves (``bybit_linear`` for
            ``/v5/public/linear``, ``bybit_spot`` for ``/v5/public/spot``).

    Raises:
        FrameError: not JSON, not an object, or a trade with missing or bad fields.
    """
    msg = load_json(frame, exchange)
    if not isinstance(msg, dict):
        raise bad_frame(exchange, "expected a JSON object", msg)
    topic = msg.get("topic")
    if not isinstance(topic, str) or not topic.startswith("publicTrade."):
        return []
    data = msg.get("data")
    if not isinstance(data, list):
        raise bad_frame(exchange, "publicTrade needs a 'data' list", msg)
    out: list[Trade] = []
    try:
        for t in data:
            side = t["S"]
            if side not in ("Buy", "Sell"):
                raise ValueError(f"side S must be Buy or Sell, got {side!r}")
            out.append(
                Trade(
                    exchange,
                    str(t["s"]).upper(),
                    trade_id(t.get("i")),
                    int(t["T"]),
                    float(t["p"]),
                    float(t["v"]),
                    1 if side == "Buy" else -1,
                )
            )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise bad_frame(exchange, "publicTrade rows need T, s, S, v, p and i", msg, exc) from None
    # The lake orders trades by (ts_ms, trade_id); a frame's fills are fed in that order too.
    out.sort(key=lambda tr: (tr.ts_ms, tr.trade_id))
    return out
