"""The Lake view: bronze partitions per exchange/symbol/day from their stored quality reports.

Only listings and the small ``quality/.../report.json`` objects are read (never a partition's
rows or footer), so a year of daily partitions opens quickly on a local or remote lake. A
partition without a report shows as unchecked (``datasets status --refresh`` writes them).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import os
from typing import Any

__all__ = ["lake_view", "DayCell", "cell_state"]

DAY_MS = 86_400_000


def _covered_share(report: dict, day: dt.date) -> float | None:
    cov = report.get("coverage")
    if cov is None:
        return None
    lo = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() * 1000)
    hi = lo + DAY_MS
    covered = sum(max(0, min(int(b), hi) - max(int(a), lo)) for a, b in cov)
    return covered / DAY_MS


def cell_state(report: dict | None, coverage: float | None) -> str:
    """``issues`` (a failed check), ``unchecked`` (no report), ``full``, ``partial`` or ``sparse`` coverage."""
    if report is None:
        return "unchecked"
    if report.get("issues"):
        return "issues"
    if coverage is None or coverage >= 0.99:
        return "full"
    return "partial" if coverage >= 0.5 else "sparse"


class DayCell(dict):
    """A calendar day of one exchange/symbol (a dict, for the template)."""


def _cell(p: Any, report: dict | None) -> DayCell:
    coverage = _covered_share(report, p.date) if report else None
    quarantined = sum((report or {}).get("quarantined_rows", {}).values()) if report else 0
    return DayCell(
        date=p.date.isoformat(),
        key=p.key,
        state=cell_state(report, coverage),
        rows=None if report is None else report.get("rows"),
        bytes=None if report is None else report.get("bytes"),
        coverage=coverage,
        sources=(report or {}).get("coverage_source") or "",
        id_space=(report or {}).get("id_space") or "",
        sha256=(report or {}).get("content_sha256") or "",
        issues=list((report or {}).get("issues") or []),
        missing_ids=(report or {}).get("missing_ids"),
        duplicate_ids=(report or {}).get("duplicate_ids"),
        cross_source_duplicates=(report or {}).get("cross_source_duplicates"),
        longest_quiet_s=(report or {}).get("longest_quiet_s"),
        quarantined=quarantined,
    )


def _weeks(first: dt.date, last: dt.date, cells: dict[str, DayCell]) -> list[dict[str, Any]]:
    """Monday-first weeks ``{label, days}`` from ``first``'s week to ``last``'s.

    ``label`` names the month in the first week and in each week holding a month's 1st; days
    outside the span are None, days inside it without a partition are ``missing``.
    """
    start = first - dt.timedelta(days=first.weekday())
    weeks: list[dict[str, Any]] = []
    d = start
    while d <= last:
        week: list[DayCell | None] = []
        label = ""
        for _ in range(7):
            if d < first or d > last:
                week.append(None)
            else:
                if not weeks and not label or d.day == 1:
                    label = d.strftime("%b %Y" if not weeks or d.month == 1 else "%b")
                week.append(cells.get(d.isoformat()) or DayCell(date=d.isoformat(), state="missing"))
            d += dt.timedelta(days=1)
        weeks.append({"label": label, "days": week})
    return weeks


def lake_view(uri: str | os.PathLike[str], *, workers: int = 8) -> dict[str, Any]:
    """Everything the lake page shows: per exchange/symbol a calendar and a partition table.

    Returns ``{"uri", "groups": [{exchange, symbol, first, last, days, missing_days, rows,
    bytes, issues: {check: partitions}, unchecked, sources, id_spaces, weeks, cells}], "layers":
    {layer: {group: partitions}}, "raw": {source: files}}``; ``{"uri", "error"}`` when there is no lake.
    """
    from datasets.lake import Lake
    from datasets.quality import read_quality

    s = str(uri)
    if "://" not in s and not os.path.isdir(s):
        return {"uri": s, "error": f"no lake at {s}: expected a directory or az:// URI (bt ui --lake URI)"}
    lake = Lake(s)
    parts = lake.partitions("bronze")
    if len(parts) > 16:
        with cf.ThreadPoolExecutor(max(1, workers)) as pool:
            reports = list(pool.map(lambda p: read_quality(lake, p), parts))
    else:
        reports = [read_quality(lake, p) for p in parts]
    by: dict[tuple[str, str], list[DayCell]] = {}
    for p, r in zip(parts, reports):
        by.setdefault((p.exchange, p.symbol), []).append(_cell(p, r))
    groups = []
    for (ex, sym), cells in sorted(by.items()):
        days = [dt.date.fromisoformat(c["date"]) for c in cells]
        first, last = min(days), max(days)
        issues: dict[str, int] = {}
        for c in cells:
            for name in c["issues"]:
                issues[name] = issues.get(name, 0) + 1
        known = [c for c in cells if c["rows"] is not None]
        groups.append(
            {
                "id": f"{ex}-{sym}",
                "exchange": ex,
                "symbol": sym,
                "first": first.isoformat(),
                "last": last.isoformat(),
                "days": len(cells),
                "missing_days": (last - first).days + 1 - len(set(days)),
                "rows": sum(int(c["rows"]) for c in known),
                "bytes": sum(int(c["bytes"] or 0) for c in known),
                "unchecked": len(cells) - len(known),
                "issues": issues,
                "sources": sorted({x for c in cells for x in c["sources"].split(",") if x}),
                "id_spaces": sorted({c["id_space"] for c in cells if c["id_space"]}),
                "weeks": _weeks(first, last, {c["date"]: c for c in cells}),
                "cells": cells,
            }
        )
    layers: dict[str, dict[str, int]] = {}
    for layer, prefix in (("silver", "silver/"), ("gold", "gold/"), ("funding", "funding/")):
        counts: dict[str, int] = {}
        for key in lake.store.list(prefix):
            parts_of = [seg.split("=", 1)[1] for seg in key.split("/") if seg.startswith(("exchange=", "symbol="))]
            variant = next((seg for seg in key.split("/") if seg.startswith("signal=")), "")
            g = (variant + " " if variant else "") + "/".join(parts_of)
            counts[g] = counts.get(g, 0) + 1
        if counts:
            layers[layer] = dict(sorted(counts.items()))
    raw: dict[str, int] = {}
    for key in lake.store.list("raw/"):
        src = key.split("/", 2)[1] if key.count("/") >= 2 else "?"
        raw[src] = raw.get(src, 0) + 1
    return {"uri": lake.uri, "groups": groups, "layers": layers, "raw": dict(sorted(raw.items()))}
