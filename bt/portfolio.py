"""Portfolio view of the signals: at most ``max_positions`` longs at a time, cash split evenly.

Signals are taken in entry order; one arriving while every slot is busy is skipped. A position
invests ``cash / free_slots`` at the entry price (incl. slippage), pays the fee on entry and exit
as a fraction of the traded notional (entry: ``units = cash / (price × (1 + fee))``), and settles
the event study's funding return on its entry notional at exit, and is marked to market on a regular
bar grid with the last trade price at or before each bar's end. Entries and exits use the exact
trade prices of the event study, so the portfolio and the event study agree trade by trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from signals.jit import njit

__all__ = ["PortfolioResult", "simulate_portfolio", "simulate_universe", "warm_universe"]


@njit(cache=True)
def _accept_nb(entry_ts, exit_ts, max_positions):
    """Greedy selection in entry order: accept when a slot is free (exits at or before entry free it)."""
    n = entry_ts.shape[0]
    accepted = np.zeros(n, np.bool_)
    open_exit = np.full(max_positions, -1, np.int64)
    for j in range(n):
        slot = -1
        for s in range(max_positions):
            if open_exit[s] >= 0 and open_exit[s] <= entry_ts[j]:
                open_exit[s] = -1
            if open_exit[s] < 0 and slot < 0:
                slot = s
        if slot >= 0:
            open_exit[slot] = exit_ts[j]
            accepted[j] = True
    return accepted


@njit(cache=True)
def _events_nb(entry_ts, exit_ts):
    """Entry and exit events of positions in time order; exits before entries at the same
    millisecond, so a freed slot's cash is reusable. Returns ``(ts, kind, pos, order)``, kind 0 exit, 1 entry."""
    n = entry_ts.shape[0]
    ev_ts = np.empty(2 * n, np.int64)
    ev_kind = np.empty(2 * n, np.int64)
    ev_pos = np.empty(2 * n, np.int64)
    for j in range(n):
        ev_ts[2 * j] = entry_ts[j]
        ev_kind[2 * j] = 1
        ev_pos[2 * j] = j
        ev_ts[2 * j + 1] = exit_ts[j]
        ev_kind[2 * j + 1] = 0
        ev_pos[2 * j + 1] = j
    order = np.argsort(ev_ts * 2 + ev_kind, kind="mergesort")
    return ev_ts, ev_kind, ev_pos, order


@njit(cache=True)
def _simulate_nb(entry_ts, exit_ts, entry_px, exit_px, funding, fee, init_cash, max_positions, bar_end_ts, bar_px):
    """Cash/units bookkeeping of accepted positions, then the equity curve on the bar grid."""
    n = entry_ts.shape[0]
    units = np.zeros(n)
    pnl = np.zeros(n)
    ev_ts, ev_kind, ev_pos, order = _events_nb(entry_ts, exit_ts)
    cash = init_cash
    n_open = 0
    held = 0.0
    alloc = np.zeros(n)
    cash_after = np.empty(2 * n)
    held_after = np.empty(2 * n)
    for e in range(2 * n):
        k = order[e]
        j = ev_pos[k]
        if ev_kind[k] == 1:
            a = cash / (max_positions - n_open)
            alloc[j] = a
            units[j] = a / (entry_px[j] * (1.0 + fee))  # the fee is paid on top of the notional
            cash -= a
            held += units[j]
            n_open += 1
        else:
            # Funding is settled on the position's entry notional (a fraction; negative = paid).
            proceeds = units[j] * exit_px[j] * (1.0 - fee) + units[j] * entry_px[j] * funding[j]
            pnl[j] = proceeds - alloc[j]
            cash += proceeds
            held -= units[j]
            n_open -= 1
        cash_after[e] = cash
        held_after[e] = held
    nb = bar_end_ts.shape[0]
    equity = np.empty(nb)
    exposure = np.zeros(nb)
    e = 0
    cur_cash = init_cash
    cur_held = 0.0
    for b in range(nb):
        while e < 2 * n and ev_ts[order[e]] <= bar_end_ts[b]:
            cur_cash = cash_after[e]
            cur_held = held_after[e]
            e += 1
        equity[b] = cur_cash + cur_held * bar_px[b]
        exposure[b] = 1.0 if cur_held > 0.0 else 0.0
    return units, pnl, alloc, equity, exposure


