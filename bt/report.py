"""Views of a finished run: the console table and the quantstats tearsheet.

Reports read what a run produced (its metrics and equity curve); they never recompute it.
"""

from __future__ import annotations

import contextlib
import html
import logging
import warnings
from pathlib import Path


__all__ = ["metrics_table", "print_metrics", "write_tearsheet", "price_on_bars", "tearsheet_inputs"]


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


def symbol_table(metrics: dict):
    """The universe's per-symbol figures (``metrics["by_symbol"]``) as a rich table."""
    from rich.table import Table

    from bt.metrics import SYMBOL_COLUMNS, format_symbol_value, symbol_rows

    t = Table(title="by symbol (each as if run alone; the headline pools them)")
    t.add_column("symbol")
    for title, _, _ in SYMBOL_COLUMNS:
        t.add_column(title, justify="right")
    for row in symbol_rows(metrics):
        t.add_row(row["symbol"], *(format_symbol_value(row[title], kind) for title, _, kind in SYMBOL_COLUMNS))
    return t


def print_metrics(metrics: dict, run_dir: Path | None = None) -> None:
    from rich.console import Console

    console = Console()
    console.print(
        f"[bold]{metrics['name']}[/bold]: {signals_headline(metrics)} at horizon {metrics['horizon']}, "
        f"mean net return {_pct(metrics.get('mean_return'))}"
    )
    console.print(metrics_table(metrics))
    if metrics.get("by_symbol"):
        console.print(symbol_table(metrics))
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
        if (run_dir / "report.html").exists():
            console.print(f"report: {run_dir / 'report.html'}")
        if (run_dir / "tearsheet.html").exists():
            console.print(f"tearsheet: {run_dir / 'tearsheet.html'}")


def price_on_bars(index, ts_ms, price):
    """Buy and hold on an equity curve's bar grid: the last trade price at or before each bar end."""
    import numpy as np
    import pandas as pd

    ends = np.asarray(index.as_unit("ms").asi8, dtype=np.int64)  # bar ends, ms UTC
    idx = np.searchsorted(np.asarray(ts_ms, dtype=np.int64), ends, side="right") - 1
    px = np.asarray(price, dtype=np.float64)[np.maximum(idx, 0)]
    if (idx < 0).any():  # bars before the first trade hold its price
        px[idx < 0] = float(price[0])
    return pd.Series(px, index=index, name="buy_and_hold")


def _daily(values):
    """Day-close returns of a series indexed by bar end (UTC), days without tz.

    A bar ending at midnight closes the day before (the curve's first point, its starting value,
    stays on its own day), so a run over 2024-03-01..02 has those two days and no third one.
    """
    import numpy as np
    import pandas as pd

    s = values.astype(np.float64)
    if s.empty:
        return pd.Series(dtype=np.float64)
    day = s.index.floor("D")
    at_midnight = (s.index == day) & (np.arange(len(s)) > 0)
    day = day.where(~at_midnight, day - pd.Timedelta(days=1))
    closes = s.groupby(day.tz_localize(None)).last()
    base = np.r_[s.iloc[0], closes.to_numpy()[:-1]]
    return pd.Series(closes.to_numpy() / base - 1.0, index=closes.index)


def tearsheet_inputs(pf, metrics: dict, benchmark=None):
    """``(returns, benchmark_returns, title)`` as handed to quantstats.

    Both return series are daily (UTC day closes, a bar ending at midnight closing the day
    before) on the same days; the benchmark is buying the symbol at the first bar and holding it to the last
    (``benchmark``: its price on the equity curve's bars, :func:`price_on_bars`).
    """
    rets = _daily(pf.equity).rename("strategy")
    bench = None
    if benchmark is not None and len(benchmark):
        bench = _daily(benchmark).rename(f"buy and hold {metrics['data']['symbol']}")
    span = f"{rets.index[0]:%Y-%m-%d} → {rets.index[-1]:%Y-%m-%d}" if len(rets) else "no days"
    title = (
        f"whalebt {metrics['name']} — {metrics['data']['exchange']}/{metrics['data']['symbol']} "
        f"{span}, horizon {metrics['horizon']}"
    )
    return rets, bench, title


ROLLING_PANELS = {
    "rolling_beta": "beta to the benchmark",
    "rolling_volatility": "volatility",
    "rolling_sharpe": "Sharpe ratio",
    "rolling_sortino": "Sortino ratio",
}


