"""`bt run CONFIG`: backtest a config and write results/<run_id>/."""

from __future__ import annotations

import argparse

from datasets._cli import HelpFormatter, env_default

EXAMPLE = """Example:
  bt run configs/demo.yaml
  bt run configs/demo.yaml --lake az://lake/whale --tracking-uri http://127.0.0.1:5000
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="backtest a config: event study, portfolio, tearsheet, MLflow run",
        description="Backtest a YAML config (docs/spec.md §7) and write results/<run_id>/: config.yaml, "
        "metrics.json, signals.jsonl, trades.parquet, tearsheet.html. The run is logged to MLflow.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config")
    p.add_argument("--lake", default=None, help="override data.lake (env WHALEBT_LAKE)")
    p.add_argument("--results", default=env_default("WHALEBT_RESULTS", "results"),
                   help="results folder (env WHALEBT_RESULTS)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (env MLFLOW_TRACKING_URI; default sqlite:///results/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--no-tearsheet", action="store_true", help="skip the quantstats tearsheet")
    p.add_argument("--json", action="store_true", help="print metrics.json to stdout instead of the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from bt.config import load_config
    from bt.report import print_metrics
    from bt.run import run_backtest

    config = load_config(args.config, lake=args.lake)
    result = run_backtest(
        config, results_dir=args.results, tracking_uri=args.tracking_uri,
        log_mlflow=not args.no_mlflow, tearsheet=not args.no_tearsheet,
    )
    if args.json:
        print((result.run_dir / "metrics.json").read_text())
    else:
        print_metrics(result.metrics, result.run_dir)
    return 0
