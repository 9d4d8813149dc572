"""The live signal journal: JSONL lines (docs/spec.md §5), fsync'd before announced, readable on restart.

A restart reads the journal back to learn which whale events it already emitted under the
same config, so that re-processing history (warm-up, a replay) does not emit them twice.
A crash can leave a half-written last line; it is cut off (with a warning) before
appending, so every line of the file stays a whole record.
"""

from __future__ import annotations

from whalebt.errors import UserError
import asyncio
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signals.journal import journal_line

__all__ = [
    "JournalWriter",
    "JournalState",
    "read_journal",
    "check_journal_path",
    "StdoutEcho",
    "AppendBlobSink",
    "HOLE",
]

log = logging.getLogger("whalebt.live")


@dataclass
class JournalState:
    """What a journal already holds for one config on one exchange."""

    ids: dict[str, set[int]] = field(default_factory=dict)  # symbol -> trade ids
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> max (ts_ms, trade_id)
    records: int = 0
    other_configs: int = 0
    holes: list[dict[str, Any]] = field(default_factory=list)  # hole records of this config (see HOLE)
    implausible: int = 0  # records ignored on resume: their time is beyond the wall clock

    def seen(self, symbol: str, ts_ms: int, trade_id: int) -> bool:
        """True if this event was journaled before (by id, or at or before the last one)."""
        if trade_id in self.ids.get(symbol, ()):
            return True
        last = self.last.get(symbol)
        return last is not None and (ts_ms, trade_id) <= last


def _repair_tail(path: Path) -> None:
    """Cut a half-written last line (no trailing newline) left by a crash."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        # find the last newline
        pos = size
        chunk = 4096
        keep = 0
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        log.warning(
            "journal %s: cutting a half-written last line (%d bytes) left by an interrupted write", path, size - keep
        )
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


#: value of the ``record`` key of a hole record (docs/spec.md §5.4); signal lines have no ``record`` key
HOLE = "hole"


def check_journal_path(path: str | os.PathLike[str]) -> None:
    """A UserError if ``path`` cannot be a journal file (a directory, a parent that is a file)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"--journal {p} is a directory; expected a file, e.g. {p / 'journal.jsonl'}")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--journal {p}: {parent} is a file, not a directory; choose another path")
        if parent.exists():
            break


