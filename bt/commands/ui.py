"""`bt ui`: the observatory, one local read-only web app over runs, sweeps, the lake and live runners."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_lake_option, add_results_option, add_tracking_uri_option

EXAMPLE = """Example:
  bt ui                                   # results/ and results/lake on http://127.0.0.1:8050/
  bt ui --results results --lake results/lake --tracking-uri sqlite:///results/mlflow.db
  bt ui --live http://127.0.0.1:9100 --live http://127.0.0.1:9101 --port 8060
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="the observatory: a local web app over runs, sweeps, the lake and live runners",
        description="Serve the observatory: Runs (every run folder with its headline figures, its report "
        "and tearsheet, comparisons), Sweeps (studies, trials, DSR/PBO, gate, registered versions and "
        "aliases), Lake (partitions per day coloured by coverage and quality) and Live (each --live "
        "runner's health, metrics, signals and their realised paper returns beside the backtest). "
        "Read-only; works offline (plotly.js is served from the installed package). See docs/observatory.md.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_results_option(p)
    add_lake_option(p)
    add_tracking_uri_option(p, what="to read registered versions and aliases from (none: the Sweeps view skips MLflow)")
    p.add_argument("--registry-uri", default=None, help="MLflow registry URI, if not the tracking store")
    p.add_argument(
        "--live",
        action="append",
        default=[],
        metavar="URL",
        help="a live run's HTTP address (live run --http-port), e.g. http://127.0.0.1:9100; repeatable",
    )
    p.add_argument("--port", type=int, default=8050, help="port to listen on (0: any free port, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--poll-ms", type=int, default=2000, help="how often the Live page refreshes, in milliseconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    for url in args.live:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--live expects a runner's http:// address (live run --http-port); got {url!r}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535; got {args.port}")
    if args.poll_ms < 100:
        raise UserError(f"--poll-ms must be at least 100; got {args.poll_ms}")
    from observatory.app import Options, serve

    opts = Options(
        results=args.results,
        lake=args.lake,
        tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        registry_uri=args.registry_uri,
        live=list(args.live),
        poll_ms=args.poll_ms,
    )
    try:
        return serve(opts, args.host, args.port)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another --port"
        ) from exc
