"""`bt signals CONFIG --out FILE.jsonl`: the signal journal (docs/spec.md §5) of a config's data."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, add_config_override_options, add_lake_option, add_out_option

EXAMPLE = """Example:
  bt signals configs/demo.yaml --out results/demo-signals.jsonl
  bt signals configs/demo.yaml --out -      # to stdout
  bt signals configs/demo.yaml --out results/one-day.jsonl --start 2024-03-05 --end 2024-03-05
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "signals",
        help="write the signal journal (one JSON object per whale event) for a config",
        description="Run the signal kernel over the config's data and write one JSON line per whale "
        "event: exchange, symbol, trade_id, ts_ms, price, notional_usd, prob, decision, config_id, model. "
        "`live run` writes the same lines for the same trades.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config")
    add_out_option(p, kind="file", required=True, metavar="FILE", help="output JSONL file, or - for stdout")
    add_lake_option(p, overrides_config=True)
    add_config_override_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import tempfile

    from bt.config import cli_overrides, load_config
    from bt.run import compute_signals, universe_signals
    from signals.journal import NonFiniteError, journal_line
    from whalebt.errors import UserError

    config = load_config(args.config, lake=args.lake, overrides=cli_overrides(args))
    sig = universe_signals(config, quiet=False) if config.data.is_universe else compute_signals(config, quiet=False)
    records = sig.journal()
    try:
        lines = [journal_line(rec) for rec in records]
    except NonFiniteError as exc:  # a trade stored before ingest refused such rows
        raise UserError(f"{exc}; re-ingest that day (ingest now refuses it)") from None
    if args.out == "-":
        sys.stdout.writelines(lines)
    else:
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".signals-")
        with os.fdopen(fd, "w") as fh:
            fh.writelines(lines)
        os.replace(tmp, args.out)
        n_long = sum(1 for rec in records if rec["decision"] == "long")
        print(f"wrote {len(lines)} events ({n_long} long) to {args.out}", file=sys.stderr)
    return 0
