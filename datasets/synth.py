"""A seeded synthetic perpetual-futures market, calibrated to real recorded trades.

The market is a sequence of aggTrade rows made of four parts, each fitted by
:func:`calibrate` to the recorded Binance USD-M ``@trade`` minutes in ``tests/data/real``:

* **Arrivals.** Taker orders arrive as a self-exciting (Hawkes) process with an
  exponential kernel, simulated as a cluster process (immigrants at rate ``mu``, each
  event has Poisson(``branching``) children after Exp(``decay_per_s``) delays). Each order
  prints a geometric number of aggTrades in the same millisecond (a sweep over levels).
* **Sides.** The aggressor side of successive orders is a symmetric Markov chain with
  the measured order-level persistence; every aggTrade of a sweep shares its order's side.
* **Sizes.** Notional in USD follows the recorded quantiles (log-linear between 24 knots up
  to the 95th percentile) with a Pareto tail above it (Hill estimate of the tail index);
  quantity is notional / price on the qty step.
* **Price.** The log mid is a Brownian diffusion plus a permanent impact
  ``kappa * side * sqrt(notional_usd)`` per trade, split in the proportions a regression of
  1 s returns on 1 s signed flow found; buys print at the ask, sells at the bid, sweeps walk
  one tick per aggTrade. ``kappa`` is set from a fixed-seed pilot run of the order flow at
  the requested rate, so that the per-second volatility stays at the calibrated value
  whatever ``trades_per_s`` is asked for.

Planted effect: whale taker buys (notional uniform in ``[X, 2X]``) arrive at
``whale_rate_per_day`` with gaps of at least ``plant_horizon_s``; after each, the log mid
gains a linear ramp of ``ln(1 + B/1e4)`` over ``H`` seconds (permanent), so the mean simple
return from the trade after a whale to ``H`` seconds later is ``B`` bps. Organic trades are
drawn below ``X``, so every trade with notional >= X is a planted whale. With ``null``
(or B = 0) the same whales arrive at the same times and nothing follows them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from numba import njit

__all__ = [
    "CALIBRATION_PATH",
    "CSV_HEADER",
    "SynthParams",
    "SynthResult",
    "aggregate_trades",
    "calibrate",
    "generate_days",
    "load_calibration",
    "market_stats",
    "read_trade_stream",
    "ForwardReturns",
    "SynthMarket",
    "archive_relpath",
    "write_synth_archive",
]

CALIBRATION_PATH = Path(__file__).with_name("synth_calibration.json")
CSV_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
DAY_S = 86_400
STAT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
_TAIL_Q = 0.95


# --------------------------------------------------------------------------- real data
def read_trade_stream(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Raw ``@trade`` frames of an hftbacktest recording (gzip, ``<ns> <json>`` per line).

    Returns arrays ``trade_id, ts_ms, price, qty, buyer_maker`` ordered by trade id,
    duplicates (re-sent frames) removed, non-``MARKET`` prints (liquidations) left out.
    """
    ids, ts, px, qty, mk = [], [], [], [], []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        for line in fh:
            if '@trade"' not in line:
                continue
            frame = json.loads(line.split(" ", 1)[1])
            d = frame["data"]
            if d.get("X", "MARKET") != "MARKET":
                continue
            ids.append(d["t"])
            ts.append(d["T"])
            px.append(float(d["p"]))
            qty.append(float(d["q"]))
            mk.append(bool(d["m"]))
    if not ids:
        raise ValueError(f"{path}: no '@trade' frames found; expected an hftbacktest USD-M stream recording")
    tid = np.asarray(ids, np.int64)
    order = np.argsort(tid, kind="stable")
    keep = np.ones(len(order), bool)
    keep[1:] = np.diff(tid[order]) != 0
    o = order[keep]
    return {
        "trade_id": tid[o],
        "ts_ms": np.asarray(ts, np.int64)[o],
        "price": np.asarray(px)[o],
        "qty": np.asarray(qty)[o],
        "buyer_maker": np.asarray(mk, bool)[o],
    }


