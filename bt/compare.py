"""One offline HTML page comparing runs side by side (``bt compare``).

Reads each run folder as written by ``bt run`` or ``bt sweep`` (``metrics.json``, ``config.yaml``,
``equity.parquet``, ``trades.parquet``) and links each run's ``report.html`` and ``tearsheet.html``
where the folder has them; never recomputes a backtest. The
plotly library is inlined, so the page works without a network.
"""

from __future__ import annotations

from whalebt.errors import UserError
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "RunView",
    "load_run",
    "resolve_run",
    "metric_rows",
    "config_diff",
    "run_span",
    "span_warnings",
    "render_compare",
    "write_compare",
]

TEMPLATE = Path(__file__).with_name("templates") / "compare.html"

#: (label, path in metrics.json, format) rows of the side-by-side table.
METRIC_ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("signals", ("n_signals",), "int"),
    ("mean return", ("mean_return",), "pct"),
    ("median return", ("median_return",), "pct"),
    ("win rate", ("win_rate",), "pct"),
    ("hit rate (net >= +1%)", ("hit_rate_1pct",), "pct"),
    ("precision (gross >= +1%)", ("precision",), "pct"),
    ("p10", ("p10",), "pct"),
    ("p90", ("p90",), "pct"),
    ("mean return CI95 low", ("mean_return_ci95", "0"), "pct"),
    ("mean return CI95 high", ("mean_return_ci95", "1"), "pct"),
    ("threshold", ("threshold",), "num"),
    ("deflated Sharpe ratio", ("dsr",), "num"),
    ("PBO", ("pbo",), "num"),
    ("trials", ("n_trials",), "int"),
    ("total return", ("portfolio", "total_return"), "pct"),
    ("Sharpe", ("portfolio", "sharpe"), "num"),
    ("Sortino", ("portfolio", "sortino"), "num"),
    ("max drawdown", ("portfolio", "max_drawdown"), "pct"),
    ("exposure", ("portfolio", "exposure"), "pct"),
    ("trades", ("portfolio", "n_trades"), "int"),
]


@dataclass
class RunView:
    """What the page shows of one run."""

    run_id: str
    path: Path
    metrics: dict
    config: dict
    equity: Any  # pandas Series or None
    returns: Any  # numpy array of per-signal net returns (primary horizon) or None
    tearsheet: Path | None
    report: Path | None = None  # report.html (bt.evaluation), when the folder has one


def resolve_run(ref: str, results_dir: str | os.PathLike[str] = "results") -> Path:
    """A run folder from a path or a run id under ``results_dir``."""
    p = Path(ref)
    if (p / "metrics.json").is_file():
        return p
    q = Path(results_dir) / ref
    if (q / "metrics.json").is_file():
        return q
    known = (
        sorted(d.name for d in Path(results_dir).glob("*") if (d / "metrics.json").is_file())
        if Path(results_dir).is_dir()
        else []
    )
    import difflib

    close = difflib.get_close_matches(ref, known, n=1)
    raise UserError(
        2,
        f"no run {ref!r}: expected a folder with metrics.json or a run id under {results_dir}/"
        + (f" (did you mean {close[0]!r}?)" if close else f"; runs there: {known[:10]}"),
        ref,
    )


def load_run(path: Path) -> RunView:
    import numpy as np
    import pandas as pd
    import yaml

    metrics = json.loads((path / "metrics.json").read_text())
    cfg_path = path / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    equity = None
    if (path / "equity.parquet").is_file():
        df = pd.read_parquet(path / "equity.parquet")
        equity = df.iloc[:, 0] if df.shape[1] else None
    returns = None
    if (path / "trades.parquet").is_file():
        tr = pd.read_parquet(path / "trades.parquet")
        if "signal" in tr.columns and tr["signal"].dtype == bool:  # sweep: test events + decision
            tr = tr[tr["signal"]]
        if "horizon" in tr.columns and metrics.get("horizon") is not None:
            tr = tr[tr["horizon"].astype(str) == str(metrics["horizon"])]
        if "net_return" in tr.columns:
            r = tr["net_return"].to_numpy(np.float64)
            returns = r[np.isfinite(r)]
    tear, report = path / "tearsheet.html", path / "report.html"
    return RunView(
        str(metrics.get("run_id") or path.name),
        path,
        metrics,
        config or {},
        equity,
        returns,
        tear if tear.is_file() else None,
        report if report.is_file() else None,
    )


