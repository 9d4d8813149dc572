"""OKX v5 (perpetual swaps): instrument ids, contract values, archive layout, REST trades, WebSocket dialect.

- **Symbols**: bronze ``BTCUSDT`` ↔ OKX ``BTC-USDT-SWAP``. :func:`to_inst_id` takes
  ``BTCUSDT``, ``BTC-USDT`` or ``BTC-USDT-SWAP`` (any case) and gives the swap id;
  :func:`from_inst_id` gives the bronze symbol. Ingest and the live runner both use them.
- **Exchanges**: ``*-SWAP`` → ``okx_swap``, dated ``*-YYMMDD`` → ``okx_futures``, else spot.
- **Sizes**: swap/futures ``sz`` counts contracts: qty (base units) is ``sz * ctVal`` for
  USDT/USDC-margined contracts and ``sz * ctVal / px`` for coin-margined ones (``ctVal`` in
  USD). :data:`OKX_CONTRACT_VALUES` holds the values this project knows.
- **Archive**: ``trades/daily/YYYYMMDD/<instId>-trades-YYYY-MM-DD.zip`` (UTC+8 days).
- **REST**: ``/api/v5/market/trades`` (latest 500) and ``/api/v5/market/history-trades``
  (pages backwards); rows are read by :func:`trade_rows`.
- **WebSocket** channel ``trades``: ``side`` is the taker side; ``tradeId`` is numeric; the
  client sends the text ``ping`` when quiet.
"""

from __future__ import annotations

from whalebt.errors import UserError
from whalebt.errors import WhalebtError
import datetime as dt
import json
from typing import Any, Iterable, Mapping

from datasets.exchanges._common import Request, Trade, bad_frame, load_json

__all__ = [
    "EXCHANGE",
    "WS_URL",
    "REST_URL",
    "ARCHIVE_URL",
    "PERP_EXCHANGES",
    "OKX_CONTRACT_VALUES",
    "UnknownContractError",
    "to_inst_id",
    "from_inst_id",
    "check_swap_inst_id",
    "okx_exchange",
    "contract_value",
    "archive_relpath",
    "recent_trades_request",
    "trade_rows",
    "parse_frame",
    "subscribe_messages",
    "control",
    "PING_TEXT",
]

EXCHANGE = "okx_swap"
WS_URL = "wss://ws.okx.com:8443/ws/v5/public"
REST_URL = "https://www.okx.com"
ARCHIVE_URL = "https://www.okx.com/cdn/okex/traderecords"
PING_TEXT = "ping"
_QUOTES = ("USDT", "USDC", "USD")
#: The exchanges whose trades go to bronze by default (linear / swap perpetuals).
PERP_EXCHANGES = ("binance_usdm", "bybit_linear", "okx_swap")


class UnknownContractError(WhalebtError, ValueError):
    """An OKX contract instrument whose contract value is not known."""


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


# ---------------------------------------------------------------------------- symbols
def to_inst_id(symbol: str) -> str:
    """``BTCUSDT`` / ``BTC-USDT`` / ``BTC-USDT-SWAP`` (any case) → ``BTC-USDT-SWAP``; ``UNIUSD`` → ``UNI-USD-SWAP``.

    Raises:
        ValueError: the quote currency cannot be told (not USDT, USDC or USD), or the id names
            something other than a swap (a dated future, an option).
    """
    s = symbol.strip().upper()
    parts = s.split("-")
    if len(parts) == 3 and parts[2] == "SWAP" and all(parts[:2]):
        return s
    if len(parts) == 2 and all(parts):
        return f"{s}-SWAP"
    if len(parts) == 1:
        for quote in _QUOTES:
            if s.endswith(quote) and len(s) > len(quote):
                return f"{s[: -len(quote)]}-{quote}-SWAP"
    raise UserError(
        f"okx_swap: cannot tell base and quote apart in symbol {symbol!r}; expected a symbol ending in "
        "USDT, USDC or USD (BTCUSDT), or give the OKX instrument id, e.g. BTC-USDT-SWAP"
    )