def aggregate_trades(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Merge consecutive raw trades with equal (time, price, maker side) into aggTrade rows.

    Same as Binance's aggTrade definition; returns ``ts_ms, price, qty, side, n_raw``.
    """
    t, p, m = raw["ts_ms"], raw["price"], raw["buyer_maker"]
    new = np.ones(len(t), bool)
    new[1:] = (t[1:] != t[:-1]) | (p[1:] != p[:-1]) | (m[1:] != m[:-1])
    start = np.flatnonzero(new)
    return {
        "ts_ms": t[start],
        "price": p[start],
        "qty": np.add.reduceat(raw["qty"], start),
        "side": np.where(m[start], -1, 1).astype(np.int8),
        "n_raw": np.diff(np.append(start, len(t))),
    }


def _orders(ts_ms: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Start index of each taker order: a run of aggTrades with the same ms and side."""
    new = np.ones(len(ts_ms), bool)
    new[1:] = (ts_ms[1:] != ts_ms[:-1]) | (side[1:] != side[:-1])
    return np.flatnonzero(new)


def _per_second(ts_ms: np.ndarray, price: np.ndarray, values: np.ndarray | None = None):
    """Last log price and summed ``values`` per whole second, gaps forward-filled."""
    idx = ts_ms // 1000 - ts_ms[0] // 1000
    n = int(idx[-1]) + 1
    last = np.full(n, np.nan)
    ends = np.flatnonzero(np.diff(idx, append=idx[-1] + 1))  # last trade of each busy second
    last[idx[ends]] = np.log(price[ends])
    filled = np.maximum.accumulate(np.where(np.isnan(last), -1, np.arange(n)))
    last = last[filled]
    counts = np.bincount(idx, minlength=n)
    summed = np.bincount(idx, weights=values, minlength=n) if values is not None else None
    return last, counts, summed


def market_stats(ts_ms: np.ndarray, price: np.ndarray, qty: np.ndarray, side: np.ndarray) -> dict:
    """The figures a synthetic market is checked against (the same code measures real data).

    ``rate_per_s`` (aggTrades per second), ``zero_gap_share`` (share of consecutive aggTrades
    in the same ms), ``fano_1s`` (variance / mean of trades per second: burstiness),
    ``side_persistence`` (P(next aggressor side == previous)), ``buy_share``,
    ``notional_q`` (USD notional quantiles), ``vol_1s_bps`` (std of 1 s log returns).
    """
    ts_ms = np.asarray(ts_ms, np.int64)
    span_s = max((ts_ms[-1] - ts_ms[0]) / 1000.0, 1e-3)
    notional = np.asarray(price) * np.asarray(qty)
    last, counts, _ = _per_second(ts_ms, price)
    r = np.diff(last)
    return {
        "n_trades": int(len(ts_ms)),
        "span_s": float(span_s),
        "rate_per_s": float(len(ts_ms) / span_s),
        "zero_gap_share": float(np.mean(np.diff(ts_ms) == 0)),
        "fano_1s": float(counts.var() / counts.mean()),
        "side_persistence": float(np.mean(side[1:] == side[:-1])),
        "buy_share": float(np.mean(side > 0)),
        "notional_q": {f"{q:g}": float(np.quantile(notional, q)) for q in STAT_QUANTILES},
        "vol_1s_bps": float(r.std() * 1e4),
    }


# --------------------------------------------------------------------------- calibration
@njit(cache=True)
def _hawkes_nll_nb(t, mu, a1, b1, a2, b2, span):
    """Negative log-likelihood of a Hawkes process with a two-exponential kernel on ``[0, span]``.

    Kernel ``a1 exp(-b1 s) + a2 exp(-b2 s)``; the O(n) recursion of Ozaki (1979).
    """
    ll = 0.0
    r1 = 0.0
    r2 = 0.0
    for i in range(t.size):
        if i > 0:
            d = t[i] - t[i - 1]
            r1 = math.exp(-b1 * d) * (1.0 + r1)
            r2 = math.exp(-b2 * d) * (1.0 + r2)
        ll += math.log(mu + a1 * r1 + a2 * r2)
    comp = mu * span
    for i in range(t.size):
        comp += a1 / b1 * (1.0 - math.exp(-b1 * (span - t[i]))) + a2 / b2 * (1.0 - math.exp(-b2 * (span - t[i])))
    return comp - ll


def _fit_hawkes(t_s: np.ndarray) -> dict:
    """MLE of (mu, branching and decay of a fast and a slow exponential kernel)."""
    from scipy.optimize import minimize

    t = t_s - t_s[0]
    span = float(t[-1]) + 1e-3

    def unpack(z):
        return (
            math.exp(z[0]),
            1.0 / (1.0 + math.exp(-z[1])),
            math.exp(z[2]),
            1.0 / (1.0 + math.exp(-z[3])),
            math.exp(z[4]),
        )

    def nll(z):
        mu, n1, b1, n2, b2 = unpack(z)
        if n1 + n2 >= 0.98:  # keep the process stationary
            return 1e18
        return _hawkes_nll_nb(t, mu, n1 * b1, b1, n2 * b2, b2, span)

    best = None
    for z0 in ((1.0, -1.5, math.log(100.0), -0.5, 0.0), (0.0, 0.0, math.log(30.0), -1.0, math.log(0.1))):
        res = minimize(
            nll, np.array(z0), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000}
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None  # two starting points were tried
    mu, n1, b1, n2, b2 = unpack(best.x)
    if b1 < b2:  # name the kernels by speed
        n1, b1, n2, b2 = n2, b2, n1, b1
    return {"mu_per_s": mu, "fast_branching": n1, "fast_decay_per_s": b1, "slow_branching": n2, "slow_decay_per_s": b2}


def _sweep_pmf(alpha: float, j_max: int) -> np.ndarray:
    j = np.arange(1, j_max + 1, dtype=float)
    return (j**-alpha - (j + 1) ** -alpha) / (1 - (j_max + 1.0) ** -alpha)


def _fit_sweeps(k: np.ndarray) -> dict:
    """aggTrades per order: 1 with probability ``p_single``, else 1 + a discrete Pareto on [1, j_max].

    The tail index is set so that the model's mean equals the recorded mean (the mean drives
    the share of same-millisecond gaps and the order rate), not by likelihood.
    """
    from scipy.optimize import brentq

    j = k[k > 1] - 1
    j_max = int(j.max())
    grid = np.arange(1, j_max + 1)
    alpha = brentq(lambda a: float(np.dot(grid, _sweep_pmf(a, j_max))) - float(j.mean()), 1e-3, 20.0, xtol=1e-12)
    p1 = float(np.mean(k == 1))
    mean = p1 + (1 - p1) * (1 + float(np.dot(grid, _sweep_pmf(alpha, j_max))))
    return {"p_single": p1, "tail_alpha": float(alpha), "j_max": j_max, "model_mean": mean}


_KNOTS_Q = np.concatenate([[0.0, 0.005, 0.01, 0.025], np.linspace(0.05, _TAIL_Q, 20)])


def _notional_ppf(u: np.ndarray, size_model: dict) -> np.ndarray:
    """Inverse CDF of notional: log-linear between stored quantile knots, Pareto above the last."""
    knots_q, knots_ln = np.asarray(size_model["knots_q"]), np.log(size_model["knots_usd"])
    u0, alpha = size_model["knots_usd"][-1], size_model["tail_alpha"]
    p_tail = 1.0 - knots_q[-1]
    out = np.exp(np.interp(u, knots_q, knots_ln))
    tail = u > knots_q[-1]
    out[tail] = u0 * np.maximum(1.0 - (u[tail] - knots_q[-1]) / p_tail, 1e-300) ** (-1.0 / alpha)
    return out


def _notional_cdf(x: float, size_model: dict) -> float:
    knots_q, knots_usd = size_model["knots_q"], size_model["knots_usd"]
    if x <= knots_usd[-1]:
        return float(np.interp(math.log(x), np.log(knots_usd), knots_q))
    return float(knots_q[-1] + (1 - knots_q[-1]) * (1 - (knots_usd[-1] / x) ** size_model["tail_alpha"]))


def _fit_sizes(notional: np.ndarray) -> dict:
    """Empirical quantile knots for the body; a Pareto tail (Hill estimate) above the 95th percentile."""
    knots = np.quantile(notional, _KNOTS_Q)
    u0 = float(knots[-1])
    tail = notional[notional > u0]
    return {
        "knots_q": [float(q) for q in _KNOTS_Q],
        "knots_usd": [float(k) for k in knots],
        "tail_alpha": float(1.0 / np.mean(np.log(tail / u0))),
    }


def _grid_step(values: np.ndarray, decimals: int = 8) -> float:
    u = np.unique(np.round(values, decimals))
    d = np.diff(u)
    return float(np.round(d[d > 0].min(), decimals))


def _calibrate_one(raw: dict[str, np.ndarray]) -> dict:
    agg = aggregate_trades(raw)
    ts, px, qty, side = agg["ts_ms"], agg["price"], agg["qty"], agg["side"]
    stats = market_stats(ts, px, qty, side)
    starts = _orders(ts, side)
    notional = px * qty
    # Impact: regress 1 s log returns on 1 s signed sqrt-notional flow (no intercept).
    flow = side * np.sqrt(notional)
    last, _, f1 = _per_second(ts, px, flow)
    r, f = np.diff(last), f1[1:]
    kappa = float(np.dot(r, f) / np.dot(f, f))
    resid_var = float(np.var(r - kappa * f))
    total_var = float(np.var(r))
    order_side = side[starts]
    return {
        "price_level": float(np.median(px)),
        "tick": _grid_step(px),
        "qty_step": _grid_step(qty),
        "rate_per_s": stats["rate_per_s"],
        "sweep_mean": float(len(ts) / len(starts)),
        "sweeps": _fit_sweeps(np.diff(np.append(starts, len(ts)))),
        "raw_per_agg": float(np.mean(agg["n_raw"])),
        "order_side_persistence": float(np.mean(order_side[1:] == order_side[:-1])),
        "hawkes": _fit_hawkes(ts[starts] / 1000.0),
        "sizes": _fit_sizes(notional),
        "impact": {
            "kappa_per_sqrt_usd": kappa,
            "flow_var_share": 1.0 - resid_var / total_var,
            "diffusion_bps_per_sqrt_s": math.sqrt(resid_var) * 1e4,
        },
        "stats": stats,
    }


def calibrate(paths: Sequence[str | os.PathLike[str]]) -> dict:
    """Fit the generator's parameters to recorded ``@trade`` streams, one profile per symbol.

    Args:
        paths: hftbacktest-format recordings (see ``tests/data/real/LICENSES.md``).

    Returns:
        ``{"version", "sources": [{"file", "sha256"}], "profiles": {SYMBOL: {...}}}``; a profile
        holds the fitted model (``hawkes``, ``sizes``, ``impact``, ``sweep_mean``, ...) and the
        ``stats`` of :func:`market_stats` that a generated market is checked against.
    """
    profiles, sources = {}, []
    for path in paths:
        raw = read_trade_stream(path)
        name = Path(path).name
        symbol = name.split("_")[2].upper() if name.count("_") >= 3 else name
        profiles[symbol] = _calibrate_one(raw)
        sources.append({"file": name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})
    return {
        "version": 1,
        "note": "Derived figures only. Source recordings: hftbacktest examples, MIT licence, "
        "Copyright (c) 2022 nkaz001@protonmail.com.",
        "sources": sources,
        "profiles": profiles,
    }


def load_calibration(path: str | os.PathLike[str] | None = None) -> dict:
    """The stored calibration (``datasets/synth_calibration.json`` unless ``path`` is given)."""
    p = Path(path) if path else CALIBRATION_PATH
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            2, "synth calibration not found; regenerate it with `python -m datasets.synth RECORDING.txt.gz ...`", str(p)
        ) from None


