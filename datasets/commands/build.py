"""`datasets build`: build silver bars and gold events for a config's span (cached in the lake)."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_engine_options, add_lake_option

EXAMPLE = """Example:
  datasets build configs/demo.yaml
  datasets build configs/demo.yaml --lake az://lake/whale
  datasets build configs/universe.yaml --jobs 2                 # data.symbols: every member
  datasets build configs/universe.yaml --engine spark --spark-master spark://head:7077

Tasks: silver is built per (symbol, day) partition, gold per symbol (the kernel's state runs across
the span's days), each as a local process or a Spark task; the partitions are the same either way.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build silver 1 s bars and gold whale events from bronze for a config",
        description="Build (or confirm cached) silver and gold partitions for the span and signal config "
        "of a run config (data.symbol, or every member of data.symbols). Gold is keyed by the signal "
        "config, so a changed rule builds a new variant.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config (its data and signal sections are used)")
    add_lake_option(p, overrides_config=True)
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes for the tasks (default: every core); the partitions do not depend on it",
    )
    add_engine_options(p, what="the (symbol, day) silver and per-symbol gold tasks")
    p.set_defaults(func=run)


def _members(d: dict) -> list[tuple[str, str]]:
    """``(exchange, symbol)`` of ``data.symbol`` or each ``data.symbols`` entry (SYM or exchange:SYM)."""
    exchange = str(d["exchange"])
    if d.get("universe") is not None and d.get("symbols") is None:
        raise UserError(
            "datasets build needs data.symbol or data.symbols; data.universe is resolved by `bt run` "
            "(its config.yaml lists the symbols): build from that config"
        )
    syms = d.get("symbols")
    if syms is None:
        return [(exchange, str(d["symbol"]))]
    if isinstance(syms, dict):
        return [(str(ex), str(s)) for ex, lst in syms.items() for s in (lst or [])]
    if isinstance(syms, str):
        syms = [x.strip() for x in syms.split(",") if x.strip()]
    out = []
    for entry in syms:
        ex, _, sym = str(entry).rpartition(":")
        out.append((ex or exchange, sym))
    return out


def _silver_task(task: tuple[str, str, str, str]) -> int:
    """One bronze day partition's silver bars, built or confirmed; returns the bar count."""
    from datasets.build import ensure_silver, open_tape
    from datasets.lake import Lake

    uri, exchange, symbol, day = task
    lake = Lake(uri)
    return len(ensure_silver(lake, open_tape(lake, exchange, symbol, day, day)))


def _gold_task(task: tuple[str, str, str, str, str]) -> tuple[int, int, bool]:
    """One symbol's gold events over the span: ``(trades, events, cached)``."""
    import datetime as dt

    from datasets.build import ensure_gold, open_tape
    from datasets.lake import Lake
    from whalebt.engine import context

    uri, exchange, symbol, start, end = task
    ctx = context()
    lake = Lake(uri)
    span = open_tape(lake, exchange, symbol, start, end)  # read day by day
    events, cached = ensure_gold(
        lake, span, dict(ctx["whale"]), ctx["horizons"], ctx["latency_ms"], dt.date.fromisoformat(start)
    )
    return len(span), len(events), cached


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import os
    import sys

    import yaml

    from datasets.build import bronze_partitions
    from datasets.durations import parse_duration_ms
    from datasets.lake import Lake
    from whalebt.engine import check_engine, run_tasks

    engine = check_engine(args.engine, args.spark_master)
    # Only the data/signal/backtest sections matter here; `bt run` validates the whole config.
    try:
        raw = yaml.safe_load(open(args.config))
        d, whale = raw["data"], raw["signal"]["whale"]
        b = raw.get("backtest") or {}
        horizons = [parse_duration_ms(b.get("horizon", "1h"))]
        horizons += [h for h in (parse_duration_ms(x) for x in b.get("horizons", ())) if h not in horizons]
        start, end = dt.date.fromisoformat(str(d["start"])), dt.date.fromisoformat(str(d["end"]))
        members = _members(d)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserError(
            f"{args.config}: expected a run config with data.exchange/symbol/start/end and "
            f"signal.whale ({type(exc).__name__}: {exc}); see `bt run --help`"
        ) from None
    lake = Lake(args.lake or os.environ.get("WHALEBT_LAKE") or d.get("lake", "results/lake"))
    if engine == "spark" and lake.uri.startswith("memory://"):
        raise UserError(f"--engine spark needs a lake its tasks can reach (a shared path or az://); got {lake.uri}")
    days: list[tuple[str, str, str, str]] = []
    for exchange, symbol in members:
        parts = bronze_partitions(lake, exchange, symbol, start, end)  # NoDataError, saying what is stored
        days += [(lake.uri, exchange, symbol, str(p.date)) for p in parts]
    jobs, master = args.jobs, args.spark_master
    bars = run_tasks(_silver_task, days, jobs, engine=engine, master=master)
    ctx = {"whale": dict(whale), "horizons": horizons, "latency_ms": int(b.get("entry_latency_ms", 0))}
    spans = [(lake.uri, ex, sym, str(start), str(end)) for ex, sym in members]
    golds = run_tasks(_gold_task, spans, jobs, context=ctx, engine=engine, master=master)
    for (exchange, symbol), (n_trades, n_events, cached) in zip(members, golds):
        n_bars = sum(n for (_, ex, sym, _), n in zip(days, bars) if (ex, sym) == (exchange, symbol))
        print(
            f"{exchange}/{symbol} {start}..{end}: {n_trades:,} trades, {n_bars:,} silver bars, "
            f"{n_events:,} gold events ({'cached' if cached else 'built'}) in {lake.uri}",
            file=sys.stderr,
        )
    return 0
