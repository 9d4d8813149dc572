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
    "add_out_option",
    "add_config_override_options",
    "add_engine_options",
    "check_path_options",
    "DEFAULT_LAKE",
    "DEFAULT_RESULTS",
    "DEFAULT_TRACKING_URI",
]

DEFAULT_LAKE = "results/lake"
DEFAULT_RESULTS = "results"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_RESULTS}/mlflow.db"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the ``Example:`` blocks as written and shows each default once.

    ``(default: X)`` is added only where it says something: not for None, False, empty lists or
    flags, and not when the help already states its default in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (
            "%(default)" in text
            or "default" in text.lower()
            or d is None
            or d is argparse.SUPPRESS
            or isinstance(d, bool)
            or d == []
            or action.nargs == 0
        ):
            return text
        return super()._get_help_string(action) or text


def env_default(var: str, default: str) -> str:
    """A flag default that an environment variable overrides."""
    return os.environ.get(var, default)


def _mark_path(p: argparse.ArgumentParser, dest: str, flag: str, kind: str) -> None:
    """Record that option ``dest`` names a directory (``kind="dir"``) or a file, checked by run_cli."""
    paths = dict(p.get_default("_whalebt_paths") or {})
    paths[dest] = (flag, kind)
    p.set_defaults(_whalebt_paths=paths)


def check_path_options(args: argparse.Namespace) -> None:
    """Refuse a directory option that names an existing regular file, or a file option that names a
    directory (URIs like ``az://`` and ``-`` for stdout pass); raises :class:`UserError`."""
    for dest, (flag, kind) in (getattr(args, "_whalebt_paths", None) or {}).items():
        value = getattr(args, dest, None)
        if not isinstance(value, str) or value == "-" or "://" in value:
            continue
        if kind == "dir" and os.path.isfile(value):
            raise UserError(f"{flag} {value} is a file; expected a directory (created if missing); give another path")
        if kind == "file" and os.path.isdir(value):
            raise UserError(f"{flag} {value} is a directory; expected a file name, e.g. {os.path.join(value, 'out')}")


def add_out_option(
    p: argparse.ArgumentParser,
    *,
    kind: str,
    help: str,
    required: bool = False,
    metavar: str | None = None,
    default: str | None = None,
) -> None:
    """``--out``: a file (``kind="file"``; an existing directory is refused) or a directory
    (``kind="dir"``; an existing regular file is refused)."""
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir'; got {kind!r}")
    p.add_argument("--out", required=required, default=default, metavar=metavar or kind.upper(), help=help)
    _mark_path(p, "out", "--out", kind)


def add_config_override_options(p: argparse.ArgumentParser) -> None:
    """``--start``/``--end``/``--symbol`` and repeatable ``--set key.path=value`` over a run config."""
    g = p.add_argument_group(
        "config overrides (applied before validation; the run folder's config.yaml holds the result)"
    )
    g.add_argument("--start", metavar="DATE", help="override data.start (YYYY-MM-DD)")
    g.add_argument("--end", metavar="DATE", help="override data.end (YYYY-MM-DD)")
    g.add_argument(
        "--symbol", metavar="SYM", help="run this one symbol: sets data.symbol, replacing data.symbols or data.universe"
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="override any config key, value read as YAML, e.g. --set signal.whale.min_notional_usd=2e6 "
        "--set backtest.horizons=[5m,15m]; repeatable",
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like model.threshold.min_signals=20; got {text!r}")
    return key.strip(), value


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
    _mark_path(p, "lake", "--lake", "dir")


def add_results_option(p: argparse.ArgumentParser) -> None:
    """``--results``: where run folders go, default ``$WHALEBT_RESULTS`` or ``results``."""
    p.add_argument(
        "--results",
        default=env_default("WHALEBT_RESULTS", DEFAULT_RESULTS),
        help="results folder (env WHALEBT_RESULTS)",
    )
    _mark_path(p, "results", "--results", "dir")


def add_tracking_uri_option(p: argparse.ArgumentParser, *, what: str = "") -> None:
    """``--tracking-uri``: the MLflow tracking store (None: ``$MLFLOW_TRACKING_URI``, then the sqlite default)."""
    p.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI{' ' + what if what else ''} (env MLFLOW_TRACKING_URI; "
        f"default {DEFAULT_TRACKING_URI})",
    )


def add_engine_options(p: argparse.ArgumentParser, *, what: str = "the tasks") -> None:
    """``--engine local|spark`` and ``--spark-master URL`` (whalebt.engine; env ``SPARK_MASTER``)."""
    p.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help=f"where {what} run: a local process pool, or Apache Spark (pip install 'whalebt[spark]', Java 17+); "
        "results are the same",
    )
    p.add_argument(
        "--spark-master",
        default=None,
        metavar="URL",
        help="with --engine spark: the Spark master (env SPARK_MASTER; default local[N], N = --jobs or every core; "
        "an already active SparkContext, as on Databricks, is used as it is)",
    )


def build_parser(prog: str, description: str, commands_pkg: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    group_parsers: dict[str, argparse.ArgumentParser] = {}
    examples: dict[str, list[str]] = {}
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
                groups[group], group_parsers[group] = gsub, gp
            mod.register(groups[group])
            examples.setdefault(group, []).extend(_first_example(getattr(mod, "EXAMPLE", ""), f"{prog} {group} "))
        else:
            mod.register(sub)
    for group, gp in group_parsers.items():
        if examples.get(group):
            gp.epilog = "Examples (one per subcommand; `--help` on each shows more):\n" + "\n".join(examples[group])
    return parser


def _first_example(text: str, prefix: str) -> list[str]:
    """The first command line of an ``Example:`` block that starts with ``prefix``, continuation lines included."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(prefix):
            out = [line]
            while out[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                out.append(lines[i])
            return out
    return []


def run_cli(prog: str, description: str, commands_pkg: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command.

    A :class:`WhalebtError` becomes one ``Error: ...`` line and exit 1. Any other exception is a
    bug: its traceback is printed with a line asking to report it, exit 2.
    """
    parser = build_parser(prog, description, commands_pkg)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        check_path_options(args)
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
