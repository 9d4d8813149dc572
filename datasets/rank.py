"""Symbol ranking over daily klines: which perpetuals move most per unit of taker flow.

:func:`rank_symbols` is pure (kline frames in, one table out); :func:`load_klines` and
:func:`load_exchange_info` read the inputs from a Binance-style archive (directory or base URL)
and an ``exchangeInfo`` JSON.

Components, per symbol, over its good daily klines (columns as in Binance's archive:
``open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,
taker_buy_quote_volume,ignore``):

- ``kyle_lambda`` = ``|cov(r, q)| / var(q)`` (sample moments, ``ddof=1``) with ``r = ln(close/open)``
  the day's log return and ``q = taker_buy_quote_volume - (quote_volume - taker_buy_quote_volume)``
  the signed taker quote flow (USD). The return is measured open to close of the same kline, the
  interval the flow was measured over, so a missing day does not pair one day's flow with two
  days' return. Unit: log return per USD of net taker buying (shown as bps per $1M).
- ``big_move_share``: share of days with ``|close/open - 1| > big_move`` (default 5 %).
- ``wide_range_share``: share of days with ``(high - low)/open > wide_range`` (default 20 %).

Score: each component is normalised across the eligible symbols, by percentile rank
(``normalise="rank"``, default: rank / n with ties averaged, so 1.0 is the highest) or by z-score
(``"zscore"``: (x - mean) / std, population std, 0 when all are equal), then combined with weights
that are rescaled to sum to 1. Default weights: ``kyle_lambda`` 0.4, ``big_move_share`` 0.3,
``wide_range_share`` 0.3. Eligible symbols are ordered by score (highest first, ties by name);
excluded ones follow, by name, with every reason that applies:

- ``stablecoin``: the base asset is a stablecoin (USDC, FDUSD, ...);
- ``status``: with an exchangeInfo, the symbol is missing, not ``TRADING`` or not ``PERPETUAL``;
- ``history``: fewer than ``min_days`` good days;
- ``gaps``: more than ``max_missing_days`` calendar days missing between its first and last kline;
- ``stale``: its last kline is more than ``max_stale_days`` before the newest kline of the set;
- ``quality``: more than ``max_bad_rows`` bad rows (non-positive or missing prices, high below
  open/close/low, low above open/close, negative volumes or counts, taker buy above the total,
  a day with two different rows);
- ``liquidity``: median daily quote volume below ``min_quote_volume_usd``;
- ``activity``: median daily trade count below ``min_trades``;
- ``flow``: the signed flow does not vary (Kyle's lambda undefined).
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import datetime as dt
import difflib
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from datasets.exchanges import binance
from datasets.sources._zipcsv import csv_bytes

__all__ = [
    "KLINE_COLUMNS",
    "COMPONENTS",
    "DEFAULT_WEIGHTS",
    "STABLECOINS",
    "RankFilters",
    "RankError",
    "rank_symbols",
    "parse_kline_csv",
    "load_klines",
    "load_exchange_info",
    "parse_weights",
]

KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
NEEDED = ("open_time", "open", "high", "low", "close", "quote_volume", "count", "taker_buy_quote_volume")
COMPONENTS = ("kyle_lambda", "big_move_share", "wide_range_share")
DEFAULT_WEIGHTS: dict[str, float] = {"kyle_lambda": 0.4, "big_move_share": 0.3, "wide_range_share": 0.3}
STABLECOINS = (
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "FDUSD",
    "DAI",
    "USDP",
    "PYUSD",
    "USDE",
    "USD1",
    "USDS",
    "FRAX",
    "GUSD",
    "EUR",
    "EURI",
    "AEUR",
)
QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "USD")
DAY_MS = 86_400_000
_US_FROM = 10**14


class RankError(WhalebtError, ValueError):
    """Kline input that cannot be ranked (missing columns, no files, bad options)."""


@dataclass(frozen=True)
class RankFilters:
    """Exclusion thresholds (see the module doc)."""

    min_days: int = 60
    max_missing_days: int = 3
    max_stale_days: int = 2
    max_bad_rows: int = 0
    min_quote_volume_usd: float = 5_000_000.0
    min_trades: float = 10_000.0
    stablecoins: tuple[str, ...] = STABLECOINS


def parse_weights(text: str) -> dict[str, float]:
    """``kyle_lambda=0.5,big_move_share=0.5`` → dict (components left out weigh 0)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise RankError(f"weights: expected name=value pairs like kyle_lambda=0.4; got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise RankError(f"weights: {name.strip()!r} needs a number; got {value!r}") from None
    return out


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    for k, v in w.items():
        if k not in COMPONENTS:
            close = difflib.get_close_matches(k, COMPONENTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RankError(f"unknown score component {k!r}; expected some of {list(COMPONENTS)}.{hint}")
        if not np.isfinite(v) or v < 0:
            raise RankError(f"weight of {k} must be a number >= 0; got {v}")
    total = sum(w.values())
    if total <= 0:
        raise RankError(f"weights must not all be zero; got {w}")
    return {k: w.get(k, 0.0) / total for k in COMPONENTS}


def _base_asset(symbol: str, info: Mapping[str, Any] | None) -> str:
    if info and info.get("baseAsset"):
        return str(info["baseAsset"]).upper()
    for q in QUOTES:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)]
    return symbol


