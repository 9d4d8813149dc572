"""`datasets ingest recording FILE`: a recorded WebSocket file → raw copy + bronze trades."""

from __future__ import annotations

import argparse
import sys

from whalebt.cli import HelpFormatter, UserError, add_lake_option

GROUP = "ingest"

EXAMPLE = """\
Keeps the file byte for byte under raw/recordings/<file name> and merges its trades into
bronze (one partition per exchange, symbol and UTC day). Re-running changes nothing.
Formats: hftbacktest '<ns> <json>' lines (gzip or plain), cryptofeed '.txt' frame logs,
cryptofeed JSONL records (zstd or plain). By default only perpetual markets go to bronze
(binance_usdm, bybit_linear, okx_swap); name another with --exchange (e.g. okx_spot).

Example:
  datasets ingest recording tests/data/real/bybit_v5_multi_2026-08-09_frames.jsonl.zst \\
      --lake results/lake --symbols BTCUSDT,ETHUSDT
  datasets ingest recording tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recording",
        help="recorded exchange WebSocket frames (hftbacktest / cryptofeed files)",
        description="Ingest a recorded WebSocket file into the lake (raw + bronze).",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="the recording")
    add_lake_option(p)
    p.add_argument(
        "--exchange", default=None, help="keep only this exchange (default: binance_usdm, bybit_linear, okx_swap)"
    )
    p.add_argument("--symbols", default=None, help="comma-separated symbols to keep, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--skip-bad-frames", action="store_true", help="count and skip malformed frames instead of stopping")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="store the valid trades and quarantine invalid ones (quarantine/recordings/...) instead of refusing "
        "the file",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite the bronze days the recording touches with its trades (and coverage) "
        "instead of merging, e.g. when they hold another id space (an aggTrades archive), "
        "which a merge refuses",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from datasets.lake import Lake
    from whalebt.progress import status
    from datasets.sources.frames import FrameError, UnknownContractError
    from datasets.sources.recordings import recording_bronze

    path = Path(args.file)
    if not path.is_file():
        raise UserError(
            f"recording {path} does not exist or is not a file; give the path of a "
            "recorded file such as tests/data/real/okx_v5_multi_2022-05-13_frames.txt"
        )
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    # Parse everything before writing anything, so a bad file leaves the lake untouched.
    with status(f"reading {path.name}"):
        try:
            import pandas as pd

            rec = recording_bronze(
                path, args.exchange, symbols, skip_bad_frames=args.skip_bad_frames, skip_bad_rows=args.skip_bad_rows
            )
            df, bad = rec.trades, rec.bad_frames
        except (FrameError, UnknownContractError) as exc:
            raise UserError(str(exc)) from None
    for note in rec.notes:
        print(f"warning: {note}", file=sys.stderr)
    if df.empty:
        kept = args.exchange or "binance_usdm, bybit_linear, okx_swap"
        raise UserError(
            f"{path.name} holds no trades for {kept}"
            + (f" and symbols {','.join(symbols)}" if symbols else "")
            + "; check --exchange/--symbols (nothing was written)"
        )
    lake = Lake(args.lake)
    if not args.replace:  # refuse another id space before anything (raw included) is stored
        days = pd.to_datetime(df["ts_ms"], unit="ms", utc=True).dt.date
        for ex, sym, day in sorted(set(zip(df["exchange"], df["symbol"], days))):
            lake.check_id_space(ex, sym, [day], rec.id_spaces.get((ex, sym)))
    raw_new = lake.put_raw("recordings", path.name, path.read_bytes())
    quarantined = 0 if rec.bad_rows is None else len(rec.bad_rows)
    if quarantined:
        lake.write_quarantine("recordings", rec.bad_rows)
    results = lake.write_trades(
        df,
        mode="replace" if args.replace else "merge",
        what=path.name,
        coverage=rec.coverage,
        coverage_source="recording",
        id_space=rec.id_spaces,
    )

    table = Table(title=f"{path.name} → {lake.uri}")
    for col in ("exchange", "symbol", "date", "rows in file", "rows stored", "changed"):
        table.add_column(col, justify="right" if col.startswith("rows") else "left")
    counts = df.groupby(["exchange", "symbol", pd.to_datetime(df["ts_ms"], unit="ms", utc=True).dt.date]).size()
    for r in results:
        table.add_row(
            r.partition.exchange,
            r.partition.symbol,
            r.partition.date.isoformat(),
            str(int(counts.get((r.partition.exchange, r.partition.symbol, r.partition.date), 0))),
            str(r.rows),
            "yes" if r.changed else "no",
        )
    Console().print(table)
    print(
        f"raw/recordings/{path.name}: {'stored' if raw_new else 'already stored, identical'}; "
        f"{len(df)} trades, {sum(r.changed for r in results)} of {len(results)} partitions changed"
        + (f"; {bad} malformed frames skipped" if bad else "")
        + (f"; {quarantined} bad rows quarantined under quarantine/recordings/" if quarantined else ""),
        file=sys.stdout,
    )
    return 0
