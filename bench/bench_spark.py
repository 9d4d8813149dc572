"""`bt run --engine spark` vs `--engine local`: wall time for one symbol and a 2-symbol universe.

Each engine runs in its own subprocess: the Spark one starts a ``local[N]`` SparkContext (N = the
cores), timed apart, then runs the same config ``--rounds`` times; silver and gold are removed
before every run, so each one reads bronze, builds both and runs the kernel. The first Spark run
also pays for its Python workers' imports and numba cache loads; the best run of each engine is
compared, and the files of both engines are checked to be equal. Needs pyspark and Java 17+.

    python bench/bench_spark.py [--days 5] [--trades-per-s 3] [--rounds 3] [--workdir .bench/spark]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_scale import config, write_market  # noqa: E402

PY = sys.executable
SYMBOLS = ("SPARKAUSDT", "SPARKBUSDT")

CHILD = r"""
import hashlib, json, shutil, sys, time
from pathlib import Path
t0 = time.perf_counter()
from bt.config import parse_config
from bt.run import run_backtest
from whalebt.engine import default_jobs, spark_context
raw, results, engine, rounds = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import_s = time.perf_counter() - t0
start_s = 0.0
if engine == "spark":
    t = time.perf_counter()
    spark_context(f"local[{default_jobs()}]")
    start_s = time.perf_counter() - t
lake = Path(raw["data"]["lake"])
walls = []
for _ in range(rounds):
    for layer in ("silver", "gold"):
        shutil.rmtree(lake / layer, ignore_errors=True)
    t = time.perf_counter()
    r = run_backtest(parse_config(raw), results_dir=results, log_mlflow=False, tearsheet=False, quiet=True,
                     engine=engine)
    walls.append(time.perf_counter() - t)
digest = hashlib.sha256(b"".join((r.run_dir / f).read_bytes()
                                 for f in ("metrics.json", "signals.jsonl", "trades.parquet"))).hexdigest()
print(json.dumps({"import_s": import_s, "start_s": start_s, "walls": walls, "digest": digest,
                  "n_trades": r.metrics["data"]["n_trades"], "n_signals": r.metrics["n_signals"]}))
"""


def child(raw: dict, work: Path, engine: str, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [PY, "-c", CHILD, json.dumps(raw), str(work / f"results-{engine}"), engine, str(rounds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=5, help="span of every run (days)")
    ap.add_argument("--trades-per-s", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=".bench/spark")
    a = ap.parse_args()
    try:
        import pyspark  # noqa: F401
    except ImportError:
        print("bench_spark: pyspark is not installed (pip install 'whalebt[spark]'); skipped")
        return 0
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("bench_spark: no java (Debian: apt-get install openjdk-17-jre-headless); skipped")
        return 0
    sys.path.insert(0, str(ROOT))
    work = Path(a.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    lake = work / "lake"
    t = time.perf_counter()
    for i, sym in enumerate(SYMBOLS):
        write_market(lake, sym, a.days, a.trades_per_s, 11 + i)
    print(
        f"== Spark benchmark: {a.days} days at {a.trades_per_s} trades/s per symbol, written in "
        f"{time.perf_counter() - t:.0f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    child(config(lake, 1, symbol=SYMBOLS[0]), work, "local", 1)  # warm numba's on-disk caches
    print(f"{'bt run':<26}{'trades':>11}{'local s':>9}{'spark s':>9}{'ratio':>7}  spark start s, first run s")
    for label, raw in (
        ("one symbol", config(lake, a.days, symbol=SYMBOLS[0])),
        ("2-symbol universe", config(lake, a.days, symbols=list(SYMBOLS))),
    ):
        loc, spk = child(raw, work, "local", a.rounds), child(raw, work, "spark", a.rounds)
        same = "equal files" if loc["digest"] == spk["digest"] else "FILES DIFFER"
        lo, sp = min(loc["walls"]), min(spk["walls"])
        print(
            f"{label:<26}{loc['n_trades']:>11,}{lo:>9.2f}{sp:>9.2f}{sp / lo:>6.2f}x  "
            f"{spk['start_s']:.1f}, {spk['walls'][0]:.2f}  (best of {a.rounds}; {same})"
        )
    print(f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
