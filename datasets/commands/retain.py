"""`datasets retain`: delete or archive old raw files / bronze partitions (dry-run by default)."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError, add_lake_option

EXAMPLE = """\
Lists what is older than --older-than (by the partition's date, or the date in a raw file's
name) and what would happen to it; nothing changes without --apply. With --archive-to, each
key is copied there, read back and compared (SHA-256), and only then deleted. Keys listed in
the lake's registry/protected.json (the partitions registered models' runs read) are kept
unless --force.

Example:
  datasets retain --lake az://lake/whale --layer raw --older-than 90d
  datasets retain --lake az://lake/whale --layer raw --older-than 90d \\
      --archive-to az://cold/whale --apply
  datasets retain --lake results/lake --layer bronze --older-than 365d --exchange okx_swap --apply
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retain",
        help="delete or archive old raw/bronze data (dry-run unless --apply)",
        description="Apply a retention rule to the raw or bronze layer of a lake.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_lake_option(p)
    p.add_argument("--layer", required=True, choices=["raw", "bronze"], help="which layer")
    p.add_argument("--older-than", required=True, help="age in whole days, e.g. 90d")
    p.add_argument(
        "--archive-to",
        default=None,
        metavar="URI",
        help="copy there (same keys) before deleting: a directory or az://container/prefix",
    )
    p.add_argument("--apply", action="store_true", help="do it (default: only print the plan)")
    p.add_argument("--force", action="store_true", help="include keys protected by registered runs")
    p.add_argument("--exchange", default=None, help="only this exchange (bronze) or raw source")
    p.add_argument("--symbol", default=None, help="only this symbol")
    p.add_argument("--today", default=None, help="reference day for the age, YYYY-MM-DD (default: today, UTC)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import sys

    from datasets.durations import parse_duration_ms
    from datasets.lake import Lake
    from datasets.retention import apply_retention, plan_retention

    ms = parse_duration_ms(args.older_than)
    if ms % 86_400_000:
        raise UserError(f"--older-than counts whole days, like 90d; got {args.older_than!r}")
    try:
        today = dt.date.fromisoformat(args.today) if args.today else None
    except ValueError:
        raise UserError(f"--today must be a date like 2024-06-30; got {args.today!r}") from None
    lake = Lake(args.lake)
    plan = plan_retention(
        lake,
        args.layer,
        ms // 86_400_000,
        today=today,
        archive=bool(args.archive_to),
        force=args.force,
        exchange=args.exchange,
        symbol=args.symbol.upper() if args.symbol else None,
    )
    counts: dict[str, int] = {}
    for a in plan:
        counts[a.action] = counts.get(a.action, 0) + 1
        if a.action == "keep-undated":
            continue
        why = f"  (protected by run {', '.join(a.runs)})" if a.runs else ""
        print(f"{a.action:<15} {a.day}  {a.key}{why}")
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing older than that"
    if not args.apply:
        print(f"dry run on {lake.uri}: {summary}. Re-run with --apply to do it.")
        return 0
    res = apply_retention(lake, plan, archive_to=args.archive_to)
    for key, why in res.failed:
        print(f"warning: {key}: {why}", file=sys.stderr)
    print(
        f"{lake.uri}: {len(res.deleted)} deleted, {len(res.archived)} archived"
        + (f" to {args.archive_to}" if args.archive_to else "")
        + f" ({res.bytes / 1e6:.1f} MB), {counts.get('keep-protected', 0)} kept as protected, "
        f"{len(res.failed)} failed"
    )
    if res.failed:
        raise UserError(f"{len(res.failed)} keys could not be archived and were kept; see the warnings above")
    return 0
