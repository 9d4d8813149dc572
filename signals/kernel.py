"""Public, pandas-free API over the numba kernels: live `update` and backtest `run_batch`.

Both call the same `signals.nb.update_nb`; a batch is a loop over it. Inputs are checked
here, at the boundary, so the kernels never raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signals import nb
from signals.config import WhaleParams
from signals.features import FEATURE_NAMES, N_FEATURES, feature_spec_hash

__all__ = [
    "KernelState",
    "BatchResult",
    "new_state",
    "update",
    "run_batch",
    "params_to_array",
    "FEATURE_NAMES",
    "feature_spec_hash",
    "DEFAULT_CAPACITY",
    "KERNEL_VERSION",
]

DEFAULT_CAPACITY = 1 << 16
#: Bump when the kernel's arithmetic changes what it outputs (not the feature definitions: that is
#: `FEATURE_VERSION`), so that gold events cached in a lake are rebuilt. 2: double-double prefix
#: window sums; flow and samples compared as in exact arithmetic.
KERNEL_VERSION = 2


def params_to_array(params: WhaleParams) -> np.ndarray:
    """The float64 parameter vector `update_nb` reads (layout `signals.nb.P_*`)."""
    p = np.zeros(nb.N_PARAMS)
    if params.min_notional_usd is not None:
        p[nb.P_USE_NOTIONAL] = 1.0
        p[nb.P_MIN_NOTIONAL_USD] = params.min_notional_usd
    else:
        p[nb.P_MIN_NOTIONAL_USD] = np.nan
    if params.window_s is not None:
        p[nb.P_USE_FLOW] = 1.0
        p[nb.P_WINDOW_S] = params.window_s
    p[nb.P_Q] = params.q
    p[nb.P_LOOKBACK_S] = params.lookback_s
    p[nb.P_MIN_SAMPLES] = params.min_samples
    p[nb.P_COOLDOWN_MS] = params.cooldown_s * 1000.0
    return p


class KernelState:
    """The kernel's state for one symbol plus the params it was built for.

    Mutated in place by `update` and `run_batch`; `copy()` forks it. The trade ring
    grows (doubles) by itself when a burst does not fit.
    """

    __slots__ = ("params", "params_arr", "nb", "_row")

    def __init__(self, params: WhaleParams, state_nb: nb.StateNb) -> None:
        self.params = params
        self.params_arr = params_to_array(params)
        self.nb = state_nb
        self._row = np.empty(N_FEATURES)

    @property
    def n_trades(self) -> int:
        """Trades processed so far."""
        return int(self.nb.iv[nb.IV_HEAD])

    @property
    def last_ts_ms(self) -> int | None:
        return int(self.nb.iv[nb.IV_LAST_TS]) if self.n_trades else None

    @property
    def capacity(self) -> int:
        """Current trade-ring capacity (a power of two)."""
        return int(self.nb.r_ts.shape[0])

    @property
    def last_features(self) -> np.ndarray | None:
        """Copy of the last processed trade's feature row (None before the first trade)."""
        return self._row.copy() if self.n_trades else None

    @property
    def flow_threshold_usd(self) -> float:
        """Flow rule: current quantile of the per-second flow history (NaN before min_samples)."""
        return float(self.nb.fv[nb.FV_THRESHOLD])

    @property
    def flow_usd(self) -> float:
        """Flow rule: taker-buy notional over the last window_s at the last trade."""
        return float(self.nb.fv[nb.FV_FLOW])

    def copy(self) -> "KernelState":
        """Independent fork: updating the copy leaves this state as it is."""
        out = KernelState(self.params, nb.copy_state_nb(self.nb))
        out._row[:] = self._row
        return out

    def _grow(self) -> None:
        self.nb = nb.grow_state_nb(self.nb)

    def __repr__(self) -> str:
        return f"KernelState(params={self.params!r}, n_trades={self.n_trades}, capacity={self.capacity})"


