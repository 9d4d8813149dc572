"""Lifecycle: start (journal, sinks, warm-up, heap freeze), SIGTERM/SIGINT, drain and exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import TYPE_CHECKING, Callable

from live.journal import AppendBlobSink, JournalWriter, StdoutEcho, read_journal
from live.paper import PaperBook
from live.runner.options import _fan_out
from signals import new_state, update

if TYPE_CHECKING:
    from live.runner.core import Runner

log = logging.getLogger("whalebt.live")


async def run(self: Runner) -> int:
    """Warm up, stream until stopped, drain. Returns the process exit code."""
    self._install_signal_handlers()
    if self.opts.http_port is not None:  # first: a busy port or a missing token fails before anything is opened
        from live.http import start_http

        self._http_runner, self.http_port = await start_http(
            self, self.opts.http_host, self.opts.http_port, token=self.opts.http_token
        )
        log.info("http on %s:%d (/health, /metrics, /signals)", self.opts.http_host, self.http_port)
    try:
        self._open_journal()
    except BaseException:
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        raise
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
    if self.n_connections and not self.n_trade_frames:
        log.warning(
            "the server sent no trade for %s in %d connection(s) (%d other frame(s)); check --symbols and "
            "--stream (a `live replay` serves only its recording's streams)",
            self.adapter.subscription_names(self.symbols),
            self.n_connections,
            self.n_frames,
        )
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


def _open_journal(self: Runner) -> None:
    """Read back the journal, reach the blob copy, open the journal and paper files."""
    if self.opts.journal:
        self.journal_state = read_journal(
            self.opts.journal,
            exchange=self.adapter.exchange,
            config_id=self.decider.config_id,
            max_ts_ms=self.opts.clock_ms() + self._max_future_ms,
        )
        if self.journal_state.records:
            log.info(
                "journal %s holds %d events of config %s; they will not be emitted again",
                self.opts.journal,
                self.journal_state.records,
                self.decider.config_id,
            )
    if self.opts.journal_blob:
        self._blob_sink = open_blob_sink(self.opts.journal_blob, self.opts.journal_blob_timeout_s)
    self._echo = StdoutEcho(self._stdout) if self.opts.echo else None
    sinks: list[Callable[[str], None]] = [s for s in (self._echo, self._blob_sink) if s is not None]
    self.journal = JournalWriter(
        self.opts.journal, echo=_fan_out(sinks) if sinks else None, on_sync=self.metrics.journal_fsync.observe
    )
    if self.opts.paper and self.decider.paper_rules is not None:
        self.paper = PaperBook(self.decider.paper_rules, self.adapter.exchange, self.decider.config_id, self.opts.paper)


def open_blob_sink(uri: str, timeout_s: float) -> AppendBlobSink:
    """The `--journal-blob` copy, reached within ``timeout_s``; one-line UserErrors otherwise.

    The storage SDK retries a dead endpoint for well over a minute; the attempt runs in a
    daemon thread so that an unreachable account fails the start after ``timeout_s``.
    """
    import threading

    from whalebt.errors import UserError, WhalebtError

    box: dict[str, object] = {}

    def attempt() -> None:
        try:
            box["sink"] = AppendBlobSink(uri)
        except BaseException as exc:  # noqa: BLE001  reported below, in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=attempt, name="journal-blob-open", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise UserError(
            f"--journal-blob {uri}: the storage account did not answer within {timeout_s:g} s "
            "(--journal-blob-timeout-s); check the account name, the network, or drop --journal-blob"
        )
    exc = box.get("error")
    if isinstance(exc, WhalebtError):
        raise UserError(f"--journal-blob {uri}: {str(exc).splitlines()[0][:300]}") from None
    if exc is not None:
        from datasets.lake._azure import _safe_error

        assert isinstance(exc, BaseException)
        status = getattr(exc, "status_code", None)
        hint = (
            "; the credentials were rejected: check AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_KEY"
            if status in (401, 403)
            else ""
        )
        raise UserError(f"--journal-blob {uri}: {_safe_error(exc)}{hint}") from None
    sink = box["sink"]
    assert isinstance(sink, AppendBlobSink)
    return sink


def _warm_jit(self: Runner) -> None:
    """Compile (or load from cache) the kernel and the model before the first live trade."""
    update(new_state(self.decider.params), 0, 1.0, 1.0, 1)
    self.decider.decide(self._rehearsal_features)


def _freeze_heap() -> None:
    """Keep the start-up heap out of the garbage collector's way.

    Imports (numba, pandas, LightGBM, MLflow with a registry model) leave hundreds of
    thousands of long-lived objects that every full collection would traverse again, for
    milliseconds, in the middle of some frame. Frozen, they are never scanned; the frame path
    itself frees what it allocates by reference counting.
    """
    gc.collect()
    gc.freeze()


def stop(self: Runner) -> None:
    """Ask the runner to drain and exit (what SIGTERM does): frames from now on are not read."""
    if not self._stop.is_set():
        log.info("stopping: draining and flushing the journal")
    self._stop.set()
    self._stopping = True


def _install_signal_handlers(self: Runner) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, self.stop)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass


def _drain(self: Runner) -> None:
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


async def _idle_watchdog(self: Runner) -> None:
    idle_s = self.opts.idle_exit_s
    assert idle_s is not None  # started only with --idle-exit-s
    while not self._stop.is_set():
        await asyncio.sleep(min(0.2, idle_s))
        ref = self.last_frame_ns or self.started_ns
        if self.ready and time.perf_counter_ns() - ref > idle_s * 1e9:
            log.info("no frame for %.1f s (--idle-exit-s): stopping", self.opts.idle_exit_s)
            self.stop()
