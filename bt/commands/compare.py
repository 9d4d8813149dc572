"""`bt compare RUN ... --out FILE.html`: one offline page comparing runs side by side."""

from __future__ import annotations

import argparse

from whalebt.cli import HelpFormatter, add_out_option, add_results_option

EXAMPLE = """Example:
  bt compare plant-whale-1h-3f2a9c1d04 whale-lgbm-1a2b3c4d --out compare.html
  bt compare results/run_a results/run_b results/run_c --out results/compare.html
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="one HTML page comparing runs: metrics incl. DSR/PBO, equity, returns, config diffs",
        description="Compare run folders (from bt run or bt sweep) on one self-contained HTML page: "
        "each run's span, metrics side by side, overlaid equity curves and return distributions, config "
        "differences and links to each run's tearsheet. Works offline (plotly is inlined). Prints each "
        "run's span and warns when the runs cover different spans.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="run folders or run ids under --results")
    add_out_option(p, kind="file", required=True, metavar="FILE", help="HTML file to write")
    add_results_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bt.compare import write_compare

    path = write_compare(args.runs, args.out, results_dir=args.results)
    print(path)
    return 0
