"""The signal journal record (docs/spec.md §5) and the decision, shared by `bt` and `live`.

Both sides build every record with :func:`journal_record`, so the keys, their order and
their rounding are the same by construction.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

__all__ = ["JOURNAL_KEYS", "NonFiniteError", "config_id", "decide", "journal_record", "journal_line", "canonical_json"]

JOURNAL_KEYS = (
    "exchange",
    "symbol",
    "trade_id",
    "ts_ms",
    "price",
    "notional_usd",
    "prob",
    "decision",
    "config_id",
    "model",
)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the form that hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_id(signal_config: Mapping[str, Any]) -> str:
    """Stable 12-hex-digit id of a resolved signal config (whale rule, model, threshold)."""
    return hashlib.sha256(canonical_json(dict(signal_config)).encode()).hexdigest()[:12]


def decide(prob: float | None, threshold: float | None) -> str:
    """`"long"` if there is no model or ``prob >= threshold``, else `"skip"`."""
    if prob is None or threshold is None:
        return "long"
    return "long" if prob >= threshold else "skip"


def journal_record(
    *,
    exchange: str,
    symbol: str,
    trade_id: int,
    ts_ms: int,
    price: float,
    notional_usd: float,
    prob: float | None,
    decision: str,
    config_id: str,
    model: str | None,
) -> dict[str, Any]:
    """One journal line as a dict with the docs/spec.md §5 keys in order."""
    if decision not in ("long", "skip"):
        raise ValueError(f"decision must be 'long' or 'skip', got {decision!r}")
    p = None if prob is None or (isinstance(prob, float) and math.isnan(prob)) else float(prob)
    return {
        "exchange": str(exchange),
        "symbol": str(symbol),
        "trade_id": int(trade_id),
        "ts_ms": int(ts_ms),
        "price": float(price),
        "notional_usd": float(notional_usd),
        "prob": p,
        "decision": decision,
        "config_id": str(config_id),
        "model": model,
    }


class NonFiniteError(ValueError):
    """A journal record holds NaN or infinity, which JSON cannot carry (the trade was invalid)."""


def journal_line(record: dict[str, Any]) -> str:
    """The one encoding of a journal line (docs/spec.md §5.2), newline included.

    ``bt signals``, the run folder's ``signals.jsonl`` and ``live run`` all write through here,
    which is what keeps their journals byte-identical. A NaN or infinite value raises
    :class:`NonFiniteError` naming the key: a journal never holds ``NaN``/``Infinity``.
    """
    try:
        return json.dumps(record, allow_nan=False) + "\n"
    except ValueError:
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        raise NonFiniteError(
            f"journal record of trade {record.get('trade_id')!r} has non-finite {bad}: "
            f"{ {k: record[k] for k in bad} }; such a trade is invalid and must be refused before it reaches the journal"
        ) from None
