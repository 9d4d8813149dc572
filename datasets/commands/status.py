"""`datasets status`: what each layer of a lake holds: partitions, rows, gaps and checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import JustifyMethod

import argparse

from whalebt.cli import HelpFormatter, UserError, add_lake_option

EXAMPLE = """\
One line per layer and exchange/symbol (per source for raw): partitions, date span, missing
days inside it, rows and size, and how many partitions fail each quality check (duplicate
or missing ids, non-positive prices or sizes, out-of-order times, rows outside their day).
Rows and checks come from the quality reports stored in the lake; --refresh computes the
missing or stale ones first (reads those bronze partitions).

Example:
  datasets status --lake az://lake/whale
  datasets status --lake results/lake --layer bronze --refresh --detail --symbol BTCUSDT
  datasets status --json > status.json
"""

LAYERS = ("raw", "bronze", "silver", "gold")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="what is in each layer of the lake: partitions, rows, gaps, checks",
        description="Summarise a lake and its data-quality reports.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_lake_option(p)
    p.add_argument("--layer", default=",".join(LAYERS), help="comma-separated layers to show")
    p.add_argument("--refresh", action="store_true", help="compute missing or stale bronze quality reports")
    p.add_argument("--detail", action="store_true", help="one line per bronze partition")
    p.add_argument("--exchange", default=None, help="only this exchange (with --detail/--refresh)")
    p.add_argument("--symbol", default=None, help="only this symbol (with --detail/--refresh)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _size(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from datasets.lake import Lake, LocalStore
    from datasets.quality import lake_status, read_quality, refresh_quality

    layers = [x.strip() for x in args.layer.split(",") if x.strip()]
    bad = [x for x in layers if x not in LAYERS]
    if bad:
        raise UserError(f"--layer takes {', '.join(LAYERS)}; got {', '.join(bad)}")
    lake = Lake(args.lake)
    if isinstance(lake.store, LocalStore) and not lake.store.root.is_dir():
        raise UserError(
            f"--lake {args.lake} is not a directory ({'a file' if lake.store.root.exists() else 'no such path'}); "
            "give the folder a `datasets ingest` command wrote to (default results/lake, env WHALEBT_LAKE)"
        )
    symbol = args.symbol.upper() if args.symbol else None
    parts = lake.partitions("bronze", args.exchange, symbol) if (args.refresh or args.detail) else []
    if symbol and not args.exchange:
        parts = [p for p in lake.partitions("bronze") if p.symbol == symbol]
    if args.refresh:
        refresh_quality(lake, parts, progress=True)
    rows = lake_status(lake, layers)
    details = (
        [
            read_quality(lake, p)
            or {
                "key": p.key,
                "date": p.date.isoformat(),
                "rows": None,
                "exchange": p.exchange,
                "symbol": p.symbol,
                "issues": ["unchecked"],
            }
            for p in parts
        ]
        if args.detail
        else []
    )
    if args.json:
        json.dump({"lake": lake.uri, "layers": rows, "partitions": details}, sys.stdout, indent=1)
        print()
        return 0
    con = Console()
    if not con.is_terminal:
        con = Console(width=200)  # piped or captured: keep each row on one line
    if not rows:
        con.print(f"{lake.uri}: empty (no {', '.join(layers)} data)")
        return 0
    t = Table(title=f"{lake.uri}", box=box.SIMPLE_HEAD)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("layer", "left"),
        ("data", "left"),
        ("parts", "right"),
        ("days", "left"),
        ("missing", "right"),
        ("rows", "right"),
        ("size", "right"),
        ("checked", "right"),
        ("issues", "left"),
    )
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=col in ("data", "days"))
    unchecked = 0
    for r in rows:
        bronze = r["layer"] == "bronze"
        if bronze and r["checked"] < r["partitions"]:
            unchecked += r["partitions"] - r["checked"]
        issues = ", ".join(f"{k}: {v}" for k, v in sorted(r["issues"].items()))
        t.add_row(
            r["layer"],
            r["group"],
            str(r["partitions"]),
            f"{r['first']}..{r['last']}" if r["first"] else "",
            "" if r["missing_days"] is None else str(r["missing_days"]),
            (f"{r['rows']:,}" if r["rows"] is not None else "?") if bronze else "",
            _size(r["bytes"]) if bronze else "",
            f"{r['checked']}/{r['partitions']}" if bronze else "",
            f"[red]{issues}[/red]" if issues else ("ok" if bronze and r["checked"] else ""),
        )
    con.print(t)
    if details:
        d = Table(title="bronze partitions", box=box.SIMPLE_HEAD)
        for col in ("data", "date", "rows", "first", "last", "idle s", "max quiet s", "missing ids", "issues"):
            d.add_column(col, no_wrap=col in ("data", "date"))
        import datetime as dt

        def hms(ms):
            return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%H:%M:%S")

        for q in details:
            d.add_row(
                f"{q['exchange']}/{q['symbol']}",
                q["date"],
                "?" if q["rows"] is None else f"{q['rows']:,}",
                hms(q.get("first_ts_ms")),
                hms(q.get("last_ts_ms")),
                str(q.get("seconds_without_trades", "")),
                f"{q['longest_quiet_s']:.0f}" if q.get("longest_quiet_s") is not None else "",
                "n/a" if q.get("missing_ids") is None else str(q["missing_ids"]),
                ", ".join(q.get("issues", [])) or "ok",
            )
        con.print(d)
    if unchecked:
        print(f"{unchecked} bronze partitions have no current quality report; run with --refresh", file=sys.stderr)
    return 0
