"""Data quality reports per bronze partition, lake status, and lineage of what a run read.

A report is a small JSON object stored next to the data it describes::

    quality/bronze/exchange=E/symbol=S/date=YYYY-MM-DD/report.json

It names the partition's ``content_sha256``, so a report whose partition was rewritten since is
recognised as stale and recomputed by :func:`refresh_quality`. The checks themselves are one pure
function, :func:`partition_quality` (frame in, dict out); only :func:`refresh_quality`,
:func:`read_quality`, :func:`lake_status` and :func:`lineage` touch the lake.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
from typing import Any, Iterable

import numpy as np
import pandas as pd

from datasets.lake import Lake, Partition

__all__ = [
    "QUALITY_VERSION",
    "partition_quality",
    "quality_key",
    "read_quality",
    "write_quality",
    "refresh_quality",
    "lake_status",
    "lineage",
    "span_id_report",
    "cross_source_duplicates",
    "ISSUE_CHECKS",
    "SEQUENTIAL_IDS",
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


def quality_key(p: Partition) -> str:
    """Store key of the report of partition ``p``."""
    bits = ["quality", p.layer] + ([p.variant] if p.variant else [])
    bits += [f"exchange={p.exchange}", f"symbol={p.symbol}", f"date={p.date.isoformat()}", "report.json"]
    return "/".join(bits)


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
    key = pd.DataFrame({
        "ts": df["ts_ms"].to_numpy(np.int64),
        "px": df["price"].to_numpy(np.float64),
        "q": np.round(df["qty"].to_numpy(np.float64) * 1e8),
        "s": df["side"].to_numpy(np.int64),
    })
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


def partition_quality(df: pd.DataFrame, p: Partition, *, sha256: str | None = None,
                      id_space: str | None = None) -> dict[str, Any]:
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
        sequential = not p.exchange.startswith("bybit") and bool(uniq.size) and (
            int(uniq[-1]) - int(uniq[0]) + 1) <= 2 * uniq.size
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


def read_quality(lake: Lake, p: Partition) -> dict[str, Any] | None:
    """The stored report of ``p``, or None if there is none (or it cannot be read)."""
    try:
        return json.loads(lake.store.get(quality_key(p)))
    except KeyError:
        return None
    except (ValueError, UnicodeDecodeError):
        return None  # a damaged report is recomputed, never trusted


def write_quality(
    lake: Lake, p: Partition, df: pd.DataFrame | None = None, *, sha256: str | None = None,
    meta: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Compute and store the report of ``p``.

    Args:
        df, sha256, meta: the partition's rows as stored, its ``content_sha256`` and its footer
            extras (``id_space``), when the caller has them (a writer that just wrote them);
            otherwise they are read from the lake.
    """
    if df is None or sha256 is None or meta is None:
        df, meta = lake.read_with_meta(p)
        sha256, size = meta.get("content_sha256"), int(meta.get("bytes", 0))
    else:
        size = lake.store.size(p.key)
    report = partition_quality(df, p, sha256=sha256, id_space=meta.get("id_space"))
    from datasets.lake import partition_coverage

    cov, src = partition_coverage(meta, df["ts_ms"].to_numpy(np.int64) if len(df) else None)
    report["coverage"], report["coverage_source"] = cov, src
    report["bytes"] = size
    lake.store.put(quality_key(p), json.dumps(report, indent=1, sort_keys=True).encode())
    return report


