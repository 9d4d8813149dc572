"""Live runner latency and throughput on the real Binance BTCUSDT recording (with a model).

Usage: python bench/bench_live.py [--pace-s S] [--repeat R] [--no-model]

Three measurements, one process for the runner, pinned to one core (the replay server to the others):
1. in-process: `Runner.handle_frame` over the recording's 21,313 `@trade` frames held in
   memory (parse, ids, merge, kernel, model on events, journal record): frames/s, and the
   per-frame receipt → decision latency (p50 / p99 / max);
2. max speed over a real local WebSocket: `live replay --speed max` in a subprocess, the runner
   here: frames/s from first to last frame, and the same latency histogram;
3. recorded pace: the first S seconds of the recording at its own pace over the WebSocket.
Over the WebSocket the runner runs as `live run --busy-poll` does: it spins instead of sleeping
between frames, so that the frame after a quiet spell does not find its core's caches cold; the
last row is recorded pace again without it (the default of `live run`).
The model is a small LightGBM booster bundled as the registry bundles it (scored by the numba
trees), so whale events pay for a prediction. Targets (issue 4): p99 <= 250 µs, >= 50,000
frames/s on one core; the seed system reported 6 ms mean prediction time.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BTC = ROOT / "tests" / "data" / "real" / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
WHALE = {"min_notional_usd": 100000, "window_s": 10, "q": 0.99, "lookback_s": 120, "min_samples": 60}


def make_decider(with_model: bool):
    from live.decider import Decider, _predictor
    from signals import FEATURE_NAMES, WhaleParams, feature_spec_hash
    from signals.journal import config_id

    params = WhaleParams.from_dict(WHALE)
    if not with_model:
        return Decider(params, config_id({"whale": WHALE, "model": None}), name="bench")
    import lightgbm as lgb

    from bt.registry import ModelBundle

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, len(FEATURE_NAMES)))
    y = (X[:, 0] + rng.normal(size=2000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 31},
        lgb.Dataset(X, y),
        num_boost_round=100,
    )
    bundle = ModelBundle(
        booster.model_to_string(),
        {
            "threshold": 0.5,
            "feature_names": list(FEATURE_NAMES),
            "feature_spec_hash": feature_spec_hash(),
            "whale": WHALE,
        },
    )
    return Decider(
        params, config_id({"whale": WHALE, "model": {"uri": "bench"}}), "bench", 0.5, _predictor(bundle), name="bench"
    )


def trade_frames() -> list[str]:
    out = []
    with gzip.open(BTC, "rt") as fh:
        for line in fh:
            text = line.partition(" ")[2].rstrip("\n")
            if '@trade"' in text:
                out.append(text)
    return out


def _runner(decider, **kw):
    from live.runner import Runner, RunnerOptions

    r = Runner(
        RunnerOptions(
            exchange="binance_usdm", symbols=["BTCUSDT"], stream="trade", echo=False, backoff_base_s=0.01, **kw
        ),
        decider,
    )
    return r


def _lat(r) -> dict[str, float]:
    s = r.metrics.receipt_to_decision.samples()
    j = r.metrics.journal_fsync.samples()
    return {
        "n": int(s.size),
        "p50_us": float(np.quantile(s, 0.5) * 1e6),
        "p99_us": float(np.quantile(s, 0.99) * 1e6),
        "max_us": float(s.max() * 1e6),
        "journal_p50_us": float(np.quantile(j, 0.5) * 1e6) if j.size else float("nan"),
        "fsyncs": int(j.size),
    }


async def in_process(frames: list[str], decider, repeat: int) -> tuple[float, dict, dict]:
    best = 0.0
    lat = {}
    counts = {}
    for _ in range(repeat + 1):  # the first pass warms up numba and the model
        r = _runner(decider)
        for f in r.feeds.values():
            f.live = True
        r.journal = type("NullJournal", (), {"write": lambda self, rec: None})()
        t0 = time.perf_counter()
        for text in frames:
            r.handle_frame(text, time.perf_counter_ns())
        dt = time.perf_counter() - t0
        best = max(best, len(frames) / dt)
        lat, counts = _lat(r), r.counters()
    return best, lat, counts


def pin_apart(server_pid: int) -> None:
    """The runner (this process) on one core, the replay server on another: "on one core" means
    the runner's core, and the server is a test tool that must not compete with it."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(server_pid, cores[1:])
        os.sched_setaffinity(0, cores[:1])


