"""`datasets ingest rest`: trades from an exchange's REST API (ccxt) → bronze, resumable."""

from __future__ import annotations

import argparse
import sys

from whalebt.cli import HelpFormatter, UserError, add_lake_option, env_default

GROUP = "ingest"

EXAMPLE = """\
Pages through the exchange's public trade history from --since (inclusive) to --until
(exclusive; default: now) and merges the trades into bronze, a batch at a time. Run the
same command again after a crash or later on: it continues after the newest stored trade,
and never stores a trade twice. Binance: aggTrades (any age). OKX: about the last three
months. Bybit: only the latest 1000 trades (older spans are reported as gaps; use
`datasets ingest bybit-archive`). Rate limits (HTTP 429/418) are waited out as the
exchange asks (Retry-After).

Example:
  datasets ingest rest --exchange binance_usdm --symbol BTCUSDT --since 2024-06-30T00:00 \\
      --until 2024-07-01 --lake results/lake
  datasets ingest rest --exchange okx_swap --symbol BTC-USDT-SWAP --since 2024-06-30T12:00
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rest",
        help="trades from Binance/Bybit/OKX REST APIs through ccxt (resumable)",
        description="Fetch trades from an exchange's REST API into the lake's bronze layer.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--exchange", required=True, choices=("binance_usdm", "bybit_linear", "okx_swap"))
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDT (OKX also BTC-USDT-SWAP)")
    p.add_argument("--since", required=True, help="start, UTC: 2024-06-30, 2024-06-30T00:00 or epoch ms")
    p.add_argument("--until", default=None, help="end (exclusive), same forms; default: now")
    add_lake_option(p)
    p.add_argument(
        "--restart",
        action="store_true",
        help="refetch the whole span instead of continuing after the newest stored trade",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the span's bronze days with the fetched trades (and coverage) instead of "
        "merging, e.g. when they hold another id space (a recording's fill ids); implies --restart",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=200_000,
        help="write to the lake after this many trades (and after each UTC day)",
    )
    p.add_argument("--page-limit", type=int, default=None, help="trades per request (default: the endpoint's maximum)")
    p.add_argument(
        "--window-min",
        type=float,
        default=60.0,
        help="minutes per time window (Binance first-trade search, OKX backward reads; max 60 for Binance)",
    )
    p.add_argument("--max-retries", type=int, default=8, help="retries per request after rate limits and errors")
    p.add_argument(
        "--max-wait-s",
        type=float,
        default=900.0,
        help="longest wait the exchange may ask for (Retry-After) before the run stops",
    )
    p.add_argument(
        "--rate-limit-ms",
        type=float,
        default=None,
        help="ccxt's spacing per unit of request weight (default: ccxt's value for the exchange)",
    )
    p.add_argument(
        "--api-url",
        default=env_default("WHALEBT_REST_API_URL", ""),
        help="send requests to this base URL instead of the exchange (mirror, test server)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="store valid trades and quarantine invalid ones (quarantine/rest/...) instead of stopping",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datasets.lake import Lake
    from datasets.sources.rest import Backoff, RestError, format_ms, ingest_rest, parse_time_ms

    since = parse_time_ms(args.since, "--since")
    until = parse_time_ms(args.until, "--until") if args.until else None
    if args.batch_rows < 1:
        raise UserError(f"--batch-rows must be at least 1; got {args.batch_rows}")
    lake = Lake(args.lake)
    try:
        rep = ingest_rest(
            lake,
            args.exchange,
            args.symbol,
            since,
            until,
            api_url=args.api_url or None,
            resume=not args.restart,
            batch_rows=args.batch_rows,
            page_limit=args.page_limit,
            window_ms=int(args.window_min * 60_000),
            rate_limit_ms=args.rate_limit_ms,
            backoff=Backoff(max_retries=args.max_retries, max_wait_s=args.max_wait_s),
            progress=not args.quiet,
            replace=args.replace,
            skip_bad_rows=args.skip_bad_rows,
        )
    except RestError as exc:
        raise UserError(str(exc)) from None
    changed = rep.partitions_changed
    span = (
        f"{format_ms(rep.first_ts_ms)} .. {format_ms(rep.last_ts_ms)} UTC"
        if rep.first_ts_ms is not None and rep.last_ts_ms is not None
        else "no trades in the span"
    )
    print(
        f"{rep.exchange} {rep.symbol}: {rep.trades:,} trades ({span}) in {rep.requests} requests "
        f"({rep.retries} retries, {rep.waited_s:.1f} s waited); {len(changed)} bronze partitions changed "
        f"in {lake.uri}"
    )
    for p in changed:
        print(f"  {p.key}")
    if rep.gaps:
        print(f"{len(rep.gaps)} gap(s) reported on stderr", file=sys.stderr)
    return 0
