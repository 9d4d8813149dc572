"""The lake catalogue: a fixed partition scheme over a byte store.

Layout (Hive partitions, one Parquet object per partition so that a write is one atomic put)::

    raw/<source>/<path as received>                                  bytes, byte for byte
    quarantine/<source>/exchange=E/symbol=S/date=.../part-0.parquet  rows refused at ingest
    bronze/exchange=E/symbol=S/date=YYYY-MM-DD/part-0.parquet         trades (docs/spec.md §2)
    silver/exchange=E/symbol=S/date=YYYY-MM-DD/part-0.parquet         1 s bars
    gold/signal=<config_id>/exchange=E/symbol=S/date=.../part-0.parquet  whale events

Every Parquet object carries the SHA-256 of its content in its footer metadata, so an
identical re-write is detected without rewriting and lineage can name exactly what a run read.

Bronze footers also say what the trades are worth as evidence (see ``docs/datasets.md``):

- ``coverage``: JSON list of ``[from_ms, to_ms)`` intervals of the day that the sources recorded
  in full (an archive: the whole day; a recording: its first to last frame; a REST pull: the
  range it paged through). Merging two writes unions them. ``coverage_source`` names the kinds
  of source (``archive``, ``recording``, ``rest``; ``trades`` for the first-to-last-trade span
  assumed for partitions written before coverage was recorded).
- ``id_space``: what the ``trade_id`` numbers are (``binance_agg_trade``, ``binance_fill``, ...;
  :data:`ID_SPACES`). Two id spaces number the same trades differently, so merging them would
  store every trade twice: such a write is refused (:class:`IdSpaceConflictError`) unless it
  replaces the partition. Partitions without it (older writes) are of unknown id space.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import datetime as dt
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.lake._keys import PART_FILE, Partition, quality_key
from datasets.lake._open import open_store
from datasets.lake._quality import partition_quality
from datasets.lake._store import Store
from datasets.schema import sort_trades, validate_bronze

__all__ = [
    "Lake",
    "Partition",
    "WriteResult",
    "LakeError",
    "LakeConflictError",
    "NoDataError",
    "IdSpaceConflictError",
    "LAYERS",
    "ID_SPACES",
    "content_sha256",
    "merge_intervals",
    "partition_coverage",
    "write_quality",
    "quarantine_key",
]

LAYERS = ("raw", "bronze", "silver", "gold")
HASH_KEY = b"whalebt.content_sha256"
WriteMode = Literal["error", "merge", "replace"]


class LakeError(WhalebtError, RuntimeError):
    """Base class of lake errors shown to users."""


class LakeConflictError(LakeError):
    """A write would change data already stored, and the mode does not allow it."""


class NoDataError(LakeError):
    """A read found no partition for the requested span."""


class IdSpaceConflictError(LakeConflictError):
    """A bronze write whose trade ids are of another id space than the partition's."""


#: Id spaces of bronze ``trade_id`` (footer key ``id_space``) → what the ids are.
ID_SPACES = {
    "binance_agg_trade": "Binance aggregate-trade id `a` (archive aggTrades, REST aggTrades, @aggTrade stream); "
    "consecutive",
    "binance_fill": "Binance raw fill id `t` of the @trade stream; fills merged into aggregate-like rows keep "
    "their first fill's id, so ids have holes by design",
    "bybit_match_uuid": "Bybit match UUID (archive trdMatchID, REST execId, WebSocket i) → its top 63 bits; "
    "not ordered",
    "bybit_trade_id": "Bybit numeric trade id (spot WebSocket i)",
    "okx_trade_id": "OKX tradeId of single trades (daily archive, REST history-trades); counts up per instrument",
    "okx_ws_trade_id": "OKX tradeId of the WebSocket trades channel, which may aggregate fills under one id",
}
COVERAGE_KEY = "coverage"
DAY_MS = 86_400_000


