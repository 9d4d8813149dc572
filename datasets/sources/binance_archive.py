"""Binance USD-M aggTrades from the public data archive layout (a local copy or a base URL).

Files (docs/spec.md §2)::

    data/futures/um/daily/aggTrades/SYM/SYM-aggTrades-YYYY-MM-DD.zip   (+ .zip.CHECKSUM)
    data/futures/um/monthly/aggTrades/SYM/SYM-aggTrades-YYYY-MM.zip     (+ .zip.CHECKSUM)

Each zip holds one CSV, with or without the header ``agg_trade_id,price,quantity,
first_trade_id,last_trade_id,transact_time,is_buyer_maker``; ``transact_time`` is in ms or,
in newer files, µs (told apart by magnitude; µs are kept as ``ts_us``).

Ingest runs in two phases so that a bad file leaves the lake untouched:

1. *Verify*: every file is fetched, its SHA-256 checked against its ``.CHECKSUM``, its zip
   and CSV read to the end (CRC checked, columns and values parsed) and converted to bronze
   rows spooled to a temporary directory, one Arrow file per day. Any failure raises
   :class:`ArchiveError` naming the file, before anything is written.
2. *Write*: day by day, the raw files go to ``raw/binance_usdm/<archive path>`` byte for
   byte and the trades to bronze (merge by trade id). Each write is atomic and idempotent,
   so a re-run of the same days writes nothing.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import calendar
import contextlib
import datetime as dt
import difflib
import hashlib
import io
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datasets._tempdirs import INGEST_PREFIX, owned_tempdir
from datasets.exchanges import binance
from datasets.lake import Lake, LakeConflictError
from datasets.schema import normalise_symbol
from datasets.validate import ROW, raise_for, screen_trades
from datasets.sources._http import NotFound, fetch_many, location

__all__ = [
    "COLUMNS",
    "EXCHANGE",
    "ArchiveError",
    "DayReport",
    "IngestReport",
    "daily_relpath",
    "monthly_relpath",
    "ingest_binance_archive",
    "parse_aggtrades_zip",
]

EXCHANGE = "binance_usdm"
ID_SPACE = "binance_agg_trade"  # bronze footer id_space: aggregate-trade ids `a`, consecutive
RAW_SOURCE = "binance_usdm"
COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker")
_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
_US_FROM = 10**14  # 10^14 ms is the year 5138; 10^14 µs is 1973
_log = logging.getLogger(__name__)


class ArchiveError(WhalebtError, ValueError):
    """A source file failed verification (checksum, zip, columns, values) or nothing was found."""


daily_relpath = binance.aggtrades_daily_relpath
monthly_relpath = binance.aggtrades_monthly_relpath


@dataclass
class DayReport:
    date: dt.date
    source: str  # archive relpath of the file the day came from
    rows: int
    bytes: int  # size of that zip
    ts_unit: str  # "ms" or "us"
    changed: bool = False  # bronze partition written (False: identical data was already there)


@dataclass
class IngestReport:
    """What :func:`ingest_binance_archive` looked for, found and wrote."""

    source: str
    symbol: str
    start: dt.date
    end: dt.date
    lake: str
    days: list[DayReport] = field(default_factory=list)
    gaps: list[dt.date] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # archive relpaths verified (zip + CHECKSUM)
    raw_written: int = 0
    raw_unchanged: int = 0

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.days)

    @property
    def bytes(self) -> int:
        seen: dict[str, int] = {}
        for d in self.days:
            seen[d.source] = d.bytes
        return sum(seen.values())

    @property
    def days_changed(self) -> int:
        return sum(d.changed for d in self.days)


# --------------------------------------------------------------------------- parsing
def _sniff_header(first_line: str, name: str) -> list[str] | None:
    """Column names if the first line is a header, None if it is data; ArchiveError if wrong."""
    fields = [f.strip().strip('"') for f in first_line.strip().split(",")]
    if fields and fields[0].lstrip("-").isdigit():
        if len(fields) != len(COLUMNS):
            raise ArchiveError(
                f"{name}: expected {len(COLUMNS)} columns ({','.join(COLUMNS)}) in a CSV without header; "
                f"the first row has {len(fields)}: {first_line.strip()[:120]!r}"
            )
        return None
    missing = [c for c in COLUMNS if c not in fields]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, fields, n=1, cutoff=0.5)
            hints.append(f"{col!r} (did you mean {close[0]!r}?)" if close else repr(col))
        raise ArchiveError(
            f"{name}: CSV columns do not match Binance aggTrades; expected {list(COLUMNS)}, got {fields}; "
            f"missing {', '.join(hints)}. Is this an aggTrades file of the USD-M futures archive?"
        )
    return fields


class _Counted(io.RawIOBase):
    """A readable stream that reports bytes read (for a progress bar)."""

    def __init__(self, raw, on_read: Callable[[int], None] | None):
        self._raw, self._on_read = raw, on_read

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._raw.read(len(b))
        b[: len(data)] = data
        if self._on_read and data:
            self._on_read(len(data))
        return len(data)


def parse_aggtrades_zip(
    data: bytes,
    name: str,
    on_batch: Callable[[dict[str, np.ndarray]], None],
    *,
    block_bytes: int = 16 << 20,
    on_read: Callable[[int], None] | None = None,
) -> str:
    """Stream the CSV inside one archive zip in blocks and pass bronze arrays to ``on_batch``.

    Arrays per block: ``trade_id, ts_ms, price, qty, side``, ``ts_us`` for µs files and ``_row``
    (each row's CSV line).
    Memory is bounded by ``block_bytes`` of CSV, whatever the file size.

    Returns:
        ``"ms"`` or ``"us"``: the unit of ``transact_time`` in this file.

    Raises:
        ArchiveError: not a zip / truncated / bad CRC, not exactly one CSV, wrong columns,
            unparsable values, or mixed timestamp units; the message names ``name``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in zf.infolist() if not i.is_dir()]
        if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
            raise ArchiveError(f"{name}: expected one CSV file in the zip, found {[m.filename for m in members]}")
        member = members[0]
        with zf.open(member) as fh:
            first = fh.readline(4096).decode("utf-8", "replace")
        header = _sniff_header(first, name) if first.strip() else None
        if not first.strip():
            return "ms"
        read_opts = pacsv.ReadOptions(block_size=block_bytes, column_names=None if header else list(COLUMNS))
        types = {
            "agg_trade_id": pa.int64(),
            "price": pa.float64(),
            "quantity": pa.float64(),
            "transact_time": pa.int64(),
            "is_buyer_maker": pa.bool_(),
        }
        # No null markers: an empty or "n/a" field is a parse error, not a silent NaN.
        conv = pacsv.ConvertOptions(
            column_types=types, include_columns=list(types), null_values=[], strings_can_be_null=False
        )
        unit = None
        line = 2 if header else 1  # CSV line of the next row (the header is line 1)
        with zf.open(member) as fh:
            reader = pacsv.open_csv(
                io.BufferedReader(_Counted(fh, on_read), 1 << 20), read_options=read_opts, convert_options=conv
            )
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                cols = {n: batch.column(n) for n in types}
                t = cols["transact_time"].to_numpy()
                is_us = t >= _US_FROM
                this = "us" if is_us[0] else "ms"
                if unit is None:
                    unit = this
                if is_us.any() != is_us.all() or this != unit:
                    # name the first row of the minority unit (an implausible time, most likely)
                    odd_us = is_us.sum() * 2 <= len(is_us) if is_us.any() != is_us.all() else unit == "ms"
                    i = int(np.flatnonzero(is_us == odd_us)[0])
                    raise ArchiveError(
                        f"{name}: transact_time mixes milliseconds and microseconds (line {line + i}: "
                        f"{int(t[i])}); expected one unit per file"
                    )
                out = {
                    "trade_id": cols["agg_trade_id"].to_numpy(),
                    "ts_ms": t // 1000 if unit == "us" else t,
                    "price": cols["price"].to_numpy(),
                    "qty": cols["quantity"].to_numpy(),
                    "side": np.where(cols["is_buyer_maker"].to_numpy(zero_copy_only=False), -1, 1).astype(np.int8),
                }
                if unit == "us":
                    out["ts_us"] = t
                out[ROW] = np.arange(line, line + batch.num_rows, dtype=np.int64)
                line += batch.num_rows
                on_batch(out)
        return unit or "ms"
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{name}: corrupt or truncated zip ({exc}); delete it and fetch it again") from None
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ArchiveError(
            f"{name}: CSV does not parse as Binance aggTrades "
            f"({str(exc).splitlines()[0]}); expected columns {','.join(COLUMNS)}"
        ) from None


