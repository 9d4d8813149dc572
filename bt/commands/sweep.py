"""`bt sweep CONFIG --trials N`: Optuna over the config's model.sweep space; registers the winner."""

from __future__ import annotations

from whalebt.errors import UserError
import argparse
import sys

from whalebt.cli import (
    HelpFormatter,
    add_config_override_options,
    add_engine_options,
    add_lake_option,
    add_results_option,
    add_tracking_uri_option,
    env_default,
)

EXAMPLE = """Example:
  bt sweep configs/whale_lgbm.yaml --trials 100
  bt sweep configs/whale_lgbm.yaml --trials 100 --storage postgresql+psycopg://postgres@127.0.0.1:5432/optuna --worker 1
  bt sweep configs/whale_lgbm.yaml --trials 20 --end 2024-03-08 --set model.gate.min_test_signals=10
  bt sweep configs/universe_lgbm.yaml --trials 20   # data.symbols: one model tuned over every symbol

  bt sweep configs/whale_lgbm.yaml --trials 64 --engine spark --jobs 8   # rounds of 8 trials as Spark tasks

Re-running the same command resumes the study (Ctrl-C is safe). Several processes or machines
given the same --storage and config share one study; give each a different --worker.

The winner is checked against the config's model.gate (mean test return, independent test
signals, deflated Sharpe ratio, PBO) and, by default (--register passing), registered only if it
passes. A winner that fails is reported with every reason and not registered; that is a valid
outcome, so the command still exits 0. --register always registers it anyway (tagged
whalebt.gate=fail); --register never skips MLflow.

--engine spark asks --jobs trials at a time (default: the Spark master's cores), evaluates each
as a Spark task and tells them back in trial order: the same study for the same --jobs on every
run. The sampler sees a round's trials from the next round on, so past the TPE sampler's 8
random start-up trials a study differs from --engine local's one trial after another.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="tune whale rule, horizon, model and threshold with Optuna; register a winner that passes the gate",
        description="Optuna sweep over the config's model.sweep search space. The objective is "
        "computed on validation only; the winner is evaluated once on test, reported with its "
        "deflated Sharpe ratio, PBO and gate verdict, written to results/<study>/ and, if it passes "
        "the gate, registered in MLflow.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="YAML run config with a model section holding sweep:")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument(
        "--storage",
        default=env_default("OPTUNA_STORAGE", "sqlite:///results/optuna.db"),
        help="Optuna storage URL (env OPTUNA_STORAGE)",
    )
    p.add_argument("--study", default=None, help="study name (default: config name + config hash)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="local: parallel trials in this process (threads, 1 if not given); "
        "spark: trials per round (default: the master's cores)",
    )
    p.add_argument("--worker", type=int, default=0, help="worker number, added to the sampler seed")
    add_engine_options(p, what="the trials")
    add_lake_option(p, overrides_config=True)
    add_config_override_options(p)
    add_results_option(p)
    add_tracking_uri_option(p)
    p.add_argument(
        "--registry-uri",
        default=None,
        help="MLflow registry URI (env MLFLOW_REGISTRY_URI), e.g. databricks-uc with a catalog.schema.model name",
    )
    p.add_argument(
        "--register-as",
        default=None,
        help="registered model name (default model.registry_name, else whale-<symbol>; a universe: whale-<config name>)",
    )
    p.add_argument(
        "--register",
        choices=("passing", "always", "never"),
        default="passing",
        help="register the winner only if it passes model.gate, always, or never (never: no MLflow logging at all)",
    )
    p.add_argument("--no-register", action="store_true", help="same as --register never")
    p.add_argument(
        "--allow-in-sample",
        action="store_true",
        help="with model.uri: do not refuse a span overlapping that model's train/validation range",
    )
    p.add_argument("--summary-only", action="store_true", help="run no new trial; summarise the study")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from bt.config import cli_overrides, load_config
    from bt.sweep import sweep_command

    if args.trials < 1:
        raise UserError(f"--trials must be at least 1; got {args.trials}")
    from whalebt.engine import check_engine, check_jobs, spark_context

    engine = check_engine(args.engine, args.spark_master)
    jobs = 1 if args.jobs is None and engine == "local" else args.jobs
    if jobs is not None:
        check_jobs(jobs)
    config = load_config(args.config, lake=args.lake, overrides=cli_overrides(args))
    if engine == "spark" and jobs is None:
        jobs = int(spark_context(args.spark_master).defaultParallelism)
    out = sweep_command(
        config,
        n_trials=args.trials,
        storage=args.storage or None,
        study_name=args.study,
        n_jobs=int(jobs or 1),
        worker=args.worker,
        results_dir=args.results,
        tracking_uri=args.tracking_uri,
        registry_uri=args.registry_uri,
        register_as=args.register_as,
        register="never" if args.no_register else args.register,
        summary_only=args.summary_only,
        allow_in_sample=args.allow_in_sample,
        engine="spark" if engine == "spark" else None,
        master=args.spark_master,
    )
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for k in (
            "study",
            "n_trials",
            "best_value",
            "dsr",
            "pbo",
            "test_n_signals",
            "test_n_independent",
            "test_mean_return",
            "baseline_mean_return",
            "threshold",
            "results",
        ):
            v = out.get(k)
            if k.endswith("mean_return") and v is not None:
                v = f"{100 * v:+.3f} %"  # a fraction in the JSON, a percentage here (as `bt run` prints it)
            print(f"{k:22s} {v}")
        if out.get("by_symbol"):  # a universe: the winner's test figures per member
            print(f"{'by symbol':22s} {'signals':>8s} {'indep.':>7s} {'mean':>9s} {'baseline':>9s}")
            for sym, b in out["by_symbol"].items():
                mean, base = (
                    "-" if b[k] is None else f"{100 * b[k]:+.3f}%" for k in ("test_mean_return", "baseline_mean_return")
                )
                print(f"  {sym:20s} {b['test_n_signals']:>8} {b['test_n_independent']:>7} {mean:>9s} {base:>9s}")
        print(f"{'gate':22s} {out['gate']}")
        for r in out["gate_reasons"]:
            print(f"{'':22s} - {r}")
        for n in out["gate_notes"]:
            print(f"{'':22s} note: {n}")
        print(f"{'model_uri':22s} {out.get('model_uri')}")
        print(f"{'registration':22s} {out['registration']}")
    print(f"sweep summary written to {out['results']}", file=sys.stderr)
    return 0
