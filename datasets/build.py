"""Layer builds: bronze trades → silver 1 s bars → gold whale events.

The steps themselves are pure functions (frame in, frame out); :func:`ensure_silver` and
:func:`ensure_gold` add the caching through the lake: a derived partition records the
content hashes it was built from and is rebuilt when its sources or the signal config change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from datasets.lake import Lake, NoDataError, Partition
from datasets.durations import format_duration
from signals.journal import canonical_json

__all__ = [
    "bars_1s",
    "gold_events",
    "gold_variant",
    "ensure_silver",
    "ensure_gold",
    "load_trades",
    "TradeSpan",
]

TRADE_COLUMNS = ["trade_id", "ts_ms", "price", "qty", "side"]


def bars_1s(trades: pd.DataFrame) -> pd.DataFrame:
    """1 s bars of trades sorted by time (docs/spec.md §2 silver).

    Same as ``trades.resample('1s', on=ts)`` with last price, summed base/quote volume, count
    and taker buy/sell qty, keeping only seconds that have trades.
    """
    ts = trades["ts_ms"].to_numpy(np.int64)
    if ts.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
            ("ts_s", "int64"), ("last_price", "float64"), ("base_volume", "float64"),
            ("quote_volume", "float64"), ("trade_count", "int64"), ("taker_buy_qty", "float64"),
            ("taker_sell_qty", "float64")]})
    price = trades["price"].to_numpy(np.float64)
    qty = trades["qty"].to_numpy(np.float64)
    side = trades["side"].to_numpy(np.int8)
    sec = ts // 1000
    starts = np.flatnonzero(np.r_[True, sec[1:] != sec[:-1]])
    ends = np.r_[starts[1:], sec.size] - 1
    buy = np.where(side > 0, qty, 0.0)
    return pd.DataFrame(
        {
            "ts_s": sec[starts],
            "last_price": price[ends],
            "base_volume": np.add.reduceat(qty, starts),
            "quote_volume": np.add.reduceat(qty * price, starts),
            "trade_count": np.diff(np.r_[starts, sec.size]).astype(np.int64),
            "taker_buy_qty": np.add.reduceat(buy, starts),
            "taker_sell_qty": np.add.reduceat(qty - buy, starts),
        }
    )


@dataclass
class TradeSpan:
    """Trades of one symbol over a span, as arrays, with the partitions they came from."""

    exchange: str
    symbol: str
    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray
    partitions: list[Partition]
    sources: list[dict]  # [{key, sha256, rows}] — lineage

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"trade_id": self.trade_id, "ts_ms": self.ts_ms, "price": self.price, "qty": self.qty, "side": self.side}
        )


def load_trades(lake: Lake, exchange: str, symbol: str, start, end) -> TradeSpan:
    """Read bronze trades for ``start..end`` (dates, inclusive) into arrays, oldest first."""
    parts = lake.partitions("bronze", exchange, symbol, start=start, end=end)
    if not parts:
        raise NoDataError(
            f"no bronze trades for {exchange}/{symbol} from {start} to {end} in {lake.uri}; "
            f"stored: {lake.describe('bronze', exchange, symbol)}. "
            "Ingest them first, e.g. `datasets ingest binance-archive ...`"
        )
    frames, sources = [], []
    for p in parts:
        df, meta = lake.read_with_meta(p, TRADE_COLUMNS)
        frames.append(df)
        sources.append({"key": p.key, "sha256": meta.get("content_sha256", ""), "rows": int(meta["rows"])})
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    order_ok = bool((np.diff(df["ts_ms"].to_numpy()) >= 0).all())
    if not order_ok:  # partitions are written sorted; guard against hand-made ones
        df = df.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True)
    return TradeSpan(
        exchange,
        symbol,
        df["trade_id"].to_numpy(np.int64),
        df["ts_ms"].to_numpy(np.int64),
        df["price"].to_numpy(np.float64),
        df["qty"].to_numpy(np.float64),
        df["side"].to_numpy(np.int8),
        parts,
        sources,
    )


def ensure_silver(lake: Lake, span: TradeSpan) -> pd.DataFrame:
    """Silver bars for the span, built from bronze where missing or stale, cached per date."""
    frames = []
    dates = (span.ts_ms // 86_400_000).astype(np.int64)
    for p, src in zip(span.partitions, span.sources):
        day = (p.date - dt.date(1970, 1, 1)).days
        silver = Partition("silver", p.exchange, p.symbol, p.date)
        cached = None
        if lake.store.exists(silver.key):
            cached, meta = lake.read_with_meta(silver)
            if meta.get("source_sha256") != src["sha256"]:
                cached = None
        if cached is None:
            mask = dates == day
            day_trades = pd.DataFrame(
                {"ts_ms": span.ts_ms[mask], "price": span.price[mask], "qty": span.qty[mask], "side": span.side[mask]}
            )
            cached = bars_1s(day_trades)
            lake.write("silver", cached, p.exchange, p.symbol, p.date, mode="replace",
                       meta={"source_sha256": src["sha256"]})
        frames.append(cached)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def gold_variant(whale: dict, horizons_ms: list[int], latency_ms: int, start: dt.date) -> str:
    """Partition variant of a gold build: what the events depend on besides bronze."""
    from signals import KERNEL_VERSION, feature_spec_hash
    from signals.outcome import OUTCOME_VERSION

    spec = {
        "whale": whale,
        "horizons_ms": list(horizons_ms),
        "entry_latency_ms": int(latency_ms),
        "warmup_from": str(start),
        "features": feature_spec_hash(),
        "kernel": KERNEL_VERSION,
        "outcome": OUTCOME_VERSION,
    }
    return "signal=" + hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:12]


def gold_events(span: TradeSpan, whale: dict, horizons_ms: list[int], latency_ms: int) -> pd.DataFrame:
    """Run the kernel over the span: one row per whale event with features and gross forward returns.

    Forward returns follow docs/spec.md §3 entry/exit rules without costs (``fwd_ret_<h>``; NaN when the
    horizon runs past the data).
    """
    from signals import FEATURE_NAMES, WhaleParams, run_batch
    from signals.outcome import entry_exit

    params = WhaleParams.from_dict(whale)
    res = run_batch(span.ts_ms, span.price, span.qty, span.side, params)
    idx = np.asarray(res.event_idx, dtype=np.int64)
    out = {
        "trade_id": span.trade_id[idx],
        "ts_ms": span.ts_ms[idx],
        "price": span.price[idx],
        "qty": span.qty[idx],
        "notional_usd": span.price[idx] * span.qty[idx],
        "event_code": np.asarray(res.event_code, dtype=np.int8),
    }
    feats = np.asarray(res.event_features, dtype=np.float64).reshape(len(idx), len(FEATURE_NAMES))
    for j, name in enumerate(FEATURE_NAMES):
        out[f"f_{name}"] = feats[:, j]
    entry, exit_, reason = entry_exit(span.ts_ms, span.price, idx, latency_ms=latency_ms, horizons_ms=horizons_ms)
    ok = exit_ >= 0
    safe_entry = np.where(entry >= 0, entry, 0)
    for k, h in enumerate(horizons_ms):
        gross = span.price[np.where(ok[:, k], exit_[:, k], 0)] / span.price[safe_entry] - 1.0
        out[f"fwd_ret_{format_duration(h)}"] = np.where(ok[:, k], gross, np.nan)
    return pd.DataFrame(out)


def ensure_gold(
    lake: Lake, span: TradeSpan, whale: dict, horizons_ms: list[int], latency_ms: int, start: dt.date
) -> tuple[pd.DataFrame, bool]:
    """Gold events for the span, from the lake if built from the same bronze and config.

    The kernel runs over the whole span at once (its state carries across days); the result is
    stored per date under ``gold/<variant>/...`` with the bronze hashes it was built from.
    Returns (events, cached).
    """
    variant = gold_variant(whale, horizons_ms, latency_ms, start)
    fingerprint = hashlib.sha256(json.dumps([s["sha256"] for s in span.sources]).encode()).hexdigest()
    parts = [Partition("gold", p.exchange, p.symbol, p.date, variant) for p in span.partitions]
    if all(lake.store.exists(g.key) for g in parts):
        stored = [lake.read_with_meta(g) for g in parts]
        if all(meta.get("source_fingerprint") == fingerprint for _, meta in stored):
            return pd.concat([df for df, _ in stored], ignore_index=True), True
    events = gold_events(span, whale, horizons_ms, latency_ms)
    ev_day = pd.to_datetime(events["ts_ms"], unit="ms", utc=True).dt.date
    for g in parts:
        lake.write("gold", events[ev_day == g.date].reset_index(drop=True), g.exchange, g.symbol, g.date,
                   variant=variant, mode="replace", meta={"source_fingerprint": fingerprint})
    return events, False
