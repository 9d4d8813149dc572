"""`bt promote NAME --version V --alias live`: set an MLflow alias after the promotion gate."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_tracking_uri_option

EXAMPLE = """Example:
  bt promote whale-btcusdt --version 3 --alias live --reason "beat v2 on March data"
  bt promote --list
  bt promote main.whales.whale-btcusdt --version 3 --alias live --registry-uri databricks-uc
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "promote",
        help="point an alias (e.g. live) at a registered model version, if it passes the gate",
        description="Promote a registered model version: the gate checks its out-of-sample mean "
        "return, number of independent test signals, deflated Sharpe ratio and (for sweep winners) the probability of backtest overfitting; on success the alias is set and "
        "who/when/why are recorded as version tags. --list shows which version holds which alias.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", nargs="?", help="registered model name (passed through unchanged)")
    p.add_argument("--version", help="model version to promote")
    p.add_argument("--alias", default="live", help="alias to set")
    p.add_argument("--reason", default="", help="why (recorded as a tag)")
    p.add_argument("--min-mean-return", type=float, default=None, help="gate: OOS mean return must exceed (default 0)")
    p.add_argument(
        "--min-test-signals",
        type=int,
        default=None,
        help="gate: at least this many independent test signals (overlapping outcome windows count once; default 30)",
    )
    p.add_argument("--min-dsr", type=float, default=None, help="gate: deflated Sharpe ratio at least (default 0.5)")
    p.add_argument(
        "--max-pbo",
        type=float,
        default=None,
        help="gate: probability of backtest overfitting at most (default 0.5; sweeps only)",
    )
    p.add_argument("--config", default=None, help="take the gate bounds from this config's model.gate")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded)")
    p.add_argument("--list", action="store_true", help="list aliases and the versions they point to")
    add_tracking_uri_option(p)
    p.add_argument("--registry-uri", default=None, help="MLflow registry URI (env MLFLOW_REGISTRY_URI)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bt.config import GateConfig
    from bt.registry import connect, list_aliases, promote

    if not args.list and (not args.name or not args.version):
        raise UserError(
            "expected NAME and --version (or --list); e.g. bt promote whale-btcusdt --version 3 --alias live"
        )
    connect(args.tracking_uri, args.registry_uri)
    if args.list:
        rows = list_aliases(args.name)
        if not rows:
            print("no aliases set" + (f" on {args.name}" if args.name else ""))
        for r in rows:
            print(
                f"{r['name']}@{r['alias']} -> version {r['version']}"
                f"  (by {r['promoted_by'] or '?'} at {r['promoted_at'] or '?'})"
            )
        return 0
    gate = GateConfig()
    if args.config:
        from bt.config import load_config

        cfg = load_config(args.config)
        if cfg.model is not None:
            gate = cfg.model.gate
    upd = {
        k: v
        for k, v in {
            "min_mean_return": args.min_mean_return,
            "min_test_signals": args.min_test_signals,
            "min_dsr": args.min_dsr,
            "max_pbo": args.max_pbo,
        }.items()
        if v is not None
    }
    if upd:
        gate = GateConfig.model_validate({**gate.model_dump(), **upd})
    res = promote(args.name, args.version, args.alias, gate=gate, reason=args.reason, force=args.force)
    state = "passed" if res.ok else "FORCED past"
    for note in res.notes:
        print(f"note: {note}")
    print(
        f"{args.name} version {args.version} is now @{args.alias} (gate {state}: "
        + ", ".join(f"{k}={v}" for k, v in res.values.items())
        + ")"
    )
    return 0
