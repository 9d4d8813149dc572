"""Two small synthetic symbols in a temp lake, shared by the universe, parallel and bench tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

SYMBOLS = ("AAAUSDT", "BBBUSDT")


@lru_cache(maxsize=4)
def market(symbol: str, days: int = 2, trades_per_s: float = 1.0) -> pd.DataFrame:
    """``days`` of a planted market for ``symbol`` (seeded by its name) as bronze rows."""
    from datasets.synth import SynthParams, generate_days

    seed = sum(map(ord, symbol))
    profile = "BTCUSDT" if symbol == SYMBOLS[0] else "ETHUSDT"
    p = SynthParams(
        symbol=symbol,
        days=days,
        trades_per_s=trades_per_s,
        seed=seed,
        whale_rate_per_day=30,
        plant_effect_bps=40,
        plant_horizon_s=900,
        whale_notional_usd=300_000,
        profile=profile,
    )
    parts = [d for _, d in generate_days(p)]
    cat = {k: np.concatenate([d[k] for d in parts]) for k in ("agg_trade_id", "ts_ms", "price", "qty", "side")}
    return pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": symbol,
            "trade_id": cat["agg_trade_id"],
            "ts_ms": cat["ts_ms"],
            "price": cat["price"],
            "qty": cat["qty"],
            "side": cat["side"],
        }
    )


def write_lake(lake_dir: Path, days: int = 2, trades_per_s: float = 1.0) -> None:
    from datasets.lake import Lake

    lake = Lake(str(lake_dir))
    for sym in SYMBOLS:
        lake.write_trades(market(sym, days, trades_per_s))


def raw_config(lake_dir: Path, days: int = 2, **data) -> dict:
    end = pd.Timestamp("2024-03-01") + pd.Timedelta(days=days - 1)
    return {
        "name": "uni",
        "data": {
            "lake": str(lake_dir),
            "exchange": "binance_usdm",
            "start": "2024-03-01",
            "end": str(end.date()),
            **data,
        },
        "signal": {"whale": {"min_notional_usd": 250_000}},
        "backtest": {"horizon": "15m", "horizons": ["5m"], "bootstrap": 100},
        "portfolio": {"max_positions": 2},
    }
