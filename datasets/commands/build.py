"""`datasets build`: build silver bars and gold events for a config's span (cached in the lake)."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, add_lake_option

EXAMPLE = """Example:
  datasets build configs/demo.yaml
  datasets build configs/demo.yaml --lake az://lake/whale
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build silver 1 s bars and gold whale events from bronze for a config",
        description="Build (or confirm cached) silver and gold partitions for the span and signal config "
        "of a run config. Gold is keyed by the signal config, so a changed rule builds a new variant.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config (its data and signal sections are used)")
    add_lake_option(p, overrides_config=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import os
    import sys

    import yaml

    from whalebt.cli import UserError
    from datasets.build import ensure_gold, ensure_silver, open_tape
    from datasets.durations import parse_duration_ms
    from datasets.lake import Lake

    # Only the data/signal/backtest sections matter here; `bt run` validates the whole config.
    try:
        raw = yaml.safe_load(open(args.config))
        d, whale = raw["data"], raw["signal"]["whale"]
        b = raw.get("backtest") or {}
        horizons = [parse_duration_ms(b.get("horizon", "1h"))]
        horizons += [h for h in (parse_duration_ms(x) for x in b.get("horizons", ())) if h not in horizons]
        start, end = dt.date.fromisoformat(str(d["start"])), dt.date.fromisoformat(str(d["end"]))
        exchange, symbol = str(d["exchange"]), str(d["symbol"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserError(
            f"{args.config}: expected a run config with data.exchange/symbol/start/end and "
            f"signal.whale ({type(exc).__name__}: {exc}); see `bt run --help`"
        ) from None
    lake = Lake(args.lake or os.environ.get("WHALEBT_LAKE") or d.get("lake", "results/lake"))
    span = open_tape(lake, exchange, symbol, start, end)  # read day by day
    bars = ensure_silver(lake, span)
    events, cached = ensure_gold(lake, span, dict(whale), horizons, int(b.get("entry_latency_ms", 0)), start)
    print(
        f"{exchange}/{symbol} {start}..{end}: {len(span):,} trades, {len(bars):,} silver bars, "
        f"{len(events):,} gold events ({'cached' if cached else 'built'}) in {lake.uri}",
        file=sys.stderr,
    )
    return 0
