"""`datasets synth`: write a seeded synthetic market in Binance's archive layout."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from whalebt.cli import HelpFormatter, UserError, add_out_option

EXAMPLE = """\
Generates aggTrades calibrated to recorded Binance USD-M minutes (trade rate and bursts, sizes,
side persistence, impact and volatility; see docs/datasets.md) and plants whale taker buys
(notional >= --whale-notional-usd) followed by a drift of --plant-effect-bps over
--plant-horizon-s. Writes daily zips + .CHECKSUM under OUT/data/futures/um/daily/aggTrades/SYM/
and OUT/synth.json (parameters, seed, planted and measured effect, whale list), so the market
goes through the real ingest path. --null plants the same whales with no drift (a control).

Example:
  datasets synth --out results/synth --symbol PLANTUSDT --start 2024-03-01 --days 10
  datasets ingest binance-archive --root results/synth --symbol PLANTUSDT \\
      --start 2024-03-01 --end 2024-03-10 --lake results/lake
  datasets synth --out results/synth-null --symbol NULLUSDT --start 2024-03-01 --days 10 --null
"""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2024-03-01, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a seeded synthetic market (Binance archive layout) with a planted whale effect",
        description="Write a seeded SYNTHETIC market in Binance's aggTrades archive layout.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    add_out_option(p, kind="dir", required=True, metavar="DIR", help="output directory (archive root)")
    p.add_argument("--symbol", default="PLANTUSDT", help="symbol written in file names")
    p.add_argument("--start", type=_date, default=dt.date(2024, 3, 1), metavar="YYYY-MM-DD", help="first UTC day")
    p.add_argument("--days", type=int, default=10, help="number of days")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and flags, same bytes)")
    p.add_argument("--trades-per-s", type=float, default=3.0, help="mean aggTrades per second")
    p.add_argument("--plant-effect-bps", type=float, default=30.0, help="drift after each whale, bps")
    p.add_argument("--plant-horizon-s", type=float, default=3600.0, help="seconds over which the drift builds")
    p.add_argument(
        "--whale-notional-usd",
        type=float,
        default=1_000_000.0,
        help="whales are taker buys with notional in [X, 2X]; organic trades stay below X",
    )
    p.add_argument("--whale-rate-per-day", type=float, default=6.0, help="mean planted whales per day")
    p.add_argument("--null", action="store_true", help="plant the whales but no drift (control market)")
    p.add_argument("--profile", default="BTCUSDT", help="calibrated profile to imitate (BTCUSDT or ETHUSDT)")
    p.add_argument("--start-price", type=float, default=None, help="first price (default: the profile's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from datasets.schema import normalise_symbol
    from datasets.synth import SynthParams, write_synth_archive

    symbol = normalise_symbol(args.symbol)
    if not symbol:
        raise UserError(f"--symbol must name a symbol like PLANTUSDT; got {args.symbol!r}")
    if args.start_price is not None and args.start_price <= 0:
        raise UserError(f"--start-price must be positive; got {args.start_price:g}")
    try:
        params = SynthParams(
            symbol=symbol,
            start=args.start,
            days=args.days,
            seed=args.seed,
            trades_per_s=args.trades_per_s,
            plant_effect_bps=args.plant_effect_bps,
            plant_horizon_s=args.plant_horizon_s,
            whale_notional_usd=args.whale_notional_usd,
            whale_rate_per_day=args.whale_rate_per_day,
            null=args.null,
            profile=args.profile.upper(),
            start_price=args.start_price,
        )
    except ValueError as exc:  # name the flag rather than the field
        msg = str(exc)
        for field in (
            "days",
            "trades_per_s",
            "plant_effect_bps",
            "plant_horizon_s",
            "whale_notional_usd",
            "whale_rate_per_day",
        ):
            msg = msg.replace(field, "--" + field.replace("_", "-"))
        raise UserError(msg) from None

    err = Console(stderr=True, highlight=False)
    err.print(
        f"[bold yellow]SYNTHETIC MARKET[/] {symbol} {params.start}..{params.end}: generated, not exchange data "
        f"(seed {params.seed}, profile {params.profile})"
    )
    with tqdm(
        total=params.days, desc="synth days", unit="day", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        res = write_synth_archive(args.out, params, on_day=lambda day, rows: bar.update(1))

    out = Console(highlight=False, width=max(120, Console().width))
    table = Table(title=f"SYNTHETIC market {symbol} -> {res.out_dir} (Binance archive layout)")
    for col in ("date", "file", "rows", "whales", "sha256"):
        table.add_column(col, justify="right" if col in ("rows", "whales") else "left")
    for f in res.files:
        table.add_row(f["date"], f["relpath"].rsplit("/", 1)[-1], f"{f['rows']:,}", str(f["whales"]), f["sha256"][:12])
    out.print(table)
    m = res.measured
    effect = (
        "none (null market)"
        if params.effect_bps == 0
        else f"+{params.effect_bps:g} bps over {params.plant_horizon_s:g} s"
    )
    measured = (
        f"{m['mean_bps']:+.1f} bps (± {m['se_bps']:.1f} s.e., n={m['n']})"
        if m.get("n", 0) > 1
        else "not measurable (fewer than 2 whales)"
    )
    out.print(
        f"SYNTHETIC: {res.n_trades:,} trades, {res.n_whales} planted whales (notional >= "
        f"{params.whale_notional_usd:,.0f} USD); planted effect {effect}; measured mean forward return "
        f"after whales {measured}. Manifest: {res.manifest_path}",
        markup=False,
    )
    return 0
