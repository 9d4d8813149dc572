"""Overfitting controls for a search over many trials: deflated Sharpe ratio and PBO.

* :func:`deflated_sharpe_ratio` (Bailey and López de Prado, 2014): the probability that the
  winner's true Sharpe ratio is above the best Sharpe ratio that ``n_trials`` skill-less trials
  would be expected to reach, given the winner's sample length, skewness and kurtosis.
* :func:`pbo_cscv` (Bailey, Borwein, López de Prado and Zhu, 2017): the probability of backtest
  overfitting by combinatorially symmetric cross-validation over a (periods x trials) matrix of
  per-period returns: how often the in-sample best trial ranks in the bottom half out of sample.

Sharpe ratios here are per period (not annualised), as both papers define them. Pure NumPy;
SciPy only for the normal distribution.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "EULER_GAMMA",
    "sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "deflated_sharpe_ratio",
    "DSRResult",
    "pbo_cscv",
    "PBOResult",
    "per_period_returns",
]

EULER_GAMMA = 0.5772156649015329


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-period Sharpe ratio ``mean / std`` (ddof 1); NaN with < 2 values or zero spread."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else math.nan


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent skill-less trials.

    ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))`` with ``g`` the Euler-Mascheroni
    constant and ``Z`` the standard normal quantile; 0 for a single trial.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1; got {n_trials}")
    if n_trials == 1 or not sharpe_variance > 0:
        return 0.0
    n = float(n_trials)
    z1 = _norm_ppf(1.0 - 1.0 / n)
    z2 = _norm_ppf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def probabilistic_sharpe_ratio(sharpe: float, benchmark: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """P(true Sharpe > ``benchmark``) given an observed per-period ``sharpe`` over ``n_obs``
    periods; ``kurtosis`` is the plain (non-excess) fourth standardised moment."""
    if n_obs < 2 or not math.isfinite(sharpe):
        return math.nan
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if not denom > 0:
        return math.nan
    return _norm_cdf((sharpe - benchmark) * math.sqrt(n_obs - 1.0) / math.sqrt(denom))


@dataclass(frozen=True)
class DSRResult:
    """Deflated Sharpe ratio of a selected trial and the numbers it was computed from."""

    dsr: float  # probability in [0, 1]
    sharpe: float  # the winner's per-period Sharpe ratio
    sharpe_benchmark: float  # expected max Sharpe of n_trials skill-less trials (SR0)
    n_trials: int
    n_obs: int
    skew: float
    kurtosis: float
    sharpe_variance: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def deflated_sharpe_ratio(
    returns: np.ndarray, n_trials: int, *, sharpe_variance: float | None = None, trial_sharpes: np.ndarray | None = None
) -> DSRResult:
    """Deflated Sharpe ratio of the selected trial's per-period returns.

    Args:
        returns: the winner's per-period returns (NaN ignored).
        n_trials: how many configurations were tried (independent trials).
        sharpe_variance: variance of the trials' per-period Sharpe ratios; or
        trial_sharpes: the trials' Sharpe ratios, whose variance (ddof 1) is used.

    Returns:
        :class:`DSRResult`; ``dsr`` is NaN when the returns have < 2 values or no spread.

    Example:
        >>> deflated_sharpe_ratio(daily_returns, n_trials=100, trial_sharpes=sharpes).dsr
    """
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if sharpe_variance is None:
        if trial_sharpes is None:
            raise ValueError("give sharpe_variance or trial_sharpes (the Sharpe ratio of every trial)")
        s = np.asarray(trial_sharpes, dtype=np.float64)
        s = s[np.isfinite(s)]
        sharpe_variance = float(s.var(ddof=1)) if s.size > 1 else 0.0
    sr = sharpe_ratio(r)
    if r.size > 2 and r.std() > 0:
        z = (r - r.mean()) / r.std()
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
    else:
        skew, kurt = 0.0, 3.0
    sr0 = expected_max_sharpe(int(n_trials), float(sharpe_variance))
    dsr = probabilistic_sharpe_ratio(sr, sr0, int(r.size), skew, kurt)
    return DSRResult(
        dsr=dsr,
        sharpe=sr,
        sharpe_benchmark=sr0,
        n_trials=int(n_trials),
        n_obs=int(r.size),
        skew=skew,
        kurtosis=kurt,
        sharpe_variance=float(sharpe_variance),
    )


@dataclass(frozen=True)
class PBOResult:
    """Probability of backtest overfitting and its ingredients."""

    pbo: float  # share of splits whose in-sample best trial ranks at or below the OOS median
    n_splits: int  # number of in-sample / out-of-sample combinations evaluated
    n_blocks: int
    n_trials: int
    logits: np.ndarray  # one relative-rank logit per split (<= 0: below the median)

    def to_dict(self) -> dict:
        return {
            "pbo": self.pbo,
            "n_splits": self.n_splits,
            "n_blocks": self.n_blocks,
            "n_trials": self.n_trials,
            "logit_median": float(np.median(self.logits)) if self.logits.size else None,
        }


def _block_sharpe(s1: np.ndarray, s2: np.ndarray, n: np.ndarray) -> np.ndarray:
    mean = s1 / n
    var = (s2 - n * mean * mean) / np.maximum(n - 1, 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # No spread: rank by the sign of the mean (a flat positive series beats a flat zero one).
        return np.where(sd > 1e-15, mean / sd, np.sign(mean) * 1e12)


def pbo_cscv(returns: np.ndarray, n_blocks: int = 16, *, max_splits: int | None = None, seed: int = 0) -> PBOResult:
    """Probability of backtest overfitting by CSCV.

    The rows (periods) are cut into ``n_blocks`` contiguous blocks of equal size (leftover rows
    at the end are dropped). For every way of choosing half the blocks as in-sample, the trial
    with the best in-sample Sharpe ratio is found and its out-of-sample Sharpe rank ``r`` among
    all ``N`` trials becomes ``w = r / (N + 1)`` and the logit ``log(w / (1 - w))``. PBO is the share
    of splits with logit <= 0.

    Args:
        returns: ``(n_periods, n_trials)`` per-period returns (NaN counts as 0: no position).
        n_blocks: even number of blocks ``S``; there are ``C(S, S/2)`` splits.
        max_splits: evaluate a seeded random subset of splits when there are more.
        seed: for that subset.

    Raises:
        ValueError: fewer than 2 trials, an odd ``n_blocks``, or fewer periods than blocks.
    """
    m = np.nan_to_num(np.asarray(returns, dtype=np.float64), nan=0.0)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"expected a (periods x trials) matrix with at least 2 trials; got shape {m.shape}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even number >= 2; got {n_blocks}")
    t, n_trials = m.shape
    if t < n_blocks:
        raise ValueError(f"{t} periods cannot be cut into {n_blocks} blocks; use shorter periods or fewer blocks")
    size = t // n_blocks
    blocks = m[: size * n_blocks].reshape(n_blocks, size, n_trials)
    s1 = blocks.sum(axis=1)  # (S, N)
    s2 = (blocks * blocks).sum(axis=1)
    combos = list(itertools.combinations(range(n_blocks), n_blocks // 2))
    if max_splits is not None and len(combos) > max_splits:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(combos), size=max_splits, replace=False)
        combos = [combos[i] for i in np.sort(pick)]
    is_mask = np.zeros((len(combos), n_blocks), dtype=np.float64)
    for k, c in enumerate(combos):
        is_mask[k, list(c)] = 1.0
    oos_mask = 1.0 - is_mask
    n_is = is_mask.sum(axis=1, keepdims=True) * size
    n_oos = oos_mask.sum(axis=1, keepdims=True) * size
    sr_is = _block_sharpe(is_mask @ s1, is_mask @ s2, n_is)  # (splits, N)
    sr_oos = _block_sharpe(oos_mask @ s1, oos_mask @ s2, n_oos)
    best = np.argmax(sr_is, axis=1)
    chosen = sr_oos[np.arange(len(combos)), best]
    # Rank 1 = worst .. N = best; ties share the average rank.
    below = (sr_oos < chosen[:, None]).sum(axis=1)
    equal = (sr_oos == chosen[:, None]).sum(axis=1)
    rank = below + (equal + 1) / 2.0
    w = rank / (n_trials + 1.0)
    logits = np.log(w / (1.0 - w))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)), n_splits=len(combos), n_blocks=n_blocks, n_trials=n_trials, logits=logits
    )


def per_period_returns(
    ts_ms: np.ndarray, returns: np.ndarray, start_ms: int, end_ms: int, period_ms: int
) -> np.ndarray:
    """Sum of signal returns per period on a fixed grid ``[start_ms, end_ms)``.

    Each signal counts in the period of its timestamp with an equal stake; periods with no
    signal are 0, so every trial of a study lands on the same grid and can be compared.
    """
    if period_ms <= 0 or end_ms <= start_ms:
        raise ValueError(f"need period_ms > 0 and end_ms > start_ms; got {period_ms}, {start_ms}..{end_ms}")
    n = int(math.ceil((end_ms - start_ms) / period_ms))
    ts = np.asarray(ts_ms, dtype=np.int64)
    r = np.asarray(returns, dtype=np.float64)
    ok = np.isfinite(r) & (ts >= start_ms) & (ts < end_ms)
    idx = (ts[ok] - start_ms) // period_ms
    return np.bincount(idx, weights=r[ok], minlength=n)[:n].astype(np.float64)
