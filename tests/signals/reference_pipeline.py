"""Slow, obviously-correct references for the `signals` kernels (tests only).

Every quantity is recomputed from scratch for every trade from the definitions in
docs/spec.md §3 / `signals.features`: window bounds by `np.searchsorted`, sums by `np.sum`
over slices, extremes by `min`/`max`, quantiles by `np.quantile`. No state is carried
between trades, so nothing here can drift or leak the future by accident.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np

from signals.features import FEATURE_NAMES, RET_HORIZONS_S, WINDOWS_S

REAL_DIR = Path(__file__).resolve().parents[1] / "data" / "real"
BTC_STREAM = REAL_DIR / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"


def load_binance_trade_stream(path: Path = BTC_STREAM) -> dict[str, np.ndarray]:
    """`@trade` frames of an hftbacktest recording (`<recv ns> <json>` per gzip line).

    Returns arrays ts_ms, trade_id, price, qty, side sorted by (ts_ms, trade_id);
    `m` true (buyer is maker) means the taker sold, side -1.
    """
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            _, _, payload = line.partition(" ")
            if "@trade" not in payload:
                continue
            d = json.loads(payload)["data"]
            rows.append((int(d["T"]), int(d["t"]), float(d["p"]), float(d["q"]), -1 if d["m"] else 1))
    rows.sort(key=lambda r: (r[0], r[1]))
    ts, tid, price, qty, side = zip(*rows)
    return {
        "ts_ms": np.array(ts, np.int64),
        "trade_id": np.array(tid, np.int64),
        "price": np.array(price),
        "qty": np.array(qty),
        "side": np.array(side, np.int8),
    }


def window_starts(ts: np.ndarray, window_ms: int) -> np.ndarray:
    """For each trade i, the first index j with ts[j] > ts[i] - window_ms (window = j..i)."""
    return np.searchsorted(ts, ts - window_ms, side="right")


def reference_features(ts, price, qty, side) -> np.ndarray:
    """Feature rows (order `FEATURE_NAMES`) for every trade, each computed from scratch."""
    n = len(ts)
    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    notional = price * qty
    buy = side == 1
    sell = side == -1
    log_price = np.log(price)
    r2 = np.zeros(n)
    r2[1:] = np.diff(log_price) ** 2
    starts = {w: window_starts(ts, w * 1000) for w in WINDOWS_S}
    refs = {k: np.searchsorted(ts, ts - k * 1000, side="right") - 1 for k in RET_HORIZONS_S}
    for i in range(n):
        p = price[i]
        for w in WINDOWS_S:
            sl = slice(starts[w][i], i + 1)
            b, s = buy[sl], sell[sl]
            out[i, col[f"buy_qty_{w}s"]] = np.sum(qty[sl][b])
            out[i, col[f"sell_qty_{w}s"]] = np.sum(qty[sl][s])
            out[i, col[f"buy_notional_usd_{w}s"]] = np.sum(notional[sl][b])
            out[i, col[f"sell_notional_usd_{w}s"]] = np.sum(notional[sl][s])
            out[i, col[f"trade_count_{w}s"]] = i + 1 - starts[w][i]
        for k in RET_HORIZONS_S:
            j = refs[k][i]
            out[i, col[f"ret_{k}s"]] = p / price[j] - 1.0 if j >= 0 else np.nan
        rv = math.sqrt(np.sum(r2[starts[30][i] : i + 1]))
        out[i, col["rv_30s"]] = rv
        for k in (1, 5):
            out[i, col[f"ret_z_{k}s"]] = out[i, col[f"ret_{k}s"]] / (rv * math.sqrt(k / 30)) if rv > 0 else np.nan
        q5 = out[i, col["buy_qty_5s"]] + out[i, col["sell_qty_5s"]]
        q60 = out[i, col["buy_qty_60s"]] + out[i, col["sell_qty_60s"]]
        out[i, col["burst_ratio_5s_60s"]] = q5 / (q60 / 12) if q60 > 0 else np.nan
        for w in (5, 30):
            b, s = out[i, col[f"buy_qty_{w}s"]], out[i, col[f"sell_qty_{w}s"]]
            out[i, col[f"imbalance_{w}s"]] = (b - s) / (b + s) if b + s > 0 else np.nan
        win = price[starts[60][i] : i + 1]
        out[i, col["drawup_60s"]] = p / win.min() - 1.0
        out[i, col["drawdown_60s"]] = p / win.max() - 1.0
        out[i, col["notional_usd"]] = notional[i]
    return out


def reference_flow(ts, price, qty, side, window_s, q, lookback_s, min_samples):
    """Per trade: (taker-buy notional over the last window_s, history quantile threshold).

    History: one sample per closed whole second since the first trade's second, the sum
    of that second's and the previous window_s - 1 seconds' taker-buy notional bins
    (empty seconds are 0); a trade in second S sees the samples of seconds < S, the last
    lookback_s of them; threshold NaN with fewer than min_samples.
    """
    n = len(ts)
    buy_notional = np.where(side == 1, price * qty, 0.0)
    starts = window_starts(ts, window_s * 1000)
    flow = np.array([np.sum(buy_notional[starts[i] : i + 1]) for i in range(n)])
    sec = ts // 1000
    s0 = sec[0]
    bins = np.bincount(sec - s0, weights=buy_notional, minlength=sec[-1] - s0 + 1)
    samples = np.array([np.sum(bins[max(0, s - window_s + 1) : s + 1]) for s in range(len(bins))])
    thr = np.full(n, np.nan)
    cache: dict[int, float] = {}
    for i in range(n):
        s = int(sec[i] - s0)
        if s not in cache:
            hist = samples[max(0, s - lookback_s) : s]
            cache[s] = np.quantile(hist, q) if len(hist) >= min_samples else np.nan
        thr[i] = cache[s]
    return flow, thr


def reference_event_codes(
    ts, price, qty, side, min_notional_usd=None, window_s=None, q=0.99, lookback_s=3600, min_samples=60, cooldown_s=0.0
) -> np.ndarray:
    """Event code per trade (bit 1 notional, bit 2 flow), taker buys only, then cooldown."""
    n = len(ts)
    raw = np.zeros(n, np.int8)
    buy = side == 1
    if min_notional_usd is not None:
        raw |= (buy & (price * qty >= min_notional_usd)).astype(np.int8)
    if window_s is not None:
        flow, thr = reference_flow(ts, price, qty, side, window_s, q, lookback_s, min_samples)
        with np.errstate(invalid="ignore"):
            raw |= (2 * (buy & (flow > thr))).astype(np.int8)
    codes = np.zeros(n, np.int8)
    last = None
    for i in range(n):
        if raw[i] and (last is None or ts[i] >= last + cooldown_s * 1000):
            codes[i] = raw[i]
            last = ts[i]
    return codes
