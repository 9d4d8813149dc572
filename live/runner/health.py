"""Observability: `/health`, Prometheus metrics and the counters the exit log and tests read."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from live.runner.core import Runner
    from live.runner.ids import SymbolFeed


def stuck_s(feed: SymbolFeed, now_ns: int) -> float:
    """Seconds that rows of the symbol kept arriving while the kernel took none (0: advancing)."""
    if not feed.last_row_ns or feed.last_row_ns <= feed.last_take_ns:
        return 0.0
    return (now_ns - feed.last_take_ns) * 1e-9


def health(self: Runner) -> tuple[bool, dict[str, Any]]:
    """(ok, body): ok when warmed up, connected, fresh, not silent and every symbol advancing.

    ``reasons`` says why not ok; ``warnings`` lists what is wrong without making it so (a hole
    in the journal after a restart stays true for the rest of the run).
    """
    now_ns = time.perf_counter_ns()
    frame_age = (now_ns - self.last_frame_ns) * 1e-9 if self.last_frame_ns else None
    max_age = self.opts.max_frame_age_s
    fresh = frame_age is not None and frame_age <= max_age
    reasons: list[str] = []
    if not self.ready:
        reasons.append("warming up")
    if not self.connected:
        reasons.append("not connected")
    if not fresh:
        reasons.append("no frame yet" if frame_age is None else f"no frame for {frame_age:.0f} s (limit {max_age:g} s)")
    if self.silent:
        reasons.append(self.silent)
    for s, f in self.feeds.items():
        st = stuck_s(f, now_ns)
        if st > max_age:
            reasons.append(
                f"{s}: trades keep arriving but none was taken for {st:.0f} s "
                f"({f.n_dups} repeats, {f.n_implausible} implausible, {f.n_rejects} refused by the kernel)"
            )
    warnings = [
        f"{h['symbol']}: hole in the journal from ts_ms {h['from_ts_ms']} to {h['to_ts_ms']} ({h['reason']})"
        for h in self.holes
    ]
    ok = not reasons
    wall_ms = self.opts.clock_ms()
    return ok, {
        "ok": ok,
        "reasons": reasons,
        "warnings": warnings,
        "ready": self.ready,
        "connected": self.connected,
        "exchange": self.adapter.exchange,
        "config_id": self.decider.config_id,
        "model": self.decider.model_uri,
        "last_frame_age_s": None if frame_age is None else round(frame_age, 3),
        "symbols": {
            s: {
                "trades": f.n_trades,
                "last_trade_ts_ms": f.last_ts_ms,
                "last_trade_age_s": None if f.last_ts_ms is None else round((wall_ms - f.last_ts_ms) / 1000, 3),
                "signals": sum(f.n_signals.values()),
                "live": f.live,
                "stuck_s": round(stuck_s(f, now_ns), 3),
                "holes": sum(1 for h in self.holes if h["symbol"] == s),
            }
            for s, f in self.feeds.items()
        },
    }


def render_metrics(self: Runner) -> str:
    m = self.metrics
    ex = self.adapter.exchange
    m.set("frames_total", self.n_frames, exchange=ex)
    m.set("bad_frames_total", self.n_bad, exchange=ex)
    m.set("reconnects_total", self.n_reconnects, exchange=ex)
    m.set("connected", int(self.connected), exchange=ex)
    m.set("ready", int(self.ready), exchange=ex)
    m.set("silent", int(bool(self.silent)), exchange=ex)
    m.set("silent_connections_total", self.n_silent, exchange=ex)
    now_ns = time.perf_counter_ns()
    for s, f in self.feeds.items():
        m.set("trades_total", f.n_trades, symbol=s)
        m.set("duplicates_total", f.n_dups, symbol=s)
        m.set("gaps_total", f.n_gaps, symbol=s)
        m.set("backfilled_trades_total", f.n_backfilled, symbol=s)
        m.set("gap_trades_unfilled_total", f.n_unfilled, symbol=s)
        m.set("kernel_rejects_total", f.n_rejects, symbol=s)
        m.set("implausible_trades_total", f.n_implausible, symbol=s)
        m.set("stuck_seconds", round(stuck_s(f, now_ns), 3), symbol=s)
        m.set("journal_holes_total", sum(1 for h in self.holes if h["symbol"] == s), symbol=s)
        m.set("warmup_trades", self.warm_rows.get(s, 0), symbol=s)
        m.set("events_total", f.n_events, symbol=s)
        m.set("suppressed_total", f.n_suppressed, symbol=s)
        for d, n in f.n_signals.items():
            m.set("signals_total", n, symbol=s, decision=d)
        if f.last_ts_ms is not None:
            m.set("last_trade_ts_ms", f.last_ts_ms, symbol=s)
    return m.render()


def counters(self: Runner) -> dict[str, int]:
    """Totals over symbols (tests and the exit log)."""
    fs = self.feeds.values()
    return {
        "frames": self.n_frames,
        "bad_frames": self.n_bad,
        "reconnects": self.n_reconnects,
        "trades": sum(f.n_trades for f in fs),
        "duplicates": sum(f.n_dups for f in fs),
        "gaps": sum(f.n_gaps for f in fs),
        "backfilled": sum(f.n_backfilled for f in fs),
        "unfilled": sum(f.n_unfilled for f in fs),
        "events": sum(f.n_events for f in fs),
        "signals": sum(sum(f.n_signals.values()) for f in fs),
        "suppressed": sum(f.n_suppressed for f in fs),
        "rejects": sum(f.n_rejects for f in fs),
        "implausible": sum(f.n_implausible for f in fs),
        "holes": len(self.holes),
    }
