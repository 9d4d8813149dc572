"""The one retry helper: back-off delays, ``Retry-After``, and a sync and an async retry loop.

Imports nothing of ours, so that any module (lake backends, sources, the live runner, the
sweep) can use it. Each caller keeps its own counts and delays: ``delay(attempt, exc)`` says how
long to wait before retry ``attempt`` (0 for the first retry) after ``exc``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from typing import Awaitable, Callable, TypeVar

__all__ = ["backoff_s", "retry_after_s", "retry", "retry_async"]

T = TypeVar("T")
Delay = Callable[[int, BaseException], float]


def backoff_s(attempt: int, base_s: float, cap_s: float = float("inf"), rng: random.Random | None = None) -> float:
    """``min(cap, base * 2**attempt)``; with ``rng``, full jitter: uniform in ``[0, that]``."""
    top = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return rng.uniform(0.0, top) if rng is not None else top


def retry_after_s(value: str | None, *, http_date: bool = True, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or (``http_date``) an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    s = str(value).strip()
    if s.replace(".", "", 1).isdigit():
        return float(s)
    if not http_date:
        return None
    try:
        when = email.utils.parsedate_to_datetime(s)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry(
    call: Callable[[], T],
    *,
    retries: int,
    delay: Delay,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried up to ``retries`` times on ``retry_on``; the last failure is raised as is."""
    attempt = 0
    while True:
        try:
            return call()
        except retry_on as exc:
            if attempt >= retries:
                raise
            wait = delay(attempt, exc)
            attempt += 1
            if wait > 0:
                sleep(wait)


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    retries: int,
    delay: Delay,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """The async :func:`retry`: awaits ``call()`` and sleeps with ``asyncio.sleep``."""
    attempt = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            if attempt >= retries:
                raise
            wait = delay(attempt, exc)
            attempt += 1
            if wait > 0:
                await asyncio.sleep(wait)
