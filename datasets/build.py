"""Layer builds: bronze trades → silver 1 s bars → gold whale events.

The steps themselves are pure functions (frame in, frame out); :func:`ensure_silver` and
:func:`ensure_gold` add the caching through the lake: a derived partition records the
content hashes it was built from and is rebuilt when its sources or the signal config change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.lake import Lake, LakeError, NoDataError, Partition, merge_intervals, partition_coverage
from datasets.durations import format_duration
from datasets.tape import DAY_MS, DEFAULT_CACHE_DAYS, TRADE_COLUMNS, DayArrays, DayTape, TapeOrderError
from signals.journal import canonical_json

__all__ = [
    "bars_1s",
    "gold_events",
    "tape_gold_events",
    "gold_frame",
    "gold_days",
    "kernel_days",
    "kernel_batch",
    "KernelEvents",
    "gold_variant",
    "ensure_silver",
    "ensure_gold",
    "load_trades",
    "open_tape",
    "tape_ends_ms",
    "refresh_silver",
    "stale_silver_days",
    "TradeSpan",
    "DayTape",
    "span_holes",
    "holes_line",
    "DataHolesError",
    "HOLE_MIN_MS",
]


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

    @property
    def first_ts_ms(self) -> int | None:
        return int(self.ts_ms[0]) if len(self) else None

    @property
    def last_ts_ms(self) -> int | None:
        return int(self.ts_ms[-1]) if len(self) else None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"trade_id": self.trade_id, "ts_ms": self.ts_ms, "price": self.price, "qty": self.qty, "side": self.side}
        )


def bronze_partitions(lake: Lake, exchange: str, symbol: str, start, end) -> list[Partition]:
    """The bronze partitions of ``start..end``; :class:`NoDataError` saying what is stored when none."""
    parts = lake.partitions("bronze", exchange, symbol, start=start, end=end)
    if not parts:
        raise NoDataError(
            f"no bronze trades for {exchange}/{symbol} from {start} to {end} in {lake.uri}; "
            f"stored: {lake.describe('bronze', exchange, symbol)}. "
            "Ingest them first, e.g. `datasets ingest binance-archive ...`"
        )
    return parts


def load_trades(lake: Lake, exchange: str, symbol: str, start, end) -> TradeSpan:
    """Read bronze trades for ``start..end`` (dates, inclusive) into arrays, oldest first."""
    parts = bronze_partitions(lake, exchange, symbol, start, end)
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


def open_tape(lake: Lake, exchange: str, symbol: str, start, end, *, cache_days: int = DEFAULT_CACHE_DAYS) -> DayTape:
    """The bronze trades of ``start..end`` as a :class:`~datasets.tape.DayTape`: read day by day.

    Same trades, order, sources and coverage as :func:`load_trades`; reads only the partitions'
    footers now (and ``ts_ms`` of partitions written before coverage was recorded).
    """
    parts = bronze_partitions(lake, exchange, symbol, start, end)
    sources, covered, rows = [], [], []
    for p in parts:
        meta = lake.partition_meta(p)
        ts = None
        if not meta.get("coverage"):  # written before coverage was recorded: first to last trade
            ts = lake.read_with_meta(p, ["ts_ms"])[0]["ts_ms"].to_numpy(np.int64)
        cov, how = partition_coverage(meta, ts)
        day0 = _day_ms(p.date)
        covered += [[max(a, day0), min(b, day0 + DAY_MS)] for a, b in cov]
        rows.append(int(meta["rows"]))
        sources.append(
            {
                "key": p.key,
                "sha256": meta.get("content_sha256", ""),
                "rows": int(meta["rows"]),
                "coverage_source": how or "unknown",
            }
        )

    def load_day(k: int) -> DayArrays:
        p = parts[k]
        df = lake.read_with_meta(p, TRADE_COLUMNS)[0]
        ts = df["ts_ms"].to_numpy(np.int64)
        day0 = _day_ms(p.date)
        if ts.size and (int(ts.min()) < day0 or int(ts.max()) >= day0 + DAY_MS):
            raise TapeOrderError(
                f"{p.key} holds trades outside {p.date}; rewrite it through Lake.write_trades "
                "(it splits trades by UTC date)"
            )
        if not bool((np.diff(ts) >= 0).all()):  # partitions are written sorted; guard against hand-made ones
            df = df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
        return DayArrays(
            df["trade_id"].to_numpy(np.int64),
            df["ts_ms"].to_numpy(np.int64),
            df["price"].to_numpy(np.float64),
            df["qty"].to_numpy(np.float64),
            df["side"].to_numpy(np.int8),
        )

    def load_columns(k: int, columns: list[str]) -> dict[str, np.ndarray]:
        df = lake.read_with_meta(parts[k], columns)[0]
        return {
            c: df[c].to_numpy(np.int8 if c == "side" else np.float64 if c in ("price", "qty") else np.int64)
            for c in columns
        }

    return DayTape(
        exchange,
        symbol,
        parts,
        sources,
        np.asarray(merge_intervals(covered), dtype=np.int64).reshape(-1, 2),
        _as_date(start),
        _as_date(end),
        np.asarray(rows, dtype=np.int64),
        load_day,
        cache_days=cache_days,
        load_columns=load_columns,
    )


def tape_ends_ms(lake: Lake, exchange: str, symbol: str, start, end) -> tuple[int | None, int | None]:
    """The first and last trade times of ``start..end`` (None, None without trades): the
    :class:`~datasets.tape.DayTape` ``first_ts_ms``/``last_ts_ms``, reading only ``ts_ms`` of the
    first and last partitions holding trades (a universe foresees its portfolio span with it)."""
    parts = bronze_partitions(lake, exchange, symbol, start, end)

    def ends(order) -> int | None:
        for p in order:
            ts = lake.read_with_meta(p, ["ts_ms"])[0]["ts_ms"].to_numpy(np.int64)
            if ts.size:
                return int(ts.min() if order is parts else ts.max())
        return None

    first = ends(parts)
    return first, (None if first is None else ends(parts[::-1]))


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


def span_holes(span: TradeSpan | DayTape, start=None, end=None, *, min_ms: int = HOLE_MIN_MS) -> list[dict]:
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
        first, last = span.first_ts_ms, span.last_ts_ms
        cov = np.asarray([[first, last + 1]] if first is not None and last is not None else [], dtype=np.int64)
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


def _stale_silver(lake: Lake, p: Partition, src: dict) -> tuple[Partition, bool]:
    silver = Partition("silver", p.exchange, p.symbol, p.date)
    fresh = lake.store.exists(silver.key) and lake.partition_meta(silver).get("source_sha256") == src["sha256"]
    return silver, not fresh


def _write_silver(lake: Lake, p: Partition, src: dict, day: DayArrays | pd.DataFrame) -> pd.DataFrame:
    if isinstance(day, DayArrays):
        day = pd.DataFrame({"ts_ms": day.ts_ms, "price": day.price, "qty": day.qty, "side": day.side})
    bars = bars_1s(day)
    lake.write("silver", bars, p.exchange, p.symbol, p.date, mode="replace", meta={"source_sha256": src["sha256"]})
    return bars


def stale_silver_days(lake: Lake, tape: DayTape) -> list[int]:
    """The tape's days whose silver bars are missing or were built from other bronze (footers only)."""
    return [k for k, (p, src) in enumerate(zip(tape.partitions, tape.sources)) if _stale_silver(lake, p, src)[1]]