# --------------------------------------------------------------------------- generator
@dataclass(frozen=True)
class SynthParams:
    """What to generate. Validated on construction (``ValueError`` names the bad field).

    Attributes:
        symbol: upper case, no separators (``PLANTUSDT``).
        start: first UTC day. days: number of days.
        seed: the whole market is a function of the seed and these parameters.
        trades_per_s: mean aggTrades per second (the recorded BTCUSDT minutes had ~30).
        plant_effect_bps: drift after each planted whale, in bps of simple return.
        plant_horizon_s: seconds over which that drift builds up.
        whale_notional_usd: planted whales have notional uniform in [X, 2X]; organic trades stay below X.
        whale_rate_per_day: mean number of planted whales per day.
        null: plant the whales but no drift (a control market).
        profile: which calibrated symbol to imitate (``BTCUSDT`` or ``ETHUSDT``).
        start_price: first price; default the profile's median price.
    """

    symbol: str = "PLANTUSDT"
    start: dt.date = dt.date(2024, 3, 1)
    days: int = 10
    seed: int = 0
    trades_per_s: float = 3.0
    plant_effect_bps: float = 30.0
    plant_horizon_s: float = 3600.0
    whale_notional_usd: float = 1_000_000.0
    whale_rate_per_day: float = 6.0
    null: bool = False
    profile: str = "BTCUSDT"
    start_price: float | None = None

    def __post_init__(self):
        if not self.symbol or not self.symbol.isalnum() or self.symbol != self.symbol.upper():
            raise ValueError(f"symbol must be upper case letters and digits (like PLANTUSDT); got {self.symbol!r}")
        if not isinstance(self.start, dt.date):
            object.__setattr__(self, "start", dt.date.fromisoformat(str(self.start)))
        checks = [
            ("days", self.days, 1 <= self.days <= 3660, "between 1 and 3660"),
            ("trades_per_s", self.trades_per_s, 0 < self.trades_per_s <= 500, "in (0, 500]"),
            ("plant_horizon_s", self.plant_horizon_s, 1 <= self.plant_horizon_s <= DAY_S, "between 1 and 86400"),
            ("whale_notional_usd", self.whale_notional_usd, self.whale_notional_usd >= 1000, "at least 1000"),
            ("whale_rate_per_day", self.whale_rate_per_day, self.whale_rate_per_day >= 0, "0 or more"),
            ("plant_effect_bps", self.plant_effect_bps, -5000 < self.plant_effect_bps <= 5000, "in (-5000, 5000]"),
        ]
        for name, value, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}; got {value}")
        max_rate = DAY_S / (1.25 * self.plant_horizon_s)
        if self.whale_rate_per_day >= max_rate:
            raise ValueError(
                f"whale_rate_per_day {self.whale_rate_per_day:g} is too high for plant_horizon_s "
                f"{self.plant_horizon_s:g}: planted effects must not overlap (gaps of at least 1.25 x horizon), "
                f"so use fewer than {max_rate:.1f} whales per day or a shorter horizon"
            )

    @property
    def effect_bps(self) -> float:
        """The drift actually planted (0 for a null market)."""
        return 0.0 if self.null else float(self.plant_effect_bps)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)


@dataclass
class _State:
    """What carries from one generated day to the next."""

    pending: np.ndarray  # Hawkes events already drawn beyond the previous day's end
    side: int = 1
    x: float = 0.0  # log mid without the planted ramps
    last_t: float = 0.0
    next_agg_id: int = 1_000_000_000
    next_raw_id: int = 2_000_000_000


def _whale_times(p: SynthParams) -> np.ndarray:
    """Planted whale times (s since the start), each with its whole horizon inside the span."""
    if p.whale_rate_per_day <= 0:
        return np.empty(0)
    rng = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(1,)))
    min_gap = 1.25 * p.plant_horizon_s
    mean_gap = DAY_S / p.whale_rate_per_day
    last_ok = p.days * DAY_S - p.plant_horizon_s - 60.0
    out, t = [], rng.uniform(0, mean_gap)
    while t <= last_ok:
        out.append(t)
        t += min_gap + rng.exponential(mean_gap - min_gap)
    return np.asarray(out)


def _hawkes_cluster(rng, hawkes: dict, mu: float, d0: float, d1: float) -> np.ndarray:
    """Event times of a two-kernel Hawkes process: immigrants in [d0, d1) and all their descendants."""
    n1, b1 = hawkes["fast_branching"], hawkes["fast_decay_per_s"]
    n2, b2 = hawkes["slow_branching"], hawkes["slow_decay_per_s"]
    gen = d0 + rng.random(rng.poisson(mu * (d1 - d0))) * (d1 - d0)
    out = [gen]
    while gen.size:
        kids = np.repeat(gen, rng.poisson(n1 + n2, gen.size))
        rate = np.where(rng.random(kids.size) < n1 / (n1 + n2), b1, b2)
        gen = kids + rng.exponential(1.0, kids.size) / rate
        out.append(gen)
    return np.concatenate(out)


def _sweep_sizes(rng, sweeps: dict, n: int) -> np.ndarray:
    a, j_max = sweeps["tail_alpha"], sweeps["j_max"]
    u = rng.random(n) * (1 - (j_max + 1.0) ** -a)
    tail = 1 + np.floor((1 - u) ** (-1.0 / a)).astype(np.int64)
    return np.where(rng.random(n) < sweeps["p_single"], 1, np.minimum(tail, j_max + 1))


def _order_sides(rng, persistence: float, n: int, prev: int) -> np.ndarray:
    """A symmetric two-state Markov chain of ±1, drawn as geometric run lengths."""
    if n == 0:
        return np.empty(0, np.int8)
    chunks = []
    total = 0
    while total < n:
        r = rng.geometric(1.0 - persistence, max(16, int((n - total) * (1 - persistence) * 1.1)))
        chunks.append(r)
        total += int(r.sum())
    runs = np.concatenate(chunks)
    first = prev if rng.random() < persistence else -prev
    # The first run continues `prev` only in its sign; its length is a fresh geometric draw.
    signs = first * np.where(np.arange(runs.size) % 2 == 0, 1, -1)
    return np.repeat(signs, runs)[:n].astype(np.int8)


def _ramp(t: np.ndarray, whales: np.ndarray, log_effect: float, horizon_s: float) -> np.ndarray:
    """Sum of the planted ramps at times ``t`` (whale gaps exceed the horizon: one partial ramp at most)."""
    if whales.size == 0 or log_effect == 0.0:
        return np.zeros_like(t)
    i = np.searchsorted(whales, t, side="right") - 1
    partial = np.clip((t - whales[np.maximum(i, 0)]) / horizon_s, 0.0, 1.0)
    return np.where(i >= 0, log_effect * (i + partial), 0.0)


def _expand(t_ord: np.ndarray, k_ord: np.ndarray):
    """Orders -> aggTrades: times, index of each order's first aggTrade, position in the sweep."""
    first = np.cumsum(k_ord) - k_ord
    pos = np.arange(int(k_ord.sum())) - np.repeat(first, k_ord)
    return np.repeat(t_ord, k_ord), first, pos


def _impact_kappa(prof: dict, trades_per_s: float, u_cap: float) -> float:
    """Impact per sqrt(USD) that gives the calibrated flow share of 1 s variance at this rate.

    The flow variance is measured on a pilot run with a fixed seed, so ``kappa`` depends on the
    rate and the whale cap only, never on the user's seed.
    """
    rng = np.random.default_rng(np.random.SeedSequence(20240808, spawn_key=(2,)))
    span = float(np.clip(400_000 / trades_per_s, 3600, 6 * 3600))
    mu = _immigrant_rate(prof, trades_per_s)
    ev = np.sort(_hawkes_cluster(rng, prof["hawkes"], mu, 0.0, span))
    ev = ev[ev < span]
    k = _sweep_sizes(rng, prof["sweeps"], ev.size)
    s = _order_sides(rng, prof["order_side_persistence"], ev.size, 1)
    t, _, _ = _expand(ev, k)
    flow = np.repeat(s, k) * np.sqrt(_notional_ppf(rng.random(t.size) * u_cap, prof["sizes"]))
    per_s = np.bincount(t.astype(np.int64), weights=flow, minlength=int(span))
    target = prof["impact"]["flow_var_share"] * (prof["stats"]["vol_1s_bps"] * 1e-4) ** 2
    return math.sqrt(target / per_s.var())


def _immigrant_rate(prof: dict, trades_per_s: float) -> float:
    h = prof["hawkes"]
    return trades_per_s / prof["sweeps"]["model_mean"] * (1 - h["fast_branching"] - h["slow_branching"])


class SynthMarket:
    """A synthetic market: derived parameters on construction, trades day by day from :meth:`days`.

    Attributes:
        params: what was asked for. profile: the calibrated profile used.
        kappa_per_sqrt_usd: impact per trade for this rate (see :func:`_impact_kappa`).
        whale_times_s: planted whale times, seconds since ``params.start`` 00:00 UTC.
    """

    def __init__(self, params: SynthParams, calibration: dict | None = None):
        cal = calibration or load_calibration()
        if params.profile not in cal["profiles"]:
            raise ValueError(f"unknown profile {params.profile!r}; calibrated profiles: {sorted(cal['profiles'])}")
        self.params = params
        self.calibration_sha256 = hashlib.sha256(json.dumps(cal, sort_keys=True).encode()).hexdigest()
        prof = self.profile = cal["profiles"][params.profile]
        self.u_cap = _notional_cdf(params.whale_notional_usd, prof["sizes"])
        self.kappa_per_sqrt_usd = _impact_kappa(prof, params.trades_per_s, self.u_cap)
        self.whale_times_s = _whale_times(params)
        inv_tick = round(1 / prof["tick"])
        self.start_price = params.start_price or round(prof["price_level"] * inv_tick) / inv_tick

    def days(self) -> Iterator[tuple[dt.date, dict]]:
        """Yield ``(date, trades)`` per UTC day; trades are NumPy arrays in aggTrade order.

        Arrays: ``agg_trade_id, ts_ms, price, qty, first_trade_id, last_trade_id, side`` (+1 taker
        buy) and ``whale`` (bool, planted). Day ``d`` does not depend on ``params.days``, except
        that no whale is planted in the last ``plant_horizon_s + 60`` seconds of the span.
        """
        params, prof = self.params, self.profile
        inv_tick, inv_step = round(1 / prof["tick"]), round(1 / prof["qty_step"])
        hawkes, sweeps, sizes = prof["hawkes"], prof["sweeps"], prof["sizes"]
        mu = _immigrant_rate(prof, params.trades_per_s)
        kappa, u_cap, whales = self.kappa_per_sqrt_usd, self.u_cap, self.whale_times_s
        sigma = prof["impact"]["diffusion_bps_per_sqrt_s"] * 1e-4
        log_effect = math.log1p(params.effect_bps / 1e4)
        st = _State(pending=np.empty(0), x=math.log(self.start_price))
        start_ms = int(dt.datetime.combine(params.start, dt.time(), dt.timezone.utc).timestamp() * 1000)
        for day in range(params.days):
            rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(0, day)))
            d0, d1 = day * float(DAY_S), (day + 1) * float(DAY_S)
            ev = np.sort(np.concatenate([st.pending, _hawkes_cluster(rng, hawkes, mu, d0, d1)]))
            cut = np.searchsorted(ev, d1)
            t_org, st.pending = ev[:cut], ev[cut:]
            w = whales[(whales >= d0) & (whales < d1)]
            # Orders: organic then planted, merged in time (a whale is a single aggTrade).
            t_ord = np.concatenate([t_org, w])
            k_ord = np.concatenate([_sweep_sizes(rng, sweeps, t_org.size), np.ones(w.size, np.int64)])
            s_ord = np.concatenate(
                [_order_sides(rng, prof["order_side_persistence"], t_org.size, st.side), np.ones(w.size, np.int8)]
            )
            is_w = np.concatenate([np.zeros(t_org.size, bool), np.ones(w.size, bool)])
            o = np.argsort(t_ord, kind="stable")
            t_ord, k_ord, s_ord, is_w = t_ord[o], k_ord[o], s_ord[o], is_w[o]
            if t_org.size:
                st.side = int(s_ord[~is_w][-1])
            t, first, pos = _expand(t_ord, k_ord)
            n = t.size
            side = np.repeat(s_ord, k_ord)
            whale = np.repeat(is_w, k_ord)
            notional = _notional_ppf(rng.random(n) * u_cap, sizes)
            notional[whale] = params.whale_notional_usd * (1.0 + rng.random(int(whale.sum())))
            impact = np.where(whale, 0.0, kappa * side * np.sqrt(notional))
            diff = sigma * np.sqrt(np.diff(np.concatenate([[st.last_t], t]))) * rng.standard_normal(n)
            pre = (
                st.x
                + np.cumsum(diff)
                + (np.cumsum(impact) - impact)
                + _ramp(t, whales, log_effect, params.plant_horizon_s)
            )
            base = np.repeat(pre[first], k_ord)  # a sweep walks the book from the mid it found
            ticks = np.floor(np.exp(base) * inv_tick).astype(np.int64) + np.where(side > 0, 1 + pos, -pos)
            price = np.maximum(ticks, 1) / inv_tick
            # Organic sizes stay below the whale threshold; whale sizes stay at or above it.
            cap = np.ceil(params.whale_notional_usd / price * inv_step).astype(np.int64) - 1
            steps = np.minimum(np.maximum(np.rint(notional / price * inv_step), 1).astype(np.int64), cap)
            steps[whale] = np.ceil(notional[whale] / price[whale] * inv_step).astype(np.int64)
            n_raw = rng.geometric(1.0 / prof["raw_per_agg"], n)
            last_raw = st.next_raw_id + np.cumsum(n_raw) - 1
            trades = {
                "agg_trade_id": st.next_agg_id + np.arange(n, dtype=np.int64),
                "ts_ms": start_ms + np.floor(t * 1000).astype(np.int64),
                "price": price,
                "qty": steps / inv_step,
                "first_trade_id": last_raw - n_raw + 1,
                "last_trade_id": last_raw,
                "side": side.astype(np.int8),
                "whale": whale,
            }
            if n:
                st.x += float(diff.sum() + impact.sum())
                st.last_t = float(t[-1])
                st.next_agg_id += n
                st.next_raw_id = int(last_raw[-1]) + 1
            yield params.start + dt.timedelta(days=day), trades


def generate_days(params: SynthParams, calibration: dict | None = None) -> Iterator[tuple[dt.date, dict]]:
    """Shorthand for ``SynthMarket(params, calibration).days()``."""
    return SynthMarket(params, calibration).days()


# --------------------------------------------------------------------------- measurement
class ForwardReturns:
    """Forward returns after chosen trades, fed one day at a time (memory: one day).

    For a trigger trade: entry is the next trade, exit is the last trade at or before
    entry time + ``horizon_s`` (docs/spec.md §3 with zero latency, slippage and fees). A trigger
    whose horizon runs past the data is dropped.
    """

    def __init__(self, horizon_s: float):
        self.horizon_ms = int(round(horizon_s * 1000))
        self._open: list[list] = []  # [entry_price or None, deadline_ms or None, exit_price]
        self._returns: list[float] = []
        self._last_ts: int | None = None

    def add(self, ts_ms: np.ndarray, price: np.ndarray, trigger: np.ndarray) -> None:
        if ts_ms.size == 0:
            return
        still = []
        for rec in self._open:
            if rec[0] is None:  # the trigger was the last trade seen so far
                rec[0], rec[1] = float(price[0]), int(ts_ms[0]) + self.horizon_ms
            j = np.searchsorted(ts_ms, rec[1], side="right") - 1
            if j >= 0:
                rec[2] = float(price[j])
            if rec[1] >= ts_ms[-1]:  # later trades may still fall inside the horizon
                still.append(rec)
            else:
                self._returns.append(rec[2] / rec[0] - 1)
        self._open = still
        for i in np.flatnonzero(trigger):
            if i + 1 >= ts_ms.size:
                self._open.append([None, None, None])
                continue
            deadline = int(ts_ms[i + 1]) + self.horizon_ms
            j = np.searchsorted(ts_ms, deadline, side="right") - 1
            if deadline >= ts_ms[-1]:
                self._open.append([float(price[i + 1]), deadline, float(price[j])])
            else:
                self._returns.append(float(price[j] / price[i + 1] - 1))
        self._last_ts = int(ts_ms[-1])

    @property
    def returns(self) -> list[float]:
        """Returns of the triggers whose horizon ends within the data seen so far."""
        done = [
            r[2] / r[0] - 1
            for r in self._open
            if r[0] is not None and self._last_ts is not None and r[1] <= self._last_ts
        ]
        return self._returns + done

    def summary(self) -> dict:
        """``n``, ``mean_bps`` and its standard error ``se_bps`` over the completed triggers."""
        r = np.asarray(self.returns) * 1e4
        if r.size == 0:
            return {"n": 0, "mean_bps": None, "se_bps": None}
        se = float(r.std(ddof=1) / math.sqrt(r.size)) if r.size > 1 else None
        return {"n": int(r.size), "mean_bps": float(r.mean()), "se_bps": se}


# --------------------------------------------------------------------------- archive writer
@dataclass
class SynthResult:
    """What :func:`write_synth_archive` wrote."""

    out_dir: Path
    manifest_path: Path
    files: list[dict] = field(default_factory=list)  # date, relpath, sha256, rows, whales
    n_trades: int = 0
    n_whales: int = 0
    measured: dict = field(default_factory=dict)  # ForwardReturns.summary() after the whales
    manifest: dict = field(default_factory=dict)


def archive_relpath(symbol: str, day: dt.date) -> str:
    """Where Binance's public archive keeps a day of USD-M aggTrades."""
    return f"data/futures/um/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day.isoformat()}.zip"


