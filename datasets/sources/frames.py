"""Exchange WebSocket frames → bronze trade rows (docs/spec.md §2).

One pure parser per exchange turns the text (or decoded dict) of one frame into a list of
:class:`Trade` rows; no exchange JSON leaves this module. Frames that carry no trades
(depth, bookTicker, tickers, klines, subscribe acks, pongs, REST snapshots) give ``[]``;
frames that cannot be read raise :class:`FrameError`, which the live runner counts and skips.

Exchange-specific choices (documented in ``docs/live.md`` too):

- **Binance USD-M** ``<sym>@aggTrade``: one row per aggTrade, ``trade_id`` = ``a``.
  ``<sym>@trade`` carries raw fills. Without a merger they come out one row per fill
  (``trade_id`` = ``t``); through :class:`BinanceTradeMerger` consecutive fills with equal
  ``T``, ``p`` and ``m`` become one aggTrade-like row that keeps the id of its **first** fill
  (what an aggTrade calls ``f``) and the summed quantity. Merged ids are therefore increasing
  but not contiguous. Only ``X == "MARKET"`` fills are kept (aggTrades exclude insurance-fund
  and ADL fills too).
- **Bybit v5** ``publicTrade.<SYM>``: ``S`` is the taker side. A linear trade's ``i`` is a
  UUID, so ``trade_id`` = ``seq * 100_000 + k`` where ``seq`` is the trade's cross sequence
  (shared by the fills of one taker order, increasing per symbol) and ``k`` its position
  among the frame's fills with that ``seq``: ids follow the exchange's order and are stable
  across re-reads of the same frames. A numeric ``i`` (spot) is used as is; a UUID without
  ``seq`` (old frames) falls back to the UUID's top 63 bits (stable, not ordered).
  Bybit frames do not say which market they come from: the connection URL does, so the
  caller passes ``exchange`` (``bybit_linear`` for ``/v5/public/linear``).
- **OKX v5** ``trades``: ``side`` is the taker side; ``tradeId`` is numeric. SWAP instruments
  go to exchange ``okx_swap`` (``BTC-USDT-SWAP`` → ``BTCUSDT``), spot to ``okx_spot``, dated
  futures to ``okx_futures``. Swap/futures ``sz`` counts contracts: qty (base units) is
  ``sz * ctVal`` for USDT/USDC-margined contracts and ``sz * ctVal / px`` for coin-margined
  ones, whose ``ctVal`` is in USD. :data:`OKX_CONTRACT_VALUES` holds the values this
  project knows; pass ``contract_values=`` to add or override instruments.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Mapping, NamedTuple

__all__ = [
    "Trade",
    "FrameError",
    "UnknownContractError",
    "parse_binance",
    "parse_bybit",
    "parse_okx",
    "BinanceTradeMerger",
    "OKX_CONTRACT_VALUES",
    "okx_contract_value",
    "okx_exchange",
    "okx_symbol",
    "PERP_EXCHANGES",
]

#: The exchanges whose trades go to bronze by default (linear / swap perpetuals).
PERP_EXCHANGES = ("binance_usdm", "bybit_linear", "okx_swap")


class Trade(NamedTuple):
    """One bronze row: the docs/spec.md §2 columns in order."""

    exchange: str
    symbol: str
    trade_id: int
    ts_ms: int
    price: float
    qty: float
    side: int


class FrameError(ValueError):
    """A frame could not be read as the exchange's message format."""


class UnknownContractError(ValueError):
    """An OKX contract instrument whose contract value is not known."""


def _preview(frame: Any, n: int = 160) -> str:
    s = frame if isinstance(frame, str) else repr(frame)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def _load(frame: str | bytes | Mapping[str, Any], exchange: str) -> Any:
    if type(frame) is str:  # the live path: skip the ABC checks below
        try:
            return json.loads(frame)
        except json.JSONDecodeError as exc:
            raise FrameError(f"{exchange}: expected a JSON frame; got {_preview(frame)!r} ({exc})") from None
    if isinstance(frame, Mapping):
        return frame
    if isinstance(frame, (bytes, bytearray, memoryview)):
        try:
            frame = bytes(frame).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError(f"{exchange}: expected a UTF-8 JSON frame; got undecodable bytes ({exc})") from None
    try:
        return json.loads(frame)
    except (json.JSONDecodeError, TypeError) as exc:
        raise FrameError(f"{exchange}: expected a JSON frame; got {_preview(frame)!r} ({exc})") from None


