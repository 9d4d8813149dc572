"""Entry point of the `live` command."""

from __future__ import annotations

import sys

from whalebt.cli import run_cli

DESCRIPTION = """whalebt live: run the backtested signal code on exchange WebSockets.

Example:
  live replay tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz --port 9001
  live run --config configs/demo.yaml --exchange binance_usdm --symbols BTCUSDT \\
      --ws-url ws://127.0.0.1:9001/stream
"""


def main(argv: list[str] | None = None) -> int:
    return run_cli("live", DESCRIPTION, "live.commands", argv)


if __name__ == "__main__":
    sys.exit(main())