def refresh_silver(lake: Lake, tape: DayTape, days: list[int] | None = None) -> int:
    """Build the silver bars of a tape's stale or missing days (``days``: those of
    :func:`stale_silver_days`, found here when None), one day at a time; returns how many."""
    todo = stale_silver_days(lake, tape) if days is None else days
    for k in todo:
        _write_silver(lake, tape.partitions[k], tape.sources[k], tape.day(k))
    return len(todo)


def ensure_silver(lake: Lake, span: TradeSpan | DayTape) -> pd.DataFrame:
    """Silver bars for the span, built from bronze where missing or stale, cached per date."""
    frames = []
    dates = None if isinstance(span, DayTape) else (span.ts_ms // DAY_MS).astype(np.int64)
    for k, (p, src) in enumerate(zip(span.partitions, span.sources)):
        silver, stale = _stale_silver(lake, p, src)
        if not stale:
            frames.append(lake.read_with_meta(silver)[0])
        elif isinstance(span, DayTape):
            frames.append(_write_silver(lake, p, src, span.day(k)))
        else:
            assert dates is not None
            mask = dates == (p.date - dt.date(1970, 1, 1)).days
            day_trades = pd.DataFrame(
                {"ts_ms": span.ts_ms[mask], "price": span.price[mask], "qty": span.qty[mask], "side": span.side[mask]}
            )
            frames.append(_write_silver(lake, p, src, day_trades))
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


@dataclass
class KernelEvents:
    """Events of a kernel run over some trades of a tape: global indices, codes, feature rows."""

    idx: np.ndarray  # int64[n]
    code: np.ndarray  # int8[n]
    feat: np.ndarray  # float64[n, N_FEATURES]

    @staticmethod
    def concat(parts: list["KernelEvents"]) -> "KernelEvents":
        from signals import N_FEATURES

        if not parts:
            return KernelEvents(np.empty(0, np.int64), np.empty(0, np.int8), np.empty((0, N_FEATURES)))
        return KernelEvents(
            np.concatenate([p.idx for p in parts]),
            np.concatenate([p.code for p in parts]),
            np.concatenate([p.feat for p in parts]),
        )


def kernel_batch(ts, price, qty, side, offset: int, params, state, all_features: bool = False):
    """``signals.run_batch`` over trades starting at global index ``offset``: (events, result)."""
    from signals import N_FEATURES, run_batch

    res = run_batch(ts, price, qty, side, params, state=state, all_features=all_features)
    idx = np.asarray(res.event_idx, dtype=np.int64)
    ev = KernelEvents(
        offset + idx,
        np.asarray(res.event_code, dtype=np.int8).copy(),
        np.asarray(res.event_features, dtype=np.float64).reshape(len(idx), N_FEATURES).copy(),
    )
    return ev, res


def kernel_days(tape: DayTape, params, days: range, state=None) -> tuple[KernelEvents, object]:
    """The kernel over the tape's partitions ``days``, one day per batch, the state carried across
    (``state`` None: a fresh one). Returns the events and the final state (None if no trade)."""
    parts = []
    for k in days:
        d = tape.day(k)
        if d.ts_ms.size == 0:
            continue
        ev, res = kernel_batch(d.ts_ms, d.price, d.qty, d.side, int(tape.offsets[k]), params, state)
        state = res.state
        parts.append(ev)
    return KernelEvents.concat(parts), state


def gold_frame(
    tape: DayTape, ev: KernelEvents, horizons_ms: list[int], latency_ms: int, on_window: Callable | None = None
) -> pd.DataFrame:
    """Gold rows (docs/spec.md §2.6) of kernel events on a tape, forward returns over each event's
    outcome window (:meth:`~datasets.tape.DayTape.windows`): :func:`gold_events`' columns.

    ``on_window(sel, offset, ts, price, local_idx, trigger_ts)``: called with each window
    :meth:`~datasets.tape.DayTape.windows` yields (``sel``: positions in ``ev``), so a caller can
    read the same trades again (the event study) without the tape reading them again."""
    from signals import FEATURE_NAMES
    from signals.outcome import entry_exit

    rows = tape.rows_at(ev.idx)
    out = {
        "trade_id": rows.trade_id,
        "ts_ms": rows.ts_ms,
        "price": rows.price,
        "qty": rows.qty,
        "notional_usd": rows.price * rows.qty,
        "event_code": ev.code.astype(np.int8),
    }
    for j, name in enumerate(FEATURE_NAMES):
        out[f"f_{name}"] = ev.feat[:, j]
    fwd = np.full((len(ev.idx), len(horizons_ms)), np.nan)
    for sel, off, ts, px, local, trig_ts in tape.windows(rows.ts_ms, ev.idx, latency_ms, max(horizons_ms, default=0)):
        entry, exit_, _ = entry_exit(
            ts, px, local, latency_ms=latency_ms, horizons_ms=horizons_ms, coverage=tape.coverage, trigger_ts_ms=trig_ts
        )
        ok = exit_ >= 0
        safe_entry = np.where(entry >= 0, entry, 0)
        for k in range(len(horizons_ms)):
            gross = px[np.where(ok[:, k], exit_[:, k], 0)] / px[safe_entry] - 1.0
            fwd[sel, k] = np.where(ok[:, k], gross, np.nan)
        if on_window is not None:
            on_window(sel, off, ts, px, local, trig_ts)
    for k, h in enumerate(horizons_ms):
        out[f"fwd_ret_{format_duration(h)}"] = fwd[:, k].copy()
    return pd.DataFrame(out)


def _appender(out: list) -> Callable:
    return lambda *item: out.append(item)


def tape_gold_events(
    tape: DayTape,
    whale: dict,
    horizons_ms: list[int],
    latency_ms: int,
    *,
    silver: tuple[Lake, list[int]] | None = None,
    on_day: Callable | None = None,
) -> pd.DataFrame:
    """:func:`gold_events` of a tape, one day at a time: the kernel runs day by day with its state
    carried across days, forward returns over each event's outcome window (equal, bit for bit).
    One pass over the days (:func:`gold_days`)."""
    from signals import WhaleParams

    params = WhaleParams.from_dict(whale)
    state = None

    def kernel(k: int) -> KernelEvents:
        nonlocal state
        ev, state = kernel_days(tape, params, range(k, k + 1), state)
        return ev

    return gold_days(tape, kernel, horizons_ms, latency_ms, silver=silver, on_day=on_day)


def gold_days(
    tape: DayTape,
    events_of: Callable[[int], KernelEvents],
    horizons_ms: list[int],
    latency_ms: int,
    *,
    silver: tuple[Lake, list[int]] | None = None,
    on_day: Callable | None = None,
) -> pd.DataFrame:
    """Gold rows of the kernel events of each day (``events_of(k)``, oldest day first), in one
    pass over the days, each read once: day ``k``'s arrays serve its silver bars
    (``silver=(lake, days)``: those days are built, as :func:`refresh_silver` would), its events
    (the kernel, run here or already run in chunks), their gold rows and their outcome windows
    (``k`` .. the day holding the longest horizon's exit, kept in the tape's cache for the next
    days). The frame equals :func:`gold_frame` of all the events. ``on_day(ev, frame, windows)``:
    called per day with its events, their gold rows and the windows their forward returns were
    read from (:func:`gold_frame`'s ``on_window`` tuples), while those trades are still loaded.
    """
    lake, stale = silver if silver is not None else (None, [])
    stale_set = set(stale)
    frames = []
    for k in range(tape.n_days):
        day = tape.day(k)
        if k in stale_set:
            assert lake is not None
            _write_silver(lake, tape.partitions[k], tape.sources[k], day)
        ev = events_of(k)
        if not len(ev.idx):
            continue
        windows: list[tuple] = []
        frame = gold_frame(tape, ev, horizons_ms, latency_ms, None if on_day is None else _appender(windows))
        frames.append(frame)
        if on_day is not None:
            on_day(ev, frame, windows)
    if not frames:
        return gold_frame(tape, KernelEvents.concat([]), horizons_ms, latency_ms)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def ensure_gold(
    lake: Lake,
    span: TradeSpan | DayTape,
    whale: dict,
    horizons_ms: list[int],
    latency_ms: int,
    start: dt.date,
    *,
    events_fn: Callable[[DayTape], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, bool]:
    """Gold events for the span, from the lake if built from the same bronze and config.

    The kernel's state carries across days (a :class:`~datasets.tape.DayTape` runs it one day at a
    time, :func:`tape_gold_events`; a ``TradeSpan`` over the whole span at once); the result is
    stored per date under ``gold/<variant>/...`` with the bronze hashes it was built from.
    ``events_fn(tape)``: builds a tape's events instead of :func:`tape_gold_events` (the same
    frame, e.g. in parallel chunks: ``bt.chunks``). Returns (events, cached).
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
    if isinstance(span, DayTape):
        events = (events_fn or (lambda t: tape_gold_events(t, whale, horizons_ms, latency_ms)))(span)
    else:
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
