"""The whole pipeline on planted synthetic markets: synth → archive ingest → bt run.

A market with a planted drift of B bps after every whale must show a mean gross return of B
within four standard errors; a null market (same whales, no drift) must show no edge: its mean
gross return within four standard errors of 0, so that after fees it loses about the fees.
"""

from __future__ import annotations

import numpy as np
import pytest

from bt.config import parse_config
from bt.run import run_backtest
from datasets.lake import Lake
from datasets.sources.binance_archive import ingest_binance_archive
from datasets.synth import SynthParams, write_synth_archive

EFFECT_BPS = 40.0
HORIZON_S = 600


def _run(tmp_path, *, null: bool, seed: int):
    params = SynthParams(
        symbol="PLANTUSDT",
        start="2024-03-01",
        days=3,
        seed=seed,
        trades_per_s=1.0,
        plant_effect_bps=EFFECT_BPS,
        plant_horizon_s=HORIZON_S,
        whale_notional_usd=1_000_000,
        whale_rate_per_day=60,
        null=null,
    )
    write_synth_archive(tmp_path / "archive", params)
    lake = Lake(tmp_path / "lake")
    ingest_binance_archive(str(tmp_path / "archive"), "PLANTUSDT", params.start, params.end, lake, progress=False)
    cfg = parse_config(
        {
            "name": "planted" if not null else "null",
            "data": {
                "lake": str(tmp_path / "lake"),
                "exchange": "binance_usdm",
                "symbol": "PLANTUSDT",
                "start": "2024-03-01",
                "end": str(params.end),
            },
            "signal": {"whale": {"min_notional_usd": 1_000_000}},
            "backtest": {"horizon": f"{HORIZON_S}s", "fee_bps": 5, "bootstrap": 500},
        }
    )
    return run_backtest(cfg, results_dir=tmp_path / "results", log_mlflow=False, tearsheet=False, quiet=True)


def _gross(res):
    rows = res.study[res.study["horizon_ms"] == HORIZON_S * 1000]
    g = rows["gross_return"].to_numpy()
    return g[np.isfinite(g)]


@pytest.mark.parametrize("seed", [3])
def test_planted_effect_is_recovered(tmp_path, seed):
    res = _run(tmp_path, null=False, seed=seed)
    g = _gross(res)
    assert len(g) >= 150  # ~60 whales a day for 3 days, the last ones may run past the data
    se = g.std(ddof=1) / np.sqrt(len(g))
    assert abs(g.mean() - EFFECT_BPS / 1e4) < 4 * se, (g.mean(), se)
    assert res.metrics["mean_return"] == pytest.approx(g.mean() - 0.001)
    lo, hi = res.metrics["mean_return_ci95"]
    assert lo > 0, "a 40 bps effect with ~180 signals must be significant after 10 bps of fees"


@pytest.mark.parametrize("seed", [4])
def test_null_market_shows_no_edge_beyond_fees(tmp_path, seed):
    res = _run(tmp_path, null=True, seed=seed)
    g = _gross(res)
    assert len(g) >= 150
    se = g.std(ddof=1) / np.sqrt(len(g))
    assert abs(g.mean()) < 4 * se, (g.mean(), se)
    lo, hi = res.metrics["mean_return_ci95"]
    assert lo < -0.001 + 4 * se and hi > -0.001 - 4 * se
    assert res.metrics["mean_return"] < 0.0015  # no edge once the 10 bps round trip is paid
