"""Per-symbol trade-id checks (repeats, gaps, the warm-up seam), pure: no I/O, no asyncio.

:class:`IdTracker` decides for each trade of a symbol, in arrival order, whether to take it, drop
it as a repeat, or first backfill the ids it jumped over; :class:`SymbolFeed` adds the kernel
state, the ``@trade`` merger and the counters the runner keeps per symbol.

- Consecutive ids (Binance): an id not above the last is a repeat; a jump is a gap, to backfill
  over REST if it spans at most ``max_backfill_ids`` ids (else counted as unfilled and taken);
  trades fetched over REST (``from_rest``) are never gaps themselves.
- Other ids (Bybit's come from UUIDs, OKX's are sparse): a repeat is an id among the symbol's
  last :attr:`IdTracker.RECENT_IDS`, or a trade older than the warm-up's end (``min_ts``).
- The first live trade after a warm-up that is newer than it but numbered far from it (a
  warm-up from a source with other ids) starts the id sequence afresh.
"""

from __future__ import annotations

import collections
import logging

from datasets.exchanges.binance import BinanceTradeMerger

__all__ = ["IdTracker", "SymbolFeed", "TAKE", "REPEAT", "BACKFILL"]

log = logging.getLogger("whalebt.live")

#: what :meth:`IdTracker.check` says about a trade
TAKE, REPEAT, BACKFILL = 0, 1, 2


class IdTracker:
    """The id state of one symbol; :meth:`check` is called once per trade, in order."""

    __slots__ = (
        "symbol",
        "contiguous",
        "max_backfill_ids",
        "last_id",
        "min_ts",
        "warm_ts",
        "first_live",
        "recent_ids",
        "recent_order",
        "n_dups",
        "n_gaps",
        "n_unfilled",
    )

    #: how many recent ids a feed without consecutive ids remembers to drop repeats
    RECENT_IDS = 200_000

    def __init__(self, symbol: str, contiguous: bool, max_backfill_ids: int = 200_000):
        self.symbol = symbol
        self.contiguous = contiguous
        self.max_backfill_ids = max_backfill_ids
        self.last_id: int | None = None
        self.min_ts: int | None = None  # trades older than this are repeats (end of the warm-up; non-contiguous ids)
        self.warm_ts: int | None = None  # time of the warm-up's last trade
        self.first_live = False  # the next stream trade is the first after the warm-up
        self.recent_ids: set[int] = set()
        self.recent_order: collections.deque[int] = collections.deque()
        self.n_dups = self.n_gaps = self.n_unfilled = 0

    def seen_recently(self, trade_id: int) -> bool:
        """Record ``trade_id``; True if it was already among the recent ids (a repeat)."""
        if trade_id in self.recent_ids:
            return True
        self.recent_ids.add(trade_id)
        self.recent_order.append(trade_id)
        if len(self.recent_order) > self.RECENT_IDS:
            self.recent_ids.discard(self.recent_order.popleft())
        return False

    def warmed_up(self, last_ts_ms: int) -> None:
        """The warm-up ended with a trade at ``last_ts_ms``: the next stream trade is checked against it."""
        self.warm_ts = last_ts_ms
        self.first_live = True
        if not self.contiguous:
            self.min_ts = last_ts_ms

    def check(self, trade_id: int, ts_ms: int, from_rest: bool = False) -> int:
        """:data:`TAKE` (``last_id`` becomes ``trade_id``), :data:`REPEAT` or :data:`BACKFILL` (nothing changes)."""
        last = self.last_id
        if self.first_live and not from_rest:
            self.first_live = False
            jump = None if last is None else trade_id - last
            if (
                jump is not None
                and self.warm_ts is not None
                and ts_ms > self.warm_ts
                and (jump <= 0 or jump > self.max_backfill_ids)
            ):
                # newer than the warm-up but numbered apart from it: the warm-up came from a source with
                # other ids (e.g. a lake filled from recordings); carry on from the stream's numbering
                log.warning(
                    "%s: first live trade id %d is %+d from the warm-up's last id %d although it is "
                    "newer; continuing from the stream's ids",
                    self.symbol,
                    trade_id,
                    jump,
                    last,
                )
                self.last_id = last = None
        if not self.contiguous:
            # no id order to lean on: a repeat is a recent id, or a trade older than the warm-up's end
            if self.seen_recently(trade_id) or (self.min_ts is not None and ts_ms < self.min_ts):
                self.n_dups += 1
                return REPEAT
        elif last is not None:
            if trade_id <= last:
                self.n_dups += 1
                return REPEAT
            if trade_id > last + 1 and not from_rest:
                if trade_id - last - 1 <= self.max_backfill_ids:
                    return BACKFILL
                self.n_gaps += 1
                self.n_unfilled += trade_id - last - 1
                log.error(
                    "%s: gap of %d trade ids is more than --max-backfill-ids %d; not backfilled",
                    self.symbol,
                    trade_id - last - 1,
                    self.max_backfill_ids,
                )
        elif self.min_ts is not None and ts_ms < self.min_ts:
            self.n_dups += 1  # older than the warm-up's end on an exchange without consecutive ids
            return REPEAT
        self.last_id = trade_id
        return TAKE


class SymbolFeed(IdTracker):
    """Per-symbol state: the id checks, the kernel, the @trade merger, counters."""

    __slots__ = (
        "state",
        "merger",
        "live",
        "n_trades",
        "n_backfilled",
        "n_events",
        "n_signals",
        "n_suppressed",
        "n_rejects",
        "last_ts_ms",
    )

    def __init__(self, symbol: str, state, merge: bool, contiguous: bool = False, max_backfill_ids: int = 200_000):
        super().__init__(symbol, contiguous, max_backfill_ids)
        self.state = state
        self.merger = BinanceTradeMerger() if merge else None
        self.live = False
        self.n_trades = self.n_backfilled = 0
        self.n_events = self.n_suppressed = self.n_rejects = 0
        self.n_signals: dict[str, int] = {"long": 0, "skip": 0}
        self.last_ts_ms: int | None = None
