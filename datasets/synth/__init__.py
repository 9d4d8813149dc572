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

Modules, each importing only those before it: ``calibration`` (real data → profile),
``params`` (:class:`SynthParams`), ``whales`` (planted times, drift ramp, :class:`ForwardReturns`),
``market`` (:class:`SynthMarket`), ``archive`` (:func:`write_synth_archive`).
"""

from datasets.synth.archive import CSV_HEADER, SynthResult, archive_relpath, write_synth_archive
from datasets.synth.calibration import (
    CALIBRATION_PATH,
    aggregate_trades,
    calibrate,
    load_calibration,
    market_stats,
    read_trade_stream,
)
from datasets.synth.market import SynthMarket, generate_days
from datasets.synth.params import SynthParams
from datasets.synth.whales import ForwardReturns

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
