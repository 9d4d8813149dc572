"""The live runner: exchange WebSocket → adapter → per-symbol kernel → decision → journal.

One asyncio loop, one connection per exchange, one kernel state per symbol. Each trade
goes through the same `signals.update` that `bt` loops over in `signals.run_batch`, in the
same order (by trade id within a symbol), so the journal equals `bt signals` on the same
trades. Around that core:

- ids: on exchanges with consecutive ids (Binance) a trade whose id is not above the symbol's
  last is a repeat and is dropped, and a jump is a gap, fetched over REST before the trade that
  revealed it is processed; on the others (Bybit's ids come from UUIDs, OKX's are sparse) a
  trade is a repeat when its id is among the symbol's recent ids;
- reconnects with exponential back-off and full jitter; a connection with no frame for
  `stale_s` is treated as dead; Binance connections are renewed before their 24 h limit;
- warm-up (`rest`, `lake` or `none`): history runs through the kernel with signals muted;
- restart: events already in the journal under the same config are not emitted again;
- SIGTERM/SIGINT: stop reading, decide what is pending (Binance `@trade` merge), flush, exit.

Latency: the transport is picows, and each message is decided inside its callback, with no
queue and no task switch; only REST work (a gap's backfill, a reconnect's catch-up) makes the
frames behind it wait, in order, with the socket not read meanwhile. The start-up heap is
frozen for the garbage collector. With `busy_poll` the runner spins instead of sleeping and
rehearses the frame path on scratch state while idle, so that the frame after a quiet spell
does not find it cold (see `Runner._poll_busily`).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, cast

import numpy as np
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)

from datasets._retry import backoff_s, retry_async
from datasets.sources.frames import BinanceTradeMerger, FrameError, Trade, UnknownContractError
from live.adapters import Adapter, RestError, make_adapter
from live.decider import Decider
from live.journal import AppendBlobSink, JournalState, JournalWriter, StdoutEcho, read_journal
from live.metrics import Metrics
from live.paper import PaperBook
from signals import FEATURE_NAMES, new_state, update
from signals.journal import journal_record

__all__ = ["RunnerOptions", "Runner", "SymbolFeed", "backoff_delay"]

log = logging.getLogger("whalebt.live")

OPEN_TIMEOUT_S = 10.0  # TCP connect + WebSocket handshake
CLOSE_TIMEOUT_S = 2.0  # wait for the server's answer to our close frame
PING_IDLE_S = 20.0  # ping after this long without a message; drop the connection if no pong within as long
MAX_MESSAGE_BYTES = 2**23
REHEARSE_EVERY_S = 0.002  # see Runner._poll_busily


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return backoff_s(attempt, base_s, cap_s, rng)


class _TransientRestError(RestError):
    """A REST answer worth retrying (a 5xx or 429, a network error, a cut body)."""


@dataclass
class RunnerOptions:
    """Everything `live run` can set. Times in seconds unless the name says otherwise."""

    exchange: str
    symbols: list[str]
    ws_url: str | None = None
    rest_url: str | None = None
    journal: str | None = None
    warmup_from: str = "none"  # rest | lake | none
    warmup_s: float | None = None
    lake: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    stream: str = "aggTrade"  # Binance only: aggTrade or trade
    stale_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    rest_retries: int = 3
    max_backfill_ids: int = 200_000
    idle_exit_s: float | None = None
    metrics_out: str | None = None
    paper: str | None = None  # file of paper-trading outcomes (needs Decider.paper_rules)
    echo: bool = True
    busy_poll: bool = False  # spin and keep the frame path warm while waiting for frames (Runner._poll_busily)
    journal_blob: str | None = None  # az://container/path/journal.jsonl: a copy of the journal
    max_frame_age_s: float = 60.0
    contract_values: dict[str, Any] | None = None
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    seed: int | None = None


def _fan_out(sinks: list[Callable[[str], None]]) -> Callable[[str], None]:
    """One journal-line callback that hands the line to every sink (stdout echo, blob copy)."""
    if len(sinks) == 1:
        return sinks[0]

    def send(line: str) -> None:
        for sink in sinks:
            sink(line)

    return send


class SymbolFeed:
    """Per-symbol state: the kernel, the @trade merger, the last id, counters."""

    __slots__ = (
        "symbol",
        "state",
        "merger",
        "last_id",
        "min_ts",
        "warm_ts",
        "first_live",
        "live",
        "n_trades",
        "n_dups",
        "n_gaps",
        "n_backfilled",
        "n_unfilled",
        "n_events",
        "n_signals",
        "n_suppressed",
        "n_rejects",
        "last_ts_ms",
        "recent_ids",
        "recent_order",
    )

    #: how many recent ids a feed without consecutive ids remembers to drop repeats
    RECENT_IDS = 200_000

    def __init__(self, symbol: str, state, merge: bool):
        self.symbol = symbol
        self.state = state
        self.merger = BinanceTradeMerger() if merge else None
        self.last_id: int | None = None
        self.min_ts: int | None = None
        self.warm_ts: int | None = None
        self.first_live = False
        self.live = False
        self.n_trades = self.n_dups = self.n_gaps = self.n_backfilled = self.n_unfilled = 0
        self.n_events = self.n_suppressed = self.n_rejects = 0
        self.n_signals: dict[str, int] = {"long": 0, "skip": 0}
        self.last_ts_ms: int | None = None
        self.recent_ids: set[int] = set()
        self.recent_order: collections.deque[int] = collections.deque()

    def seen_recently(self, trade_id: int) -> bool:
        """Record ``trade_id``; True if it was already among the recent ids (a repeat)."""
        if trade_id in self.recent_ids:
            return True
        self.recent_ids.add(trade_id)
        self.recent_order.append(trade_id)
        if len(self.recent_order) > self.RECENT_IDS:
            self.recent_ids.discard(self.recent_order.popleft())
        return False


class Runner:
    """Runs one exchange's symbols until stopped; see the module doc."""

    def __init__(self, opts: RunnerOptions, decider: Decider, adapter: Adapter | None = None):
        self.opts = opts
        self.decider = decider
        self.adapter = adapter or make_adapter(opts.exchange, stream=opts.stream, contract_values=opts.contract_values)
        self.symbols = [self.adapter.bronze_symbol(s) for s in opts.symbols]
        self.feeds = {s: SymbolFeed(s, new_state(decider.params), self.adapter.merge_fills) for s in self.symbols}
        self.metrics = Metrics()
        self.recent: collections.deque[dict] = collections.deque(maxlen=1000)
        self.journal_state = JournalState()
        self.journal: JournalWriter | None = None
        self.paper: PaperBook | None = None
        self._contiguous_ids = self.adapter.contiguous_ids
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

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Warm up, stream until stopped, drain. Returns the process exit code."""
        self._install_signal_handlers()
        if self.opts.journal:
            self.journal_state = read_journal(
                self.opts.journal, exchange=self.adapter.exchange, config_id=self.decider.config_id
            )
            if self.journal_state.records:
                log.info(
                    "journal %s holds %d events of config %s; they will not be emitted again",
                    self.opts.journal,
                    self.journal_state.records,
                    self.decider.config_id,
                )
        self._echo = StdoutEcho(self._stdout) if self.opts.echo else None
        self._blob_sink = AppendBlobSink(self.opts.journal_blob) if self.opts.journal_blob else None
        sinks: list[Callable[[str], None]] = [s for s in (self._echo, self._blob_sink) if s is not None]
        self.journal = JournalWriter(
            self.opts.journal, echo=_fan_out(sinks) if sinks else None, on_sync=self.metrics.journal_fsync.observe
        )
        if self.opts.paper and self.decider.paper_rules is not None:
            self.paper = PaperBook(
                self.decider.paper_rules, self.adapter.exchange, self.decider.config_id, self.opts.paper
            )
        if self.opts.http_port is not None:
            from live.http import start_http

            self._http_runner, self.http_port = await start_http(self, self.opts.http_host, self.opts.http_port)
            log.info("http on %s:%d (/health, /metrics, /signals)", self.opts.http_host, self.http_port)
        watchdog = asyncio.create_task(self._idle_watchdog()) if self.opts.idle_exit_s else None
        try:
            self._warm_jit()
            await self._warm_up()
            self._freeze_heap()
            self.ready = True
            if not self._stopping:
                await self._connect_loop()
        finally:
            if watchdog:
                watchdog.cancel()
            if self._worker is not None:
                await asyncio.wait((self._worker,))  # a backfill in progress finishes its frame
            gc.unfreeze()
            self._drain()
            if self.opts.metrics_out:
                from pathlib import Path

                Path(self.opts.metrics_out).parent.mkdir(parents=True, exist_ok=True)
                Path(self.opts.metrics_out).write_text(self.render_metrics())
            if self._session is not None:
                await self._session.close()
            if self._http_runner is not None:
                await self._http_runner.cleanup()
        if self._failure is not None:
            raise self._failure
        log.info(
            "stopped: %d frames, %d trades, %d events, %d signals, %d bad frames, %d reconnects",
            self.n_frames,
            sum(f.n_trades for f in self.feeds.values()),
            sum(f.n_events for f in self.feeds.values()),
            sum(sum(f.n_signals.values()) for f in self.feeds.values()),
            self.n_bad,
            self.n_reconnects,
        )
        return 0

    def _warm_jit(self) -> None:
        """Compile (or load from cache) the kernel and the model before the first live trade."""
        update(new_state(self.decider.params), 0, 1.0, 1.0, 1)
        self.decider.decide(self._rehearsal_features)

    @staticmethod
    def _freeze_heap() -> None:
        """Keep the start-up heap out of the garbage collector's way.

        Imports (numba, pandas, LightGBM, MLflow with a registry model) leave hundreds of
        thousands of long-lived objects that every full collection would traverse again, for
        milliseconds, in the middle of some frame. Frozen, they are never scanned; the frame path
        itself frees what it allocates by reference counting.
        """
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        """Ask the runner to drain and exit (what SIGTERM does): frames from now on are not read."""
        if not self._stop.is_set():
            log.info("stopping: draining and flushing the journal")
        self._stop.set()
        self._stopping = True

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass

    def _drain(self) -> None:
        for feed in self.feeds.values():
            if feed.merger is not None:
                for r in feed.merger.flush():
                    self._decide(feed, r)
        if self.journal is not None:
            self.journal.close()
        if self.paper is not None:
            if self.paper.n_open():
                log.info("paper trading: %d position(s) still open at exit (not scored)", self.paper.n_open())
            self.paper.close()
        if self._echo is not None:
            self._echo.close()
        if self._blob_sink is not None:
            self._blob_sink.close()

    async def _idle_watchdog(self) -> None:
        idle_s = self.opts.idle_exit_s
        assert idle_s is not None  # started only with --idle-exit-s
        while not self._stop.is_set():
            await asyncio.sleep(min(0.2, idle_s))
            ref = self.last_frame_ns or self.started_ns
            if self.ready and time.perf_counter_ns() - ref > idle_s * 1e9:
                log.info("no frame for %.1f s (--idle-exit-s): stopping", self.opts.idle_exit_s)
                self.stop()

    # ------------------------------------------------------------------ connection
    async def _connect_loop(self) -> None:
        attempt = 0
        url = self.adapter.ws_url(self.symbols, self.opts.ws_url)
        while not self._stopping:
            got_data = False
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    transport, listener = await ws_connect(
                        lambda: _Listener(self),
                        url,
                        websocket_handshake_timeout=OPEN_TIMEOUT_S,
                        enable_auto_ping=True,
                        auto_ping_idle_timeout=PING_IDLE_S,
                        auto_ping_reply_timeout=PING_IDLE_S,
                        max_frame_size=MAX_MESSAGE_BYTES,
                        logger_name="whalebt",
                    )
                got_data = await self._serve_connection(transport, cast(_Listener, listener), url)
            except WSInvalidURL as exc:
                raise ValueError(
                    f"--ws-url {url!r} is not a WebSocket URL ({exc}); expected ws://host:port/path or wss://..."
                ) from None
            except (OSError, WSError, TimeoutError) as exc:
                log.warning("connection to %s failed or dropped: %s", url, exc or type(exc).__name__)
            finally:
                self._transport = None
                self.connected = False
            if self._stopping:
                break
            if got_data:
                attempt = 0
            delay = backoff_delay(attempt, self.opts.backoff_base_s, self.opts.backoff_cap_s, self.rng)
            attempt += 1
            self.n_reconnects += 1
            log.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except (asyncio.TimeoutError, TimeoutError):
                pass

    def _on_connected(self, transport: WSTransport) -> None:
        """The handshake is done and no frame of the new connection has been handled yet."""
        self._transport = transport
        if self._backlog is not None:
            self._pause_reading()
        if self.n_connections:
            # what passed while away comes over REST before the new connection's frames
            self._defer(self._catch_up())
        self.n_connections += 1

    async def _serve_connection(self, transport: WSTransport, listener: "_Listener", url: str) -> bool:
        """Subscribe, then watch the connection until it ends, goes stale or must be renewed.

        Frames are handled by the listener as they arrive; this coroutine only wakes every
        `tick` to check staleness and the renewal deadline. True if any message came.
        """
        loop = asyncio.get_running_loop()
        self.connected = True
        log.info("connected to %s", url)
        for msg in self.adapter.subscribe_messages(self.symbols, url):
            transport.send(WSMsgType.TEXT, msg.encode())
        pinger = asyncio.create_task(self._app_pings(transport)) if self.adapter.app_ping_text else None
        spinner = asyncio.create_task(self._poll_busily()) if self.opts.busy_poll else None
        closed = asyncio.ensure_future(transport.wait_disconnected())
        stopped = asyncio.ensure_future(self._stop.wait())
        stale_s = self.opts.stale_s
        renew_at = loop.time() + self.adapter.max_connection_s if self.adapter.max_connection_s else math.inf
        opened_ns = time.perf_counter_ns()
        tick = min(1.0, stale_s / 4)
        try:
            while not closed.done():
                await asyncio.wait((closed, stopped), timeout=tick, return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    break
                if stopped.done():
                    await self._close(transport, closed)
                    break
                # silence while REST work holds the reading (see _defer) says nothing about the connection
                quiet_ns = time.perf_counter_ns() - max(opened_ns, self.last_frame_ns)
                if self._backlog is None and quiet_ns > stale_s * 1e9:
                    log.warning("no frame for %.1f s: treating the connection as dead", stale_s)
                    await self._close(transport, closed)
                    break
                if loop.time() >= renew_at:
                    log.info(
                        "renewing the connection before the exchange's %d h limit",
                        int((self.adapter.max_connection_s or 0) // 3600) + 1,
                    )
                    await self._close(transport, closed)
                    break
            closed.result()  # raises what a frame callback raised (it ended the connection)
            peer = transport.close_handshake.recv if transport.close_handshake is not None else None
            if peer is not None and not self._stopping:
                log.warning("connection closed by the server: %s %s", peer.code.value, peer.reason)
        finally:
            stopped.cancel()
            if pinger:
                pinger.cancel()
            if spinner:
                spinner.cancel()
        return listener.n_messages > 0

    @staticmethod
    async def _close(transport: WSTransport, closed: asyncio.Future) -> None:
        """Close handshake; the connection is cut if the server does not answer in time."""
        transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(closed), CLOSE_TIMEOUT_S)
        except TimeoutError:
            transport.disconnect(graceful=False)
            await asyncio.wait((closed,))

    async def _app_pings(self, transport: WSTransport) -> None:
        text = self.adapter.app_ping_text
        assert text is not None  # the ping task starts only for adapters that send one
        payload = text.encode()
        while not transport.is_disconnected:
            await asyncio.sleep(self.adapter.app_ping_interval_s)
            transport.send(WSMsgType.TEXT, payload)

    async def _poll_busily(self) -> None:
        """`--busy-poll`: poll the socket instead of sleeping, and keep the frame path warm.

        Why (measured at recorded pace on a shared 2-core VM): a runner that sleeps between
        frames gives its core away, other processes run there, and the next frame finds the
        caches and TLB cold: frames after a gap of a millisecond or more took ~200 µs instead of
        ~20 µs, all of parsing, id checks, merging, kernel and model alike. Spinning keeps the
        core; rehearsing the frame path when no frame came for `REHEARSE_EVERY_S` keeps it warm
        (either alone did not help much). The price is one core at 100%.
        """
        every_ns = int(REHEARSE_EVERY_S * 1e9)
        rehearsed_ns = 0
        while True:
            await asyncio.sleep(0)  # one loop iteration: a non-blocking poll, ready callbacks, timers
            now = time.perf_counter_ns()
            if now - max(self.last_frame_ns, rehearsed_ns) >= every_ns:
                rehearsed_ns = now
                self._rehearse()

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

    # ------------------------------------------------------------------ frames and trades
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
        self._sample = payload
        self._io_ns = 0
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
        except (FrameError, UnknownContractError) as exc:
            self.n_bad += 1
            if self.n_bad <= 5 or self.n_bad % 1000 == 0:
                log.warning("skipping malformed frame #%d: %s", self.n_bad, exc)
            return []
        if not rows and isinstance(payload, str):
            info = self.adapter.control(payload)
            if info and info.startswith("error"):
                log.warning("exchange says: %s", info)
        return rows

    def _take_rows(self, rows: list[Trade], start: int) -> int | None:
        """Process ``rows[start:]``; the index of the first row that needs a REST backfill first, or None."""
        feeds = self.feeds
        for i in range(start, len(rows)):
            row = rows[i]
            feed = feeds.get(row.symbol)
            if feed is not None and self._on_row(feed, row, False):
                return i
        return None

    def _frame_done(self, rows: list[Trade], t_recv_ns: int) -> None:
        self.last_stream_ts_ms = rows[-1].ts_ms
        # decision latency: the journal append and REST backfills are not in it (the fdatasync comes after
        # the burst, timed on its own)
        self.metrics.receipt_to_decision.observe((time.perf_counter_ns() - t_recv_ns - self._io_ns) * 1e-9)
        self.metrics.exchange_to_receipt.observe((self.opts.clock_ms() - rows[-1].ts_ms) * 1e-3)

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
        last = feed.last_id
        if feed.first_live and not from_rest:
            feed.first_live = False
            jump = None if last is None else row.trade_id - last
            if (
                jump is not None
                and feed.warm_ts is not None
                and row.ts_ms > feed.warm_ts
                and (jump <= 0 or jump > self.opts.max_backfill_ids)
            ):
                # newer than the warm-up but numbered apart from it: the warm-up came from a source with
                # other ids (e.g. a lake filled from recordings); carry on from the stream's numbering
                log.warning(
                    "%s: first live trade id %d is %+d from the warm-up's last id %d although it is "
                    "newer; continuing from the stream's ids",
                    feed.symbol,
                    row.trade_id,
                    jump,
                    last,
                )
                feed.last_id = last = None
        if not self._contiguous_ids:
            # no id order to lean on: a repeat is a recent id, or a trade older than the warm-up's end
            if feed.seen_recently(row.trade_id) or (feed.min_ts is not None and row.ts_ms < feed.min_ts):
                feed.n_dups += 1
                return False
        elif last is not None:
            if row.trade_id <= last:
                feed.n_dups += 1
                return False
            if row.trade_id > last + 1 and not from_rest:
                if row.trade_id - last - 1 <= self.opts.max_backfill_ids:
                    return True
                feed.n_gaps += 1
                feed.n_unfilled += row.trade_id - last - 1
                log.error(
                    "%s: gap of %d trade ids is more than --max-backfill-ids %d; not backfilled",
                    feed.symbol,
                    row.trade_id - last - 1,
                    self.opts.max_backfill_ids,
                )
        elif feed.min_ts is not None and row.ts_ms < feed.min_ts:
            feed.n_dups += 1  # older than the warm-up's end on an exchange without consecutive ids
            return False
        feed.last_id = row.trade_id
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

    # ------------------------------------------------------------------ REST: backfill and warm-up
    async def _get_json(self, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        base = (self.opts.rest_url or self.adapter.default_rest_url).rstrip("/")
        session = self._session
        query = {k: str(v) for k, v in params.items()}

        async def once() -> Any:
            try:
                async with session.get(base + path, params=query, headers=headers) as resp:
                    body = await resp.text()
                    if resp.status == 200:
                        return json.loads(body)
                    error = RestError if resp.status in (400, 401, 403, 404) else _TransientRestError
                    raise error(f"GET {base}{path} → HTTP {resp.status}: {body[:200]}")
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                raise _TransientRestError(f"GET {base}{path} failed: {exc!r}") from None

        return await retry_async(
            once,
            retries=max(0, self.opts.rest_retries - 1),
            delay=lambda i, _: backoff_delay(i, self.opts.backoff_base_s, self.opts.backoff_cap_s, self.rng),
            retry_on=(_TransientRestError,),
        )

    async def _backfill(self, feed: SymbolFeed, lo: int, hi: int) -> None:
        t0 = time.perf_counter_ns()
        try:
            await self._backfill_ids(feed, lo, hi)
        finally:
            self._io_ns += time.perf_counter_ns() - t0

    async def _backfill_ids(self, feed: SymbolFeed, lo: int, hi: int) -> None:
        feed.n_gaps += 1
        want = hi - lo + 1
        log.warning("%s: gap of %d trade id(s) %d..%d; backfilling over REST", feed.symbol, want, lo, hi)
        try:
            rows = await self.adapter.fetch_ids(self._get_json, feed.symbol, lo, hi)
        except RestError as exc:
            feed.n_unfilled += want
            log.error("%s: backfill of %d..%d failed, %d trade(s) missing: %s", feed.symbol, lo, hi, want, exc)
            return
        for r in rows:
            self._on_row(feed, r, True)
        feed.n_backfilled += len(rows)
        if len(rows) < want:
            feed.n_unfilled += want - len(rows)
            log.error("%s: REST returned %d of the %d missing trades", feed.symbol, len(rows), want)

    async def _catch_up(self) -> None:
        """After a reconnect, fetch over REST what passed while away, before reading on.

        A gap shows up by itself when the next trade of a symbol arrives, but trades lost at the
        end of a symbol's burst, or all of a quiet symbol's, would wait for that: on exchanges
        with consecutive ids each symbol is caught up from its last id (or, never seen yet,
        from the stream's last trade time) to what REST has now.
        """
        if not self.adapter.contiguous_ids:
            return
        for feed in self.feeds.values():
            try:
                if feed.last_id is not None:
                    rows = await self.adapter.fetch_ids(
                        self._get_json, feed.symbol, feed.last_id + 1, feed.last_id + 10_000_000
                    )
                elif self.last_stream_ts_ms is not None:
                    t0 = self.last_stream_ts_ms - 1000
                    rows = await self.adapter.fetch_since(self._get_json, feed.symbol, t0, t0 + 3_600_000)
                else:
                    continue
            except RestError as exc:
                log.error("%s: catching up over REST after the reconnect failed: %s", feed.symbol, exc)
                continue
            n_before = feed.n_trades
            for r in rows:
                self._on_row(feed, r, True)
            if rows:
                feed.n_gaps += 1
                feed.n_backfilled += len(rows)
                log.warning(
                    "%s: %d trade(s) passed during the reconnect; fetched over REST (%d new)",
                    feed.symbol,
                    len(rows),
                    feed.n_trades - n_before,
                )

    def warmup_seconds(self) -> float:
        """History the kernel needs before its signals mean what the backtest's do."""
        if self.opts.warmup_s is not None:
            return float(self.opts.warmup_s)
        p = self.decider.params
        need = 60.0  # the longest feature window (signals.features.WINDOWS_S)
        if p.window_s is not None:
            need = max(need, float(p.lookback_s + p.window_s))
        return need + 5.0

    async def _warm_up(self) -> None:
        mode = self.opts.warmup_from
        if mode == "none":
            for f in self.feeds.values():
                f.live = True
            log.info("warm-up: none; the kernel starts cold and signals are allowed from the first trade")
            return
        span_s = self.warmup_seconds()
        until = self.opts.clock_ms()
        since = until - int(span_s * 1000)
        for sym, feed in self.feeds.items():
            if self._stop.is_set():
                return
            if mode == "rest":
                try:
                    rows = await self.adapter.fetch_since(self._get_json, sym, since, until)
                except RestError as exc:
                    raise RestError(
                        f"warm-up of {sym} over REST failed: {exc}. Retry, or start with --warmup-from lake or none"
                    ) from None
            elif mode == "lake":
                rows = self._lake_rows(sym, since, until)
            else:
                raise ValueError(f"--warmup-from must be rest, lake or none; got {mode!r}")
            for r in rows:
                self._on_row(feed, r, True)
            raw_last = getattr(self.adapter, "last_raw_ids", {}).get(sym)
            if raw_last is not None:  # Binance @trade: REST gave aggTrades; continue from their last fill id
                feed.last_id = raw_last
            if rows:
                feed.warm_ts = rows[-1].ts_ms
                feed.first_live = True
                if not self.adapter.contiguous_ids:
                    feed.min_ts = rows[-1].ts_ms
            feed.live = True
            first = rows[0].ts_ms if rows else None
            log.info(
                "warm-up: %s %d trades from %s (%s .. %s, %.0f s asked); signals allowed after trade id %s",
                sym,
                len(rows),
                mode,
                first,
                rows[-1].ts_ms if rows else None,
                span_s,
                feed.last_id,
            )

    def _lake_rows(self, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
        import datetime as dt

        from datasets.lake import Lake, NoDataError

        if not self.opts.lake:
            raise ValueError("--warmup-from lake needs --lake (or WHALEBT_LAKE)")
        lake = Lake(self.opts.lake)
        d0 = dt.datetime.fromtimestamp(since_ms / 1000, dt.timezone.utc).date()
        d1 = dt.datetime.fromtimestamp(until_ms / 1000, dt.timezone.utc).date()
        try:
            df = lake.read("bronze", self.adapter.exchange, symbol, d0, d1)
        except NoDataError as exc:
            log.warning("warm-up from lake: %s; starting cold", exc)
            return []
        df = df[(df.ts_ms >= since_ms) & (df.ts_ms <= until_ms)].sort_values(["ts_ms", "trade_id"])
        ex = self.adapter.exchange
        return [
            Trade(ex, symbol, int(t), int(ts), float(p), float(q), int(s))
            for t, ts, p, q, s in zip(df.trade_id, df.ts_ms, df.price, df.qty, df.side)
        ]

    # ------------------------------------------------------------------ observability
    def health(self) -> tuple[bool, dict[str, Any]]:
        frame_age = (time.perf_counter_ns() - self.last_frame_ns) * 1e-9 if self.last_frame_ns else None
        fresh = frame_age is not None and frame_age <= self.opts.max_frame_age_s
        ok = self.ready and self.connected and fresh
        wall_ms = self.opts.clock_ms()
        return ok, {
            "ok": ok,
            "ready": self.ready,
            "connected": self.connected,
            "exchange": self.adapter.exchange,
            "config_id": self.decider.config_id,
            "model": self.decider.model_uri,
            "last_frame_age_s": None if frame_age is None else round(frame_age, 3),
            "symbols": {
                s: {
                    "trades": f.n_trades,
                    "last_trade_ts_ms": f.last_ts_ms,
                    "last_trade_age_s": None if f.last_ts_ms is None else round((wall_ms - f.last_ts_ms) / 1000, 3),
                    "signals": sum(f.n_signals.values()),
                    "live": f.live,
                }
                for s, f in self.feeds.items()
            },
        }

    def render_metrics(self) -> str:
        m = self.metrics
        ex = self.adapter.exchange
        m.set("frames_total", self.n_frames, exchange=ex)
        m.set("bad_frames_total", self.n_bad, exchange=ex)
        m.set("reconnects_total", self.n_reconnects, exchange=ex)
        m.set("connected", int(self.connected), exchange=ex)
        m.set("ready", int(self.ready), exchange=ex)
        for s, f in self.feeds.items():
            m.set("trades_total", f.n_trades, symbol=s)
            m.set("duplicates_total", f.n_dups, symbol=s)
            m.set("gaps_total", f.n_gaps, symbol=s)
            m.set("backfilled_trades_total", f.n_backfilled, symbol=s)
            m.set("gap_trades_unfilled_total", f.n_unfilled, symbol=s)
            m.set("kernel_rejects_total", f.n_rejects, symbol=s)
            m.set("events_total", f.n_events, symbol=s)
            m.set("suppressed_total", f.n_suppressed, symbol=s)
            for d, n in f.n_signals.items():
                m.set("signals_total", n, symbol=s, decision=d)
            if f.last_ts_ms is not None:
                m.set("last_trade_ts_ms", f.last_ts_ms, symbol=s)
        return m.render()

    def counters(self) -> dict[str, int]:
        """Totals over symbols (tests and the exit log)."""
        fs = self.feeds.values()
        return {
            "frames": self.n_frames,
            "bad_frames": self.n_bad,
            "reconnects": self.n_reconnects,
            "trades": sum(f.n_trades for f in fs),
            "duplicates": sum(f.n_dups for f in fs),
            "gaps": sum(f.n_gaps for f in fs),
            "backfilled": sum(f.n_backfilled for f in fs),
            "unfilled": sum(f.n_unfilled for f in fs),
            "events": sum(f.n_events for f in fs),
            "signals": sum(sum(f.n_signals.values()) for f in fs),
            "suppressed": sum(f.n_suppressed for f in fs),
            "rejects": sum(f.n_rejects for f in fs),
        }


class _Listener(WSListener):
    """picows callbacks of one connection: each complete message goes straight to the runner.

    A message is stamped as received when picows hands over its last frame, the equivalent of
    a client's `recv()` returning it. Text messages go on as `str` and binary ones as `bytes`
    (as websockets gives them); text that is not UTF-8 goes on as `bytes` for the parser to
    count as a bad frame. Exchanges do not fragment messages, but a fragmented one is assembled
    as the protocol requires. Pings are answered by picows; a close frame from the server is
    answered and ends the connection.
    """

    def __init__(self, runner: Runner):
        super().__init__()
        self._runner = runner
        self._parts: list[bytes] | None = None  # the frames so far of a fragmented message
        self._parts_text = False
        self.n_messages = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._runner._on_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t_recv_ns = time.perf_counter_ns()
        kind = frame.msg_type
        payload: str | bytes | None
        if kind is WSMsgType.TEXT and frame.fin:  # nearly every message
            try:
                payload = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                payload = frame.get_payload_as_bytes()
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        else:
            payload = self._assemble(kind, frame)
            if payload is None:
                return
        self.n_messages += 1
        if not self._runner._stopping:
            self._runner.on_message(payload, t_recv_ns)

    def _assemble(self, kind: WSMsgType, frame: WSFrame) -> bytes | str | None:
        """A binary message, or the last frame of a fragmented one: the whole message; else None."""
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if frame.fin:
                return frame.get_payload_as_bytes()
            self._parts, self._parts_text = [frame.get_payload_as_bytes()], kind is WSMsgType.TEXT
            return None
        if kind is not WSMsgType.CONTINUATION or self._parts is None:
            return None  # a pong nobody asked for
        self._parts.append(frame.get_payload_as_bytes())
        if sum(map(len, self._parts)) > MAX_MESSAGE_BYTES:
            raise WSProtocolError(WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_MESSAGE_BYTES} bytes")
        if not frame.fin:
            return None
        payload, self._parts = b"".join(self._parts), None
        if self._parts_text:
            try:
                return payload.decode()
            except UnicodeDecodeError:
                pass
        return payload
