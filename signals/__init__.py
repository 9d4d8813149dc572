"""Whale detection and per-trade features: the one code path backtest and live share.

Pure NumPy/numba: no files, clocks, sockets or YAML. `live/` calls `update` per trade,
`bt/` calls `run_batch`; both run `signals.nb.update_nb`.
"""

from signals.config import WhaleParams
from signals.features import FEATURE_NAMES, FEATURE_VERSION, N_FEATURES, feature_spec_hash
from signals.kernel import KERNEL_VERSION, BatchResult, KernelState, new_state, run_batch, update

__all__ = [
    "WhaleParams",
    "KernelState",
    "BatchResult",
    "new_state",
    "update",
    "run_batch",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "KERNEL_VERSION",
    "N_FEATURES",
    "feature_spec_hash",
]
