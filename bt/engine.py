"""Event study of long signals (docs/spec.md §3): entry, exit, costs and labels for every signal.

One pass evaluates every horizon of the config; the result is a long table with one row per
(signal, horizon), from which :mod:`bt.metrics` computes statistics and :mod:`bt.portfolio`
simulates positions. Nothing here reads files or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.durations import format_duration
from signals.outcome import EXIT_REASONS, entry_exit

_CODES = sorted(EXIT_REASONS)  # -3 (dropped_gap) .. 2 (stop_loss)

__all__ = ["Costs", "event_study"]


@dataclass(frozen=True)
class Costs:
    """Trading costs as fractions: ``fee`` per side, ``slippage`` added to the entry price."""

    fee: float = 0.0005
    slippage: float = 0.0

    @classmethod
    def from_bps(cls, fee_bps: float, slippage_bps: float) -> "Costs":
        return cls(fee_bps / 1e4, slippage_bps / 1e4)


def event_study(
    ts_ms: np.ndarray,
    price: np.ndarray,
    trigger_idx: np.ndarray,
    *,
    horizons_ms: list[int],
    latency_ms: int = 0,
    costs: Costs = Costs(),
    label_threshold: float = 0.01,
    take_profit: float | None = None,
    stop_loss: float | None = None,
    funding: "FundingSeries | None" = None,
    trigger_ts_ms: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
) -> pd.DataFrame:
    """Evaluate long signals fired at ``trigger_idx`` (indices into the trade arrays).

    Returns one row per (signal, horizon) with ``signal`` (position in ``trigger_idx``),
    ``horizon``, ``entry_idx``, ``entry_ts_ms``, ``entry_price`` (incl. slippage), ``exit_idx``,
    ``exit_ts_ms``, ``exit_price``, ``exit_reason``, ``gross_return`` (``exit/entry - 1``),
    ``funding_return`` (0 without funding data), ``net_return`` (gross − 2 × fee + funding) and
    ``label`` (gross ≥ ``label_threshold``). Dropped signals keep a row with NaN returns and
    ``exit_reason`` ``dropped_*``: metrics skip them, reports can count them.

    Cross-venue study (events on one exchange, prices on another): pass the trigger times in
    ``trigger_ts_ms`` and, as ``trigger_idx``, each trigger's last trade of this tape at or before
    it (-1 if none).

    ``coverage``: the tape's covered intervals, a (k, 2) int64 array of ``[from_ms, to_ms)``
    (``TradeSpan.coverage``). A signal whose window (trigger to entry + horizon) is not inside one
    of them is dropped as ``dropped_past_data`` (runs past the last covered time) or
    ``dropped_gap`` (runs into a hole). Default: covered up to the last trade.
    """
    trigger_idx = np.asarray(trigger_idx, dtype=np.int64)
    entry, exit_, reason = entry_exit(
        ts_ms,
        price,
        trigger_idx,
        latency_ms=latency_ms,
        horizons_ms=horizons_ms,
        slippage=costs.slippage,
        take_profit=take_profit,
        stop_loss=stop_loss,
        trigger_ts_ms=trigger_ts_ms,
        coverage=coverage,
    )
    n, nh = exit_.shape
    rows = []
    has_entry = entry >= 0
    safe_entry = np.where(has_entry, entry, 0)
    entry_px = price[safe_entry] * (1.0 + costs.slippage)
    for k, h in enumerate(horizons_ms):
        ok = exit_[:, k] >= 0
        safe_exit = np.where(ok, exit_[:, k], 0)
        exit_px = price[safe_exit]
        gross = np.where(ok, exit_px / entry_px - 1.0, np.nan)
        entry_ts = np.where(has_entry, ts_ms[safe_entry], -1)
        exit_ts = np.where(ok, ts_ms[safe_exit], -1)
        fund = np.zeros(n)
        if funding is not None and len(funding):
            # Dropped signals (no exit) are measured over an empty window, then set to NaN.
            fund = np.where(ok, funding.return_between(np.where(ok, entry_ts, 0), np.where(ok, exit_ts, 0)), np.nan)
        net = gross - 2.0 * costs.fee + fund
        rows.append(
            pd.DataFrame(
                {
                    "signal": np.arange(n, dtype=np.int64),
                    "horizon": format_duration(h),
                    "horizon_ms": np.int64(h),
                    "trigger_idx": trigger_idx,
                    "entry_idx": entry,
                    "entry_ts_ms": entry_ts,
                    "entry_price": np.where(has_entry, entry_px, np.nan),
                    "exit_idx": exit_[:, k],
                    "exit_ts_ms": exit_ts,
                    "exit_price": np.where(ok, exit_px, np.nan),
                    "exit_reason": pd.Categorical.from_codes(
                        reason[:, k].astype(np.int64) - _CODES[0], [EXIT_REASONS[c] for c in _CODES]
                    ),
                    "gross_return": gross,
                    "funding_return": fund,
                    "net_return": net,
                    "label": np.where(ok, gross >= label_threshold, False),
                }
            )
        )
    if not rows:
        raise ValueError("event_study needs at least one horizon")
    return pd.concat(rows, ignore_index=True)


class FundingSeries:
    """Funding-rate prints of one symbol; a long pays ``rate`` at every print it spans."""

    def __init__(self, ts_ms: np.ndarray, rate: np.ndarray):
        order = np.argsort(ts_ms, kind="stable")
        self.ts_ms = np.asarray(ts_ms, dtype=np.int64)[order]
        self.rate = np.asarray(rate, dtype=np.float64)[order]

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def return_between(self, entry_ts_ms: np.ndarray, exit_ts_ms: np.ndarray) -> np.ndarray:
        """Minus the sum of rates with ``entry < t <= exit`` (positive rate: the long pays)."""
        from bt.funding import funding_return

        return funding_return(entry_ts_ms, exit_ts_ms, self.ts_ms, self.rate)
