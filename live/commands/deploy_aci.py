"""`live deploy aci`: render the ACI container group of a live runner and create it with `az`."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError

GROUP = "deploy"

EXAMPLE = """\
Renders an Azure Container Instances container group (YAML, API 2021-10-01) running
`live run` with /health probes, and the `az container create` command. Settings come from
the environment: MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, AZURE_CLIENT_ID, AZURE_TENANT_ID
as plain values; AZURE_STORAGE_CONNECTION_STRING, AZURE_CLIENT_SECRET, MLFLOW_TRACKING_TOKEN,
DATABRICKS_TOKEN, BINANCE_API_KEY, WHALEBT_HTTP_TOKEN (and AZURE_STORAGE_KEY, ACR_PASSWORD)
as secure values, which are never printed. WHALEBT_HTTP_TOKEN is required (the container serves
on a public IP; /signals and /metrics need it as a bearer token, /health stays open). A model
URI resolved against a local registry (sqlite, file) is warned about: Azure cannot reach it. Reference points: the seed system ran for 0.89 EUR/day in Japan East,
next to the exchanges' Tokyo matching engines.

Example:
  live deploy aci --model models:/whale-btcusdt@live --resource-group rg-whale --name whale-live \\
      --exchange binance_usdm --symbols BTCUSDT,ETHUSDT --image myacr.azurecr.io/whalebt-live:0.1.0 --dry-run
  live deploy aci --config configs/demo_live.yaml --resource-group rg-whale --name whale-demo \\
      --exchange binance_usdm --symbols BTCUSDT --journal-share journal --storage-account whalebt
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "aci",
        help="render (and create) an Azure Container Instances runner",
        description="Deploy `live run` to Azure Container Instances.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered model URI, e.g. models:/whale-btcusdt@live")
    src.add_argument("--config", help="run config YAML (mounted into the container as a secret volume)")
    p.add_argument("--resource-group", required=True)
    p.add_argument("--name", required=True, help="container group name (lower case, digits, '-')")
    p.add_argument("--exchange", default="binance_usdm", choices=["binance_usdm", "bybit_linear", "okx_swap"])
    p.add_argument("--symbols", default="BTCUSDT", help="comma-separated")
    p.add_argument("--image", default="whalebt-live:0.1.0", help="container image (build it from ./Dockerfile)")
    p.add_argument("--location", default="japaneast", help="Azure region (Japan East: close to the exchanges)")
    p.add_argument("--cpu", type=float, default=1.0)
    p.add_argument("--memory-gb", type=float, default=1.5)
    p.add_argument("--http-port", type=int, default=9100)
    p.add_argument("--registry-server", default=None, help="e.g. myacr.azurecr.io (password from ACR_PASSWORD)")
    p.add_argument("--registry-username", default=None)
    p.add_argument("--journal-share", default=None, help="Azure Files share for the journal (key: AZURE_STORAGE_KEY)")
    p.add_argument("--storage-account", default=None, help="storage account of --journal-share")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra plain variable")
    p.add_argument(
        "--secure-env",
        action="append",
        default=[],
        metavar="NAME",
        help="extra secure variable, value read from this environment",
    )
    p.add_argument("--out", default=None, help="also write the masked YAML here")
    p.add_argument("--dry-run", action="store_true", help="print the YAML (secrets masked) and the az command only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from live.deploy import AciSpec, az_create_command, env_from_process, model_reach_warning, render_aci

    plain, secure = env_from_process()
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--env expects NAME=VALUE; got {item!r}")
        plain[name] = value
    for name in args.secure_env:
        if name not in os.environ:
            raise UserError(f"--secure-env {name}: {name} is not set in this environment; export it first")
        secure[name] = os.environ[name]
    config_text = None
    if args.config:
        cp = Path(args.config)
        if not cp.is_file():
            raise UserError(f"config file not found: {cp}")
        from bt.config import load_config

        load_config(cp)  # refuse a broken config before it reaches Azure
        config_text = cp.read_text()
    spec = AciSpec(
        name=args.name,
        resource_group=args.resource_group,
        image=args.image,
        exchange=args.exchange,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        model_uri=args.model,
        config_text=config_text,
        location=args.location,
        cpu=args.cpu,
        memory_gb=args.memory_gb,
        http_port=args.http_port,
        env=plain,
        secure_env=secure,
        registry_server=args.registry_server,
        registry_username=args.registry_username,
        registry_password=os.environ.get("ACR_PASSWORD"),
        journal_share=args.journal_share,
        storage_account=args.storage_account,
        storage_key=os.environ.get("AZURE_STORAGE_KEY"),
    )
    try:
        masked = render_aci(spec, reveal=False)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    reach = model_reach_warning(args.model, {**plain, **secure})
    if reach:
        print(f"warning: {reach}", file=sys.stderr)
    if "WHALEBT_HTTP_TOKEN" not in secure:
        hint = (
            "the container serves HTTP on 0.0.0.0 (a public IP), so `live run` there needs WHALEBT_HTTP_TOKEN "
            "for /signals and /metrics: `export WHALEBT_HTTP_TOKEN=$(openssl rand -hex 32)` before deploying"
        )
        if not args.dry_run:
            raise UserError(hint)
        print(f"note: {hint}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(masked)
    shown_path = args.out or f"{args.name}.aci.yaml"
    if args.dry_run:
        sys.stdout.write(
            f"# {shown_path} (secure values masked)\n{masked}\n# then run:\n{az_create_command(spec, shown_path)}\n"
        )
        if not spec.journal_share:
            print(
                "note: without --journal-share the journal lives in the container and is lost on restart",
                file=sys.stderr,
            )
        return 0
    if shutil.which("az") is None:
        raise UserError(
            "the Azure CLI (az) is not installed here; install it, or run with --dry-run and use the "
            "printed YAML and command where az is available"
        )
    fd, tmp = tempfile.mkstemp(prefix=f"{args.name}-", suffix=".aci.yaml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render_aci(spec, reveal=True))
        print(az_create_command(spec, shown_path), file=sys.stderr)
        done = subprocess.run(["az", "container", "create", "--resource-group", spec.resource_group, "--file", tmp])
        return done.returncode
    finally:
        os.unlink(tmp)
