"""The checks of a bronze partition's data-quality report: one pure function, frame in, dict out.

:func:`partition_quality` is what :meth:`datasets.lake.Lake.write` stores beside every bronze
partition (through :func:`datasets.lake._lake.write_quality`); :mod:`datasets.quality` reads the
reports back, refreshes stale ones and summarises a lake.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from datasets.lake._keys import Partition

__all__ = [
    "QUALITY_VERSION",
    "SEQUENTIAL_IDS",
    "ISSUE_CHECKS",
    "DUPLICATE_SHARE_AGGREGATED",
    "DUPLICATE_SHARE_FILLS",
    "DUPLICATE_MIN_ROWS",
    "cross_source_duplicates",
    "partition_quality",
]

#: 2: id spaces (``id_space``, ``missing_ids`` only where ids are consecutive) and
#: ``cross_source_duplicates``.
QUALITY_VERSION = 2
DAY_S = 86_400

#: Id spaces (footer ``id_space``, see :data:`datasets.lake.ID_SPACES`) whose ids count up by one
#: per row, so holes in them mean missing trades. Fill ids of recordings (merged fills keep their
#: first id), Bybit's UUID-derived ids and OKX WebSocket ids (the channel may aggregate fills) have
#: holes by design and are not checked. Partitions of unknown id space (written before id spaces
#: were recorded) are checked when their ids nearly fill their range, except on Bybit.
SEQUENTIAL_IDS = {
    "binance_agg_trade": True,
    "okx_trade_id": True,
    "binance_fill": False,
    "bybit_match_uuid": False,
    "bybit_trade_id": False,
    "okx_ws_trade_id": False,
}

#: Cross-source duplicates: rows with the same ts_ms, price, qty and side as an earlier row but
#: another trade id. A source that aggregates fills (Binance aggTrades, merged @trade fills)
#: rarely prints two such rows (0.03 % of a recorded BTCUSDT hour), one that prints single fills
#: (Bybit, OKX) often does (a taker order filling several makers at one price: about 10 % on the
#: recorded Bybit minutes). A day stored twice from two sources shows about 50 %. The check flags
#: a partition when the share of such rows reaches the threshold of its kind and at least
#: ``DUPLICATE_MIN_ROWS`` rows are involved.
DUPLICATE_SHARE_AGGREGATED = 0.01
DUPLICATE_SHARE_FILLS = 0.25
DUPLICATE_MIN_ROWS = 10

#: Report fields that flag a problem when non-zero.
ISSUE_CHECKS = (
    "duplicate_ids",
    "cross_source_duplicates",
    "missing_ids",
    "non_positive_prices",
    "non_positive_qty",
    "out_of_order_ts",
    "ts_outside_date",
    "bad_sides",
)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Same as ``np.unique(a)``; sorting is faster than NumPy's hash path on millions of int64."""
    s = np.sort(a, kind="stable") if a.size and (np.diff(a) < 0).any() else a
    return s[np.r_[True, s[1:] != s[:-1]]] if s.size else s


def _longest_quiet_s(ts_ms: np.ndarray, day: dt.date) -> float:
    """Longest stretch without trades in the UTC day, counting from midnight and to the next one."""
    start = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() * 1000)
    inside = ts_ms[(ts_ms >= start) & (ts_ms < start + DAY_S * 1000)]
    if inside.size == 0:
        return float(DAY_S)
    if (np.diff(inside) < 0).any():
        inside = np.sort(inside)
    edges = np.concatenate(([start], inside, [start + DAY_S * 1000]))
    return float(np.diff(edges).max()) / 1000.0


def cross_source_duplicates(df: pd.DataFrame) -> int:
    """Rows with the ts_ms, price, qty (to 1e-8) and side of an earlier row but another trade id."""
    if len(df) < 2:
        return 0
    key = pd.DataFrame(
        {
            "ts": df["ts_ms"].to_numpy(np.int64),
            "px": df["price"].to_numpy(np.float64),
            "q": np.round(df["qty"].to_numpy(np.float64) * 1e8),
            "s": df["side"].to_numpy(np.int64),
        }
    )
    same = key.duplicated(keep="first").to_numpy()
    if not same.any():
        return 0
    # The same id twice is a duplicate_ids problem, not two sources.
    with_id = key.assign(id=df["trade_id"].to_numpy(np.int64)).duplicated(keep="first").to_numpy()
    return int((same & ~with_id).sum())


def _aggregated(id_space: str | None, exchange: str) -> bool:
    if id_space in ("binance_agg_trade", "binance_fill"):
        return True
    return id_space in (None, "unknown") and exchange.startswith("binance")


