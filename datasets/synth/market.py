"""The order flow and price model: :class:`SynthMarket` yields trades day by day."""

from __future__ import annotations

from whalebt.errors import UserError
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from datasets.synth.calibration import DAY_S, _notional_cdf, _notional_ppf, load_calibration
from datasets.synth.params import SynthParams
from datasets.synth.whales import _ramp, _whale_times


@dataclass
class _State:
    """What carries from one generated day to the next."""

    pending: np.ndarray  # Hawkes events already drawn beyond the previous day's end
    side: int = 1
    x: float = 0.0  # log mid without the planted ramps
    last_t: float = 0.0
    next_agg_id: int = 1_000_000_000
    next_raw_id: int = 2_000_000_000


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
            raise UserError(f"unknown profile {params.profile!r}; calibrated profiles: {sorted(cal['profiles'])}")
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
