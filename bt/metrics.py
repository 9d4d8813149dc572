"""Statistics of a backtest (docs/spec.md §4) as pure functions with readable keys.

All returns are fractions (0.01 = 1 %). Functions take arrays and return plain dicts, so the
same numbers go to ``metrics.json``, MLflow, the console table and the compare report.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "event_metrics",
    "bootstrap_mean_ci",
    "cluster_bootstrap_mean_ci",
    "cluster_bootstrap_mean_band",
    "signal_clusters",
    "n_independent",
    "portfolio_metrics",
    "daily_returns",
    "PERCENTILES",
    "PERIODS_PER_YEAR",
    "MIN_DAYS_SHARPE",
    "MIN_DAYS_CAGR",
    "MIN_CLUSTERS_FOR_CI",
    "SYMBOL_COLUMNS",
    "symbol_rows",
    "format_symbol_value",
]

PERCENTILES = (10, 25, 50, 75, 90)

#: Below this many independent clusters the bootstrap CI of the mean is not reported: resampling
#: a handful of clusters gives an interval that mostly reflects which clusters happened to occur.
MIN_CLUSTERS_FOR_CI = 10

#: Annualised portfolio figures: daily returns, 365 periods a year (crypto trades every day).
PERIODS_PER_YEAR = 365
#: Spans shorter than these (days) get null Sharpe/Sortino and CAGR: a few days of returns
#: raised to a yearly rate say more about the exponent than about the strategy.
MIN_DAYS_SHARPE = 30
MIN_DAYS_CAGR = 90


def signal_clusters(start_ts_ms: np.ndarray, end_ts_ms: np.ndarray) -> np.ndarray:
    """Cluster label of each signal: chains of signals whose ``[start, end]`` windows overlap.

    Signals are ordered by start; a signal joins the current cluster when it starts at or before
    the latest end seen in that cluster, and opens a new one otherwise. Two signals in one cluster
    share part of their outcome window, so their returns are not independent draws. Labels are
    0, 1, 2, ... in time order, returned in the input order. Signals without a window (end < 0,
    e.g. dropped) get -1 and belong to no cluster.
    """
    start = np.asarray(start_ts_ms, dtype=np.int64)
    end = np.asarray(end_ts_ms, dtype=np.int64)
    if start.shape != end.shape:
        raise ValueError(f"start and end times must have the same shape; got {start.shape} and {end.shape}")
    labels = np.full(start.shape, -1, np.int64)
    ok = np.flatnonzero(end >= 0)
    if ok.size == 0:
        return labels
    order = ok[np.argsort(start[ok], kind="stable")]
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    new = np.r_[True, s[1:] > reach[:-1]]
    labels[order] = np.cumsum(new) - 1
    return labels


def n_independent(cluster: np.ndarray) -> int:
    """Number of distinct clusters among labels >= 0."""
    c = np.asarray(cluster, dtype=np.int64)
    c = c[c >= 0]
    return int(np.unique(c).size)


def cluster_bootstrap_mean_ci(
    x: np.ndarray, cluster: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile CI of the mean of ``x`` resampling whole clusters (block bootstrap).

    Each replicate draws as many clusters as there are, with replacement, and takes the mean of
    all their signals (sum of returns over number of signals). With one signal per cluster it is
    the plain iid bootstrap of the mean. [nan, nan] with fewer than 2 clusters.
    """
    x = np.asarray(x, dtype=np.float64)
    _, inv = np.unique(np.asarray(cluster, dtype=np.int64), return_inverse=True)
    k = int(inv.max()) + 1 if inv.size else 0
    if k < 2 or n_boot <= 0:
        return [math.nan, math.nan]
    # Ours: vectorbt has no CI of the mean, quantstats only shuffles single returns (montecarlo).
    sums = np.bincount(inv, weights=x, minlength=k)
    counts = np.bincount(inv, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, min(n_boot, 20_000_000 // k))
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, k, size=(hi - lo, k))
        means[lo:hi] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    return [float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))]


