"""Data quality reports per bronze partition, lake status, and lineage of what a run read.

A report is a small JSON object stored next to the data it describes::

    quality/bronze/exchange=E/symbol=S/date=YYYY-MM-DD/report.json

It names the partition's ``content_sha256``, so a report whose partition was rewritten since is
recognised as stale and recomputed by :func:`refresh_quality`. The checks themselves are one pure
function, :func:`partition_quality` (frame in, dict out; it lives in :mod:`datasets.lake._quality`
so that the lake can write a report with every bronze partition without importing this module);
the functions here read, refresh and summarise the reports of a lake.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
from typing import Any, Iterable

from datasets.lake import Lake, Partition
from datasets.lake._keys import key_date, quality_key
from datasets.lake._lake import write_quality
from datasets.lake._quality import (
    ISSUE_CHECKS,
    QUALITY_VERSION,
    SEQUENTIAL_IDS,
    cross_source_duplicates,
    partition_quality,
)

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


def read_quality(lake: Lake, p: Partition) -> dict[str, Any] | None:
    """The stored report of ``p``, or None if there is none (or it cannot be read)."""
    try:
        return json.loads(lake.store.get(quality_key(p)))
    except KeyError:
        return None
    except (ValueError, UnicodeDecodeError):
        return None  # a damaged report is recomputed, never trusted


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
    A stale one is recomputed under the partition's writer lock (``Store.lock``, as
    :meth:`Lake.write` holds it), so a concurrent ingest's report is never replaced by one of an
    older version of the partition. Returns the reports (recomputed or stored), in partition order.
    """
    parts = sorted(parts if parts is not None else lake.partitions("bronze"))

    def current(p: Partition) -> dict[str, Any] | None:
        old = None if force else read_quality(lake, p)
        if old is not None and old.get("version") == QUALITY_VERSION:
            if old.get("content_sha256") == lake.partition_meta(p).get("content_sha256"):
                return old
        return None

    def one(p: Partition) -> dict[str, Any]:
        old = current(p)
        if old is not None:
            return old
        with lake.store.lock(p.key):
            old = None if force else current(p)  # another writer may have refreshed it meanwhile
            return old if old is not None else write_quality(lake, p)

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


def lake_status(
    lake: Lake, layers: Iterable[str] = ("raw", "bronze", "silver", "gold"), *, workers: int = 8
) -> list[dict[str, Any]]:
    """One summary row per (layer, exchange, symbol), or per source for ``raw``.

    Rows: ``layer``, ``group`` (``exchange/symbol``, ``variant`` prefix for gold, or the raw
    source), ``partitions`` (files for raw), ``first``/``last`` date, ``missing_days`` inside that
    span, ``rows`` and ``bytes`` (bronze: from the quality reports; None where unknown),
    ``checked`` (partitions with a current report), ``issues`` (check name → partitions failing it).
    Reading only listings and the small reports keeps this cheap on a remote lake.
    """

    out: list[dict[str, Any]] = []
    for layer in layers:
        if layer == "raw":
            groups: dict[str, list[str]] = {}
            for key in lake.store.list("raw/"):
                source = key.split("/", 2)[1] if key.count("/") >= 2 else "?"
                groups.setdefault(source, []).append(key)
            for source, keys in sorted(groups.items()):
                days = [d for d in map(key_date, keys) if d is not None]
                out.append(
                    {
                        "layer": "raw",
                        "group": source,
                        "partitions": len(keys),
                        "first": min(days).isoformat() if days else None,
                        "last": max(days).isoformat() if days else None,
                        "missing_days": None,
                        "rows": None,
                        "bytes": None,
                        "checked": None,
                        "issues": {},
                    }
                )
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
            out.append(
                {
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
                }
            )
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
        assert q is not None  # read above, or computed from the partition
        out.append(
            {
                "key": p.key,
                "exchange": p.exchange,
                "symbol": p.symbol,
                "date": p.date.isoformat(),
                "rows": q["rows"],
                "id_space": q["id_space"],
                "ids_sequential": q["ids_sequential"],
                "missing_ids": q["missing_ids"],
                "duplicate_ids": q["duplicate_ids"],
                "cross_source_duplicates": q["cross_source_duplicates"],
                "cross_source_share": q["cross_source_share"],
                "coverage_source": meta.get("coverage_source") or "trades",
                "issues": list(q["issues"]),
            }
        )
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
