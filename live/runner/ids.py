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

:meth:`SymbolFeed.vet` runs before these checks and refuses trades no exchange sends (the runner
counts them as bad frames), so that one hostile trade cannot poison the id or time state:

- ids outside ``0 .. 2**63-1``; times before 2010 or more than ``max_future_s`` (600 s) after the
  wall clock; prices and quantities that are not finite and positive, or whose product is not;
- a stream trade whose id jumps more than :attr:`SymbolFeed.MAX_ID_JUMP` (50 M, weeks of Binance
  BTCUSDT) past the symbol's last id, or whose time runs more than :attr:`SymbolFeed.MAX_TS_JUMP_MS`
  (1 h) ahead of the symbol's last trade plus the wall time elapsed since it. Such a jump is held:
  if the next stream trade of the symbol continues from it (ids within ``max_backfill_ids``, time
  within 1 h), the stream really moved on and the new sequence is taken from there; else it was
  a stray and stays refused.
"""

from __future__ import annotations

import collections
import logging
import math
import time

from datasets.exchanges.binance import BinanceTradeMerger

__all__ = ["IdTracker", "SymbolFeed", "TAKE", "REPEAT", "BACKFILL"]

log = logging.getLogger("whalebt.live")

#: what :meth:`IdTracker.check` says about a trade
TAKE, REPEAT, BACKFILL = 0, 1, 2

MIN_TS_MS = 1_262_304_000_000  # 2010-01-01 UTC: no crypto exchange traded before
MAX_ID = 2**63 - 1


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
        "n_implausible",
        "last_ts_ms",
        "last_ts_ns",
        "held",
        "last_row_ns",
        "last_take_ns",
        "first_ts_ms",
        "first_id",
    )

    #: a stream id this far past the last one is held until the next trade confirms it
    MAX_ID_JUMP = 50_000_000
    #: a stream time this far ahead of the last trade (plus the wall time since) is held likewise
    MAX_TS_JUMP_MS = 3_600_000

    def __init__(self, symbol: str, state, merge: bool, contiguous: bool = False, max_backfill_ids: int = 200_000):
        super().__init__(symbol, contiguous, max_backfill_ids)
        self.state = state
        self.merger = BinanceTradeMerger() if merge else None
        self.live = False
        self.n_trades = self.n_backfilled = 0
        self.n_events = self.n_suppressed = self.n_rejects = self.n_implausible = 0
        self.n_signals: dict[str, int] = {"long": 0, "skip": 0}
        self.last_ts_ms: int | None = None  # time of the last trade the kernel took
        self.last_ts_ns = 0  # perf_counter_ns when it took it
        self.held: tuple[int, int] | None = None  # (id, ts) of a jump waiting for confirmation
        self.last_row_ns = 0  # perf_counter_ns of the last stream row of this symbol
        self.last_take_ns = 0  # ... and of the last one the kernel took
        self.first_ts_ms: int | None = None  # the first trade the kernel took since the start
        self.first_id: int | None = None

    def vet(self, trade_id, ts_ms, price, qty, from_rest: bool, wall_ms: int, max_future_ms: int) -> str | None:
        """Why this trade cannot be real (see the module doc), or None to go on to :meth:`check`."""
        if type(trade_id) is not int or not 0 <= trade_id <= MAX_ID:
            return f"trade id {trade_id!r} is not a 63-bit id"
        if type(ts_ms) is not int or not MIN_TS_MS <= ts_ms <= wall_ms + max_future_ms:
            return f"time {ts_ms!r} ms is before 2010 or more than {max_future_ms // 1000} s after the wall clock"
        try:
            ok = price > 0 and qty > 0 and math.isfinite(price * qty)
        except TypeError:
            ok = False
        if not ok:
            return f"price {price!r} and quantity {qty!r} must be finite and positive"
        if from_rest:
            return None
        id_jump = self.contiguous and self.last_id is not None and trade_id - self.last_id > self.MAX_ID_JUMP
        ts_jump = False
        if self.last_ts_ms is not None:
            elapsed_ms = (time.perf_counter_ns() - self.last_ts_ns) // 1_000_000
            ts_jump = ts_ms > self.last_ts_ms + elapsed_ms + self.MAX_TS_JUMP_MS
        held, self.held = self.held, None
        if not (id_jump or ts_jump):
            return None
        if (
            held is not None
            and (not self.contiguous or 0 < trade_id - held[0] <= max(self.max_backfill_ids, 1))
            and 0 <= ts_ms - held[1] <= self.MAX_TS_JUMP_MS
        ):
            log.warning(
                "%s: trade %d at %d continues the jump of trade %d at %d: taking the stream's new sequence",
                self.symbol,
                trade_id,
                ts_ms,
                held[0],
                held[1],
            )
            self.n_unfilled += 1  # the held trade itself
            return None
        self.held = (trade_id, ts_ms)
        what = f"id {trade_id} is {trade_id - (self.last_id or 0):+d} from the last id" if id_jump else ""
        if ts_jump:
            what += ("; " if what else "") + f"time {ts_ms} is {(ts_ms - (self.last_ts_ms or 0)) / 1000:.0f} s ahead"
        return what + " (held until the next trade confirms it)"
