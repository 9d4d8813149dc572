"""Bybit's public trade archive → raw + bronze, and the day runner shared with the OKX archive.

Layout (``https://public.bybit.com`` or a local mirror)::

    trading/BTCUSDT/BTCUSDT2024-01-01.csv.gz

one gzip CSV per symbol and UTC day, with the header
``timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional``
(newer files may add columns; only the named ones are read). Normalisation (docs/spec.md §2):

- ``exchange`` = ``bybit_linear``; ``symbol`` normalised (``BTCUSDT``).
- ``ts_us`` = ``round(timestamp * 1e6)`` (``timestamp`` is seconds with a fraction), ``ts_ms`` = ``ts_us // 1000``.
- ``side`` = +1 for ``Buy``, -1 for ``Sell``: Bybit names the taker's side.
- ``qty`` = ``size``, which is in base units for linear (USDT/USDC) contracts.
- ``trade_id``: ``trdMatchID`` is a UUID, so the id is its top 63 bits (``UUID(s).int >> 65``), the
  same rule the WebSocket parser uses for frames without a sequence number. It is stable across
  re-downloads; it does not follow the exchange's order within a millisecond (no field in the
  archive does), and it differs from the ``seq``-based ids that :mod:`datasets.sources.frames`
  gives live frames, so do not merge archive and live trades of the same day into one partition.
  A numeric ``trdMatchID`` is used as is.

Bybit publishes no checksums: the gzip CRC is checked while parsing (a truncated download is
fetched again), and each stored raw file's SHA-256 is recorded in its ingest manifest.

:func:`ingest_daily_archive` is the runner both daily archives use: bounded-parallel downloads
through :func:`datasets.sources._http.fetch` (retries with back-off, ``Range`` resume),
a 404 day reported as a gap, raw kept byte for byte, resumable through per-file manifests
(``ingest/<source>/<relpath>.json``: the file's SHA-256, its UTC days, and the bronze
partition written for each day of it so far), bronze merged idempotently, quality reports refreshed.
"""

from __future__ import annotations

from whalebt.errors import UserError
from whalebt.errors import WhalebtError
import concurrent.futures as cf
import datetime as dt
import difflib
import gzip
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

from datasets._tempdirs import INGEST_PREFIX, owned_tempdir
from datasets.exchanges import bybit
from datasets.lake import Lake
from datasets.schema import SchemaError, normalise_symbol
from datasets.sources._http import NotFound, fetch
from datasets.validate import screen_trades

__all__ = [
    "BYBIT_BASE_URL",
    "BYBIT_COLUMNS",
    "DailyArchive",
    "IngestReport",
    "CorruptFile",
    "bybit_relpath",
    "bybit_trade_ids",
    "parse_bybit_csv",
    "BYBIT_ARCHIVE",
    "ingest_daily_archive",
    "ingest_bybit_archive",
    "date_range",
]

BYBIT_BASE_URL = bybit.ARCHIVE_URL
BYBIT_COLUMNS = ("timestamp", "symbol", "side", "size", "price", "trdMatchID")
DAY_MS = 86_400_000


# ---------------------------------------------------------------------------- errors
class CorruptFile(WhalebtError, ValueError):
    """A downloaded file fails its own integrity check (gzip/zip CRC, truncated stream)."""


# ---------------------------------------------------------------------------- Bybit parsing
bybit_relpath = bybit.archive_relpath


def bybit_trade_ids(ids: "pa.Array | list[str]") -> np.ndarray:
    """int64 ids of ``trdMatchID`` strings (:func:`datasets.exchanges.bybit.trade_ids`)."""
    return bybit.trade_ids(ids, error=SchemaError)


