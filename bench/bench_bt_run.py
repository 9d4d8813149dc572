"""Benchmark `bt run` on a 10-day, 3 trades/s synthetic market (~2.6 M trades).

Prints wall time and peak RSS of a cold run (gold built, numba caches warm) and of a cached run
(silver and gold read from the lake), and the start-up time of `bt --help` against a bare
`python -c pass` measured in the same run.

    python bench/bench_bt_run.py [--days 10] [--trades-per-s 3] [--workdir .bench/bt_run]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from bt.config import load_config
from bt.run import run_backtest
cfg = load_config(sys.argv[1])
r = run_backtest(cfg, results_dir=sys.argv[2], log_mlflow=False, tearsheet=False, quiet=True)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cached": r.signals.gold_cached, "n_trades": len(r.signals.span),
                  "n_signals": r.metrics["n_signals"], "timings": r.timings_s}))
"""


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _child(cfg: Path, results: Path) -> dict:
    out = subprocess.run([PY, "-c", CHILD, str(cfg), str(results)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _startup(argv: list[str], n: int = 7) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--trades-per-s", type=float, default=3.0)
    ap.add_argument("--workdir", default=".bench/bt_run")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    end_day = 1 + args.days - 1
    print(f"== bt run benchmark: {args.days} days x {args.trades_per_s} trades/s (synthetic market)")
    t0 = time.perf_counter()
    _run([str(BIN / "datasets"), "synth", "--out", str(work / "archive"), "--symbol", "BENCHUSDT",
          "--start", "2024-03-01", "--days", str(args.days), "--trades-per-s", str(args.trades_per_s),
          "--seed", "1", "--whale-notional-usd", "1000000", "--plant-effect-bps", "100",
          "--plant-horizon-s", "3600"])
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    _run([str(BIN / "datasets"), "ingest", "binance-archive", "--root", str(work / "archive"), "--symbol",
          "BENCHUSDT", "--start", "2024-03-01", "--end", f"2024-03-{end_day:02d}", "--lake", str(work / "lake")])
    t_ingest = time.perf_counter() - t0
    cfg = work / "bench.yaml"
    cfg.write_text(
        "name: bench\n"
        f"data: {{lake: {work / 'lake'}, exchange: binance_usdm, symbol: BENCHUSDT, start: 2024-03-01, "
        f"end: 2024-03-{end_day:02d}}}\n"
        "signal: {whale: {min_notional_usd: 1000000, window_s: 5, q: 0.999}}\n"
        "backtest: {horizon: 1h, horizons: [5m, 15m], bootstrap: 2000}\n"
    )
    # Warm numba's on-disk caches once so 'cold' measures the work, not compilation.
    warm = work / "warm.yaml"
    warm.write_text(cfg.read_text().replace("q: 0.999", "q: 0.998"))
    _child(warm, work / "results")
    cold = _child(cfg, work / "results")
    cached = _child(cfg, work / "results")
    print(f"synth {t_synth:.1f} s, ingest {t_ingest:.1f} s, {cold['n_trades']:,} trades, "
          f"{cold['n_signals']:,} signals at 1h")
    print(f"{'bt run':<22}{'wall s':>10}{'peak RSS MB':>14}{'trades/s':>14}")
    for name, r in (("cold (gold built)", cold), ("cached (gold read)", cached)):
        print(f"{name:<22}{r['wall_s']:>10.2f}{r['rss_mb']:>14.0f}{r['n_trades'] / r['wall_s']:>14,.0f}")
    print(f"cached / cold wall: {cached['wall_s'] / cold['wall_s']:.2f}x; cold stage times: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cold["timings"].items()))
    base = _startup([PY, "-c", "pass"])
    bth = _startup([str(BIN / "bt"), "--help"])
    brun = _startup([str(BIN / "bt"), "run", "--help"])
    print(f"start-up: python -c pass {base * 1000:.0f} ms, bt --help {bth * 1000:.0f} ms "
          f"(+{(bth - base) * 1000:.0f} ms), bt run --help {brun * 1000:.0f} ms; target bt --help < 500 ms")


if __name__ == "__main__":
    main()
