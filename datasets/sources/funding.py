"""Funding-rate history: Binance's monthly archive files and exchange REST APIs → the lake.

Stored beside the medallion layers, one Parquet object per exchange, symbol and UTC month::

    funding/exchange=E/symbol=S/part-YYYY-MM.parquet      columns ts_ms:int64, rate:float64

``ts_ms`` is the funding (settlement) time, ``rate`` the fraction a long pays (received when
negative) times its position notional at that moment. Sources report the settlement with a few
milliseconds of jitter (Binance's ``calc_time`` 1704067200005 for 00:00:00), so times are rounded
to the nearest minute: the same settlement from the archive and from REST is one row. Writes
merge by ``ts_ms`` (the newer source wins; a changed rate is reported) and are atomic per month;
re-ingesting changes nothing.

Sources:

- Binance archive ``data/futures/um/monthly/fundingRate/SYM/SYM-fundingRate-YYYY-MM.zip`` (with
  ``.CHECKSUM``), CSV ``calc_time,funding_interval_hours,last_funding_rate`` (header optional),
  read through :func:`datasets.sources._http.fetch` from a local mirror or a base URL; the zip is
  kept byte for byte in ``raw/binance_usdm/``. A month not published (the current one) is a gap.
- REST through ccxt's implicit endpoints, with the same rate-limit handling as trade ingestion:
  Binance ``GET /fapi/v1/fundingRate`` (forward by ``startTime``), Bybit
  ``GET /v5/market/funding/history`` (backward by ``endTime``), OKX
  ``GET /api/v5/public/funding-rate-history`` (backward by ``after``; ``realizedRate`` when given,
  else ``fundingRate``; OKX keeps about three months).
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import datetime as dt
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from datasets.exchanges import binance
from datasets.sources._zipcsv import csv_bytes
from datasets.lake import Lake, content_sha256
from datasets.schema import normalise_symbol
from datasets.validate import (
    _HINT,
    FUTURE_SLACK_MS,
    QUARANTINE_COLUMNS,
    ROW,
    TS_MIN_MS,
    BadRowsError,
    Screened,
    _as_float,
    _int64_ok,
    _show,
    quarantine_date,
)
from datasets.sources.rest import (
    REST_EXCHANGES,
    Backoff,
    RestError,
    _Stats,
    call_with_backoff,
    format_ms,
    make_client,
    okx_inst_id,
)

__all__ = [
    "FUNDING_COLUMNS",
    "FundingError",
    "FundingReport",
    "funding_key",
    "funding_relpath",
    "parse_binance_funding",
    "screen_funding",
    "FUNDING_REASONS",
    "normalise_funding",
    "write_funding",
    "read_funding",
    "funding_months",
    "fetch_funding_rest",
    "ingest_funding_archive",
    "ingest_funding_rest",
]

FUNDING_COLUMNS = {"ts_ms": "int64", "rate": "float64"}
ARCHIVE_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")
RAW_SOURCE = "binance_usdm"  # same raw folder as the Binance trade archive
QUARANTINE_ARCHIVE = "funding_archive"  # quarantine/<source>/ of refused funding rows
QUARANTINE_REST = "funding_rest"
MAX_ABS_RATE = 1.0  # a funding rate is a fraction of the notional per settlement; 100 % or more is no rate
ROUND_MS = 60_000
_US_FROM = 10**14  # a time above this is in microseconds


class FundingError(WhalebtError, ValueError):
    """A funding file or answer is not in the expected format, or a request makes no sense."""


@dataclass
class FundingReport:
    """What one funding ingest did."""

    exchange: str
    symbol: str
    source: str
    rows: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    keys_changed: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    changed_rates: int = 0
    requests: int = 0
    retries: int = 0
    quarantined: int = 0  # rows refused and kept under quarantine/ (skip_bad_rows)


# ---------------------------------------------------------------------------- layout
def funding_key(exchange: str, symbol: str, month: str) -> str:
    """Store key of one month: ``funding/exchange=E/symbol=S/part-YYYY-MM.parquet``."""
    return f"funding/exchange={exchange}/symbol={symbol}/part-{month}.parquet"


funding_relpath = binance.funding_relpath


def _month_of(ts_ms: np.ndarray) -> np.ndarray:
    return ts_ms.astype("datetime64[ms]").astype("datetime64[M]").astype(str)


# ---------------------------------------------------------------------------- parsing
#: Quarantine reasons of funding rows → what the message says.
FUNDING_REASONS = {
    "funding_ts_not_int64": "not an integer millisecond time inside int64",
    "funding_ts_before_2009": "before 2009-01-01",
    "funding_ts_in_future": "more than a day after the wall clock",
    "funding_rate_not_finite": "not a finite number",
    "funding_rate_out_of_range": f"not between -{MAX_ABS_RATE:g} and {MAX_ABS_RATE:g} (a fraction of the notional)",
}


def screen_funding(
    df: pd.DataFrame,
    *,
    what: str,
    exchange: str,
    symbol: str,
    unit: str = "line",
    skip_bad_rows: bool = False,
    now_ms: int | None = None,
) -> Screened:
    """Check every funding row before anything is stored (as :func:`datasets.validate.screen_trades`).

    A row is refused when its ``ts_ms`` is not an integer from 2009-01-01 to one day after the
    wall clock, or its ``rate`` is not a finite number inside ±:data:`MAX_ABS_RATE`. ``df`` holds
    ``ts_ms``, ``rate`` (any dtype; unparsed text counts as bad) and optionally ``_row`` (the
    source line or answer row, default position + 1).

    Raises:
        BadRowsError: a bad row and not ``skip_bad_rows``: one line naming ``what``, the row and the value.
    """
    import time

    n = len(df)
    rows = df[ROW].to_numpy(np.int64) if ROW in df.columns else np.arange(1, n + 1, dtype=np.int64)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    reason = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)
    if n:
        ts, rate = _as_float(df["ts_ms"]), _as_float(df["rate"])
        checks = [
            (~_int64_ok(df["ts_ms"]) | ~np.isfinite(ts), "funding_ts_not_int64", "ts_ms"),
            (ts < TS_MIN_MS, "funding_ts_before_2009", "ts_ms"),
            (ts > now + FUTURE_SLACK_MS, "funding_ts_in_future", "ts_ms"),
            (~np.isfinite(rate), "funding_rate_not_finite", "rate"),
            (np.isfinite(rate) & ~(np.abs(rate) < MAX_ABS_RATE), "funding_rate_out_of_range", "rate"),
        ]
        for mask, why, col in checks:
            new = mask & (reason == "")
            reason[new], column[new] = why, col
    bad_pos = np.flatnonzero(reason != "")
    if len(bad_pos) and not skip_bad_rows:
        i = int(bad_pos[0])
        col = str(column[i])
        more = len(bad_pos) - 1
        raise BadRowsError(
            f"{what} {unit} {rows[i]}: {col} {_show(df[col].iloc[i])} is {FUNDING_REASONS[str(reason[i])]}"
            f"{f'; {more} more bad rows' if more else ''}. {_HINT}"
        )
    good = df.iloc[np.flatnonzero(reason == "")] if len(bad_pos) else df
    blank = np.full(len(bad_pos), "", dtype=object)
    bad = pd.DataFrame(
        {
            "file": what,
            "row": rows[bad_pos],
            "reason": reason[bad_pos].astype(str),
            "column": column[bad_pos].astype(str),
            "value": [_show(df[str(column[i])].iloc[i]) for i in bad_pos],
            "exchange": exchange,
            "symbol": symbol,
            "trade_id": blank,
            "ts_ms": [str(df["ts_ms"].iloc[i]) for i in bad_pos],
            "price": blank,
            "qty": blank,
            "side": blank,
        },
        columns=list(QUARANTINE_COLUMNS),
    )
    bad["date"] = quarantine_date(df, bad_pos) if len(bad_pos) else []
    return Screened(good.drop(columns=[ROW], errors="ignore"), bad)


def _funding_csv_rows(data: bytes, name: str) -> pd.DataFrame:
    """The rows of a ``fundingRate`` zip (or CSV) as read: ``ts_ms``/``rate`` (numbers, or the text
    that is none) and ``_row``, the CSV line. Wrong columns raise :class:`FundingError`."""
    text = csv_bytes(data, name, FundingError).decode("utf-8", "replace")
    numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    lines = [ln for _, ln in numbered]
    if not lines:
        return pd.DataFrame({"ts_ms": pd.Series([], dtype=object), "rate": pd.Series([], dtype=object), ROW: []})
    first = [c.strip() for c in lines[0].split(",")]
    if first and not first[0].lstrip("-").isdigit():
        missing = [c for c in ARCHIVE_COLUMNS if c not in first]
        if missing:
            raise FundingError(
                f"{name}: missing column(s) {missing}; got {first}; expected {','.join(ARCHIVE_COLUMNS)}"
            )
        cols, body = first, numbered[1:]
    else:
        if len(first) != len(ARCHIVE_COLUMNS):
            raise FundingError(
                f"{name}: expected {len(ARCHIVE_COLUMNS)} columns "
                f"({','.join(ARCHIVE_COLUMNS)}); got {len(first)} in {lines[0]!r}"
            )
        cols, body = list(ARCHIVE_COLUMNS), numbered
    it, ir = cols.index("calc_time"), cols.index("last_funding_rate")

    def number(parts: list[str], i: int, kind: type) -> Any:
        text = parts[i].strip() if i < len(parts) else ""
        try:
            return kind(text)
        except ValueError:
            try:  # "1719792000004.0" is a time too
                f = float(text)
                return int(f) if kind is int and f.is_integer() else (f if kind is float else text)
            except (ValueError, OverflowError):
                return text

    split = [(no, ln.split(",")) for no, ln in body]
    return pd.DataFrame(
        {
            "ts_ms": pd.Series([number(p, it, int) for _, p in split], dtype=object),
            "rate": pd.Series([number(p, ir, float) for _, p in split], dtype=object),
            ROW: np.array([no for no, _ in split], dtype=np.int64),
        }
    )


def parse_binance_funding(data: bytes, name: str = "fundingRate file") -> pd.DataFrame:
    """A Binance ``fundingRate`` zip (or its CSV) → ``DataFrame[ts_ms, rate]``, normalised.

    Raises:
        FundingError: not a zip with one CSV, or wrong columns.
        BadRowsError: a row whose time or rate is not plausible (:func:`screen_funding`).
    """
    rows = _funding_csv_rows(data, name)
    return _normalised(screen_funding(rows, what=name, exchange="", symbol="").good)


def _normalised(good: pd.DataFrame) -> pd.DataFrame:
    """Screened rows (object columns) → normalised ``DataFrame[ts_ms, rate]``."""
    ts = np.array([int(v) for v in good["ts_ms"]], dtype=np.int64)
    return normalise_funding(pd.DataFrame({"ts_ms": ts, "rate": _as_float(good["rate"])}))


def normalise_funding(df: pd.DataFrame) -> pd.DataFrame:
    """Times to whole minutes (µs read as such), sorted, one row per time (the last wins)."""
    ts = np.asarray(df["ts_ms"], dtype=np.int64)
    ts = np.where(ts >= _US_FROM, ts // 1000, ts)
    ts = (ts + ROUND_MS // 2) // ROUND_MS * ROUND_MS
    rate = np.asarray(df["rate"], dtype=np.float64)
    if len(rate) and not np.isfinite(rate).all():
        raise FundingError(f"funding rates must be finite numbers; got {rate[~np.isfinite(rate)][:3].tolist()}")
    out = pd.DataFrame({"ts_ms": ts, "rate": rate})
    out = out.drop_duplicates("ts_ms", keep="last").sort_values("ts_ms", kind="stable")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------- lake I/O
def _to_bytes(df: pd.DataFrame, sha: str, source: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"whalebt.content_sha256"] = sha.encode()
    meta[b"whalebt.source"] = source.encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def _read_key(lake: Lake, key: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    df = pq.read_table(io.BytesIO(lake.store.get(key)), columns=list(FUNDING_COLUMNS)).to_pandas()
    return df.astype(FUNDING_COLUMNS)


def write_funding(
    lake: Lake, exchange: str, symbol: str, df: pd.DataFrame, *, source: str, report: FundingReport | None = None
) -> list[str]:
    """Merge funding rows into the lake, one atomic put per month that changes.

    Returns:
        The keys written (months whose content changed).
    """
    df = normalise_funding(df)
    if df.empty:
        return []
    months = _month_of(df["ts_ms"].to_numpy())
    written = []
    for month in sorted(set(months)):
        new = df[months == month]
        key = funding_key(exchange, symbol, month)
        if lake.store.exists(key):
            old = _read_key(lake, key)
            both = old.merge(new, on="ts_ms", how="inner", suffixes=("_old", "_new"))
            changed = int((~np.isclose(both["rate_old"], both["rate_new"], rtol=0, atol=1e-12)).sum())
            if changed and report is not None:
                report.changed_rates += changed
            new = normalise_funding(pd.concat([old, new], ignore_index=True))
            if content_sha256(new) == content_sha256(old):
                continue
        sha = content_sha256(new)
        lake.store.put(key, _to_bytes(new, sha, source))
        written.append(key)
    return written


def funding_months(lake: Lake, exchange: str, symbol: str) -> list[str]:
    """The stored months (``YYYY-MM``) of an exchange and symbol."""
    prefix = f"funding/exchange={exchange}/symbol={symbol}/part-"
    return sorted(k[len(prefix) : -len(".parquet")] for k in lake.store.list(prefix) if k.endswith(".parquet"))


def read_funding(
    lake: Lake | str, exchange: str, symbol: str, start_ms: int | None = None, end_ms: int | None = None
) -> pd.DataFrame:
    """Funding times and rates with ``start_ms <= ts_ms <= end_ms``, sorted.

    Returns an empty ``DataFrame[ts_ms, rate]`` when nothing is stored (the caller warns and
    charges no funding).
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    lo = None if start_ms is None else str(np.datetime64(int(start_ms), "ms").astype("datetime64[M]"))
    hi = None if end_ms is None else str(np.datetime64(int(end_ms), "ms").astype("datetime64[M]"))
    frames = [
        _read_key(lake, funding_key(exchange, symbol, m))
        for m in funding_months(lake, exchange, symbol)
        if (lo is None or m >= lo) and (hi is None or m <= hi)
    ]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in FUNDING_COLUMNS.items()})
    df = pd.concat(frames, ignore_index=True).sort_values("ts_ms", kind="stable")
    ts = df["ts_ms"].to_numpy()
    keep = np.ones(len(df), bool)
    if start_ms is not None:
        keep &= ts >= start_ms
    if end_ms is not None:
        keep &= ts <= end_ms
    return df[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------- archive
def _months(start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _fetch(source: str, relpath: str) -> bytes:
    from datasets.sources._http import fetch

    return fetch(source, relpath)


def ingest_funding_archive(
    lake: Lake | str,
    symbol: str,
    start: dt.date,
    end: dt.date,
    source: str | os.PathLike[str],
    *,
    progress: bool = False,
    skip_bad_rows: bool = False,
) -> FundingReport:
    """Binance monthly ``fundingRate`` files of the months touching ``start..end`` → the lake.

    Month by month: each file is checked against its ``.CHECKSUM`` and its rows screened
    (:func:`screen_funding`) before anything of it is stored; months before a refused one stay stored.

    Args:
        lake: the lake (or its URI).
        symbol: e.g. ``BTCUSDT``.
        start, end: UTC days (inclusive); whole months are ingested.
        source: a local directory or ``http(s)://`` base URL laid out like the archive.
        progress: a progress bar on stderr.
        skip_bad_rows: store the other rows and keep the refused ones under
            ``quarantine/funding_archive/`` (counted in that day's bronze quality report).

    Raises:
        FundingError: a checksum mismatch, a damaged file, or no file found at all.
        BadRowsError: a bad row (naming file and line) and not ``skip_bad_rows``.
    """
    from tqdm import tqdm

    from datasets.sources._http import NotFound, location

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    sym = normalise_symbol(symbol)
    if end < start:
        raise FundingError(f"end {end} is before start {start}; expected start <= end")
    src = os.fspath(source)
    report = FundingReport("binance_usdm", sym, src)
    months = _months(start, end)
    found = 0
    for y, m in tqdm(months, desc=f"funding {sym}", unit="month", file=sys.stderr, disable=not progress):
        rel = funding_relpath(sym, y, m)
        name = rel.rsplit("/", 1)[-1]
        try:
            data = _fetch(src, rel)
        except NotFound:
            report.gaps.append(
                f"{y:04d}-{m:02d}: no {name} at {location(src, rel)} (a month is published "
                "after it ends; take recent funding from REST: drop --base-url/--root)"
            )
            continue
        try:
            checksum = _fetch(src, rel + ".CHECKSUM")
        except NotFound:
            raise FundingError(
                f"{name}: no checksum file at {location(src, rel)}.CHECKSUM; refusing an "
                "unverified file (nothing from this month was stored)"
            ) from None
        binance.verify_checksum(data, checksum, name, FundingError)
        checked = screen_funding(
            _funding_csv_rows(data, name), what=name, exchange="binance_usdm", symbol=sym, skip_bad_rows=skip_bad_rows
        )
        df = _normalised(checked.good)
        lake.put_raw(RAW_SOURCE, rel, data)
        lake.write_quarantine(QUARANTINE_ARCHIVE, checked.bad)
        report.quarantined += len(checked.bad)
        found += 1
        _account(report, df)
        report.keys_changed += write_funding(lake, "binance_usdm", sym, df, source=f"archive:{rel}", report=report)
    if not found:
        raise FundingError(
            f"no Binance fundingRate file for {sym} from {start:%Y-%m} to {end:%Y-%m} under {src}; "
            f"looked for e.g. {location(src, funding_relpath(sym, *months[0]))}"
        )
    return report


def _account(report: FundingReport, df: pd.DataFrame) -> None:
    if df.empty:
        return
    report.rows += len(df)
    lo, hi = int(df["ts_ms"].iloc[0]), int(df["ts_ms"].iloc[-1])
    report.first_ts_ms = lo if report.first_ts_ms is None else min(report.first_ts_ms, lo)
    report.last_ts_ms = hi if report.last_ts_ms is None else max(report.last_ts_ms, hi)


# ---------------------------------------------------------------------------- REST
def fetch_funding_rest(
    exchange: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    client: Any = None,
    api_url: str | None = None,
    rate_limit_ms: float | None = None,
    backoff: Backoff | None = None,
    stats: _Stats | None = None,
    skip_bad_rows: bool = False,
    refused: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Funding history of ``[start_ms, end_ms]`` from an exchange's REST API → ``DataFrame[ts_ms, rate]``.

    Every row is screened (:func:`screen_funding`, rows numbered in order received); with
    ``skip_bad_rows`` the refused ones are appended to ``refused`` instead of raising.

    Raises:
        RestError: the exchange rejected a request or kept failing.
        BadRowsError: a bad row and not ``skip_bad_rows``.
    """
    if exchange not in REST_EXCHANGES:
        raise FundingError(f"unknown exchange {exchange!r}; expected one of {', '.join(REST_EXCHANGES)}")
    client = client if client is not None else make_client(exchange, api_url=api_url, rate_limit_ms=rate_limit_ms)
    backoff = backoff or Backoff()
    stats = stats if stats is not None else _Stats()
    sym = normalise_symbol(symbol)

    def call(method: str, params: dict[str, Any]) -> Any:
        return call_with_backoff(client, method, params, backoff=backoff, stats=stats, what=f"{exchange} {sym} funding")

    ts: list[Any] = []  # as received; screened below
    rate: list[Any] = []
    try:
        if exchange == "binance_usdm":
            cursor = int(start_ms)
            while cursor <= end_ms:
                rows = call(
                    "fapiPublicGetFundingRate",
                    {"symbol": sym, "startTime": cursor, "endTime": int(end_ms), "limit": 1000},
                )
                for r in rows:
                    ts.append(r["fundingTime"])
                    rate.append(r["fundingRate"])
                if len(rows) < 1000:
                    break
                cursor = int(rows[-1]["fundingTime"]) + 1
        elif exchange == "bybit_linear":
            cursor = int(end_ms)
            while cursor >= start_ms:
                res = call(
                    "publicGetV5MarketFundingHistory",
                    {"category": "linear", "symbol": sym, "endTime": cursor, "limit": 200},
                )
                rows = (res.get("result") or {}).get("list") or []
                for r in rows:
                    ts.append(r["fundingRateTimestamp"])
                    rate.append(r["fundingRate"])
                if len(rows) < 200:
                    break
                cursor = min(int(r["fundingRateTimestamp"]) for r in rows) - 1
        else:
            inst = okx_inst_id(symbol)
            cursor = int(end_ms) + 1
            while cursor > start_ms:
                rows = call("publicGetPublicFundingRateHistory", {"instId": inst, "after": cursor, "limit": 100})[
                    "data"
                ]
                for r in rows:
                    ts.append(r["fundingTime"])
                    rate.append(r.get("realizedRate") or r["fundingRate"])
                if len(rows) < 100:
                    break
                cursor = min(int(r["fundingTime"]) for r in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise RestError(
            f"{exchange} {sym} funding: an answer is not in the expected format ({type(exc).__name__}: {exc})"
        ) from None
    raw = pd.DataFrame(
        {"ts_ms": pd.Series([_as_number(v, int) for v in ts], dtype=object), "rate": pd.Series(rate, dtype=object)}
    )
    what = f"{exchange} {sym} funding answer"
    checked = screen_funding(raw, what=what, exchange=exchange, symbol=sym, unit="row", skip_bad_rows=skip_bad_rows)
    if refused is not None and len(checked.bad):
        refused.append(checked.bad)
    df = _normalised(checked.good)
    t = df["ts_ms"].to_numpy()
    return df[(t >= start_ms) & (t <= end_ms)].reset_index(drop=True)


def _as_number(v: Any, kind: type) -> Any:
    """``"1719792000000"`` → 1719792000000; anything that is not such a number stays as it is."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    try:
        return kind(str(v).strip())
    except (ValueError, OverflowError):
        return v


def ingest_funding_rest(
    lake: Lake | str,
    exchange: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    api_url: str | None = None,
    client: Any = None,
    rate_limit_ms: float | None = None,
    backoff: Backoff | None = None,
    skip_bad_rows: bool = False,
) -> FundingReport:
    """Fetch funding history of ``[start_ms, end_ms]`` over REST and merge it into the lake.

    A bad row (:func:`screen_funding`) refuses the ingest before anything is written, unless
    ``skip_bad_rows``: then it is kept under ``quarantine/funding_rest/`` and the rest is stored.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if end_ms < start_ms:
        raise FundingError(f"end {format_ms(end_ms)} is before start {format_ms(start_ms)}")
    sym = normalise_symbol(okx_inst_id(symbol) if exchange == "okx_swap" else symbol)
    stats = _Stats()
    refused: list[pd.DataFrame] = []
    df = fetch_funding_rest(
        exchange,
        symbol,
        start_ms,
        end_ms,
        client=client,
        api_url=api_url,
        rate_limit_ms=rate_limit_ms,
        backoff=backoff,
        stats=stats,
        skip_bad_rows=skip_bad_rows,
        refused=refused,
    )
    report = FundingReport(exchange, sym, f"rest:{exchange}", requests=stats.requests, retries=stats.retries)
    for bad in refused:
        lake.write_quarantine(QUARANTINE_REST, bad.assign(symbol=sym))
        report.quarantined += len(bad)
    _account(report, df)
    if df.empty:
        report.gaps.append(
            f"{exchange} {sym}: the API returned no funding from {format_ms(start_ms)} to {format_ms(end_ms)} UTC"
        )
    report.keys_changed = write_funding(lake, exchange, sym, df, source=f"rest:{exchange}", report=report)
    return report
