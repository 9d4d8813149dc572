"""`datasets ingest binance-archive`: Binance USD-M aggTrades archive -> lake (raw + bronze)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import JustifyMethod

import argparse
import sys

from whalebt.cli import HelpFormatter, UserError, add_lake_option

GROUP = "ingest"

EXAMPLE = """\
Reads data/futures/um/daily/aggTrades/SYM/SYM-aggTrades-YYYY-MM-DD.zip (and monthly files for
whole months whose daily files are missing) under --root or --base-url, checks every .CHECKSUM
and the whole content before writing anything, then stores the zips byte for byte under
raw/binance_usdm/ and the trades in bronze. Re-running the same days writes nothing.
Missing days are reported as gaps.

Example:
  datasets ingest binance-archive --root results/synth --symbol PLANTUSDT \\
      --start 2024-03-01 --end 2024-03-10 --lake results/lake
  datasets ingest binance-archive --base-url https://data.binance.vision --symbol BTCUSDT \\
      --start 2024-03-01 --end 2024-03-31
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "binance-archive",
        help="Binance USD-M aggTrades archive (local copy or base URL)",
        description=__doc__.split(":", 1)[1].strip(),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", metavar="DIR", help="local directory laid out like the archive")
    src.add_argument("--base-url", metavar="URL", help="http(s) base URL laid out like the archive")
    p.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    p.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first UTC day")
    p.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    add_lake_option(p)
    p.add_argument("--workers", type=int, default=4, help="concurrent downloads")
    p.add_argument("--retries", type=int, default=4, help="extra attempts per file after a network error")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the days' bronze partitions with the archive's trades (and coverage), e.g. "
        "when they hold trades of another id space (a recording's fill ids), which a merge refuses",
    )
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="store the valid trades and quarantine invalid ones (quarantine/binance_usdm/...) instead of "
        "refusing the run",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from datasets.sources._http import FetchError
    from datasets.sources.binance_archive import ingest_binance_archive

    if args.root is not None:
        import os

        if not os.path.isdir(args.root.removeprefix("file://")):
            raise UserError(
                f"--root {args.root} is not a directory; expected a local copy of the archive "
                "(the folder that holds data/futures/um/...)"
            )
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1; got {args.workers}")
    err = Console(stderr=True, highlight=False)
    try:
        report = ingest_binance_archive(
            args.root if args.root is not None else args.base_url,
            args.symbol,
            args.start,
            args.end,
            args.lake,
            max_workers=args.workers,
            retries=max(0, args.retries),
            progress=not args.no_progress and sys.stderr.isatty(),
            warn=lambda msg: err.print(f"Warning: {msg}", markup=False),
            replace=args.replace,
            skip_bad_rows=args.skip_bad_rows,
        )
    except FetchError as exc:
        raise UserError(str(exc)) from None

    table = Table(title=f"binance-archive -> {report.lake}: {report.symbol} {report.start}..{report.end}")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("date", "left"),
        ("file", "left"),
        ("rows", "right"),
        ("zip bytes", "right"),
        ("time", "left"),
        ("bronze", "left"),
    )
    for col, just in columns:
        table.add_column(col, justify=just)
    for d in report.days:
        table.add_row(
            str(d.date),
            d.source.rsplit("/", 1)[-1],
            f"{d.rows:,}",
            f"{d.bytes:,}",
            d.ts_unit,
            "written" if d.changed else "unchanged",
        )
    out = Console(highlight=False, width=max(100, Console().width))
    out.print(table)
    gaps = ", ".join(str(g) for g in report.gaps) or "none"
    out.print(
        f"days {len(report.days)} (written {report.days_changed}, unchanged "
        f"{len(report.days) - report.days_changed}) · rows {report.rows:,} · bytes {report.bytes:,} · "
        f"raw files written {report.raw_written}, unchanged {report.raw_unchanged} · "
        f"gaps {len(report.gaps)}: {gaps}",
        markup=False,
    )
    return 0
