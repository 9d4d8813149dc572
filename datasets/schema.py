"""Column contracts of the lake layers (docs/spec.md §2).

Every source normalises into the bronze trade frame defined here; the lake refuses
frames that do not match it, with a message that says what arrived and what was expected.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import difflib

import numpy as np
import pandas as pd

from datasets.exchanges._common import plain_symbol

__all__ = [
    "BRONZE_COLUMNS",
    "SILVER_COLUMNS",
    "EXCHANGES",
    "SchemaError",
    "validate_bronze",
    "sort_trades",
    "normalise_symbol",
]

EXCHANGES = ("binance_usdm", "bybit_linear", "okx_swap")

# Column -> NumPy dtype. `ts_us` is optional (kept when the source has microseconds).
BRONZE_COLUMNS: dict[str, str] = {
    "exchange": "object",
    "symbol": "object",
    "trade_id": "int64",
    "ts_ms": "int64",
    "price": "float64",
    "qty": "float64",
    "side": "int8",
}
BRONZE_OPTIONAL: dict[str, str] = {"ts_us": "int64"}

SILVER_COLUMNS: dict[str, str] = {
    "ts_s": "int64",  # bar start, seconds since epoch UTC
    "last_price": "float64",
    "base_volume": "float64",
    "quote_volume": "float64",
    "trade_count": "int64",
    "taker_buy_qty": "float64",
    "taker_sell_qty": "float64",
}


class SchemaError(WhalebtError, ValueError):
    """A frame does not match a layer's column contract."""


def _did_you_mean(name: str, got: list[str]) -> str:
    close = difflib.get_close_matches(name, got, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def validate_bronze(df: pd.DataFrame, *, what: str = "trades") -> pd.DataFrame:
    """Check and coerce a frame to the bronze trade schema.

    Args:
        df: candidate trades.
        what: how to name the input in error messages (a file name, a source).

    Returns:
        The frame with exactly the bronze columns (plus `ts_us` if present) in contract dtypes.

    Raises:
        SchemaError: a column is missing, a value cannot be coerced, or a side is not ±1.
    """
    got = [str(c) for c in df.columns]
    for col in BRONZE_COLUMNS:
        if col not in df.columns:
            raise SchemaError(f"{what} is missing column {col!r}; got {got}.{_did_you_mean(col, got)}")
    cols = list(BRONZE_COLUMNS) + [c for c in BRONZE_OPTIONAL if c in df.columns]
    out = df[cols].copy()
    for col in cols:
        dtype = BRONZE_COLUMNS.get(col) or BRONZE_OPTIONAL[col]
        if dtype == "object":
            if not pd.api.types.is_string_dtype(out[col]):
                out[col] = out[col].astype(str)
            continue
        try:
            out[col] = out[col].astype(dtype)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"{what}: column {col!r} cannot be read as {dtype}: {exc}") from exc
    bad_side = ~np.isin(out["side"].to_numpy(), (-1, 1))
    if bad_side.any():
        raise SchemaError(
            f"{what}: column 'side' must be +1 (taker buy) or -1 (taker sell); "
            f"found {sorted(set(out['side'][bad_side].tolist()))[:5]}"
        )
    return out


def sort_trades(df: pd.DataFrame) -> pd.DataFrame:
    """Order trades as the kernel consumes them: by `(ts_ms, trade_id)`.

    A trade id seen twice for the same exchange and symbol keeps its last row (a re-delivered
    trade replaces the earlier copy).
    """
    n = len(df)
    if n == 0:
        return df.reset_index(drop=True)
    ex_codes, _ = pd.factorize(df["exchange"])
    sym_codes, _ = pd.factorize(df["symbol"])
    group = ex_codes.astype(np.int64) * (int(sym_codes.max()) + 1) + sym_codes
    tid = df["trade_id"].to_numpy(np.int64)
    # Last occurrence of each (group, trade_id): sort by (group, id, position), keep run ends.
    pos = np.arange(n)
    o = np.lexsort((pos, tid, group))
    last = np.ones(n, dtype=bool)
    last[:-1] = (group[o][1:] != group[o][:-1]) | (tid[o][1:] != tid[o][:-1])
    keep = o[last]
    ts = df["ts_ms"].to_numpy(np.int64)
    keep = keep[np.lexsort((tid[keep], ts[keep]))]
    return df.iloc[keep].reset_index(drop=True)


def normalise_symbol(symbol: str) -> str:
    """`btc-usdt-swap`, `BTC/USDT:USDT`, `btcusdt` → `BTCUSDT` (upper case, no separators)."""
    return plain_symbol(symbol)
