"""Entry point of the `bt` command."""

from __future__ import annotations

import sys

from whalebt.cli import run_cli

DESCRIPTION = """whalebt backtester: event studies and portfolios of whale-triggered long signals.

Example:
  bt run configs/demo.yaml
  bt signals configs/demo.yaml --out signals.jsonl
"""


def main(argv: list[str] | None = None) -> int:
    return run_cli("bt", DESCRIPTION, "bt.commands", argv)


if __name__ == "__main__":
    sys.exit(main())
