"""OKX's daily trade archive (perpetual swaps) → raw + bronze.

Layout (``https://www.okx.com/cdn/okex/traderecords`` or a local mirror)::

    trades/daily/20240101/BTC-USDT-SWAP-trades-2024-01-01.zip

Each zip holds one CSV. Two headers are in circulation and both are read by name:

- ``instrument_name,trade_id,side,price,size,created_time`` (recent files; some add ``source``);
- ``trade_id/交易id,side/交易方向,size/数量,price/价格,created_time/成交时间`` (older files; the
  part before ``/`` is the name).

What this module assumes (from OKX's download page and public descriptions of the files; OKX
documents neither the columns nor checksums formally):

- ``created_time`` is milliseconds since the epoch (UTC); ``side`` is the taker's side.
- A file named for day D holds OKX's day D in UTC+8, i.e. ``D-1 16:00`` to ``D 16:00`` UTC. So to
  fill UTC days ``start..end`` the source reads files ``start..end+1`` and keeps rows of those UTC
  days; the manifest remembers which UTC days of each file are in bronze.
- For swaps ``size`` counts contracts. Base units: ``size * ctVal`` for USDT/USDC-margined swaps,
  ``size * ctVal / price`` for coin-margined (``-USD-SWAP``) ones, whose ``ctVal`` is in USD. The
  contract values are :data:`datasets.exchanges.okx.OKX_CONTRACT_VALUES` (shared with the live
  parser); others are passed as ``contract_values`` (``--contract-value`` on the command line),
  taken from ``ctVal`` of OKX's ``/api/v5/public/instruments``.
- ``trade_id`` is numeric and counts up per instrument; it is used as is.

OKX publishes no checksums: the zip's CRC-32 is checked while reading.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from typing import Any, Mapping

import numpy as np
import pandas as pd

from datasets.lake import Lake
from datasets.schema import SchemaError
from datasets.sources.bybit_archive import (
    CorruptFile,
    DailyArchive,
    IngestReport,
    date_range,
    ingest_daily_archive,
)
from datasets.exchanges import okx
from datasets.exchanges.okx import contract_value as okx_contract_value
from datasets.exchanges.okx import from_inst_id as okx_symbol

__all__ = [
    "OKX_BASE_URL",
    "okx_relpath",
    "okx_file_dates",
    "parse_okx_zip",
    "okx_archive",
    "ingest_okx_archive",
]

OKX_BASE_URL = okx.ARCHIVE_URL
_NEEDED = ("trade_id", "side", "size", "price", "created_time")


okx_relpath = okx.archive_relpath


def okx_file_dates(start: dt.date, end: dt.date) -> list[dt.date]:
    """File dates whose UTC+8 days cover UTC days ``start..end``: ``start..end+1``."""
    return date_range(start, end + dt.timedelta(days=1))


def _member(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    csvs = [i for i in zf.infolist() if i.filename.lower().endswith(".csv")]
    if len(csvs) != 1:
        raise SchemaError(f"{name}: expected one .csv inside the zip; found {[i.filename for i in zf.infolist()]}")
    return csvs[0]


def _columns(header: bytes, name: str) -> list[str]:
    text = header.decode("utf-8", "replace").lstrip("\ufeff").strip()
    cols = [c.strip().strip('"').split("/", 1)[0].strip().lower() for c in text.split(",")]
    missing = [c for c in _NEEDED if c not in cols]
    if missing:
        raise SchemaError(
            f"{name}: the CSV header should name {list(_NEEDED)} (with or without "
            f"instrument_name); got {text[:200]!r}, missing {missing}"
        )
    return cols


def parse_okx_zip(
    data: bytes,
    inst_id: str,
    *,
    name: str = "okx file",
    contract_values: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Bronze trades of one OKX daily trade zip for swap ``inst_id`` (e.g. ``BTC-USDT-SWAP``).

    Raises:
        CorruptFile: not a zip, or a member fails its CRC check (damaged download).
        SchemaError: unexpected header, values or instrument.
        UnknownContractError: no contract value known for a USDT/USDC-margined swap.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    inst = inst_id.upper()
    ct_val, margin = okx_contract_value(inst, contract_values)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        info = _member(zf, name)
        with zf.open(info) as fh:
            cols = _columns(fh.readline(), name)
        types = {
            "trade_id": pa.int64(),
            "side": pa.string(),
            "size": pa.float64(),
            "price": pa.float64(),
            "created_time": pa.int64(),
        }
        if "instrument_name" in cols:
            types["instrument_name"] = pa.string()
        with zf.open(info) as fh:  # streamed: the CSV is never held whole in memory
            t = pacsv.open_csv(
                fh,
                read_options=pacsv.ReadOptions(skip_rows=1, column_names=cols, block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types)),
            ).read_all()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise CorruptFile(f"{name} is not a readable zip ({exc})") from None
    except pa.ArrowInvalid as exc:
        raise SchemaError(f"{name}: cannot read the trades CSV ({exc})") from None
    if "instrument_name" in types and t.num_rows:
        import pyarrow.compute as pc

        other = [s for s in pc.unique(t["instrument_name"]).to_pylist() if str(s).upper() != inst]
        if other:
            raise SchemaError(f"{name} holds trades of {other[:3]}, expected only {inst}")
    side_s = t["side"].to_numpy(zero_copy_only=False).astype(str)
    side = np.where(side_s == "buy", 1, np.where(side_s == "sell", -1, 0)).astype(np.int8)
    if (side == 0).any():
        bad = sorted(set(side_s[side == 0].tolist()))[:5]
        raise SchemaError(f"{name}: column 'side' must be buy or sell (the taker's side); found {bad}")
    price = t["price"].to_numpy(zero_copy_only=False)
    size = t["size"].to_numpy(zero_copy_only=False)
    qty = size * ct_val if margin == "linear" else size * ct_val / price
    return pd.DataFrame(
        {
            "exchange": "okx_swap",
            "symbol": okx_symbol(inst),
            "trade_id": t["trade_id"].to_numpy(zero_copy_only=False),
            "ts_ms": t["created_time"].to_numpy(zero_copy_only=False),
            "price": price,
            "qty": qty,
            "side": side,
        }
    )


def okx_archive(contract_values: Mapping[str, Any] | None = None) -> DailyArchive:
    """The OKX daily archive description (with optional contract-value overrides)."""
    return DailyArchive(
        source="okx_archive",
        relpath=okx_relpath,
        file_dates=okx_file_dates,
        parse=lambda data, inst, name: parse_okx_zip(data, inst, name=name, contract_values=contract_values),
        id_space="okx_trade_id",
        covers=okx_file_covers,
        exchange="okx_swap",
        symbol_of=okx_symbol,
    )


def okx_file_covers(day: dt.date) -> tuple[int, int]:
    """UTC time a file dated ``day`` holds: OKX's day in UTC+8, ``day-1 16:00`` to ``day 16:00``."""
    lo = (day - dt.date(1970, 1, 1)).days * 86_400_000 - 8 * 3_600_000
    return lo, lo + 86_400_000


def check_inst_id(inst_id: str) -> str:
    """``btc-usdt-swap`` → ``BTC-USDT-SWAP``; anything but a swap is refused with a suggestion."""
    return okx.check_swap_inst_id(inst_id, "okx-archive")


def ingest_okx_archive(
    base: str,
    inst_id: str,
    start: dt.date,
    end: dt.date,
    lake: Lake,
    *,
    contract_values: Mapping[str, Any] | None = None,
    **kwargs,
) -> IngestReport:
    """OKX daily trade zips for swap ``inst_id`` covering UTC days ``start..end`` → raw + bronze.

    See :func:`datasets.sources.bybit_archive.ingest_daily_archive` for the other options.
    """
    inst = check_inst_id(inst_id)
    okx_contract_value(inst, contract_values)  # fail before any download if it is unknown
    return ingest_daily_archive(okx_archive(contract_values), base, inst, start, end, lake, **kwargs)
