"""The small argparse frame that the `datasets`, `bt` and `live` commands share.

Each command is one module in ``<package>/commands/`` that defines::

    GROUP = "ingest"          # optional: the command is `<prog> ingest <name>`
    def register(sub):        # sub: argparse subparsers action
        p = sub.add_parser("binance-archive", help=..., description=..., epilog=EXAMPLE)
        ...
        p.set_defaults(func=run)

Modules are found by listing the folder, so adding a command touches no shared file.
Command modules import only the standard library at top level; heavy libraries are
imported inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from typing import Callable, Sequence

from whalebt.errors import UserError, WhalebtError

__all__ = [
    "UserError",
    "WhalebtError",
    "run_cli",
    "HelpFormatter",
    "env_default",
    "add_lake_option",
    "add_results_option",
    "add_tracking_uri_option",
    "DEFAULT_LAKE",
    "DEFAULT_RESULTS",
    "DEFAULT_TRACKING_URI",
]

DEFAULT_LAKE = "results/lake"
DEFAULT_RESULTS = "results"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_RESULTS}/mlflow.db"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the ``Example:`` blocks as written and shows defaults."""


def env_default(var: str, default: str) -> str:
    """A flag default that an environment variable overrides."""
    return os.environ.get(var, default)


def add_lake_option(p: argparse.ArgumentParser, *, overrides_config: bool = False, help: str | None = None) -> None:
    """``--lake``: a directory or ``az://`` URI, default ``$WHALEBT_LAKE`` or ``results/lake``.

    With ``overrides_config`` the default is None, meaning "the config's ``data.lake``" (which
    ``bt.config.load_config`` resolves with the same environment variable).
    """
    if overrides_config:
        p.add_argument("--lake", default=None, help=help or "override data.lake (env WHALEBT_LAKE)")
    else:
        p.add_argument(
            "--lake",
            default=env_default("WHALEBT_LAKE", DEFAULT_LAKE),
            help=help or "lake directory or az://container/prefix (env WHALEBT_LAKE)",
        )


def add_results_option(p: argparse.ArgumentParser) -> None:
    """``--results``: where run folders go, default ``$WHALEBT_RESULTS`` or ``results``."""
    p.add_argument(
        "--results",
        default=env_default("WHALEBT_RESULTS", DEFAULT_RESULTS),
        help="results folder (env WHALEBT_RESULTS)",
    )


def add_tracking_uri_option(p: argparse.ArgumentParser, *, what: str = "") -> None:
    """``--tracking-uri``: the MLflow tracking store (None: ``$MLFLOW_TRACKING_URI``, then the sqlite default)."""
    p.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI{' ' + what if what else ''} (env MLFLOW_TRACKING_URI; "
        f"default {DEFAULT_TRACKING_URI})",
    )


def build_parser(prog: str, description: str, commands_pkg: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    pkg = importlib.import_module(commands_pkg)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands_pkg}.{info.name}")
        group = getattr(mod, "GROUP", None)
        if group:
            if group not in groups:
                gp = sub.add_parser(
                    group, help=getattr(pkg, "GROUP_HELP", {}).get(group, group), formatter_class=HelpFormatter
                )
                gsub = gp.add_subparsers(dest="subcommand", metavar="SOURCE")
                gsub.required = True
                groups[group] = gsub
            mod.register(groups[group])
        else:
            mod.register(sub)
    return parser


def run_cli(prog: str, description: str, commands_pkg: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command.

    A :class:`WhalebtError` becomes one ``Error: ...`` line and exit 1. Any other exception is a
    bug: its traceback is printed with a line asking to report it, exit 2.
    """
    parser = build_parser(prog, description, commands_pkg)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        rc = func(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except WhalebtError as exc:
        print(f"Error: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(
            f"{prog} {args.command}: an internal error (a bug, not a problem with your input); "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return 2
    return int(rc or 0)
