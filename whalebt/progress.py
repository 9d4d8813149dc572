"""The one progress library of every command: tqdm, on stderr, only when stderr is a terminal.

``bar`` is a counted bar; ``status`` a line that says what is happening while one long call runs
(where rich's ``Console.status`` spinner was used before). tqdm is imported inside the functions,
so ``whalebt`` itself still needs only the standard library.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import IO, Any, Iterator

__all__ = ["bar", "status", "Status"]


def bar(
    total: float | None = None,
    *,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = None,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> Any:
    """A tqdm bar on stderr (``enabled=None``: only when stderr is a terminal); use it as tqdm."""
    from tqdm import tqdm

    out = file or sys.stderr
    on = out.isatty() if enabled is None else enabled
    return tqdm(total=total, desc=desc, unit=unit, file=out, disable=not on, leave=False, dynamic_ncols=True, **kwargs)


class Status:
    """What ``status`` yields: ``update(text)`` replaces the line's text."""

    def __init__(self, pbar: Any) -> None:
        self._bar = pbar

    def update(self, text: str) -> None:
        self._bar.set_description_str(text, refresh=True)


@contextlib.contextmanager
def status(
    text: str, *, enabled: bool | None = None, file: IO[str] | None = None, every_s: float = 0.5
) -> Iterator[Status]:
    """One line ``text (elapsed)`` on stderr, refreshed every ``every_s`` while the block runs."""
    pbar = bar(None, desc=text, enabled=enabled, file=file, bar_format="{desc} ({elapsed})")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            pbar.refresh()

    ticker = threading.Thread(target=tick, name="whalebt-status", daemon=True)
    if not pbar.disable:
        ticker.start()
    try:
        yield Status(pbar)
    finally:
        stop.set()
        if ticker.is_alive():
            ticker.join()
        pbar.close()