def _fmt_usd(x: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"${x / div:.3g}{unit}"
    return f"${x:.3g}"


def _day_str(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _symbol_stats(sym: str, df: pd.DataFrame, big_move: float, wide_range: float) -> dict[str, Any]:
    got = [str(c) for c in df.columns]
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        unknown = [c for c in got if c not in KLINE_COLUMNS]  # only a column we do not know can be a misnaming
        hints = "".join(
            f" Did you mean {near[0]!r} for {c!r}?"
            for c in missing
            if (near := difflib.get_close_matches(c, unknown, n=1))
        )
        raise RankError(f"klines of {sym} are missing column(s) {missing}; got {got}.{hints}")
    num = {k: pd.to_numeric(df[k], errors="coerce").to_numpy(np.float64) for k in NEEDED}
    ot = num.pop("open_time")
    ot = np.where(ot >= _US_FROM, ot / 1000, ot)
    day = np.floor(ot / DAY_MS)
    keep = np.isfinite(day)
    order = np.argsort(day[keep], kind="stable")
    day = day[keep][order]
    m = (
        np.column_stack(
            [
                num[k][keep][order]
                for k in ("open", "high", "low", "close", "quote_volume", "taker_buy_quote_volume", "count")
            ]
        )
        if len(day)
        else np.empty((0, 7))
    )
    # One row per day (the last): identical repeats (a daily and a monthly file) are fine, a day
    # with different rows counts as one bad row.
    last = np.searchsorted(day, day, side="right") - 1
    same = (m == m[last]) | (np.isnan(m) & np.isnan(m[last]))
    conflicting = int(len(np.unique(day[~same.all(axis=1)])))
    is_last = np.arange(len(day)) == last
    day, m = day[is_last], m[is_last]
    o, h, lo, c, qv, tbq, n = m.T
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(m).all(axis=1)
        bad |= (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
        bad |= (h < np.maximum(o, c)) | (h < lo) | (lo > np.minimum(o, c))
        bad |= (qv < 0) | (tbq < 0) | (n < 0) | (tbq > qv * (1 + 1e-9))
    good = ~bad
    o, h, lo, c, qv, tbq, n = (x[good] for x in (o, h, lo, c, qv, tbq, n))
    days = day[good].astype(np.int64)
    out: dict[str, Any] = {
        "symbol": sym,
        "days": int(len(days)),
        "bad_rows": int(bad.sum()) + conflicting,
        "first_day": int(days[0]) if len(days) else None,
        "last_day": int(days[-1]) if len(days) else None,
        "missing_days": int(days[-1] - days[0] + 1 - len(days)) if len(days) else 0,
        "median_quote_volume_usd": float(np.median(qv)) if len(qv) else np.nan,
        "median_trades": float(np.median(n)) if len(n) else np.nan,
        "kyle_lambda": np.nan,
        "big_move_share": np.nan,
        "wide_range_share": np.nan,
    }
    if len(days):
        out["big_move_share"] = float(np.mean(np.abs(c / o - 1) > big_move))
        out["wide_range_share"] = float(np.mean((h - lo) / o > wide_range))
    if len(days) >= 2:
        r = np.log(c / o)
        q = tbq - (qv - tbq)
        var_q = float(np.var(q, ddof=1))
        if var_q > 0 and np.isfinite(var_q):
            cov = float(np.sum((r - r.mean()) * (q - q.mean())) / (len(q) - 1))
            out["kyle_lambda"] = abs(cov) / var_q
    return out


def _normalise(x: pd.Series, how: str) -> pd.Series:
    if how == "rank":
        return x.rank(method="average", pct=True)
    sd = float(x.std(ddof=0))
    return (x - x.mean()) / sd if sd > 0 else x * 0.0


def rank_symbols(
    klines: Mapping[str, pd.DataFrame],
    *,
    weights: Mapping[str, float] | None = None,
    normalise: str = "rank",
    filters: RankFilters | None = None,
    exchange_info: Mapping[str, Mapping[str, Any]] | None = None,
    big_move: float = 0.05,
    wide_range: float = 0.20,
) -> pd.DataFrame:
    """Rank symbols by a weighted score of Kyle's lambda and big-move shares, with exclusions.

    Args:
        klines: symbol → daily klines (Binance archive columns; ``open_time`` in ms or µs).
        weights: component → weight (default :data:`DEFAULT_WEIGHTS`; rescaled to sum to 1).
        normalise: ``"rank"`` (percentile rank) or ``"zscore"``.
        filters: exclusion thresholds (default :class:`RankFilters`).
        exchange_info: symbol → exchangeInfo entry (``status``, ``contractType``, ``baseAsset``);
            None skips the status check.
        big_move: threshold of ``|close/open - 1|`` for ``big_move_share``.
        wide_range: threshold of ``(high - low)/open`` for ``wide_range_share``.

    Returns:
        One row per symbol: ``rank`` (1 = best; missing for excluded), ``symbol``, ``score``, the
        components, ``kyle_lambda_bps_per_musd``, ``days``, ``missing_days``, ``bad_rows``,
        ``median_quote_volume_usd``, ``median_trades``, ``first_day``, ``last_day``, ``eligible``,
        ``reasons`` ("; "-joined, empty when eligible).

    Raises:
        RankError: a frame lacks a needed column, or bad weights/options.
    """
    if normalise not in ("rank", "zscore"):
        raise RankError(f"normalise must be 'rank' or 'zscore'; got {normalise!r}")
    w = _check_weights(weights)
    f = filters or RankFilters()
    stables = {s.upper() for s in f.stablecoins}
    rows = [_symbol_stats(str(sym).upper(), df, big_move, wide_range) for sym, df in sorted(klines.items())]
    last_days = [r["last_day"] for r in rows if r["last_day"] is not None]
    newest = max(last_days) if last_days else None
    for r in rows:
        sym = r["symbol"]
        info = exchange_info.get(sym) if exchange_info is not None else None
        reasons = []
        base = _base_asset(sym, info)
        if base in stables:
            reasons.append(f"stablecoin: base asset {base}")
        if exchange_info is not None:
            if info is None:
                reasons.append("status: not listed in exchangeInfo (delisted?)")
            else:
                if str(info.get("status", "")).upper() != "TRADING":
                    reasons.append(f"status: {info.get('status')} (not TRADING)")
                ct = info.get("contractType")
                if ct is not None and str(ct).upper() != "PERPETUAL":
                    reasons.append(f"status: contract type {ct} (not PERPETUAL)")
        if r["days"] < f.min_days:
            reasons.append(f"history: {r['days']} good days < {f.min_days}")
        if r["missing_days"] > f.max_missing_days:
            reasons.append(f"gaps: {r['missing_days']} missing days > {f.max_missing_days}")
        if r["last_day"] is not None and newest is not None and newest - r["last_day"] > f.max_stale_days:
            reasons.append(
                f"stale: last kline {_day_str(r['last_day'])}, {newest - r['last_day']} days "
                f"before the newest ({_day_str(newest)})"
            )
        if r["bad_rows"] > f.max_bad_rows:
            reasons.append(f"quality: {r['bad_rows']} bad rows > {f.max_bad_rows}")
        mq, mt = r["median_quote_volume_usd"], r["median_trades"]
        if not (mq >= f.min_quote_volume_usd):
            reasons.append(
                f"liquidity: median quote volume {_fmt_usd(mq) if np.isfinite(mq) else 'n/a'} "
                f"< {_fmt_usd(f.min_quote_volume_usd)}"
            )
        if not (mt >= f.min_trades):
            reasons.append(
                f"activity: median {mt:,.0f} trades/day < {f.min_trades:,.0f}"
                if np.isfinite(mt)
                else f"activity: no trade counts < {f.min_trades:,.0f}"
            )
        if r["days"] >= 2 and not np.isfinite(r["kyle_lambda"]):
            reasons.append("flow: taker flow does not vary, Kyle's lambda undefined")
        r["reasons"] = "; ".join(reasons)
        r["eligible"] = not reasons
    cols = [
        "rank",
        "symbol",
        "score",
        *COMPONENTS,
        "kyle_lambda_bps_per_musd",
        "days",
        "missing_days",
        "bad_rows",
        "median_quote_volume_usd",
        "median_trades",
        "first_day",
        "last_day",
        "eligible",
        "reasons",
    ]
    if not rows:
        return pd.DataFrame({c: [] for c in cols})
    out = pd.DataFrame(rows)
    out["kyle_lambda_bps_per_musd"] = out["kyle_lambda"] * 1e10
    out["score"] = np.nan
    ok = out["eligible"].to_numpy(bool)
    if ok.any():
        score = sum(w[k] * _normalise(out.loc[ok, k], normalise) for k in COMPONENTS if w[k] > 0)
        out.loc[ok, "score"] = score
    elig = out[ok].sort_values(["score", "symbol"], ascending=[False, True], kind="stable")
    excl = out[~ok].sort_values("symbol", kind="stable")
    out = pd.concat([elig, excl], ignore_index=True)
    out["rank"] = pd.array(list(range(1, len(elig) + 1)) + [None] * len(excl), dtype="Int64")
    for k in ("first_day", "last_day"):
        out[k] = [None if v is None or pd.isna(v) else _day_str(int(v)) for v in out[k]]
    return out[cols]


# ---------------------------------------------------------------------------- reading klines
_KLINE_NAME = re.compile(
    r"^(?P<sym>[A-Z0-9]+)-(?P<iv>[0-9a-zA-Z]+)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)


def parse_kline_csv(data: bytes, name: str = "klines") -> pd.DataFrame:
    """A Binance kline zip or CSV (with or without header) → frame with :data:`KLINE_COLUMNS`.

    Raises:
        RankError: not a zip with one CSV, or not 12 kline columns.
    """
    text = csv_bytes(data, name, RankError).decode("utf-8", "replace")
    first = text.split("\n", 1)[0].strip()
    header = bool(first) and not first.split(",")[0].strip().lstrip("-").replace(".", "", 1).isdigit()
    if not first:
        return pd.DataFrame({c: [] for c in KLINE_COLUMNS})
    df = pd.read_csv(io.StringIO(text), header=0 if header else None)
    if not header:
        if df.shape[1] != len(KLINE_COLUMNS):
            raise RankError(
                f"{name}: expected {len(KLINE_COLUMNS)} kline columns ({','.join(KLINE_COLUMNS)}); got {df.shape[1]}"
            )
        df.columns = list(KLINE_COLUMNS)
    return df


def _months(start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def load_klines(
    source: str | os.PathLike[str],
    *,
    symbols: Iterable[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    interval: str = "1d",
    on_file: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Daily klines per symbol from a Binance-style archive (local directory or base URL).

    A directory is searched recursively for ``SYM-1d-YYYY-MM(-DD).zip|csv`` (the archive's
    ``data/futures/um/{daily,monthly}/klines/SYM/1d/`` layout or a flat folder); a ``.CHECKSUM``
    beside a file is verified. A base URL cannot be listed, so it needs ``symbols``, ``start`` and
    ``end``: each month's file is fetched, and the daily files of months not published yet.

    Raises:
        RankError: nothing found, a checksum mismatch, or a file that does not parse.
    """
    from datasets.sources._http import NotFound, fetch, is_url

    wanted = {s.upper() for s in symbols} if symbols else None
    frames: dict[str, list[pd.DataFrame]] = {}
    src = os.fspath(source)
    if is_url(src):
        if not wanted or start is None or end is None:
            raise RankError(
                "a base URL cannot be listed: give --symbols, --start and --end "
                "(or point --klines at a local copy of the archive)"
            )
        for sym in sorted(wanted):
            for y, m in _months(start, end):
                rel = binance.klines_monthly_relpath(sym, interval, y, m)
                rels = [rel]
                try:
                    data = fetch(src, rel)
                    blobs = [(rel, data)]
                except NotFound:
                    blobs = []
                    d = max(dt.date(y, m, 1), start)
                    while d.month == m and d <= end:
                        rd = binance.klines_daily_relpath(sym, interval, d)
                        rels.append(rd)
                        try:
                            blobs.append((rd, fetch(src, rd)))
                        except NotFound:
                            pass
                        d += dt.timedelta(days=1)
                for rp, data in blobs:
                    try:
                        binance.verify_checksum(data, fetch(src, rp + ".CHECKSUM"), rp.rsplit("/", 1)[-1], RankError)
                    except NotFound:
                        pass
                    frames.setdefault(sym, []).append(parse_kline_csv(data, rp))
                    if on_file:
                        on_file(rp)
    else:
        root = Path(src)
        if not root.is_dir():
            raise RankError(
                f"--klines {src}: expected a directory (or http(s) base URL) holding SYM-{interval}-"
                "YYYY-MM[-DD].zip kline files; it does not exist or is not a directory"
            )
        for path in sorted(root.rglob(f"*-{interval}-*")):
            mt = _KLINE_NAME.match(path.name)
            if not mt or mt["iv"] != interval:
                continue
            sym = mt["sym"]
            if wanted and sym not in wanted:
                continue
            data = path.read_bytes()
            side = path.with_name(path.name + ".CHECKSUM")
            if side.exists():
                binance.verify_checksum(data, side.read_bytes(), path.name, RankError)
            frames.setdefault(sym, []).append(parse_kline_csv(data, str(path)))
            if on_file:
                on_file(str(path))
    out: dict[str, pd.DataFrame] = {}
    lo = None if start is None else int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp() * 1000)
    hi = None if end is None else int(dt.datetime.combine(end, dt.time(), dt.timezone.utc).timestamp() * 1000) + DAY_MS
    for sym, parts in frames.items():
        df = pd.concat(parts, ignore_index=True)
        ot = pd.to_numeric(df["open_time"], errors="coerce").to_numpy(np.float64)
        ot = np.where(ot >= _US_FROM, ot / 1000, ot)
        keep = np.ones(len(df), bool)
        if lo is not None:
            keep &= ot >= lo
        if hi is not None:
            keep &= ot < hi
        df = df[keep].reset_index(drop=True)
        if len(df):
            out[sym] = df
    if not out:
        what = f" for {', '.join(sorted(wanted))}" if wanted else ""
        raise RankError(
            f"no {interval} kline files{what} found under {src}"
            + (f" between {start} and {end}" if start or end else "")
            + f"; expected names like BTCUSDT-{interval}-2024-06.zip"
        )
    return out


def load_exchange_info(source: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """symbol → entry of an exchangeInfo JSON (a file, or a URL such as ``.../fapi/v1/exchangeInfo``).

    Raises:
        RankError: not JSON, or no ``symbols`` list.
    """
    src = os.fspath(source)
    if src.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(src, timeout=60) as resp:
            raw = resp.read()
    else:
        raw = Path(src).read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RankError(f"--exchange-info {src}: not JSON ({exc}); expected Binance's exchangeInfo answer") from None
    syms = doc.get("symbols") if isinstance(doc, dict) else None
    if not isinstance(syms, list):
        keys = list(doc)[:10] if isinstance(doc, dict) else type(doc).__name__
        raise RankError(
            f"--exchange-info {src}: expected an object with a 'symbols' list "
            f"(Binance /fapi/v1/exchangeInfo); got {keys}"
        )
    return {str(s["symbol"]).upper(): s for s in syms if isinstance(s, dict) and "symbol" in s}


def filters_dict(f: RankFilters) -> dict[str, Any]:
    """The thresholds as a plain dict (for reports)."""
    d = asdict(f)
    d["stablecoins"] = list(d["stablecoins"])
    return d