def merge_intervals(intervals) -> list[list[int]]:
    """Sorted ``[from, to)`` intervals with overlapping or touching ones merged; empty ones dropped."""
    iv = sorted((int(a), int(b)) for a, b in intervals if int(b) > int(a))
    out: list[list[int]] = []
    for a, b in iv:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def partition_coverage(meta: dict[str, str], ts_ms: np.ndarray | None = None) -> tuple[list[list[int]], str]:
    """(covered intervals, coverage source) of a bronze partition from its footer metadata.

    Partitions written before coverage was recorded count as covering their first to last trade
    (source ``"trades"``); pass their ``ts_ms`` (sorted or not) for that.
    """
    if meta.get(COVERAGE_KEY):
        return merge_intervals(json.loads(meta[COVERAGE_KEY])), meta.get("coverage_source", "")
    if ts_ms is None or len(ts_ms) == 0:
        return [], "trades"
    return [[int(np.min(ts_ms)), int(np.max(ts_ms)) + 1]], "trades"


@dataclass(frozen=True)
class WriteResult:
    partition: Partition
    rows: int
    sha256: str
    changed: bool
    meta: dict[str, str] | None = None  # the writer's footer extras (bronze: coverage, id_space)


def _footer_meta(pf: pq.ParquetFile, nbytes: int) -> dict[str, str]:
    md = pf.metadata
    out = {
        k.decode().removeprefix("whalebt."): v.decode()
        for k, v in (md.metadata or {}).items()
        if k.startswith(b"whalebt.")
    }
    out["rows"] = str(md.num_rows)
    out["bytes"] = str(nbytes)
    return out


def content_sha256(df: pd.DataFrame) -> str:
    """A hash of a frame's columns, dtypes and values (independent of the Parquet writer)."""
    h = hashlib.sha256()
    # String columns count as "string" whether pandas holds them as object or str dtype.
    kinds = [
        (str(c), str(t) if pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) else "string")
        for c, t in df.dtypes.items()
    ]
    h.update(json.dumps(kinds).encode())
    h.update(str(len(df)).encode())
    for col in df.columns:
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
        else:  # strings: the distinct values in order of appearance, then each row's code
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            h.update(json.dumps([str(u) for u in uniques]).encode())
            h.update(codes.astype(np.int64).tobytes())
    return h.hexdigest()


def _to_parquet_bytes(df: pd.DataFrame, sha: str, extra_meta: dict[str, str] | None) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[HASH_KEY] = sha.encode()
    for k, v in (extra_meta or {}).items():
        meta[f"whalebt.{k}".encode()] = v.encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _bronze_meta(
    p: Partition,
    merged: pd.DataFrame,
    new_rows: pd.DataFrame,
    sha: str,
    old: pd.DataFrame | None,
    old_meta: dict[str, str],
    coverage,
    coverage_source: str | None,
    id_space: str | None,
) -> dict[str, str]:
    """Footer extras of a bronze write: unioned coverage and the id space (see the module doc)."""
    out: dict[str, str] = {}
    intervals: list = []
    sources: set[str] = set()
    if old_meta:
        if old is None and not old_meta.get(COVERAGE_KEY):
            old_cov: list[list[int]] = []
            old_src = ""  # not merging the rows: nothing to infer coverage from
        else:
            old_ts = old["ts_ms"].to_numpy(np.int64) if old is not None else None
            old_cov, old_src = partition_coverage(old_meta, old_ts)
        intervals += old_cov
        sources |= {s for s in old_src.split(",") if s}
    if coverage is not None:
        intervals += [list(iv) for iv in coverage]
        sources.add(coverage_source or "unknown")
    elif len(new_rows):  # a writer that does not say: its trades' own span
        ts = new_rows["ts_ms"].to_numpy(np.int64)
        intervals.append([int(ts.min()), int(ts.max()) + 1])
        sources.add("trades")
    out[COVERAGE_KEY] = json.dumps(merge_intervals(intervals), separators=(",", ":"))
    out["coverage_source"] = ",".join(sorted(sources))
    have = old_meta.get("id_space")
    if have:
        out["id_space"] = have
    elif id_space and (not old_meta or old is None or sha == content_sha256(new_rows)):
        # A new partition, a replaced one, or one whose stored rows all came back in this write.
        out["id_space"] = id_space
    return out


