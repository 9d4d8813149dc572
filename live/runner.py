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
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

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


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** min(attempt, 30))))


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

    __slots__ = ("symbol", "state", "merger", "last_id", "min_ts", "warm_ts", "first_live", "live", "n_trades",
                 "n_dups", "n_gaps",
                 "n_backfilled", "n_unfilled", "n_events", "n_signals", "n_suppressed", "n_rejects",
                 "last_ts_ms", "last_trade_wall", "recent_ids", "recent_order")

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
        self.last_trade_wall: float | None = None
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
        self.adapter = adapter or make_adapter(opts.exchange, stream=opts.stream,
                                               contract_values=opts.contract_values)
        self.symbols = [s.upper() for s in opts.symbols]
        self.feeds = {s: SymbolFeed(s, new_state(decider.params), self.adapter.merge_fills) for s in self.symbols}
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
        self.last_frame_wall: float | None = None
        self.started_wall = time.time()
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._ws = None
        self._http_runner = None
        self._session = None
        self._stdout = sys.stdout
        self._echo: StdoutEcho | None = None
        self._blob_sink: AppendBlobSink | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Warm up, stream until stopped, drain. Returns the process exit code."""
        self._install_signal_handlers()
        if self.opts.journal:
            self.journal_state = read_journal(self.opts.journal, exchange=self.adapter.exchange,
                                              config_id=self.decider.config_id)
            if self.journal_state.records:
                log.info("journal %s holds %d events of config %s; they will not be emitted again",
                         self.opts.journal, self.journal_state.records, self.decider.config_id)
        self._echo = StdoutEcho(self._stdout) if self.opts.echo else None
        self._blob_sink = AppendBlobSink(self.opts.journal_blob) if self.opts.journal_blob else None
        sinks = [s for s in (self._echo, self._blob_sink) if s is not None]
        self.journal = JournalWriter(self.opts.journal, echo=_fan_out(sinks) if sinks else None)
        if self.opts.paper and self.decider.paper_rules is not None:
            self.paper = PaperBook(self.decider.paper_rules, self.adapter.exchange, self.decider.config_id,
                                   self.opts.paper)
        if self.opts.http_port is not None:
            from live.http import start_http

            self._http_runner, self.http_port = await start_http(self, self.opts.http_host, self.opts.http_port)
            log.info("http on %s:%d (/health, /metrics, /signals)", self.opts.http_host, self.http_port)
        watchdog = asyncio.create_task(self._idle_watchdog()) if self.opts.idle_exit_s else None
        try:
            self._warm_jit()
            await self._warm_up()
            self.ready = True
            if not self._stop.is_set():
                await self._connect_loop()
        finally:
            if watchdog:
                watchdog.cancel()
            self._drain()
            if self.opts.metrics_out:
                from pathlib import Path

                Path(self.opts.metrics_out).parent.mkdir(parents=True, exist_ok=True)
                Path(self.opts.metrics_out).write_text(self.render_metrics())
            if self._session is not None:
                await self._session.close()
            if self._http_runner is not None:
                await self._http_runner.cleanup()
        log.info("stopped: %d frames, %d trades, %d events, %d signals, %d bad frames, %d reconnects",
                 self.n_frames, sum(f.n_trades for f in self.feeds.values()),
                 sum(f.n_events for f in self.feeds.values()),
                 sum(sum(f.n_signals.values()) for f in self.feeds.values()), self.n_bad, self.n_reconnects)
        return 0

    def _warm_jit(self) -> None:
        """Compile (or load from cache) the kernel and the model before the first live trade."""
        import numpy as np

        st = new_state(self.decider.params)
        update(st, 0, 1.0, 1.0, 1)
        if self.decider.predict is not None:
            self.decider.predict(np.zeros(len(FEATURE_NAMES)))

    def stop(self) -> None:
        """Ask the runner to drain and exit (what SIGTERM does)."""
        if not self._stop.is_set():
            log.info("stopping: draining and flushing the journal")
        self._stop.set()
        if self._ws is not None:
            asyncio.ensure_future(self._ws.close())

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
        while not self._stop.is_set():
            await asyncio.sleep(min(0.2, self.opts.idle_exit_s))
            ref = self.last_frame_wall or self.started_wall
            if self.ready and time.time() - ref > self.opts.idle_exit_s:
                log.info("no frame for %.1f s (--idle-exit-s): stopping", self.opts.idle_exit_s)
                self.stop()

    # ------------------------------------------------------------------ connection
    async def _connect_loop(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        attempt = 0
        url = self.adapter.ws_url(self.symbols, self.opts.ws_url)
        while not self._stop.is_set():
            got_data = False
            try:
                # max_queue: received messages that may wait for `recv` before websockets stops reading
                # the socket; the default (16) pauses and resumes reading many times per burst at full
                # speed. Trade frames are ~200 bytes, so 1024 of them is a few hundred kB.
                async with connect(url, open_timeout=10, ping_interval=20, ping_timeout=20, close_timeout=2,
                                   max_size=2**23, compression=None, max_queue=1024) as ws:
                    self._ws = ws
                    self.connected = True
                    log.info("connected to %s", url)
                    for msg in self.adapter.subscribe_messages(self.symbols, url):
                        await ws.send(msg)
                    if self.n_connections:
                        await self._catch_up()
                    self.n_connections += 1
                    got_data = await self._read(ws)
            except InvalidURI as exc:
                raise ValueError(f"--ws-url {url!r} is not a WebSocket URL ({exc}); expected ws://host:port/path "
                                 "or wss://...") from None
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, asyncio.TimeoutError) as exc:
                log.warning("connection to %s failed or dropped: %s", url, exc or type(exc).__name__)
            finally:
                self._ws = None
                self.connected = False
            if self._stop.is_set():
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

    async def _read(self, ws) -> bool:
        """Read frames until the connection ends, goes stale or must be renewed; True if any came."""
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        pinger = asyncio.create_task(self._app_pings(ws)) if self.adapter.app_ping_text else None
        renew_at = loop.time() + self.adapter.max_connection_s if self.adapter.max_connection_s else math.inf
        got = False
        stale = self.opts.stale_s
        perf = time.perf_counter_ns
        resched_at = loop.time()
        try:
            async with asyncio.timeout(stale) as tm:
                while not self._stop.is_set():
                    try:
                        text = await ws.recv()
                    except ConnectionClosed as exc:
                        if not self._stop.is_set():
                            log.warning("connection closed: %s", exc)
                        return got
                    t_recv = perf()
                    got = True
                    await self.handle_frame(text, t_recv)
                    now = loop.time()
                    if now >= renew_at:
                        log.info("renewing the connection before the exchange's %d h limit",
                                 int(self.adapter.max_connection_s // 3600) + 1)
                        await ws.close()
                        return got
                    if now - resched_at > 0.5:  # moving the deadline costs a timer: not on every frame
                        tm.reschedule(now + stale)
                        resched_at = now
        except TimeoutError:
            log.warning("no frame for %.1f s: treating the connection as dead", stale)
            await ws.close()
        finally:
            if pinger:
                pinger.cancel()
        return got

    async def _app_pings(self, ws) -> None:
        try:
            while True:
                await asyncio.sleep(self.adapter.app_ping_interval_s)
                await ws.send(self.adapter.app_ping_text)
        except Exception:  # the connection ended; the reader handles it
            return

    # ------------------------------------------------------------------ frames and trades
    async def handle_frame(self, text: str | bytes, t_recv_ns: int) -> None:
        """Parse one frame and process its trades (public for benchmarks and tests)."""
        self.n_frames += 1
        self.last_frame_wall = time.time()
        try:
            rows = self.adapter.parse(text)
        except (FrameError, UnknownContractError) as exc:
            self.n_bad += 1
            if self.n_bad <= 5 or self.n_bad % 1000 == 0:
                log.warning("skipping malformed frame #%d: %s", self.n_bad, exc)
            return
        if not rows:
            if isinstance(text, str):
                info = self.adapter.control(text)
                if info and info.startswith("error"):
                    log.warning("exchange says: %s", info)
            return
        self._io_ns = 0
        for row in rows:
            feed = self.feeds.get(row.symbol)
            if feed is not None:
                await self._on_row(feed, row, False)
        self.last_stream_ts_ms = rows[-1].ts_ms
        # decision latency: the journal's write + fsync (timed on its own) and REST backfills are not in it
        self.metrics.receipt_to_decision.observe((time.perf_counter_ns() - t_recv_ns - self._io_ns) * 1e-9)
        self.metrics.exchange_to_receipt.observe(self.opts.clock_ms() * 1e-3 - rows[-1].ts_ms * 1e-3)

    async def _on_row(self, feed: SymbolFeed, row: Trade, from_rest: bool) -> None:
        last = feed.last_id
        if feed.first_live and not from_rest:
            feed.first_live = False
            jump = None if last is None else row.trade_id - last
            if jump is not None and row.ts_ms > feed.warm_ts and (jump <= 0 or jump > self.opts.max_backfill_ids):
                # newer than the warm-up but numbered apart from it: the warm-up came from a source with
                # other ids (e.g. a lake filled from recordings); carry on from the stream's numbering
                log.warning("%s: first live trade id %d is %+d from the warm-up's last id %d although it is "
                            "newer; continuing from the stream's ids", feed.symbol, row.trade_id, jump, last)
                feed.last_id = last = None
        if not self.adapter.contiguous_ids:
            # no id order to lean on: a repeat is a recent id, or a trade older than the warm-up's end
            if feed.seen_recently(row.trade_id) or (feed.min_ts is not None and row.ts_ms < feed.min_ts):
                feed.n_dups += 1
                return
        elif last is not None:
            if row.trade_id <= last:
                feed.n_dups += 1
                return
            if row.trade_id > last + 1 and not from_rest:
                if row.trade_id - last - 1 > self.opts.max_backfill_ids:
                    feed.n_gaps += 1
                    feed.n_unfilled += row.trade_id - last - 1
                    log.error("%s: gap of %d trade ids is more than --max-backfill-ids %d; not backfilled",
                              feed.symbol, row.trade_id - last - 1, self.opts.max_backfill_ids)
                else:
                    await self._backfill(feed, last + 1, row.trade_id - 1)
                if feed.last_id is not None and row.trade_id <= feed.last_id:
                    feed.n_dups += 1
                    return
        elif feed.min_ts is not None and row.ts_ms < feed.min_ts:
            feed.n_dups += 1  # older than the warm-up's end on an exchange without consecutive ids
            return
        feed.last_id = row.trade_id
        if feed.merger is None:
            self._decide(feed, row)
        else:
            for r in feed.merger.push(row):
                self._decide(feed, r)

    def _decide(self, feed: SymbolFeed, r: Trade) -> None:
        try:
            code, feats = update(feed.state, r.ts_ms, r.price, r.qty, r.side)
        except ValueError as exc:
            feed.n_rejects += 1
            log.warning("%s: kernel refused trade %d: %s", feed.symbol, r.trade_id, exc)
            return
        feed.n_trades += 1
        feed.last_ts_ms = r.ts_ms
        feed.last_trade_wall = time.time()
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
        rec = journal_record(exchange=self.adapter.exchange, symbol=feed.symbol, trade_id=r.trade_id,
                             ts_ms=r.ts_ms, price=r.price, notional_usd=r.price * r.qty, prob=prob,
                             decision=decision, config_id=self.decider.config_id, model=self.decider.model_uri)
        t0 = time.perf_counter_ns()
        self.journal.write(rec)
        dt = time.perf_counter_ns() - t0
        self._io_ns += dt
        self.metrics.journal_write.observe(dt * 1e-9)
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
        last_exc: Exception | None = None
        for attempt in range(self.opts.rest_retries):
            try:
                async with self._session.get(base + path, params={k: str(v) for k, v in params.items()},
                                             headers=headers) as resp:
                    body = await resp.text()
                    if resp.status == 200:
                        return json.loads(body)
                    last_exc = RestError(f"GET {base}{path} → HTTP {resp.status}: {body[:200]}")
                    if resp.status in (400, 401, 403, 404):
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                last_exc = RestError(f"GET {base}{path} failed: {exc!r}")
            await asyncio.sleep(backoff_delay(attempt, self.opts.backoff_base_s, self.opts.backoff_cap_s, self.rng))
        raise last_exc or RestError(f"GET {base}{path} failed")

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
            await self._on_row(feed, r, True)
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
                    rows = await self.adapter.fetch_ids(self._get_json, feed.symbol, feed.last_id + 1,
                                                        feed.last_id + 10_000_000)
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
                await self._on_row(feed, r, True)
            if rows:
                feed.n_gaps += 1
                feed.n_backfilled += len(rows)
                log.warning("%s: %d trade(s) passed during the reconnect; fetched over REST (%d new)",
                            feed.symbol, len(rows), feed.n_trades - n_before)

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
                    raise RestError(f"warm-up of {sym} over REST failed: {exc}. Retry, or start with "
                                    "--warmup-from lake or none") from None
            elif mode == "lake":
                rows = self._lake_rows(sym, since, until)
            else:
                raise ValueError(f"--warmup-from must be rest, lake or none; got {mode!r}")
            for r in rows:
                await self._on_row(feed, r, True)
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
            log.info("warm-up: %s %d trades from %s (%s .. %s, %.0f s asked); signals allowed after trade id %s",
                     sym, len(rows), mode, first, rows[-1].ts_ms if rows else None, span_s, feed.last_id)

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
        return [Trade(ex, symbol, int(t), int(ts), float(p), float(q), int(s)) for t, ts, p, q, s in
                zip(df.trade_id, df.ts_ms, df.price, df.qty, df.side)]

    # ------------------------------------------------------------------ observability
    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        frame_age = None if self.last_frame_wall is None else now - self.last_frame_wall
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
                s: {"trades": f.n_trades, "last_trade_ts_ms": f.last_ts_ms,
                    "last_trade_age_s": None if f.last_ts_ms is None else round((wall_ms - f.last_ts_ms) / 1000, 3),
                    "signals": sum(f.n_signals.values()), "live": f.live}
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
            "frames": self.n_frames, "bad_frames": self.n_bad, "reconnects": self.n_reconnects,
            "trades": sum(f.n_trades for f in fs), "duplicates": sum(f.n_dups for f in fs),
            "gaps": sum(f.n_gaps for f in fs), "backfilled": sum(f.n_backfilled for f in fs),
            "unfilled": sum(f.n_unfilled for f in fs), "events": sum(f.n_events for f in fs),
            "signals": sum(sum(f.n_signals.values()) for f in fs), "suppressed": sum(f.n_suppressed for f in fs),
            "rejects": sum(f.n_rejects for f in fs),
        }
