"""The per-trade feature vector: names, column positions and the spec hash.

A model trained on these features is bundled with `feature_spec_hash()`; change
`FEATURE_VERSION` whenever a definition changes, even if no name does.
"""

from __future__ import annotations

import hashlib
import json

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "N_FEATURES",
    "WINDOWS_S",
    "RET_HORIZONS_S",
    "feature_spec_hash",
    "feature_index",
]

FEATURE_VERSION = 1

#: Flow windows: trades with `ts_ms > t - W * 1000`, the current trade included.
WINDOWS_S = (1, 5, 30, 60)
#: Return horizons: against the last trade with `ts_ms <= t - k * 1000`.
RET_HORIZONS_S = (1, 5, 10, 30)

_per_window = []
for _w in WINDOWS_S:
    _per_window += [
        f"buy_qty_{_w}s",
        f"sell_qty_{_w}s",
        f"buy_notional_usd_{_w}s",
        f"sell_notional_usd_{_w}s",
        f"trade_count_{_w}s",
    ]

#: Column order of every feature row the kernel writes (see `signals.nb.update_nb`).
FEATURE_NAMES: tuple[str, ...] = tuple(_per_window) + (
    "ret_1s",
    "ret_5s",
    "ret_10s",
    "ret_30s",  # price / price_ref - 1, NaN without a ref
    # sqrt(sum of squared trade-to-trade log returns of the trades in the last 30 s, each
    # against its previous trade: the first against the trade before the window, which is
    # ret_30s's reference, so the returns summed are exactly the path behind ret_30s).
    "rv_30s",
    "ret_z_1s",
    "ret_z_5s",  # ret_ks / (rv_30s * sqrt(k / 30)), NaN when rv_30s is 0
    "burst_ratio_5s_60s",  # qty_5s / (qty_60s / 12), total (buy + sell) base qty
    "imbalance_5s",
    "imbalance_30s",  # (buy_qty - sell_qty) / (buy_qty + sell_qty)
    "drawup_60s",
    "drawdown_60s",  # price / min(60 s) - 1 and price / max(60 s) - 1
    "notional_usd",  # this trade's price * qty
)
N_FEATURES = len(FEATURE_NAMES)
del _per_window, _w

# Column positions, used as compile-time constants by the numba kernels.
COL_WINDOW0 = 0  # window w occupies COL_WINDOW0 + 5 * w + (0..4) in the order above
COL_RET0 = 20  # ret_1s .. ret_30s
COL_RV_30S = 24
COL_RET_Z_1S = 25
COL_RET_Z_5S = 26
COL_BURST = 27
COL_IMB_5S = 28
COL_IMB_30S = 29
COL_DRAWUP = 30
COL_DRAWDOWN = 31
COL_NOTIONAL = 32
assert FEATURE_NAMES[COL_RET0] == "ret_1s" and FEATURE_NAMES[COL_NOTIONAL] == "notional_usd"
assert N_FEATURES == COL_NOTIONAL + 1


def feature_index(name: str) -> int:
    """Column of `name` in a feature row; raises ValueError for an unknown name."""
    try:
        return FEATURE_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown feature {name!r}; expected one of {list(FEATURE_NAMES)}") from None


def feature_spec_hash() -> str:
    """Stable 16-hex-digit hash of the feature names, their order and `FEATURE_VERSION`."""
    blob = json.dumps({"names": list(FEATURE_NAMES), "version": FEATURE_VERSION}, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
