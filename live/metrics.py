"""Counters, gauges and latency histograms of the live runner, rendered as Prometheus text.

Small on purpose: the runner is one process with one event loop, so nothing here locks.
Histograms keep Prometheus buckets for `/metrics` and the last raw samples for percentiles.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict

import numpy as np

__all__ = ["Metrics", "Histogram", "LATENCY_BUCKETS_S"]

#: Bucket upper bounds (seconds) of the latency histograms: 10 µs to 10 s.
LATENCY_BUCKETS_S = (
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """A Prometheus histogram that keeps the last `keep` raw samples for percentiles.

    `observe` runs on every frame, so it only stores the sample in a ring: bucket counts and
    the sum are folded in from the ring with NumPy every `FOLD_EVERY` samples (~50 µs, once in
    thousands of frames) and when the histogram is rendered.
    """

    FOLD_EVERY = 4096

    def __init__(self, name: str, help_text: str, buckets=LATENCY_BUCKETS_S, keep: int = 1 << 17):
        self.name = name
        self.help = help_text
        self.bounds = np.array(buckets, dtype=np.float64)
        self.n = 0
        self._keep = keep
        self._ring = array("d", bytes(8 * keep))
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # of the samples folded in so far
        self._sum = 0.0
        self._folded = 0  # samples folded in: the ring's samples from number `_folded` on are not yet
        self._fold_every = min(self.FOLD_EVERY, keep)

    def observe(self, value_s: float) -> None:
        n = self.n
        if n - self._folded == self._fold_every:
            self._fold()
        self._ring[n % self._keep] = value_s
        self.n = n + 1

    def _fold(self) -> None:
        """Count the samples not yet in the buckets (all still in the ring)."""
        k = self._keep
        pending = np.frombuffer(self._ring, dtype=np.float64)
        idx = (np.arange(self._folded, self.n) % k) if self.n - self._folded < k else slice(None)
        new = pending[idx]
        # a sample equal to a bound goes in that bound's bucket (le="bound"), as bisect_left puts it
        self._counts += np.bincount(np.searchsorted(self.bounds, new, side="left"), minlength=len(self._counts))
        self._sum += float(new.sum())
        self._folded = self.n

    def samples(self) -> np.ndarray:
        """The kept samples (the last `keep`), oldest first."""
        ring = np.frombuffer(self._ring, dtype=np.float64)
        k = self._keep
        if self.n <= k:
            return ring[: self.n].copy()
        i = self.n % k
        return np.concatenate([ring[i:], ring[:i]])

    def quantile(self, q: float) -> float:
        s = self.samples()
        return float(np.quantile(s, q)) if s.size else math.nan

    def render(self) -> list[str]:
        self._fold()
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cum = np.cumsum(self._counts)
        for b, c in zip(self.bounds, cum[:-1]):
            out.append(f'{self.name}_bucket{{le="{b:g}"}} {int(c)}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {int(cum[-1])}')
        out.append(f"{self.name}_sum {self._sum:.9g}")
        out.append(f"{self.name}_count {self.n}")
        return out


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels
    )
    return "{" + body + "}"


class Metrics:
    """Named counters and gauges with labels, and the runner's two latency histograms."""

    PREFIX = "whalebt_live_"

    HELP = {
        "frames_total": ("counter", "WebSocket frames received"),
        "bad_frames_total": ("counter", "frames that could not be parsed (counted and skipped)"),
        "trades_total": ("counter", "trades that reached the kernel"),
        "duplicates_total": ("counter", "trades dropped because their id was already processed"),
        "gaps_total": ("counter", "gaps detected in the exchange's trade ids"),
        "backfilled_trades_total": ("counter", "trades fetched over REST to fill gaps"),
        "gap_trades_unfilled_total": ("counter", "trades of gaps REST could not fill"),
        "kernel_rejects_total": ("counter", "trades the kernel refused (out of order or invalid)"),
        "events_total": ("counter", "whale events"),
        "signals_total": ("counter", "journaled decisions"),
        "suppressed_total": ("counter", "whale events not journaled (warm-up or already in the journal)"),
        "reconnects_total": ("counter", "WebSocket reconnects"),
        "connected": ("gauge", "1 while a WebSocket connection is open"),
        "ready": ("gauge", "1 once warm-up is over and signals are allowed"),
        "last_trade_ts_ms": ("gauge", "exchange time of the last trade processed"),
        "implausible_trades_total": ("counter", "trades refused as implausible ids, times or values (bad frames)"),
        "stuck_seconds": ("gauge", "seconds trades of the symbol kept arriving while the kernel took none"),
        "journal_holes_total": ("counter", "holes recorded in the journal: a restart that could not warm up"),
        "warmup_trades": ("gauge", "trades the warm-up ran through the kernel"),
        "silent": ("gauge", "1 while the connection brings no trade of the subscribed symbols"),
        "silent_connections_total": ("counter", "connections that brought no trade of the subscribed symbols"),
    }

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.receipt_to_decision = Histogram(
            self.PREFIX + "receipt_to_decision_seconds",
            "time from a frame's receipt to the decisions on all its trades (journal I/O and REST excluded)",
        )
        self.journal_fsync = Histogram(
            self.PREFIX + "journal_fsync_seconds",
            "time of one journal fdatasync (a group commit of the records decided in one burst of frames)",
        )
        self.exchange_to_receipt = Histogram(
            self.PREFIX + "exchange_to_receipt_seconds",
            "local receipt time minus the exchange's trade time (clock skew included)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
        )

    def inc(self, name: str, by: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        d = self.values[name]
        d[key] = d.get(key, 0) + by

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[name][tuple(sorted(labels.items()))] = value

    def get(self, name: str, **labels: str) -> float:
        """One series' value; without labels, the sum over all series of that name."""
        d = self.values.get(name, {})
        if labels:
            return d.get(tuple(sorted(labels.items())), 0)
        return sum(d.values())

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out: list[str] = []
        for name, (kind, help_text) in self.HELP.items():
            series = self.values.get(name)
            full = self.PREFIX + name
            out.append(f"# HELP {full} {help_text}")
            out.append(f"# TYPE {full} {kind}")
            if not series:
                out.append(f"{full} 0")
                continue
            for key in sorted(series):
                v = series[key]
                out.append(f"{full}{_labels(key)} {int(v) if float(v).is_integer() else repr(float(v))}")
        out += self.receipt_to_decision.render()
        out += self.journal_fsync.render()
        out += self.exchange_to_receipt.render()
        return "\n".join(out) + "\n"
