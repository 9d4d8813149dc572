"""Row checks every ingest runs on its whole input before the first write (docs/datasets.md).

A trade row is refused when its ``price`` is not a finite number above zero, its ``qty`` not a
finite number above zero, ``price × qty`` not finite, its ``ts_ms`` not an integer from 2009-01-01 to one day after the
wall clock, its ``trade_id`` not an integer inside int64, or its ``side`` not ±1; and two rows
of one input that share ``(exchange, symbol, trade_id)`` but differ in price, qty or side are both
refused (a repeat of the same trade is not). :func:`screen_trades` either raises
:class:`BadRowsError` (one line naming the file, the row and the value; the ingest writes
nothing) or, with ``skip_bad_rows``, splits the input into the rows to store and the rows to
quarantine (:meth:`datasets.lake.Lake.write_quarantine`).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from datasets.schema import SchemaError

__all__ = [
    "REASONS",
    "raise_for",
    "BadRowsError",
    "Screened",
    "screen_trades",
    "TS_MIN_MS",
    "QUARANTINE_COLUMNS",
    "ROW",
]

ROW = "_row"  # optional input column: 1-based line or row number in the source file
TS_MIN_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z
FUTURE_SLACK_MS = 86_400_000
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
QUARANTINE_COLUMNS = (
    "file",
    "row",
    "reason",
    "column",
    "value",
    "exchange",
    "symbol",
    "trade_id",
    "ts_ms",
    "price",
    "qty",
    "side",
)
_HINT = (
    "Nothing was written. Fix the source, or re-run with --skip-bad-rows to store the other rows "
    "and quarantine these under quarantine/ in the lake"
)


#: Quarantine reasons → what the message says.
REASONS = {
    "trade_id_not_int64": "not an integer inside int64",
    "ts_not_int64": "not an integer millisecond time inside int64",
    "ts_before_2009": "before 2009-01-01",
    "ts_in_future": "more than a day after the wall clock",
    "price_not_finite": "not a finite number",
    "price_not_positive": "not above zero",
    "qty_not_finite": "not a finite number",
    "qty_not_positive": "not above zero",
    "notional_not_finite": "so large that price × qty is not a finite number",
    "side_not_pm1": "not +1 (taker buy) or -1 (taker sell)",
    "duplicate_id_conflict": "the same trade id with other content",
}


class BadRowsError(SchemaError):
    """An input holds rows the lake does not store (shown as one ``Error:`` line)."""


@dataclass(frozen=True)
class Screened:
    """An input split by :func:`screen_trades`."""

    good: pd.DataFrame  # the input's rows that pass, in input order (the ``_row`` column kept if given)
    bad: pd.DataFrame  # one row per refused row: QUARANTINE_COLUMNS (values as text) + ``date`` it is filed under


def _show(v: Any) -> str:
    s = repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)
    return s if len(s) <= 40 else f"{s[:20]}...({len(s)} characters)"


def _as_float(values: pd.Series) -> np.ndarray:
    """Float view of a column that may hold Python ints of any size, strings or None (→ NaN/±inf)."""
    if values.dtype != object:
        return (
            values.to_numpy(np.float64, na_value=np.nan)
            if values.dtype.kind in "fiub"
            else _as_float(values.astype(object))
        )

    def one(v: Any) -> float:
        if v is None or isinstance(v, bool):
            return math.nan
        try:
            return float(v)
        except OverflowError:  # an int beyond float range
            return math.inf if v > 0 else -math.inf
        except (TypeError, ValueError):
            return math.nan

    return np.fromiter((one(v) for v in values), np.float64, len(values))


def _int64_ok(values: pd.Series) -> np.ndarray:
    """Whether each value is an integer inside int64."""
    if values.dtype.kind in "iu":
        if values.dtype == np.uint64:
            return values.to_numpy() <= np.uint64(_I64_MAX)
        return np.ones(len(values), dtype=bool)
    if values.dtype.kind == "f":
        f = values.to_numpy(np.float64)
        return np.isfinite(f) & (f == np.floor(f)) & (f >= -(2.0**63)) & (f < 2.0**63)

    def one(v: Any) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return False
        if isinstance(v, (int, np.integer)):
            return _I64_MIN <= int(v) <= _I64_MAX
        if isinstance(v, (float, np.floating)):
            return bool(math.isfinite(v) and float(v).is_integer() and -(2.0**63) <= v < 2.0**63)
        return False

    return np.fromiter((one(v) for v in values), bool, len(values))


def screen_trades(
    df: pd.DataFrame,
    *,
    what: str,
    rows: np.ndarray | list[int] | None = None,
    unit: str = "line",
    skip_bad_rows: bool = False,
    now_ms: int | None = None,
) -> Screened:
    """Check every row of a candidate bronze frame (see the module doc).

    Args:
        df: trades with at least ``trade_id, ts_ms, price, qty, side`` (``exchange``/``symbol``
            when known), in source order; any dtype (object columns of Python ints are fine).
        what: the source file (or request) named in messages.
        rows: each row's 1-based line/row number in the source (default: a ``_row`` column, else
            position + 1).
        unit: ``"line"`` or ``"row"``, how messages name a row.
        skip_bad_rows: return the bad rows instead of raising.
        now_ms: the wall clock (default: now) that bounds timestamps.

    Raises:
        BadRowsError: a bad row and not ``skip_bad_rows``; the message names the first one
            (and the other row of a conflicting duplicate) and how many there are.
    """
    n = len(df)
    if rows is None:
        rows = df[ROW].to_numpy(np.int64) if ROW in df.columns else np.arange(1, n + 1, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != n:
        raise ValueError(f"screen_trades: {len(rows)} row numbers for {n} rows")
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    reason = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)

    flagged = np.zeros(n, dtype=bool)

    def flag(mask: np.ndarray, why: str, col: str) -> None:
        new = mask & ~flagged
        if new.any():
            reason[new], column[new] = why, col
            flagged[new] = True

    if n:
        flag(~_int64_ok(df["trade_id"]), "trade_id_not_int64", "trade_id")
        ts_ok = _int64_ok(df["ts_ms"])
        ts = _as_float(df["ts_ms"])
        flag(~ts_ok | ~np.isfinite(ts), "ts_not_int64", "ts_ms")
        flag(ts < TS_MIN_MS, "ts_before_2009", "ts_ms")
        flag(ts > now + FUTURE_SLACK_MS, "ts_in_future", "ts_ms")
        for col in ("price", "qty"):
            v = _as_float(df[col])
            flag(~np.isfinite(v), f"{col}_not_finite", col)
            flag(np.isfinite(v) & ~(v > 0), f"{col}_not_positive", col)
        with np.errstate(over="ignore", invalid="ignore"):
            flag(~np.isfinite(_as_float(df["price"]) * _as_float(df["qty"])), "notional_not_finite", "qty")
        side = _as_float(df["side"])
        flag(~np.isin(side, (-1.0, 1.0)), "side_not_pm1", "side")
        if "ts_us" in df.columns:
            flag(~_int64_ok(df["ts_us"]), "ts_not_int64", "ts_us")
    other = np.full(n, -1, dtype=np.int64)  # the conflicting duplicate's row number
    if n - flagged.sum() > 1:
        _flag_conflicts(df, ~flagged, rows, reason, column, other)
    bad_pos = np.flatnonzero(reason != "")
    if len(bad_pos) and not skip_bad_rows:
        i = int(bad_pos[0])
        col = str(column[i])
        val = df[col].iloc[i]
        if reason[i] == "duplicate_id_conflict":
            j = int(np.flatnonzero((rows == other[i]))[0])
            a, b = df.iloc[i], df.iloc[j]
            diff = ", ".join(f"{c} {_show(a[c])} vs {_show(b[c])}" for c in ("price", "qty", "side") if a[c] != b[c])
            msg = (
                f"{what} {unit}s {min(rows[i], rows[j])} and {max(rows[i], rows[j])}: trade_id {_show(val)} "
                f"appears twice with different content ({diff})"
            )
        else:
            msg = f"{what} {unit} {rows[i]}: {col} {_show(val)} is {REASONS[str(reason[i])]}"
        more = len(bad_pos) - 1
        raise BadRowsError(f"{msg}{f'; {more} more bad rows' if more else ''}. {_HINT}")
    good = df.iloc[np.flatnonzero(reason == "")] if len(bad_pos) else df
    bad = pd.DataFrame(
        {
            "file": what,
            "row": rows[bad_pos],
            "reason": reason[bad_pos].astype(str),
            "column": column[bad_pos].astype(str),
            "value": [_show(df[str(column[i])].iloc[i]) for i in bad_pos],
            **{c: (df[c].iloc[bad_pos].map(str).to_numpy() if c in df.columns else "") for c in QUARANTINE_COLUMNS[5:]},
        },
        columns=list(QUARANTINE_COLUMNS),
    )
    bad["date"] = quarantine_date(df, bad_pos) if len(bad_pos) else []
    return Screened(good, bad)


def raise_for(bad: pd.DataFrame, unit: str = "line") -> None:
    """Raise :class:`BadRowsError` for the first row of a ``Screened.bad`` frame (several inputs'
    refused rows gathered before refusing)."""
    if bad.empty:
        return
    first = bad.iloc[0]
    if first["reason"] == "duplicate_id_conflict":
        pair = bad[(bad["reason"] == first["reason"]) & (bad["file"] == first["file"])]
        pair = pair[pair["trade_id"] == first["trade_id"]]
        a, b = pair.iloc[0], pair.iloc[min(1, len(pair) - 1)]
        diff = ", ".join(f"{c} {a[c]} vs {b[c]}" for c in ("price", "qty", "side") if a[c] != b[c])
        lo, hi = sorted((int(a["row"]), int(b["row"])))
        msg = f"{first['file']} {unit}s {lo} and {hi}: trade_id {first['value']} appears twice with different content ({diff})"
    else:
        msg = f"{first['file']} {unit} {int(first['row'])}: {first['column']} {first['value']} is {REASONS[str(first['reason'])]}"
    more = len(bad) - 1
    raise BadRowsError(f"{msg}{f'; {more} more bad rows' if more else ''}. {_HINT}")


def _flag_conflicts(
    df: pd.DataFrame, ok: np.ndarray, rows: np.ndarray, reason: np.ndarray, column: np.ndarray, other: np.ndarray
) -> None:
    """Mark both rows of a trade id that repeats with another price, qty or side."""
    pos = np.flatnonzero(ok)
    ids = df["trade_id"].iloc[pos].to_numpy(np.int64)
    srt = np.sort(ids)
    repeated = srt[1:][srt[1:] == srt[:-1]]
    if not len(repeated):
        return
    pos = pos[np.isin(ids, repeated)]  # only rows whose id repeats can conflict
    key_cols = [c for c in ("exchange", "symbol") if c in df.columns]
    sub = pd.DataFrame(
        {
            **{c: df[c].iloc[pos].to_numpy() for c in key_cols},
            "trade_id": df["trade_id"].iloc[pos].to_numpy(np.int64),
            "price": _as_float(df["price"].iloc[pos]),
            "qty": _as_float(df["qty"].iloc[pos]),
            "side": _as_float(df["side"].iloc[pos]),
            "pos": pos,
        }
    )
    keys = key_cols + ["trade_id"]
    dup = sub.duplicated(keys, keep=False)
    if not dup.any():
        return
    sub = sub[dup.to_numpy()]
    vals = ["price", "qty", "side"]
    grouped = sub.groupby(keys, sort=False)
    firsts = grouped[vals].transform("first")
    first_pos = grouped["pos"].transform("first").to_numpy(np.int64)
    differs = (sub[vals].to_numpy() != firsts.to_numpy()).any(axis=1)
    for p, f in zip(sub["pos"].to_numpy(np.int64)[differs], first_pos[differs]):
        for a, b in ((int(p), int(f)), (int(f), int(p))):
            if reason[a] == "":
                reason[a], column[a], other[a] = "duplicate_id_conflict", "trade_id", rows[b]


def quarantine_date(df: pd.DataFrame, bad_positions: np.ndarray, today: dt.date | None = None) -> list[dt.date]:
    """UTC day each bad row is filed under: its own ``ts_ms`` if plausible, else the nearest earlier
    (then later) plausible row's, else ``today``."""
    ts = _as_float(df["ts_ms"])
    plausible = np.isfinite(ts) & (ts >= TS_MIN_MS) & (ts < 2.0**62)
    days = pd.Series(np.where(plausible, np.floor(np.where(plausible, ts, 0) / 86_400_000), np.nan))
    days = days.ffill().bfill()
    fallback = today or dt.datetime.now(dt.timezone.utc).date()
    out = []
    for i in bad_positions:
        d = days.iloc[int(i)]
        out.append(fallback if pd.isna(d) else dt.date(1970, 1, 1) + dt.timedelta(days=int(d)))
    return out