def _bad(exchange: str, what: str, obj: Any, exc: BaseException | None = None) -> FrameError:
    detail = f" ({type(exc).__name__}: {exc})" if exc else ""
    return FrameError(f"{exchange}: {what}; got {_preview(json.dumps(obj, default=str))}{detail}")


# ---------------------------------------------------------------------------- Binance USD-M
def parse_binance(
    frame: str | bytes | Mapping[str, Any],
    merger: "BinanceTradeMerger | None" = None,
    *,
    exchange: str = "binance_usdm",
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
    msg = _load(frame, exchange)
    if type(msg) is not dict:
        raise _bad(exchange, "expected a JSON object", msg)
    data = msg.get("data", msg) if "stream" in msg else msg
    if type(data) is not dict:
        if isinstance(data, list):  # e.g. !markPrice@arr: not trades
            return []
        raise _bad(exchange, "expected 'data' to be an object", msg)
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
            raise _bad(exchange, "aggTrade needs s, a, T, p, q, m", msg, exc) from None
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
            raise _bad(exchange, "trade needs s, t, T, p, q, m", msg, exc) from None
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


# ---------------------------------------------------------------------------- Bybit v5
def _bybit_id(t: Mapping[str, Any]) -> int:
    """The trade id every Bybit source agrees on: a UUID ``i`` → its top 63 bits; a numeric ``i`` as is.

    Bybit's archives carry only the UUID (``trdMatchID``), so the WebSocket uses the same rule and
    a trade ingested from a recording and from the archive is stored once.
    """
    i = t.get("i")
    if isinstance(i, str) and i.isdigit():
        return int(i)
    if isinstance(i, str):
        return uuid.UUID(i).int >> 65
    raise ValueError("trade has no id i")


def parse_bybit(frame: str | bytes | Mapping[str, Any], *, exchange: str = "bybit_linear") -> list[Trade]:
    """Trades of one Bybit v5 public frame (``publicTrade.<SYM>``).

    Args:
        frame: the frame's text or decoded JSON.
        exchange: which market the connection serves (``bybit_linear`` for
            ``/v5/public/linear``, ``bybit_spot`` for ``/v5/public/spot``).

    Raises:
        FrameError: not JSON, not an object, or a trade with missing or bad fields.
    """
    msg = _load(frame, exchange)
    if not isinstance(msg, dict):
        raise _bad(exchange, "expected a JSON object", msg)
    topic = msg.get("topic")
    if not isinstance(topic, str) or not topic.startswith("publicTrade."):
        return []
    data = msg.get("data")
    if not isinstance(data, list):
        raise _bad(exchange, "publicTrade needs a 'data' list", msg)
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
                    _bybit_id(t),
                    int(t["T"]),
                    float(t["p"]),
                    float(t["v"]),
                    1 if side == "Buy" else -1,
                )
            )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise _bad(exchange, "publicTrade rows need T, s, S, v, p and i", msg, exc) from None
    # The lake orders trades by (ts_ms, trade_id); a frame's fills are fed in that order too.
    out.sort(key=lambda tr: (tr.ts_ms, tr.trade_id))
    return out


# ---------------------------------------------------------------------------- OKX v5
#: OKX contract values: instId → (ctVal, margin). margin "linear": ctVal in base units per
#: contract; "inverse": ctVal in USD per contract. Coin-margined instruments not listed use
#: OKX's rule (100 USD for BTC, 10 USD otherwise); linear ones must be listed or passed.
OKX_CONTRACT_VALUES: dict[str, tuple[float, str]] = {
    "BTC-USDT-SWAP": (0.01, "linear"),
    "ETH-USDT-SWAP": (0.1, "linear"),
    "SOL-USDT-SWAP": (1.0, "linear"),
    "DOGE-USDT-SWAP": (1000.0, "linear"),
    "XRP-USDT-SWAP": (100.0, "linear"),
    "LTC-USDT-SWAP": (1.0, "linear"),
    "ADA-USDT-SWAP": (100.0, "linear"),
    "AVAX-USDT-SWAP": (1.0, "linear"),
    "LINK-USDT-SWAP": (1.0, "linear"),
    "BNB-USDT-SWAP": (0.01, "linear"),
    "BTC-USDC-SWAP": (0.0001, "linear"),
    "ETH-USDC-SWAP": (0.001, "linear"),
    "BTC-USD-SWAP": (100.0, "inverse"),
    "ETH-USD-SWAP": (10.0, "inverse"),
    "UNI-USD-SWAP": (10.0, "inverse"),
}


