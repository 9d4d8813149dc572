"""Layer builds: bronze trades → silver 1 s bars → gold whale events.

The steps themselves are pure functions (frame in, frame out); :func:`ensure_silver` and
:func:`ensure_gold` add the caching through the lake: a derived partition records the
content hashes it was built from and is rebuilt when its sources or the signal config change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.lake import Lake, LakeError, NoDataError, Partition, merge_intervals, partition_coverage
from datasets.durations import format_duration
from signals.journal import canonical_json

__all__ = [
    "bars_1s",
    "gold_events",
    "gold_variant",
    "ensure_silver",
    "ensure_gold",
    "load_trades",
    "TradeSpan",
    "span_holes",
    "holes_line",
    "DataHolesError",
    "HOLE_MIN_MS",
]

TRADE_COLUMNS = ["trade_id", "ts_ms", "price", "qty", "side"]
DAY_MS = 86_400_000

#: Uncovered stretches shorter than this are not reported as holes (warnings, ``--strict``,
#: ``metrics.json``): a recording that starts a few seconds after midnight is not "missing data"
#: worth a warning. Outcome windows are still judged against the exact coverage, so a signal whose
#: window crosses even a short uncovered stretch is dropped as a gap.
HOLE_MIN_MS = 60_000


class DataHolesError(LakeError):
    """A span has holes and the caller asked for complete data (``bt run --strict``)."""


def bars_1s(trades: pd.DataFrame) -> pd.DataFrame:
    """1 s bars of trades sorted by time (docs/spec.md §2 silver).

    Same as ``trades.resample('1s', on=ts)`` with last price, summed base/quote volume, count
    and taker buy/sell qty, keeping only seconds that have trades.
    """
    ts = trades["ts_ms"].to_numpy(np.int64)
    if ts.size == 0:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in [
                    ("ts_s", "int64"),
                    ("last_price", "float64"),
                    ("base_volume", "float64"),
                    ("quote_volume", "float64"),
                    ("trade_count", "int64"),
                    ("taker_buy_qty", "float64"),
                    ("taker_sell_qty", "float64"),
                ]
            }
        )
    price = trades["price"].to_numpy(np.float64)
    qty = trades["qty"].to_numpy(np.float64)
    side = trades["side"].to_numpy(np.int8)
    sec = ts // 1000
    starts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1]])
    ends = np.r_[starts[1:], sec.size] - 1
    buy = np.where(side > 0, qty, 0.0)
    return pd.DataFrame(
        {
            "ts_s": sec[starts],
            "last_price": price[ends],
            "base_volume": np.add.reduceat(qty, starts),
            "quote_volume": np.add.reduceat(qty * price, starts),
            "trade_count": np.diff(np.r_[starts, sec.size]).astype(np.int64),
            "taker_buy_qty": np.add.reduceat(buy, starts),
            "taker_sell_qty": np.add.reduceat(qty - buy, starts),
        }
    )


@dataclass
class TradeSpan:
    """Trades of one symbol over a span, as arrays, with the partitions they came from."""

    exchange: str
    symbol: str
    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray
    partitions: list[Partition]
    sources: list[dict]  # [{key, sha256, rows, coverage_source}] — lineage
    #: Covered time of the span: (k, 2) int64 ``[from_ms, to_ms)`` intervals, sorted, with
    #: overlapping and touching ones merged (see ``docs/datasets.md``, "Coverage").
    #: None (a span made by hand): covered from the first to the last trade.
    coverage: np.ndarray | None = None
    start: dt.date | None = None  # the requested dates (inclusive), for :func:`span_holes`
    end: dt.date | None = None

    @property
    def holes(self) -> list[dict]:
        """Holes inside the requested dates (see :func:`span_holes`)."""
        return span_holes(self)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"trade_id": self.trade_id, "ts_ms": self.ts_ms, "price": self.price, "qty": self.qty, "side": self.side}
        )


def load_trades(lake: Lake, exchange: str, symbol: str, start, end) -> TradeSpan:
    """Read bronze trades for ``start..end`` (dates, inclusive) into arrays, oldest first."""
    parts = lake.partitions("bronze", exchange, symbol, start=start, end=end)
    if not parts:
        raise NoDataError(
            f"no bronze trades for {exchange}/{symbol} from {start} to {end} in {lake.uri}; "
            f"stored: {lake.describe('bronze', exchange, symbol)}. "
            "Ingest them first, e.g. `datasets ingest binance-archive ...`"
        )
    frames, sources, covered = [], [], []
    for p in parts:
        df, meta = lake.read_with_meta(p, TRADE_COLUMNS)
        frames.append(df)
        # Partitions written before coverage was recorded count as covering first to last trade.
        cov, how = partition_coverage(meta, df["ts_ms"].to_numpy(np.int64))
        day0 = (p.date - dt.date(1970, 1, 1)).days * DAY_MS
        covered += [[max(a, day0), min(b, day0 + DAY_MS)] for a, b in cov]
        sources.append(
            {
                "key": p.key,
                "sha256": meta.get("content_sha256", ""),
                "rows": int(meta["rows"]),
                "coverage_source": how or "unknown",
            }
        )
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    order_ok = bool((np.diff(df["ts_ms"].to_numpy()) >= 0).all())
    if not order_ok:  # partitions are written sorted; guard against hand-made ones
        df = df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    return TradeSpan(
        exchange,
        symbol,
        df["trade_id"].to_numpy(np.int64),
        df["ts_ms"].to_numpy(np.int64),
        df["price"].to_numpy(np.float64),
        df["qty"].to_numpy(np.float64),
        df["side"].to_numpy(np.int8),
        parts,
        sources,
        np.asarray(merge_intervals(covered), dtype=np.int64).reshape(-1, 2),
        _as_date(start),
        _as_date(end),
    )


def _as_date(x) -> dt.date:
    if isinstance(x, dt.datetime):
        return x.date()
    return x if isinstance(x, dt.date) else dt.date.fromisoformat(str(x))


def _day_ms(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * DAY_MS


def _clock(ms: int, day: dt.date) -> str:
    """Time of day of ``ms`` on ``day``: ``23:41:07``, ``06:00`` when on the minute, ``24:00`` at its end."""
    off = ms - _day_ms(day)
    if off >= DAY_MS:
        return "24:00"
    h, m, sec = off // 3_600_000, off // 60_000 % 60, off // 1000 % 60
    return f"{h:02d}:{m:02d}" if off % 60_000 == 0 else f"{h:02d}:{m:02d}:{sec:02d}"


def _hole_text(lo: int, hi: int, kind: str) -> str:
    d0 = dt.date(1970, 1, 1) + dt.timedelta(days=lo // DAY_MS)
    d1 = dt.date(1970, 1, 1) + dt.timedelta(days=(hi - 1) // DAY_MS)
    if kind == "no_partition":
        return (f"{d0}" if d0 == d1 else f"{d0}..{d1}") + " (no partition)"
    if d0 == d1:
        return f"{d0} {_clock(lo, d0)}–{_clock(hi, d0)} (not covered)"
    return f"{d0} {_clock(lo, d0)}–{d1} {_clock(hi, d1)} (not covered)"


def span_holes(span: TradeSpan, start=None, end=None, *, min_ms: int = HOLE_MIN_MS) -> list[dict]:
    """Holes in a span's coverage inside the dates ``start..end`` (default: the span's request).

    A hole is a stretch of at least ``min_ms`` that no source covered. It is split where its kind
    changes: ``no_partition`` (whole requested days with no bronze partition) or ``not_covered``
    (time inside a stored day that its sources did not record, e.g. before a recording started).
    Returns dicts ``{"from_ms", "to_ms", "seconds", "kind", "text"}`` in time order, ``text``
    reading like ``2023-04-06 (no partition)`` or ``2023-04-05 23:41:07–24:00 (not covered)``.
    Pure: reads nothing but the span.
    """
    start = (
        _as_date(start) if start is not None else (span.start or (span.partitions[0].date if span.partitions else None))
    )
    end = _as_date(end) if end is not None else (span.end or (span.partitions[-1].date if span.partitions else None))
    if start is None or end is None or end < start:
        return []
    lo_all, hi_all = _day_ms(start), _day_ms(end) + DAY_MS
    stored = {p.date for p in span.partitions}
    gaps, cur = [], lo_all
    cov = span.coverage
    if cov is None:
        cov = np.asarray([[int(span.ts_ms[0]), int(span.ts_ms[-1]) + 1]] if len(span) else [], dtype=np.int64)
    for a, b in np.asarray(cov, dtype=np.int64).reshape(-1, 2).tolist():
        if b <= lo_all or a >= hi_all:
            continue
        if a > cur:
            gaps.append((cur, a))
        cur = max(cur, b)
    if cur < hi_all:
        gaps.append((cur, hi_all))
    out: list[dict] = []
    for a, b in gaps:
        if b - a < min_ms:
            continue
        pieces: list[list] = []  # split at midnights, label by the day's partition, join equal labels
        t = a
        while t < b:
            day = dt.date(1970, 1, 1) + dt.timedelta(days=t // DAY_MS)
            u = min(b, _day_ms(day) + DAY_MS)
            kind = "not_covered" if day in stored else "no_partition"
            if pieces and pieces[-1][2] == kind:
                pieces[-1][1] = u
            else:
                pieces.append([t, u, kind])
            t = u
        for x, y, kind in pieces:
            out.append(
                {
                    "from_ms": int(x),
                    "to_ms": int(y),
                    "seconds": (y - x) / 1000,
                    "kind": kind,
                    "text": _hole_text(x, y, kind),
                }
            )
    return out


def holes_line(holes: list[dict], *, label: str = "", limit: int = 8) -> str:
    """One line listing holes: ``2023-04-06 (no partition), 2023-04-05 23:41:07–24:00 (not covered)``."""
    shown = ", ".join(h["text"] for h in holes[:limit])
    more = f" (+{len(holes) - limit} more)" if len(holes) > limit else ""
    return (f"{label}: " if label else "") + shown + more


def ensure_silver(lake: Lake, span: TradeSpan) -> pd.DataFrame:
    """Silver bars for the span, built from bronze where missing or stale, cached per date."""
    frames = []
    dates = (span.ts_ms // 86_400_000).astype(np.int64)
    for p, src in zip(span.partitions, span.sources):
        day = (p.date - dt.date(1970, 1, 1)).days
        silver = Partition("silver", p.exchange, p.symbol, p.date)
        cached = None
        if lake.store.exists(silver.key):
            cached, meta = lake.read_with_meta(silver)
            if meta.get("source_sha256") != src["sha256"]:
                cached = None
        if cached is None:
            mask = dates == day
            day_trades = pd.DataFrame(
                {"ts_ms": span.ts_ms[mask], "price": span.price[mask], "qty": span.qty[mask], "side": span.side[mask]}
            )
            cached = bars_1s(day_trades)
            lake.write(
                "silver", cached, p.exchange, p.symbol, p.date, mode="replace", meta={"source_sha256": src["sha256"]}
            )
        frames.append(cached)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def gold_variant(whale: dict, horizons_ms: list[int], latency_ms: int, start: dt.date) -> str:
    """Partition variant of a gold build: what the events depend on besides bronze."""
    from signals import KERNEL_VERSION, feature_spec_hash
    from signals.outcome import OUTCOME_VERSION

    from signals import WhaleParams

    spec = {
        "whale": WhaleParams.from_dict(whale).to_dict(),  # resolved: one variant per rule, however spelled
        "horizons_ms": list(horizons_ms),
        "entry_latency_ms": int(latency_ms),
        "warmup_from": str(start),
        "features": feature_spec_hash(),
        "kernel": KERNEL_VERSION,
        "outcome": OUTCOME_VERSION,
    }
    return "signal=" + hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:12]


def gold_events(span: TradeSpan, whale: dict, horizons_ms: list[int], latency_ms: int) -> pd.DataFrame:
    """Run the kernel over the span: one row per whale event with features and gross forward returns.

    Forward returns follow docs/spec.md §3 entry/exit rules without costs (``fwd_ret_<h>``; NaN when the
    outcome window is not inside the span's covered time: past the end of the data or into a hole).
    """
    from signals import FEATURE_NAMES, WhaleParams, run_batch
    from signals.outcome import entry_exit

    params = WhaleParams.from_dict(whale)
    res = run_batch(span.ts_ms, span.price, span.qty, span.side, params)
    idx = np.asarray(res.event_idx, dtype=np.int64)
    out = {
        "trade_id": span.trade_id[idx],
        "ts_ms": span.ts_ms[idx],
        "price": span.price[idx],
        "qty": span.qty[idx],
        "notional_usd": span.price[idx] * span.qty[idx],
        "event_code": np.asarray(res.event_code, dtype=np.int8),
    }
    feats = np.asarray(res.event_features, dtype=np.float64).reshape(len(idx), len(FEATURE_NAMES))
    for j, name in enumerate(FEATURE_NAMES):
        out[f"f_{name}"] = feats[:, j]
    entry, exit_, reason = entry_exit(
        span.ts_ms, span.price, idx, latency_ms=latency_ms, horizons_ms=horizons_ms, coverage=span.coverage
    )
    ok = exit_ >= 0
    safe_entry = np.where(entry >= 0, entry, 0)
    for k, h in enumerate(horizons_ms):
        gross = span.price[np.where(ok[:, k], exit_[:, k], 0)] / span.price[safe_entry] - 1.0
        out[f"fwd_ret_{format_duration(h)}"] = np.where(ok[:, k], gross, np.nan)
    return pd.DataFrame(out)


def ensure_gold(
    lake: Lake, span: TradeSpan, whale: dict, horizons_ms: list[int], latency_ms: int, start: dt.date
) -> tuple[pd.DataFrame, bool]:
    """Gold events for the span, from the lake if built from the same bronze and config.

    The kernel runs over the whole span at once (its state carries across days); the result is
    stored per date under ``gold/<variant>/...`` with the bronze hashes it was built from.
    Returns (events, cached).
    """
    variant = gold_variant(whale, horizons_ms, latency_ms, start)
    # Forward returns depend on the coverage too (a window crossing a hole is dropped).
    fingerprint = hashlib.sha256(
        json.dumps(
            [[s["sha256"] for s in span.sources], None if span.coverage is None else np.asarray(span.coverage).tolist()]
        ).encode()
    ).hexdigest()
    parts = [Partition("gold", p.exchange, p.symbol, p.date, variant) for p in span.partitions]
    if all(lake.store.exists(g.key) for g in parts):
        stored = [lake.read_with_meta(g) for g in parts]
        if all(meta.get("source_fingerprint") == fingerprint for _, meta in stored):
            return pd.concat([df for df, _ in stored], ignore_index=True), True
    events = gold_events(span, whale, horizons_ms, latency_ms)
    ev_day = pd.to_datetime(events["ts_ms"], unit="ms", utc=True).dt.date
    for g in parts:
        lake.write(
            "gold",
            events[ev_day == g.date].reset_index(drop=True),
            g.exchange,
            g.symbol,
            g.date,
            variant=variant,
            mode="replace",
            meta={"source_fingerprint": fingerprint},
        )
    return events, False
