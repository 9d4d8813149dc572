"""Scratch directories that name their owner, so a killed process's leftovers can be removed.

A directory made by :func:`owned_tempdir` is called ``<prefix><pid>-<random>``. ``kill -9`` runs no
clean-up, so the next :func:`owned_tempdir` (or :func:`clean_stale`) with the same prefix removes
every such directory whose pid is no longer alive. :func:`sigterm_exits` turns SIGTERM into
``SystemExit(143)`` in the main thread, so ``finally`` blocks and context managers run first.

A pid reused by an unrelated process keeps a stale directory until that process ends (safe, not
tidy); pids from another pid namespace (a container sharing the folder) count as alive when a
process of that number runs here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

__all__ = ["pid_alive", "owned_name", "owner_pid", "clean_stale", "owned_tempdir", "sigterm_exits"]

INGEST_PREFIX = "whalebt-ingest-"
_OWNED = re.compile(r"(?P<pid>\d+)-[0-9a-f]{8}$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_name(prefix: str) -> str:
    """``<prefix><our pid>-<8 hex>``."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"


def owner_pid(name: str, prefix: str) -> int | None:
    """The pid recorded in a name made by :func:`owned_name`, or None if it is not one."""
    if not name.startswith(prefix):
        return None
    m = _OWNED.fullmatch(name[len(prefix) :])
    return int(m["pid"]) if m else None


def clean_stale(parent: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Remove the directories ``<parent>/<prefix><pid>-<random>`` whose pid is dead; returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return removed
    for e in entries:
        pid = owner_pid(e.name, prefix)
        if pid is None or pid == os.getpid() or pid_alive(pid) or not e.is_dir(follow_symlinks=False):
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        removed.append(Path(e.path))
    return removed


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def owned_tempdir(prefix: str = INGEST_PREFIX, dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A scratch directory under ``dir`` (default ``$TMPDIR``), removed on exit and on SIGTERM.

    Stale directories of the same prefix (dead owner) are removed first.
    """
    parent = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    clean_stale(parent, prefix)
    path = parent / owned_name(prefix)
    with sigterm_exits():
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
