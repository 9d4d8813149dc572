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
from typing import Callable, Sequence

__all__ = ["UserError", "run_cli", "HelpFormatter", "env_default"]


class UserError(Exception):
    """A problem with the user's input: printed as ``Error: ...``, exit code 1."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the ``Example:`` blocks as written and shows defaults."""


def env_default(var: str, default: str) -> str:
    """A flag default that an environment variable overrides."""
    return os.environ.get(var, default)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from datasets.lake import LakeError, StoreError
    from datasets.schema import SchemaError

    return (UserError, LakeError, StoreError, SchemaError, ValueError, FileNotFoundError)


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
    """Parse ``argv``, run the chosen command, turn user errors into ``Error: ...`` + exit 1."""
    parser = build_parser(prog, description, commands_pkg)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        rc = func(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except _user_error_types() as exc:
        msg = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            msg = f"file not found: {exc.filename}"
        print(f"Error: {msg}", file=sys.stderr)
        return 1
    return int(rc or 0)