def cluster_bootstrap_mean_band(
    x: np.ndarray, cluster: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column percentile CI of the mean of ``x`` (n signals × m columns), resampling clusters.

    The same cluster draws as :func:`cluster_bootstrap_mean_ci` with the same ``seed``, applied to
    every column at once, so a column equal to the returns gives that function's interval (up to
    summation order). ``(low[m], high[m])``, NaN with fewer than 2 clusters.
    """
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[1] if x.ndim == 2 else 0
    _, inv = np.unique(np.asarray(cluster, dtype=np.int64), return_inverse=True)
    k = int(inv.max()) + 1 if inv.size else 0
    if k < 2 or n_boot <= 0:
        return np.full(m, math.nan), np.full(m, math.nan)
    sums = np.zeros((k, m))
    np.add.at(sums, inv, x)
    counts = np.bincount(inv, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, m))
    chunk = max(1, min(n_boot, 20_000_000 // k))
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, k, size=(hi - lo, k))
        # Times each cluster is drawn in each replicate, then all columns in one product.
        w = np.bincount((idx + k * np.arange(hi - lo)[:, None]).ravel(), minlength=(hi - lo) * k)
        w = w.reshape(hi - lo, k).astype(np.float64)
        means[lo:hi] = (w @ sums) / (w @ counts)[:, None]
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)


def bootstrap_mean_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile-bootstrap confidence interval of the mean of ``x`` ([nan, nan] if < 2 values)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 or n_boot <= 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # Chunked so memory stays bounded for large samples.
    chunk = max(1, min(n_boot, 20_000_000 // max(x.size, 1)))
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, x.size, size=(hi - lo, x.size))
        means[lo:hi] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return [float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))]


def _f(x: float) -> float | None:
    """JSON-friendly float (None for NaN)."""
    return None if x is None or not np.isfinite(x) else float(x)


def event_metrics(
    net_return: np.ndarray,
    label: np.ndarray,
    *,
    cluster: np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Event-study metrics over signals that were not dropped.

    Keys: ``n_signals``, ``n_independent`` (clusters of overlapping outcome windows, see
    :func:`signal_clusters`; without ``cluster`` every signal counts as its own), ``mean_return``,
    ``median_return``, ``win_rate`` (share > 0), ``hit_rate_1pct`` (share ≥ 0.01), ``precision``
    (share with label 1), ``p10`` … ``p90``, ``std_return``, ``mean_return_ci95`` ([low, high],
    bootstrap over clusters; null below :data:`MIN_CLUSTERS_FOR_CI` clusters) and ``ci_note``
    (why the CI is null, else None).
    """
    r = np.asarray(net_return, dtype=np.float64)
    keep = np.isfinite(r)
    r = r[keep]
    lab = np.asarray(label, dtype=bool)[keep]
    if cluster is None:
        cl = np.arange(r.size, dtype=np.int64)
    else:
        cl = np.asarray(cluster, dtype=np.int64)
        if cl.shape != keep.shape:
            raise ValueError(f"cluster labels must match the returns; got {cl.shape} and {keep.shape}")
        cl = cl[keep]
    n = int(r.size)
    k = n_independent(cl) if n else 0
    out: dict = {"n_signals": n, "n_independent": k}
    if n == 0:
        out.update(
            {k: None for k in ("mean_return", "median_return", "win_rate", "hit_rate_1pct", "precision", "std_return")}
        )
        out.update({f"p{p}": None for p in PERCENTILES})
        out["mean_return_ci95"] = None
        out["ci_note"] = "no signals"
        return out
    pct = np.percentile(r, PERCENTILES)
    out.update(
        {
            "mean_return": float(r.mean()),
            "median_return": float(np.median(r)),
            "win_rate": float((r > 0).mean()),
            "hit_rate_1pct": float((r >= 0.01).mean()),
            "precision": float(lab.mean()),
            "std_return": float(r.std(ddof=1)) if n > 1 else None,
        }
    )
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
    if k < MIN_CLUSTERS_FOR_CI:
        out["mean_return_ci95"] = None
        out["ci_note"] = (
            f"{k} independent signal cluster{'s' if k != 1 else ''} (overlapping outcome "
            f"windows count once); a CI needs at least {MIN_CLUSTERS_FOR_CI}"
        )
    elif n_boot <= 0:
        out["mean_return_ci95"] = None
        out["ci_note"] = "bootstrap disabled (backtest.bootstrap: 0)"
    else:
        out["mean_return_ci95"] = [_f(v) for v in cluster_bootstrap_mean_ci(r, cl, n_boot, seed)]
        out["ci_note"] = None
    return out


def daily_returns(equity: "pd.Series") -> "pd.Series":
    """Simple returns between UTC day closes of an equity curve (the first from its first value).

    A partial first or last day counts as a day: its return runs from the previous close (or
    the starting value) to the last value seen that day.
    """
    import pandas as pd

    eq = equity.astype(np.float64)
    if eq.empty:
        return pd.Series(dtype=np.float64)
    closes = eq.groupby(eq.index.floor("D")).last()
    base = np.r_[eq.iloc[0], closes.to_numpy()[:-1]]
    return pd.Series(closes.to_numpy() / base - 1.0, index=closes.index, name="daily_return")


