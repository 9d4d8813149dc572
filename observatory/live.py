"""The Live view: a ``live run``'s /health, key /metrics, its signals and their realised returns.

The observatory server asks each runner (``bt ui --live URL``) for ``/health``, ``/metrics``,
``/signals`` and ``/paper``; the page polls the observatory, never the runner, so the browser
talks to one local origin only.

Realised returns come from the runner's own paper book (``/paper``, docs/spec.md §5.5): each
``long`` is entered and exited by the config's ``backtest`` rules on the very trades the runner
decided on, as soon as the first trade past the horizon arrives. The lake is not used for this:
a live symbol's trades reach the lake only when someone ingests them, which may be never or a
day later, and the lake's copy may differ from what the runner saw (merged fills, a reconnect).
Beside them stand the backtest's figures of the same ``config_id`` (the newest run folder with
it): the paper scorecard of ``live report``, computed with ``bt.metrics.event_metrics``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

__all__ = ["KEY_METRICS", "SCORE_KEYS", "parse_metrics", "fetch_runner", "panel", "scorecard"]

#: Prometheus series shown on the page (without the ``whalebt_live_`` prefix).
KEY_METRICS = (
    "connected",
    "ready",
    "frames_total",
    "bad_frames_total",
    "reconnects_total",
    "trades_total",
    "events_total",
    "signals_total",
    "gaps_total",
    "duplicates_total",
    "backfilled_trades_total",
    "gap_trades_unfilled_total",
    "last_trade_ts_ms",
)

#: Scorecard rows: the §4.1 keys that `live report` compares.
SCORE_KEYS = (
    "n_signals",
    "mean_return",
    "median_return",
    "win_rate",
    "hit_rate_1pct",
    "precision",
    "p10",
    "p50",
    "p90",
)

_LINE = re.compile(r"^whalebt_live_([a-z_]+)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The key series of a /metrics document: ``[{name, labels, value}]`` in document order."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m or m.group(1) not in KEY_METRICS:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = (m.group(2) or "").strip("{}")
        out.append({"name": m.group(1), "labels": labels.replace('"', ""), "value": value})
    return out


async def _get(session: Any, url: str, timeout_s: float) -> tuple[int, str]:
    """GET with the runner's bearer token when ``WHALEBT_HTTP_TOKEN`` is set (docs/live.md)."""
    import os

    import aiohttp

    token = os.environ.get("WHALEBT_HTTP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s), headers=headers) as r:
        return r.status, await r.text()


async def fetch_runner(session: Any, base: str, *, timeout_s: float = 3.0, limit: int = 200) -> dict[str, Any]:
    """One snapshot of a runner: ``{url, health, health_status, metrics, signals, paper, errors}``."""
    base = base.rstrip("/")
    paths = {
        "health": "/health",
        "metrics": "/metrics",
        "signals": f"/signals?limit={limit}",
        "paper": "/paper?limit=1000",
    }
    results = await asyncio.gather(
        *(_get(session, base + p, timeout_s) for p in paths.values()), return_exceptions=True
    )
    snap: dict[str, Any] = {"url": base, "errors": [], "fetched_at": time.time()}
    for (name, path), res in zip(paths.items(), results):
        if isinstance(res, BaseException):
            snap[name] = None
            snap["errors"].append(f"{path}: {type(res).__name__} {res}".strip())
            continue
        status, body = res
        if name == "health":
            snap["health_status"] = status
        if name == "paper" and status == 404:
            snap[name] = None
            snap["errors"].append("/paper: this runner does not serve paper outcomes (an older live run)")
            continue
        if status >= 400 and not (name == "health" and status == 503):
            snap[name] = None
            hint = " (the runner wants a bearer token: set WHALEBT_HTTP_TOKEN for bt ui)" if status == 401 else ""
            snap["errors"].append(f"{path}: HTTP {status}{hint}")
            continue
        if name == "metrics":
            snap[name] = parse_metrics(body)
        else:
            try:
                snap[name] = json.loads(body)
            except ValueError:
                snap[name] = None
                snap["errors"].append(f"{path}: not JSON")
    return snap


def scorecard(backtest: dict | None, outcomes: list[dict]) -> list[dict]:
    """Rows ``{key, backtest, live}``: the backtest's figures beside those of the paper outcomes.

    No bootstrap CI here (the page recomputes on every poll); ``live report`` prints it.
    """
    import numpy as np

    from bt.metrics import event_metrics

    net = np.array([o["net_return"] for o in outcomes], dtype=np.float64)
    label = np.array([bool(o.get("label")) for o in outcomes], dtype=bool)
    live = event_metrics(net, label, n_boot=0, seed=0) if len(outcomes) else {"n_signals": 0}
    return [
        {"key": k, "backtest": None if backtest is None else backtest.get(k), "live": live.get(k)} for k in SCORE_KEYS
    ]


def panel(snap: dict[str, Any], run: Any | None) -> dict[str, Any]:
    """What one runner's panel shows, from a snapshot and the matching backtest (a RunRow or None)."""
    from bt.config import parse_duration_ms

    health = snap.get("health") or {}
    cid = health.get("config_id")
    paper = snap.get("paper")
    outcomes = [o for o in (paper or []) if o.get("config_id") == cid] if cid else list(paper or [])
    by_trigger = {(o.get("symbol"), int(o.get("trade_id", -1))): o for o in outcomes}
    metrics = run.metrics if run is not None else None
    horizon = metrics.get("horizon") if metrics else None
    horizon_ms = parse_duration_ms(horizon) if horizon else None
    last_ts = {s: (v or {}).get("last_trade_ts_ms") for s, v in (health.get("symbols") or {}).items()}
    rows = []
    for rec in reversed(snap.get("signals") or []):
        o = by_trigger.get((rec.get("symbol"), int(rec.get("trade_id", -1))))
        if o is not None:
            status = f"closed ({o.get('exit_reason')})"
        elif rec.get("decision") != "long":
            status = "skipped by the model"
        elif paper is None:
            status = "no paper book"
        else:
            now = last_ts.get(rec.get("symbol"))
            due = None if horizon_ms is None else int(rec["ts_ms"]) + horizon_ms
            status = "open" if due is None or now is None or now <= due else "past horizon, awaiting the next trade"
        rows.append(
            {
                "rec": rec,
                "outcome": o,
                "status": status,
                "expected": None if metrics is None or rec.get("decision") != "long" else metrics.get("mean_return"),
            }
        )
    score = None
    if paper is not None:
        score = scorecard(metrics, outcomes)
    return {
        "url": snap.get("url"),
        "errors": snap.get("errors") or [],
        "health": health,
        "health_status": snap.get("health_status"),
        "metrics": snap.get("metrics") or [],
        "config_id": cid,
        "run": run,
        "horizon": horizon,
        "rows": rows,
        "n_outcomes": len(outcomes),
        "score": score,
    }