def refresh_quality(
    lake: Lake,
    parts: Iterable[Partition] | None = None,
    *,
    force: bool = False,
    workers: int = 4,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Make sure every partition in ``parts`` (default: all bronze) has a current report.

    A report is current when it exists and names the partition's present ``content_sha256``.
    Returns the reports (recomputed or stored), in partition order.
    """
    parts = sorted(parts if parts is not None else lake.partitions("bronze"))

    def one(p: Partition) -> dict[str, Any]:
        old = None if force else read_quality(lake, p)
        if old is not None and old.get("version") == QUALITY_VERSION:
            sha = lake.partition_meta(p).get("content_sha256")
            if old.get("content_sha256") == sha:
                return old
        return write_quality(lake, p)

    out: list[dict[str, Any]] = []
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        it = pool.map(one, parts)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(parts), desc="quality", unit="part", file=None, leave=False)
        out.extend(it)
    return out


def _date_gaps(days: list[dt.date]) -> int:
    if not days:
        return 0
    return (max(days) - min(days)).days + 1 - len(set(days))


def lake_status(lake: Lake, layers: Iterable[str] = ("raw", "bronze", "silver", "gold"), *, workers: int = 8) -> list[dict[str, Any]]:
    """One summary row per (layer, exchange, symbol), or per source for ``raw``.

    Rows: ``layer``, ``group`` (``exchange/symbol``, ``variant`` prefix for gold, or the raw
    source), ``partitions`` (files for raw), ``first``/``last`` date, ``missing_days`` inside that
    span, ``rows`` and ``bytes`` (bronze: from the quality reports; None where unknown),
    ``checked`` (partitions with a current report), ``issues`` (check name → partitions failing it).
    Reading only listings and the small reports keeps this cheap on a remote lake.
    """
    from datasets.retention import key_date

    out: list[dict[str, Any]] = []
    for layer in layers:
        if layer == "raw":
            groups: dict[str, list[str]] = {}
            for key in lake.store.list("raw/"):
                source = key.split("/", 2)[1] if key.count("/") >= 2 else "?"
                groups.setdefault(source, []).append(key)
            for source, keys in sorted(groups.items()):
                days = [d for d in map(key_date, keys) if d is not None]
                out.append({"layer": "raw", "group": source, "partitions": len(keys),
                            "first": min(days).isoformat() if days else None,
                            "last": max(days).isoformat() if days else None,
                            "missing_days": None, "rows": None, "bytes": None, "checked": None, "issues": {}})
            continue
        parts = lake.partitions(layer) if layer != "gold" else _gold_partitions(lake)
        by: dict[tuple[str, str, str], list[Partition]] = {}
        for p in parts:
            by.setdefault((p.variant, p.exchange, p.symbol), []).append(p)
        reports: dict[Partition, dict | None] = {}
        if layer == "bronze" and parts:
            with cf.ThreadPoolExecutor(max(1, workers)) as pool:
                reports = dict(zip(parts, pool.map(lambda p: read_quality(lake, p), parts)))
        for (variant, ex, sym), ps in sorted(by.items()):
            days = [p.date for p in ps]
            reps = [reports.get(p) for p in ps]
            known = [r for r in reps if r is not None]
            issues: dict[str, int] = {}
            for r in known:
                for name in r.get("issues", []):
                    issues[name] = issues.get(name, 0) + 1
            complete = layer == "bronze" and len(known) == len(ps)
            out.append({
                "layer": layer,
                "group": (f"{variant}/" if variant else "") + f"{ex}/{sym}",
                "partitions": len(ps),
                "first": min(days).isoformat(),
                "last": max(days).isoformat(),
                "missing_days": _date_gaps(days),
                "rows": sum(int(r["rows"]) for r in known) if complete else None,
                "bytes": sum(int(r.get("bytes", 0)) for r in known) if complete else None,
                "checked": len(known) if layer == "bronze" else None,
                "issues": issues,
            })
    return out


def _gold_partitions(lake: Lake) -> list[Partition]:
    """Gold partitions sit under a ``signal=<id>`` variant folder; list them all."""
    out = []
    for key in lake.store.list("gold/"):
        p = Partition.from_key(key)
        if p is not None and p.layer == "gold":
            out.append(p)
    return sorted(out)


def span_id_report(lake: Lake, partitions: Iterable[Partition]) -> list[dict[str, Any]]:
    """Per bronze partition: what its ids are and whether it looks stored twice (for `bt audit`).

    Reads each partition's stored quality report when it is current (same ``content_sha256`` and
    :data:`QUALITY_VERSION`), else computes it in memory (nothing is written). Returns one dict
    per partition, in partition order: ``key``, ``exchange``, ``symbol``, ``date``, ``id_space``
    (``"unknown"`` for partitions written before id spaces were recorded), ``ids_sequential``,
    ``missing_ids`` (None where ids are not meant to be consecutive), ``duplicate_ids``,
    ``cross_source_duplicates``, ``cross_source_share``, ``coverage_source`` and ``issues``.
    """
    out = []
    for p in sorted(set(partitions)):
        q = read_quality(lake, p)
        df = meta = None
        if q is None or q.get("version") != QUALITY_VERSION:
            df, meta = lake.read_with_meta(p)
        else:
            meta = lake.partition_meta(p)
            if q.get("content_sha256") != meta.get("content_sha256"):
                df = lake.read_partition(p)
        if df is not None:
            q = partition_quality(df, p, sha256=meta.get("content_sha256"), id_space=meta.get("id_space"))
        out.append({
            "key": p.key, "exchange": p.exchange, "symbol": p.symbol, "date": p.date.isoformat(),
            "rows": q["rows"], "id_space": q["id_space"], "ids_sequential": q["ids_sequential"],
            "missing_ids": q["missing_ids"], "duplicate_ids": q["duplicate_ids"],
            "cross_source_duplicates": q["cross_source_duplicates"],
            "cross_source_share": q["cross_source_share"],
            "coverage_source": meta.get("coverage_source") or "trades",
            "issues": list(q["issues"]),
        })
    return out


def lineage(lake: Lake, parts: Iterable[Partition]) -> list[dict[str, Any]]:
    """What a run read: one ``{"key", "sha256", "rows"}`` per partition, sorted by key.

    ``sha256`` is the partition's ``content_sha256`` (a hash of its columns and values, stored in
    the Parquet footer), so the same data written twice names the same hash on every backend.
    Record it in ``metrics.json`` and as MLflow tags; :mod:`datasets.retention` keeps the
    partitions a registered run depends on when its keys are listed in ``registry/protected.json``.
    """
    out = []
    for p in sorted(set(parts)):
        meta = lake.partition_meta(p)
        out.append({"key": p.key, "sha256": meta.get("content_sha256"), "rows": int(meta["rows"])})
    return sorted(out, key=lambda d: d["key"])
