"""A span of bronze trades read day by day: :class:`DayTape`.

A tape knows each day's row count (so a trade's global index is the same number as in the
whole span loaded at once), the span's coverage and its sources, but holds the trades of a few
days at most (an LRU cache of ``cache_days`` days). Callers ask for what they need:

* :meth:`DayTape.days` — every day in order (silver, the kernel with its state carried across days);
* :meth:`DayTape.windows` — the trades an outcome window needs (trigger day .. the day holding
  entry + the longest horizon), for the event study and gold forward returns;
* :meth:`DayTape.sample` — the last trade at or before given times (bar marks, report paths,
  the price chart) plus given trades, as a small sub-tape on which the same searches give the
  same trades;
* :meth:`DayTape.trade_index` — the global index of given (ts_ms, trade_id) trades.

``ts_ms``/``price``/... load the whole span (for callers that still need it: a model trained
by the run, universe pooling); that counts as every day held in :attr:`DayTape.peak_days`.
Imports nothing of ours but the lake.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from datasets.lake import LakeError, Partition

__all__ = ["DayArrays", "SubTape", "DayTape", "TapeOrderError", "DAY_MS", "TRADE_COLUMNS", "DEFAULT_CACHE_DAYS"]

DAY_MS = 86_400_000
TRADE_COLUMNS = ["trade_id", "ts_ms", "price", "qty", "side"]
#: Days a tape keeps loaded besides the window it is evaluating.
DEFAULT_CACHE_DAYS = 3


class TapeOrderError(LakeError):
    """A bronze partition holds trades outside its date (partitions are split by UTC date), or
    other rows than its footer said when the tape was opened."""


class DayArrays(NamedTuple):
    """One day's trades, sorted by (ts_ms, trade_id)."""

    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray


class SubTape(NamedTuple):
    """Some trades of a tape: their global indices (sorted, unique), times and prices."""

    gidx: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray

    def local(self, global_idx: np.ndarray) -> np.ndarray:
        """Positions in this sub-tape of global indices it holds (-1 stays -1)."""
        g = np.asarray(global_idx, dtype=np.int64)
        pos = np.searchsorted(self.gidx, g)
        return np.where(g >= 0, pos, -1).astype(np.int64)


