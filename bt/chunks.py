"""A span's gold events built in parallel day chunks (``bt run --jobs N`` on one symbol).

The tape's days are cut into contiguous chunks (:func:`plan_chunks`) run on
:func:`bt.parallel.run_tasks`. Chunk 0 starts from a fresh kernel state, as the whole span does.
Every later chunk warms a fresh state up on the trades before it: the previous chunk's last
:data:`VERIFY_TRADES` trades and :func:`warmup_ms` (the longest feature window, the flow rule's
lookback and window, the cooldown, a margin) or :data:`WARMUP_TRADES` trades before them, whichever is longer. The warm-up is kept only if it reproduced the
previous chunk at the seam: the same event codes and feature rows, bit for bit, on those last
trades, and the same flow history, cooldown clock, window contents and last price in the state
(:func:`seam_equal`). Otherwise the chunk is run again here from the previous chunk's end state.
So the events equal one process's (``tests/bt/test_chunks.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.build import KernelEvents, gold_days, kernel_batch
from datasets.tape import DayTape
from signals import N_FEATURES, KernelState, WhaleParams
from signals import nb

__all__ = [
    "VERIFY_TRADES",
    "MIN_CHUNK_DAYS",
    "WARMUP_MARGIN_MS",
    "WARMUP_TRADES",
    "ChunkRun",
    "ChunkStats",
    "warmup_ms",
    "plan_chunks",
    "chunk_events",
    "chunked_gold_events",
    "seam_equal",
]

#: Trades at the end of a chunk on which the next chunk's warm-up must reproduce it.
VERIFY_TRADES = 2000
#: A span is cut into chunks of at least this many days (fewer: one process).
MIN_CHUNK_DAYS = 4


#: Warm-up beyond what the rules look back: window sums are differences of running totals, and
#: a fresh state's totals give the same doubles once its history is well beyond the window.
WARMUP_MARGIN_MS = 15 * 60_000
#: ... and at least this many trades (cheap: the kernel runs millions a second).
WARMUP_TRADES = 20_000


def warmup_ms(params: WhaleParams) -> int:
    """History a fresh state needs to reach a running one's: the longest feature window (60 s, the
    30 s return's reference before it), the flow rule's lookback + window, the cooldown; plus
    :data:`WARMUP_MARGIN_MS`."""
    need = max(nb.WIN_MS) + 1000
    if params.window_s is not None:
        need = max(need, (int(params.lookback_s) + int(params.window_s) + 2) * 1000)
    need = max(need, int(np.ceil(params.cooldown_s * 1000)))
    return int(need) + WARMUP_MARGIN_MS


def plan_chunks(tape: DayTape, jobs: int) -> list[range]:
    """Contiguous day ranges of about equal trades, at most ``jobs`` of at least MIN_CHUNK_DAYS days."""
    n = min(int(jobs), tape.n_days // MIN_CHUNK_DAYS)
    if n < 2:
        return [range(tape.n_days)]
    cum = np.cumsum(tape.rows)
    cuts = [0]
    for i in range(1, n):
        k = int(np.searchsorted(cum, cum[-1] * i / n, side="left")) + 1
        k = min(max(k, cuts[-1] + MIN_CHUNK_DAYS), tape.n_days - MIN_CHUNK_DAYS * (n - i))
        cuts.append(k)
    cuts.append(tape.n_days)
    return [range(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


@dataclass
class ChunkRun:
    """One chunk's kernel run: its events, its end state and the outputs the seam check compares."""

    days: range
    events: KernelEvents
    state: KernelState | None  # after the chunk's last trade
    tail: tuple[np.ndarray, np.ndarray]  # (codes, features) of its last VERIFY_TRADES trades, one row per trade
    warm: tuple[np.ndarray, np.ndarray] | None = None  # the same trades as the warm-up saw them
    warm_state: KernelState | None = None  # the state the warm-up reached (the chunk's start)


@dataclass
class ChunkStats:
    chunks: int
    recomputed: int  # chunks whose warm-up did not reproduce the previous one (run again here)


def _per_trade(ev: KernelEvents, offset: int, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.zeros(feats.shape[0], np.int8)
    codes[ev.idx - offset] = ev.code
    return codes, feats


def _slice(tape: DayTape, g0: int, g1: int):
    """(ts, price, qty, side) of global trades ``[g0, g1)``."""
    k0 = int(np.searchsorted(tape.offsets, g0, side="right")) - 1
    cols: list[list[np.ndarray]] = [[], [], [], []]
    k = k0
    while k < tape.n_days and tape.offsets[k] < g1:
        d, off = tape.day(k), int(tape.offsets[k])
        lo, hi = max(g0 - off, 0), min(g1 - off, d.ts_ms.size)
        for c, a in zip(cols, (d.ts_ms, d.price, d.qty, d.side)):
            c.append(a[lo:hi])
        k += 1
    empty = (np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int8))
    return tuple(np.concatenate(c) if c else e for c, e in zip(cols, empty))


