"""Fetch files of an archive laid out under a local directory or a base URL.

Every archive source (Binance, Bybit, OKX) names files by a path relative to a root and
reads them through :func:`fetch` / :func:`fetch_many`, so they share one behaviour:

* a missing file raises :class:`NotFound` (HTTP 404/410, or no such local file), which
  callers turn into a gap, never into a crash;
* transient failures (connection errors, timeouts, HTTP 408/425/429/5xx, a body cut short)
  are retried with exponential back-off (longer if the server sends ``Retry-After``); a cut body is resumed with an HTTP ``Range``
  request when the server supports it, and restarted from zero when it does not;
* a body shorter than its ``Content-Length`` is never returned: the caller gets all the
  bytes or an exception (:class:`FetchError`), nothing in between;
* :func:`fetch_many` keeps at most ``max_workers`` requests in flight and yields results
  in the order asked, so memory stays bounded by ``max_workers`` files.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Generator, Iterable

from datasets._retry import backoff_s as _backoff
from datasets._retry import retry_after_s

__all__ = ["NotFound", "FetchError", "fetch", "fetch_many", "is_url", "location"]

USER_AGENT = "whalebt/0.1 (+archive ingest)"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20


class NotFound(Exception):
    """The archive has no file at this path (HTTP 404/410 or no such local file)."""

    def __init__(self, where: str):
        super().__init__(f"not found: {where}")
        self.where = where


class FetchError(WhalebtError, OSError):
    """A file exists (or may) but could not be read completely, after all retries."""


def is_url(root_or_base_url: str | os.PathLike[str]) -> bool:
    return str(root_or_base_url).startswith(("http://", "https://"))


def location(root_or_base_url: str | os.PathLike[str], relpath: str) -> str:
    """The URL or local path that ``relpath`` names under the root (for messages)."""
    root = os.fspath(root_or_base_url)
    if is_url(root):
        return root.rstrip("/") + "/" + urllib.parse.quote(relpath.lstrip("/"))
    if root.startswith("file://"):
        root = root[len("file://") :]
    return str(Path(root) / relpath.lstrip("/"))


def _fetch_local(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(path) from None
    except IsADirectoryError:
        raise FetchError(f"{path} is a directory, expected a file") from None


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _fetch_url(
    url: str, retries: int, backoff_s: float, timeout_s: float, on_progress: Callable[[int, int | None], None] | None
) -> bytes:
    buf = bytearray()
    total: int | None = None
    failures = 0
    while True:
        wait_s = 0.0
        headers = {"User-Agent": USER_AGENT}
        if buf:
            headers["Range"] = f"bytes={len(buf)}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as resp:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if buf and resp.status == 206 and m and int(m.group(1)) == len(buf):
                    total = int(m.group(3)) if m.group(3) != "*" else None
                else:  # first request, or the server ignored the range: start over
                    buf.clear()
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                while chunk := resp.read(_CHUNK):
                    buf += chunk
                    if on_progress:
                        on_progress(len(buf), total)
            if total is None or len(buf) == total:
                return bytes(buf)
            last: BaseException = http.client.IncompleteRead(b"", total - len(buf))
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(url) from None
            if exc.code == 416:  # our range no longer fits the object: it changed, restart
                buf.clear()
            elif exc.code not in _RETRY_STATUS:
                raise FetchError(
                    f"{url}: HTTP {exc.code} {exc.reason}; expected 200 (or 404 for a missing "
                    "file). Check the base URL and that the server serves the archive layout"
                ) from None
            last = exc
            wait_s = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None, http_date=False) or 0.0
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout) as exc:
            last = exc
        failures += 1
        if failures > retries:
            got = f" ({len(buf)} of {total} bytes received)" if total else ""
            tries = f"{failures} attempt{'s' if failures != 1 else ''}"
            raise FetchError(
                f"could not fetch {url} after {tries}{got}: {last}. "
                "Check the URL and the network and run again; nothing partial was kept"
            ) from None
        time.sleep(max(_backoff(failures - 1, backoff_s), min(wait_s, 60.0)))


def fetch(
    root_or_base_url: str | os.PathLike[str],
    relpath: str,
    *,
    retries: int = 4,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> bytes:
    """Return the whole content of ``relpath`` under a local directory or a base URL.

    Args:
        root_or_base_url: a directory (or ``file://`` path) or an ``http(s)://`` base URL.
        relpath: the file's path below the root, with ``/`` separators.
        retries: extra attempts after a transient failure; back-off doubles from ``backoff_s``.
        timeout_s: socket timeout per request.
        on_progress: called with ``(bytes_so_far, total_or_None)`` while downloading.

    Raises:
        NotFound: there is no such file.
        FetchError: the file could not be read completely.
    """
    where = location(root_or_base_url, relpath)
    if is_url(root_or_base_url):
        return _fetch_url(where, retries, backoff_s, timeout_s, on_progress)
    return _fetch_local(where)


def fetch_many(
    root_or_base_url: str | os.PathLike[str],
    relpaths: Iterable[str],
    *,
    max_workers: int = 4,
    **kwargs,
) -> Generator[tuple[str, bytes | NotFound], None, None]:
    """Fetch several files with at most ``max_workers`` in flight; yield ``(relpath, bytes)`` in order.

    A missing file yields its :class:`NotFound` instead of bytes; a :class:`FetchError` is raised
    when its turn comes. ``kwargs`` go to :func:`fetch`.
    """

    def one(rp: str) -> bytes | NotFound:
        try:
            return fetch(root_or_base_url, rp, **kwargs)
        except NotFound as exc:
            return exc

    it = iter(relpaths)
    pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="fetch")
    pending: deque[tuple[str, Future]] = deque()
    try:
        for rp in it:
            pending.append((rp, pool.submit(one, rp)))
            if len(pending) >= max_workers:
                break
        while pending:
            rp, fut = pending.popleft()
            result = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(one, nxt)))
            yield rp, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
