"""The runner: frames → id checks → merge → kernel → decision → journal, one callback per message."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import sys
import time
from typing import Any, Coroutine

import numpy as np
from picows import (
    WSTransport,
)

from datasets.sources.frames import FrameError, Trade, UnknownContractError
from live.adapters import Adapter, make_adapter
from live.decider import Decider
from live.journal import AppendBlobSink, JournalState, JournalWriter, StdoutEcho
from live.metrics import Metrics
from live.paper import PaperBook
from live.runner import connection as _connection
from live.runner import health as _health
from live.runner import lifecycle as _lifecycle
from live.runner import rest as _rest
from live.runner.ids import BACKFILL, SymbolFeed
from live.runner.options import RunnerOptions
from signals import FEATURE_NAMES, new_state, update
from signals.journal import journal_record

log = logging.getLogger("whalebt.live")


class Runner:
    """Runs one exchange's symbols until stopped; see the module doc."""

    def __init__(self, opts: RunnerOptions, decider: Decider, adapter: Adapter | None = None):
        self.opts = opts
        self.decider = decider
        self.adapter = adapter or make_adapter(opts.exchange, stream=opts.stream, contract_values=opts.contract_values)
        self.symbols = [self.adapter.bronze_symbol(s) for s in opts.symbols]
        self.feeds = {
            s: SymbolFeed(
                s,
                new_state(decider.params),
                self.adapter.merge_fills,
                self.adapter.contiguous_ids,
                opts.max_backfill_ids,
            )
            for s in self.symbols
        }
        self.metrics = Metrics()
        self.recent: collections.deque[dict] = collections.deque(maxlen=1000)
        self.journal_state = JournalState()
        self.journal: JournalWriter | None = None
        self.paper: PaperBook | None = None
        self.rng = random.Random(opts.seed)
        self.n_frames = 0
        self._io_ns = 0
        self.n_bad = 0
        self.n_reconnects = 0
        self.n_connections = 0
        self.last_stream_ts_ms: int | None = None
        self.connected = False
        self.ready = False
        self.started_ns = time.perf_counter_ns()
        self.last_frame_ns = 0  # perf_counter_ns of the last message; 0 before the first
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._stopping = False
        self._failure: BaseException | None = None
        self._transport: WSTransport | None = None
        # REST work in progress (a gap's backfill, a reconnect's catch-up) and the frames waiting for it
        self._backlog: collections.deque | None = None
        self._worker: asyncio.Future | None = None
        # rehearsals of the frame path while idle (--busy-poll, see _poll_busily)
        self._sample: bytes | str | None = None  # the last frame with trades
        self._rehearsal_features = np.zeros(len(FEATURE_NAMES))  # what the model scores when rehearsing
        self._stand_in: Runner | None = None
        self._rehearsal_ts_ms = 0
        self._http_runner = None
        self._session: Any = None  # aiohttp.ClientSession, opened on the first REST call
        self._stdout = sys.stdout
        self._echo: StdoutEcho | None = None
        self._blob_sink: AppendBlobSink | None = None
        self._max_future_ms = int(opts.max_future_s * 1000)
        self.holes: list[dict] = []  # journal holes recorded by this run (see _check_hole)
        self.warm_rows: dict[str, int] = {}  # trades each symbol's warm-up gave
        self.silent: str | None = None  # why the connection counts as silent (see connection._serve_connection)
        self.n_silent = 0
        self.n_trade_frames = 0  # frames that carried trades
        self._vetted_ts: int | None = None  # time of the current frame's last plausible trade

    def _rehearse(self) -> None:
        """Run the last frame's first trade, renumbered, through a stand-in runner and the model.

        The stand-in shares the adapter and the decider (both stateless here) and has its own
        feeds, kernel states, merger, metrics and a journal without a file, so that nothing real
        is touched: the same code runs on other data.
        """
        if self._sample is None:
            return
        if self._stand_in is None:
            self._stand_in = Runner(
                RunnerOptions(
                    self.opts.exchange,
                    self.symbols,
                    stream=self.opts.stream,
                    contract_values=self.opts.contract_values,
                    echo=False,
                    max_future_s=1e12,  # its renumbered trades run ahead of the wall clock by design
                ),
                self.decider,
                self.adapter,
            )
            self._stand_in.journal = JournalWriter(None)
            for stand_in_feed in self._stand_in.feeds.values():
                stand_in_feed.live = True  # its events go through the model and the journal record too
        stand_in = self._stand_in
        rows = stand_in._frame_rows(self._sample)
        feed = stand_in.feeds.get(rows[0].symbol) if rows else None
        if feed is None:
            return
        # a new id, a second later, and a price unlike the last one's, so that the merger emits a row
        self._rehearsal_ts_ms = max(rows[0].ts_ms, self._rehearsal_ts_ms + 1000)
        row = rows[0]._replace(
            trade_id=(feed.last_id or rows[0].trade_id) + 1,
            ts_ms=self._rehearsal_ts_ms,
            price=rows[0].price * (1.0 + 1e-6 * (self._rehearsal_ts_ms // 1000 % 2)),
        )
        stand_in._io_ns = 0
        stand_in._take_rows([row], 0)
        stand_in._frame_done([row], time.perf_counter_ns())
        self.decider.decide(self._rehearsal_features)

    def on_message(self, payload: bytes | str, t_recv_ns: int) -> None:
        """A message from the connection: handled now, or queued behind REST work in progress."""
        self.last_frame_ns = t_recv_ns
        if self._backlog is None:
            self.handle_frame(payload, t_recv_ns)
        else:
            self._backlog.append(payload)

    def handle_frame(self, payload: bytes | str, t_recv_ns: int) -> None:
        """Parse one frame and process its trades (public for benchmarks and tests).

        Synchronous, so that a frame is decided inside the transport's callback without a task
        switch. A trade that reveals a gap to fetch over REST hands the rest of the frame to
        `_defer`: later frames wait in order until the gap is filled.
        """
        rest = self._process(payload, t_recv_ns)
        if rest is not None:
            self._defer(rest)

    def _process(self, payload: bytes | str, t_recv_ns: int) -> Coroutine[Any, Any, None] | None:
        """Process a frame up to a gap, if any: then the coroutine that fills it and finishes the frame."""
        rows = self._frame_rows(payload)
        if not rows:
            return None
        self.n_trade_frames += 1
        self._sample = payload
        self._io_ns = 0
        self._vetted_ts = None
        gap_at = self._take_rows(rows, 0)
        if gap_at is None:
            self._frame_done(rows, t_recv_ns)
            return None
        return self._finish_frame(rows, gap_at, t_recv_ns)

    def _frame_rows(self, payload: bytes | str) -> list[Trade]:
        """The frame's trades; [] for a control or malformed frame (counted, logged)."""
        self.n_frames += 1
        try:
            rows = self.adapter.parse(payload)
            if not rows and isinstance(payload, str):
                info = self.adapter.control(payload)
                if info and info.startswith("error"):
                    log.warning("exchange says: %s", info)
        except (FrameError, UnknownContractError) as exc:
            self._bad_frame(str(exc))
            return []
        except Exception as exc:  # noqa: BLE001  whatever a frame holds (nesting, huge numbers) never ends the run
            self._bad_frame(f"{self.adapter.exchange}: unreadable frame ({type(exc).__name__}: {str(exc)[:120]})")
            return []
        return rows

    def _bad_frame(self, why: str) -> None:
        self.n_bad += 1
        if self.n_bad <= 5 or self.n_bad % 1000 == 0:
            log.warning("skipping malformed frame #%d: %s", self.n_bad, why)

    def _take_rows(self, rows: list[Trade], start: int) -> int | None:
        """Process ``rows[start:]``; the index of the first row that needs a REST backfill first, or None."""
        feeds = self.feeds
        now_ns = time.perf_counter_ns()
        for i in range(start, len(rows)):
            row = rows[i]
            feed = feeds.get(row.symbol)
            if feed is None:
                continue
            feed.last_row_ns = now_ns
            if not feed.last_take_ns:
                feed.last_take_ns = now_ns  # the stuck-symbol clock starts with its first row
            if self._on_row(feed, row, False):
                return i
        return None

    def _frame_done(self, rows: list[Trade], t_recv_ns: int) -> None:
        ts = self._vetted_ts  # the frame's last trade that passed the plausibility checks
        if ts is None:
            return  # nothing of it can be trusted, its times included
        self.last_stream_ts_ms = ts
        # decision latency: the journal append and REST backfills are not in it (the fdatasync comes after
        # the burst, timed on its own)
        self.metrics.receipt_to_decision.observe((time.perf_counter_ns() - t_recv_ns - self._io_ns) * 1e-9)
        self.metrics.exchange_to_receipt.observe((self.opts.clock_ms() - ts) * 1e-3)

    async def _finish_frame(self, rows: list[Trade], gap_at: int, t_recv_ns: int) -> None:
        """Backfill the gap before ``rows[gap_at]``, then the rest of the frame (filling further gaps)."""
        i: int | None = gap_at
        while i is not None:
            row = rows[i]
            feed = self.feeds[row.symbol]
            assert feed.last_id is not None  # a gap is a jump from a known last id
            await self._backfill(feed, feed.last_id + 1, row.trade_id - 1)
            self._on_row(feed, row, True)  # checked again: the backfill may have covered it
            i = self._take_rows(rows, i + 1)
        self._frame_done(rows, t_recv_ns)

    def _defer(self, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` (REST work) before any further frame; frames that arrive meanwhile queue in order.

        The socket is not read until the backlog is worked off: frames already received queue,
        the rest wait in the kernel's buffers (bounded memory, and a server that cannot send
        holds on, as with a client that does not call `recv()`).
        """
        if self._backlog is None:
            self._pause_reading()
            self._backlog = collections.deque([job])
            self._worker = asyncio.ensure_future(self._work_backlog(self._backlog))
            self._worker.add_done_callback(self._backlog_failed)
        else:
            self._backlog.append(job)

    async def _work_backlog(self, backlog: collections.deque) -> None:
        """Jobs and queued frames in arrival order; the listener hands frames over directly again after."""
        try:
            while backlog and not self._stopping:
                item = backlog.popleft()
                if isinstance(item, (bytes, str)):
                    # a queued frame counts as received now, as a message waiting in a client's queue
                    # does when `recv()` returns it: the REST work it waited for is not decision time
                    item = self._process(item, time.perf_counter_ns())
                if item is not None:
                    await item
        finally:
            for item in backlog:  # left behind by a stop
                if not isinstance(item, (bytes, str)):
                    item.close()
            self._backlog = None
            if self._transport is not None and not self._transport.is_disconnected:
                self._transport.underlying_transport.resume_reading()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_disconnected:
            self._transport.underlying_transport.pause_reading()

    def _backlog_failed(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()
            self.stop()

    def _on_row(self, feed: SymbolFeed, row: Trade, from_rest: bool) -> bool:
        """Id checks, then merge and decide; True (and nothing done) if a gap must be backfilled first."""
        why = feed.vet(
            row.trade_id, row.ts_ms, row.price, row.qty, from_rest, self.opts.clock_ms(), self._max_future_ms
        )
        if why is not None:
            feed.n_implausible += 1
            self._bad_frame(f"{feed.symbol}: implausible trade refused: {why}")
            return False
        if not from_rest:
            self._vetted_ts = row.ts_ms
        verdict = feed.check(row.trade_id, row.ts_ms, from_rest)
        if verdict:
            return verdict == BACKFILL
        if feed.merger is None:
            self._decide(feed, row)
        else:
            for r in feed.merger.push(row):
                self._decide(feed, r)
        return False

    def _decide(self, feed: SymbolFeed, r: Trade) -> None:
        try:
            code, feats = update(feed.state, r.ts_ms, r.price, r.qty, r.side)
        except ValueError as exc:
            feed.n_rejects += 1
            log.warning("%s: kernel refused trade %d: %s", feed.symbol, r.trade_id, exc)
            return
        feed.n_trades += 1
        feed.last_ts_ms = r.ts_ms
        feed.last_ts_ns = feed.last_take_ns = time.perf_counter_ns()
        if feed.first_ts_ms is None:
            feed.first_ts_ms, feed.first_id = r.ts_ms, r.trade_id
            self._check_hole(feed, r)
        paper = self.paper
        if paper is not None:
            paper.on_trade(feed.symbol, r.trade_id, r.ts_ms, r.price)
        if not code:
            return
        feed.n_events += 1
        if not feed.live or self.journal_state.seen(feed.symbol, r.ts_ms, r.trade_id):
            feed.n_suppressed += 1
            if paper is not None and r.trade_id in self.journal_state.ids.get(feed.symbol, ()):
                # emitted before a restart: keep paper-trading it if its outcome is not on file yet
                if self.decider.decide(feats)[1] == "long":
                    paper.add_signal(feed.symbol, r.trade_id, r.ts_ms)
            return
        prob, decision = self.decider.decide(feats)
        rec = journal_record(
            exchange=self.adapter.exchange,
            symbol=feed.symbol,
            trade_id=r.trade_id,
            ts_ms=r.ts_ms,
            price=r.price,
            notional_usd=r.price * r.qty,
            prob=prob,
            decision=decision,
            config_id=self.decider.config_id,
            model=self.decider.model_uri,
        )
        t0 = time.perf_counter_ns()
        assert self.journal is not None  # opened by run() before the first frame
        self.journal.write(rec)  # appended now, fsync'd and echoed when this burst of frames is done
        self._io_ns += time.perf_counter_ns() - t0
        self.recent.append(rec)
        feed.n_signals[decision] += 1
        if paper is not None and decision == "long":
            paper.add_signal(feed.symbol, r.trade_id, r.ts_ms)

    def _check_hole(self, feed: SymbolFeed, r: Trade) -> None:
        """The first trade since the start is later than the journal's last event: record the hole.

        Events between the journal's last one and the end of the kernel's cold start (the first
        trade plus the warm-up span) may be missing or differ from a backtest; the journal says so
        in a hole record (docs/spec.md §5.4), which `live report` shows.
        """
        last = self.journal_state.last.get(feed.symbol)
        if last is None or r.ts_ms <= last[0] or self.journal is None:
            return
        mode = self.opts.warmup_from
        n_warm = self.warm_rows.get(feed.symbol, 0)
        if mode == "none":
            why = "started without warm-up (--warmup-from none)"
        elif n_warm == 0:
            why = f"the {mode} warm-up returned no trades"
        else:
            why = f"the {mode} warm-up began after the journal's last event"
        rec = {
            "record": "hole",
            "exchange": self.adapter.exchange,
            "symbol": feed.symbol,
            "from_ts_ms": last[0],
            "to_ts_ms": r.ts_ms + int(self.warmup_seconds() * 1000),
            "last_trade_id": last[1],
            "next_trade_id": r.trade_id,
            "reason": why,
            "config_id": self.decider.config_id,
        }
        self.journal.write(rec)
        self.holes.append(rec)
        log.error(
            "%s: restart could not warm up (%s): events from ts_ms %d (after trade id %d) to %d may be "
            "missing; recorded as a hole in the journal",
            feed.symbol,
            why,
            rec["from_ts_ms"],
            last[1],
            rec["to_ts_ms"],
        )

    # the parts in the package's other modules, as methods
    run = _lifecycle.run
    _warm_jit = _lifecycle._warm_jit
    _freeze_heap = staticmethod(_lifecycle._freeze_heap)
    stop = _lifecycle.stop
    _install_signal_handlers = _lifecycle._install_signal_handlers
    _drain = _lifecycle._drain
    _open_journal = _lifecycle._open_journal
    _idle_watchdog = _lifecycle._idle_watchdog
    _connect_loop = _connection._connect_loop
    _on_connected = _connection._on_connected
    _serve_connection = _connection._serve_connection
    _close = staticmethod(_connection._close)
    _app_pings = _connection._app_pings
    _poll_busily = _connection._poll_busily
    _set_silent = _connection._set_silent
    _get_json = _rest._get_json
    _backfill = _rest._backfill
    _backfill_ids = _rest._backfill_ids
    _catch_up = _rest._catch_up
    warmup_seconds = _rest.warmup_seconds
    _warm_up = _rest._warm_up
    _lake_rows = _rest._lake_rows
    health = _health.health
    render_metrics = _health.render_metrics
    counters = _health.counters
