"""Views of a finished run: the console table and the quantstats tearsheet.

Reports read what a run produced (its metrics and equity curve); they never recompute it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path


__all__ = ["metrics_table", "print_metrics", "write_tearsheet"]


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:+.3f} %"


def _num(x, fmt="{:.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def signals_headline(m: dict) -> str:
    """``158 signals (1 independent)``: overlapping outcome windows count once."""
    n, k = m.get("n_signals", 0), m.get("n_independent")
    return f"{n} signals" + (f" ({k} independent)" if k is not None else "")


def metrics_table(metrics: dict):
    """A rich Table of the headline numbers of a run."""
    from rich.table import Table

    t = Table(title=f"{metrics['name']}  ({metrics['run_id']})", show_header=True, header_style="bold")
    t.add_column("event study", style="cyan")
    t.add_column(f"horizon {metrics['horizon']}", justify="right")
    t.add_column("portfolio", style="cyan")
    t.add_column("", justify="right")
    p = metrics["portfolio"]
    ci = metrics.get("mean_return_ci95")
    left = [
        ("signals", f"{metrics['n_signals']} ({metrics.get('n_independent')} independent)"),
        ("mean return", _pct(metrics.get("mean_return"))),
        ("  95 % CI", f"{_pct(ci[0])} … {_pct(ci[1])}" if ci else "— (too few independent)"),
        ("median return", _pct(metrics.get("median_return"))),
        ("win rate", _num(metrics.get("win_rate"), "{:.1%}")),
        ("share ≥ +1 %", _num(metrics.get("hit_rate_1pct"), "{:.1%}")),
        ("precision", _num(metrics.get("precision"), "{:.1%}")),
        ("p10 / p90", f"{_pct(metrics.get('p10'))} / {_pct(metrics.get('p90'))}"),
        ("dropped", _dropped(metrics)),
    ]
    right = [
        ("trades", str(p["n_trades"])),
        ("total return", _pct(p.get("total_return"))),
        ("Sharpe (daily)", _num(p.get("sharpe"), "{:.2f}")),
        ("Sortino", _num(p.get("sortino"), "{:.2f}")),
        ("max drawdown", _pct(p.get("max_drawdown"))),
        ("exposure", _num(p.get("exposure"), "{:.1%}")),
        ("trade win rate", _num(p.get("trade_win_rate"), "{:.1%}")),
        ("", ""),
        ("", ""),
    ]
    for (a, b), (c, d) in zip(left, right):
        t.add_row(a, b, c, d)
    by_h = metrics.get("by_horizon", {})
    if len(by_h) > 1:
        t.caption = "other horizons: " + ", ".join(
            f"{h}: {signals_headline(m)}, mean {_pct(m.get('mean_return'))}"
            for h, m in by_h.items()
            if h != metrics["horizon"]
        )
    return t


def print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    from rich.console import Console

    console = Console()
    console.print(
        f"[bold]{metrics['name']}[/bold]: {signals_headline(metrics)} at horizon {metrics['horizon']}, "
        f"mean net return {_pct(metrics.get('mean_return'))}"
    )
    console.print(metrics_table(metrics))
    c = metrics["costs"]
    fc = metrics.get("funding_coverage")
    funding = (
        "not included"
        if not c["funding"]
        else "included" + (f" ({fc:.0%} of holding windows covered)" if fc is not None and fc < 1 else "")
    )
    console.print(
        f"costs: fee {c['fee_bps']} bps per side, slippage {c['slippage_bps']} bps, "
        f"entry {c['entry_latency_ms']} ms after the trigger at the first trade in a later millisecond "
        f"(fills in the whale's own millisecond are its own order's), funding {funding}"
    )
    if metrics.get("ci_note"):
        console.print(f"95 % CI of the mean: {metrics['ci_note']}")
    note = metrics["portfolio"].get("annualisation_note")
    if note:
        console.print(f"annualised figures: {note}")
    if run_dir is not None:
        console.print(f"results: {run_dir}")
        if (run_dir / "tearsheet.html").exists():
            console.print(f"tearsheet: {run_dir / 'tearsheet.html'}")


def write_tearsheet(pf, metrics: dict, path: Path) -> None:
    """quantstats HTML tearsheet of the portfolio's daily returns (365 periods a year).

    quantstats annualises whatever it is given; when the span is too short for that to mean
    anything (``portfolio.annualisation_note`` in the metrics), the page opens with a note
    saying so, and the metrics.json figures are null.
    """
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import html

    import matplotlib

    matplotlib.use("Agg")
    import quantstats as qs

    from bt.metrics import PERIODS_PER_YEAR, daily_returns

    rets = daily_returns(pf.equity)
    rets.index = rets.index.tz_localize(None)
    title = (
        f"whalebt {metrics['name']} — {metrics['data']['exchange']}/{metrics['data']['symbol']} "
        f"{metrics['data']['start']}..{metrics['data']['end']}, horizon {metrics['horizon']}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qs.reports.html(rets, output=str(path), title=title, periods_per_year=PERIODS_PER_YEAR)
    note = (metrics.get("portfolio") or {}).get("annualisation_note")
    if note:
        page = path.read_text()
        banner = (
            f'<div style="background:#fff3cd;border:1px solid #c9a227;padding:8px;margin:8px 0;'
            f'font-family:sans-serif"><b>Not annualised by whalebt:</b> {html.escape(note)}. '
            "The annualised figures quantstats prints below (CAGR, Sharpe, Sortino, ...) "
            "extrapolate too short a span; metrics.json leaves them null.</div>"
        )
        at = page.find("<body>")
        page = page[: at + 6] + banner + page[at + 6 :] if at >= 0 else banner + page
        path.write_text(page)


def _dropped(metrics: dict) -> str:
    """``12 (end of data 3, gap 9, no entry 0)``: signals left out, by reason."""
    n = str(metrics.get("n_dropped", 0))
    by = metrics.get("dropped")
    if not by:
        return n
    return n + " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in by.items()) + ")"