def _as_date(x: str | dt.date | dt.datetime) -> dt.date:
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    return dt.date.fromisoformat(str(x))


class Lake:
    """Medallion lake on a :class:`~datasets.lake.Store` (local, memory or Azure)."""

    def __init__(self, store: Store | str | os.PathLike[str]):
        self.store = store if isinstance(store, Store) else open_store(store)

    @property
    def uri(self) -> str:
        return self.store.uri

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # ---------------------------------------------------------------- raw layer
    def put_raw(self, source: str, relpath: str, data: bytes) -> bool:
        """Keep a source file byte for byte under ``raw/<source>/<relpath>``.

        Returns True if written, False if an identical copy was already there.
        Raises LakeConflictError if a *different* file is stored under that name.
        """
        key = f"raw/{source}/{relpath.lstrip('/')}"
        with self.store.lock(key):
            if self.store.exists(key):
                old = self.store.get(key)
                if old == data:
                    return False
                raise LakeConflictError(
                    f"raw file {key} already exists with different content "
                    f"(stored sha256 {hashlib.sha256(old).hexdigest()[:12]}, "
                    f"new {hashlib.sha256(data).hexdigest()[:12]}); raw files are immutable: "
                    "delete it with `datasets retain` or ingest into another lake"
                )
            self.store.put(key, data)
            return True

    def raw_keys(self, source: str = "") -> list[str]:
        return self.store.list(f"raw/{source}" if source else "raw/")

    # ---------------------------------------------------------------- tabular layers
    def partitions(
        self,
        layer: str,
        exchange: str | None = None,
        symbol: str | None = None,
        variant: str = "",
        start: str | dt.date | None = None,
        end: str | dt.date | None = None,
    ) -> list[Partition]:
        """Partitions of a layer, optionally filtered, sorted by (exchange, symbol, date)."""
        if layer not in LAYERS[1:]:
            raise LakeError(f"unknown layer {layer!r}; expected one of {LAYERS[1:]}")
        prefix = layer + "/"
        if variant:
            prefix += variant + "/"
        if exchange:
            prefix += f"exchange={exchange}/"
            if symbol:
                prefix += f"symbol={symbol}/"
        lo = _as_date(start) if start is not None else None
        hi = _as_date(end) if end is not None else None
        out = []
        for key in self.store.list(prefix):
            p = Partition.from_key(key)
            if p is None or p.variant != variant:
                continue
            if lo and p.date < lo or hi and p.date > hi:
                continue
            out.append(p)
        return sorted(out)

    def read_partition(self, p: Partition, columns: list[str] | None = None) -> pd.DataFrame:
        data = self.store.get(p.key)
        return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()

    def partition_meta(self, p: Partition) -> dict[str, str]:
        """Footer metadata of a partition (``content_sha256``, rows and writer extras)."""
        data = self.store.get(p.key)
        return _footer_meta(pq.ParquetFile(io.BytesIO(data)), len(data))

    def read_with_meta(self, p: Partition, columns: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """A partition's rows and its footer metadata from one fetch of the object."""
        data = self.store.get(p.key)
        pf = pq.ParquetFile(io.BytesIO(data))
        return pf.read(columns=columns).to_pandas(), _footer_meta(pf, len(data))

    def write(
        self,
        layer: str,
        df: pd.DataFrame,
        exchange: str,
        symbol: str,
        date: str | dt.date,
        *,
        variant: str = "",
        mode: WriteMode = "error",
        meta: dict[str, str] | None = None,
        coverage: list | None = None,
        coverage_source: str | None = None,
        id_space: str | None = None,
    ) -> WriteResult:
        """Write one partition atomically and idempotently.

        ``mode``: ``"error"`` refuses to change a partition that holds other data;
        ``"merge"`` (bronze) unions with what is stored, deduplicated by trade id;
        ``"replace"`` overwrites (derived layers, which are rebuilt from bronze; a bronze
        partition then holds only the new rows, coverage and id space).

        Bronze only: ``coverage`` (``[from_ms, to_ms)`` intervals this write's source recorded in
        full, inside the partition's day), ``coverage_source`` (``archive``, ``recording``,
        ``rest``) and ``id_space`` (a key of :data:`ID_SPACES`) go to the footer; a merge unions
        the coverage and refuses another id space (:class:`IdSpaceConflictError`).

        Writers of one partition take turns (``Store.lock`` of its key, held from the read of the
        stored rows to the quality report), so concurrent merges keep every row.
        """
        p = Partition(layer, exchange, symbol, _as_date(date), variant)
        with self.store.lock(p.key):
            return self._write_locked(p, layer, df, mode, meta, coverage, coverage_source, id_space)

    def _write_locked(
        self,
        p: Partition,
        layer: str,
        df: pd.DataFrame,
        mode: WriteMode,
        meta: dict[str, str] | None,
        coverage: list | None,
        coverage_source: str | None,
        id_space: str | None,
    ) -> WriteResult:
        exchange, symbol, variant = p.exchange, p.symbol, p.variant
        exists = self.store.exists(p.key)
        df = df.reset_index(drop=True)
        new_rows = df
        sha = content_sha256(df)
        old, old_meta = None, {}
        if exists:
            old, old_meta = self.read_with_meta(p) if mode == "merge" else (None, self.partition_meta(p))
        if layer == "bronze" and exists and mode != "replace":
            self._refuse_other_id_space(p, old_meta, id_space)
        if old is not None and old_meta.get("content_sha256") != sha:
            df = sort_trades(pd.concat([old, df], ignore_index=True))
            sha = content_sha256(df)
        if layer == "bronze":
            meta = {
                **(meta or {}),
                **_bronze_meta(
                    p,
                    df,
                    new_rows,
                    sha,
                    old if mode == "merge" else None,
                    old_meta if exists and mode != "replace" else {},
                    coverage,
                    coverage_source,
                    id_space,
                ),
            }
        if exists:
            same_meta = layer != "bronze" or all(old_meta.get(k) == v for k, v in (meta or {}).items())
            if old_meta.get("content_sha256") == sha and same_meta:
                return WriteResult(p, len(df), sha, changed=False, meta=meta)
            if mode == "error" and old_meta.get("content_sha256") != sha:
                raise LakeConflictError(
                    f"partition {p.key} already holds {old_meta['rows']} rows with other content; "
                    f"stored partitions for {exchange}/{symbol}: {self.describe(layer, exchange, symbol, variant)}. "
                    "Re-run with merge (add trades) or replace (overwrite) if that is intended."
                )
        self.store.put(p.key, _to_parquet_bytes(df, sha, meta))
        if layer == "bronze":
            # Every bronze write leaves its data-quality report beside it (`datasets status`).
            write_quality(self, p, df, sha256=sha, meta=meta)
        return WriteResult(p, len(df), sha, changed=True, meta=meta)

    def _refuse_other_id_space(self, p: Partition, old_meta: dict[str, str], id_space: str | None) -> None:
        have = old_meta.get("id_space")
        if have and id_space and have != id_space:
            raise IdSpaceConflictError(
                f"partition {p.key} holds {old_meta.get('rows', '?')} trades whose ids are {have} "
                f"({ID_SPACES.get(have, 'unknown id space')}); the new trades' ids are {id_space} "
                f"({ID_SPACES.get(id_space, 'unknown id space')}). The two number the same trades differently, so "
                "merging them would store each trade twice. Nothing was written. Ingest this source into "
                "another lake, or re-run with --replace to overwrite the partition with the new source's "
                "trades and coverage"
            )

    def check_id_space(self, exchange: str, symbol: str, dates, id_space: str | None) -> None:
        """Refuse up front (before any write) if a stored bronze day of ``dates`` has another id space.

        Ingests that write several partitions call it first, so that a refused day leaves no
        other day half-ingested.
        """
        if not id_space:
            return
        for d in sorted({_as_date(x) for x in dates}):
            p = Partition("bronze", exchange, symbol, d)
            if self.store.exists(p.key):
                self._refuse_other_id_space(p, self.partition_meta(p), id_space)

    def write_trades(
        self,
        df: pd.DataFrame,
        *,
        mode: WriteMode = "merge",
        what: str = "trades",
        coverage: list | dict | None = None,
        coverage_source: str | None = None,
        id_space: str | dict | None = None,
    ) -> list[WriteResult]:
        """Validate bronze trades and write them, one partition per (exchange, symbol, UTC date).

        ``coverage``: ``[from_ms, to_ms)`` intervals the source recorded in full (any span; each
        partition keeps the part inside its day), or a dict ``exchange → intervals``.
        ``id_space``: the trades' id space, or a dict ``(exchange, symbol) → id space``. Every
        partition is checked for an id-space conflict before the first one is written.
        """
        df = sort_trades(validate_bronze(df, what=what))
        if df.empty:
            return []
        day = df["ts_ms"].to_numpy(np.int64) // DAY_MS
        slices = []
        for (ex, sym), group in df.groupby(["exchange", "symbol"], sort=True):
            gday = day[group.index.to_numpy()]
            # Rows are time-ordered, so each UTC day is one contiguous slice.
            cuts = np.flatnonzero(np.diff(gday)) + 1
            space = id_space.get((ex, sym)) if isinstance(id_space, dict) else id_space
            cov = coverage.get(ex) if isinstance(coverage, dict) else coverage
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(group)]):
                slices.append((ex, sym, int(gday[lo]), group.iloc[lo:hi], space, cov))
        if mode != "replace":
            for ex, sym, d, _, space, _ in slices:
                self.check_id_space(ex, sym, [dt.date(1970, 1, 1) + dt.timedelta(days=d)], space)
        results = []
        for ex, sym, d, rows, space, cov in slices:
            date = dt.date(1970, 1, 1) + dt.timedelta(days=d)
            day_cov = None
            if cov is not None:
                lo_ms, hi_ms = d * DAY_MS, (d + 1) * DAY_MS
                day_cov = [[max(int(a), lo_ms), min(int(b), hi_ms)] for a, b in cov]
            results.append(
                self.write(
                    "bronze",
                    rows,
                    ex,
                    sym,
                    date,
                    mode=mode,
                    coverage=day_cov,
                    coverage_source=coverage_source,
                    id_space=space,
                )
            )
        return results

    def read(
        self,
        layer: str,
        exchange: str,
        symbol: str,
        start: str | dt.date,
        end: str | dt.date,
        *,
        variant: str = "",
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Concatenate the partitions with ``start <= date <= end`` (inclusive).

        Raises NoDataError naming what *is* stored when nothing matches.
        """
        parts = self.partitions(layer, exchange, symbol, variant, start, end)
        if not parts:
            raise NoDataError(
                f"no {layer} data for {exchange}/{symbol} from {start} to {end} in {self.uri}; "
                f"stored: {self.describe(layer, exchange, symbol, variant)}"
            )
        frames = [self.read_partition(p, columns) for p in parts]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def describe(self, layer: str, exchange: str | None = None, symbol: str | None = None, variant: str = "") -> str:
        """A short human summary of stored partitions: ``binance_usdm/BTCUSDT 2024-03-01..2024-03-10 (10 days)``."""
        parts = self.partitions(layer, exchange, None, variant) if exchange else self.partitions(layer, variant=variant)
        if not parts:
            return "nothing"
        groups: dict[tuple[str, str], list[dt.date]] = {}
        for p in parts:
            groups.setdefault((p.exchange, p.symbol), []).append(p.date)
        bits = []
        for (ex, sym), days in sorted(groups.items()):
            mark = " <- requested symbol" if symbol and sym == symbol else ""
            bits.append(f"{ex}/{sym} {min(days)}..{max(days)} ({len(days)} days){mark}")
        return "; ".join(bits)

    def delete_partition(self, p: Partition) -> None:
        self.store.delete(p.key)

    # ---------------------------------------------------------------- quarantine
    def write_quarantine(self, source: str, bad: pd.DataFrame) -> list[str]:
        """Keep refused rows (:func:`datasets.validate.screen_trades` ``bad``) under
        ``quarantine/<source>/exchange=E/symbol=S/date=D/part-0.parquet``, merged with what is there
        by ``(file, row)``; then refresh the quality report of each day's bronze partition, if any.
        Returns the keys written.
        """
        from datasets.validate import QUARANTINE_COLUMNS

        if bad.empty:
            return []
        written, touched = [], []
        cols = list(QUARANTINE_COLUMNS)
        for (ex, sym, d), rows in bad.groupby(["exchange", "symbol", "date"], sort=True):
            key = quarantine_key(source, str(ex), str(sym), _as_date(d))
            new = rows[cols].astype({c: str for c in cols if c != "row"}).astype({"row": "int64"})
            with self.store.lock(key):
                if self.store.exists(key):
                    old = pq.read_table(io.BytesIO(self.store.get(key))).to_pandas()
                    new = pd.concat([old, new], ignore_index=True).drop_duplicates(["file", "row"], keep="last")
                new = new.sort_values(["file", "row"], kind="stable").reset_index(drop=True)
                sha = content_sha256(new)
                if self.store.exists(key) and self._sha_of(key) == sha:
                    continue
                self.store.put(key, _to_parquet_bytes(new, sha, None))
            written.append(key)
            touched.append(Partition("bronze", str(ex), str(sym), _as_date(d)))
        for p in touched:
            with self.store.lock(p.key):
                if self.store.exists(p.key):
                    write_quality(self, p)
        return written

    def _sha_of(self, key: str) -> str | None:
        md = pq.ParquetFile(io.BytesIO(self.store.get(key))).metadata.metadata or {}
        v = md.get(HASH_KEY)
        return v.decode() if v else None

    def quarantined(self, exchange: str, symbol: str, date: str | dt.date) -> pd.DataFrame:
        """The quarantined rows filed under one day, from every source (with a ``source`` column)."""
        tail = f"/exchange={exchange}/symbol={symbol}/date={_as_date(date).isoformat()}/part-0.parquet"
        frames = []
        for key in self.store.list("quarantine/"):
            if key.endswith(tail):
                df = pq.read_table(io.BytesIO(self.store.get(key))).to_pandas()
                df.insert(0, "source", key.split("/")[1])
                frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["source", "reason"])


def quarantine_key(source: str, exchange: str, symbol: str, date: dt.date) -> str:
    """Store key of the rows of one source and day refused at ingest."""
    return f"quarantine/{source}/exchange={exchange}/symbol={symbol}/date={date.isoformat()}/{PART_FILE}"


def write_quality(
    lake: Lake,
    p: Partition,
    df: pd.DataFrame | None = None,
    *,
    sha256: str | None = None,
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
    cov, src = partition_coverage(meta, df["ts_ms"].to_numpy(np.int64) if len(df) else None)
    report["coverage"], report["coverage_source"] = cov, src
    report["bytes"] = size
    q = lake.quarantined(p.exchange, p.symbol, p.date)
    if len(q):  # rows of this day refused at ingest (--skip-bad-rows), by reason
        report["quarantined_rows"] = {str(k): int(v) for k, v in q["reason"].value_counts().sort_index().items()}
    lake.store.put(quality_key(p), json.dumps(report, indent=1, sort_keys=True).encode())
    return report
