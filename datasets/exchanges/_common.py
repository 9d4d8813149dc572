"""What every exchange module shares: the bronze :class:`Trade` row, frame errors, JSON loading."""

from __future__ import annotations

from whalebt.errors import WhalebtError
import json
from typing import Any, Mapping, NamedTuple

__all__ = ["Trade", "FrameError", "Request", "load_json", "bad_frame", "plain_symbol"]


class Trade(NamedTuple):
    """One bronze row: the docs/spec.md §2 columns in order."""

    exchange: str
    symbol: str
    trade_id: int
    ts_ms: int
    price: float
    qty: float
    side: int


class FrameError(WhalebtError, ValueError):
    """A frame could not be read as the exchange's message format."""


class Request(NamedTuple):
    """One REST GET a pager asks for: path below the API's base URL, query, extra headers."""

    path: str
    params: dict[str, Any]
    headers: dict[str, str] | None = None


def _preview(frame: Any, n: int = 160) -> str:
    s = frame if isinstance(frame, str) else repr(frame)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def load_json(frame: str | bytes | Mapping[str, Any], exchange: str) -> Any:
    """A frame's decoded JSON (a mapping passes as is); :class:`FrameError` if it is not JSON."""
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


def bad_frame(exchange: str, what: str, obj: Any, exc: BaseException | None = None) -> FrameError:
    detail = f" ({type(exc).__name__}: {exc})" if exc else ""
    return FrameError(f"{exchange}: {what}; got {_preview(json.dumps(obj, default=str))}{detail}")


def plain_symbol(symbol: str) -> str:
    """`btc-usdt-swap`, `BTC/USDT:USDT`, `btcusdt` → `BTCUSDT` (upper case, no separators)."""
    s = symbol.upper()
    for suffix in ("-SWAP", ":USDT", ":USDC"):
        if s.endswith(suffix):
            s = s[: -len(suffix)]
    return "".join(ch for ch in s if ch.isalnum())