def read_journal(
    path: str | os.PathLike[str], *, exchange: str, config_id: str, max_ts_ms: int | None = None
) -> JournalState:
    """Events of `config_id` on `exchange` already in the journal at `path` (empty if no file).

    A record timed after ``max_ts_ms`` (the wall clock plus the allowed skew) cannot be real: it is
    logged and ignored, so that it does not mark every later event as already emitted.
    """
    p = Path(path)
    check_journal_path(p)
    st = JournalState()
    if not p.exists():
        return st
    try:
        _repair_tail(p)
        fh = open(p, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--journal {p} cannot be read: {exc.strerror or exc}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if type(rec) is dict and rec.get("record") == HOLE:
                    if rec.get("config_id") == config_id and rec.get("exchange") == exchange:
                        st.holes.append(rec)
                    continue
                sym, tid, ts = str(rec["symbol"]), int(rec["trade_id"]), int(rec["ts_ms"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError):
                raise UserError(
                    f"journal {p} line {n} is not a journal record (expected the docs/spec.md §5 keys); "
                    f"got {line[:120]!r}. Point --journal at a whalebt journal or a new file"
                ) from None
            if rec.get("config_id") != config_id or rec.get("exchange") != exchange:
                st.other_configs += 1
                continue
            if max_ts_ms is not None and ts > max_ts_ms:
                st.implausible += 1
                log.warning("journal %s line %d: ts_ms %d is after the wall clock; ignored when resuming", p, n, ts)
                continue
            st.ids.setdefault(sym, set()).add(tid)
            key = (ts, tid)
            if key > st.last.get(sym, (-1, -1)):
                st.last[sym] = key
            st.records += 1
    return st


_sync = getattr(os, "fdatasync", os.fsync)  # the data is what must survive; metadata can lag


class JournalWriter:
    """Appends records as JSON lines, fsync'd before they are announced (group commit).

    `write` appends the line and hands it to the OS; the fdatasync and the echo (stdout, the
    Azure append blob) follow in `commit`, which a write inside an event loop schedules to run
    once the loop's current callbacks are done. Every record a burst of frames decided (one
    socket read can carry dozens) is then synced by one fdatasync instead of one each, and no
    record is echoed, hence acted on, before it is on disk. Outside an event loop each write
    commits at once. A crash before the commit loses records nobody was told about; the
    restart decides those events again.

    Args:
        path: the journal file (None: no file, lines are only echoed).
        echo: called with each line once it is durable.
        on_sync: called with the seconds each fdatasync took (metrics).
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, echo=None, on_sync=None):
        self.path = Path(path) if path else None
        self._fh = None
        self._echo = echo
        self._on_sync = on_sync
        self._pending: list[str] = []
        self._scheduled = False
        if self.path is not None:
            check_journal_path(self.path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.exists():
                    _repair_tail(self.path)
                self._fh = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise UserError(f"--journal {self.path} cannot be written: {exc.strerror or exc}") from None

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record: a signal line (§5.1) or a hole record (``{"record": "hole", ...}``)."""
        line = journal_line(rec).removesuffix("\n")
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
        self._pending.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        self._scheduled = True
        loop.call_soon(self.commit)

    def commit(self) -> None:
        """fdatasync what was written, then echo it."""
        self._scheduled = False
        if not self._pending:
            return
        if self._fh is not None:
            t0 = time.perf_counter()
            _sync(self._fh.fileno())
            if self._on_sync is not None:
                self._on_sync(time.perf_counter() - t0)
        lines, self._pending = self._pending, []
        if self._echo is not None:
            for line in lines:
                self._echo(line)

    def close(self) -> None:
        self.commit()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class StdoutEcho:
    """Echoes journal lines to a stream from a thread, so a slow reader never blocks the loop.

    The journal file is the durable record; if the stream's reader falls `max_lines` behind,
    further lines are dropped from the echo (counted, and logged at close).
    """

    def __init__(self, stream, max_lines: int = 100_000):
        self._stream = stream
        self._q: queue.Queue[str | None] = queue.Queue(max_lines)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="journal-echo", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        try:
            self._q.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            line = self._q.get()
            if line is None:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                return

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if self.dropped:
            log.warning(
                "stdout could not keep up: %d journal lines were not echoed (the journal file has them)", self.dropped
            )


class AppendBlobSink:
    """Copies journal lines to an Azure append blob (``az://container/path/journal.jsonl``).

    The local journal file stays the durable record; the blob is a copy for people and jobs that
    read from storage. Lines are appended from a thread in batches (one ``Append Block`` call per
    batch, at most 4 MiB), so the event loop never waits on the network. A failed append is
    retried with back-off; lines still failing are counted and logged, never silently lost.
    """

    MAX_BLOCK = 4 * 1024 * 1024

    def __init__(self, uri: str, *, max_lines: int = 100_000, retries: int = 5):
        from datasets.lake._azure import AzureStore, parse_az_uri

        _, container, path = parse_az_uri(uri)
        if not path or path.endswith("/"):
            raise UserError(f"--journal-blob needs a blob path like az://container/live/journal.jsonl; got {uri!r}")
        folder, _, name = path.rpartition("/")
        self.uri = uri
        self._blob = AzureStore(container, folder).append_client(name)
        self._retries = retries
        self._q: queue.Queue[str | None] = queue.Queue(max_lines)
        self.appended = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="journal-blob", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        try:
            self._q.put_nowait(line)
        except queue.Full:
            self.failed += 1

    def _append(self, lines: list[str]) -> None:
        from datasets._retry import backoff_s, retry

        data = "".join(line + "\n" for line in lines).encode()
        try:  # any storage error: retried, then counted
            retry(
                lambda: self._blob.append_block(data), retries=self._retries, delay=lambda i, _: backoff_s(i, 0.2, 5.0)
            )
        except Exception as exc:  # noqa: BLE001
            self.failed += len(lines)
            log.error("journal copy to %s failed for %d line(s): %s", self.uri, len(lines), type(exc).__name__)
            return
        self.appended += len(lines)

    def _run(self) -> None:
        done = False
        while not done:
            first = self._q.get()
            if first is None:
                return
            batch, size = [first], len(first) + 1
            while size < self.MAX_BLOCK // 2:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
                size += len(nxt) + 1
            self._append(batch)

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if self.failed:
            log.warning("journal copy to %s: %d line(s) not copied (the journal file has them)", self.uri, self.failed)