# --------------------------------------------------------------------------- ingest
class _Spool:
    """Per-day Arrow files in a temporary directory: verified rows waiting for phase 2."""

    def __init__(self, root: Path):
        self.root = root
        self._writers: dict[tuple[dt.date, str], Any] = {}  # pyarrow RecordBatchFileWriter
        self.rows: dict[dt.date, int] = {}

    def add(self, day: dt.date, unit: str, arrays: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        table = pa.table(arrays)
        key = (day, unit)
        if key not in self._writers:
            self._writers[key] = pa.ipc.new_file(str(self.root / f"{day}-{unit}.arrow"), table.schema)
        self._writers[key].write_table(table)
        self.rows[day] = self.rows.get(day, 0) + table.num_rows

    def close(self) -> None:
        for w in self._writers.values():
            w.close()

    def read(self, day: dt.date, columns: list[str] | None = None):
        import pandas as pd
        import pyarrow as pa

        frames = [
            _select(pa.ipc.open_file(str(self.root / f"{day}-{u}.arrow")).read_all(), columns).to_pandas()
            for (d, u) in sorted(self._writers)
            if d == day
        ]
        if len(frames) > 1:  # a day from files of both units keeps only milliseconds
            frames = [f.drop(columns=["ts_us"], errors="ignore") for f in frames]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _select(table, columns: list[str] | None):
    return table if columns is None else table.select([c for c in columns if c in table.column_names])


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _as_date(x: str | dt.date, what: str) -> dt.date:
    if isinstance(x, dt.date):
        return x
    try:
        return dt.date.fromisoformat(str(x))
    except ValueError:
        raise ArchiveError(f"{what} must be a date like 2024-03-01; got {x!r}") from None


def ingest_binance_archive(
    source: str | os.PathLike[str],
    symbol: str,
    start: str | dt.date,
    end: str | dt.date,
    lake: Lake | str | os.PathLike[str],
    *,
    max_workers: int = 4,
    retries: int = 4,
    block_bytes: int = 16 << 20,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
    replace: bool = False,
    skip_bad_rows: bool = False,
) -> IngestReport:
    """Ingest Binance USD-M aggTrades for ``start..end`` (inclusive, UTC days) into a lake.

    Daily files are used; for a calendar month wholly inside the span whose daily files are
    (partly) missing, the monthly file fills the missing days. Days found nowhere are gaps
    (reported through ``warn`` and in the report); finding no file at all is an error.

    Args:
        source: local directory or ``http(s)://`` base URL laid out like the archive.
        symbol: ``BTCUSDT`` (separators and case are normalised).
        lake: a :class:`Lake` or its URI.
        max_workers: concurrent downloads.
        retries: extra attempts per file after a transient failure (back-off doubles from 0.5 s).
        block_bytes: CSV block size; bounds memory per file.
        progress: show a progress bar per file on stderr.
        warn: receives one line per gap (default: the module logger).
        replace: overwrite each day's bronze partition with the archive's rows instead of merging
            (needed when a day holds trades of another id space, e.g. a recording's fill ids).
        skip_bad_rows: quarantine rows that fail :func:`datasets.validate.screen_trades` and store
            the rest; by default one such row refuses the whole run before anything is written.

    Each day's partition records the whole UTC day as covered and ``id_space``
    ``binance_agg_trade``. A stored day of another id space is refused before anything is written
    (:class:`~datasets.lake.IdSpaceConflictError`), unless ``replace``.

    Raises:
        ArchiveError: a checksum mismatch, a damaged zip, wrong columns or values (naming the
            file), or no file found at all (listing what was looked for). The lake is unchanged.
        LakeConflictError: a raw file of the same name with other content is already stored.
        FetchError: a file could not be downloaded after retries.
    """
    import pandas as pd

    sym = normalise_symbol(symbol)
    d0, d1 = _as_date(start, "start"), _as_date(end, "end")
    if d1 < d0:
        raise ArchiveError(f"end {d1} is before start {d0}; expected start <= end")
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    warn = warn or _log.warning
    report = IngestReport(source=str(source), symbol=sym, start=d0, end=d1, lake=lake.uri)
    wanted = _days(d0, d1)
    looked: list[str] = []
    bad_rows: list = []  # frames of refused rows (datasets.validate)
    with owned_tempdir(INGEST_PREFIX) as tmp:  # removed on exit and SIGTERM; a kill -9 leftover at the next start
        spool = _Spool(Path(tmp))
        found: dict[str, tuple[Path, int]] = {}  # relpath -> spooled zip, size
        day_src: dict[dt.date, tuple[str, str]] = {}  # day -> (relpath, unit)

        def verify(relpath: str, data: bytes, checksum: bytes | NotFound, keep: set[dt.date]) -> None:
            name = relpath.rsplit("/", 1)[-1]
            if isinstance(checksum, NotFound):
                raise ArchiveError(
                    f"{name}: no checksum file {name}.CHECKSUM at {location(source, relpath)}; "
                    "refusing to ingest an unverified file"
                )
            binance.verify_checksum(data, checksum, name, ArchiveError)
            for rp, blob in ((relpath, data), (relpath + ".CHECKSUM", checksum)):
                _check_raw_free(lake, rp, blob)
            seen: set[dt.date] = set()
            outside = [0]

            def on_batch(arrays: dict[str, np.ndarray]) -> None:
                checked = screen_trades(_batch_frame(arrays, sym), what=relpath, rows=arrays[ROW], skip_bad_rows=True)
                if len(checked.bad):
                    bad_rows.append(checked.bad)
                    ok = checked.good.index.to_numpy()
                    arrays = {c: v[ok] for c, v in arrays.items()}
                    if not len(ok):
                        return
                day_no = arrays["ts_ms"] // _DAY_MS
                unit = "us" if "ts_us" in arrays else "ms"
                lo, hi = int(day_no.min()), int(day_no.max())
                for k in range(lo, hi + 1):
                    day = _EPOCH + dt.timedelta(days=k)
                    m = None if lo == hi else day_no == k  # a block inside one day needs no mask
                    n = len(day_no) if m is None else int(m.sum())
                    if n and day in keep:
                        seen.add(day)
                        spool.add(day, unit, arrays if m is None else {c: v[m] for c, v in arrays.items()})
                    else:
                        outside[0] += n

            with _bar(progress, name, _csv_size(data)) as bar:
                unit = parse_aggtrades_zip(data, name, on_batch, block_bytes=block_bytes, on_read=bar.update)
            if outside[0] and "/daily/" in relpath:
                warn(f"{name}: {outside[0]} rows outside the file's day were left out")
            if not seen:
                warn(f"{name}: no trades for {', '.join(sorted(map(str, keep)))} in this file; counted as a gap")
                return
            zpath = Path(tmp) / f"raw-{len(found)}.zip"
            zpath.write_bytes(data)
            (Path(tmp) / f"raw-{len(found)}.zip.CHECKSUM").write_bytes(checksum)
            found[relpath] = (zpath, len(data))
            report.files.append(relpath)
            for day in seen:
                day_src[day] = (relpath, unit)

        # Phase 1a: daily files, fetched concurrently, verified in order.
        rels = [p for d in wanted for p in (daily_relpath(sym, d), daily_relpath(sym, d) + ".CHECKSUM")]
        looked += rels[::2]
        with contextlib.closing(fetch_many(source, rels, max_workers=max_workers, retries=retries)) as results:
            for day in wanted:
                (zrel, zdata), (_, cdata) = next(results), next(results)
                if not isinstance(zdata, NotFound):
                    verify(zrel, zdata, cdata, {day})
        # Phase 1b: monthly files fill missing days of months wholly inside the span.
        for y, m in sorted({(d.year, d.month) for d in wanted}):
            month = [dt.date(y, m, i) for i in range(1, calendar.monthrange(y, m)[1] + 1)]
            missing = {d for d in month if d not in day_src}
            if not missing or month[0] < d0 or month[-1] > d1:
                continue
            rel = monthly_relpath(sym, y, m)
            looked.append(rel)
            (_, zdata), (_, cdata) = list(fetch_many(source, [rel, rel + ".CHECKSUM"], max_workers=2, retries=retries))
            if not isinstance(zdata, NotFound):
                verify(rel, zdata, cdata, missing)
        spool.close()
        report.gaps = [d for d in wanted if d not in day_src]
        if not day_src:
            shown = "\n  ".join(location(source, r) for r in looked[:6])
            more = f"\n  ... and {len(looked) - 6} more" if len(looked) > 6 else ""
            raise ArchiveError(
                f"no aggTrades files for {sym} from {d0} to {d1} in {source}; looked for:\n  {shown}{more}\n"
                "Check the symbol, the dates and the source (a directory or base URL holding data/futures/um/...)"
            )
        for gap in _ranges(report.gaps):
            warn(
                f"gap: no aggTrades for {sym} on {gap} in {source} (no daily file, and no monthly file "
                "for a whole month inside the span)"
            )
        # The same trade id with other content within one day's file (value checks ran per block).
        conflicts: dict[dt.date, set[int]] = {}
        for day in sorted(day_src):
            one = spool.read(day, columns=["trade_id", "ts_ms", "price", "qty", "side", ROW])
            checked = screen_trades(_batch_frame(one, sym), what=day_src[day][0], skip_bad_rows=True)
            if len(checked.bad):
                bad_rows.append(checked.bad)
                conflicts[day] = set(checked.bad["row"].tolist())
        bad = pd.concat(bad_rows, ignore_index=True) if bad_rows else None
        if bad is not None and not skip_bad_rows:
            raise_for(bad)
        if not replace:  # refuse another id space before the first write
            lake.check_id_space(EXCHANGE, sym, day_src, ID_SPACE)
        # Phase 2: write, one day at a time (raw first, then bronze; each atomic).
        stored_raw: set[str] = set()
        for day in sorted(day_src):
            relpath, unit = day_src[day]
            zpath, size = found[relpath]
            if relpath not in stored_raw:
                for rp, path in ((relpath, zpath), (relpath + ".CHECKSUM", Path(str(zpath) + ".CHECKSUM"))):
                    if lake.put_raw(RAW_SOURCE, rp, path.read_bytes()):
                        report.raw_written += 1
                    else:
                        report.raw_unchanged += 1
                stored_raw.add(relpath)
                if bad is not None:  # before the day's bronze write, whose quality report counts them
                    lake.write_quarantine(RAW_SOURCE, bad[bad["file"] == relpath])
            df = spool.read(day)
            if day in conflicts:
                df = df[~df[ROW].isin(conflicts[day])].reset_index(drop=True)
            df.insert(0, "exchange", EXCHANGE)
            df.insert(1, "symbol", sym)
            day_ms = (day - _EPOCH).days * _DAY_MS
            results_w = lake.write_trades(
                df,
                mode="replace" if replace else "merge",
                what=relpath,
                coverage=[[day_ms, day_ms + _DAY_MS]],
                coverage_source="archive",
                id_space=ID_SPACE,
            )
            report.days.append(DayReport(day, relpath, len(df), size, unit, any(r.changed for r in results_w)))
            del df
    return report


def _batch_frame(arrays, sym: str):
    """A block's arrays (or a spooled day) as a frame :func:`screen_trades` reads."""
    import pandas as pd

    return pd.DataFrame({"exchange": EXCHANGE, "symbol": sym, **{c: arrays[c] for c in arrays}})


def _csv_size(data: bytes) -> int:
    try:
        return zipfile.ZipFile(io.BytesIO(data)).infolist()[0].file_size
    except (zipfile.BadZipFile, IndexError):
        return len(data)


def _check_raw_free(lake: Lake, relpath: str, data: bytes) -> None:
    """Refuse early (before any write) when the lake holds a different file under this name."""
    key = f"raw/{RAW_SOURCE}/{relpath}"
    if lake.store.exists(key):
        old = lake.store.get(key)
        if old != data:
            raise LakeConflictError(
                f"raw file {key} already exists with different content (stored sha256 "
                f"{hashlib.sha256(old).hexdigest()[:12]}, new {hashlib.sha256(data).hexdigest()[:12]}); "
                "raw files are immutable: ingest into another lake or delete the stored day first"
            )


def _ranges(days: list[dt.date]) -> list[str]:
    """``[1, 2, 3, 5]`` -> ``["2024-03-01..2024-03-03", "2024-03-05"]``."""
    out: list[str] = []
    i = 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] - days[j] == dt.timedelta(days=1):
            j += 1
        out.append(str(days[i]) if i == j else f"{days[i]}..{days[j]}")
        i = j + 1
    return out


def _bar(enabled: bool, name: str, total: int):
    from tqdm import tqdm
    import sys

    return tqdm(
        total=total,
        desc=name,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )
