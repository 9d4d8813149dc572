"""Real recorded trades → the calibrated market profile (``datasets/synth_calibration.json``)."""

from __future__ import annotations

from whalebt.errors import UserError
import gzip
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from signals.jit import njit

CALIBRATION_PATH = Path(__file__).resolve().parent.parent / "synth_calibration.json"
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
        raise UserError(f"{path}: no '@trade' frames found; expected an hftbacktest USD-M stream recording")
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
        raise UserError(
            2, "synth calibration not found; regenerate it with `python -m datasets.synth RECORDING.txt.gz ...`", str(p)
        ) from None
