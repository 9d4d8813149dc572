"""`datasets ingest okx-archive`: OKX daily trade zips (swaps) → raw copy + bronze trades."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, UserError
from datasets.commands.ingest_bybit_archive import add_archive_args, parse_span, print_report

GROUP = "ingest"

EXAMPLE = """\
Downloads trades/daily/YYYYMMDD/INST-trades-YYYY-MM-DD.zip (a local mirror with the same
layout works too), keeps each zip byte for byte under raw/okx_archive/, and merges its trades
into bronze (exchange okx_swap, symbol BTC-USDT-SWAP → BTCUSDT). OKX's files are UTC+8 days,
so one more file than days is read and only rows of the asked UTC days are kept. Sizes are
contracts: they become base units with the contract value (ctVal) of the instrument; give
--contract-value for an instrument this project does not know. A 404 is reported as a gap;
re-running skips files already ingested.

Example:
  datasets ingest okx-archive --symbol BTC-USDT-SWAP --start 2024-01-01 --end 2024-01-31 \\
      --lake az://lake/whale
  datasets ingest okx-archive --root mirror/okx --symbol PEPE-USDT-SWAP --contract-value 10000000 \\
      --start 2024-03-01 --end 2024-03-02
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "okx-archive",
        help="OKX daily trade archive (zip per swap and day)",
        description="Ingest OKX's daily trade zips into the lake (raw + bronze okx_swap).",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_archive_args(p, "https://www.okx.com/cdn/okex/traderecords", "OKX swap instId, e.g. BTC-USDT-SWAP")
    p.add_argument(
        "--contract-value",
        type=float,
        default=None,
        help="ctVal of the instrument (base units per contract; USD for -USD-SWAP), "
        "from OKX /api/v5/public/instruments",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datasets.lake import Lake
    from datasets.sources._http import FetchError
    from datasets.sources.frames import UnknownContractError
    from datasets.sources.okx_archive import OKX_BASE_URL, check_inst_id, ingest_okx_archive

    lo, hi = parse_span(args.start, args.end)
    inst = check_inst_id(args.symbol)
    overrides = None
    if args.contract_value is not None:
        if not args.contract_value > 0:
            raise UserError(f"--contract-value must be positive; got {args.contract_value}")
        margin = "inverse" if inst.split("-")[1] == "USD" else "linear"
        overrides = {inst: (args.contract_value, margin)}
    base = args.root or args.base_url or OKX_BASE_URL
    lake = Lake(args.lake)
    try:
        rep = ingest_okx_archive(
            base,
            inst,
            lo,
            hi,
            lake,
            contract_values=overrides,
            workers=args.workers,
            force=args.force,
            replace=args.replace,
            skip_bad_rows=args.skip_bad_rows,
        )
    except FetchError as exc:
        raise UserError(
            f"{exc} (nothing of this run was written: every file is fetched and checked first; re-run to try again)"
        ) from None
    except UnknownContractError as exc:
        raise UserError(f"{exc}; on the command line: --contract-value <ctVal>") from None
    print_report(rep, f"okx {inst} {lo}..{hi}", lake.uri)
    return 0