def _bar_prices(ts_ms: np.ndarray, price: np.ndarray, bar_end: np.ndarray) -> np.ndarray:
    """The last trade price at or before each bar end (the first price before the first trade)."""
    last = np.searchsorted(ts_ms, bar_end, side="right") - 1
    bar_px = np.where(last >= 0, price[np.maximum(last, 0)], np.nan)
    if np.isnan(bar_px).any():  # before the first trade: hold the first known price
        first = np.flatnonzero(~np.isnan(bar_px))
        bar_px[: first[0] if first.size else bar_px.size] = price[0] if price.size else np.nan
    return bar_px


@njit(cache=True)
def _simulate_multi_nb(
    entry_ts, exit_ts, entry_px, exit_px, funding, member, fee, init_cash, max_positions, bar_end_ts, bar_px
):
    """:func:`_simulate_nb` over several symbols: one cash, units held per symbol, marked per symbol."""
    n = entry_ts.shape[0]
    n_sym = bar_px.shape[0]
    units = np.zeros(n)
    pnl = np.zeros(n)
    ev_ts, ev_kind, ev_pos, order = _events_nb(entry_ts, exit_ts)
    cash = init_cash
    n_open = 0
    held = np.zeros(n_sym)
    alloc = np.zeros(n)
    cash_after = np.empty(2 * n)
    held_after = np.empty((2 * n, n_sym))
    for e in range(2 * n):
        k = order[e]
        j = ev_pos[k]
        m = member[j]
        if ev_kind[k] == 1:
            a = cash / (max_positions - n_open)
            alloc[j] = a
            units[j] = a / (entry_px[j] * (1.0 + fee))
            cash -= a
            held[m] += units[j]
            n_open += 1
        else:
            proceeds = units[j] * exit_px[j] * (1.0 - fee) + units[j] * entry_px[j] * funding[j]
            pnl[j] = proceeds - alloc[j]
            cash += proceeds
            held[m] -= units[j]
            n_open -= 1
        cash_after[e] = cash
        for s in range(n_sym):
            held_after[e, s] = held[s]
    nb = bar_end_ts.shape[0]
    equity = np.empty(nb)
    exposure = np.zeros(nb)
    e = 0
    cur_cash = init_cash
    cur = -1
    for b in range(nb):
        while e < 2 * n and ev_ts[order[e]] <= bar_end_ts[b]:
            cur_cash = cash_after[e]
            cur = e
            e += 1
        value = cur_cash
        busy = False
        if cur >= 0:
            for s in range(n_sym):
                value += held_after[cur, s] * bar_px[s, b]
                if held_after[cur, s] > 0.0:
                    busy = True
        equity[b] = value
        exposure[b] = 1.0 if busy else 0.0
    return units, pnl, alloc, equity, exposure


@dataclass
class PortfolioResult:
    equity: pd.Series  # indexed by bar end (UTC)
    exposure: np.ndarray
    positions: pd.DataFrame  # accepted positions with units, allocation and pnl
    periods_per_year: float
    # The mark price of each equity point: the last trade at or before it (a universe: one
    # ``price_<member>`` column per symbol).
    price: pd.Series | pd.DataFrame


def simulate_portfolio(
    study: pd.DataFrame,
    ts_ms: np.ndarray,
    price: np.ndarray,
    *,
    fee: float,
    init_cash: float,
    max_positions: int,
    bar_ms: int,
    start_ms: int,
    end_ms: int,
) -> PortfolioResult:
    """Simulate the positions of one horizon of an event study (rows with an exit)."""
    rows = study[study["exit_idx"] >= 0].sort_values(["entry_ts_ms", "signal"], kind="stable")
    entry_ts = rows["entry_ts_ms"].to_numpy(np.int64)
    exit_ts = rows["exit_ts_ms"].to_numpy(np.int64)
    accepted = _accept_nb(entry_ts, exit_ts, max_positions)
    pos = rows[accepted].copy()
    bar_end = np.arange(start_ms + bar_ms, end_ms + bar_ms, bar_ms, dtype=np.int64)
    bar_px = _bar_prices(ts_ms, price, bar_end)
    units, pnl, alloc, equity, exposure = _simulate_nb(
        pos["entry_ts_ms"].to_numpy(np.int64),
        pos["exit_ts_ms"].to_numpy(np.int64),
        pos["entry_price"].to_numpy(np.float64),
        pos["exit_price"].to_numpy(np.float64),
        np.nan_to_num(pos["funding_return"].to_numpy(np.float64)),
        float(fee),
        float(init_cash),
        int(max_positions),
        bar_end,
        bar_px,
    )
    pos["units"] = units
    pos["allocation"] = alloc
    pos["pnl"] = pnl
    pos["position_return"] = np.where(alloc > 0, pnl / np.where(alloc > 0, alloc, 1.0), np.nan)
    index = pd.to_datetime(bar_end, unit="ms", utc=True)
    # Prepend the starting point so the first bar's return is measured from init_cash.
    index = index.insert(0, pd.Timestamp(start_ms, unit="ms", tz="UTC"))
    eq = pd.Series(np.r_[init_cash, equity], index=index, name="equity")
    at_start = int(np.searchsorted(ts_ms, start_ms, side="right")) - 1
    start_px = price[max(at_start, 0)] if price.size else np.nan
    return PortfolioResult(
        eq,
        np.r_[0.0, exposure],
        pos.reset_index(drop=True),
        periods_per_year=365.0 * 86_400_000 / bar_ms,
        price=pd.Series(np.r_[start_px, bar_px], index=index, name="price"),
    )