def _csv_table(data: bytes, name: str, compression: str | None, columns: dict[str, "pa.DataType"]):
    """Read a CSV (optionally gzip) with only ``columns``; say which are missing."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    stream = pa.input_stream(pa.py_buffer(data), compression=compression)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=columns, include_columns=list(columns), include_missing_columns=False
            ),
        )
        return reader.read_all()
    except OSError as exc:  # Arrow's zlib: "Truncated compressed stream", "incorrect data check"
        raise CorruptFile(f"{name} is damaged or truncated ({exc})") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        msg = str(exc)
        if "include_columns" in msg or "does not exist" in msg:
            got = _header_of(data, compression)
            missing = [c for c in columns if c not in got]
            hint = "".join(
                f" Did you mean {m[0]!r} for {c!r}?" for c in missing if (m := difflib.get_close_matches(c, got, n=1))
            )
            raise SchemaError(f"{name} is missing column(s) {missing}; got {got}.{hint}") from None
        raise SchemaError(f"{name} is not a readable CSV: {msg}") from None


def _header_of(data: bytes, compression: str | None) -> list[str]:
    raw = gzip.GzipFile(fileobj=io.BytesIO(data)).readline() if compression == "gzip" else data.split(b"\n", 1)[0]
    return [c.strip() for c in raw.decode("utf-8", "replace").strip().split(",")]


def parse_bybit_csv(data: bytes, symbol: str, *, name: str = "bybit file") -> pd.DataFrame:
    """Bronze trades of one Bybit daily archive file (``.csv.gz`` bytes, or plain CSV bytes).

    Raises:
        SchemaError: a column is missing, a value cannot be read, or the file is for another symbol.
        CorruptFile: the gzip stream is truncated or fails its CRC check.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    gz = data[:2] == b"\x1f\x8b"
    t = _csv_table(
        data,
        name,
        "gzip" if gz else None,
        {
            "timestamp": pa.float64(),
            "symbol": pa.string(),
            "side": pa.string(),
            "size": pa.float64(),
            "price": pa.float64(),
            "trdMatchID": pa.string(),
        },
    )
    n = t.num_rows
    want = normalise_symbol(symbol)
    syms = pc.unique(t["symbol"]).to_pylist()
    other = [s for s in syms if normalise_symbol(str(s)) != want]
    if other:
        raise SchemaError(
            f"{name} holds trades of {other[:3]}, expected only {symbol}; is the file in the right folder?"
        )
    side_s = t["side"].to_numpy(zero_copy_only=False).astype(str) if n else np.empty(0, str)
    side = np.where(side_s == "Buy", 1, np.where(side_s == "Sell", -1, 0)).astype(np.int8)
    if (side == 0).any():
        bad = sorted(set(side_s[side == 0].tolist()))[:5]
        raise SchemaError(f"{name}: column 'side' must be Buy or Sell (the taker's side); found {bad}")
    ts_s = t["timestamp"].to_numpy(zero_copy_only=False)
    ts_us = np.rint(ts_s * 1e6).astype(np.int64)
    return pd.DataFrame(
        {
            "exchange": "bybit_linear",
            "symbol": want,
            "trade_id": bybit_trade_ids(t["trdMatchID"]),
            "ts_ms": ts_us // 1000,
            "price": t["price"].to_numpy(zero_copy_only=False),
            "qty": t["size"].to_numpy(zero_copy_only=False),
            "side": side,
            "ts_us": ts_us,
        }
    )


# ---------------------------------------------------------------------------- the day runner
def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days from ``start`` to ``end``, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass(frozen=True)
class DailyArchive:
    """How one exchange lays out and encodes its daily trade files.

    Attributes:
        source: folder under ``raw/`` and ``ingest/`` (e.g. ``bybit_archive``).
        relpath: (native symbol, file date) → path under the base URL.
        file_dates: UTC span (start, end) → the file dates whose rows cover it.
        parse: (bytes, native symbol, file name) → bronze frame (ts_us kept if known).
        corrupt: exception types that mean "damaged download" (fetched again once).
        id_space: what the files' trade ids are (bronze footer ``id_space``).
        covers: file date → ``[from_ms, to_ms)`` of UTC time the file holds in full.
    """

    source: str
    relpath: Callable[[str, dt.date], str]
    file_dates: Callable[[dt.date, dt.date], list[dt.date]]
    parse: Callable[[bytes, str, str], pd.DataFrame]
    corrupt: tuple[type[BaseException], ...] = (CorruptFile,)
    id_space: str | None = None
    covers: Callable[[dt.date], tuple[int, int]] | None = None
    exchange: str = ""
    symbol_of: Callable[[str], str] | None = None  # native symbol → bronze symbol


