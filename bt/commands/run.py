"""`bt run CONFIG`: backtest a config and write results/<run_id>/."""

from __future__ import annotations

import argparse

from whalebt.cli import (
    HelpFormatter,
    add_config_override_options,
    add_engine_options,
    add_lake_option,
    add_results_option,
    add_tracking_uri_option,
)

EXAMPLE = """Example:
  bt run configs/demo.yaml
  bt run configs/demo.yaml --lake az://lake/whale --tracking-uri http://127.0.0.1:5000
  bt run configs/registered.yaml --allow-in-sample   # model.uri over its own training span
  bt run configs/demo.yaml --start 2024-03-01 --end 2024-03-05 --set signal.whale.min_notional_usd=2e6
  bt run configs/whale_lgbm.yaml --set model.threshold.min_signals=20 --set backtest.horizons=[5m,15m]
  bt run configs/universe.yaml --jobs 2               # data.symbols: one study per symbol, pooled
  bt run configs/universe.yaml --engine spark --spark-master spark://head:7077   # one Spark task per symbol

--start/--end/--symbol/--set change the config before it is validated (an unknown key is refused
as in the file); config.yaml in the run folder holds the resolved result, and run_id is its hash.

With model.uri, a span that overlaps the model's train or validation range is refused (the
model has seen those outcomes); --allow-in-sample runs anyway and reports those signals apart.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="backtest a config: event study, portfolio, tearsheet, MLflow run",
        description="Backtest a YAML config (docs/spec.md §7) and write results/<run_id>/: config.yaml, "
        "metrics.json, signals.jsonl, trades.parquet, report.html, tearsheet.html. The run is logged to MLflow.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config")
    add_lake_option(p, overrides_config=True)
    add_config_override_options(p)
    add_results_option(p)
    add_tracking_uri_option(p)
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    p.add_argument(
        "--new-run",
        action="store_true",
        help="log a new MLflow run even if one exists for the same resolved config and data "
        "(by default that run is updated)",
    )
    p.add_argument("--no-tearsheet", action="store_true", help="skip the quantstats tearsheet")
    p.add_argument("--json", action="store_true", help="print metrics.json to stdout instead of the table")
    p.add_argument(
        "--allow-in-sample",
        action="store_true",
        help="with model.uri: run over the model's own train/validation span anyway; those "
        "signals go to metrics.json in_sample and the headline is out of sample",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse data with holes (missing days, or stored days not covered for a minute or more) "
        "instead of running with a warning",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes for the symbols of a universe (default: every core); a single symbol builds its "
        "gold in day chunks on N processes only when given; results do not depend on it",
    )
    add_engine_options(p, what="the symbols' studies (one task per symbol)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from bt.config import cli_overrides, load_config
    from bt.report import print_metrics
    from bt.run import run_backtest
    from signals.journal import NonFiniteError
    from whalebt.errors import UserError

    config = load_config(args.config, lake=args.lake, overrides=cli_overrides(args))
    try:
        result = run_backtest(
            config,
            results_dir=args.results,
            tracking_uri=args.tracking_uri,
            log_mlflow=not args.no_mlflow,
            tearsheet=not args.no_tearsheet,
            allow_in_sample=args.allow_in_sample,
            strict=args.strict,
            new_run=args.new_run,
            jobs=args.jobs,
            engine=args.engine,
            spark_master=args.spark_master,
        )
    except NonFiniteError as exc:  # a trade stored before ingest refused such rows
        raise UserError(f"{exc}; re-ingest that day (ingest now refuses it)") from None
    if args.json:
        print((result.run_dir / "metrics.json").read_text())
    else:
        print_metrics(result.metrics, result.run_dir)
        m = result.metrics
        if "in_sample" in m:
            i, o = m["in_sample"], m["out_of_sample"]

            def mean(x):
                return "n/a" if x is None else f"{100 * x:+.3f} %"

            print(
                f"out of sample (the figures above): {o['n_signals']} signals, mean {mean(o['mean_return'])}; "
                f"in sample (inside the model's train/validation ranges, not a test): {i['n_signals']} "
                f"signals, mean {mean(i['mean_return'])}"
            )
    return 0
