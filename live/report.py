"""The live scorecard: paper-trading outcomes vs the backtest metrics of the same config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from live.paper import read_outcomes

__all__ = ["scorecard", "ROW_KEYS"]

ROW_KEYS = (
    "n_signals",
    "mean_return",
    "median_return",
    "win_rate",
    "hit_rate_1pct",
    "precision",
    "p10",
    "p50",
    "p90",
    "mean_return_ci95",
)


def scorecard(
    config: Any,
    paper_path: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    journal: str | os.PathLike[str] | None = None,
) -> dict:
    """Event-study metrics (`bt.metrics.event_metrics`) of the live outcomes next to `metrics.json`.

    Only outcomes of the config's `config_id` count. Returns a dict with `rows`
    ([(metric, backtest value, live value)]), both metric dicts and where they came from, and
    `holes`: the journal's hole records of the config (docs/spec.md §5.4; [] without a journal).
    """
    from bt.metrics import event_metrics

    cid = config.config_id
    outcomes = read_outcomes(paper_path, cid)
    net = np.array([o["net_return"] for o in outcomes], dtype=np.float64)
    label = np.array([o["label"] for o in outcomes], dtype=bool)
    live = event_metrics(net, label, n_boot=config.backtest.bootstrap, seed=config.backtest.seed)
    live["first_signal_ts_ms"] = min((o["ts_ms"] for o in outcomes), default=None)
    live["last_signal_ts_ms"] = max((o["ts_ms"] for o in outcomes), default=None)
    bt_path = Path(results_dir) / config.run_id / "metrics.json"
    bt = json.loads(bt_path.read_text()) if bt_path.is_file() else None
    rows = [(k, None if bt is None else bt.get(k), live.get(k)) for k in ROW_KEYS]
    from bt.config import format_duration

    holes: list[dict] = []
    if journal is not None and Path(journal).is_file():
        from live.journal import read_journal

        exchange = outcomes[0]["exchange"] if outcomes else config.data.exchange
        holes = read_journal(journal, exchange=exchange, config_id=cid).holes
    return {
        "config_id": cid,
        "holes": holes,
        "journal_path": None if journal is None else str(journal),
        "horizon": format_duration(config.backtest.horizon_ms),
        "rows": rows,
        "live_metrics": live,
        "backtest_metrics": bt,
        "backtest_path": str(bt_path),
        "paper_path": str(paper_path),
    }