def okx_exchange(inst_id: str) -> str:
    """``okx_swap`` for ``*-SWAP``, ``okx_futures`` for dated ``*-YYMMDD``, else ``okx_spot``."""
    parts = inst_id.upper().split("-")
    if parts[-1] == "SWAP":
        return "okx_swap"
    if len(parts) == 3 and parts[-1].isdigit():
        return "okx_futures"
    if len(parts) > 3:
        return "okx_option"
    return "okx_spot"


def okx_symbol(inst_id: str) -> str:
    """``BTC-USDT-SWAP`` → ``BTCUSDT``; ``BTC-USDT`` → ``BTCUSDT``; ``BTC-USD-220527`` → ``BTCUSD220527``."""
    s = inst_id.upper()
    if s.endswith("-SWAP"):
        s = s[: -len("-SWAP")]
    return s.replace("-", "")


def okx_contract_value(inst_id: str, overrides: Mapping[str, Any] | None = None) -> tuple[float, str]:
    """(ctVal, "linear" | "inverse") of an OKX swap or futures instrument.

    Args:
        inst_id: e.g. ``BTC-USDT-SWAP``.
        overrides: instId → ctVal (linear) or (ctVal, margin); checked first.

    Raises:
        UnknownContractError: a USDT/USDC-margined instrument that is neither known nor overridden.
    """
    key = inst_id.upper()
    if overrides and key in overrides:
        v = overrides[key]
        if isinstance(v, (int, float)):
            return float(v), "linear"
        return float(v[0]), str(v[1])
    if key in OKX_CONTRACT_VALUES:
        return OKX_CONTRACT_VALUES[key]
    parts = key.split("-")
    if len(parts) >= 2 and parts[1] == "USD":
        return (100.0 if parts[0] == "BTC" else 10.0), "inverse"
    raise UnknownContractError(
        f"okx: contract value of {inst_id} is not known, so its sz (contracts) cannot be turned "
        f"into base units; pass contract_values={{'{key}': <ctVal from OKX's "
        "/api/v5/public/instruments>}} (known: " + ", ".join(sorted(OKX_CONTRACT_VALUES)) + ")"
    )


def parse_okx(
    frame: str | bytes | Mapping[str, Any],
    *,
    exchanges: Iterable[str] | None = PERP_EXCHANGES,
    contract_values: Mapping[str, Any] | None = None,
) -> list[Trade]:
    """Trades of one OKX v5 public frame (channel ``trades``).

    Args:
        frame: the frame's text or decoded JSON; the plain-text ``pong`` gives ``[]``.
        exchanges: keep instruments of these exchanges (``okx_swap``, ``okx_spot``,
            ``okx_futures``); None keeps all. Filtering happens before the contract
            conversion, so unlisted instruments need no contract value.
        contract_values: instId → ctVal overrides (see :func:`okx_contract_value`).

    Raises:
        FrameError: not JSON, or a trade with missing or bad fields.
        UnknownContractError: a kept linear contract with no known contract value.
    """
    if isinstance(frame, str) and frame == "pong":
        return []
    msg = _load(frame, "okx")
    if not isinstance(msg, dict):
        raise _bad("okx", "expected a JSON object", msg)
    arg = msg.get("arg")
    if not isinstance(arg, dict) or arg.get("channel") not in ("trades", "trades-all") or "event" in msg:
        return []
    data = msg.get("data")
    if not isinstance(data, list):
        raise _bad("okx", "trades needs a 'data' list", msg)
    keep = None if exchanges is None else set(exchanges)
    out: list[Trade] = []
    try:
        for t in data:
            inst = str(t["instId"])
            ex = okx_exchange(inst)
            if keep is not None and ex not in keep:
                continue
            side = t["side"]
            if side not in ("buy", "sell"):
                raise ValueError(f"side must be buy or sell, got {side!r}")
            px, sz = float(t["px"]), float(t["sz"])
            if ex in ("okx_swap", "okx_futures"):
                ct, margin = okx_contract_value(inst, contract_values)
                qty = sz * ct if margin == "linear" else sz * ct / px
            else:
                qty = sz
            out.append(
                Trade(ex, okx_symbol(inst), int(t["tradeId"]), int(t["ts"]), px, qty, 1 if side == "buy" else -1)
            )
    except UnknownContractError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise _bad("okx", "trades rows need instId, tradeId, px, sz, side, ts", msg, exc) from None
    return out
