"""Planted whales: their times and the drift ramp after them, and the forward returns that measure it."""

from __future__ import annotations

import math

import numpy as np

from datasets.synth.calibration import DAY_S
from datasets.synth.params import SynthParams


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


def _ramp(t: np.ndarray, whales: np.ndarray, log_effect: float, horizon_s: float) -> np.ndarray:
    """Sum of the planted ramps at times ``t`` (whale gaps exceed the horizon: one partial ramp at most)."""
    if whales.size == 0 or log_effect == 0.0:
        return np.zeros_like(t)
    i = np.searchsorted(whales, t, side="right") - 1
    partial = np.clip((t - whales[np.maximum(i, 0)]) / horizon_s, 0.0, 1.0)
    return np.where(i >= 0, log_effect * (i + partial), 0.0)


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
