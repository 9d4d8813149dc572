"""`datasets ingest bybit-archive`: Bybit daily trade files → raw copy + bronze trades."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_lake_option

GROUP = "ingest"

EXAMPLE = """\
Downloads trading/SYMBOL/SYMBOLYYYY-MM-DD.csv.gz for each UTC day (a local mirror with the
same layout works too), keeps each file byte for byte under raw/bybit_archive/, and merges
its trades into bronze (exchange bybit_linear). A day the archive lacks (404) is reported as
a gap. Re-running skips files already ingested, so an interrupted run just continues.

Example:
  datasets ingest bybit-archive --symbol BTCUSDT --start 2024-01-01 --end 2024-01-31 \\
      --lake az://lake/whale
  datasets ingest bybit-archive --root mirror/bybit --symbol ETHUSDT --start 2024-03-01 \\
      --end 2024-03-10
"""


def add_archive_args(p: argparse.ArgumentParser, default_base: str, symbol_help: str) -> None:
    """Flags shared by the daily-archive ingest commands."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--base-url", default=None, help=f"archive base URL (default {default_base})")
    src.add_argument("--root", default=None, help="local mirror directory laid out like the archive")
    p.add_argument("--symbol", required=True, help=symbol_help)
    p.add_argument("--start", required=True, help="first UTC day, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last UTC day, YYYY-MM-DD (included)")
    add_lake_option(p)
    p.add_argument("--workers", type=int, default=4, help="downloads in flight at once")
    p.add_argument(
        "--force", action="store_true", help="re-read files already ingested (bronze is merged, so nothing doubles)"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the span's bronze days with this archive's trades (and coverage), e.g. when "
        "they hold trades of another id space, which a merge refuses",
    )
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="store a file's valid trades and quarantine invalid ones (quarantine/<source>/...) instead of "
        "refusing the file",
    )


def parse_span(start: str, end: str):
    import datetime as dt

    try:
        lo, hi = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        raise UserError(f"--start/--end must be dates like 2024-01-31; got {start!r} and {end!r}") from None
    if hi < lo:
        raise UserError(f"--end {hi} is before --start {lo}; swap them")
    return lo, hi


def print_report(rep, what: str, lake_uri: str) -> None:
    import sys

    for rel in rep.gaps:
        print(
            f"warning: gap: {rel} is not in the archive (not found); its days stay empty unless another file fills them",
            file=sys.stderr,
        )
    print(
        f"{what} → {lake_uri}: {rep.files} files, {rep.ingested} ingested "
        f"({rep.from_raw} from the lake's raw copy), {rep.skipped} already done, {len(rep.gaps)} gaps; "
        f"{rep.rows} trades, {rep.partitions_changed} partitions changed, "
        f"{rep.partitions_unchanged} unchanged; {rep.bytes_downloaded / 1e6:.1f} MB downloaded "
        f"in {rep.seconds:.1f} s ({rep.trades_per_s:,.0f} trades/s)"
    )
    if rep.files and len(rep.gaps) == rep.files:
        raise UserError(
            f"none of the {rep.files} files of {what} exist in the archive; check "
            "--symbol (exchange's own spelling) and --base-url/--root"
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bybit-archive",
        help="Bybit public trade archive (daily .csv.gz per symbol)",
        description="Ingest Bybit's daily trade files into the lake (raw + bronze bybit_linear).",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_archive_args(p, "https://public.bybit.com", "Bybit linear symbol, e.g. BTCUSDT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datasets.lake import Lake
    from datasets.sources._http import FetchError
    from datasets.sources.bybit_archive import BYBIT_BASE_URL, ingest_bybit_archive

    lo, hi = parse_span(args.start, args.end)
    base = args.root or args.base_url or BYBIT_BASE_URL
    lake = Lake(args.lake)
    try:
        rep = ingest_bybit_archive(
            base,
            args.symbol,
            lo,
            hi,
            lake,
            workers=args.workers,
            force=args.force,
            replace=args.replace,
            skip_bad_rows=args.skip_bad_rows,
        )
    except FetchError as exc:
        raise UserError(
            f"{exc} (nothing of this run was written: every file is fetched and checked first; re-run to try again)"
        ) from None
    print_report(rep, f"bybit {args.symbol.upper()} {lo}..{hi}", lake.uri)
    return 0