def _run_days(tape: DayTape, params: WhaleParams, days: range, state: KernelState | None) -> ChunkRun:
    """The kernel over ``days`` from ``state``; the last VERIFY_TRADES trades with every output row."""
    g_end = int(tape.offsets[days.stop])
    tail_from = max(g_end - VERIFY_TRADES, int(tape.offsets[days.start]))
    parts, tail_codes, tail_feats = [], [], []
    for k in days:
        d, off = tape.day(k), int(tape.offsets[k])
        n = d.ts_ms.size
        s = min(max(tail_from - off, 0), n)
        if s > 0:
            ev, res = kernel_batch(d.ts_ms[:s], d.price[:s], d.qty[:s], d.side[:s], off, params, state)
            state = res.state
            parts.append(ev)
        if s < n:
            ev, res = kernel_batch(d.ts_ms[s:], d.price[s:], d.qty[s:], d.side[s:], off + s, params, state, True)
            state = res.state
            parts.append(ev)
            codes, feats = _per_trade(ev, off + s, np.asarray(res.features))
            tail_codes.append(codes)
            tail_feats.append(feats)
    tail = (
        np.concatenate(tail_codes) if tail_codes else np.empty(0, np.int8),
        np.concatenate(tail_feats) if tail_feats else np.empty((0, N_FEATURES)),
    )
    return ChunkRun(days, KernelEvents.concat(parts), state, tail)


def _warm_up(tape: DayTape, params: WhaleParams, k0: int, warm_ms: int):
    """A fresh state run over the trades before partition ``k0``: (state, verify outputs)."""
    g_start = int(tape.offsets[k0])
    v0 = max(g_start - VERIFY_TRADES, 0)
    if g_start == 0:
        return None, (np.empty(0, np.int8), np.empty((0, N_FEATURES)))
    v_ts = int(tape.rows_at(np.asarray([v0])).ts_ms[0])
    # The first trade at or after v_ts - warm_ms.
    kw = max(int(tape.day_at(v_ts - warm_ms)), 0)
    pos = int(np.searchsorted(tape.day(kw).ts_ms, v_ts - warm_ms, side="left"))
    w0 = max(min(int(tape.offsets[kw]) + pos, v0 - WARMUP_TRADES), 0)
    state = None
    if w0 < v0:
        ts, px, q, sd = _slice(tape, w0, v0)
        _, res = kernel_batch(ts, px, q, sd, w0, params, None)
        state = res.state
    ts, px, q, sd = _slice(tape, v0, g_start)
    ev, res = kernel_batch(ts, px, q, sd, v0, params, state, True)
    return res.state, _per_trade(ev, v0, np.asarray(res.features))


def _same_rows(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray] | None) -> bool:
    if b is None or a[0].shape != b[0].shape or a[1].shape != b[1].shape:
        return False
    return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True))


