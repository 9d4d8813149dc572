"""`live report`: the live paper-trading scorecard next to the backtest of the same config."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_results_option

EXAMPLE = """\
Reads the paper-trading outcomes `live run` wrote (--paper, by default next to its journal)
and, if `bt run CONFIG` has been run, results/<run_id>/metrics.json: the same event-study
metrics side by side. Are we living up to the backtest?

Example:
  live report --config configs/demo_live.yaml --paper results/demo-live/journal.paper.jsonl
  live report --config configs/demo_live.yaml --paper p.jsonl --results results --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="live paper-trading scorecard vs the backtest of the same config",
        description="Compare live paper-trading outcomes with the backtest metrics.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", required=True, help="the run config `live run` used")
    p.add_argument("--paper", required=True, help="paper-trading outcomes (JSONL) written by `live run`")
    p.add_argument(
        "--journal",
        default=None,
        help="the run's journal, for its holes (restarts that could not warm up); default: beside --paper",
    )
    add_results_option(p)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from bt.config import load_config
    from live.report import scorecard

    config = load_config(args.config)
    if not Path(args.paper).is_file():
        raise UserError(
            f"paper file {args.paper} not found; `live run --journal J` writes J's .paper.jsonl "
            "next to it (or pass --paper to live run)"
        )
    journal = args.journal
    if journal is None and args.paper.endswith(".paper.jsonl"):
        journal = args.paper[: -len(".paper.jsonl")] + ".jsonl"
    card = scorecard(config, args.paper, args.results, journal=journal)
    if args.json:
        json.dump(card, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{config.name} ({card['config_id']}): live paper trading vs backtest, horizon {card['horizon']}")
    t.add_column("metric")
    t.add_column("backtest", justify="right")
    t.add_column("live paper", justify="right")
    for key, bt_v, live_v in card["rows"]:
        t.add_row(key, _fmt(bt_v), _fmt(live_v))
    Console().print(t)
    if card["holes"]:
        h = Table(title=f"holes in the journal {card['journal_path']}: signals may be missing between")
        for col in ("symbol", "from_ts_ms", "to_ts_ms", "from (UTC)", "to (UTC)", "reason"):
            h.add_column(col)
        for hole in card["holes"]:
            h.add_row(
                str(hole.get("symbol")),
                str(hole.get("from_ts_ms")),
                str(hole.get("to_ts_ms")),
                _utc(hole.get("from_ts_ms")),
                _utc(hole.get("to_ts_ms")),
                str(hole.get("reason")),
            )
        Console(width=200).print(h)
    if card["backtest_metrics"] is None:
        print(f"no backtest yet: run `bt run {args.config}` (looked in {card['backtest_path']})", file=sys.stderr)
    return 0


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.5f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _utc(ms) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(int(ms) / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"
