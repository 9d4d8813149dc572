"""Entry and exit of a long signal (docs/spec.md §3), as a numba kernel shared by backtest and live.

* Entry: the first trade in a later millisecond than trigger time + latency
  (``ts > trigger_ts + entry_latency_ms``). At latency 0 that skips the fills stamped in the
  trigger's own millisecond: they belong to the whale's own order and nobody reacting to the
  whale can get them.
* Exit: the last trade at or before entry time + horizon, or earlier at the first trade whose
  price reaches take-profit / stop-loss (levels relative to the entry price incl. slippage).
* The outcome window of a signal is ``[trigger time, entry time + horizon]``. Its exit is the true
  last trade at or before ``entry + horizon`` only if the lake saw every trade of that window, so
  the whole window must lie inside one *covered interval* (time the lake's sources recorded).
  Covered intervals are half-open ``[from_ms, to_ms)``: the window is inside interval ``k`` when
  ``from_k <= trigger_ts`` and ``entry_ts + horizon < to_k``. A window that runs past the last
  covered time is dropped as ``DROPPED_PAST_DATA`` ("end of data"), one that runs into a hole
  inside the span (a missing day, a recording's gap) as ``DROPPED_GAP``; neither is truncated.
  Without coverage the span counts as covered up to and including its last trade.
  A signal with no trade to enter on is dropped too (``DROPPED_NO_ENTRY``).
"""

from __future__ import annotations

import numpy as np
from signals.jit import njit

__all__ = [
    "EXIT_HORIZON",
    "EXIT_TAKE_PROFIT",
    "EXIT_STOP_LOSS",
    "DROPPED_NO_ENTRY",
    "DROPPED_PAST_DATA",
    "DROPPED_GAP",
    "EXIT_REASONS",
    "DROP_KINDS",
    "entry_exit_nb",
    "entry_exit",
    "coverage_arrays",
    "OUTCOME_VERSION",
]

#: Bumped when the entry/exit rules change, so gold forward returns cached under older rules
#: are rebuilt (2: entry in a later millisecond than trigger + latency; 3: windows must lie
#: inside one covered interval, else dropped as end of data or gap).
OUTCOME_VERSION = 3

EXIT_HORIZON = 0
EXIT_TAKE_PROFIT = 1
EXIT_STOP_LOSS = 2
DROPPED_NO_ENTRY = -1
DROPPED_PAST_DATA = -2
DROPPED_GAP = -3
EXIT_REASONS = {
    EXIT_HORIZON: "horizon",
    EXIT_TAKE_PROFIT: "take_profit",
    EXIT_STOP_LOSS: "stop_loss",
    DROPPED_NO_ENTRY: "dropped_no_entry",
    DROPPED_PAST_DATA: "dropped_past_data",
    DROPPED_GAP: "dropped_gap",
}
#: Short names of the drop reasons, as counted in ``metrics.json`` (``dropped``).
DROP_KINDS = {DROPPED_PAST_DATA: "end_of_data", DROPPED_GAP: "gap", DROPPED_NO_ENTRY: "no_entry"}


