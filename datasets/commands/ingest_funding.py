"""`datasets ingest funding`: funding-rate history (Binance archive or exchange REST) → the lake."""

from __future__ import annotations

import argparse
import sys

from whalebt.cli import HelpFormatter, UserError, add_lake_option, env_default

GROUP = "ingest"

EXAMPLE = """\
Stores funding times and rates under funding/exchange=E/symbol=S/part-YYYY-MM.parquet, which
`bt run` reads to charge (rate > 0) or credit (rate < 0) long positions at every funding time
they span. With --base-url or --root, Binance's monthly fundingRate files (checked against their
.CHECKSUM, kept in raw/); otherwise the exchange's REST API through ccxt (Bybit and OKX only
have REST; OKX keeps about three months). Re-running changes nothing. Every row is checked first
(time from 2009 to now, rate a finite fraction inside ±1): one bad row refuses the ingest with
nothing written, or with --skip-bad-rows goes to quarantine/funding_archive/ (or funding_rest/)
and is counted in that day's bronze quality report (`datasets status`).

Example:
  datasets ingest funding --exchange binance_usdm --symbol BTCUSDT --start 2024-01-01 \\
      --end 2024-06-30 --base-url https://data.binance.vision --lake results/lake
  datasets ingest funding --exchange bybit_linear --symbol BTCUSDT --start 2024-06-01 --end 2024-06-30
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "funding",
        help="funding-rate history: Binance archive, or Binance/Bybit/OKX REST",
        description="Ingest funding-rate history into the lake.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--exchange", required=True, choices=("binance_usdm", "bybit_linear", "okx_swap"))
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDT (OKX also BTC-USDT-SWAP)")
    p.add_argument("--start", required=True, help="first UTC day, e.g. 2024-01-01")
    p.add_argument("--end", required=True, help="last UTC day (inclusive)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--base-url", default=None, help="Binance archive base URL (https://data.binance.vision)")
    src.add_argument("--root", default=None, help="local directory laid out like the Binance archive")
    add_lake_option(p)
    p.add_argument(
        "--api-url",
        default=env_default("WHALEBT_REST_API_URL", ""),
        help="REST: send requests to this base URL instead of the exchange",
    )
    p.add_argument("--rate-limit-ms", type=float, default=None, help="REST: ccxt's spacing per unit of weight")
    p.add_argument("--max-retries", type=int, default=8, help="REST: retries per request")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="store the valid funding rows and quarantine invalid ones (quarantine/funding_*/...) instead of "
        "refusing the ingest",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from datasets.lake import Lake
    from datasets.sources.funding import FundingError, ingest_funding_archive, ingest_funding_rest
    from datasets.sources.rest import Backoff, RestError, format_ms

    try:
        start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    except ValueError:
        raise UserError(
            f"--start/--end: expected UTC days like 2024-01-01; got {args.start!r} and {args.end!r}"
        ) from None
    if end < start:
        raise UserError(f"--end {end} is before --start {start}")
    archive = args.base_url or args.root
    if archive and args.exchange != "binance_usdm":
        raise UserError(f"{args.exchange} publishes no funding archive; drop --base-url/--root to use its REST API")
    lake = Lake(args.lake)
    try:
        if archive:
            rep = ingest_funding_archive(
                lake, args.symbol, start, end, archive, progress=not args.quiet, skip_bad_rows=args.skip_bad_rows
            )
        else:
            start_ms = int(dt.datetime.combine(start, dt.time(), dt.timezone.utc).timestamp() * 1000)
            end_ms = (
                int(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.timezone.utc).timestamp() * 1000) - 1
            )
            rep = ingest_funding_rest(
                lake,
                args.exchange,
                args.symbol,
                start_ms,
                end_ms,
                api_url=args.api_url or None,
                rate_limit_ms=args.rate_limit_ms,
                backoff=Backoff(max_retries=args.max_retries),
                skip_bad_rows=args.skip_bad_rows,
            )
    except (FundingError, RestError) as exc:
        raise UserError(str(exc)) from None
    for g in rep.gaps:
        print(f"warning: gap: {g}", file=sys.stderr)
    if rep.changed_rates:
        print(
            f"warning: {rep.changed_rates} stored funding rate(s) differed from the new source and were replaced",
            file=sys.stderr,
        )
    span = (
        f"{format_ms(rep.first_ts_ms)[:16]} .. {format_ms(rep.last_ts_ms)[:16]} UTC"
        if rep.first_ts_ms is not None and rep.last_ts_ms is not None
        else "none"
    )
    print(
        f"{rep.exchange} {rep.symbol}: {rep.rows} funding times ({span}) from {rep.source}; "
        f"{len(rep.keys_changed)} month(s) changed in {lake.uri}"
        + (f"; {rep.quarantined} bad rows quarantined under quarantine/funding_*/" if rep.quarantined else "")
    )
    for k in rep.keys_changed:
        print(f"  {k}")
    return 0
