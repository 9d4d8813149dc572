"""whalebt backtester: event study, portfolio, reports, sweeps, registry and the `bt` CLI.

In a notebook: ``bt.backtest(config)`` and ``bt.load_run(path_or_run_id)`` return a
:class:`bt.api.Run`; they are imported on first use, so ``import bt`` and ``bt --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "backtest", "load_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bt import api

        return getattr(api, name)
    raise AttributeError(f"module 'bt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