def new_state(params: WhaleParams, capacity: int = DEFAULT_CAPACITY) -> KernelState:
    """Fresh state for one symbol.

    Args:
        params: the whale rules.
        capacity: initial trade-ring size, a power of two; it grows on demand.
    """
    if not isinstance(params, WhaleParams):
        raise TypeError(
            f"params must be a WhaleParams; got {type(params).__name__}. Build one with WhaleParams.from_dict(...)"
        )
    return KernelState(params, nb.new_state_nb(capacity, params.window_s or 1, params.lookback_s))


def _status_error(status: int, where: str, ts_ms, price, qty, side, last_ts) -> ValueError:
    if status == nb.ST_OUT_OF_ORDER:
        return ValueError(
            f"{where}: ts_ms {ts_ms} is before the previous trade's {last_ts}; feed trades in (ts_ms, trade_id) order"
        )
    return ValueError(
        f"{where}: invalid trade (price={price}, qty={qty}, side={side}); expected "
        "finite price > 0, finite qty >= 0 and side +1 (taker buy) or -1 (taker sell)"
    )


_SIDE_INT8 = {1: np.int8(1), -1: np.int8(-1)}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def update(state: KernelState, ts_ms: int, price: float, qty: float, side: int) -> tuple[int, np.ndarray | None]:
    """Process one trade (the live path).

    Args:
        state: mutated in place.
        ts_ms: exchange trade time, ms UTC; not below the previous trade's.
        price: trade price; qty: base quantity; side: +1 taker buy, -1 taker sell.

    Returns:
        (event code, features): code 0 none, bit 1 notional rule, bit 2 flow rule; the
        features are a fresh copy of the trade's row (order `FEATURE_NAMES`) when the code
        is nonzero, else None.

    Raises:
        ValueError: out-of-order timestamp or an invalid trade; the state is unchanged.
    """
    s = _SIDE_INT8.get(side)
    if s is None:
        raise _status_error(nb.ST_BAD_TRADE, "update", ts_ms, price, qty, side, None)
    # Plain Python ints and floats reach numba as int64 / float64, the same compiled signature as
    # NumPy scalars, without the cost of building those scalars on every trade of the live path.
    ts = ts_ms if type(ts_ms) is int and _INT64_MIN <= ts_ms <= _INT64_MAX else np.int64(ts_ms)
    p = price if type(price) is float else np.float64(price)
    q = qty if type(qty) is float else np.float64(qty)
    while True:
        code = nb.update_nb(state.nb, state.params_arr, ts, p, q, s, state._row)
        if code != nb.ST_RING_FULL:
            break
        state._grow()
    if code < 0:
        raise _status_error(code, "update", ts_ms, price, qty, side, state.last_ts_ms)
    return code, (state._row.copy() if code else None)


@dataclass(frozen=True)
class BatchResult:
    """Output of `run_batch`.

    Attributes:
        event_idx: int64[n_events], positions (within this batch) of the trades that fired.
        event_code: int8[n_events], their codes (bit 1 notional, bit 2 flow).
        event_features: float64[n_events, N_FEATURES], their feature rows.
        features: float64[n, N_FEATURES] every trade's row if `all_features`, else None.
        state: the state after the last trade; pass it to the next batch to continue.
    """

    event_idx: np.ndarray
    event_code: np.ndarray
    event_features: np.ndarray
    features: np.ndarray | None
    state: KernelState

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES


def _as_1d(name: str, x, dtype, n: int | None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} values but ts_ms has {n}; pass one value per trade")
    if dtype is np.float64:
        return np.ascontiguousarray(a, np.float64)
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(a == np.round(a)):
            return np.ascontiguousarray(a, dtype)
        raise ValueError(f"{name} must hold integers; got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype)


def _check_batch(ts, price, qty, side, last_ts) -> None:
    i, status = nb.check_trades_nb(ts, price, qty, side, 0 if last_ts is None else last_ts, last_ts is not None)
    if status == 0:
        return
    if status == nb.ST_OUT_OF_ORDER:
        if i == 0:
            raise ValueError(
                f"ts_ms[0]={ts[0]} is before the state's last trade at {last_ts}; batches must continue in time order"
            )
        raise ValueError(
            f"ts_ms must be non-decreasing; ts_ms[{i}]={ts[i]} < ts_ms[{i - 1}]={ts[i - 1]}. "
            "Sort trades by (ts_ms, trade_id) first"
        )
    for name, values, ok, want in (
        ("price", price, np.isfinite(price[i]) and price[i] > 0, "finite and > 0"),
        ("qty", qty, np.isfinite(qty[i]) and qty[i] >= 0, "finite and >= 0"),
        ("side", side, side[i] in (1, -1), "+1 (taker buy) or -1 (taker sell)"),
    ):
        if not ok:
            raise ValueError(f"{name}[{i}]={values[i].item()!r} must be {want}")


def run_batch(
    ts_ms, price, qty, side, params: WhaleParams, state: KernelState | None = None, all_features: bool = False
) -> BatchResult:
    """Process trades in order (the backtest path): same kernel as `update`, looped.

    Args:
        ts_ms, price, qty, side: one value per trade, ordered by (ts_ms, trade_id).
        params: the whale rules.
        state: continue from this state (advanced in place and returned); a fresh one if None.
            Running two halves with the carried state equals one run, bit for bit.
        all_features: also return every trade's feature row (memory n * N_FEATURES * 8 B).

    Returns:
        BatchResult with the events and the final state.

    Raises:
        ValueError: mismatched lengths, unsorted times, invalid values, or a state built for
            other params.
    """
    if state is None:
        state = new_state(params)
    elif state.params != params:
        raise ValueError(
            f"state was built for {state.params!r}, not {params!r}; use new_state(params) or the matching params"
        )
    ts = _as_1d("ts_ms", ts_ms, np.int64, None)
    n = ts.shape[0]
    price_a = _as_1d("price", price, np.float64, n)
    qty_a = _as_1d("qty", qty, np.float64, n)
    side_a = _as_1d("side", side, np.int8, n)
    _check_batch(ts, price_a, qty_a, side_a, state.last_ts_ms)

    codes = np.zeros(n, np.int8)
    # Room for an event every 8 trades (at most 4M rows) before the buffers have to grow: their
    # untouched pages cost no memory, while growing copies every row written so far.
    ev_cap = max(min(n, max(n // 8, 1 << 16), 1 << 22), 1)
    ev_idx = np.empty(ev_cap, np.int64)
    ev_feat = np.empty((ev_cap, N_FEATURES))
    all_feat = np.empty((n if all_features else 0, N_FEATURES))
    i, n_ev = 0, 0
    while True:
        i, status, n_ev = nb.batch_nb(
            state.nb,
            state.params_arr,
            ts,
            price_a,
            qty_a,
            side_a,
            i,
            codes,
            ev_idx,
            ev_feat,
            n_ev,
            all_feat,
            all_features,
            state._row,
        )
        if status == 0:
            break
        if status == nb.ST_RING_FULL:
            state._grow()
        elif status == nb.ST_EVENTS_FULL:
            ev_idx = np.concatenate([ev_idx, np.empty_like(ev_idx)])
            grown = np.empty((2 * ev_feat.shape[0], N_FEATURES))
            grown[:n_ev] = ev_feat[:n_ev]
            ev_feat = grown
        else:  # unreachable after _check_batch; kept so a kernel change cannot fail silently
            raise _status_error(status, f"trade {i}", ts[i], price_a[i], qty_a[i], side_a[i], state.last_ts_ms)
    # Views, not copies: the buffers' unused tails were never touched, so they hold no memory.
    return BatchResult(
        event_idx=ev_idx[:n_ev],
        event_code=codes[ev_idx[:n_ev]],
        event_features=ev_feat[:n_ev],
        features=all_feat if all_features else None,
        state=state,
    )
