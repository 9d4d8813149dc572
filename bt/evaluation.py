"""The signal-evaluation report of a run: ``results/<run_id>/report.html``.

Three layers, each usable alone:

* artefacts (:func:`run_artefacts`), computed by ``bt run`` from data only it has at hand (the
  price tape, funding) and written into the run folder: ``paths.parquet`` (the average
  cumulative net return path after the entry at fine steps, with its cluster-bootstrap band),
  ``price.parquet`` (the price downsampled to at most :data:`MAX_PRICE_POINTS` points) and, for
  model runs, ``calibration.parquet`` (every scored event with its outcome) and
  ``threshold_curve.parquet`` (validation: what each candidate threshold keeps);
* figures (``fig_*``): pure functions of those frames, ``trades.parquet`` and ``metrics.json``,
  returning plotly figures as the plain dicts plotly.js reads (``{"data": [...], "layout": {...}}``,
  the ``plotly_white`` template included; no ``graph_objects`` validation, which costs seconds),
  whose titles name the span they cover;
* :func:`write_report`: one offline page from the run folder alone (plotly.js inlined once,
  nothing fetched), so a report can be re-rendered without the lake.
"""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bt.engine import FundingSeries

__all__ = [
    "PATH_STEPS",
    "MAX_PRICE_POINTS",
    "FIGURE_IDS",
    "downsample_price",
    "return_paths",
    "average_path",
    "calibration_table",
    "run_artefacts",
    "headline_trades",
    "report_spans",
    "span_text",
    "figures",
    "render_report",
    "write_report",
]

#: Steps of the average return path from the entry to the longest horizon (PATH_STEPS + 1 points).
PATH_STEPS = 60
#: Most points of the price chart.
MAX_PRICE_POINTS = 5000
#: Div id of each figure on the page, in page order (model figures only for model runs).
FIGURE_IDS = (
    "fig-path",
    "fig-horizon",
    "fig-distribution",
    "fig-size",
    "fig-hour",
    "fig-exit-reasons",
    "fig-per-day",
    "fig-price",
    "fig-calibration",
    "fig-threshold",
    "fig-symbols",
)
DAY_MS = 86_400_000


# --- artefacts ---------------------------------------------------------------------------------


