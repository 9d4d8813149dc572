"""Archive files that wrap one CSV in a zip (Binance klines, fundingRate, aggTrades)."""

from __future__ import annotations

import io
import zipfile

__all__ = ["csv_bytes"]


def csv_bytes(data: bytes, name: str, error: type[Exception] = ValueError) -> bytes:
    """The CSV inside a zip that holds exactly one, or ``data`` itself when it is not a zip.

    Raises:
        error: the zip is corrupt or does not hold exactly one CSV (the message names ``name``).
    """
    if data[:2] != b"PK":
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise error(f"{name}: expected one CSV inside the zip; found {zf.namelist()}")
            return zf.read(members[0])
    except zipfile.BadZipFile as exc:
        raise error(f"{name}: corrupt zip ({exc}); fetch it again") from None
