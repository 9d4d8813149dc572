"""Entry point of the `datasets` command."""

from __future__ import annotations

import sys

from whalebt.cli import run_cli

DESCRIPTION = """whalebt data: ingest sources into the medallion lake, build layers, make synthetic markets.

Example:
  datasets synth --out results/synth --symbol PLANTUSDT --start 2024-03-01 --days 10
  datasets ingest binance-archive --root results/synth --symbol PLANTUSDT \\
      --start 2024-03-01 --end 2024-03-10 --lake results/lake
"""


def main(argv: list[str] | None = None) -> int:
    return run_cli("datasets", DESCRIPTION, "datasets.commands", argv)


if __name__ == "__main__":
    sys.exit(main())
