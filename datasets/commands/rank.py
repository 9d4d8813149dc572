"""`datasets rank`: rank an exchange's symbols from daily klines (Kyle's lambda, big moves, exclusions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import JustifyMethod

import argparse
import sys

from whalebt.cli import HelpFormatter, UserError, add_out_option

EXAMPLE = """\
Score = weighted mix of Kyle's lambda (|cov(r, q)| / var(q), r = ln(close/open), q = signed
taker quote flow), the share of days with |close/open - 1| > 5 % and the share with
(high - low)/open > 20 %, each normalised across eligible symbols (percentile rank by
default). Excluded symbols are listed with every reason (stablecoin, status, history,
gaps, stale, quality, liquidity, activity, flow). A base URL cannot be listed, so it needs
--symbols, --start and --end; a directory is searched for SYM-1d-*.zip/csv files.

Example:
  datasets rank --exchange binance_usdm --klines mirror/ --exchange-info exchangeInfo.json \\
      --start 2024-01-01 --end 2024-06-30 --out rank.html
  datasets rank --klines https://data.binance.vision --symbols BTCUSDT,PEPEUSDT,WIFUSDT \\
      --start 2024-01-01 --end 2024-06-30 --weights kyle_lambda=1 --out rank.csv
"""


# The library's defaults (datasets.rank.DEFAULT_WEIGHTS / RankFilters), repeated here so that
# `--help` does not import pandas; tests/datasets/test_rank.py checks that they agree.
DEFAULTS = {
    "weights": "kyle_lambda=0.4,big_move_share=0.3,wide_range_share=0.3",
    "min_days": 60,
    "max_missing_days": 3,
    "max_stale_days": 2,
    "max_bad_rows": 0,
    "min_quote_volume_usd": 5_000_000.0,
    "min_trades": 10_000.0,
    "stablecoins": "USDT,USDC,BUSD,TUSD,FDUSD,DAI,USDP,PYUSD,USDE,USD1,USDS,FRAX,GUSD,EUR,EURI,AEUR",
}


def register(sub: argparse._SubParsersAction) -> None:
    d = DEFAULTS
    p = sub.add_parser(
        "rank",
        help="rank symbols from daily klines (Kyle's lambda, big-move shares, exclusions)",
        description="Rank an exchange's perpetuals by how much taker flow moves them, with exclusion reasons.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--exchange",
        default="binance_usdm",
        choices=("binance_usdm",),
        help="whose klines (Binance's archive format: the only one with taker-buy volume)",
    )
    p.add_argument("--klines", required=True, metavar="DIR_OR_URL", help="archive directory or base URL")
    p.add_argument("--symbols", default=None, help="comma-separated symbols (default: all found)")
    p.add_argument("--start", default=None, help="first UTC day used, e.g. 2024-01-01")
    p.add_argument("--end", default=None, help="last UTC day used (inclusive)")
    p.add_argument(
        "--exchange-info",
        default=None,
        metavar="FILE_OR_URL",
        help="exchangeInfo JSON: excludes symbols not TRADING or not PERPETUAL",
    )
    p.add_argument("--weights", default=d["weights"], help="component=weight pairs (rescaled to sum to 1)")
    p.add_argument(
        "--normalise",
        default="rank",
        choices=("rank", "zscore"),
        help="how components are put on one scale before weighting",
    )
    p.add_argument("--big-move", type=float, default=0.05, help="threshold of |close/open - 1|")
    p.add_argument("--wide-range", type=float, default=0.20, help="threshold of (high - low)/open")
    p.add_argument("--min-days", type=int, default=d["min_days"], help="exclude shorter histories")
    p.add_argument("--max-missing-days", type=int, default=d["max_missing_days"], help="exclude gappier histories")
    p.add_argument(
        "--max-stale-days",
        type=int,
        default=d["max_stale_days"],
        help="exclude symbols whose last kline is older than the newest by more than this",
    )
    p.add_argument("--max-bad-rows", type=int, default=d["max_bad_rows"], help="exclude symbols with more bad rows")
    p.add_argument(
        "--min-quote-volume-usd",
        type=float,
        default=d["min_quote_volume_usd"],
        help="exclude symbols with a lower median daily quote volume",
    )
    p.add_argument(
        "--min-trades",
        type=float,
        default=d["min_trades"],
        help="exclude symbols with a lower median daily trade count",
    )
    p.add_argument("--stablecoins", default=d["stablecoins"], help="base assets treated as stablecoins")
    p.add_argument("--top", type=int, default=None, help="show only the best N eligible symbols in the table")
    add_out_option(p, kind="file", metavar="FILE", help="also write the full table: .html or .csv")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from whalebt.progress import status
    from datasets.rank import RankError, RankFilters, load_exchange_info, load_klines, parse_weights, rank_symbols

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".html", ".csv"):
        raise UserError(f"--out {out}: expected a .html or .csv file name")
    try:
        start = dt.date.fromisoformat(args.start) if args.start else None
        end = dt.date.fromisoformat(args.end) if args.end else None
    except ValueError:
        raise UserError(f"--start/--end: expected UTC days like 2024-01-01; got {args.start!r}, {args.end!r}") from None
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    err = Console(stderr=True)
    try:
        weights = parse_weights(args.weights)
        filters = RankFilters(
            min_days=args.min_days,
            max_missing_days=args.max_missing_days,
            max_stale_days=args.max_stale_days,
            max_bad_rows=args.max_bad_rows,
            min_quote_volume_usd=args.min_quote_volume_usd,
            min_trades=args.min_trades,
            stablecoins=tuple(s.strip().upper() for s in args.stablecoins.split(",") if s.strip()),
        )
        n_files = 0
        with status("reading klines") as line:

            def seen(path: str) -> None:
                nonlocal n_files
                n_files += 1
                line.update(f"reading klines: {n_files} files ({Path(path).name})")

            klines = load_klines(args.klines, symbols=symbols, start=start, end=end, on_file=seen)
        info = load_exchange_info(args.exchange_info) if args.exchange_info else None
        table = rank_symbols(
            klines,
            weights=weights,
            normalise=args.normalise,
            filters=filters,
            exchange_info=info,
            big_move=args.big_move,
            wide_range=args.wide_range,
        )
    except RankError as exc:
        raise UserError(str(exc)) from None
    err.print(f"{len(klines)} symbols from {n_files} files; {int(table['eligible'].sum())} eligible")

    t = Table(title=f"{args.exchange} symbol ranking ({args.normalise} normalisation)")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("rank", "right"),
        ("symbol", "left"),
        ("score", "right"),
        ("λ bps/$1M", "right"),
        (f"|Δ|>{args.big_move:.0%}", "right"),
        (f"range>{args.wide_range:.0%}", "right"),
        ("days", "right"),
        ("median $vol", "right"),
        ("trades/day", "right"),
        ("excluded because", "left"),
    )
    for col, just in columns:
        t.add_column(col, justify=just)
    shown = table
    if args.top is not None:
        shown = table[(~table["eligible"]) | (table["rank"].fillna(0) <= args.top)]

    import pandas as pd

    def num(x, fmt: str) -> str:
        return "" if pd.isna(x) else format(x, fmt)

    for r in shown.itertuples(index=False):
        t.add_row(
            "" if pd.isna(r.rank) else str(r.rank),
            r.symbol,
            num(r.score, ".3f"),
            num(r.kyle_lambda_bps_per_musd, ",.1f"),
            num(r.big_move_share, ".1%"),
            num(r.wide_range_share, ".1%"),
            str(r.days),
            num(r.median_quote_volume_usd, ",.0f"),
            num(r.median_trades, ",.0f"),
            r.reasons,
        )
    Console(file=sys.stdout, width=max(160, Console().width)).print(t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            table.to_csv(out, index=False)
        else:
            body = table.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.6g}", border=0)
            out.write_text(
                "<!doctype html><html><head><meta charset='utf-8'><title>whalebt symbol ranking</title>"
                "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
                "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
                "td:nth-child(2),td:last-child{text-align:left}</style></head><body>"
                f"<h2>{args.exchange} symbol ranking</h2><p>Weights {args.weights}; {args.normalise} normalisation; "
                f"klines {args.klines}.</p>{body}</body></html>",
                encoding="utf-8",
            )
        err.print(f"wrote {out}")
    return 0
