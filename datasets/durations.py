"""Durations as people write them in configs and flags: ``"1h"``, ``"15m"``, ``"30s"``, ``"500ms"``."""

from __future__ import annotations

from whalebt.errors import UserError
import re
from typing import Any

__all__ = ["parse_duration_ms", "format_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(value: Any) -> int:
    """``"1h"`` → 3_600_000; ``"90s"``, ``"15m"``, ``"500ms"``, ``"1d"``; a bare number is seconds."""
    if isinstance(value, bool):
        raise UserError(f"expected a duration like '1h', '15m', '30s'; got {value!r}")
    if isinstance(value, (int, float)):
        ms = int(round(float(value) * 1000))
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise UserError(f"expected a duration like '1h', '15m', '30s' or '500ms'; got {value!r}")
        ms = int(round(float(m.group(1)) * _UNIT_MS[m.group(2)]))
    if ms <= 0:
        raise UserError(f"a duration must be positive; got {value!r}")
    return ms


def format_duration(ms: int) -> str:
    """Inverse of :func:`parse_duration_ms` for whole units: 3_600_000 → ``"1h"``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
