"""The Runs view: every run folder under the results folder with its headline figures.

A run folder is a directory holding ``metrics.json`` (``bt run`` or ``bt sweep``, docs/spec.md
§4.8). Only ``metrics.json`` is read for the list; it is parsed once per (mtime, size), so a
results folder of hundreds of runs lists quickly on the second open as well as the first.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunRow", "RunIndex", "headline", "figure_rows", "COLUMNS", "RUN_FILES"]

#: (key, label, kind) of the runs table, in column order; kind picks the format and the sort.
COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "run", "text"),
    ("kind", "kind", "text"),
    ("n_signals", "signals", "int"),
    ("n_independent", "independent", "int"),
    ("mean_return", "mean", "pct"),
    ("p50", "p50", "pct"),
    ("win_rate", "win rate", "share"),
    ("hit_rate_1pct", "≥ +1 %", "share"),
    ("span", "span", "text"),
    ("symbols", "symbols", "text"),
    ("model", "model", "text"),
    ("config_id", "config id", "text"),
    ("modified", "written", "text"),
]

#: Files of a run folder the observatory serves as they are (read-only).
RUN_FILES = ("report.html", "tearsheet.html")


def _span(m: dict) -> str:
    d = m.get("data") or {}
    if d.get("start") and d.get("end"):
        s = f"{d['start']} → {d['end']}"
        return s + (" (out of sample)" if m.get("headline") == "out_of_sample" else "")
    b = (m.get("model_metrics") or {}).get("boundaries_ms") or {}
    if "test" in b and "end" in b:
        from bt.evaluation import span_text

        return f"test {span_text(int(b['test']), int(b['end']))}"
    return ""


def _symbols(m: dict) -> str:
    d = m.get("data") or {}
    if not d.get("exchange"):
        return ""
    s = f"{d['exchange']}/{d.get('symbol', '?')}"
    px = d.get("price_exchange")
    return s + (f" (priced on {px})" if px and px != d["exchange"] else "")


def _model(m: dict) -> str:
    if m.get("model"):
        return str(m["model"])
    if m.get("kind") == "sweep":
        return f"sweep winner ({m.get('n_trials')} trials)"
    if m.get("threshold") is not None:
        return "trained by the run"
    return "whale rule"


def headline(m: dict) -> dict[str, Any]:
    """The table's values of one ``metrics.json`` (None where a figure is absent)."""
    return {
        "run_id": m.get("run_id"),
        "name": m.get("name"),
        "kind": m.get("kind", "backtest"),
        "n_signals": m.get("n_signals"),
        "n_independent": m.get("n_independent"),
        "mean_return": m.get("mean_return"),
        "p50": m.get("p50", m.get("median_return")),
        "win_rate": m.get("win_rate"),
        "hit_rate_1pct": m.get("hit_rate_1pct"),
        "span": _span(m),
        "symbols": _symbols(m),
        "model": _model(m),
        "config_id": m.get("config_id"),
        "horizon": m.get("horizon"),
    }


@dataclass
class RunRow:
    """One run folder: its path, parsed metrics and headline values."""

    name: str  # folder name (the URL key)
    path: Path
    mtime_ns: int
    metrics: dict
    values: dict[str, Any]
    has_report: bool
    has_tearsheet: bool


class RunIndex:
    """Run folders of one results folder, re-read only when a ``metrics.json`` changes."""

    def __init__(self, results: str | os.PathLike[str]):
        self.results = Path(results)
        self._cache: dict[str, tuple[tuple[int, int], RunRow]] = {}
        self._lock = threading.Lock()

    def rows(self) -> list[RunRow]:
        """Every run folder, newest first (folders whose metrics.json is not JSON are left out)."""
        if not self.results.is_dir():
            return []
        out: list[RunRow] = []
        seen = set()
        with os.scandir(self.results) as it:
            entries = [e for e in it if e.is_dir() and not e.name.startswith(".")]
        for e in entries:
            mp = os.path.join(e.path, "metrics.json")
            try:
                st = os.stat(mp)
            except OSError:
                continue
            sig = (st.st_mtime_ns, st.st_size)
            seen.add(e.name)
            hit = self._cache.get(e.name)
            if hit is not None and hit[0] == sig:
                out.append(hit[1])
                continue
            try:
                with open(mp, "rb") as fh:
                    m = json.loads(fh.read())
            except (OSError, ValueError):
                continue
            if not isinstance(m, dict):
                continue
            vals = headline(m)
            vals["run_id"] = vals["run_id"] or e.name
            from datetime import datetime, timezone

            vals["modified"] = datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M")
            row = RunRow(
                e.name,
                Path(e.path),
                st.st_mtime_ns,
                m,
                vals,
                os.path.isfile(os.path.join(e.path, "report.html")),
                os.path.isfile(os.path.join(e.path, "tearsheet.html")),
            )
            with self._lock:
                self._cache[e.name] = (sig, row)
            out.append(row)
        with self._lock:
            for k in set(self._cache) - seen:
                del self._cache[k]
        out.sort(key=lambda r: (-r.mtime_ns, r.name))
        return out

    def get(self, name: str) -> RunRow | None:
        """The run folder ``name`` (a plain folder name under the results folder), or None."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        for r in self.rows():
            if r.name == name:
                return r
        return None

    def by_config_id(self, config_id: str | None) -> RunRow | None:
        """The newest backtest (not a sweep) of a signal config, or None."""
        if not config_id:
            return None
        for r in self.rows():
            if r.metrics.get("config_id") == config_id and r.values["kind"] != "sweep":
                return r
        return None


def figure_rows(metrics: dict) -> list[tuple[str, Any, str]]:
    """``(label, value, kind)`` of the run page's figure table: ``bt compare``'s rows present in ``metrics``."""
    from bt.compare import METRIC_ROWS
    from bt.compare import get_path as _at

    shares = (
        "win rate",
        "hit rate (net >= +1%)",
        "precision (gross >= +1%)",
        "exposure",
    )  # fractions of signals or bars, unsigned
    rows = [(label, _at(metrics, path), "share" if label in shares else kind) for label, path, kind in METRIC_ROWS]
    return [r for r in rows if r[1] is not None]