def downsample_price(
    ts_ms: np.ndarray, price: np.ndarray, start_ms: int, end_ms: int, max_points: int = MAX_PRICE_POINTS
) -> pd.DataFrame:
    """The last trade at or before each of ``max_points`` equal steps of ``[start_ms, end_ms)``."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.size == 0 or end_ms <= start_ms:
        return pd.DataFrame({"ts_ms": np.empty(0, np.int64), "price": np.empty(0)})
    edges = np.linspace(start_ms, end_ms, max_points + 1)[1:]
    idx = np.searchsorted(ts, edges, side="right") - 1
    idx = np.unique(idx[(idx >= 0) & (ts[np.maximum(idx, 0)] >= start_ms)])
    return pd.DataFrame({"ts_ms": ts[idx], "price": np.asarray(price, dtype=np.float64)[idx]})


def return_paths(
    rows: pd.DataFrame,
    ts_ms: np.ndarray,
    price: np.ndarray,
    *,
    horizon_ms: int,
    fee: float,
    funding: FundingSeries | None = None,
    steps: int = PATH_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Each held signal's cumulative net return at ``steps + 1`` times from its entry to ``horizon_ms``.

    ``rows``: event-study rows of one horizon with an exit. At offset ``t`` the value is the last
    trade at or before ``entry + t`` (held at the exit trade once the signal has exited, e.g. on
    take-profit) over the entry price, minus both fees, plus the funding settled so far: the last
    column is the event study's ``net_return``. Returns ``(offsets_ms[steps + 1], values[n, steps + 1])``.
    """
    offsets = np.round(np.linspace(0, horizon_ms, steps + 1)).astype(np.int64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    px = np.asarray(price, dtype=np.float64)
    entry_ts = rows["entry_ts_ms"].to_numpy(np.int64)[:, None]
    exit_ts = rows["exit_ts_ms"].to_numpy(np.int64)[:, None]
    entry_idx = rows["entry_idx"].to_numpy(np.int64)[:, None]
    exit_idx = rows["exit_idx"].to_numpy(np.int64)[:, None]
    t = np.minimum(entry_ts + offsets[None, :], exit_ts)
    idx = np.clip(np.searchsorted(ts, t, side="right") - 1, entry_idx, exit_idx)
    gross = px[idx] / rows["entry_price"].to_numpy(np.float64)[:, None] - 1.0
    fund = np.zeros_like(gross)
    if funding is not None and len(funding) and gross.size:
        fund = funding.return_between(np.broadcast_to(entry_ts, t.shape).ravel(), t.ravel()).reshape(t.shape)
    return offsets, gross - 2.0 * fee + fund


def average_path(
    offsets_ms: np.ndarray, values: np.ndarray, cluster: np.ndarray, *, n_boot: int, seed: int
) -> pd.DataFrame:
    """Mean and median of the paths at each offset, with a 95 % band resampling whole clusters.

    The band uses :func:`bt.metrics.cluster_bootstrap_mean_band` (the draws of the run's
    ``mean_return_ci95``); it is NaN below :data:`bt.metrics.MIN_CLUSTERS_FOR_CI` clusters.
    """
    from bt.metrics import MIN_CLUSTERS_FOR_CI, cluster_bootstrap_mean_band, n_independent

    n, m = values.shape[0], len(offsets_ms)
    lo = hi = np.full(m, math.nan)
    if n and n_independent(cluster) >= MIN_CLUSTERS_FOR_CI:
        lo, hi = cluster_bootstrap_mean_band(values, cluster, n_boot=n_boot, seed=seed)
    return pd.DataFrame(
        {
            "offset_ms": np.asarray(offsets_ms, dtype=np.int64),
            "mean": values.mean(axis=0) if n else np.full(m, math.nan),
            "median": np.median(values, axis=0) if n else np.full(m, math.nan),
            "ci_low": lo,
            "ci_high": hi,
            "n_signals": np.int64(n),
            "n_independent": np.int64(n_independent(cluster) if n else 0),
        }
    )


def calibration_table(prob: np.ndarray, outcome: pd.DataFrame, ts_ms: np.ndarray) -> pd.DataFrame:
    """Every scored event with its outcome at the primary horizon (dropped ones left out).

    ``outcome``: event-study rows of the primary horizon, one per event, in event order.
    """
    net = outcome["net_return"].to_numpy(np.float64)
    ok = np.isfinite(net) & np.isfinite(prob)
    return pd.DataFrame(
        {
            "ts_ms": np.asarray(ts_ms, dtype=np.int64)[ok],
            "prob": np.asarray(prob, dtype=np.float64)[ok],
            "net_return": net[ok],
            "label": outcome["label"].to_numpy(bool)[ok],
        }
    )


def run_artefacts(
    study: pd.DataFrame,
    *,
    ts_ms: np.ndarray,
    price: np.ndarray,
    fee: float,
    funding: FundingSeries | None,
    n_boot: int,
    seed: int,
    span_ms: tuple[int, int],
    calibration: pd.DataFrame | None = None,
    threshold_curve: dict | None = None,
) -> dict[str, pd.DataFrame]:
    """The report's frames that need the price tape: ``{file stem: frame}`` for the run folder."""
    rows = headline_trades(study)
    longest = int(rows["horizon_ms"].max()) if len(rows) else 0
    held = rows[(rows["horizon_ms"] == longest) & (rows["exit_idx"] >= 0)]
    offsets, values = return_paths(held, ts_ms, price, horizon_ms=longest, fee=fee, funding=funding)
    out = {
        "paths": average_path(offsets, values, held["cluster"].to_numpy(np.int64), n_boot=n_boot, seed=seed),
        "price": downsample_price(ts_ms, price, *span_ms),
    }
    if calibration is not None:
        out["calibration"] = calibration
    if threshold_curve is not None:
        out["threshold_curve"] = pd.DataFrame(threshold_curve)
    return out


# --- spans -------------------------------------------------------------------------------------


def _when(ms: int) -> str:
    t = pd.Timestamp(int(ms), unit="ms", tz="UTC")
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M")


def span_text(lo_ms: int, hi_ms: int) -> str:
    """``2024-03-01 → 2024-03-10`` for ``[lo, hi)``; an end at midnight names the day before."""
    end = int(hi_ms)
    t = pd.Timestamp(end, unit="ms", tz="UTC")
    end_txt = (t - pd.Timedelta(days=1)).strftime("%Y-%m-%d") if t == t.normalize() else _when(end)
    return f"{_when(lo_ms)} → {end_txt}"


def report_spans(metrics: dict) -> dict[str, str]:
    """``{"signals": ..., "validation": ...}``: what the figures cover, as title text.

    A model trained by the run: its test period (validation for the threshold curve); with
    ``--allow-in-sample``: the data span, out-of-sample signals only; else the data span.
    """
    d = metrics["data"]
    lo = int(pd.Timestamp(d["start"], tz="UTC").value // 1_000_000)
    hi = int(pd.Timestamp(d["end"], tz="UTC").value // 1_000_000) + DAY_MS
    b = (metrics.get("model_metrics") or {}).get("boundaries_ms") or {}
    out = {"signals": span_text(lo, hi)}
    if "test" in b:
        out["signals"] = f"test {span_text(max(lo, b['test']), min(hi, b.get('end', hi)))}"
        out["validation"] = f"validation {span_text(b['validation'], b['test'])}"
    elif metrics.get("headline") == "out_of_sample":
        out["signals"] += ", out of sample"
    return out


# --- figures -----------------------------------------------------------------------------------


def headline_trades(trades: pd.DataFrame, horizon: str | None = None) -> pd.DataFrame:
    """Rows of the headline (out of sample when the run split them), optionally of one horizon."""
    rows = trades
    if "in_sample" in rows.columns:
        rows = rows[~rows["in_sample"].to_numpy(bool)]
    if horizon is not None:
        rows = rows[rows["horizon"].astype(str) == str(horizon)]
    return rows


def _held(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[np.isfinite(rows["net_return"].to_numpy(np.float64))]


#: One plotly figure as plotly.js reads it: ``{"data": [trace, ...], "layout": {...}}``.
Figure = dict[str, Any]


@functools.lru_cache(maxsize=1)
def _template() -> dict:
    """plotly's ``plotly_white`` template as plotly.js reads it (shared; not to be mutated)."""
    import pkgutil

    data = pkgutil.get_data("plotly", "package_data/templates/plotly_white.json")
    assert data is not None
    return json.loads(data)


def _layout(fig: Figure, title: str, height: int = 380, **kw: Any) -> Figure:
    """Title, the ``plotly_white`` template, size, margins and legend of every report figure."""
    fig["layout"].update(
        title={"text": title},
        template=_template(),
        height=height,
        margin={"l": 60, "r": 30, "t": 60, "b": 45},
        legend={"orientation": "h", "y": -0.18},
        **kw,
    )
    return fig


def _axis(title: str, **kw: Any) -> dict:
    return {"title": {"text": title}, **kw}


def _hline(y: float, line: dict) -> dict:
    """A horizontal line across the plot (plotly's ``add_hline``)."""
    return {"type": "line", "line": line, "x0": 0, "x1": 1, "xref": "x domain", "y0": y, "y1": y, "yref": "y"}


def _vline(fig: Figure, x: float, line: dict, text: str, *, side: str = "right") -> None:
    """A vertical line with its label (plotly's ``add_vline``): ``side`` ``top`` (centred above the
    plot), ``right`` or ``left`` (inside the plot's top, right or left of the line)."""
    lay = fig["layout"]
    lay.setdefault("shapes", []).append(
        {"type": "line", "line": line, "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1, "yref": "y domain"}
    )
    anchor = {
        "top": {"xanchor": "center", "yanchor": "bottom"},
        "right": {"xanchor": "left", "yanchor": "top"},
        "left": {"xanchor": "right", "yanchor": "top"},
    }[side]
    lay.setdefault("annotations", []).append(
        {"showarrow": False, "text": text, "x": x, "xref": "x", "y": 1, "yref": "y domain", **anchor}
    )


def _two_axes(x: dict, y: dict, y2: dict) -> dict:
    """The layout of plotly's ``make_subplots(specs=[[{"secondary_y": True}]])`` with the axes' settings."""
    return {
        "xaxis": {"anchor": "y", "domain": [0.0, 0.94], **x},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], **y},
        "yaxis2": {"anchor": "x", "overlaying": "y", "side": "right", **y2},
    }


def _json_safe(v: Any) -> Any:
    """NaN and infinities as null (plotly.js reads JSON), numpy scalars and tuples as JSON values."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    return v


def figure_json(fig: Figure) -> str:
    """The figure as JSON text (NaN as null), as the page embeds it."""
    return json.dumps(_json_safe(fig), ensure_ascii=False, separators=(",", ":"))


def _floats(x: Any) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


def fig_path(paths: pd.DataFrame, span: str) -> Figure:
    """The average cumulative net return after the entry, with its cluster-bootstrap band."""
    x = (paths["offset_ms"].to_numpy() / 60_000).tolist()
    n = int(paths["n_signals"].iloc[0]) if len(paths) else 0
    k = int(paths["n_independent"].iloc[0]) if len(paths) else 0
    data: list[dict] = []
    band = paths["ci_low"].notna().any()
    if band:
        data.append(
            {
                "type": "scatter",
                "x": x + x[::-1],
                "y": _floats(paths["ci_high"]) + _floats(paths["ci_low"])[::-1],
                "fill": "toself",
                "fillcolor": "rgba(31,119,180,0.18)",
                "line": {"width": 0},
                "hoverinfo": "skip",
                "name": "95 % band (bootstrap over clusters)",
            }
        )
    data.append(
        {
            "type": "scatter",
            "x": x,
            "y": _floats(paths["mean"]),
            "mode": "lines",
            "name": "mean",
            "line": {"color": "#1f77b4"},
        }
    )
    data.append(
        {
            "type": "scatter",
            "x": x,
            "y": _floats(paths["median"]),
            "mode": "lines",
            "name": "median",
            "line": {"dash": "dot", "color": "#555"},
        }
    )
    fig: Figure = {"data": data, "layout": {"shapes": [_hline(0, {"color": "#999", "width": 1})]}}
    note = "" if band else "; too few clusters for a band"
    return _layout(
        fig,
        f"Average cumulative net return after the signal — {span} ({n} signals, {k} independent{note})",
        height=420,
        xaxis=_axis("minutes after the entry (trigger + latency)"),
        yaxis=_axis("net return", tickformat=".2%"),
    )


def _horizon_items(metrics: dict) -> list[tuple[str, dict]]:
    from datasets.durations import parse_duration_ms

    return sorted((metrics.get("by_horizon") or {}).items(), key=lambda kv: parse_duration_ms(kv[0]))


def fig_horizon(metrics: dict, span: str) -> Figure:
    """Mean (with its 95 % CI where there is one) and median net return at each horizon."""
    items = _horizon_items(metrics)
    hs = [h for h, _ in items]
    mean = [m.get("mean_return") for _, m in items]
    ci = [m.get("mean_return_ci95") or [None, None] for _, m in items]
    up = [None if c[1] is None or v is None else c[1] - v for c, v in zip(ci, mean)]
    down = [None if c[0] is None or v is None else v - c[0] for c, v in zip(ci, mean)]
    data = [
        {
            "type": "scatter",
            "x": hs,
            "y": mean,
            "mode": "lines+markers",
            "name": "mean",
            "error_y": {"type": "data", "array": up, "arrayminus": down, "visible": True},
            "customdata": [m.get("n_signals") for _, m in items],
            "hovertemplate": "%{x}: mean %{y:.3%} (%{customdata} signals)<extra></extra>",
        },
        {
            "type": "scatter",
            "x": hs,
            "y": [m.get("median_return") for _, m in items],
            "mode": "lines+markers",
            "name": "median",
        },
    ]
    fig: Figure = {"data": data, "layout": {"shapes": [_hline(0, {"color": "#999", "width": 1})]}}
    # One horizon gives one point: the title says how to get a curve.
    one = " (one horizon: list more in backtest.horizons for a curve)" if len(items) == 1 else ""
    return _layout(
        fig,
        f"Net return vs horizon — {span}{one}",
        xaxis=_axis("horizon", type="category"),
        yaxis=_axis("net return", tickformat=".2%"),
    )


def fig_distribution(trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Histogram of the primary horizon's net returns with the mean, the median and +1 %."""
    r = _held(headline_trades(trades, metrics["horizon"]))["net_return"].to_numpy(np.float64)
    fig: Figure = {
        "data": [
            {"type": "histogram", "x": r.tolist(), "nbinsx": 60, "name": "signals", "marker": {"color": "#1f77b4"}}
        ],
        "layout": {},
    }
    mean, p50 = metrics.get("mean_return"), metrics.get("median_return")
    right = mean is None or p50 is None or mean >= p50  # mean's label right of its line, p50's left: no overlap
    for value, label, color, side in (
        (mean, "mean", "#d62728", "right" if right else "left"),
        (p50, "p50", "#2ca02c", "left" if right else "right"),
        (0.01, "+1 %", "#7f7f7f", "top"),
    ):
        if value is not None:
            _vline(fig, value, {"color": color, "dash": "dash"}, f"{label} {value:+.2%}", side=side)
    return _layout(
        fig,
        f"Net return per signal at {metrics['horizon']} — {span} ({r.size} signals)",
        xaxis=_axis("net return", tickformat=".1%"),
        yaxis=_axis("signals"),
        showlegend=False,
    )


def _bucket_stats(r: np.ndarray, key: np.ndarray, order: list) -> dict[str, list]:
    out: dict[str, list] = {"bucket": [], "n": [], "mean_return": [], "win_rate": [], "hit_rate_1pct": []}
    for b in order:
        x = r[key == b]
        out["bucket"].append(b)
        out["n"].append(int(x.size))
        out["mean_return"].append(float(x.mean()) if x.size else None)
        out["win_rate"].append(float((x > 0).mean()) if x.size else None)
        out["hit_rate_1pct"].append(float((x >= 0.01).mean()) if x.size else None)
    return out


def _bucket_fig(stats: dict[str, list], title: str, xtitle: str) -> Figure:
    x = [str(b) for b in stats["bucket"]]
    data = [
        {
            "type": "bar",
            "x": x,
            "y": stats["mean_return"],
            "name": "mean net return",
            "marker": {"color": "#1f77b4"},
            "customdata": stats["n"],
            "hovertemplate": "%{x}: mean %{y:.3%}, %{customdata} signals<extra></extra>",
            "xaxis": "x",
            "yaxis": "y",
        },
        {
            "type": "scatter",
            "x": x,
            "y": stats["win_rate"],
            "mode": "lines+markers",
            "name": "win rate (net > 0)",
            "xaxis": "x",
            "yaxis": "y2",
        },
        {
            "type": "scatter",
            "x": x,
            "y": stats["hit_rate_1pct"],
            "mode": "lines+markers",
            "name": "share ≥ +1 %",
            "xaxis": "x",
            "yaxis": "y2",
        },
    ]
    # round ticks of its own (plotly.js would sync them to the left axis: 17 %, 33 %, ...); 0 and 100 % not clipped
    layout = _two_axes(
        _axis(xtitle, type="category"),
        _axis("mean net return", tickformat=".2%"),
        _axis(
            "share of signals",
            tickformat=".0%",
            range=[-0.04, 1.04],
            tickmode="linear",
            tick0=0,
            dtick=0.25,
            showgrid=False,
        ),
    )
    return _layout({"data": data, "layout": layout}, title)


def size_buckets(notional: np.ndarray, q: int = 5) -> tuple[np.ndarray, list[str]]:
    """Quantile bucket (0 .. q-1) of each whale notional and the buckets' labels (``$1.25M–1.60M``)."""
    x = np.asarray(notional, dtype=np.float64)
    if x.size == 0:
        return np.empty(0, np.int64), []
    edges = np.unique(np.quantile(x, np.linspace(0, 1, q + 1)))
    if edges.size < 2:
        edges = np.array([x.min(), x.max()])
    pos = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)

    def usd(v: float) -> str:
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v:,.0f}"

    return pos, [f"${usd(edges[i])}–{usd(edges[i + 1])}" for i in range(edges.size - 1)]


def fig_size(trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Mean return, win rate and share ≥ +1 % by whale notional quintile (primary horizon)."""
    rows = _held(headline_trades(trades, metrics["horizon"]))
    pos, labels = size_buckets(rows["trigger_notional_usd"].to_numpy(np.float64))
    stats = _bucket_stats(rows["net_return"].to_numpy(np.float64), pos, list(range(len(labels))))
    stats["bucket"] = labels
    return _bucket_fig(stats, f"By whale size (notional quintiles) at {metrics['horizon']} — {span}", "whale notional")


def fig_hour(trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Mean return, win rate and share ≥ +1 % by the trigger's hour of day (UTC)."""
    rows = _held(headline_trades(trades, metrics["horizon"]))
    hour = (rows["trigger_ts_ms"].to_numpy(np.int64) // 3_600_000) % 24
    stats = _bucket_stats(rows["net_return"].to_numpy(np.float64), hour, list(range(24)))
    return _bucket_fig(stats, f"By hour of day (UTC) at {metrics['horizon']} — {span}", "hour of the trigger (UTC)")


def _table(header: list[str], columns: list[list], title: str) -> Figure:
    """A table figure as tall as its rows (at most 700 px, then it scrolls): no blank space below."""
    table = {
        "type": "table",
        "header": {"values": header, "fill": {"color": "#f0f0f0"}, "align": "left", "font": {"size": 13}},
        "cells": {"values": columns, "align": "left", "font": {"size": 12}},
    }
    n_rows = len(columns[0]) if columns else 0
    return _layout({"data": [table], "layout": {}}, title, height=min(700, 120 + 28 * n_rows))


def _pct(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.3%}"


def exit_reason_rows(trades: pd.DataFrame, metrics: dict) -> dict[str, list]:
    """``{reason, count, mean_return}`` of the primary horizon: the exits, then the drops of metrics.json."""
    from signals.outcome import DROP_KINDS, EXIT_REASONS

    rows = headline_trades(trades, metrics["horizon"])
    reason = rows["exit_reason"].astype(str).to_numpy()
    r = rows["net_return"].to_numpy(np.float64)
    out: dict[str, list] = {"reason": [], "count": [], "mean_return": []}
    for name in ("horizon", "take_profit", "stop_loss"):
        x = r[reason == name]
        out["reason"].append(name)
        out["count"].append(int(x.size))
        out["mean_return"].append(float(x.mean()) if x.size else None)
    dropped = metrics.get("dropped") or {}
    for code, kind in DROP_KINDS.items():
        out["reason"].append(f"dropped: {kind}")
        out["count"].append(int(dropped.get(kind, int((reason == EXIT_REASONS[code]).sum()))))
        out["mean_return"].append(None)
    return out


def fig_exit_reasons(trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Table of how the primary horizon's signals ended (dropped counts as in metrics.json)."""
    t = exit_reason_rows(trades, metrics)
    return _table(
        ["exit", "signals", "mean net return"],
        [t["reason"], t["count"], [_pct(v) for v in t["mean_return"]]],
        f"Exit reasons at {metrics['horizon']} — {span}",
    )


def per_day_rows(trades: pd.DataFrame, metrics: dict) -> dict[str, list]:
    """``{day, signals, mean_return, win_rate}`` per UTC day of the trigger (primary horizon)."""
    rows = _held(headline_trades(trades, metrics["horizon"]))
    day = pd.to_datetime(rows["trigger_ts_ms"].to_numpy(np.int64), unit="ms", utc=True).strftime("%Y-%m-%d")
    r = rows["net_return"].to_numpy(np.float64)
    g = pd.DataFrame({"day": day, "r": r}).groupby("day")["r"]
    agg = pd.DataFrame({"n": g.size(), "mean": g.mean(), "win": g.apply(lambda x: float((x > 0).mean()))})
    return {
        "day": agg.index.tolist(),
        "signals": agg["n"].astype(int).tolist(),
        "mean_return": agg["mean"].astype(float).tolist(),
        "win_rate": agg["win"].astype(float).tolist(),
    }


def fig_per_day(trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Table of signals, mean net return and win rate per UTC day."""
    t = per_day_rows(trades, metrics)
    return _table(
        ["day (UTC)", "signals", "mean net return", "win rate"],
        [t["day"], t["signals"], [_pct(v) for v in t["mean_return"]], [f"{v:.1%}" for v in t["win_rate"]]],
        f"Per day at {metrics['horizon']} — {span}",
    )


def fig_price(price: pd.DataFrame, trades: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """The downsampled price with the primary horizon's entries and exits (coloured by reason)."""

    def ts(x: np.ndarray) -> list[str]:
        return pd.to_datetime(x, unit="ms", utc=True).strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3].tolist()

    def markers(x: np.ndarray, y: pd.Series, name: str, symbol: str, color: str) -> dict:
        return {
            "type": "scattergl",
            "x": ts(x),
            "y": _floats(y),
            "mode": "markers",
            "name": name,
            "marker": {"symbol": symbol, "size": 9, "color": color},
        }

    rows = _held(headline_trades(trades, metrics["horizon"]))
    data = [
        {
            "type": "scattergl",
            "x": ts(price["ts_ms"].to_numpy(np.int64)),
            "y": _floats(price["price"]),
            "mode": "lines",
            "name": "price",
            "line": {"color": "#888", "width": 1},
        },
        markers(rows["entry_ts_ms"].to_numpy(np.int64), rows["entry_price"], "entry", "triangle-up", "#2ca02c"),
    ]
    colors = {"horizon": "#1f77b4", "take_profit": "#17becf", "stop_loss": "#d62728"}
    reason = rows["exit_reason"].astype(str).to_numpy()
    for name, color in colors.items():
        sel = rows[reason == name]
        if len(sel):
            label = f"exit ({name.replace('_', ' ')})"
            data.append(markers(sel["exit_ts_ms"].to_numpy(np.int64), sel["exit_price"], label, "triangle-down", color))
    d = metrics["data"]
    return _layout(
        {"data": data, "layout": {}},
        f"{d.get('price_exchange') or d['exchange']}/{d['symbol']} price with entries and exits at "
        f"{metrics['horizon']} — {span}",
        height=460,
        xaxis=_axis("time (UTC)"),
        yaxis=_axis("price"),
    )


def calibration_rows(cal: pd.DataFrame, bins: int = 10) -> dict[str, list]:
    """Per probability bucket ``[i/bins, (i+1)/bins)``: events, mean predicted, label rate, win rate."""
    p = cal["prob"].to_numpy(np.float64)
    b = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    out: dict[str, list] = {"bucket": [], "n": [], "mean_prob": [], "label_rate": [], "win_rate": []}
    lab = cal["label"].to_numpy(bool)
    win = cal["net_return"].to_numpy(np.float64) > 0
    for i in range(bins):
        m = b == i
        if not m.any():
            continue
        out["bucket"].append(f"{i / bins:.1f}–{(i + 1) / bins:.1f}")
        out["n"].append(int(m.sum()))
        out["mean_prob"].append(float(p[m].mean()))
        out["label_rate"].append(float(lab[m].mean()))
        out["win_rate"].append(float(win[m].mean()))
    return out


def fig_calibration(cal: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Predicted probability (bucket mean) against the realised label rate and win rate."""
    t = calibration_rows(cal)
    data = [
        {
            "type": "scatter",
            "x": [0, 1],
            "y": [0, 1],
            "mode": "lines",
            "name": "perfect calibration",
            "line": {"dash": "dot", "color": "#999"},
        }
    ]
    size = [6 + 18 * math.sqrt(n / max(t["n"])) for n in t["n"]] if t["n"] else []
    for key, name in (
        ("label_rate", "realised label rate (what the model predicts)"),
        ("win_rate", "win rate (net > 0)"),
    ):
        data.append(
            {
                "type": "scatter",
                "x": t["mean_prob"],
                "y": t[key],
                "mode": "lines+markers",
                "name": name,
                "marker": {"size": size},
                "customdata": [list(c) for c in zip(t["bucket"], t["n"])],
                "hovertemplate": "p %{customdata[0]}: %{y:.1%} of %{customdata[1]} events<extra></extra>",
            }
        )
    fig: Figure = {"data": data, "layout": {}}
    thr = metrics.get("threshold")
    if thr is not None:
        _vline(fig, thr, {"color": "#d62728", "dash": "dash"}, f"threshold {thr:.2f}")
    return _layout(
        fig,
        f"Calibration: predicted probability vs realised outcome — {span} ({len(cal)} events)",
        height=420,
        xaxis=_axis("predicted probability (bucket mean)", range=[0, 1]),
        yaxis=_axis("realised share", range=[0, 1], tickformat=".0%"),
    )


def fig_threshold(curve: pd.DataFrame, metrics: dict, span: str) -> Figure:
    """Validation mean net return and signal counts of each candidate threshold; the chosen one marked."""
    x = _floats(curve["threshold"])
    data = [
        {"type": "scatter", "x": x, "y": _floats(curve["mean_return"]), "mode": "lines", "name": "mean net return"},
        {
            "type": "scatter",
            "x": x,
            "y": curve["n_signals"].tolist(),
            "mode": "lines",
            "name": "signals",
            "line": {"dash": "dot"},
        },
        {
            "type": "scatter",
            "x": x,
            "y": curve["n_independent"].tolist(),
            "mode": "lines",
            "name": "independent signals",
        },
    ]
    for trace, axis in zip(data, ("y", "y2", "y2")):
        trace.update(xaxis="x", yaxis=axis)
    fig: Figure = {
        "data": data,
        "layout": _two_axes(
            _axis("threshold (prob ≥)", range=[0, 1]),
            _axis("mean net return", tickformat=".2%"),
            _axis("signals"),
        ),
    }
    thr = metrics.get("threshold")
    rule = (metrics.get("model_metrics") or {}).get("threshold_rule")
    if thr is not None:
        text = f"chosen {thr:.2f}" + (f" ({rule})" if rule else "")
        _vline(fig, thr, {"color": "#d62728", "dash": "dash"}, text)
    return _layout(fig, f"Threshold choice on validation — {span}", height=420)


# --- the page ----------------------------------------------------------------------------------


def fig_symbols(metrics: dict, span: str) -> Figure:
    """A universe's per-symbol figures (each symbol as if run alone): ``metrics["by_symbol"]``."""
    from bt.metrics import SYMBOL_COLUMNS, format_symbol_value, symbol_rows

    rows = symbol_rows(metrics)
    cols = [[r["symbol"] for r in rows]] + [
        [format_symbol_value(r[title], kind) for r in rows] for title, _, kind in SYMBOL_COLUMNS
    ]
    header = ["symbol"] + [title for title, _, _ in SYMBOL_COLUMNS]
    return _table(header, cols, f"By symbol (each as if run alone) · {span}")


def _read(run_dir: Path, name: str) -> pd.DataFrame | None:
    p = run_dir / f"{name}.parquet"
    return pd.read_parquet(p) if p.is_file() else None


def figures(run_dir: Path) -> dict[str, Figure]:
    """``{div id: figure}`` of a run folder, in page order (see :data:`FIGURE_IDS`)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trades = pd.read_parquet(run_dir / "trades.parquet")
    spans = report_spans(metrics)
    s = spans["signals"]
    out: dict[str, Figure] = {}
    paths = _read(run_dir, "paths")
    if paths is not None:
        out["fig-path"] = fig_path(paths, s)
    out["fig-horizon"] = fig_horizon(metrics, s)
    out["fig-distribution"] = fig_distribution(trades, metrics, s)
    out["fig-size"] = fig_size(trades, metrics, s)
    out["fig-hour"] = fig_hour(trades, metrics, s)
    out["fig-exit-reasons"] = fig_exit_reasons(trades, metrics, s)
    out["fig-per-day"] = fig_per_day(trades, metrics, s)
    price = _read(run_dir, "price")
    if price is not None:
        out["fig-price"] = fig_price(price, trades, metrics, s)
    cal = _read(run_dir, "calibration")
    if cal is not None:
        out["fig-calibration"] = fig_calibration(cal, metrics, s)
    curve = _read(run_dir, "threshold_curve")
    if curve is not None:
        out["fig-threshold"] = fig_threshold(curve, metrics, spans.get("validation", s))
    if metrics.get("by_symbol"):
        out["fig-symbols"] = fig_symbols(metrics, s)
    return out


_STYLE = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px;margin-bottom:4px}.sub{color:#555;margin:0 0 16px}.fig{margin:18px 0;border-top:1px solid #eee}
table.h{border-collapse:collapse}table.h td{padding:2px 12px 2px 0}"""

_RENDER = """document.querySelectorAll("div.fig").forEach(function (div) {
  var spec = JSON.parse(document.getElementById(div.id + "-data").textContent);
  Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false, responsive: true});
});"""


def render_report(run_dir: Path) -> str:
    """The report page of a run folder as one HTML string (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    metrics = json.loads((run_dir / "metrics.json").read_text())
    figs = figures(run_dir)
    d = metrics["data"]
    ci = metrics.get("mean_return_ci95")
    head = [
        ("signals", f"{metrics.get('n_signals')} ({metrics.get('n_independent')} independent)"),
        ("mean net return", _pct(metrics.get("mean_return"))),
        ("95 % CI", f"{_pct(ci[0])} … {_pct(ci[1])}" if ci else (metrics.get("ci_note") or "–")),
        ("win rate", "–" if metrics.get("win_rate") is None else f"{metrics['win_rate']:.1%}"),
        ("costs", f"fee {metrics['costs']['fee_bps']} bps per side, slippage {metrics['costs']['slippage_bps']} bps"),
    ]
    if metrics.get("model"):
        head.append(("model", f"{metrics['model']}, threshold {metrics.get('threshold')}"))
    elif metrics.get("threshold") is not None:
        head.append(("model", f"trained by this run, threshold {metrics['threshold']}"))
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(metrics['name'])} — signal evaluation</title><style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>',
        f"<h1>{e(metrics['name'])} — signal evaluation</h1>",
        f"<p class='sub'>{e(metrics['run_id'])} · {e(d['exchange'])}/{e(d['symbol'])} · "
        f"{e(report_spans(metrics)['signals'])} · primary horizon {e(metrics['horizon'])}</p>",
        "<table class='h'>" + "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in head) + "</table>",
    ]
    for div_id, fig in figs.items():
        spec = figure_json(fig).replace("</", "<\\/")
        parts.append(f'<div id="{div_id}" class="fig"></div>')
        parts.append(f'<script type="application/json" id="{div_id}-data">{spec}</script>')
    parts.append(f"<script>{_RENDER}</script></body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``report.html`` of a run folder (or ``out``) from the folder's files alone."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / "report.html"
    page = render_report(run_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