def _day_ms(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * DAY_MS


class DayTape:
    """Trades of one symbol over a span, read one day (partition) at a time.

    ``load_day(k)`` returns partition ``k``'s :class:`DayArrays`; ``rows[k]`` is its row count.
    Attributes shared with :class:`datasets.build.TradeSpan`: ``exchange``, ``symbol``,
    ``partitions``, ``sources``, ``coverage``, ``start``, ``end``, ``len()``.
    """

    def __init__(
        self,
        exchange: str,
        symbol: str,
        partitions: list[Partition],
        sources: list[dict],
        coverage: np.ndarray,
        start: dt.date | None,
        end: dt.date | None,
        rows: np.ndarray,
        load_day: Callable[[int], DayArrays],
        cache_days: int = DEFAULT_CACHE_DAYS,
        load_columns: Callable[[int, list[str]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.partitions = partitions
        self.sources = sources
        self.coverage = coverage
        self.start = start
        self.end = end
        self.rows = np.asarray(rows, dtype=np.int64)
        self.offsets = np.r_[0, np.cumsum(self.rows)].astype(np.int64)
        self.day_start_ms = np.asarray([_day_ms(p.date) for p in partitions], dtype=np.int64)
        self._load_day = load_day
        self._load_columns = load_columns
        self.cache_days = max(int(cache_days), 1)
        self._cache: OrderedDict[int, DayArrays] = OrderedDict()
        self._full: dict[str, np.ndarray] = {}  # whole-span columns, read on first use
        self._ends: dict[str, int | None] = {}  # first and last trade times, read on first use
        #: Day reads so far (whole days; and reads of a day's times and prices alone, not cached),
        #: and the most days whose trades the tape held at once.
        self.loads = 0
        self.price_loads = 0
        self.peak_days = 0

    # --- size and ends ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_days(self) -> int:
        return len(self.partitions)

    def _nonempty(self) -> np.ndarray:
        return np.flatnonzero(self.rows > 0)

    def _end_ts(self, k: int, last: bool) -> int:
        """The first (last) trade time of partition ``k``: from the cache, else from its ``ts_ms``
        alone (``load_columns``, when given: the day is not cached for it), else the day read whole."""
        got = self._cache.get(k)
        if got is None and self._load_columns is not None:
            ts = self._load_columns(k, ["ts_ms"])["ts_ms"]
            return int(ts.max() if last else ts.min())
        ts = self.day(k).ts_ms
        return int(ts[-1] if last else ts[0])

    @property
    def first_ts_ms(self) -> int | None:
        if "first" not in self._ends:
            k = self._nonempty()
            self._ends["first"] = self._end_ts(int(k[0]), False) if k.size else None
        return self._ends["first"]

    @property
    def last_ts_ms(self) -> int | None:
        if "last" not in self._ends:
            k = self._nonempty()
            self._ends["last"] = self._end_ts(int(k[-1]), True) if k.size else None
        return self._ends["last"]

    # --- days -------------------------------------------------------------------------------
    def _held(self, extra: range = range(0)) -> None:
        self.peak_days = max(self.peak_days, len(set(self._cache) | set(extra)))

    def day(self, k: int) -> DayArrays:
        """Partition ``k``'s trades (from the cache, or read and cached)."""
        got = self._cache.get(k)
        if got is not None:
            self._cache.move_to_end(k)
            return got
        got = self._load_day(k)
        if len(got.ts_ms) != self.rows[k]:
            raise TapeOrderError(
                f"{self.partitions[k].key} has {len(got.ts_ms)} trades but its footer says {self.rows[k]}; "
                "the partition changed while the run read it: run again"
            )
        self.loads += 1
        self._cache[k] = got
        while len(self._cache) > self.cache_days:
            self._cache.popitem(last=False)
        self._held()
        return got

    def prices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Partition ``k``'s ``(ts_ms, price)``: from the cache, else those two columns alone
        (``load_columns``; not cached), else the day read whole (no ``load_columns``, or a
        partition not sorted by time or holding another day's trades: :meth:`day` sorts or refuses)."""
        got = self._cache.get(k)
        if got is None and self._load_columns is not None:
            cols = self._load_columns(k, ["ts_ms", "price"])
            ts, px = cols["ts_ms"], cols["price"]
            if len(ts) != self.rows[k]:
                raise TapeOrderError(
                    f"{self.partitions[k].key} has {len(ts)} trades but its footer says {self.rows[k]}; "
                    "the partition changed while the run read it: run again"
                )
            day0 = int(self.day_start_ms[k])
            if not ts.size or (bool((np.diff(ts) >= 0).all()) and ts[0] >= day0 and ts[-1] < day0 + DAY_MS):
                self.price_loads += 1
                return ts, px
        d = self.day(k)
        return d.ts_ms, d.price

    def days(self) -> Iterator[tuple[int, int, DayArrays]]:
        """``(k, global offset, trades)`` of every partition, oldest first."""
        for k in range(self.n_days):
            yield k, int(self.offsets[k]), self.day(k)

    def release(self) -> None:
        """Drop the cached days."""
        self._cache.clear()
        self._full = {}

    def day_at(self, ts_ms) -> np.ndarray:
        """Index of the partition whose date holds each time (the one before, in a missing day; -1 before the first)."""
        return np.searchsorted(self.day_start_ms, np.asarray(ts_ms), side="right").astype(np.int64) - 1

    def window(self, k0: int, k1: int) -> tuple[int, np.ndarray, np.ndarray]:
        """``(global offset, ts_ms, price)`` of partitions ``k0..k1`` (inclusive), concatenated."""
        span = range(k0, k1 + 1)
        for k in list(self._cache):  # days outside the window go first
            if len(set(self._cache) | set(span)) <= self.cache_days:
                break
            if k not in span:
                del self._cache[k]
        days = [self.day(k) for k in span]
        self._held(span)
        if len(days) == 1:
            return int(self.offsets[k0]), days[0].ts_ms, days[0].price
        return (
            int(self.offsets[k0]),
            np.concatenate([d.ts_ms for d in days]),
            np.concatenate([d.price for d in days]),
        )

    # --- outcome windows --------------------------------------------------------------------
    def windows(
        self, trigger_ts: np.ndarray | None, trigger_idx: np.ndarray, latency_ms: int, reach_ms: int
    ) -> Iterator[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Trades of the outcome windows of triggers, grouped by trigger day.

        Yields ``(sel, offset, ts, price, local_idx, trigger_ts)``: ``sel`` the triggers' positions,
        ``ts``/``price`` every trade from the start of their day through the day holding
        ``entry + reach_ms`` (entry: the first trade after ``trigger + latency_ms``, looked for until
        the span ends), ``offset`` the global index of ``ts[0]``, ``local_idx`` each trigger index
        minus ``offset`` (-1 when the trigger's trade is before the window or there is none) and
        their times. ``trigger_ts`` None: the triggers are this tape's trades ``trigger_idx``.
        Entry and exit searches on these arrays find the same trades as on the whole span.
        """
        gi = np.asarray(trigger_idx, dtype=np.int64)
        if gi.size == 0 or self.n_days == 0:
            return
        if trigger_ts is None:
            if (gi < 0).any():
                raise ValueError("triggers without a trade of this tape need their times (trigger_ts)")
            t = None
            order = np.argsort(gi, kind="stable")
            kday = np.searchsorted(self.offsets, gi[order], side="right") - 1
        else:
            t = np.asarray(trigger_ts, dtype=np.int64)
            order = np.argsort(t, kind="stable")
            kday = np.maximum(self.day_at(t[order]), 0)
        cuts = np.flatnonzero(np.diff(kday)) + 1
        last = self.n_days - 1
        for grp in np.split(np.arange(gi.size), cuts):
            sel = order[grp]
            k0 = int(kday[grp[0]])
            k1 = k0 if t is None else max(k0, int(self.day_at(int(t[sel].max()) + latency_ms + reach_ms)))
            t_sel = None if t is None else t[sel]
            while True:
                off, ts, px = self.window(k0, min(k1, last))
                if t_sel is None:
                    t_sel = ts[gi[sel] - off]
                    want = int(self.day_at(int(t_sel.max()) + latency_ms + reach_ms))
                    if want > k1 and k1 < last:
                        k1 = want
                        continue
                e = np.searchsorted(ts, t_sel + latency_ms, side="right")
                if (e >= ts.size).any() and k1 < last:
                    k1 += 1  # a trigger has no entry yet: look one day further
                    continue
                found = e < ts.size
                need = int(self.day_at(int(ts[e[found]].max()) + reach_ms)) if found.any() else k1
                if need > k1 and k1 < last:
                    k1 = need
                    continue
                break
            local = gi[sel] - off
            yield sel, off, ts, px, np.where((gi[sel] >= 0) & (local >= 0), local, -1).astype(np.int64), t_sel

    # --- samples ----------------------------------------------------------------------------
    def last_at_or_before(self, times) -> np.ndarray:
        """Global index of the last trade at or before each time (-1 if none); one pass over the days."""
        return self._sample([times], np.empty(0, np.int64))[0][0]

    def sample(self, queries: list, indices=None) -> SubTape:
        """The sub-tape of the last trade at or before every time in ``queries`` (arrays, each
        searched with its own dtype, as ``np.searchsorted(ts, q, 'right') - 1`` would), the
        trades at global ``indices`` and the first trade. Searching it for those times (or
        clipping to those trades' positions, :meth:`SubTape.local`) gives the same trades as the
        whole tape.
        """
        idx = np.asarray([] if indices is None else indices, dtype=np.int64).ravel()
        idx = idx[idx >= 0]
        found, vals = self._sample(queries, idx)
        g = [*found, idx]
        ts = [v[0] for v in vals[:-1]]
        px = [v[1] for v in vals[:-1]]
        if len(self):  # the first trade: "before the first trade" falls back to its price
            g.append(np.zeros(1, np.int64))
            ts.append(vals[-1][0])
            px.append(vals[-1][1])
        g_all, ts_all, px_all = np.concatenate(g), np.concatenate(ts), np.concatenate(px)
        keep = g_all >= 0
        uniq, first = np.unique(g_all[keep], return_index=True)
        return SubTape(uniq, ts_all[keep][first].astype(np.int64), px_all[keep][first].astype(np.float64))

    def _sample(self, queries: list, idx: np.ndarray) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """One pass over the days: per query array the found global indices, and the (ts, price)
        of every found trade, of ``idx`` and of the first trade (in that order: queries..., idx,
        first trade; empty arrays without trades)."""
        qs = [np.asarray(q).ravel() for q in queries]
        orders = [np.argsort(q, kind="stable") for q in qs]
        sorted_q = [q[o] for q, o in zip(qs, orders)]
        g_sorted = [np.full(q.size, -1, np.int64) for q in qs]
        t_sorted = [np.zeros(q.size, np.int64) for q in qs]
        p_sorted = [np.zeros(q.size) for q in qs]
        idx_ts, idx_px = np.zeros(idx.size, np.int64), np.zeros(idx.size)
        idx_day = np.searchsorted(self.offsets, idx, side="right") - 1
        first: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0))
        for k in range(self.n_days):
            if self.rows[k] == 0:
                continue
            off = int(self.offsets[k])
            d_ts, d_px = self.prices(k)
            n = d_ts.size
            if off == 0:  # the first day holding trades (its first trade is global index 0)
                first = (d_ts[:1], d_px[:1])
            day_end = int(self.day_start_ms[k]) + DAY_MS
            for q, g, tt, pp in zip(sorted_q, g_sorted, t_sorted, p_sorted):
                lo = int(np.searchsorted(q, d_ts[0], side="left"))
                hi = int(np.searchsorted(q, day_end, side="left"))
                if hi > lo:
                    pos = np.searchsorted(d_ts, q[lo:hi], side="right") - 1
                    g[lo:hi], tt[lo:hi], pp[lo:hi] = off + pos, d_ts[pos], d_px[pos]
                # Later times: this day's last trade, unless a later day has one before them.
                g[hi:], tt[hi:], pp[hi:] = off + n - 1, d_ts[-1], d_px[-1]
            mine = idx_day == k
            if mine.any():
                loc = idx[mine] - off
                idx_ts[mine], idx_px[mine] = d_ts[loc], d_px[loc]
        found, vals = [], []
        for o, g, tt, pp in zip(orders, g_sorted, t_sorted, p_sorted):
            inv = np.empty_like(o)
            inv[o] = np.arange(o.size)
            found.append(g[inv])
            vals.append((tt[inv], pp[inv]))
        vals.append((idx_ts, idx_px))
        vals.append(first)
        return found, vals

    def rows_at(self, global_idx) -> DayArrays:
        """Every column of the trades at global indices (reads only their days)."""
        g = np.asarray(global_idx, dtype=np.int64)
        out = DayArrays(
            np.empty(g.size, np.int64),
            np.empty(g.size, np.int64),
            np.empty(g.size),
            np.empty(g.size),
            np.empty(g.size, np.int8),
        )
        kday = np.searchsorted(self.offsets, g, side="right") - 1
        for k in np.unique(kday):
            mine = kday == k
            d = self.day(int(k))
            loc = g[mine] - int(self.offsets[k])
            for col, src in zip(out, d):
                col[mine] = src[loc]
        return out

    def at(self, global_idx) -> tuple[np.ndarray, np.ndarray]:
        """``(ts_ms, price)`` of the trades at global indices (reads only their days)."""
        rows = self.rows_at(global_idx)
        return rows.ts_ms, rows.price

    def trade_index(self, ts_ms: np.ndarray, trade_id: np.ndarray) -> np.ndarray:
        """Global index of each (ts_ms, trade_id) trade; RuntimeError if one is not on the tape."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        want = np.asarray(trade_id, dtype=np.int64)
        out = np.empty(ts.size, np.int64)
        kday = self.day_at(ts)
        for k in np.unique(kday):
            at = np.flatnonzero(kday == k)
            d = self.day(int(k)) if k >= 0 else DayArrays(*(np.empty(0, np.int64),) * 5)
            lo = np.searchsorted(d.ts_ms, ts[at], side="left")
            hi = np.searchsorted(d.ts_ms, ts[at], side="right")
            for j, a, b in zip(at.tolist(), lo.tolist(), hi.tolist()):
                hit = np.flatnonzero(d.trade_id[a:b] == want[j])
                if hit.size == 0:
                    raise RuntimeError(f"gold event trade {want[j]} is not in bronze; rebuild gold")
                out[j] = int(self.offsets[k]) + a + int(hit[0])
        return out

    # --- the whole span (for callers that need every trade) ---------------------------------
    def _column(self, name: str) -> np.ndarray:
        got = self._full.get(name)
        if got is None:
            parts = [getattr(self.day(k), name) for k in range(self.n_days)]
            dtype = np.int8 if name == "side" else np.float64 if name in ("price", "qty") else np.int64
            got = np.concatenate(parts) if parts else np.empty(0, dtype)
            self._full[name] = got
            self.peak_days = max(self.peak_days, self.n_days)
        return got

    @property
    def trade_id(self) -> np.ndarray:
        return self._column("trade_id")

    @property
    def ts_ms(self) -> np.ndarray:
        return self._column("ts_ms")

    @property
    def price(self) -> np.ndarray:
        return self._column("price")

    @property
    def qty(self) -> np.ndarray:
        return self._column("qty")

    @property
    def side(self) -> np.ndarray:
        return self._column("side")

    def __repr__(self) -> str:
        return (
            f"DayTape({self.exchange}/{self.symbol}, {self.n_days} days, {len(self):,} trades, "
            f"cache {self.cache_days} days, peak {self.peak_days})"
        )