async def over_websocket(
    decider, speed: str, pace_s: float | None, tmp: Path, journal: bool = True, busy_poll: bool = True
) -> tuple[float, dict, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "live.cli", "replay", str(BTC), "--port", "0", "--speed", speed],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    pin_apart(proc.pid)
    try:
        url = proc.stdout.readline().strip()
        r = _runner(
            decider,
            ws_url=url + "/stream",
            rest_url=url.replace("ws://", "http://"),
            busy_poll=busy_poll,
            journal=str(tmp / f"bench-{speed}-{time.time_ns()}.jsonl") if journal else None,
        )
        first: list[float] = []
        orig = r.handle_frame

        def timed(text, t_ns):
            if not first:
                first.append(time.perf_counter())
            orig(text, t_ns)
            last[0] = time.perf_counter()

        last = [0.0]
        r.handle_frame = timed
        task = asyncio.create_task(r.run())
        start = time.perf_counter()
        quiet = 0
        prev = -1
        while True:
            await asyncio.sleep(0.1)
            if pace_s is not None and first and time.perf_counter() - first[0] >= pace_s:
                break
            quiet = quiet + 1 if r.n_frames == prev and r.n_frames > 0 else 0
            prev = r.n_frames
            if quiet >= 20 or time.perf_counter() - start > 900:
                break
        r.stop()
        await task
        span = (last[0] - first[0]) if first else float("nan")
        return r.n_frames / span, _lat(r), r.counters()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pace-s", type=float, default=30.0, help="seconds of the recording to play at recorded pace")
    ap.add_argument("--repeat", type=int, default=3, help="in-process passes and max-speed runs; best kept")
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR)
    decider = make_decider(not args.no_model)
    frames = trade_frames()
    print(
        f"recording: {BTC.name}, {len(frames):,} @trade frames; model: {'LightGBM 100 trees' if decider.predict else 'none'}"
    )
    fps, lat, c = asyncio.run(in_process(frames, decider, args.repeat))
    rows = [("in-process (no socket)", fps, lat, c)]
    with tempfile.TemporaryDirectory() as tmp:
        # max-speed runs last about half a second: a busy spell on a shared machine can halve one, so
        # the best of --repeat runs is kept (each with its own latencies)
        for name, journal in (("WebSocket, max speed", True), ("WebSocket, max speed, no journal file", False)):
            runs = [
                asyncio.run(over_websocket(decider, "max", None, Path(tmp), journal=journal))
                for _ in range(args.repeat)
            ]
            rows.append((name, *max(runs, key=lambda run: run[0])))
        _, lat3, c3 = asyncio.run(over_websocket(decider, "1", args.pace_s, Path(tmp)))
        rows.append((f"WebSocket, recorded pace ({args.pace_s:.0f} s)", float("nan"), lat3, c3))
        _, lat5, c5 = asyncio.run(over_websocket(decider, "1", args.pace_s, Path(tmp), busy_poll=False))
        rows.append(("  same, sleeping (no --busy-poll)", float("nan"), lat5, c5))
    print(
        "receipt -> decision per frame with trades; the journal's fdatasync (one per burst of frames, "
        "before the records are echoed) is timed apart: 'fsync p50', 'fsyncs'"
    )
    print(
        f"{'path':38s} {'frames/s':>10s} {'p50 µs':>8s} {'p99 µs':>8s} {'max µs':>9s} {'fsync p50 µs':>12s} "
        f"{'fsyncs':>6s} {'frames':>7s} {'events':>6s}"
    )
    for name, f, la, cc in rows:
        fs = f"{f:10,.0f}" if np.isfinite(f) else f"{'-':>10s}"
        print(
            f"{name:38s} {fs} {la['p50_us']:8.1f} {la['p99_us']:8.1f} {la['max_us']:9.1f} "
            f"{la['journal_p50_us']:12.1f} {la['fsyncs']:6d} {cc['frames']:7d} {cc['events']:6d}"
        )
    print(
        f"targets: p99 <= 250 µs (seed system: 6,000 µs mean prediction), >= 50,000 frames/s on one core; "
        f"in-process p99 is {lat['p99_us'] / 250:.2f}x the target, throughput {fps / 50_000:.2f}x the target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