@njit(cache=True)
def _search_left(ts, value, lo):
    """First index >= lo with ts[i] >= value (len(ts) if none); ts sorted."""
    hi = ts.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _search_right(ts, value, lo):
    """First index >= lo with ts[i] > value; ts sorted."""
    hi = ts.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def entry_exit_nb(
    ts, price, trigger_idx, trigger_ts, latency_ms, horizons_ms, slippage, take_profit, stop_loss, cov_from, cov_to
):
    """Entry/exit indices of each trigger for each horizon (one scan per trigger for TP/SL).

    Same as, per trigger and horizon: ``e = max(i+1, searchsorted(ts, trigger_ts+lat, 'right'))``;
    ``x = searchsorted(ts, ts[e]+h, 'right') - 1`` unless a TP/SL trade comes first.
    ``trigger_idx`` is the last trade of ``ts`` at or before the trigger (-1 if none): the trigger
    itself on the same venue, the venue's last trade before it in a cross-venue study.
    ``take_profit``/``stop_loss`` <= 0 mean off. ``cov_from``/``cov_to``: the covered intervals
    ``[from, to)`` in ms, sorted, disjoint and not touching (see the module doc).
    Returns (entry_idx[n], exit_idx[n, H], reason[n, H]).
    """
    n = trigger_idx.shape[0]
    nh = horizons_ms.shape[0]
    nc = cov_from.shape[0]
    entry_idx = np.full(n, -1, np.int64)
    exit_idx = np.full((n, nh), -1, np.int64)
    reason = np.full((n, nh), DROPPED_NO_ENTRY, np.int8)
    max_h = 0
    for k in range(nh):
        if horizons_ms[k] > max_h:
            max_h = horizons_ms[k]
    for j in range(n):
        i = trigger_idx[j]
        e = _search_right(ts, trigger_ts[j] + latency_ms, i + 1)
        if e >= ts.shape[0]:
            continue
        entry_idx[j] = e
        # The covered interval holding the trigger (-1: the trigger itself is not covered).
        c = _search_right(cov_from, trigger_ts[j], 0) - 1
        if c >= 0 and trigger_ts[j] >= cov_to[c]:
            c = -1 if c < nc - 1 else -2  # -2: after the last covered time
        entry_px = price[e] * (1.0 + slippage)
        # First TP/SL hit within the longest horizon, scanning trades after the entry.
        hit = -1
        hit_reason = EXIT_HORIZON
        if take_profit > 0.0 or stop_loss > 0.0:
            tp_px = entry_px * (1.0 + take_profit)
            sl_px = entry_px * (1.0 - stop_loss)
            end_ts = ts[e] + max_h
            m = e + 1
            while m < ts.shape[0] and ts[m] <= end_ts:
                if take_profit > 0.0 and price[m] >= tp_px:
                    hit = m
                    hit_reason = EXIT_TAKE_PROFIT
                    break
                if stop_loss > 0.0 and price[m] <= sl_px:
                    hit = m
                    hit_reason = EXIT_STOP_LOSS
                    break
                m += 1
        for k in range(nh):
            end = ts[e] + horizons_ms[k]
            if c < 0 or end >= cov_to[c]:
                # Runs past the last covered time: end of data; into a hole inside the span: gap.
                reason[j, k] = DROPPED_PAST_DATA if c == -2 or c == nc - 1 else DROPPED_GAP
                continue
            x = _search_right(ts, end, e) - 1
            if hit >= 0 and hit <= x:
                exit_idx[j, k] = hit
                reason[j, k] = hit_reason
            else:
                exit_idx[j, k] = x
                reason[j, k] = EXIT_HORIZON
    return entry_idx, exit_idx, reason


def entry_exit(
    ts_ms: np.ndarray,
    price: np.ndarray,
    trigger_idx: np.ndarray,
    *,
    latency_ms: int,
    horizons_ms: list[int] | np.ndarray,
    slippage: float = 0.0,
    take_profit: float | None = None,
    stop_loss: float | None = None,
    trigger_ts_ms: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy-facing wrapper of :func:`entry_exit_nb` (see the module docstring).

    ``trigger_ts_ms`` defaults to ``ts_ms[trigger_idx]`` (triggers are trades of this tape).
    ``coverage``: (k, 2) int64 covered intervals ``[from_ms, to_ms)`` of the tape, sorted and
    merged; default: everything up to and including the last trade.
    """
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    cov_from, cov_to = coverage_arrays(coverage, ts_ms)
    trigger_idx = np.ascontiguousarray(trigger_idx, dtype=np.int64)
    if trigger_ts_ms is None:
        trigger_ts_ms = ts_ms[trigger_idx] if trigger_idx.size else np.empty(0, np.int64)
    return entry_exit_nb(
        ts_ms,
        np.ascontiguousarray(price, dtype=np.float64),
        trigger_idx,
        np.ascontiguousarray(trigger_ts_ms, dtype=np.int64),
        np.int64(latency_ms),
        np.asarray(horizons_ms, dtype=np.int64),
        float(slippage),
        float(take_profit or 0.0),
        float(stop_loss or 0.0),
        cov_from,
        cov_to,
    )


def coverage_arrays(coverage, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(from, to) arrays of ``coverage``, sorted with overlapping or touching intervals merged.

    ``None`` means "covered up to and including the last trade" (the rule before coverage was
    recorded). An empty coverage means nothing is covered.
    """
    if coverage is None:
        last = int(ts_ms[-1]) + 1 if ts_ms.shape[0] else 0
        return np.array([np.iinfo(np.int64).min], np.int64), np.array([last], np.int64)
    cov = np.asarray(coverage, dtype=np.int64).reshape(-1, 2)
    cov = cov[cov[:, 1] > cov[:, 0]]
    if cov.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cov = cov[np.argsort(cov[:, 0], kind="stable")]
    lo, hi = [int(cov[0, 0])], [int(cov[0, 1])]
    for a, b in cov[1:].tolist():
        if a <= hi[-1]:
            hi[-1] = max(hi[-1], b)
        else:
            lo.append(a)
            hi.append(b)
    return np.asarray(lo, np.int64), np.asarray(hi, np.int64)
