"""`bt audit CONFIG`: one verdict table saying whether a config's figures can be trusted."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, add_config_override_options, add_lake_option, add_tracking_uri_option

EXAMPLE = """Example:
  bt audit configs/demo.yaml
  bt audit configs/demo.yaml --samples 30 --json

Checks (each pass / warn / fail with its figure; exit 1 on any fail):
  causality      future trades scrambled after sampled events: nothing before them may move
  clusters       signals vs independent clusters of overlapping outcome windows
  in-sample      the span against the training/validation ranges of model.uri
  coverage       holes in the span (missing days, time no source covered)
  id spaces      one id space per partition, no cross-source duplicate trades
  funding        share of holding windows with funding prints
  annualisation  span length vs the annualised figures it supports
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="check a config: causality, clusters, in-sample overlap, gaps, id spaces, funding, span",
        description="Check what a config's backtest figures rest on, and print one verdict per check. "
        "Runs the same code as `bt run` on the same data into a scratch folder (nothing is kept "
        "apart from the silver/gold caches `bt run` writes too); exit code 1 if any check fails.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config")
    add_lake_option(p, overrides_config=True)
    add_config_override_options(p)
    add_tracking_uri_option(p, what="of model.uri")
    p.add_argument("--samples", type=int, default=12, help="events perturbed by the causality check")
    p.add_argument("--seed", type=int, default=0, help="seed of the causality perturbations")
    p.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from bt.audit import FAIL, audit
    from bt.config import cli_overrides, load_config
    from whalebt.cli import UserError

    if args.samples < 1:
        raise UserError(f"--samples must be at least 1; got {args.samples}")
    config = load_config(args.config, lake=args.lake, overrides=cli_overrides(args))
    checks = audit(config, samples=args.samples, seed=args.seed, tracking_uri=args.tracking_uri)
    failed = any(c.verdict == FAIL for c in checks)
    if args.json:
        print(
            json.dumps(
                {
                    "config": args.config,
                    "run_id": config.run_id,
                    "passed": not failed,
                    "checks": [c.to_dict() for c in checks],
                },
                indent=2,
            )
        )
    else:
        from rich.console import Console
        from rich.table import Table

        style = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        t = Table(title=f"bt audit {args.config} ({config.run_id})", header_style="bold")
        t.add_column("check", style="cyan")
        t.add_column("verdict")
        t.add_column("figure")
        for c in checks:
            t.add_row(c.name, f"[{style[c.verdict]}]{c.verdict}[/]", c.figure)
        console = Console()
        console.print(t)
        n_fail = sum(c.verdict == FAIL for c in checks)
        n_warn = sum(c.verdict == "warn" for c in checks)
        console.print(
            f"{'FAILED' if failed else 'passed'}: {n_fail} fail, {n_warn} warn, {len(checks) - n_fail - n_warn} pass"
        )
    return 1 if failed else 0