def run_span(run: RunView) -> tuple[str, str, int] | None:
    """``(start, end, days)`` of the data a run covers (metrics.json ``data``, else config.yaml)."""
    import datetime as dt

    for src in (run.metrics.get("data"), run.config.get("data")):
        if isinstance(src, dict) and src.get("start") and src.get("end"):
            try:
                a, b = dt.date.fromisoformat(str(src["start"])), dt.date.fromisoformat(str(src["end"]))
            except ValueError:
                continue
            return str(a), str(b), (b - a).days + 1
    return None


def _span_text(span: tuple[str, str, int] | None) -> str:
    return "unknown span" if span is None else f"{span[0]} – {span[1]} ({span[2]} days)"


def get_path(d: Any, path: Sequence[str]) -> Any:
    """``d[path[0]][path[1]]...`` through dicts and list indices; None where a step is missing."""
    for part in path:
        if isinstance(d, dict):
            d = d.get(part)
        elif isinstance(d, list) and part.isdigit() and int(part) < len(d):
            d = d[int(part)]
        else:
            return None
    return d


def _fmt(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "pct":
        return f"{100 * float(v):.3f} %"
    return f"{float(v):.4f}"


def metric_rows(runs: Sequence[RunView]) -> list[dict]:
    """Table rows ``{label, values, best}``; ``best`` marks the highest value where higher is better (not a tie)."""
    rows = []
    for label, path, kind in METRIC_ROWS:
        raw = [get_path(r.metrics, path) for r in runs]
        if all(v is None for v in raw):
            continue
        nums = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in raw]
        lower_better = label in ("PBO",)
        best = None
        cand = [(v, i) for i, v in enumerate(nums) if v is not None]
        if len(cand) > 1 and label not in ("threshold", "trials", "signals", "trades", "exposure"):
            top = (min(cand) if lower_better else max(cand))[0]
            winners = [i for v, i in cand if v == top]
            best = winners[0] if len(winners) == 1 else None  # a tie marks nobody
        rows.append({"label": label, "values": [_fmt(v, kind) for v in raw], "best": best})
    return rows


def symbol_table_rows(runs: Sequence[RunView]) -> list[dict]:
    """``{run, symbol, values}`` for each universe member of each run (none for single-symbol runs)."""
    from bt.metrics import SYMBOL_COLUMNS, format_symbol_value, symbol_rows

    return [
        {
            "run": r.run_id,
            "symbol": row["symbol"],
            "values": [format_symbol_value(row[t], kind) for t, _, kind in SYMBOL_COLUMNS],
        }
        for r in runs
        for row in symbol_rows(r.metrics)
    ]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(runs: Sequence[RunView]) -> list[dict]:
    """Config keys whose values differ between runs: ``{key, values}`` (``–`` where absent)."""
    flat = [_flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for k in keys:
        vals = [f.get(k, "–") for f in flat]
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals}) > 1:
            rows.append(
                {"key": k, "values": [json.dumps(v, default=str) if not isinstance(v, str) else v for v in vals]}
            )
    return rows


def _figure_span(run: RunView) -> str:
    """The span a run's headline figures cover: a trained model's test period, else its data span."""
    from bt.evaluation import report_spans, span_text

    m = run.metrics
    d = m.get("data") or {}
    if d.get("start") and d.get("end"):
        return report_spans(m)["signals"]
    b = (m.get("model_metrics") or {}).get("boundaries_ms") or {}
    if "test" in b and "end" in b:
        return f"test {span_text(int(b['test']), int(b['end']))}"
    span = run_span(run)
    return "unknown span" if span is None else f"{span[0]} → {span[1]}"


