"""Keys of the lake: partitions, the reports beside them, and the day a stored key is about.

Pure string and date logic with no I/O, so every module of the lake (the catalogue, quality
reports, retention) can name keys without importing the others.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["Partition", "PART_FILE", "quality_key", "key_date"]

PART_FILE = "part-0.parquet"


@dataclass(frozen=True, order=True)
class Partition:
    """One partition of a tabular layer."""

    layer: str
    exchange: str
    symbol: str
    date: dt.date
    variant: str = ""  # e.g. "signal=<config_id>" in gold

    @property
    def key(self) -> str:
        parts = [self.layer]
        if self.variant:
            parts.append(self.variant)
        parts += [f"exchange={self.exchange}", f"symbol={self.symbol}", f"date={self.date.isoformat()}"]
        return "/".join(parts) + "/" + PART_FILE

    @classmethod
    def from_key(cls, key: str) -> "Partition | None":
        bits = key.split("/")
        if len(bits) < 5 or bits[-1] != PART_FILE:
            return None
        try:
            ex = bits[-4].removeprefix("exchange=")
            sym = bits[-3].removeprefix("symbol=")
            date = dt.date.fromisoformat(bits[-2].removeprefix("date="))
        except ValueError:
            return None
        return cls(bits[0], ex, sym, date, "/".join(bits[1:-4]))


def quality_key(p: Partition) -> str:
    """Store key of the report of partition ``p``."""
    bits = ["quality", p.layer] + ([p.variant] if p.variant else [])
    bits += [f"exchange={p.exchange}", f"symbol={p.symbol}", f"date={p.date.isoformat()}", "report.json"]
    return "/".join(bits)


_DAY = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_COMPACT_DAY = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?!\d)")
_MONTH = re.compile(r"(?<!\d)(\d{4})-(\d{2})(?![\d-])")


def key_date(key: str) -> dt.date | None:
    """The day a stored key is about: a partition's ``date=``, else a date in the file name.

    ``...-2024-03.zip`` (a monthly file) counts as the month's last day; a name with no date
    gives None (such files are never deleted by age).
    """
    p = Partition.from_key(key)
    if p is not None:
        return p.date
    name = key.rsplit("/", 1)[-1]
    for text in (name, key):
        for rx, kind in ((_DAY, "day"), (_COMPACT_DAY, "day"), (_MONTH, "month")):
            m = list(rx.finditer(text))
            if not m:
                continue
            y, mo = int(m[-1].group(1)), int(m[-1].group(2))
            try:
                if kind == "day":
                    return dt.date(y, mo, int(m[-1].group(3)))
                return dt.date(y, mo, calendar.monthrange(y, mo)[1])
            except ValueError:
                continue
    return None