def utc_day_ms(day: dt.date) -> tuple[int, int]:
    """``[from_ms, to_ms)`` of a whole UTC day."""
    lo = (day - dt.date(1970, 1, 1)).days * DAY_MS
    return lo, lo + DAY_MS


@dataclass
class IngestReport:
    """What one ingest run did (printed by the commands, returned to callers)."""

    files: int = 0
    ingested: int = 0
    skipped: int = 0  # done by an earlier run (manifest covers the span)
    from_raw: int = 0  # raw copy already in the lake: parsed without downloading
    gaps: list[str] = field(default_factory=list)  # files the archive does not have (404)
    rows: int = 0
    bytes_downloaded: int = 0
    partitions_changed: int = 0
    partitions_unchanged: int = 0
    seconds: float = 0.0

    @property
    def trades_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _manifest_key(source: str, rel: str) -> str:
    return f"ingest/{source}/{rel}.json"


def _read_manifest(lake: Lake, key: str) -> dict | None:
    try:
        return json.loads(lake.store.get(key))
    except (KeyError, ValueError):
        return None


def ingest_daily_archive(
    archive: DailyArchive,
    base: str,
    symbol: str,
    start: dt.date,
    end: dt.date,
    lake: Lake,
    *,
    workers: int = 4,
    force: bool = False,
    progress: bool = True,
    fetcher: Callable[[str, str], bytes] = fetch,
    replace: bool = False,
    skip_bad_rows: bool = False,
) -> IngestReport:
    """Bring the archive's files for ``symbol`` covering UTC days ``start..end`` into the lake.

    For each file: skip it if its manifest says its rows in the span are already in bronze
    (unless ``force``); else take the raw copy from the lake or download it (up to ``workers``
    at a time, in order), parse it (a damaged download is fetched once more), keep the raw
    bytes, merge the rows of ``start..end`` into bronze, refresh those partitions' quality
    reports, and write the manifest last. A crash at any point loses nothing stored and the
    next run picks up where it stopped. A 404 is recorded as a gap.

    Each partition records the UTC time the files cover (``archive.covers``) and the files' id
    space. A stored day of another id space is refused before anything is written, unless
    ``replace``: then each day of the span is overwritten by this archive's rows (the first file
    that holds it replaces it, later files of the run merge) and every file is read again.

    Two phases, as the Binance archive: every file of the run is fetched, parsed and its rows
    screened (:func:`datasets.validate.screen_trades`, rows named by CSV line) and spooled to a
    scratch directory before the first write, so a damaged file or a bad row anywhere in the
    range raises with nothing of the run stored (no raw copy, bronze, report or manifest); with
    ``skip_bad_rows`` the bad rows go to ``quarantine/<source>/`` and the rest is stored.
    """
    t0 = time.perf_counter()
    rep = IngestReport()
    force = force or replace
    if not replace and archive.id_space and archive.exchange:
        lake.check_id_space(
            archive.exchange,
            archive.symbol_of(symbol) if archive.symbol_of else symbol,
            date_range(start, end),
            archive.id_space,
        )
    replaced: set[int] = set()  # UTC day numbers already overwritten by this run
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    todo: list[tuple[dt.date, str, dict | None]] = []
    for day in archive.file_dates(start, end):
        rel = archive.relpath(symbol, day)
        man = None if force else _read_manifest(lake, _manifest_key(archive.source, rel))
        rep.files += 1
        if man is not None:
            in_span = {d for d in man.get("dates_in_file", []) if start.isoformat() <= d <= end.isoformat()}
            keys = man.get("partitions", {})
            # Done only if the bronze partitions are still there (retention may have removed them).
            if in_span <= set(keys) and all(lake.store.exists(keys[d]) for d in in_span):
                rep.skipped += 1
                continue
        todo.append((day, rel, man))

    def load(rel: str) -> tuple[bytes | None, bool]:
        key = f"raw/{archive.source}/{rel}"
        try:
            return lake.store.get(key), True
        except KeyError:
            pass
        try:
            return fetcher(base, rel), False
        except NotFound:
            return None, False

    staged: list[_Staged] = []
    with owned_tempdir(INGEST_PREFIX) as tmp:  # removed on exit and SIGTERM; a kill -9 leftover at the next start
        # Phase 1: every file fetched, parsed and screened; its rows spooled. Nothing is written.
        with _progress(progress, len(todo), f"{archive.source} {symbol} verify") as bar:
            with cf.ThreadPoolExecutor(max(1, workers)) as pool:
                futures: dict[int, cf.Future] = {}
                ahead = max(1, workers)
                for i in range(min(ahead, len(todo))):
                    futures[i] = pool.submit(load, todo[i][1])
                for i, (day, rel, man) in enumerate(todo):
                    data, stored = futures.pop(i).result()
                    if i + ahead < len(todo):
                        futures[i + ahead] = pool.submit(load, todo[i + ahead][1])
                    bar.update(1)
                    if data is None:
                        rep.gaps.append(rel)
                        continue
                    staged.append(
                        _verify(archive, base, symbol, day, rel, man, data, stored, fetcher, skip_bad_rows, tmp, i)
                    )
                    del data
        # Phase 2: write, file by file (raw, quarantine, bronze with its reports, manifest last).
        with _progress(progress, len(staged), f"{archive.source} {symbol}") as bar:
            for st in staged:
                _write_staged(archive, st, lake, lo, hi, replace, replaced, rep)
                bar.update(1)
                bar.set_postfix(rows=rep.rows, gaps=len(rep.gaps))
    rep.seconds = time.perf_counter() - t0
    return rep


