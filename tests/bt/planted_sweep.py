"""The planted 8-day market and the sweep config that the sweep and compare tests share."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DAYS = 8


@lru_cache(maxsize=2)
def market(null: bool):
    """8 days at 3 trades/s; whales of $1-2M followed by +60 bps over 30 min (none if null)."""
    from datasets.synth import SynthParams, generate_days

    p = SynthParams(
        days=DAYS, trades_per_s=3.0, seed=7, whale_rate_per_day=24, plant_effect_bps=60, plant_horizon_s=1800, null=null
    )
    days = list(generate_days(p))
    return {k: np.concatenate([d[1][k] for d in days]) for k in ("agg_trade_id", "ts_ms", "price", "qty", "side")}


def raw_config(**model_over) -> dict:
    model = {
        "threshold": {"min_signals": 10},
        "sweep": {
            # The rule catches organic large buys too; only the feature notional_usd tells the planted
            # whales apart, so the effect depends on an event feature.
            "whale": {"min_notional_usd": [250000, 500000]},
            "lgbm": {
                "num_leaves": {"low": 4, "high": 31, "log": True},
                "learning_rate": {"low": 0.02, "high": 0.2, "log": True},
                "num_boost_round": {"low": 30, "high": 150},
            },
            "threshold": {
                "policy": ["precision_target", "max_mean_return"],
                "precision_target": {"low": 0.3, "high": 0.7},
            },
            "cscv_blocks": 8,
            "seed": 3,
        },
    }
    model.update(model_over)
    return {
        "name": "sweep-test",
        "data": {"exchange": "binance_usdm", "symbol": "PLANTUSDT", "start": "2024-03-01", "end": "2024-03-08"},
        "signal": {"whale": {"min_notional_usd": 250000}},
        "backtest": {"horizon": "30m", "label_threshold": 0.004, "bootstrap": 200},
        "model": model,
    }


def write_lake(lake_dir: Path, null: bool = False) -> None:
    import pandas as pd

    from datasets.lake import Lake

    m = market(null)
    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "PLANTUSDT",
            "trade_id": m["agg_trade_id"],
            "ts_ms": m["ts_ms"],
            "price": m["price"],
            "qty": m["qty"],
            "side": m["side"],
        }
    )
    Lake(str(lake_dir)).write_trades(df)
