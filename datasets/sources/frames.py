"""Exchange WebSocket frames → bronze trade rows (docs/spec.md §2): the per-exchange parsers, by name.

The parsers live with the rest of each exchange's knowledge in :mod:`datasets.exchanges`
(``binance``, ``bybit``, ``okx``; their module docs say how ids, sides and sizes are read); this
module gives them the names the recordings reader, the live adapters and the tests use. Frames that carry no trades give ``[]``; frames that
cannot be read raise :class:`FrameError`.
"""

from __future__ import annotations

from datasets.exchanges._common import FrameError, Trade
from datasets.exchanges.binance import BinanceTradeMerger
from datasets.exchanges.binance import parse_frame as parse_binance
from datasets.exchanges.bybit import parse_frame as parse_bybit
from datasets.exchanges.okx import (
    OKX_CONTRACT_VALUES,
    PERP_EXCHANGES,
    UnknownContractError,
    okx_exchange,
)
from datasets.exchanges.okx import contract_value as okx_contract_value
from datasets.exchanges.okx import from_inst_id as okx_symbol
from datasets.exchanges.okx import parse_frame as parse_okx

__all__ = [
    "Trade",
    "FrameError",
    "UnknownContractError",
    "parse_binance",
    "parse_bybit",
    "parse_okx",
    "BinanceTradeMerger",
    "OKX_CONTRACT_VALUES",
    "okx_contract_value",
    "okx_exchange",
    "okx_symbol",
    "PERP_EXCHANGES",
]
