"""Benchmark the observatory: a results folder of 500 runs and a lake of a year of daily partitions.

Builds both in a scratch folder (run folders: a realistic ``metrics.json`` each, ~16 KB with 30
partitions, 100 coverage intervals and 4 horizons; the lake: 366 daily bronze partitions of a
small synthetic tape, each with its quality report), starts ``bt ui`` as a process and times:

* the server: first (cold: every ``metrics.json`` parsed, every report read) and second (warm)
  request of ``/`` and ``/lake``;
* Chromium, when Debian's ``chromium``/``chromium-driver`` are installed: navigation start to the
  load event of each page, as a user opening it sees it.

Target: each page opens in under 2 s. Also times ``bt --help`` and ``bt ui --help``.

    python bench/bench_ui.py [--runs 500] [--days 366]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def _metrics(i: int) -> dict:
    day_ms = 86_400_000
    start = 1_704_067_200_000 + (i % 300) * day_ms
    fig = {
        "n_signals": 100 + i,
        "n_independent": 40 + i % 50,
        "mean_return": 0.001 * ((i % 17) - 8),
        "median_return": 0.0008 * ((i % 13) - 6),
        "std_return": 0.01,
        "win_rate": 0.4 + (i % 20) / 100,
        "hit_rate_1pct": 0.1 + (i % 10) / 100,
        "precision": 0.3,
        **{f"p{q}": 0.001 * (q - 50) / 10 for q in (10, 25, 50, 75, 90)},
        "mean_return_ci95": [-0.001, 0.003],
        "ci_note": None,
    }
    parts = [
        {
            "key": f"bronze/exchange=binance_usdm/symbol=SYM{i % 40}USDT/date=2024-01-{d + 1:02d}/part-0.parquet",
            "sha256": f"{i:08x}{d:056x}",
            "rows": 250_000,
            "coverage_source": "trades",
        }
        for d in range(30)
    ]
    return {
        "run_id": f"bench-{i:04d}-{i * 2654435761 % 16**10:010x}",
        "name": f"bench-{i:04d}",
        "config_id": f"{i * 40503 % 16**12:012x}",
        "model": None if i % 3 else f"models:/whale-sym{i % 40}/{1 + i % 5}",
        "threshold": None if i % 3 else 0.55,
        "horizon": "1h",
        **fig,
        "mean_funding_return": 0.0,
        "n_whale_events": 300 + i,
        "n_dropped": 2,
        "costs": {"fee_bps": 5, "slippage_bps": 0, "entry_latency_ms": 0, "funding": False},
        "data": {
            "exchange": "binance_usdm",
            "symbol": f"SYM{i % 40}USDT",
            "start": time.strftime("%Y-%m-%d", time.gmtime(start / 1000)),
            "end": time.strftime("%Y-%m-%d", time.gmtime((start + 29 * day_ms) / 1000)),
            "first_trade_ms": start,
            "last_trade_ms": start + 30 * day_ms - 1,
            "n_trades": 7_500_000,
            "lake": "results/lake",
            "partitions": parts,
            "price_exchange": "binance_usdm",
            "coverage": {
                "n_intervals": 100,
                "covered_s": 2_590_000,
                "first_ms": start,
                "last_ms": start + 30 * day_ms,
                "sources": ["trades"],
                "intervals": [[start + k * 25_920_000, start + (k + 1) * 25_920_000 - 1000] for k in range(100)],
            },
            "holes": [],
        },
        "dropped": {"end_of_data": 1, "gap": 1, "no_entry": 0},
        "funding_coverage": None,
        "by_horizon": {h: fig for h in ("5m", "15m", "1h", "4h")},
        "portfolio": {
            "n_trades": 90,
            "total_return": 0.05,
            "cagr": None,
            "sharpe": 1.1,
            "sortino": 1.5,
            "max_drawdown": -0.04,
            "exposure": 0.3,
            "trade_win_rate": 0.55,
            "max_positions": 1,
            "bar": "1m",
            "init_cash": 10000,
        },
    }


def build_results(root: Path, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        d = root / f"bench-{i:04d}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(i), indent=2))
    return time.perf_counter() - t


def build_lake(root: Path, days: int) -> float:
    import numpy as np
    import pandas as pd

    from datasets.lake import Lake

    t = time.perf_counter()
    per_day = 200
    n = days * per_day
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000
    ts = start + np.sort(rng.integers(0, days * 86_400_000, n))
    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "BTCUSDT",
            "trade_id": np.arange(n, dtype=np.int64),
            "ts_ms": ts,
            "price": 60_000 + rng.normal(0, 50, n).cumsum(),
            "qty": rng.exponential(0.1, n),
            "side": rng.choice(np.array([-1, 1], dtype=np.int8), n),
        }
    )
    Lake(str(root)).write_trades(df)
    return time.perf_counter() - t


def _get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def _help_ms(args: list[str]) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bt.cli", *args],
            capture_output=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def _browser_s(base: str, paths: list[str]) -> dict[str, float] | None:
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="bench-ui-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ):
            opts.add_argument(a)
        d = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
        try:
            out = {}
            for p in paths:
                d.get(base + p)
                ms = d.execute_script(
                    "var t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"
                )
                out[p] = ms / 1000
            return out
        finally:
            d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--days", type=int, default=366)
    a = ap.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        results, lake = Path(tmp) / "results", Path(tmp) / "lake"
        print(
            f"built {a.runs} run folders in {build_results(results, a.runs):.1f} s; "
            f"a lake of {a.days} daily partitions in {build_lake(lake, a.days):.1f} s",
            flush=True,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "bt.cli", "ui", "--results", str(results), "--lake", str(lake), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("observatory: http://"):
                print(f"bt ui did not start: {line!r}")
                return 1
            base = line.split()[1].rstrip("/")
            for path, what in (("/", f"runs ({a.runs} runs)"), ("/lake", f"lake ({a.days} partitions)")):
                cold, size = _get(base + path)
                warm, _ = _get(base + path)
                ok = cold < TARGET_S
                failed += [] if ok else [f"{path} cold"]
                print(
                    f"server {what:28s} cold {cold:6.3f} s, warm {warm:6.3f} s, {size / 1024:7.0f} KiB  "
                    f"(target < {TARGET_S:.0f} s: {'met' if ok else 'NOT MET'})"
                )
            shots = _browser_s(base, ["/", "/lake"])
            if shots is None:
                print("chromium: not installed, browser timings skipped")
            else:
                for p, s in shots.items():
                    ok = s < TARGET_S
                    failed += [] if ok else [f"{p} in chromium"]
                    print(
                        f"chromium {p:6s} navigation → load {s:6.3f} s  (target < {TARGET_S:.0f} s: "
                        f"{'met' if ok else 'NOT MET'})"
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(f"bt --help {_help_ms(['--help']):.0f} ms, bt ui --help {_help_ms(['ui', '--help']):.0f} ms (best of 5)")
    if failed:
        print("over target: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
