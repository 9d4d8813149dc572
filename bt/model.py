"""The whale-event model: config, purged time splits, training, threshold choice, evaluation.

A model sits between whale events and signals (docs/spec.md §3): the event's features go to a LightGBM
binary classifier and the signal is ``prob >= threshold``. Everything here is a pure function of
arrays (an :class:`EventTable`); the lake, MLflow and Optuna live in other modules.

Honesty rules enforced by construction:

* splits are by time, and every event of an earlier split whose outcome window (trigger to exit)
  reaches the next split's start, or lies within the purge gap before it, is dropped;
* the threshold is chosen on validation predictions only;
* test metrics are computed once, by :func:`evaluate_test`, for the chosen threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bt.config import (
    ModelConfig,
    SplitConfig,
    ThresholdConfig,
)

__all__ = [
    "EventTable",
    "Splits",
    "purged_splits",
    "train_booster",
    "ThresholdChoice",
    "choose_threshold",
    "threshold_curve",
    "independent_counts",
    "ValidationResult",
    "fit_validate",
    "evaluate_test",
    "ModelResult",
    "train_and_evaluate",
    "objective_value",
    "event_table",
    "outcome_kwargs",
    "events_frame_table",
    "ModelVerdict",
    "apply_model",
]

# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventTable:
    """Whale events with what a model needs, oldest first.

    Attributes:
        ts_ms: trigger time of each event.
        end_ts_ms: end of its outcome window (the exit trade's time).
        X: ``(n, k)`` features in the order of ``feature_names``.
        net_return: return after costs (docs/spec.md §3).
        label: gross return >= the label threshold.
        feature_names: column names of ``X``.
    """

    ts_ms: np.ndarray
    end_ts_ms: np.ndarray
    X: np.ndarray
    net_return: np.ndarray
    label: np.ndarray
    feature_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.ts_ms.shape[0]
        for name in ("end_ts_ms", "net_return", "label"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows, ts_ms has {n}")
        if self.X.shape != (n, len(self.feature_names)):
            raise ValueError(f"X has shape {self.X.shape}; expected ({n}, {len(self.feature_names)})")
        if n > 1 and np.any(np.diff(self.ts_ms) < 0):
            raise ValueError("events must be sorted by ts_ms")
        if np.any(self.end_ts_ms < self.ts_ms):
            raise ValueError("an outcome window ends before its trigger (end_ts_ms < ts_ms)")

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, idx: np.ndarray) -> "EventTable":
        return EventTable(
            self.ts_ms[idx], self.end_ts_ms[idx], self.X[idx], self.net_return[idx], self.label[idx], self.feature_names
        )

    def select_features(self, names: Sequence[str]) -> "EventTable":
        if tuple(names) == self.feature_names:
            return self
        cols = []
        for n in names:
            if n not in self.feature_names:
                raise ValueError(f"feature {n!r} is not in the event table; have {list(self.feature_names)}")
            cols.append(self.feature_names.index(n))
        return EventTable(
            self.ts_ms, self.end_ts_ms, np.ascontiguousarray(self.X[:, cols]), self.net_return, self.label, tuple(names)
        )


# --- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """Index arrays into an :class:`EventTable` and the time boundaries they came from.

    ``folds`` holds (train, validation) pairs for walk-forward; with a single split it is
    ``[(train, validation)]``. ``validation`` is the union of the folds' validation sets.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    boundaries_ms: dict[str, int]
    purge_ms: int
    n_purged: int


def _purged(ts: np.ndarray, end: np.ndarray, lo: int, hi: int, purge_ms: int) -> np.ndarray:
    """Events triggered in ``[lo, hi)`` whose outcome is known before ``hi`` and that trigger at
    least ``purge_ms`` before it."""
    return np.flatnonzero((ts >= lo) & (ts < hi) & (end < hi) & (ts < hi - purge_ms))


def split_test_start_ms(span_ms: tuple[int, int], split) -> int:
    """Where the test period of ``span_ms`` starts: after the train and validation shares of it
    (:func:`purged_splits`; a sweep keeps its trials before it)."""
    return int(span_ms[0]) + int(round((split.train + split.validation) * (int(span_ms[1]) - int(span_ms[0]))))


def purged_splits(
    ts_ms: np.ndarray, end_ts_ms: np.ndarray, split: SplitConfig, *, span_ms: tuple[int, int], horizon_ms: int
) -> Splits:
    """Time-ordered train / validation / test indices with purge gaps.

    Args:
        ts_ms, end_ts_ms: trigger times and outcome-window ends of the events (sorted by trigger).
        split: fractions of the span and walk-forward settings.
        span_ms: ``[start, end)`` of the data the events come from; boundaries are fractions of it,
            so every whale rule of a sweep is split at the same instants.
        horizon_ms: the signal horizon; the purge gap is at least this long.

    Returns:
        :class:`Splits`. No event of an earlier part has ``end_ts_ms`` at or after the start of a
        later part, nor triggers within the purge gap before it.
    """
    from datasets.durations import parse_duration_ms

    ts = np.asarray(ts_ms, dtype=np.int64)
    end = np.asarray(end_ts_ms, dtype=np.int64)
    start_ms, stop_ms = int(span_ms[0]), int(span_ms[1])
    if stop_ms <= start_ms:
        raise ValueError(f"empty data span {start_ms}..{stop_ms}")
    purge_ms = max(int(horizon_ms), parse_duration_ms(split.purge) if split.purge else 0)
    length = stop_ms - start_ms
    t_val = start_ms + int(round(split.train * length))
    t_test = split_test_start_ms((start_ms, stop_ms), split)
    test = np.flatnonzero(ts >= t_test)
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    if split.walk_forward >= 2:
        # Cut [start, t_test) into k + 1 chunks; fold j validates on chunk j + 1.
        k = split.walk_forward
        edges = [start_ms + int(round(i * (t_test - start_ms) / (k + 1))) for i in range(k + 2)]
        for j in range(k):
            lo = edges[0] if split.window == "expanding" else edges[j]
            tr = _purged(ts, end, lo, edges[j + 1], purge_ms)
            va = _purged(ts, end, edges[j + 1], edges[j + 2], purge_ms)
            folds.append((tr, va))
        train = folds[-1][0]
        validation = np.unique(np.concatenate([f[1] for f in folds]))
        bounds = {"start": start_ms, "validation": edges[1], "test": t_test, "end": stop_ms}
    else:
        train = _purged(ts, end, start_ms, t_val, purge_ms)
        validation = _purged(ts, end, t_val, t_test, purge_ms)
        folds.append((train, validation))
        bounds = {"start": start_ms, "validation": t_val, "test": t_test, "end": stop_ms}
    used = np.zeros(ts.shape[0], dtype=bool)
    for tr, va in folds:
        used[tr] = True
        used[va] = True
    used[test] = True
    return Splits(train, validation, test, folds, bounds, purge_ms, int((~used).sum()))


# --- training ---------------------------------------------------------------------------------


def train_booster(X: np.ndarray, y: np.ndarray, cfg: ModelConfig, *, seed: int | None = None, num_threads: int = 1):
    """Train a LightGBM binary classifier on ``X, y`` with the config's params and imbalance rule.

    ``downsample`` keeps each negative with probability ``neg_keep`` (seeded): the probabilities
    shift up, which the threshold, chosen afterwards on validation, absorbs.
    """
    import lightgbm as lgb

    seed = cfg.seed if seed is None else seed
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    weight = None
    imb = cfg.imbalance
    if imb.method == "downsample":
        rng = np.random.default_rng(seed)
        keep = (y > 0) | (rng.random(y.shape[0]) < imb.neg_keep)
        X, y = X[keep], y[keep]
    elif imb.method == "class_weight":
        n_pos = float(y.sum())
        n_neg = float(y.shape[0] - n_pos)
        if n_pos > 0 and n_neg > 0:
            weight = np.where(y > 0, y.shape[0] / (2 * n_pos), y.shape[0] / (2 * n_neg))
    params = cfg.lgbm_params()
    rounds = int(params.pop("num_boost_round"))
    params.update(
        objective="binary", verbose=-1, seed=seed, num_threads=num_threads, deterministic=True, force_row_wise=True
    )
    if y.size == 0:
        raise ValueError(
            "no training events left (after purging and down-sampling); widen the "
            "data span, loosen the whale rule or raise imbalance.neg_keep"
        )
    ds = lgb.Dataset(X, y, weight=weight, free_raw_data=True, params={"verbose": -1})
    return lgb.train(params, ds, num_boost_round=rounds)


# --- threshold --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold, the rule that chose it and what it gives on validation."""

    threshold: float
    rule: str  # which policy or fall-back decided
    n_signals: int
    precision: float | None
    mean_return: float | None
    n_independent: int = 0  # clusters of overlapping outcome windows among the selected events
    feasible: bool = True  # False: a ``fixed`` threshold keeps fewer than ``min_signals`` independent


def _candidate_stats(prob: np.ndarray, ret: np.ndarray, label: np.ndarray, grid: np.ndarray):
    order = np.argsort(-prob, kind="stable")
    p_sorted = prob[order]
    csum_r = np.concatenate([[0.0], np.cumsum(ret[order])])
    csum_l = np.concatenate([[0.0], np.cumsum(label[order].astype(np.float64))])
    # number of events with prob >= t: p_sorted is descending, so count via the negated search.
    counts = np.searchsorted(-p_sorted, -grid, side="right")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = csum_r[counts] / counts
        prec = csum_l[counts] / counts
    return counts, mean, prec


def _windows(n: int, ts_ms, end_ts_ms, window_ms) -> tuple[np.ndarray, np.ndarray] | None:
    """``(start, end)`` outcome windows of the events, or None (every event counts as its own)."""
    if ts_ms is None:
        if end_ts_ms is not None or window_ms is not None:
            raise ValueError("outcome windows need the events' trigger times (ts_ms)")
        return None
    start = np.asarray(ts_ms, dtype=np.int64)
    if end_ts_ms is not None:
        end = np.asarray(end_ts_ms, dtype=np.int64)
    elif window_ms is not None:
        if int(window_ms) < 0:
            raise ValueError(f"window_ms must be >= 0 (entry latency + horizon); got {window_ms}")
        end = start + int(window_ms)
    else:
        raise ValueError("pass end_ts_ms (the exit times) or window_ms (entry latency + horizon) with ts_ms")
    if start.shape != (n,) or end.shape != (n,):
        raise ValueError(f"ts_ms and end_ts_ms need one value per event ({n}); got {start.shape} and {end.shape}")
    return start, end


def independent_counts(
    prob: np.ndarray, start_ts_ms: np.ndarray, end_ts_ms: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """Independent signals (clusters of overlapping ``[start, end]`` windows) kept by each threshold.

    For each candidate ``t`` of ``grid`` the events with ``prob >= t`` are clustered as
    :func:`bt.metrics.signal_clusters` does (a signal joins the running cluster when it starts at
    or before the latest end so far). Events are ordered by start once; each candidate is one
    linear pass, so the whole grid costs O(n log n + n * len(grid)).
    """
    prob = np.asarray(prob, dtype=np.float64)
    order = np.argsort(np.asarray(start_ts_ms, dtype=np.int64), kind="stable")
    s = np.asarray(start_ts_ms, dtype=np.int64)[order]
    e = np.asarray(end_ts_ms, dtype=np.int64)[order]
    p = prob[order]
    out = np.zeros(len(grid), dtype=np.int64)
    for j, t in enumerate(grid):
        m = p >= t
        if not m.any():
            continue
        ss, ee = s[m], e[m]
        reach = np.maximum.accumulate(ee)
        out[j] = 1 + int(np.count_nonzero(ss[1:] > reach[:-1]))
    return out


def _curve(prob, ret, lab, grid, win) -> dict[str, np.ndarray]:
    counts, mean, prec = _candidate_stats(prob, ret, lab, grid)
    ind = counts if win is None else independent_counts(prob, win[0], win[1], grid)
    return {"threshold": grid, "n_signals": counts, "n_independent": ind, "mean_return": mean, "precision": prec}


def threshold_curve(
    prob: np.ndarray,
    net_return: np.ndarray,
    label: np.ndarray,
    step: float,
    *,
    ts_ms: np.ndarray | None = None,
    end_ts_ms: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What each candidate threshold of :func:`choose_threshold` keeps on validation.

    Arrays over the grid ``step, 2 * step, ... < 1``: ``threshold``, ``n_signals``,
    ``n_independent`` (clusters of overlapping ``[ts_ms, end_ts_ms]`` windows), ``mean_return``
    and ``precision`` (NaN where nothing is kept), the numbers the policies choose from.
    """
    prob = np.asarray(prob, dtype=np.float64)
    grid = np.round(np.arange(step, 1.0 - 1e-12, step), 10)
    win = _windows(prob.shape[0], ts_ms, end_ts_ms, None)
    return _curve(prob, np.asarray(net_return, dtype=np.float64), np.asarray(label, dtype=bool), grid, win)


def choose_threshold(
    prob: np.ndarray,
    net_return: np.ndarray,
    label: np.ndarray,
    cfg: ThresholdConfig,
    *,
    ts_ms: np.ndarray | None = None,
    end_ts_ms: np.ndarray | None = None,
    window_ms: int | None = None,
) -> ThresholdChoice:
    """Pick the decision threshold from validation predictions only.

    Candidates are the grid ``step, 2 * step, ... < 1``. ``min_signals`` counts **independent**
    signals: the selected events are clustered by their outcome windows ``[ts_ms, end_ts_ms]``
    (the real exit times) or ``[ts_ms, ts_ms + window_ms]`` (entry latency + horizon), and a
    chain of overlapping windows counts once. Without ``ts_ms`` every event counts as its own.
    Policies:

    * ``precision_target`` (the seed system's): the highest mean return among candidates whose
      precision reaches ``precision_target`` with at least ``min_signals`` independent signals.
      Fall-backs, in order: (1) ``max_mean_return`` when no candidate reaches the target;
      (2) ``take_all`` (threshold 0: every whale event) when no candidate has ``min_signals``.
    * ``max_mean_return``: the highest mean return with at least ``min_signals`` independent
      signals (fall-back ``take_all``).
    * ``top_fraction``: the largest candidate that lets at least ``fraction`` of the events
      through and keeps at least ``min_signals`` independent signals (fall-back ``take_all``).
    * ``fixed``: ``value``, always; when it keeps fewer than ``min_signals`` independent signals
      the rule is ``fixed:below_min_signals`` and ``feasible`` is False (a sweep prunes the trial).

    Ties go to the lower threshold (more signals). ``rule`` records which branch decided.
    """
    prob = np.asarray(prob, dtype=np.float64)
    ret = np.asarray(net_return, dtype=np.float64)
    lab = np.asarray(label, dtype=bool)
    if ret.shape != prob.shape or lab.shape != prob.shape:
        raise ValueError(f"prob, net_return and label need the same length; got {prob.shape}, {ret.shape}, {lab.shape}")
    win = _windows(prob.shape[0], ts_ms, end_ts_ms, window_ms)
    grid = np.round(np.arange(cfg.step, 1.0 - 1e-12, cfg.step), 10)

    def n_ind(t: float) -> int:
        sel = prob >= t
        if win is None:
            return int(sel.sum())
        return int(independent_counts(prob, win[0], win[1], np.array([t]))[0])

    def result(t: float, rule: str, feasible: bool = True) -> ThresholdChoice:
        sel = prob >= t
        n = int(sel.sum())
        return ThresholdChoice(
            float(t),
            rule,
            n,
            float(lab[sel].mean()) if n else None,
            float(ret[sel].mean()) if n else None,
            n_ind(t),
            feasible,
        )

    if cfg.policy == "fixed":
        fits = n_ind(cfg.value) >= cfg.min_signals
        return result(cfg.value, "fixed" if fits else "fixed:below_min_signals", fits)
    if prob.size == 0:
        return result(0.0, "take_all:no_validation_events")
    curve = _curve(prob, ret, lab, grid, win)
    counts, mean, prec, ind = curve["n_signals"], curve["mean_return"], curve["precision"], curve["n_independent"]
    enough = ind >= cfg.min_signals
    if cfg.policy == "top_fraction":
        ok = enough & (counts >= math.ceil(cfg.fraction * prob.size))
        if ok.any():
            return result(grid[np.flatnonzero(ok)[-1]], "top_fraction")
        return result(0.0, "top_fraction:fallback:take_all")
    if cfg.policy == "precision_target":
        ok = enough & (prec >= cfg.precision_target)
        if ok.any():
            best = np.flatnonzero(ok)[np.argmax(mean[ok])]
            return result(grid[best], "precision_target")
        rule_prefix = "fallback:"
    else:
        rule_prefix = ""
    if enough.any():
        best = np.flatnonzero(enough)[np.argmax(mean[enough])]
        return result(grid[best], rule_prefix + "max_mean_return")
    return result(0.0, rule_prefix + "take_all")


# --- validation and test ----------------------------------------------------------------------


def objective_value(
    returns: np.ndarray, ts_ms: np.ndarray, kind: str, *, span_ms: tuple[int, int], period_ms: int
) -> float:
    """The sweep's objective over the selected validation signals (NaN when there are none)."""
    from bt.overfit import per_period_returns, sharpe_ratio

    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return math.nan
    if kind == "mean_return":
        return float(r.mean())
    if kind == "sum_return":
        return float(r.sum())
    return sharpe_ratio(per_period_returns(ts_ms, r, span_ms[0], span_ms[1], period_ms))


@dataclass
class ValidationResult:
    """What training plus threshold choice gives on validation (no test data involved)."""

    booster: Any  # the model used for test: last fold's, or refit on train + validation
    threshold: ThresholdChoice
    val_idx: np.ndarray  # into the event table
    val_prob: np.ndarray  # out-of-fold probabilities
    fold_values: list[float]  # objective per fold, for pruning
    value: float  # objective on the pooled validation signals
    val_span_ms: tuple[int, int]
    period_returns: np.ndarray  # per-period returns of the selected validation signals
    train_idx: np.ndarray | None = None  # rows the final booster was fitted on (lineage)

    def metrics(self, table: EventTable) -> dict:
        sel = self.val_prob >= self.threshold.threshold
        r = table.net_return[self.val_idx][sel]
        return {
            "val_n_events": int(self.val_idx.size),
            "val_n_signals": int(sel.sum()),
            "val_n_independent": int(self.threshold.n_independent),
            "val_mean_return": float(r.mean()) if r.size else None,
            "val_precision": float(table.label[self.val_idx][sel].mean()) if r.size else None,
            "val_objective": None if math.isnan(self.value) else self.value,
            "threshold": self.threshold.threshold,
            "threshold_rule": self.threshold.rule,
        }


def fit_validate(
    table: EventTable, splits: Splits, cfg: ModelConfig, *, refit: bool | None = None, on_fold=None
) -> ValidationResult:
    """Train on each fold, pool the out-of-fold validation predictions, choose the threshold.

    Args:
        table: events (only the train and validation rows are read).
        splits: from :func:`purged_splits`.
        cfg: the model config.
        refit: train the final model on train + validation (default: with walk-forward only).
        on_fold: ``callback(fold_index, objective_so_far)``; it may raise (Optuna pruning).
    """
    from bt.overfit import per_period_returns
    from signals.trees_nb import ensemble_from_booster, predict_proba

    if cfg.features:
        table = table.select_features(cfg.features)
    probs, idxs, fold_values = [], [], []
    booster = None
    for j, (tr, va) in enumerate(splits.folds):
        booster = train_booster(table.X[tr], table.label[tr], cfg)
        p = predict_proba(ensemble_from_booster(booster), table.X[va]) if va.size else np.empty(0)
        probs.append(p)
        idxs.append(va)
        if on_fold is not None and len(splits.folds) > 1:
            pooled_p, pooled_i = np.concatenate(probs), np.concatenate(idxs)
            ch = choose_threshold(
                pooled_p,
                table.net_return[pooled_i],
                table.label[pooled_i],
                cfg.threshold,
                ts_ms=table.ts_ms[pooled_i],
                end_ts_ms=table.end_ts_ms[pooled_i],
            )
            sel = pooled_i[pooled_p >= ch.threshold]
            v = objective_value(
                table.net_return[sel],
                table.ts_ms[sel],
                cfg.objective,
                span_ms=(splits.boundaries_ms["validation"], splits.boundaries_ms["test"]),
                period_ms=cfg.period_ms,
            )
            fold_values.append(v)
            on_fold(j, v)
    val_prob = np.concatenate(probs) if probs else np.empty(0)
    val_idx = np.concatenate(idxs) if idxs else np.empty(0, np.int64)
    order = np.argsort(val_idx, kind="stable")
    val_prob, val_idx = val_prob[order], val_idx[order]
    choice = choose_threshold(
        val_prob,
        table.net_return[val_idx],
        table.label[val_idx],
        cfg.threshold,
        ts_ms=table.ts_ms[val_idx],
        end_ts_ms=table.end_ts_ms[val_idx],
    )
    sel = val_idx[val_prob >= choice.threshold]
    span = (splits.boundaries_ms["validation"], splits.boundaries_ms["test"])
    value = objective_value(
        table.net_return[sel], table.ts_ms[sel], cfg.objective, span_ms=span, period_ms=cfg.period_ms
    )
    if refit is None:
        refit = len(splits.folds) > 1
    train_idx = splits.folds[-1][0] if splits.folds else np.empty(0, np.int64)
    if refit:
        both = np.union1d(splits.train, splits.validation)
        # Keep the purge before test: only events whose outcome is known before it.
        both = both[
            (table.end_ts_ms[both] < splits.boundaries_ms["test"])
            & (table.ts_ms[both] < splits.boundaries_ms["test"] - splits.purge_ms)
        ]
        booster = train_booster(table.X[both], table.label[both], cfg)
        train_idx = both
    pr = per_period_returns(table.ts_ms[sel], table.net_return[sel], span[0], span[1], cfg.period_ms)
    return ValidationResult(booster, choice, val_idx, val_prob, fold_values, value, span, pr, train_idx)


@dataclass
class ModelResult:
    """A trained model with its validation choice and its one test evaluation."""

    config: ModelConfig
    splits: Splits
    validation: ValidationResult
    test_prob: np.ndarray
    test_signal: np.ndarray  # bool per test event: prob >= threshold
    metrics: dict = field(default_factory=dict)

    @property
    def booster(self):
        return self.validation.booster

    @property
    def threshold(self) -> float:
        return self.validation.threshold.threshold


def evaluate_test(
    table: EventTable,
    splits: Splits,
    cfg: ModelConfig,
    val: ValidationResult,
    *,
    n_trials: int = 1,
    trial_sharpes: np.ndarray | None = None,
    n_boot: int = 2000,
) -> ModelResult:
    """Score the test events once with the chosen model and threshold.

    Metrics (``test_*``) follow docs/spec.md §4 via :func:`bt.metrics.event_metrics`, plus the plain
    whale rule on the same test events (``baseline_*``: every event is a signal) and the
    deflated Sharpe ratio of the test per-period returns given ``n_trials``.
    """
    from bt.metrics import event_metrics
    from bt.overfit import deflated_sharpe_ratio, per_period_returns, sharpe_ratio
    from signals.trees_nb import ensemble_from_booster, predict_proba

    if cfg.features:
        table = table.select_features(cfg.features)
    te = splits.test
    prob = predict_proba(ensemble_from_booster(val.booster), table.X[te]) if te.size else np.empty(0)
    sig = prob >= val.threshold.threshold
    r, lab, ts = table.net_return[te], table.label[te], table.ts_ms[te]
    span = (splits.boundaries_ms["test"], splits.boundaries_ms["end"])
    from bt.metrics import signal_clusters

    cl = signal_clusters(ts[sig], table.end_ts_ms[te][sig])
    m = {f"test_{k}": v for k, v in event_metrics(r[sig], lab[sig], cluster=cl, n_boot=n_boot, seed=cfg.seed).items()}
    m.update(
        {
            f"baseline_{k}": v
            for k, v in event_metrics(r, lab, n_boot=0).items()
            if k in ("n_signals", "mean_return", "precision", "win_rate")
        }
    )
    pr = per_period_returns(ts[sig], r[sig], span[0], span[1], cfg.period_ms)
    if trial_sharpes is None:
        trial_sharpes = np.array([sharpe_ratio(pr)])
    dsr = deflated_sharpe_ratio(pr, n_trials, trial_sharpes=trial_sharpes)
    m.update(
        {
            "test_sharpe_per_period": None if math.isnan(dsr.sharpe) else dsr.sharpe,
            "dsr": None if math.isnan(dsr.dsr) else dsr.dsr,
            "n_trials": int(n_trials),
            "test_n_events": int(te.size),
            "n_purged": splits.n_purged,
            "purge_ms": splits.purge_ms,
            "boundaries_ms": dict(splits.boundaries_ms),
        }
    )
    m.update(val.metrics(table))
    return ModelResult(cfg, splits, val, prob, sig, m)


def train_and_evaluate(
    table: EventTable, cfg: ModelConfig, *, span_ms: tuple[int, int], horizon_ms: int, n_boot: int = 2000
) -> ModelResult:
    """Split, train, choose the threshold on validation, evaluate test once (``bt run``)."""
    splits = purged_splits(table.ts_ms, table.end_ts_ms, cfg.split, span_ms=span_ms, horizon_ms=horizon_ms)
    if splits.train.size == 0:
        raise ValueError(
            f"no training events: {len(table)} whale events in the span, none before the validation "
            "boundary after purging; widen the data span or loosen the whale rule"
        )
    val = fit_validate(table, splits, cfg)
    return evaluate_test(table, splits, cfg, val, n_boot=n_boot)


# --- from trades and gold events --------------------------------------------------------------


def event_table(
    ts_ms: np.ndarray,
    price: np.ndarray,
    trigger_idx: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    *,
    horizon_ms: int,
    latency_ms: int = 0,
    fee: float = 0.0005,
    slippage: float = 0.0,
    label_threshold: float = 0.01,
    take_profit: float | None = None,
    stop_loss: float | None = None,
) -> tuple[EventTable, np.ndarray]:
    """Outcomes of whale events fired at ``trigger_idx`` of a trade series, as an EventTable.

    Entry, exit, costs and label follow docs/spec.md §3 (``bt.engine.event_study``). Events whose
    horizon runs past the data have no outcome and are left out; the returned mask says which
    of the input events are in the table.
    """
    from bt.engine import Costs, event_study

    idx = np.asarray(trigger_idx, dtype=np.int64)
    study = event_study(
        ts_ms,
        price,
        idx,
        horizons_ms=[int(horizon_ms)],
        latency_ms=int(latency_ms),
        costs=Costs(fee, slippage),
        label_threshold=label_threshold,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )
    net = study["net_return"].to_numpy(np.float64)
    keep = np.isfinite(net)
    trig_ts = np.asarray(ts_ms, dtype=np.int64)[idx]
    table = EventTable(
        trig_ts[keep],
        study["exit_ts_ms"].to_numpy(np.int64)[keep],
        np.ascontiguousarray(np.asarray(X, dtype=np.float64)[keep]),
        net[keep],
        study["label"].to_numpy(bool)[keep],
        tuple(feature_names),
    )
    return table, keep


def events_frame_table(events, ts_ms: np.ndarray, price: np.ndarray, config) -> tuple[EventTable, np.ndarray]:
    """EventTable of gold events (``f_<feature>`` columns, ``trade_idx``) under a run config."""
    from signals.features import FEATURE_NAMES

    missing = [f"f_{n}" for n in FEATURE_NAMES if f"f_{n}" not in events.columns]
    if missing:
        raise ValueError(f"gold events lack feature columns {missing[:3]}...; rebuild gold (the feature spec changed)")
    X = events[[f"f_{n}" for n in FEATURE_NAMES]].to_numpy(np.float64)
    b = config.backtest
    return event_table(
        ts_ms,
        price,
        events["trade_idx"].to_numpy(np.int64),
        X,
        FEATURE_NAMES,
        horizon_ms=b.horizon_ms,
        **outcome_kwargs(b),
    )


def outcome_kwargs(backtest) -> dict[str, Any]:
    """The ``backtest`` settings :func:`event_table` takes besides the horizon (costs as fractions)."""
    return {
        "latency_ms": backtest.entry_latency_ms,
        "fee": backtest.fee_bps / 1e4,
        "slippage": backtest.slippage_bps / 1e4,
        "label_threshold": backtest.label_threshold,
        "take_profit": backtest.take_profit,
        "stop_loss": backtest.stop_loss,
    }


@dataclass
class ModelVerdict:
    """The model's verdict on every whale event of a run.

    ``prob`` covers all events. With a model trained by the run, only events at or after
    ``oos_from_ms`` (the test boundary) are out of sample: a backtest must keep only those.
    """

    prob: np.ndarray
    threshold: float
    model_uri: str | None
    oos_from_ms: int | None
    metrics: dict
    result: ModelResult | None = None
    lineage: dict | None = None  # a registered model's lineage.json (None: trained here, or older model)
    threshold_curve: dict | None = None  # a model trained here: :func:`threshold_curve` on validation


def apply_model(config, events, span, *, bundle=None) -> ModelVerdict:
    """The ``bt run`` hook: train and evaluate (or load) the config's model, score every event.

    Args:
        config: a ``bt.config.RunConfig`` with a ``model`` section.
        events: gold events with ``f_<feature>`` columns and ``trade_idx`` into ``span``.
        span: the run's trades (``ts_ms``, ``price`` arrays).
        bundle: the loaded :class:`bt.registry.ModelBundle` of ``model.uri`` (required when the
            config names one; this module trains and scores, loading is the caller's).
    """
    from signals.features import FEATURE_NAMES
    from signals.trees_nb import ensemble_from_booster, predict_proba

    cfg = config.model
    X_all = events[[f"f_{n}" for n in FEATURE_NAMES]].to_numpy(np.float64)
    if cfg.uri:
        from signals import WhaleParams

        if bundle is None:
            raise ValueError(f"model {cfg.uri}: pass its bundle (bt.registry.load_bundle) to apply_model")
        trained = bundle.signal_config.get("whale")
        if trained is not None and WhaleParams.from_dict(trained) != config.signal.whale:
            raise ValueError(
                f"model {cfg.uri} was trained on whale events of {trained}, but the config's signal.whale "
                f"is {config.signal.whale.to_dict()}; use the model's rule (see its signal_config.json)"
            )
        prob = bundle.predict_matrix(X_all, FEATURE_NAMES)
        return ModelVerdict(
            prob,
            bundle.threshold,
            cfg.uri,
            None,
            {"model_uri": cfg.uri, "threshold": bundle.threshold},
            lineage=bundle.lineage,
        )
    if len(span) == 0:
        raise ValueError("no trades in the span; nothing to train on")
    table, _ = events_frame_table(events, span.ts_ms, span.price, config)
    span_ms = (int(span.ts_ms[0]), int(span.ts_ms[-1]) + 1)
    res = train_and_evaluate(
        table, cfg, span_ms=span_ms, horizon_ms=config.backtest.horizon_ms, n_boot=config.backtest.bootstrap
    )
    cols = [FEATURE_NAMES.index(n) for n in cfg.feature_names]
    prob = predict_proba(ensemble_from_booster(res.booster), X_all[:, cols]) if len(events) else np.empty(0)
    curve = _validation_curve(res, table, cfg.threshold.step)
    return ModelVerdict(prob, res.threshold, None, res.splits.boundaries_ms["test"], res.metrics, res, None, curve)


def _validation_curve(res, table: EventTable, step: float) -> dict[str, np.ndarray]:
    """Mean return and signal count vs threshold on the validation rows of a trained model."""
    val = res.validation
    return threshold_curve(
        val.val_prob,
        table.net_return[val.val_idx],
        table.label[val.val_idx],
        step,
        ts_ms=table.ts_ms[val.val_idx],
        end_ts_ms=table.end_ts_ms[val.val_idx],
    )


def pool_tables(tables: list[EventTable]) -> tuple[EventTable, np.ndarray]:
    """A universe's members' tables as one, in time order (ties: member order), and the member
    index of each row: what one model over the universe trains and validates on."""
    names = tables[0].feature_names
    member = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(tables)])
    ts = np.concatenate([t.ts_ms for t in tables])
    order = np.argsort(ts, kind="stable")
    table = EventTable(
        ts[order],
        np.concatenate([t.end_ts_ms for t in tables])[order],
        np.ascontiguousarray(np.concatenate([t.X for t in tables]).reshape(-1, len(names))[order]),
        np.concatenate([t.net_return for t in tables])[order],
        np.concatenate([t.label for t in tables])[order],
        names,
    )
    return table, member[order]


def train_pooled(config, events: list, tables: list[EventTable], span_ms: tuple[int, int]) -> list[ModelVerdict]:
    """One model over a universe: the members' tables pooled in time order (ties: member order).

    The purged time splits cut the pooled span at the same instants for every member; the
    returned verdicts score each member's ``events`` with that one model and threshold.
    """
    from signals.features import FEATURE_NAMES
    from signals.trees_nb import ensemble_from_booster, predict_proba

    cfg = config.model
    table, _ = pool_tables(tables)
    res = train_and_evaluate(
        table, cfg, span_ms=span_ms, horizon_ms=config.backtest.horizon_ms, n_boot=config.backtest.bootstrap
    )
    cols = [FEATURE_NAMES.index(n) for n in cfg.feature_names]
    ens = ensemble_from_booster(res.booster)
    curve = _validation_curve(res, table, cfg.threshold.step)
    out = []
    for ev in events:
        X_all = ev[[f"f_{n}" for n in FEATURE_NAMES]].to_numpy(np.float64)
        prob = predict_proba(ens, X_all[:, cols]) if len(ev) else np.empty(0)
        out.append(
            ModelVerdict(prob, res.threshold, None, res.splits.boundaries_ms["test"], res.metrics, res, None, curve)
        )
    return out