def _csv_bytes(trades: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(
        {
            "agg_trade_id": trades["agg_trade_id"],
            "price": trades["price"],
            "quantity": trades["qty"],
            "first_trade_id": trades["first_trade_id"],
            "last_trade_id": trades["last_trade_id"],
            "transact_time": trades["ts_ms"],
            "is_buyer_maker": trades["side"] < 0,
        }
    )
    sink = pa.BufferOutputStream()  # much faster than a Python BytesIO for pyarrow
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return (CSV_HEADER + "\n").encode() + sink.getvalue().to_pybytes()


def _zip_bytes(member: str, data: bytes, day: dt.date) -> bytes:
    info = zipfile.ZipInfo(member, date_time=(day.year, day.month, day.day, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data, compresslevel=1)  # level 6 is 5x slower for 20 % less size
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_day(out: Path, symbol: str, day: dt.date, trades: dict) -> dict:
    rel = archive_relpath(symbol, day)
    zdata = _zip_bytes(Path(rel).with_suffix(".csv").name, _csv_bytes(trades), day)
    sha = hashlib.sha256(zdata).hexdigest()
    _atomic_write(out / rel, zdata)
    _atomic_write(out / (rel + ".CHECKSUM"), f"{sha}  {Path(rel).name}\n".encode())
    return {
        "date": day.isoformat(),
        "relpath": rel,
        "sha256": sha,
        "rows": int(trades["ts_ms"].size),
        "whales": int(trades["whale"].sum()),
    }


def _collect(res: SynthResult, file_info: dict, on_day) -> None:
    res.files.append(file_info)
    if on_day:
        on_day(dt.date.fromisoformat(file_info["date"]), file_info["rows"])


def write_synth_archive(
    out_dir: str | os.PathLike[str],
    params: SynthParams,
    calibration: dict | None = None,
    *,
    on_day: Callable[[dt.date, int], None] | None = None,
) -> SynthResult:
    """Generate a synthetic market and write it in Binance's archive layout under ``out_dir``.

    Writes one ``SYM-aggTrades-YYYY-MM-DD.zip`` (CSV with header) plus ``.CHECKSUM`` per day,
    each atomically, then the manifest ``out_dir/synth.json`` (``markets[SYMBOL]``: parameters,
    seed, planted and measured effect, whale list, files). Deterministic for given params.

    Args:
        on_day: called after each day is written with ``(date, rows)`` (progress).
    """
    out = Path(out_dir)
    market = SynthMarket(params, calibration)
    res = SynthResult(out_dir=out, manifest_path=out / "synth.json")
    fwd = ForwardReturns(params.plant_horizon_s)
    whales, stats_day1 = [], None
    # Encoding and compressing a day (pyarrow and zlib release the GIL) overlaps the next day's
    # generation; at most two generated days wait for encoding.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        for day, tr in market.days():
            futures.append(pool.submit(_write_day, out, params.symbol, day, tr))
            wi = np.flatnonzero(tr["whale"])
            whales += [
                {
                    "agg_trade_id": int(tr["agg_trade_id"][i]),
                    "ts_ms": int(tr["ts_ms"][i]),
                    "price": float(tr["price"][i]),
                    "qty": float(tr["qty"][i]),
                    "notional_usd": round(float(tr["price"][i] * tr["qty"][i]), 2),
                }
                for i in wi
            ]
            fwd.add(tr["ts_ms"], tr["price"], tr["whale"])
            if stats_day1 is None and tr["ts_ms"].size > 1:
                stats_day1 = market_stats(tr["ts_ms"], tr["price"], tr["qty"], tr["side"])
            res.n_trades += int(tr["ts_ms"].size)
            del tr
            while len(futures) >= 2 or (futures and futures[0].done()):
                _collect(res, futures.pop(0).result(), on_day)
        for f in futures:
            _collect(res, f.result(), on_day)
    res.n_whales = len(whales)
    res.measured = fwd.summary()
    p = params
    res.manifest = {
        "synthetic": True,
        "generator": "whalebt datasets.synth (version 1)",
        "exchange": "binance_usdm",
        "symbol": p.symbol,
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "seed": p.seed,
        "params": {**asdict(p), "start": p.start.isoformat()},
        "plant": {
            "effect_bps": p.effect_bps,
            "null": p.null or p.effect_bps == 0,
            "horizon_s": p.plant_horizon_s,
            "whale_notional_usd": p.whale_notional_usd,
            "whale_notional_range_usd": [p.whale_notional_usd, 2 * p.whale_notional_usd],
            "whale_rate_per_day": p.whale_rate_per_day,
            "n_whales": res.n_whales,
            "organic_notional_below_usd": p.whale_notional_usd,
            "expected_mean_forward_return_bps": p.effect_bps,
            "measured_forward_return": res.measured,
            "definition": "simple return from the trade after each planted whale (a taker buy with "
            "notional >= whale_notional_usd; no organic trade reaches it) to the last trade "
            "at or before that trade's time + horizon_s; the drift is a linear ramp of "
            "ln(1 + effect_bps/1e4) in the log mid over horizon_s, permanent",
        },
        "model": {
            "profile": p.profile,
            "calibration_sha256": market.calibration_sha256,
            "start_price": market.start_price,
            "tick": market.profile["tick"],
            "qty_step": market.profile["qty_step"],
            "kappa_per_sqrt_usd": market.kappa_per_sqrt_usd,
        },
        "stats_first_day": stats_day1,
        "files": res.files,
        "whales": whales,
    }
    doc: dict[str, Any] = {"synthetic": True, "markets": {}}
    if res.manifest_path.exists():
        try:
            old = json.loads(res.manifest_path.read_text())
            doc["markets"] = dict(old.get("markets", {}))
        except (ValueError, AttributeError):
            pass  # not ours or damaged: replaced below
    doc["markets"][p.symbol] = res.manifest
    _atomic_write(res.manifest_path, (json.dumps(doc, indent=1) + "\n").encode())
    return res


if __name__ == "__main__":  # regenerate the stored calibration: python -m datasets.synth FILE...
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m datasets.synth RECORDING.txt.gz ... (writes datasets/synth_calibration.json)")
    CALIBRATION_PATH.write_text(json.dumps(calibrate(sys.argv[1:]), indent=1) + "\n")
    print(f"wrote {CALIBRATION_PATH}")