@dataclass
class _Staged:
    """One verified file waiting for phase 2: its rows (and raw bytes, unless already stored) on disk."""

    day: dt.date
    symbol: str
    rel: str
    man: dict | None
    stored: bool  # the raw copy came from the lake
    raw_path: Path | None
    rows_path: Path
    bad: pd.DataFrame
    sha256: str
    nbytes: int


def _progress(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", leave=False, disable=not enabled)


def _verify(
    archive: DailyArchive,
    base: str,
    symbol: str,
    day: dt.date,
    rel: str,
    man: dict | None,
    data: bytes,
    stored: bool,
    fetcher: Callable[[str, str], bytes],
    skip_bad_rows: bool,
    tmp: Path,
    i: int,
) -> _Staged:
    """Parse and screen one file (a damaged download is fetched once more); spool what phase 2 writes."""
    import pyarrow as pa

    name = rel.rsplit("/", 1)[-1]
    try:
        df = archive.parse(data, symbol, name)
    except archive.corrupt:
        if stored:
            raise SchemaError(
                f"raw/{archive.source}/{rel} in the lake is damaged; delete it "
                "(`datasets retain` or the store's tools) and ingest again"
            ) from None
        data = fetcher(base, rel)  # a truncated transfer: one more try
        try:
            df = archive.parse(data, symbol, name)
        except archive.corrupt as exc:
            raise SchemaError(
                f"{rel} from {base} is damaged twice in a row ({exc}); the archive copy may be broken, try again later"
            ) from None
    checked = screen_trades(df, what=name, rows=np.arange(2, len(df) + 2), skip_bad_rows=skip_bad_rows)
    rows_path = tmp / f"rows-{i}.arrow"
    table = pa.Table.from_pandas(checked.good.reset_index(drop=True), preserve_index=False)
    opts = pa.ipc.IpcWriteOptions(compression="zstd")  # about a third of the plain size on disk
    with pa.ipc.new_file(str(rows_path), table.schema, options=opts) as w:
        w.write_table(table)
    raw_path = None
    if not stored:
        raw_path = tmp / f"raw-{i}"
        raw_path.write_bytes(data)
    return _Staged(
        day, symbol, rel, man, stored, raw_path, rows_path, checked.bad, hashlib.sha256(data).hexdigest(), len(data)
    )


def _write_staged(
    archive: DailyArchive,
    st: _Staged,
    lake: Lake,
    lo: np.datetime64,
    hi: np.datetime64,
    replace: bool,
    replaced: set[int],
    rep: IngestReport,
) -> None:
    import pyarrow as pa

    from datasets.quality import refresh_quality

    rel, man, name = st.rel, st.man, st.rel.rsplit("/", 1)[-1]
    with pa.memory_map(str(st.rows_path)) as src:
        df = pa.ipc.open_file(src).read_all().to_pandas()
    if st.stored:
        rep.from_raw += 1
    else:
        assert st.raw_path is not None
        rep.bytes_downloaded += st.nbytes
        lake.put_raw(archive.source, rel, st.raw_path.read_bytes())
    lake.write_quarantine(archive.source, st.bad)
    day_idx = df["ts_ms"].to_numpy(np.int64) // DAY_MS
    present = (np.flatnonzero(np.bincount(day_idx - day_idx.min())) + day_idx.min()) if len(df) else []
    dates_in_file = [str(np.datetime64(int(d), "D")) for d in present]
    keep = (day_idx >= lo.astype(np.int64)) & (day_idx <= hi.astype(np.int64))
    written = dict((man or {}).get("partitions", {}))
    if keep.any():
        part = df if keep.all() else df.loc[keep]
        cov = [list(archive.covers(st.day))] if archive.covers else None
        kept_days = day_idx[keep]
        for d in np.unique(kept_days):
            one = part if len(np.unique(kept_days)) == 1 else part.loc[kept_days == d]
            mode: Literal["replace", "merge"] = "replace" if replace and int(d) not in replaced else "merge"
            replaced.add(int(d))
            for r in lake.write_trades(
                one, mode=mode, what=name, coverage=cov, coverage_source="archive", id_space=archive.id_space
            ):
                written[r.partition.date.isoformat()] = r.partition.key
                if r.changed:  # its quality report was written with it, under the partition's lock
                    rep.partitions_changed += 1
                else:  # a report missing or of an older version is recomputed (under the lock)
                    refresh_quality(lake, [r.partition], workers=1)
                    rep.partitions_unchanged += 1
    rep.rows += int(keep.sum())
    manifest = {
        "source": archive.source,
        "relpath": rel,
        "symbol": st.symbol,
        "sha256": st.sha256,
        "bytes": st.nbytes,
        "rows_in_file": int(len(df)),
        "dates_in_file": dates_in_file,
        "partitions": dict(sorted(written.items())),
        "ingested_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    lake.store.put(_manifest_key(archive.source, rel), json.dumps(manifest, indent=1).encode())
    rep.ingested += 1


# ---------------------------------------------------------------------------- Bybit entry point
def _bybit_parse(data: bytes, symbol: str, name: str) -> pd.DataFrame:
    return parse_bybit_csv(data, symbol, name=name)


BYBIT_ARCHIVE = DailyArchive(
    source="bybit_archive",
    relpath=bybit_relpath,
    file_dates=date_range,
    parse=_bybit_parse,
    id_space="bybit_match_uuid",
    covers=utc_day_ms,
    exchange="bybit_linear",
)


def ingest_bybit_archive(base: str, symbol: str, start: dt.date, end: dt.date, lake: Lake, **kwargs) -> IngestReport:
    """Bybit daily trade files for ``symbol`` (native, e.g. ``BTCUSDT``) → raw + bronze.

    See :func:`ingest_daily_archive` for ``workers``, ``force``, ``progress`` and ``fetcher``.
    """
    symbol = symbol.strip().upper()
    if not symbol.isalnum():
        raise UserError(f"Bybit archive symbols look like BTCUSDT; got {symbol!r} (try {normalise_symbol(symbol)!r})")
    return ingest_daily_archive(BYBIT_ARCHIVE, base, symbol, start, end, lake, **kwargs)
