"""Helpers of the observatory tests: paths, the site's special days, processes that print their URL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BTC = ROOT / "tests" / "data" / "real" / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
LIVE_CONFIG = ROOT / "configs" / "demo_live.yaml"
SCREENSHOTS = ROOT / "results" / "observatory-screenshots"
ISSUE_DAY, UNCHECKED_DAY = "2024-03-03", "2024-03-05"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def start_process(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
        env=env(),
        cwd=ROOT,
    )


def stop_process(p: subprocess.Popen | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


def first_line(p: subprocess.Popen, prefix: str, log: Path, timeout_s: float = 60) -> str:
    """The first stdout line of ``p`` starting with ``prefix`` (the URL a server prints)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        line = p.stdout.readline() if p.stdout else ""
        if line.startswith(prefix):
            return line.strip()
        if not line and p.poll() is not None:
            break
    raise AssertionError(f"{prefix!r} never printed; log:\n{log.read_text()[-3000:]}")