def span_warnings(runs: Sequence[RunView]) -> list[str]:
    """Lines warning that the runs' figures are not over the same span, or rest on data with holes."""
    out = []
    spans = [_figure_span(r) for r in runs]
    if len(runs) > 1 and len(set(spans)) > 1:
        each = "; ".join(f"{r.run_id}: {s}" for r, s in zip(runs, spans))
        out.append(
            f"the runs cover different spans ({each}); figures over different days are not like for like, "
            "compare runs with the same data.start and data.end"
        )
    for r in runs:
        holes = (r.metrics.get("data") or {}).get("holes") or []
        if holes:
            secs = sum(float(h.get("seconds") or 0) for h in holes)
            out.append(
                f"{r.run_id}: its data has {len(holes)} hole(s) of a minute or more ({secs / 3600:.1f} h uncovered)"
            )
    return out


def _figures(runs: Sequence[RunView]) -> tuple[str, str]:
    import plotly.graph_objects as go

    eq = go.Figure()
    for r in runs:
        if r.equity is not None and len(r.equity):
            s = r.equity / float(r.equity.iloc[0])
            eq.add_trace(go.Scatter(x=[str(x) for x in s.index], y=s.to_numpy().tolist(), mode="lines", name=r.run_id))
    spans = {_span_text(run_span(r)) for r in runs}
    over = spans.pop() if len(spans) == 1 else "the runs cover different spans"
    eq.update_layout(
        title=f"Equity (normalised to 1 at the start) — {over}",
        yaxis_title="equity / starting cash",
        height=420,
        margin=dict(l=40, r=20, t=50, b=40),
    )
    dist = go.Figure()
    for r in runs:
        if r.returns is not None and r.returns.size:
            dist.add_trace(
                go.Histogram(
                    x=(100 * r.returns).tolist(),
                    name=r.run_id,
                    opacity=0.55,
                    histnorm="probability",
                    nbinsx=60,
                    bingroup="returns",  # one set of bins for every run, so the bars compare
                )
            )
    dist.update_layout(
        barmode="overlay",
        title="Net return per signal (%)",
        height=380,
        margin=dict(l=60, r=20, t=50, b=50),
        xaxis_title="net return (%)",
        yaxis_title="share of the run's signals",
    )
    cfg = {"displaylogo": False, "responsive": True}
    return (
        eq.to_html(full_html=False, include_plotlyjs=False, config=cfg),
        dist.to_html(full_html=False, include_plotlyjs=False, config=cfg),
    )


def render_compare(runs: Sequence[RunView], out_path: Path) -> str:
    """The page as a string; links to tearsheets are relative to ``out_path``."""
    import jinja2
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    if len(runs) < 1:
        raise UserError("give at least one run to compare")
    eq_html, dist_html = _figures(runs)
    from bt.metrics import SYMBOL_COLUMNS

    def rel(p: Path | None) -> str | None:
        return None if p is None else Path(os.path.relpath(p.resolve(), out_path.resolve().parent)).as_posix()

    links = [{"run": r.run_id, "href": rel(r.tearsheet), "report": rel(r.report)} for r in runs]
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    tpl = env.from_string(TEMPLATE.read_text())
    return tpl.render(
        runs=[
            {
                "id": r.run_id,
                "path": str(r.path),
                "name": r.metrics.get("name", ""),
                "kind": r.metrics.get("kind", "backtest"),
                "span": _span_text(run_span(r)),
            }
            for r in runs
        ],
        metric_rows=metric_rows(runs),
        config_rows=config_diff(runs),
        span_warnings=span_warnings(runs),
        symbol_header=[title for title, _, _ in SYMBOL_COLUMNS],
        symbol_rows=symbol_table_rows(runs),
        links=links,
        equity_html=Markup(eq_html),
        dist_html=Markup(dist_html),
        plotly_js=Markup(get_plotlyjs()),
    )


def write_compare(
    refs: Sequence[str], out: str | os.PathLike[str], *, results_dir: str = "results", quiet: bool = False
) -> Path:
    """Resolve runs, render the page and write it atomically to ``out``.

    Unless ``quiet``, prints each run's span to stderr, and a warning when the spans differ.
    """
    import sys

    runs = [load_run(resolve_run(r, results_dir)) for r in refs]
    if not quiet:
        width = max(len(r.run_id) for r in runs)
        for r in runs:
            print(f"{r.run_id:{width}s}  {_span_text(run_span(r))}", file=sys.stderr)
        for warning in span_warnings(runs):
            print(f"warning: {warning}", file=sys.stderr)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    page = render_compare(runs, out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