def seam_equal(a: KernelState | None, b: KernelState | None) -> bool:
    """Whether two states at the same trade will go on alike: the same last trade, window
    contents (trades in each window, their times and prices), flow history in time order,
    threshold, open second and cooldown clock. Sequence numbers and running totals may differ."""
    if a is None or b is None:
        return a is b
    A, B = a.nb, b.nb
    ia, ib = A.iv, B.iv
    for k in (nb.IV_LAST_TS, nb.IV_SEC, nb.IV_HIST_N):
        if ia[k] != ib[k]:
            return False

    def blocking(s) -> int | None:  # the last event while its cooldown can still block a trade
        cd = float(s.params_arr[nb.P_COOLDOWN_MS])
        last = int(s.nb.iv[nb.IV_LAST_EVENT_TS])
        return last if s.nb.iv[nb.IV_HAS_EVENT] and last + cd > s.nb.iv[nb.IV_LAST_TS] else None

    if blocking(a) != blocking(b):
        return False
    flow = bool(a.params_arr[nb.P_USE_FLOW])
    tails = [nb.IV_TAIL0 + w for w in range(nb.N_FEAT_WIN + int(flow))] + [nb.IV_TAIL_10S]
    if any(ia[nb.IV_HEAD] - ia[t] != ib[nb.IV_HEAD] - ib[t] for t in tails):
        return False
    for d in range(2):
        lo, hi = nb.IV_DQ + 2 * d, nb.IV_DQ + 2 * d + 1
        if ia[hi] - ia[lo] != ib[hi] - ib[lo]:
            return False
    if not np.array_equal(A.fv[: nb.FV_TOT], B.fv[: nb.FV_TOT], equal_nan=True):
        return False

    def history(s) -> np.ndarray:
        n, pos, h = int(s.iv[nb.IV_HIST_N]), int(s.iv[nb.IV_HIST_POS]), s.hist
        return h[:n] if n < h.shape[0] else np.r_[h[pos:], h[:pos]]

    if not np.array_equal(history(A), history(B)):
        return False
    # The retained trades: those of the longest window and the 10 s reference (and the one before).
    back = max(int(ia[nb.IV_HEAD] - ia[t]) for t in tails) + 1
    back = min(back, int(ia[nb.IV_HEAD]), int(ib[nb.IV_HEAD]))
    ra = (np.arange(ia[nb.IV_HEAD] - back, ia[nb.IV_HEAD])) & (A.r_ts.shape[0] - 1)
    rb = (np.arange(ib[nb.IV_HEAD] - back, ib[nb.IV_HEAD])) & (B.r_ts.shape[0] - 1)
    return bool(np.array_equal(A.r_ts[ra], B.r_ts[rb]) and np.array_equal(A.r_price[ra], B.r_price[rb]))


def _chunk_task(task: tuple[int, int, int]) -> ChunkRun:
    """A worker's chunk ``(k0, k1, warm_ms)``: warm-up (unless it is the first), then its days."""
    from bt.parallel import context

    k0, k1, warm_ms = task
    ctx = context()
    tape, params = ctx["tape"], ctx["params"]
    state, warm = (None, None) if k0 == 0 else _warm_up(tape, params, k0, warm_ms)
    run = _run_days(tape, params, range(k0, k1), None if state is None else state.copy())
    run.warm, run.warm_state = warm, state
    tape.release()
    return run


def chunk_events(
    tape: DayTape, params: WhaleParams, jobs: int, *, warm_ms: int | None = None
) -> tuple[KernelEvents, ChunkStats]:
    """The kernel events of the whole tape, in chunks on ``jobs`` processes; equal to one run."""
    from bt.parallel import run_tasks

    plan = plan_chunks(tape, jobs)
    w = warmup_ms(params) if warm_ms is None else int(warm_ms)
    if len(plan) > 1 and tape.rows.any():  # the kernel compiled (or loaded from numba's cache) once, before the fork
        k = int(np.flatnonzero(tape.rows)[0])
        d = tape.day(k)
        kernel_batch(d.ts_ms[:1], d.price[:1], d.qty[:1], d.side[:1], 0, params, None, True)
    runs = run_tasks(
        _chunk_task, [(r.start, r.stop, w) for r in plan], len(plan), context={"tape": tape, "params": params}
    )
    recomputed = 0
    for c in range(1, len(runs)):
        prev, run = runs[c - 1], runs[c]
        if prev.state is not None and _same_rows(prev.tail, run.warm) and seam_equal(prev.state, run.warm_state):
            continue
        recomputed += 1  # the warm-up did not reach the running state: go on from the previous chunk's end
        runs[c] = _run_days(tape, params, run.days, None if prev.state is None else prev.state.copy())
    return KernelEvents.concat([r.events for r in runs]), ChunkStats(len(runs), recomputed)


def chunked_gold_events(
    tape: DayTape,
    whale: dict,
    horizons_ms: list[int],
    latency_ms: int,
    jobs: int,
    *,
    silver: tuple | None = None,
    on_day: Callable | None = None,
) -> pd.DataFrame:
    """:func:`datasets.build.tape_gold_events` with the kernel in parallel chunks (same frame); the
    gold rows, outcome windows, ``silver`` and ``on_day`` then in one pass (:func:`gold_days`)."""
    ev, _ = chunk_events(tape, WhaleParams.from_dict(whale), jobs)
    cuts = np.searchsorted(ev.idx, tape.offsets, side="left")

    def events_of(k: int) -> KernelEvents:
        a, b = int(cuts[k]), int(cuts[k + 1])
        return KernelEvents(ev.idx[a:b], ev.code[a:b], ev.feat[a:b])

    return gold_days(tape, events_of, horizons_ms, latency_ms, silver=silver, on_day=on_day)