def simulate_universe(
    studies: list[pd.DataFrame],
    tapes: list[tuple[np.ndarray, np.ndarray]],
    names: list[str],
    *,
    fee: float,
    init_cash: float,
    max_positions: int,
    bar_ms: int,
    start_ms: int,
    end_ms: int,
) -> PortfolioResult:
    """:func:`simulate_portfolio` over several symbols sharing the slots and the cash.

    ``studies[i]``: one horizon of symbol ``names[i]``'s event study; ``tapes[i]``: its
    ``(ts_ms, price)``. Signals are taken in entry order (ties: the symbols' order, then the
    signal); positions carry a ``symbol`` column; each is marked with its own symbol's price.
    """
    parts = []
    for i, st in enumerate(studies):
        rows = st[st["exit_idx"] >= 0].copy()
        rows.insert(0, "symbol", names[i])
        rows["_member"] = np.int64(i)
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True).sort_values(["entry_ts_ms", "_member", "signal"], kind="stable")
    accepted = _accept_nb(rows["entry_ts_ms"].to_numpy(np.int64), rows["exit_ts_ms"].to_numpy(np.int64), max_positions)
    pos = rows[accepted].copy()
    bar_end = np.arange(start_ms + bar_ms, end_ms + bar_ms, bar_ms, dtype=np.int64)
    bar_px = np.stack([_bar_prices(ts, px, bar_end) for ts, px in tapes]) if tapes else np.empty((0, len(bar_end)))
    units, pnl, alloc, equity, exposure = _simulate_multi_nb(
        pos["entry_ts_ms"].to_numpy(np.int64),
        pos["exit_ts_ms"].to_numpy(np.int64),
        pos["entry_price"].to_numpy(np.float64),
        pos["exit_price"].to_numpy(np.float64),
        np.nan_to_num(pos["funding_return"].to_numpy(np.float64)),
        pos["_member"].to_numpy(np.int64),
        float(fee),
        float(init_cash),
        int(max_positions),
        bar_end,
        np.ascontiguousarray(bar_px),
    )
    pos = pos.drop(columns="_member")
    pos["units"] = units
    pos["allocation"] = alloc
    pos["pnl"] = pnl
    pos["position_return"] = np.where(alloc > 0, pnl / np.where(alloc > 0, alloc, 1.0), np.nan)
    index = pd.to_datetime(bar_end, unit="ms", utc=True).insert(0, pd.Timestamp(start_ms, unit="ms", tz="UTC"))
    eq = pd.Series(np.r_[init_cash, equity], index=index, name="equity")
    marks = {}
    for i, (ts, px) in enumerate(tapes):
        at_start = int(np.searchsorted(ts, start_ms, side="right")) - 1
        marks[f"price_{names[i]}"] = np.r_[px[max(at_start, 0)] if px.size else np.nan, bar_px[i]]
    return PortfolioResult(
        eq,
        np.r_[0.0, exposure],
        pos.reset_index(drop=True),
        periods_per_year=365.0 * 86_400_000 / bar_ms,
        price=pd.DataFrame(marks, index=index),
    )


def warm_universe() -> None:
    """Load the compiled code :func:`simulate_universe` runs (numba's cache), on a two-trade example."""
    ts = np.array([0, 1], np.int64)
    px = np.array([1.0, 1.0])
    _accept_nb(ts, ts, 1)
    _simulate_multi_nb(ts, ts, px, px, px, ts * 0, 0.0, 1.0, 1, ts, np.ones((1, 2)))