def portfolio_metrics(equity: "pd.Series", exposure: np.ndarray, n_trades: int, trade_returns: np.ndarray) -> dict:
    """Portfolio statistics of an equity curve indexed by UTC time.

    ``total_return``, ``max_drawdown`` (worst peak-to-trough loss, a negative fraction, on the
    curve's own bars), ``exposure`` (share of bars holding a position) and ``trade_win_rate``
    hold for any span. The annualised figures come from daily returns with
    :data:`PERIODS_PER_YEAR` (365: crypto trades every day), risk-free rate 0: ``sharpe`` and
    ``sortino`` need :data:`MIN_DAYS_SHARPE` days of span and ``cagr`` :data:`MIN_DAYS_CAGR`;
    below that they are null and ``annualisation_note`` says why. ``n_days`` is the span in days.
    """
    eq = np.asarray(equity.to_numpy(), dtype=np.float64)
    out: dict = {"n_trades": int(n_trades)}
    if eq.size < 2:
        out.update(
            total_return=0.0,
            sharpe=None,
            sortino=None,
            max_drawdown=0.0,
            exposure=0.0,
            trade_win_rate=None,
            cagr=None,
            n_days=0.0,
            annualisation_note="no equity curve: nothing to annualise",
        )
        return out
    span_days = (equity.index[-1] - equity.index[0]).total_seconds() / 86_400.0
    daily = daily_returns(equity).to_numpy()
    # total_return, max_drawdown, sharpe and sortino are quantstats' comp, max_drawdown, sharpe and
    # sortino (periods=365) on the same series (tests/bt/test_api.py checks it); written out because
    # importing quantstats or vectorbt costs seconds per `bt run`, and ours are null below 30 days.
    # vectorbt's Portfolio (bt.api) also values the order instants between bars, so its max
    # drawdown can only be deeper than this one, taken on bar closes.
    peak = np.maximum.accumulate(eq)
    dd = eq / peak - 1.0
    total = eq[-1] / eq[0] - 1.0
    tr = np.asarray(trade_returns, dtype=np.float64)
    sharpe = sortino = cagr = None
    notes = []
    if span_days >= MIN_DAYS_SHARPE and daily.size > 1:
        mu, sd = daily.mean(), daily.std(ddof=1)
        downside = np.sqrt(np.mean(np.minimum(daily, 0.0) ** 2))
        sharpe = _f(mu / sd * math.sqrt(PERIODS_PER_YEAR)) if sd > 0 else None
        sortino = _f(mu / downside * math.sqrt(PERIODS_PER_YEAR)) if downside > 0 else None
    else:
        notes.append(f"Sharpe and Sortino need {MIN_DAYS_SHARPE} days of daily returns")
    if span_days >= MIN_DAYS_CAGR:
        # quantstats' cagr counts years as returns / 365 (a partial day is a whole one); ours uses the span.
        cagr = _f((1.0 + total) ** (PERIODS_PER_YEAR / span_days) - 1.0) if total > -1 else -1.0
    else:
        notes.append(f"CAGR needs {MIN_DAYS_CAGR} days")
    out.update(
        {
            "total_return": float(total),
            "cagr": cagr,
            "sharpe": sharpe,
            "sortino": sortino,
            "max_drawdown": float(dd.min()),
            "exposure": float(np.asarray(exposure, dtype=np.float64).mean()),
            "trade_win_rate": float((tr > 0).mean()) if tr.size else None,
            "n_days": round(span_days, 4),
            "annualisation_note": (f"span of {span_days:.2f} days: " + "; ".join(notes)) if notes else None,
        }
    )
    return out


#: Columns of the per-symbol table (console, report.html, bt compare): (title, key path, kind).
SYMBOL_COLUMNS = (
    ("signals", ("n_signals",), "int"),
    ("independent", ("n_independent",), "int"),
    ("mean", ("mean_return",), "pct"),
    ("win rate", ("win_rate",), "share"),
    ("portfolio return", ("portfolio", "total_return"), "pct"),
    ("max drawdown", ("portfolio", "max_drawdown"), "pct"),
)


def symbol_rows(metrics: dict) -> list[dict]:
    """One row per universe member (``metrics["by_symbol"]``): ``symbol`` and the :data:`SYMBOL_COLUMNS`.

    Empty for a single-symbol run. Values are raw numbers (None when the run had none).
    """
    out = []
    for sym, m in (metrics.get("by_symbol") or {}).items():
        row: dict = {"symbol": sym}
        for title, path, _ in SYMBOL_COLUMNS:
            v: object = m
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            row[title] = v
        out.append(row)
    return out


def format_symbol_value(v: object, kind: str) -> str:
    """A :data:`SYMBOL_COLUMNS` value as the tables print it."""
    if v is None:
        return "—"
    if kind == "pct":
        return f"{100 * float(v):+.3f} %"  # type: ignore[arg-type]
    if kind == "share":
        return f"{float(v):.1%}"  # type: ignore[arg-type]
    return str(v)