def partition_quality(
    df: pd.DataFrame, p: Partition, *, sha256: str | None = None, id_space: str | None = None
) -> dict[str, Any]:
    """Checks of one bronze partition's trades (stored order), as a JSON-able dict.

    Args:
        df: the partition's rows as stored (bronze columns).
        p: which partition (its date bounds the coverage checks).
        sha256: the partition's ``content_sha256`` to record (ties the report to the data).
        id_space: the partition's id space (footer ``id_space``); None: unknown.

    Returns:
        ``rows``, ``first_ts_ms``/``last_ts_ms``, ``seconds_without_trades`` (whole UTC seconds of
        the day with no trade), ``longest_quiet_s``, ``id_space`` (``"unknown"`` when not
        recorded), ``id_gaps``/``missing_ids`` (id spaces of consecutive ids only, see
        :data:`SEQUENTIAL_IDS`, else None), ``duplicate_ids`` (rows whose id occurs before),
        ``cross_source_duplicates`` (see :func:`cross_source_duplicates`) with its share
        ``cross_source_share`` and the threshold it is judged by, counts of
        ``non_positive_prices``, ``non_positive_qty``, ``out_of_order_ts`` (rows earlier than
        the row before), ``ts_outside_date``, ``bad_sides``, and ``issues``: names of failed checks.
    """
    n = len(df)
    ts = df["ts_ms"].to_numpy(np.int64) if n else np.empty(0, np.int64)
    ids = df["trade_id"].to_numpy(np.int64) if n else np.empty(0, np.int64)
    price = df["price"].to_numpy(np.float64) if n else np.empty(0)
    qty = df["qty"].to_numpy(np.float64) if n else np.empty(0)
    side = df["side"].to_numpy(np.int64) if n else np.empty(0, np.int64)
    day_start_s = int(dt.datetime.combine(p.date, dt.time(), dt.timezone.utc).timestamp())

    uniq = _sorted_unique(ids)
    sequential = SEQUENTIAL_IDS.get(id_space) if id_space else None
    if sequential is None:  # unknown id space: ids that nearly fill their range look sequential
        sequential = (
            not p.exchange.startswith("bybit")
            and bool(uniq.size)
            and (int(uniq[-1]) - int(uniq[0]) + 1) <= 2 * uniq.size
        )
    if sequential and uniq.size:
        steps = np.diff(uniq)
        id_gaps: int | None = int((steps > 1).sum())
        missing: int | None = int((steps[steps > 1] - 1).sum())
    else:
        id_gaps = missing = None if not sequential else 0

    secs = ts // 1000 - day_start_s
    secs_in_day = _sorted_unique(secs[(secs >= 0) & (secs < DAY_S)])
    report: dict[str, Any] = {
        "version": QUALITY_VERSION,
        "key": p.key,
        "layer": p.layer,
        "exchange": p.exchange,
        "symbol": p.symbol,
        "date": p.date.isoformat(),
        "content_sha256": sha256,
        "rows": n,
        "first_ts_ms": int(ts.min()) if n else None,
        "last_ts_ms": int(ts.max()) if n else None,
        "seconds_without_trades": int(DAY_S - secs_in_day.size),
        "longest_quiet_s": _longest_quiet_s(ts, p.date),
        "ids_sequential": bool(sequential),
        "id_gaps": id_gaps,
        "missing_ids": missing,
        "duplicate_ids": int(n - uniq.size),
        "id_space": id_space or "unknown",
        "non_positive_prices": int((~(price > 0)).sum()),  # NaN counts as bad too
        "non_positive_qty": int((~(qty > 0)).sum()),
        "out_of_order_ts": int((np.diff(ts) < 0).sum()) if n > 1 else 0,
        "ts_outside_date": int(((secs < 0) | (secs >= DAY_S)).sum()),
        "bad_sides": int((~np.isin(side, (-1, 1))).sum()),
    }
    xdup = cross_source_duplicates(df) if n else 0
    limit = DUPLICATE_SHARE_AGGREGATED if _aggregated(id_space, p.exchange) else DUPLICATE_SHARE_FILLS
    report["cross_source_duplicates"] = xdup
    report["cross_source_share"] = round(xdup / n, 6) if n else 0.0
    report["cross_source_threshold"] = limit
    flagged = xdup >= DUPLICATE_MIN_ROWS and xdup >= limit * n
    report["issues"] = [c for c in ISSUE_CHECKS if report.get(c) and (c != "cross_source_duplicates" or flagged)]
    return report
