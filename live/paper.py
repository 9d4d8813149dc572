"""Paper trading of `long` decisions on the live stream, by the docs/spec.md §3 rules of the backtest.

For each `long` signal: entry at the first trade in a later millisecond than trigger time +
`entry_latency_ms`, at its price x (1 + slippage); exit at the last trade at or before
entry time + horizon, or earlier at the first trade reaching take-profit / stop-loss. The
outcome is known when the first trade past the horizon arrives (the batch side,
`signals.outcome.entry_exit`, drops signals whose horizon runs past its data; here they
stay open). Net return = exit / entry - 1 - 2 x fee; funding is not included.

Outcomes go to a JSONL file, one line per closed position; `live report` reads it.
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PaperRules", "PaperBook", "read_outcomes"]


@dataclass(frozen=True)
class PaperRules:
    """The backtest section of a run config, as the paper book needs it."""

    horizon_ms: int
    entry_latency_ms: int = 0
    fee: float = 0.0005
    slippage: float = 0.0
    take_profit: float | None = None
    stop_loss: float | None = None
    label_threshold: float = 0.01

    @classmethod
    def from_config(cls, config: Any) -> "PaperRules":
        b = config.backtest
        return cls(
            int(b.horizon_ms),
            int(b.entry_latency_ms),
            b.fee_bps / 1e4,
            b.slippage_bps / 1e4,
            b.take_profit,
            b.stop_loss,
            b.label_threshold,
        )


class _Position:
    __slots__ = ("symbol", "trigger_id", "trigger_ts", "due_ts", "entry_id", "entry_ts", "entry_px", "end_ts")

    def __init__(self, symbol: str, trigger_id: int, trigger_ts: int, due_ts: int):
        self.symbol, self.trigger_id, self.trigger_ts, self.due_ts = symbol, trigger_id, trigger_ts, due_ts
        # Set when the position is entered; only entered positions are in the open heap.
        self.entry_id: int = -1
        self.entry_ts: int = -1
        self.end_ts: int = -1
        self.entry_px: float = float("nan")

    def __lt__(self, other: "_Position") -> bool:
        return (self.end_ts, self.trigger_id) < (other.end_ts, other.trigger_id)


def read_outcomes(path: str | os.PathLike[str], config_id: str | None = None) -> list[dict]:
    """Closed positions in a paper file (only `config_id`'s if given)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if config_id is None or rec.get("config_id") == config_id:
                out.append(rec)
    return out


class PaperBook:
    """Open paper positions of one runner; `on_trade` before the kernel decides on that trade."""

    def __init__(self, rules: PaperRules, exchange: str, config_id: str, path: str | os.PathLike[str] | None):
        self.rules = rules
        self.exchange = exchange
        self.config_id = config_id
        self.path = Path(path) if path else None
        self.pending: dict[str, list[_Position]] = {}  # waiting for their entry trade, in order
        self.open: dict[str, list[_Position]] = {}  # heap by end time
        self.closed: list[dict] = []
        self.prev: dict[str, tuple[int, int, float]] = {}  # symbol -> the trade before the current one
        self.done_ids: set[tuple[str, int]] = {
            (r["symbol"], int(r["trade_id"])) for r in (read_outcomes(self.path, config_id) if self.path else [])
        }
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def add_signal(self, symbol: str, trade_id: int, ts_ms: int) -> None:
        """A `long` decision at trade `trade_id` (after `on_trade` has seen that trade)."""
        if (symbol, trade_id) in self.done_ids:
            return
        self.pending.setdefault(symbol, []).append(
            _Position(symbol, trade_id, ts_ms, ts_ms + self.rules.entry_latency_ms)
        )

    def on_trade(self, symbol: str, trade_id: int, ts_ms: int, price: float) -> None:
        r = self.rules
        heap = self.open.get(symbol)
        if heap:
            # a position whose horizon this trade passes exits at the trade before it, which is the
            # last one at or before entry + horizon (every earlier trade was checked the same way)
            while heap and ts_ms > heap[0].end_ts:
                pos = heapq.heappop(heap)
                self._close(pos, *self.prev[symbol], "horizon")
            if heap and (r.take_profit or r.stop_loss):
                keep = []
                for pos in heap:
                    if r.take_profit and price >= pos.entry_px * (1.0 + r.take_profit):
                        self._close(pos, trade_id, ts_ms, price, "take_profit")
                    elif r.stop_loss and price <= pos.entry_px * (1.0 - r.stop_loss):
                        self._close(pos, trade_id, ts_ms, price, "stop_loss")
                    else:
                        keep.append(pos)
                if len(keep) != len(heap):
                    heapq.heapify(keep)
                    self.open[symbol] = keep
        pend = self.pending.get(symbol)
        if pend:
            still = []
            for pos in pend:
                if ts_ms > pos.due_ts:  # a later millisecond than trigger + latency
                    pos.entry_id, pos.entry_ts = trade_id, ts_ms
                    pos.entry_px = price * (1.0 + r.slippage)
                    pos.end_ts = ts_ms + r.horizon_ms
                    heapq.heappush(self.open.setdefault(symbol, []), pos)
                else:
                    still.append(pos)
            self.pending[symbol] = still
        self.prev[symbol] = (trade_id, ts_ms, price)

    def _close(self, pos: _Position, exit_id: int, exit_ts: int, exit_px: float, reason: str) -> None:
        gross = exit_px / pos.entry_px - 1.0
        rec = {
            "exchange": self.exchange,
            "symbol": pos.symbol,
            "trade_id": pos.trigger_id,
            "ts_ms": pos.trigger_ts,
            "config_id": self.config_id,
            "entry_trade_id": pos.entry_id,
            "entry_ts_ms": pos.entry_ts,
            "entry_price": pos.entry_px,
            "exit_trade_id": exit_id,
            "exit_ts_ms": exit_ts,
            "exit_price": exit_px,
            "exit_reason": reason,
            "gross_return": gross,
            "net_return": gross - 2.0 * self.rules.fee,
            "label": int(gross >= self.rules.label_threshold),
        }
        self.closed.append(rec)
        self.done_ids.add((pos.symbol, pos.trigger_id))
        if self._fh is not None:
            self._fh.write(json.dumps(rec) + "\n")
            self._fh.flush()

    def n_open(self) -> int:
        return sum(map(len, self.open.values())) + sum(map(len, self.pending.values()))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
