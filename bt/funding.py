"""Funding charged or credited to long positions of a perpetual future (pure NumPy).

Boundary convention: a position held from ``entry`` to ``exit`` settles every funding time ``t``
with ``entry < t <= exit``. A position opened exactly at a funding time does not take part in
that settlement (exchanges settle the positions open at the funding time, and an entry at ``t``
is filled at or after it); one closed exactly at ``t`` does (it was open when ``t`` arrived).

Sign and size: a long pays ``rate * notional`` at each funding time when the rate is positive and
receives it when negative, so as a fraction of the entry notional the funding return is
``-sum(rate_t)``. Exchanges charge on the mark-price notional at ``t``; measuring it on the entry
notional ignores the price move up to ``t``, an error of ``rate * move`` (1e-4 * 1e-2 = 1e-6 for a
1 % move), far below fees.
"""

from __future__ import annotations

from whalebt.errors import UserError
import numpy as np

__all__ = ["funding_return", "funding_count", "funding_covered"]


def _prepare(entry_ts_ms, exit_ts_ms, funding_ts_ms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entry = np.asarray(entry_ts_ms, dtype=np.int64)
    exit_ = np.asarray(exit_ts_ms, dtype=np.int64)
    ts = np.asarray(funding_ts_ms, dtype=np.int64)
    if entry.shape != exit_.shape:
        raise ValueError(f"entry and exit times must have the same shape; got {entry.shape} and {exit_.shape}")
    if ts.ndim != 1:
        raise ValueError(f"funding times must be one-dimensional; got shape {ts.shape}")
    if len(ts) > 1 and (np.diff(ts) <= 0).any():
        raise ValueError(
            "funding times must be strictly increasing; sort and deduplicate them "
            "(datasets.sources.funding.read_funding returns them so)"
        )
    if (exit_ < entry).any():
        i = int(np.argmax(exit_ < entry))
        raise ValueError(
            f"a position exits before it enters: entry {int(entry.flat[i])} > exit {int(exit_.flat[i])} ms"
        )
    return entry, exit_, ts


def funding_return(entry_ts_ms, exit_ts_ms, funding_ts_ms, funding_rate) -> np.ndarray:
    """Funding return of long positions, as a fraction of entry notional (negative = paid).

    Same as ``[-rate[(ts > a) & (ts <= b)].sum() for a, b in zip(entry, exit)]``, in
    O((n + m) log m) with ``searchsorted`` over a cumulative sum of the rates.

    Args:
        entry_ts_ms: entry times (ms UTC), any shape.
        exit_ts_ms: exit times, same shape, each at or after its entry.
        funding_ts_ms: funding times, strictly increasing.
        funding_rate: the rate at each funding time (fraction; 0.0001 = 1 bp).

    Returns:
        float64 array shaped like ``entry_ts_ms``: ``-sum(rate_t for entry < t <= exit)``.
        Multiply by a position's notional (USD) for the payment in USD.
    """
    entry, exit_, ts = _prepare(entry_ts_ms, exit_ts_ms, funding_ts_ms)
    rate = np.asarray(funding_rate, dtype=np.float64)
    if rate.shape != ts.shape:
        raise ValueError(f"funding times and rates must have the same length; got {ts.shape} and {rate.shape}")
    if not np.isfinite(rate).all():
        raise UserError("funding rates must be finite; drop or fill the missing ones")
    csum = np.concatenate(([0.0], np.cumsum(rate)))
    lo = np.searchsorted(ts, entry, side="right")  # first funding time after entry
    hi = np.searchsorted(ts, exit_, side="right")  # first funding time after exit
    return -(csum[hi] - csum[lo])


def funding_count(entry_ts_ms, exit_ts_ms, funding_ts_ms) -> np.ndarray:
    """Number of funding times each position settles (``entry < t <= exit``), int64."""
    entry, exit_, ts = _prepare(entry_ts_ms, exit_ts_ms, funding_ts_ms)
    return (np.searchsorted(ts, exit_, side="right") - np.searchsorted(ts, entry, side="right")).astype(np.int64)


def funding_covered(entry_ts_ms, exit_ts_ms, funding_ts_ms, interval_ms: int = 8 * 3_600_000) -> np.ndarray:
    """Whether the funding history spans each position, so that no settlement can be missing.

    With settlements every ``interval_ms``, the one before the first stored time is at
    ``ts[0] - interval_ms`` and the one after the last at ``ts[-1] + interval_ms``; a position is
    covered when neither falls in ``(entry, exit]``: ``entry >= ts[0] - interval_ms`` and
    ``exit < ts[-1] + interval_ms``. Pass the symbol's interval (8 h by default; some symbols
    settle every 4 h or 1 h, and a longer interval than the real one lets gaps through).
    Uncovered positions would silently get no funding for the uncovered part; callers warn.
    """
    entry, exit_, ts = _prepare(entry_ts_ms, exit_ts_ms, funding_ts_ms)
    if len(ts) == 0:
        return np.zeros(entry.shape, dtype=bool)
    return (entry >= ts[0] - interval_ms) & (exit_ < ts[-1] + interval_ms)