def from_inst_id(inst_id: str) -> str:
    """``BTC-USDT-SWAP`` → ``BTCUSDT``; ``BTC-USDT`` → ``BTCUSDT``; ``BTC-USD-220527`` → ``BTCUSD220527``."""
    s = inst_id.strip().upper()
    if s.endswith("-SWAP"):
        s = s[: -len("-SWAP")]
    return s.replace("-", "")


def check_swap_inst_id(inst_id: str, what: str = "okx-archive") -> str:
    """``btc-usdt-swap`` → ``BTC-USDT-SWAP``; anything but a full swap id is refused with a suggestion."""
    inst = inst_id.strip().upper()
    if okx_exchange(inst) == "okx_swap":
        return inst
    try:
        guess = f" (did you mean {to_inst_id(inst)}?)"
    except ValueError:
        guess = ""
    raise UserError(f"{what} ingests perpetual swaps named like BTC-USDT-SWAP; got {inst_id!r}{guess}")


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


def contract_value(inst_id: str, overrides: Mapping[str, Any] | None = None) -> tuple[float, str]:
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


def archive_relpath(inst_id: str, day: dt.date) -> str:
    """``trades/daily/20240101/BTC-USDT-SWAP-trades-2024-01-01.zip``."""
    return f"trades/daily/{day:%Y%m%d}/{inst_id}-trades-{day.isoformat()}.zip"


# ---------------------------------------------------------------------------- REST and WebSocket rows
def recent_trades_request(inst_id: str, limit: int = 500) -> Request:
    """The latest ``limit`` (at most 500) trades of an instrument, newest first."""
    return Request("/api/v5/market/trades", {"instId": inst_id, "limit": limit})


def trade_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    exchanges: Iterable[str] | None = PERP_EXCHANGES,
    contract_values: Mapping[str, Any] | None = None,
) -> list[Trade]:
    """OKX trade rows (``instId, tradeId, px, sz, side, ts``: REST ``data`` or a frame's) → trades.

    Rows of instruments outside ``exchanges`` are left out before the contract conversion, so
    they need no contract value. Raises KeyError/TypeError/ValueError on a bad row and
    :class:`UnknownContractError` on a kept contract with no known value.
    """
    keep = None if exchanges is None else set(exchanges)
    out: list[Trade] = []
    for t in rows:
        inst = str(t["instId"])
        ex = okx_exchange(inst)
        if keep is not None and ex not in keep:
            continue
        side = t["side"]
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {side!r}")
        px, sz = float(t["px"]), float(t["sz"])
        if ex in ("okx_swap", "okx_futures"):
            ct, margin = contract_value(inst, contract_values)
            qty = sz * ct if margin == "linear" else sz * ct / px
        else:
            qty = sz
        out.append(Trade(ex, from_inst_id(inst), int(t["tradeId"]), int(t["ts"]), px, qty, 1 if side == "buy" else -1))
    return out


def subscribe_messages(symbols: list[str]) -> list[str]:
    args = [{"channel": "trades", "instId": to_inst_id(s)} for s in symbols]
    return [json.dumps({"op": "subscribe", "args": args})]


def control(text: str) -> str | None:
    if text == "pong":
        return "pong"
    if '"event"' in text:
        return text[:200]
    return None


def parse_frame(
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
        contract_values: instId → ctVal overrides (see :func:`contract_value`).

    Raises:
        FrameError: not JSON, or a trade with missing or bad fields.
        UnknownContractError: a kept linear contract with no known contract value.
    """
    if isinstance(frame, str) and frame == "pong":
        return []
    msg = load_json(frame, "okx")
    if not isinstance(msg, dict):
        raise bad_frame("okx", "expected a JSON object", msg)
    arg = msg.get("arg")
    if not isinstance(arg, dict) or arg.get("channel") not in ("trades", "trades-all") or "event" in msg:
        return []
    data = msg.get("data")
    if not isinstance(data, list):
        raise bad_frame("okx", "trades needs a 'data' list", msg)
    try:
        return trade_rows(data, exchanges=exchanges, contract_values=contract_values)
    except UnknownContractError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise bad_frame("okx", "trades rows need instId, tradeId, px, sz, side, ts", msg, exc) from None
