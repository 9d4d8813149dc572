"""`bt signals CONFIG --out FILE.jsonl`: the signal journal (docs/spec.md §5) of a config's data."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, add_lake_option

EXAMPLE = """Example:
  bt signals configs/demo.yaml --out results/demo-signals.jsonl
  bt signals configs/demo.yaml --out -      # to stdout
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
    p.add_argument("--out", required=True, help="output JSONL file, or - for stdout")
    add_lake_option(p, overrides_config=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import tempfile

    from bt.config import load_config
    from bt.run import compute_signals, universe_signals
    from signals.journal import journal_line

    config = load_config(args.config, lake=args.lake)
    sig = universe_signals(config, quiet=False) if config.data.is_universe else compute_signals(config, quiet=False)
    records = sig.journal()
    lines = [journal_line(rec) for rec in records]
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
