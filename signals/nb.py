"""Numba kernels: the incremental whale/feature update and the batch loop over it.

NumPy in, NumPy out, no Python objects. The state is a `StateNb` NamedTuple of arrays
that the kernels mutate in place; scalars live in the small `iv` (int64) and `fv`
(float64) arrays at the `IV_*` / `FV_*` positions. Kernels never raise: they return
status codes (`ST_*`, negative) and leave the state untouched (but for
`iv[IV_LAST_STATUS]`); the Python wrapper in `signals.kernel` turns them into ring
growth or into errors.

Trades are numbered by a sequence number `seq` (0 for the first trade this state saw);
ring slot = `seq & mask`. Windows are prefix differences: the state keeps running totals
of five series (taker buy / sell qty, taker buy / sell notional, squared log returns) since
the first trade, and the ring keeps, per trade, the totals before it (`r_pre`). A window is
a tail `seq` (its oldest trade), and its sum is total now - total before the tail: no
subtraction loop as trades leave, and a series with no trade in the window reads an exact
0.0. The totals are double-double (hi + lo, error-free additions), so they stay exact to
about 1e-32 of their size however long a state runs, and a window sum is the difference
within a few ulps of the exact sum (`dd_diff_nb`; tests check 1e-13 against np.sum). The
flow rule's per-second samples and its flow are differences of the same totals rounded
once (`dd_diff_exact_nb`), so a flow and a sample over the same trades are the same
double, and "flow above the threshold" means above in exact arithmetic.
Tails advance by counting, without branches, how many of the next four trades left the
window (a fresh trade is in the ring before the tails move, so the count stops there):
the trip count of a "while it left" loop is what the branch predictor cannot guess.

Flow history: the flow rule's threshold is the q-quantile of the last lookback_s
per-second samples, which needs the samples of rank floor((n - 1) q) and the next. The
samples sit in time order in the ring `hist` and, by value, in two heaps sharing `hv`: a
max-heap of the lower floor((n - 1) q) + 1 samples at `hv[:lookback]` and a max-heap of the
negated upper samples at `hv[lookback:]` (negation is exact), every lower sample <= every
upper one. The two tops are the two ranks. A closing second puts the new sample in the
leaving one's place when both belong to the same heap (the common case: one sift);
otherwise it removes the leaving sample from its heap (`hpos` says where it is), pushes
the new one and moves at most a top or two across: O(log lookback_s) per second where a
sorted array shifts O(lookback_s) values.

Refcounts: numba increfs each array a function binds or receives (an atomic instruction)
and decrefs it on exit; LLVM's refcount pruner drops those pairs only when it can match
them. `update_nb` is written so that it can: every array is bound once at the top and
used again in the single exit block, no call that is not inlined, no array view, no
run-time tuple indexing (its bounds check is a raise path). `batch_nb` inlines it.
Break one of these and each trade pays dozens of atomics, several times the update.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from signals.jit import njit

from signals.features import (
    COL_BURST,
    COL_DRAWDOWN,
    COL_DRAWUP,
    COL_IMB_5S,
    COL_IMB_30S,
    COL_NOTIONAL,
    COL_RET0,
    COL_RET_Z_1S,
    COL_RET_Z_5S,
    COL_RV_30S,
    COL_WINDOW0,
    N_FEATURES,
)

# --- status codes (negative) and event bits ---------------------------------------
ST_RING_FULL = -1  # the ring cannot hold the retained trades + 1: grow and retry
ST_OUT_OF_ORDER = -2  # ts_ms below the previous trade's
ST_BAD_TRADE = -3  # price not finite > 0, qty not finite >= 0, or side not +1/-1
ST_EVENTS_FULL = -4  # batch only: the event output is full: grow it and resume
ST_BAD_ARGS = -5  # feat_out or params_arr too short
EV_NOTIONAL = 1
EV_FLOW = 2

# --- params_arr layout (float64) ---------------------------------------------------
P_USE_NOTIONAL = 0
P_MIN_NOTIONAL_USD = 1
P_USE_FLOW = 2
P_WINDOW_S = 3
P_Q = 4
P_LOOKBACK_S = 5
P_MIN_SAMPLES = 6
P_COOLDOWN_MS = 7
N_PARAMS = 8

# --- windows -----------------------------------------------------------------------
WIN_MS = (1000, 5000, 30000, 60000)  # feature windows 0..3
_MS0, _MS1, _MS2, _MS3 = WIN_MS
N_FEAT_WIN = 4
W_1S, W_5S, W_30S, W_60S = 0, 1, 2, 3
W_FLOW = 4  # tail 4: the flow rule's window_s (taker-buy notional only)
# Prefix series: column c (hi part) and c + 1 (lo part) of a trade's `r_pre` row and of the
# totals at fv[FV_TOT + c]; buy / sell pairs are 2 apart.
PRE_BUY_QTY = 0
PRE_SELL_QTY = 2
PRE_BUY_NOTIONAL = 4
PRE_SELL_NOTIONAL = 6
PRE_R2 = 8  # squared trade-to-trade log returns
N_PRE = 10

# --- iv (int64 scalars) --------------------------------------------------------------
IV_HEAD = 0  # seq of the next trade = trades seen so far
IV_LAST_TS = 1
IV_TAIL0 = 2  # oldest seq inside window w (0..3 features, 4 flow rule) at IV_TAIL0 + w
IV_TAIL_10S = 7  # the 10 s return reference has a tail but no sums
IV_DQ = 8  # deque d (0: 60 s minima, 1: maxima) runs over counters IV_DQ + 2 d .. IV_DQ + 2 d + 1
IV_SEC = 12  # flow rule: the open (current) whole second
IV_HIST_N = 13  # samples in the flow history, <= lookback_s
IV_HIST_POS = 14  # next slot of hist (the oldest sample once full)
IV_LAST_EVENT_TS = 15
IV_HAS_EVENT = 16
IV_LAST_STATUS = 17  # the last update's return value
IV_LO_N = 18  # flow history: samples in the lower heap (the rest are in the upper heap)
N_IV = 19

# --- fv (float64 scalars) ------------------------------------------------------------
FV_LAST_LOG_PRICE = 0
FV_THRESHOLD = 1  # quantile q of the flow history, NaN before min_samples
FV_FLOW = 2  # the last trade's taker-buy notional over window_s (diagnostic)
FV_TOT = 3  # running totals of the prefix series, FV_TOT + PRE_* (hi) and + 1 (lo)
N_FV = FV_TOT + N_PRE

_SQRT_1_30 = math.sqrt(1.0 / 30.0)
_SQRT_5_30 = math.sqrt(5.0 / 30.0)


class StateNb(NamedTuple):
    """All mutable kernel state; arrays only, so numba passes it by reference.

    One-dimensional arrays where the kernel is hot: 2-D indexing costs a multiply by a
    run-time stride per access.
    """

    iv: np.ndarray  # int64[N_IV]
    fv: np.ndarray  # float64[N_FV]
    r_ts: np.ndarray  # trade ring, slot = seq & (cap - 1), cap a power of two: int64[cap]
    r_price: np.ndarray  # float64[cap]
    r_pre: np.ndarray  # float64[cap * N_PRE]: the prefix totals before the trade, row = slot
    dq: np.ndarray  # int64[2 * cap]: seqs of the 60 s min deque at [0, cap), of the max deque at [cap, 2 cap)
    bins: np.ndarray  # float64[2, window_s]: taker-buy notional total (hi, lo) as second s opened, slot s % window_s
    hist: np.ndarray  # float64[lookback_s]: the flow history in time order (a ring, next slot IV_HIST_POS)
    hv: np.ndarray  # float64[2 * lookback_s]: the history's two heaps, keys (see "Flow history")
    hs: np.ndarray  # int64[2 * lookback_s]: the `hist` slot of each heap entry
    hpos: np.ndarray  # int64[lookback_s]: where each `hist` slot sits in `hv`


_RING = ("r_ts", "r_price", "r_pre")
_RING_DTYPES = (np.int64, np.float64, np.float64)
_RING_WIDTH = (1, 1, N_PRE)


def new_state_nb(capacity: int, window_s: int, lookback_s: int) -> StateNb:
    """Empty state (plain NumPy, not jitted). `capacity` must be a power of two."""
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two >= 2; got {capacity}")
    lookback = max(int(lookback_s), 1)
    fv = np.zeros(N_FV)
    fv[FV_THRESHOLD] = np.nan
    fv[FV_FLOW] = np.nan
    ring = {name: np.zeros(capacity * w, dt) for name, dt, w in zip(_RING, _RING_DTYPES, _RING_WIDTH)}
    return StateNb(
        iv=np.zeros(N_IV, np.int64),
        fv=fv,
        **ring,
        dq=np.zeros(2 * capacity, np.int64),
        bins=np.zeros((2, max(int(window_s), 1))),
        hist=np.zeros(lookback),
        hv=np.zeros(2 * lookback),
        hs=np.zeros(2 * lookback, np.int64),
        hpos=np.zeros(lookback, np.int64),
    )


def grow_state_nb(st: StateNb) -> StateNb:
    """Copy of `st` with twice the ring capacity, each slot moved to `seq & new_mask`."""
    cap = st.r_ts.shape[0]
    new_cap = cap * 2
    mask, new_mask = cap - 1, new_cap - 1
    head = int(st.iv[IV_HEAD])
    seqs = np.arange(max(head - cap, 0), head, dtype=np.int64)
    moved = {}
    for name, width in zip(_RING, _RING_WIDTH):
        old = getattr(st, name).reshape(cap, width)
        new = np.zeros((new_cap, width), old.dtype)
        new[seqs & new_mask] = old[seqs & mask]
        moved[name] = new.reshape(-1)
    old, new = st.dq.reshape(2, cap), np.zeros((2, new_cap), np.int64)
    for d in range(2):
        ctr = np.arange(st.iv[IV_DQ + 2 * d], st.iv[IV_DQ + 2 * d + 1], dtype=np.int64)
        new[d, ctr & new_mask] = old[d, ctr & mask]
    moved["dq"] = new.reshape(-1)
    return st._replace(**moved)


def copy_state_nb(st: StateNb) -> StateNb:
    return StateNb(*(a.copy() for a in st))


@njit(cache=True, inline="always")
def slot_nb(seq, umask):
    """Ring slot of `seq`, unsigned so that numba emits no negative-index wraparound."""
    return np.uint64(seq) & umask


@njit(cache=True, inline="always")
def dd_add_nb(hi, lo, x):
    """(hi, lo) + x for a double-double total: an error-free sum, renormalised."""
    s = hi + x
    b = s - hi
    e = (hi - (s - b)) + (x - b) + lo
    h = s + e
    return h, e - (h - s)


@njit(cache=True, inline="always")
def dd_diff_nb(hi_a, lo_a, hi_b, lo_b):
    """(hi_a + lo_a) - (hi_b + lo_b) for totals a >= b, floored at 0.0 (equal totals: exact 0.0).

    Within a few ulps: the hi difference is exact unless b < a / 2, and then the result is at
    least half of a, so its one rounding is small beside the result.
    """
    return max((hi_a - hi_b) + (lo_a - lo_b), 0.0)


@njit(cache=True, inline="always")
def dd_diff_exact_nb(hi_a, lo_a, hi_b, lo_b):
    """`dd_diff_nb` rounded once (the hi difference split exactly): the flow rule compares these,
    so that a flow and a sample over the same trades are the same double."""
    s = hi_a - hi_b
    b = s - hi_a
    e = (hi_a - (s - b)) + (-hi_b - b)
    return max(s + (e + (lo_a - lo_b)), 0.0)


@njit(cache=True, error_model="numpy", inline="always")
def update_nb(st, params_arr, ts_ms, price, qty, side, feat_out):
    """Process one trade: advance the windows, write its feature row, return its event code.

    Slow equivalent: `tests/signals/reference_pipeline.py` (searchsorted windows, np.sum, np.quantile).

    Args:
        st: `StateNb`, mutated in place (untouched but for IV_LAST_STATUS on a status < 0).
        params_arr: float64[N_PARAMS] from `signals.kernel.params_to_array`.
        ts_ms, price, qty, side: the trade (side +1 taker buy, -1 taker sell).
        feat_out: float64[N_FEATURES], overwritten with the trade's features (status >= 0).

    Returns:
        0 no event, bits EV_NOTIONAL | EV_FLOW for the rules that fired, or a status ST_* < 0.
    """
    # Bound once here, used again at the single exit: see "Refcounts" above.
    iv, fv, bins, hist, hv, hs, hpos = st.iv, st.fv, st.bins, st.hist, st.hv, st.hs, st.hpos
    r_ts, r_price, r_pre, dq = st.r_ts, st.r_price, st.r_pre, st.dq

    head = iv[IV_HEAD]
    mask = r_ts.shape[0] - 1
    umask = np.uint64(mask)
    use_flow = params_arr[P_USE_FLOW] != 0.0
    # Oldest trade still needed: the 60 s and flow windows, the 30 s return reference.
    start = max(min(iv[IV_TAIL0 + W_60S], iv[IV_TAIL0 + W_30S] - 1), 0)
    if use_flow:
        start = min(start, iv[IV_TAIL0 + W_FLOW])
    code = 0
    if feat_out.shape[0] < N_FEATURES or params_arr.shape[0] < N_PARAMS:
        code = ST_BAD_ARGS
    elif head > 0 and ts_ms < iv[IV_LAST_TS]:
        code = ST_OUT_OF_ORDER
    elif not (price > 0.0 and price < np.inf and qty >= 0.0 and qty < np.inf):
        code = ST_BAD_TRADE
    elif side != 1 and side != -1:
        code = ST_BAD_TRADE
    elif head - start > mask:
        code = ST_RING_FULL
    else:
        # --- flow rule: close the whole seconds before this trade's ---------------------
        if use_flow:
            sec = ts_ms // 1000
            if head == 0:
                iv[IV_SEC] = sec
            elif sec > iv[IV_SEC]:
                # Each closed second c pushes its flow sample, the taker-buy notional of seconds
                # c - window_s + 1 .. c: total now - total as second c - window_s + 1 opened
                # (slot (c + 1) % window_s, which then takes the total as c + 1 opens). Runs of
                # empty seconds are capped at lookback_s + window_s: past that every sample is 0.
                n_bins = bins.shape[1]
                lookback = hist.shape[0]
                cur = iv[IV_SEC]
                q = params_arr[P_Q]
                for k in range(min(sec - cur, lookback + n_bins)):
                    # The second's sample replaces the oldest one once the history is full.
                    slot = (cur + k + 1) % n_bins
                    x = dd_diff_exact_nb(
                        fv[FV_TOT + PRE_BUY_NOTIONAL], fv[FV_TOT + PRE_BUY_NOTIONAL + 1], bins[0, slot], bins[1, slot]
                    )
                    n = iv[IV_HIST_N]
                    pos = iv[IV_HIST_POS]
                    if n < lookback or hist[pos] != x:
                        # A run of placements, each filling a hole at i of the max-heap
                        # hv[base : base + size] with (key, sl) and restoring heap order:
                        # take the leaving sample out, push the new one, move tops across
                        # until the lower heap holds ranks 0..floor((n - 1) q). One placement
                        # block serves them all: helpers taking arrays would cost refcounts.
                        lo_n = iv[IV_LO_N]
                        hi_n = n - lo_n
                        n_new = n if n == lookback else n + 1
                        want = min(int(math.floor((n_new - 1) * q)), n_new - 1) + 1
                        stage = 0 if n == lookback else 1
                        carry_v = 0.0
                        carry_sl = 0
                        carry_to = -1  # a value taken out, to push onto heap 0 (lower) or 1 (upper)
                        while True:
                            base = 0
                            i = 0
                            size = 0
                            key = 0.0
                            sl = 0
                            if carry_to >= 0:  # push the carried value at its heap's end
                                if carry_to == 0:
                                    i = lo_n
                                    key = carry_v
                                    lo_n += 1
                                    size = lo_n
                                else:
                                    base = lookback
                                    i = hi_n
                                    key = -carry_v
                                    hi_n += 1
                                    size = hi_n
                                sl = carry_sl
                                carry_to = -1
                            elif stage == 0 and (hpos[pos] < lookback) == (lo_n > 0 and x <= hv[0]):
                                # the new sample belongs to the leaving one's heap: it takes its place
                                stage = 2
                                at = hpos[pos]
                                if at < lookback:
                                    key = x
                                    size = lo_n
                                else:
                                    base = lookback
                                    key = -x
                                    size = hi_n
                                i = at - base
                                sl = pos
                            elif stage == 0:  # the leaving sample: its heap's last entry fills the hole
                                stage = 1
                                at = hpos[pos]
                                if at < lookback:
                                    lo_n -= 1
                                    size = lo_n
                                else:
                                    base = lookback
                                    hi_n -= 1
                                    size = hi_n
                                i = at - base
                                if i == size:
                                    continue
                                key = hv[base + size]
                                sl = hs[base + size]
                            elif stage == 1:  # the new sample
                                stage = 2
                                carry_v = x
                                carry_sl = pos
                                carry_to = 0 if lo_n > 0 and x <= hv[0] else 1
                                continue
                            elif lo_n > want:  # the lower top moves up; the lower last fills the root
                                carry_v = hv[0]
                                carry_sl = hs[0]
                                carry_to = 1
                                lo_n -= 1
                                size = lo_n
                                if size == 0:
                                    continue
                                key = hv[size]
                                sl = hs[size]
                            elif lo_n < want:  # the upper top moves down
                                carry_v = -hv[lookback]
                                carry_sl = hs[lookback]
                                carry_to = 0
                                base = lookback
                                hi_n -= 1
                                size = hi_n
                                if size == 0:
                                    continue
                                key = hv[base + size]
                                sl = hs[base + size]
                            else:
                                break
                            # place: up past smaller parents, or down past larger children
                            if i > 0 and hv[base + ((i - 1) >> 1)] < key:
                                while i > 0:
                                    up = (i - 1) >> 1
                                    if hv[base + up] >= key:
                                        break
                                    hv[base + i] = hv[base + up]
                                    hs[base + i] = hs[base + up]
                                    hpos[hs[base + i]] = base + i
                                    i = up
                            else:
                                while True:
                                    c = 2 * i + 1
                                    if c >= size:
                                        break
                                    if c + 1 < size and hv[base + c + 1] > hv[base + c]:
                                        c += 1
                                    if hv[base + c] <= key:
                                        break
                                    hv[base + i] = hv[base + c]
                                    hs[base + i] = hs[base + c]
                                    hpos[hs[base + i]] = base + i
                                    i = c
                            hv[base + i] = key
                            hs[base + i] = sl
                            hpos[sl] = base + i
                        iv[IV_LO_N] = lo_n
                        iv[IV_HIST_N] = n_new
                    hist[pos] = x
                    iv[IV_HIST_POS] = pos + 1 if pos + 1 < lookback else 0
                    bins[0, slot] = fv[FV_TOT + PRE_BUY_NOTIONAL]  # second cur + k + 1 opens
                    bins[1, slot] = fv[FV_TOT + PRE_BUY_NOTIONAL + 1]
                iv[IV_SEC] = sec
                # Threshold = np.quantile(history, q), method "linear", bit for bit (numpy
                # lerps from the nearer end) from ranks floor(vi) (the lower heap's top) and
                # floor(vi) + 1 (the upper heap's); NaN before min_samples, which never compares.
                n = iv[IV_HIST_N]
                thr = np.nan
                if n >= np.int64(params_arr[P_MIN_SAMPLES]):
                    vi = (n - 1) * q
                    if vi >= n - 1:
                        thr = hv[0]
                    else:
                        g = vi - math.floor(vi)
                        x0 = hv[0]
                        x1 = -hv[lookback]
                        thr = x1 - (x1 - x0) * (1.0 - g) if g >= 0.5 else x0 + (x1 - x0) * g
                fv[FV_THRESHOLD] = thr

        # --- enter the trade: its ring row (with the totals before it), then the totals --
        notional = price * qty
        log_price = math.log(price)
        r2 = 0.0
        if head > 0:
            lr = log_price - fv[FV_LAST_LOG_PRICE]
            r2 = lr * lr
        is_buy = side == 1
        j = slot_nb(head, umask)
        r_ts[j] = ts_ms
        r_price[j] = price
        jp = j * np.uint64(N_PRE)
        for c in range(N_PRE):
            r_pre[jp + np.uint64(c)] = fv[FV_TOT + c]
        buy_qty = qty if is_buy else 0.0
        buy_notional = notional if is_buy else 0.0
        # (sell = total - buy: the other side adds an exact 0.0, which leaves a total as it is)
        for c in range(0, N_PRE, 2):
            x = (
                buy_qty
                if c == PRE_BUY_QTY
                else qty - buy_qty
                if c == PRE_SELL_QTY
                else buy_notional
                if c == PRE_BUY_NOTIONAL
                else notional - buy_notional
                if c == PRE_SELL_NOTIONAL
                else r2
            )
            hi, lo = dd_add_nb(fv[FV_TOT + c], fv[FV_TOT + c + 1], x)
            fv[FV_TOT + c] = hi
            fv[FV_TOT + c + 1] = lo
        fv[FV_LAST_LOG_PRICE] = log_price
        iv[IV_LAST_TS] = ts_ms
        iv[IV_HEAD] = head + 1

        # --- tails: windows 0..3, the flow window (4) and the 10 s return reference (5) ----
        flow_ms = np.int64(params_arr[P_WINDOW_S]) * 1000
        # A flow window of 1, 5, 30 or 60 s is that feature window: same tail.
        flow_w = (
            W_1S
            if flow_ms == _MS0
            else W_5S
            if flow_ms == _MS1
            else W_30S
            if flow_ms == _MS2
            else W_60S
            if flow_ms == _MS3
            else -1
        )
        for w in range(6):
            if w == W_FLOW and not use_flow:
                continue
            if w == W_FLOW and flow_w >= 0:
                iv[IV_TAIL0 + W_FLOW] = iv[IV_TAIL0 + flow_w]
                continue
            # Not WIN_MS[w]: run-time tuple indexing adds a raise path ("Refcounts").
            lim = ts_ms - (
                _MS0
                if w == 0
                else _MS1
                if w == 1
                else _MS2
                if w == 2
                else _MS3
                if w == 3
                else flow_ms
                if w == W_FLOW
                else 10000
            )
            k = iv[IV_TAIL0 + w]
            while True:  # leading run of the next four trades at or before lim; the new one is after it
                b0 = r_ts[slot_nb(k, umask)] <= lim
                b1 = b0 & (r_ts[slot_nb(k + 1, umask)] <= lim)
                b2 = b1 & (r_ts[slot_nb(k + 2, umask)] <= lim)
                b3 = b2 & (r_ts[slot_nb(k + 3, umask)] <= lim)
                adv = np.int64(b0) + np.int64(b1) + np.int64(b2) + np.int64(b3)
                k += adv
                if adv < 4:
                    break
            iv[IV_TAIL0 + w] = k

        # --- window sums: totals now minus totals before each tail -------------------------
        for w in range(N_FEAT_WIN):
            t = slot_nb(iv[IV_TAIL0 + w], umask) * np.uint64(N_PRE)
            col = COL_WINDOW0 + 5 * w
            for m in range(4):  # buy qty, sell qty, buy notional, sell notional: PRE_* = 2 m
                c = 2 * m
                feat_out[col + m] = dd_diff_nb(
                    fv[FV_TOT + c], fv[FV_TOT + c + 1], r_pre[t + np.uint64(c)], r_pre[t + np.uint64(c + 1)]
                )
            feat_out[col + 4] = head + 1 - iv[IV_TAIL0 + w]
        t = slot_nb(iv[IV_TAIL0 + W_30S], umask) * np.uint64(N_PRE)
        r2_30 = dd_diff_nb(
            fv[FV_TOT + PRE_R2], fv[FV_TOT + PRE_R2 + 1], r_pre[t + np.uint64(PRE_R2)], r_pre[t + np.uint64(PRE_R2 + 1)]
        )
        flow = 0.0
        if use_flow:
            t = slot_nb(iv[IV_TAIL0 + W_FLOW], umask) * np.uint64(N_PRE)
            c = PRE_BUY_NOTIONAL
            flow = dd_diff_exact_nb(
                fv[FV_TOT + c], fv[FV_TOT + c + 1], r_pre[t + np.uint64(c)], r_pre[t + np.uint64(c + 1)]
            )

        # --- 60 s min / max: monotonic deques of seqs; the front is the extreme --------
        # Deque 0 keeps prices ascending, deque 1 descending: the same code on sign * price
        # (a negation is exact). The front rarely expires, so its test is a well-predicted
        # branch. At the back sits the previous trade (unless it left the window), and keys
        # strictly increase towards it, so the new key pops past it only in the deque it
        # moved against: the min deque if the price fell, the max deque if it rose. Both take
        # one branch-free test for the previous trade; the one that may pop further counts its
        # pops four at a time without branches, like the tails (seqs below lo are masked out;
        # reading their slots is harmless).
        tail60 = iv[IV_TAIL0 + W_60S]
        cap = umask + np.uint64(1)
        for d in range(2):
            sgn = 1.0 if d == 0 else -1.0
            base = np.uint64(d) * cap
            lo = iv[IV_DQ + 2 * d]
            hi = iv[IV_DQ + 2 * d + 1]
            while lo < hi and dq[base + slot_nb(lo, umask)] < tail60:  # front: seqs that left the window
                lo += 1
            hi -= np.int64(
                (lo < hi) & (sgn * r_price[slot_nb(dq[base + slot_nb(hi - 1, umask)], umask)] >= sgn * price)
            )
            iv[IV_DQ + 2 * d] = lo
            iv[IV_DQ + 2 * d + 1] = hi
        dw = np.int64(price > r_price[slot_nb(head - 1, umask)])  # 1: the price rose (any value at head 0)
        sgn = 1.0 - 2.0 * dw
        key = sgn * price
        base = np.uint64(dw) * cap
        lo = iv[IV_DQ + 2 * dw]
        hi = iv[IV_DQ + 2 * dw + 1]
        while True:  # back: entries the new price makes redundant (sign * price not below its key)
            b0 = (lo < hi) & (sgn * r_price[slot_nb(dq[base + slot_nb(hi - 1, umask)], umask)] >= key)
            b1 = b0 & (lo < hi - 1) & (sgn * r_price[slot_nb(dq[base + slot_nb(hi - 2, umask)], umask)] >= key)
            b2 = b1 & (lo < hi - 2) & (sgn * r_price[slot_nb(dq[base + slot_nb(hi - 3, umask)], umask)] >= key)
            b3 = b2 & (lo < hi - 3) & (sgn * r_price[slot_nb(dq[base + slot_nb(hi - 4, umask)], umask)] >= key)
            adv = np.int64(b0) + np.int64(b1) + np.int64(b2) + np.int64(b3)
            hi -= adv
            if adv < 4:
                break
        iv[IV_DQ + 2 * dw + 1] = hi
        p_min = price
        p_max = price
        for d in range(2):
            base = np.uint64(d) * cap
            lo = iv[IV_DQ + 2 * d]
            hi = iv[IV_DQ + 2 * d + 1]
            dq[base + slot_nb(hi, umask)] = head
            iv[IV_DQ + 2 * d + 1] = hi + 1
            ext = r_price[slot_nb(dq[base + slot_nb(lo, umask)], umask)]
            if d == 0:
                p_min = ext
            else:
                p_max = ext

        # --- the rest of the feature row (window sums and counts are in it) ---------------
        # ret_k: against the trade just before the k-second window's tail.
        ref = iv[IV_TAIL0 + W_1S] - 1
        ret_1 = price / r_price[slot_nb(ref, umask)] - 1.0 if ref >= 0 else np.nan
        ref = iv[IV_TAIL0 + W_5S] - 1
        ret_5 = price / r_price[slot_nb(ref, umask)] - 1.0 if ref >= 0 else np.nan
        ref = iv[IV_TAIL_10S] - 1
        feat_out[COL_RET0 + 2] = price / r_price[slot_nb(ref, umask)] - 1.0 if ref >= 0 else np.nan
        ref = iv[IV_TAIL0 + W_30S] - 1
        feat_out[COL_RET0 + 3] = price / r_price[slot_nb(ref, umask)] - 1.0 if ref >= 0 else np.nan
        feat_out[COL_RET0] = ret_1
        feat_out[COL_RET0 + 1] = ret_5
        rv = math.sqrt(r2_30)
        feat_out[COL_RV_30S] = rv
        feat_out[COL_RET_Z_1S] = ret_1 / (rv * _SQRT_1_30) if rv > 0.0 else np.nan
        feat_out[COL_RET_Z_5S] = ret_5 / (rv * _SQRT_5_30) if rv > 0.0 else np.nan
        qty_60 = feat_out[COL_WINDOW0 + 5 * W_60S] + feat_out[COL_WINDOW0 + 5 * W_60S + 1]
        bq = feat_out[COL_WINDOW0 + 5 * W_5S]
        sq = feat_out[COL_WINDOW0 + 5 * W_5S + 1]
        feat_out[COL_BURST] = (bq + sq) / (qty_60 / 12.0) if qty_60 > 0.0 else np.nan
        feat_out[COL_IMB_5S] = (bq - sq) / (bq + sq) if bq + sq > 0.0 else np.nan
        bq = feat_out[COL_WINDOW0 + 5 * W_30S]
        sq = feat_out[COL_WINDOW0 + 5 * W_30S + 1]
        feat_out[COL_IMB_30S] = (bq - sq) / (bq + sq) if bq + sq > 0.0 else np.nan
        feat_out[COL_DRAWUP] = price / p_min - 1.0
        feat_out[COL_DRAWDOWN] = price / p_max - 1.0
        feat_out[COL_NOTIONAL] = notional

        # --- whale rules: only taker buys can fire ----------------------------------------
        if use_flow:
            fv[FV_FLOW] = flow
            # A NaN threshold (fewer than min_samples seconds) compares False.
            if is_buy and flow > fv[FV_THRESHOLD]:
                code |= EV_FLOW
        if is_buy and params_arr[P_USE_NOTIONAL] != 0.0 and notional >= params_arr[P_MIN_NOTIONAL_USD]:
            code |= EV_NOTIONAL
        if code != 0:
            if iv[IV_HAS_EVENT] != 0 and ts_ms < iv[IV_LAST_EVENT_TS] + params_arr[P_COOLDOWN_MS]:
                code = 0
            else:
                iv[IV_HAS_EVENT] = 1
                iv[IV_LAST_EVENT_TS] = ts_ms

    # --- single exit: every array is used here on every path ("Refcounts") --------------
    iv[IV_LAST_STATUS] = code
    n_alive = (
        feat_out.size
        + params_arr.size
        + iv.size
        + fv.size
        + bins.size
        + hist.size
        + hv.size
        + hs.size
        + hpos.size
        + r_ts.size
        + r_price.size
        + r_pre.size
        + dq.size
    )
    return code if n_alive > 0 else ST_BAD_ARGS


@njit(cache=True, error_model="numpy")
def batch_nb(
    st, params_arr, ts, price, qty, side, start, codes_out, ev_idx_out, ev_feat_out, n_ev, all_feat_out, store_all, row
):
    """Loop `update_nb` over trades `start..n-1`: the batch form of the live update.

    Writes every trade's event code to `codes_out`, and the index and feature row of each
    event to `ev_idx_out[n_ev:]` / `ev_feat_out[n_ev:]`; with `store_all`, every trade's
    row to `all_feat_out[i]` as well. `row` (float64[N_FEATURES]) is the scratch row
    `update_nb` writes; it ends holding the last processed trade's features.

    Returns:
        (next index, status, n_ev): status 0 when all trades were processed; otherwise the
        negative status of trade `next index`, which was not applied (the caller grows the
        ring or the event buffers and resumes from there).
    """
    n = ts.shape[0]
    stop = n
    status = 0
    for i in range(start, n):
        if n_ev >= ev_idx_out.shape[0]:
            stop = i
            status = ST_EVENTS_FULL
            break
        code = update_nb(st, params_arr, ts[i], price[i], qty[i], side[i], row)
        if code < 0:
            stop = i
            status = code
            break
        codes_out[i] = code
        # Element-wise copies: a slice would be an array view, refcounted per trade.
        if store_all:
            for c in range(N_FEATURES):
                all_feat_out[i, c] = row[c]
        if code != 0:
            ev_idx_out[n_ev] = i
            for c in range(N_FEATURES):
                ev_feat_out[n_ev, c] = row[c]
            n_ev += 1
    return stop, status, n_ev


@njit(cache=True, error_model="numpy")
def check_trades_nb(ts, price, qty, side, last_ts, has_last):
    """First invalid trade, in one pass: (index, ST_OUT_OF_ORDER or ST_BAD_TRADE), or (-1, 0).

    Same checks as `update_nb`, so a batch that passes never stops on a bad trade.
    """
    # Blocks are screened without branches (vectorised); only a failing block is walked.
    n = ts.shape[0]
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        ok = True
        if start > 0:
            ok = ts[start] >= ts[start - 1]
        elif has_last and n > 0:
            ok = ts[0] >= last_ts
        for i in range(start + 1, stop):
            ok &= ts[i] >= ts[i - 1]
        for i in range(start, stop):
            p = price[i]
            q = qty[i]
            sd = side[i]
            ok &= (p > 0.0) & (p < np.inf) & (q >= 0.0) & (q < np.inf) & ((sd == 1) | (sd == -1))
        if ok:
            continue
        prev = ts[start - 1] if start > 0 else last_ts
        check_order = start > 0 or has_last
        for i in range(start, stop):
            if check_order and ts[i] < prev:
                return i, ST_OUT_OF_ORDER
            p = price[i]
            q = qty[i]
            if not (p > 0.0 and p < np.inf and q >= 0.0 and q < np.inf) or (side[i] != 1 and side[i] != -1):
                return i, ST_BAD_TRADE
            prev = ts[i]
            check_order = True
    return -1, 0
