"""Benchmark the model path: single-event tree scoring and sweep throughput.

1. Scoring one whale event: the numba trees (:mod:`signals.trees_nb`) inside a compiled loop (as
   the kernel calls them), the same called from Python once per event, and ``Booster.predict``
   with ``num_threads=1`` on one row, for the default model size and a larger one.
2. Sweep throughput: trials per minute of ``bt.sweep.run_sweep`` on a planted synthetic market
   (default 30 days at 3 trades/s, ~7.8 M trades), two trials at a time (``n_jobs=2``: LightGBM
   and the numba kernels release the GIL). Reported with and without the one-off feature build.

    python bench/bench_model.py [--days 30] [--trades-per-s 3] [--trials 60] [--jobs 2] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
from numba import njit

from signals.trees_nb import ensemble_from_booster, predict_proba_row_nb


@njit(cache=True)
def _score_each_nb(X, ens):
    """Score rows one at a time, as the per-trade kernel scores each event it fires."""
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        out[i] = predict_proba_row_nb(X[i], ens)
    return out


def bench_scoring() -> None:
    import lightgbm as lgb

    from datasets.synth import SynthParams, generate_days
    from signals import WhaleParams, run_batch

    _, tr = next(iter(generate_days(SynthParams(days=1, trades_per_s=3.0, seed=11))))
    res = run_batch(
        tr["ts_ms"], tr["price"], tr["qty"], tr["side"], WhaleParams.from_dict({"min_notional_usd": 20_000})
    )
    X = res.event_features
    rng = np.random.default_rng(0)
    y = (rng.random(len(X)) < 0.3).astype(int)
    print(f"scoring: {len(X):,} kernel events of a 1-day synthetic market, {X.shape[1]} features")
    print(f"{'model':>22s} {'in kernel':>11s} {'from Python':>12s} {'Booster.predict':>16s} {'speed-up':>9s}")
    for rounds, leaves in ((200, 15), (200, 31), (500, 63)):
        b = lgb.train(
            {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": leaves, "min_data_in_leaf": 5},
            lgb.Dataset(X, y),
            num_boost_round=rounds,
        )
        ens = ensemble_from_booster(b)
        _score_each_nb(X[:2], ens)
        reps = max(1, 200_000 // len(X))
        t = time.perf_counter()
        for _ in range(reps):
            _score_each_nb(X, ens)
        in_kernel = (time.perf_counter() - t) / (reps * len(X)) * 1e6
        n = min(len(X), 5000)
        predict_proba_row_nb(X[0], ens)
        t = time.perf_counter()
        for i in range(n):
            predict_proba_row_nb(X[i], ens)
        from_py = (time.perf_counter() - t) / n * 1e6
        m = min(len(X), 1000)
        t = time.perf_counter()
        for i in range(m):
            b.predict(X[i : i + 1], num_threads=1)
        lgb_us = (time.perf_counter() - t) / m * 1e6
        name = f"{rounds} trees x {leaves} leaves"
        print(f"{name:>22s} {in_kernel:9.2f}us {from_py:10.2f}us {lgb_us:14.1f}us {lgb_us / in_kernel:8.0f}x")


def bench_sweep(days: int, trades_per_s: float, trials: int, jobs: int) -> None:
    from bt.config import parse_config
    from bt.sweep import run_sweep
    from datasets.synth import SynthParams, generate_days

    t = time.perf_counter()
    p = SynthParams(
        days=days, trades_per_s=trades_per_s, seed=7, whale_rate_per_day=24, plant_effect_bps=60, plant_horizon_s=1800
    )
    parts = list(generate_days(p))
    m = {k: np.concatenate([d[1][k] for d in parts]) for k in ("ts_ms", "price", "qty", "side")}
    print(
        f"\nsweep: {len(m['ts_ms']):,} trades ({days} days x {trades_per_s:g}/s planted market) "
        f"generated in {time.perf_counter() - t:.1f} s; {jobs} trials at a time on {os.cpu_count()} cores"
    )
    cfg = parse_config(
        {
            "name": "bench-sweep",
            "data": {"exchange": "binance_usdm", "symbol": "PLANTUSDT", "start": str(p.start), "end": str(p.end)},
            "signal": {"whale": {"min_notional_usd": 250000}},
            "backtest": {"horizon": "30m", "label_threshold": 0.004, "bootstrap": 500},
            "model": {
                "threshold": {"min_signals": 20},
                "sweep": {
                    "whale": {"min_notional_usd": [250000, 500000, 1000000]},
                    "horizon": ["30m", "1h"],
                    "lgbm": {
                        "num_leaves": {"low": 4, "high": 63, "log": True},
                        "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
                        "num_boost_round": {"low": 30, "high": 300},
                        "min_data_in_leaf": {"low": 5, "high": 100, "log": True},
                    },
                    "threshold": {
                        "policy": ["precision_target", "max_mean_return"],
                        "precision_target": {"low": 0.3, "high": 0.8},
                    },
                    "seed": 0,
                },
            },
        }
    )
    trades = SimpleNamespace(**m)
    # Warm-up: build the features of every whale rule and horizon once (what a long study amortises).
    t = time.perf_counter()
    _, _, cache = run_sweep(cfg, trades, n_trials=6, n_jobs=jobs, progress=True, summarize_after=False)
    for w in (250000, 500000, 1000000):
        for h in (1_800_000, 3_600_000):
            cache.full_table({"min_notional_usd": float(w), "cooldown_s": 0.0}, h)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    study, summary, _ = run_sweep(cfg, trades, n_trials=trials, n_jobs=jobs, progress=True, cache=cache)
    steady = time.perf_counter() - t
    n_new = trials  # a fresh in-memory study each call
    print(
        f"feature build + first 6 trials: {warm:.1f} s ({cache.misses} kernel runs for "
        f"{len(cache._tables)} (rule, horizon) tables)"
    )
    print(f"{n_new} trials + summary in {steady:.1f} s -> {60 * n_new / steady:.1f} trials/min (target >= 30)")
    t_ = summary.test
    print(
        f"winner: test mean return {t_['test_mean_return']:.5f} over {t_['test_n_signals']} signals vs "
        f"plain rule {t_['baseline_mean_return']:.5f}; DSR {t_['dsr']:.3f}, PBO "
        f"{t_.get('pbo', float('nan')):.3f} over {summary.n_trials} trials"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--trades-per-s", type=float, default=3.0)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args(argv)
    bench_scoring()
    if not args.skip_sweep:
        bench_sweep(args.days, args.trades_per_s, args.trials, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