@contextlib.contextmanager
def _replaced(module, replacements: dict):
    """Functions of a quantstats ``module`` (``qs.plots``, ``qs.reports``) replaced by name for
    the block, the originals back after it."""
    saved = {name: getattr(module, name) for name in replacements}
    try:
        for name, fn in replacements.items():
            setattr(module, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


@contextlib.contextmanager
def _rolling_panels_noted(qs, n_days: int):
    """quantstats' rolling 6-month panels, replaced by a line saying why when the span is shorter.

    Their window is half a year of daily returns (183 at 365 periods a year): over fewer days
    quantstats draws four empty axes, which read as "no risk" (issue: empty 6-month panels). The
    note states the window and the run's days instead, and the page is drawn in less time.
    """
    from bt.metrics import PERIODS_PER_YEAR

    _, window = qs.reports._get_trading_periods(PERIODS_PER_YEAR)  # the window html() draws them with
    if n_days >= window:
        yield
        return

    def note(what: str):
        def draw(*_: object, savefig: dict | None = None, **__: object) -> None:
            text = html.escape(f"Rolling 6-month {what}: needs {window} days of daily returns; this run has {n_days}.")
            svg = (
                '<svg xmlns="http://www.w3.org/2000/svg" width="576pt" height="40pt" viewBox="0 0 576 40">'
                f'<text x="4" y="24" style="font: 13px Arial, sans-serif; fill: #666">{text}</text></svg>'
            )
            if savefig is not None:
                savefig["fname"].write(svg.encode())

        return draw

    with _replaced(qs.plots, {name: note(what) for name, what in ROLLING_PANELS.items()}):
        yield


#: What a figure the other process draws reads in the page until its SVG is put in its place.
_FIGURE_MARK = "<!--whalebt-tearsheet-figure-{}-->"


def _drawn_by(part: int, i: int) -> bool:
    """Whether figure ``i`` of the page is drawn by ``part``: 0, the process that writes the page
    (its tables too, quantstats' metrics the dearest of them: every third figure), or 1, the one
    that draws figures only (the other two thirds)."""
    return (i % 3 == 0) == (part == 0)


@contextlib.contextmanager
def _figures_shared(qs, part: int, drawn: dict[int, bytes]):
    """The figures of quantstats' page that ``part`` draws (:func:`_drawn_by`): the calls of
    ``qs.plots`` functions that save a figure are numbered in the order ``reports.html`` makes
    them; those of the other part write a mark instead of drawing, and the SVG of each figure
    drawn here is kept in ``drawn`` under its number. Part 1 leaves out the metrics table too:
    its page is thrown away.

    Two processes that draw the same page, one per part, have every figure between them: the
    numbering is the same in both, as the page is the same call on the same data.
    """
    import inspect

    import pandas as pd

    saved = {}  # the functions that save a figure
    for name, fn in vars(qs.plots).items():
        if name.startswith("_") or not callable(fn):
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if "savefig" in params:
            saved[name] = fn
    count = [0]

    def shared(fn):
        def call(*args, **kwargs):
            savefig = kwargs.get("savefig")
            if not savefig:
                return fn(*args, **kwargs)
            i = count[0]
            count[0] += 1
            out = savefig["fname"] if isinstance(savefig, dict) else savefig
            if not _drawn_by(part, i):
                out.write(_FIGURE_MARK.format(i).encode())
                return None
            result = fn(*args, **kwargs)
            drawn[i] = out.getvalue()
            return result

        return call

    with contextlib.ExitStack() as stack:
        if part == 1:
            stack.enter_context(_replaced(qs.reports, {"metrics": lambda *a, **k: pd.DataFrame()}))
        stack.enter_context(_replaced(qs.plots, {name: shared(fn) for name, fn in saved.items()}))
        yield


def _quantstats():
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib

    # quantstats saves SVG; with the svg backend pyplot does not redraw each figure on an Agg
    # canvas after saving it (the same page, in half the time). Its text stays text (the
    # browser sets it) instead of a path per glyph: a quarter less drawing, a third of the bytes.
    matplotlib.use("svg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    import quantstats as qs

    return qs


def _draw_page(qs, rets, bench, title: str, output: Path, part: int | None = None, drawn=None) -> None:
    """quantstats' page of ``rets`` (daily) against ``bench``; ``part``: only that part of its
    figures drawn (:func:`_figures_shared`), the others marked."""
    from bt.metrics import PERIODS_PER_YEAR

    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(_rolling_panels_noted(qs, len(rets)))
        if part is not None:
            stack.enter_context(_figures_shared(qs, part, drawn))
        qs.reports.html(rets, benchmark=bench, output=str(output), title=title, periods_per_year=PERIODS_PER_YEAR)


def draw_tearsheet_figures(rets, bench, title: str) -> dict[int, bytes]:
    """Part 1 of the figures of the tearsheet page of these inputs (:func:`_drawn_by`), as SVG by
    number (the other process of :func:`write_tearsheet` with ``other_half``)."""
    import tempfile

    qs = _quantstats()
    drawn: dict[int, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="whalebt-tearsheet-") as tmp:
        _draw_page(qs, rets, bench, title, Path(tmp) / "page.html", part=1, drawn=drawn)
    return drawn


def write_tearsheet(pf, metrics: dict, path: Path, benchmark=None, *, other_half=None) -> None:
    """quantstats HTML tearsheet of the portfolio's daily returns (365 periods a year).

    ``benchmark``: the symbol's price on the equity curve's bars (:func:`price_on_bars`); its
    daily returns are quantstats' benchmark (buy and hold over the same span). The title names
    the span of days. When the span is too short to annualise (``portfolio.annualisation_note``
    in the metrics), the page opens with a note saying so, and the metrics.json figures are null.

    ``other_half``: a function that starts another process drawing two thirds of the page's
    figures (:func:`draw_tearsheet_figures` on the inputs it is given) and returns it, with ``result()``
    and ``cancel()``, or None when it cannot (``bt.background.start_tearsheet_figures``); the
    page is the same as drawn by one process.
    """
    qs = _quantstats()
    rets, bench, title = tearsheet_inputs(pf, metrics, benchmark)
    no_bench = None
    if bench is not None and not (len(rets) > 1 and rets.std() > 0 and bench.std() > 0):
        # quantstats regresses one on the other: a flat series (no trades, a flat price) breaks it.
        no_bench = "the benchmark is left out: the strategy or the price did not move"
        bench = None
    if not _draw_split(qs, rets, bench, title, path, other_half):
        _draw_page(qs, rets, bench, title, path)
    note = (metrics.get("portfolio") or {}).get("annualisation_note")
    banner = ""
    if note:
        banner += (
            f'<div style="background:#fff3cd;border:1px solid #c9a227;padding:8px;margin:8px 0;'
            f'font-family:sans-serif"><b>Not annualised by whalebt:</b> {html.escape(note)}. '
            "The annualised figures quantstats prints below (CAGR, Sharpe, Sortino, ...) "
            "extrapolate too short a span; metrics.json leaves them null.</div>"
        )
    if no_bench:
        banner += f'<div style="padding:8px;font-family:sans-serif">Note: {html.escape(no_bench)}.</div>'
    if banner:
        page = path.read_text()
        at = page.find("<body>")
        page = page[: at + 6] + banner + page[at + 6 :] if at >= 0 else banner + page
        path.write_text(page)


def _draw_split(qs, rets, bench, title: str, path: Path, other_half) -> bool:
    """The page drawn here with its tables and a third of its figures, and another process
    drawing the others, put in their places; False (nothing written) when it cannot be: no ``other_half``, or
    it failed or numbered the figures otherwise (the caller then draws the whole page)."""
    other = other_half({"rets": rets, "bench": bench, "title": title}) if other_half is not None else None
    if other is None:
        return False
    drawn: dict[int, bytes] = {}
    try:
        _draw_page(qs, rets, bench, title, path, part=0, drawn=drawn)
    except BaseException:
        other.cancel()
        raise
    try:
        theirs = other.result()
    except Exception:
        return False
    page = path.read_text(encoding="utf-8")
    for i, svg in theirs.items():
        mark = _FIGURE_MARK.format(i)
        if page.count(mark) != 1:
            return False
        page = page.replace(mark, svg.decode())
    if _FIGURE_MARK[: _FIGURE_MARK.index("{")] in page:  # a mark left: the numbering differed
        return False
    path.write_text(page, encoding="utf-8")
    return True


def _dropped(metrics: dict) -> str:
    """``12 (end of data 3, gap 9, no entry 0)``: signals left out, by reason."""
    n = str(metrics.get("n_dropped", 0))
    by = metrics.get("dropped")
    if not by:
        return n
    return n + " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in by.items()) + ")"
