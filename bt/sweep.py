"""Optuna sweeps over whale rule, horizon, LightGBM params and threshold policy.

Separated as Optuna separates them: *what* to search (:class:`SearchSpace`, from the config's
``model.sweep`` section), *how* (:func:`make_sampler`, :func:`make_pruner`), *where* results go
(the storage URL: ``sqlite:///results/optuna.db`` by default, PostgreSQL for several workers).
The objective does no I/O: trades are loaded once, kernel features are cached per whale rule and
outcomes per (whale rule, horizon), so a trial costs one model fit plus scoring. The objective only
sees events that end before the test boundary; the winner is evaluated on test once, afterwards.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from whalebt.cli import UserError
from bt.config import ModelConfig, parse_model_config
from bt.model import (
    EventTable,
    event_table,
    evaluate_test,
    fit_validate,
    outcome_kwargs,
    purged_splits,
    split_test_start_ms,
)
from bt.space import Dist, SearchSpace, parse_space

__all__ = [
    "Dist",
    "SearchSpace",
    "parse_space",
    "TrialSpec",
    "suggest",
    "make_sampler",
    "make_pruner",
    "open_storage",
    "FeatureCache",
    "UniverseFeatureCache",
    "make_objective",
    "SweepSummary",
    "summarize",
    "run_sweep",
    "DEFAULT_STORAGE",
    "signal_config_of",
    "winner_config",
    "sweep_command",
]

DEFAULT_STORAGE = "sqlite:///results/optuna.db"
#: ``bt sweep --register``: register the winner always, only if it passes ``model.gate``, or never.
REGISTER_MODES = ("passing", "always", "never")


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial evaluates: a whale rule, a horizon and a model config."""

    whale: dict
    horizon_ms: int
    model: ModelConfig


def suggest(trial, space: SearchSpace, base_model: ModelConfig, base_whale: dict, base_horizon_ms: int) -> TrialSpec:
    """Sample a :class:`TrialSpec` (``trial`` may be an Optuna ``FixedTrial`` to replay params)."""
    from datasets.durations import parse_duration_ms
    from signals import WhaleParams

    whale = dict(base_whale)
    for k, d in space.whale.items():
        whale[k] = d.sample(trial, f"whale.{k}")
    whale = WhaleParams.from_dict(whale).to_dict()
    horizon_ms = base_horizon_ms
    if space.horizon is not None:
        horizon_ms = parse_duration_ms(space.horizon.sample(trial, "horizon"))
    upd: dict[str, Any] = {
        "lgbm": {**base_model.lgbm, **{k: d.sample(trial, f"lgbm.{k}") for k, d in space.lgbm.items()}}
    }
    for sec in ("threshold", "imbalance"):
        vals = {k: d.sample(trial, f"{sec}.{k}") for k, d in getattr(space, sec).items()}
        if vals:
            upd[sec] = getattr(base_model, sec).model_copy(update=vals)
    model = parse_model_config(
        {
            **base_model.model_dump(),
            **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in upd.items()},
            "sweep": None,
        }
    )
    return TrialSpec(whale, int(horizon_ms), model)


def make_sampler(kind: str, seed: int, *, distributed: bool = False):
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, constant_liar=distributed)


def open_storage(url: str | None, attempts: int = 8):
    """Optuna RDB storage for ``url`` (None: in memory).

    Workers started together on a fresh database race to create Optuna's tables; the loser
    sees "already exists" and simply retries against the now complete schema.
    """
    import optuna

    from datasets._retry import retry

    if not url:
        return None

    class _Race(Exception):
        pass

    def open_once():
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # sqlalchemy raises driver-specific types
            text = str(exc)
            if "already exists" in text or "duplicate" in text.lower() or "UniqueViolation" in text:
                raise _Race(text) from None
            raise UserError(f"cannot open Optuna storage {url}: {text.splitlines()[0]}") from None

    try:
        return retry(open_once, retries=attempts - 1, delay=lambda i, _: 0.25 * (i + 1), retry_on=(_Race,))
    except _Race as exc:
        raise UserError(f"cannot open Optuna storage {url}: {str(exc).splitlines()[0]}") from None


def make_pruner(kind: str):
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


# --- the feature cache ------------------------------------------------------------------------


class FeatureCache:
    """Kernel events per whale rule and outcomes per (rule, horizon) over one trade series.

    Thread-safe (one lock per key), so Optuna's threaded ``n_jobs`` shares it.
    """

    def __init__(self, ts_ms, price, qty, side, *, backtest, span_ms: tuple[int, int], test_start_ms: int):
        self.ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
        self.price = np.ascontiguousarray(price, dtype=np.float64)
        self.qty = np.ascontiguousarray(qty, dtype=np.float64)
        self.side = np.ascontiguousarray(side, dtype=np.int8)
        self.backtest = backtest
        self.span_ms = span_ms
        self.test_start_ms = int(test_start_ms)
        self._events: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tables: dict[tuple[str, int], EventTable] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lock(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def events(self, whale: dict) -> tuple[np.ndarray, np.ndarray]:
        """(trade indices, feature rows) of the whale events of ``whale``."""
        from signals import WhaleParams, run_batch
        from signals.journal import canonical_json

        key = canonical_json(whale)
        with self._lock(key):
            if key not in self._events:
                self.misses += 1
                res = run_batch(self.ts_ms, self.price, self.qty, self.side, WhaleParams.from_dict(whale))
                self._events[key] = (res.event_idx, res.event_features)
            else:
                self.hits += 1
            return self._events[key]

    def full_table(self, whale: dict, horizon_ms: int) -> EventTable:
        """Every event with an outcome, test included (for the winner's one evaluation)."""
        from signals import FEATURE_NAMES
        from signals.journal import canonical_json

        key = (canonical_json(whale), int(horizon_ms))
        with self._lock(key):
            if key not in self._tables:
                idx, X = self.events(whale)
                b = self.backtest
                self._tables[key], _ = event_table(
                    self.ts_ms,
                    self.price,
                    idx,
                    X,
                    FEATURE_NAMES,
                    horizon_ms=horizon_ms,
                    **outcome_kwargs(b),
                )
            return self._tables[key]

    def pre_test_table(self, whale: dict, horizon_ms: int) -> EventTable:
        """Events whose outcome is known before the test boundary: all a trial may see."""
        t = self.full_table(whale, horizon_ms)
        return t.take(np.flatnonzero(t.end_ts_ms < self.test_start_ms))


class UniverseFeatureCache:
    """The :class:`FeatureCache` of every member of a universe, pooled over one span.

    Each member's kernel events and outcomes come from its own trades (one :class:`FeatureCache`
    per member); the pooled table of a (whale rule, horizon) is :func:`bt.model.pool_tables` of
    the members' tables, as :func:`bt.model.train_pooled` pools them for ``bt run``. So
    :func:`bt.model.purged_splits` cuts every symbol at the same instants, and the winner replayed
    by ``bt run best.yaml`` trains on the same rows. ``hits``/``misses`` count whale rules (one
    miss runs the kernel over every member).
    """

    def __init__(self, members: list[FeatureCache], names: list[str], *, backtest, span_ms, test_start_ms: int):
        if len(members) != len(names):
            raise ValueError(f"{len(members)} member caches for {len(names)} names")
        self.members = members
        self.names = list(names)
        self.backtest = backtest
        self.span_ms = span_ms
        self.test_start_ms = int(test_start_ms)
        self._tables: dict[tuple[str, int], tuple[EventTable, np.ndarray]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()
        self._seen: set[str] = set()
        self.hits = 0
        self.misses = 0

    @property
    def n_trades(self) -> int:
        return int(sum(len(c.ts_ms) for c in self.members))

    def _lock(self, key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _pooled(self, whale: dict, horizon_ms: int) -> tuple[EventTable, np.ndarray]:
        from signals.journal import canonical_json

        rule = canonical_json(whale)
        key = (rule, int(horizon_ms))
        with self._lock(key):
            if key not in self._tables:
                with self._lock(rule):
                    if rule in self._seen:
                        self.hits += 1
                    else:
                        self.misses += 1
                        self._seen.add(rule)
                from bt.model import pool_tables

                self._tables[key] = pool_tables([c.full_table(whale, horizon_ms) for c in self.members])
            else:
                self.hits += 1
            return self._tables[key]

    def full_table(self, whale: dict, horizon_ms: int) -> EventTable:
        """Every member's events with an outcome, pooled in time order (test included)."""
        return self._pooled(whale, horizon_ms)[0]

    def member_of(self, whale: dict, horizon_ms: int) -> np.ndarray:
        """The member index (into ``names``) of each row of :meth:`full_table`."""
        return self._pooled(whale, horizon_ms)[1]

    def pre_test_table(self, whale: dict, horizon_ms: int) -> EventTable:
        """Pooled events whose outcome is known before the test boundary: all a trial may see."""
        t = self.full_table(whale, horizon_ms)
        return t.take(np.flatnonzero(t.end_ts_ms < self.test_start_ms))


#: What a trial reads its events from: one symbol's trades, or a universe's.
Cache = FeatureCache | UniverseFeatureCache


# --- objective --------------------------------------------------------------------------------


def make_objective(
    cache: Cache,
    space: SearchSpace,
    base_model: ModelConfig,
    base_whale: dict,
    base_horizon_ms: int,
    *,
    worker: int = 0,
) -> Callable:
    """The Optuna objective: sample, fit on train, choose the threshold, return the validation value.

    Attributes stored on each trial: validation figures and ``period_returns`` (per-period
    returns of its validation signals, for DSR and PBO). A trial with too few training events or
    no validation signal is pruned (counted as a trial for the DSR).
    """
    import optuna

    def objective(trial) -> float:
        spec = suggest(trial, space, base_model, base_whale, base_horizon_ms)
        table = cache.pre_test_table(spec.whale, spec.horizon_ms)
        splits = purged_splits(
            table.ts_ms, table.end_ts_ms, spec.model.split, span_ms=cache.span_ms, horizon_ms=spec.horizon_ms
        )
        trial.set_user_attr("n_events", len(table))
        trial.set_user_attr("worker", worker)
        if splits.train.size < space.min_train_events:
            trial.set_user_attr("pruned_reason", f"{splits.train.size} training events < {space.min_train_events}")
            raise optuna.TrialPruned()

        def on_fold(j: int, value: float) -> None:
            if math.isfinite(value):
                trial.report(value, j)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        val = fit_validate(table, splits, spec.model, refit=False, on_fold=on_fold)
        m = val.metrics(table)
        for k, v in m.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("period_returns", [round(float(x), 12) for x in val.period_returns])
        if not val.threshold.feasible:
            trial.set_user_attr(
                "pruned_reason",
                f"threshold {val.threshold.threshold:g} keeps "
                f"{val.threshold.n_independent} independent validation signals < min_signals",
            )
            raise optuna.TrialPruned()
        if not math.isfinite(val.value):
            trial.set_user_attr("pruned_reason", "no validation signal")
            raise optuna.TrialPruned()
        return float(val.value)

    return objective


# --- trials as tasks (--engine spark) ----------------------------------------------------------

#: Per worker process: the FeatureCache built from the broadcast trades (Spark reuses its Python
#: workers, so a whale rule's kernel run serves every later trial of the study on that worker).
_TASK_CACHE: dict[str, Cache] = {}


def _task_cache() -> tuple[Cache, SearchSpace]:
    from whalebt.engine import context

    ctx = context()
    cache = _TASK_CACHE.get(ctx["token"])
    if cache is None:
        _TASK_CACHE.clear()
        kw = {"backtest": ctx["backtest"], "span_ms": ctx["span_ms"], "test_start_ms": ctx["test"]}
        if "names" in ctx:  # a universe: one cache per member's trades
            cache = UniverseFeatureCache([FeatureCache(*a, **kw) for a in ctx["arrays"]], ctx["names"], **kw)
        else:
            cache = FeatureCache(*ctx["arrays"], **kw)
        _TASK_CACHE[ctx["token"]] = cache
    return cache, ctx["space"]


def _trial_task(spec: TrialSpec) -> dict:
    """One trial's evaluation, all folds (no Optuna trial here): what :func:`_tell_outcome` replays."""
    cache, space = _task_cache()
    hits, misses = cache.hits, cache.misses
    table = cache.pre_test_table(spec.whale, spec.horizon_ms)
    splits = purged_splits(
        table.ts_ms, table.end_ts_ms, spec.model.split, span_ms=cache.span_ms, horizon_ms=spec.horizon_ms
    )
    out: dict[str, Any] = {"n_events": len(table), "train": int(splits.train.size), "folds": []}
    out["cache"] = (cache.hits - hits, cache.misses - misses)  # kernel runs done by this task's worker
    if splits.train.size < space.min_train_events:
        return out
    val = fit_validate(table, splits, spec.model, refit=False, on_fold=lambda j, v: out["folds"].append((j, v)))
    out.update(
        metrics=val.metrics(table),
        period_returns=[round(float(x), 12) for x in val.period_returns],
        feasible=bool(val.threshold.feasible),
        threshold=float(val.threshold.threshold),
        n_independent=int(val.threshold.n_independent),
        value=float(val.value),
    )
    return out


def _tell_outcome(study, trial, out: dict, space: SearchSpace, worker: int) -> None:
    """Set attributes, report folds and tell ``trial`` as :func:`make_objective` would have."""
    import optuna

    pruned = optuna.trial.TrialState.PRUNED
    trial.set_user_attr("n_events", out["n_events"])
    trial.set_user_attr("worker", worker)
    if out["train"] < space.min_train_events:
        trial.set_user_attr("pruned_reason", f"{out['train']} training events < {space.min_train_events}")
        study.tell(trial, state=pruned)
        return
    for j, value in out["folds"]:
        if math.isfinite(value):
            trial.report(value, j)
            if trial.should_prune():  # the folds after this one were computed, but are not reported
                study.tell(trial, state=pruned)
                return
    for k, v in out["metrics"].items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("period_returns", out["period_returns"])
    if not out["feasible"]:
        trial.set_user_attr(
            "pruned_reason",
            f"threshold {out['threshold']:g} keeps {out['n_independent']} independent validation signals < min_signals",
        )
        study.tell(trial, state=pruned)
    elif not math.isfinite(out["value"]):
        trial.set_user_attr("pruned_reason", "no validation signal")
        study.tell(trial, state=pruned)
    else:
        study.tell(trial, out["value"])


def _optimize_as_tasks(
    study,
    cache: Cache,
    space: SearchSpace,
    base_model: ModelConfig,
    base_whale: dict,
    base_horizon_ms: int,
    *,
    n_trials: int,
    batch: int,
    worker: int,
    engine: str,
    master: str | None,
    on_trial: Callable | None = None,
) -> None:
    """Rounds of ``batch`` trials: asked here, evaluated as tasks on ``engine``, told in trial order.

    Deterministic for one ``batch``; the sampler sees a round's trials from the next round on.
    Pruning is decided here from the reported folds, after the earlier trials of the round are told.
    """
    import optuna

    from whalebt.engine import run_tasks

    ctx: dict[str, Any] = {
        "backtest": cache.backtest,
        "span_ms": cache.span_ms,
        "test": cache.test_start_ms,
        "space": space,
    }
    if isinstance(cache, UniverseFeatureCache):
        ctx["token"] = f"{id(cache)}-{cache.span_ms}-{cache.test_start_ms}-{cache.n_trades}-{len(cache.names)}"
        ctx["arrays"] = [(c.ts_ms, c.price, c.qty, c.side) for c in cache.members]
        ctx["names"] = cache.names
    else:
        ctx["token"] = f"{id(cache)}-{cache.span_ms}-{cache.test_start_ms}-{len(cache.ts_ms)}"
        ctx["arrays"] = (cache.ts_ms, cache.price, cache.qty, cache.side)
    while (left := n_trials - len(_finished(study))) > 0:
        trials = [study.ask() for _ in range(min(batch, left))]
        specs = [suggest(t, space, base_model, base_whale, base_horizon_ms) for t in trials]
        try:
            outs = run_tasks(_trial_task, specs, batch, context=ctx, engine=engine, master=master)
        except BaseException:
            for t in trials:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            raise
        for t, out in zip(trials, outs):
            # the tasks' caches (their own, built from the context) count the kernel runs
            cache.hits, cache.misses = cache.hits + out["cache"][0], cache.misses + out["cache"][1]
            _tell_outcome(study, t, out, space, worker)
            if on_trial is not None:
                on_trial(study, t)


# --- summary ----------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    study_name: str
    n_trials: int  # finished trials (complete + pruned): the number of configurations tried
    n_complete: int
    best_number: int
    best_value: float
    best_params: dict
    dsr: dict
    pbo: dict | None
    test: dict  # the winner's one test evaluation
    spec: TrialSpec
    result: Any  # bt.model.ModelResult of the winner
    baseline_test: dict = field(default_factory=dict)
    new_trials: list[int] = field(default_factory=list)  # trial numbers this call ran
    by_symbol: dict = field(default_factory=dict)  # a universe: the winner's figures per member


def _finished(study):
    import optuna

    st = optuna.trial.TrialState
    return [t for t in study.get_trials(deepcopy=False) if t.state in (st.COMPLETE, st.PRUNED)]


def summarize(
    study,
    cache: Cache,
    space: SearchSpace,
    base_model: ModelConfig,
    base_whale: dict,
    base_horizon_ms: int,
    *,
    n_boot: int = 2000,
) -> SweepSummary:
    """DSR and PBO over the study's trials, then the winner's single test evaluation."""
    import optuna

    from bt.overfit import deflated_sharpe_ratio, pbo_cscv, sharpe_ratio

    finished = _finished(study)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(
            f"study {study.study_name!r} has no completed trial ({len(finished)} pruned); "
            "widen the search space or the data span"
        )
    best = study.best_trial
    series = [np.asarray(t.user_attrs.get("period_returns", []), dtype=np.float64) for t in complete]
    sharpes = np.array([sharpe_ratio(s) for s in series])
    best_series = np.asarray(best.user_attrs.get("period_returns", []), dtype=np.float64)
    dsr = deflated_sharpe_ratio(best_series, len(finished), trial_sharpes=sharpes)
    pbo = None
    lengths = {s.size for s in series}
    if len(series) >= 2 and len(lengths) == 1:
        t_len = lengths.pop()
        blocks = min(space.cscv_blocks, t_len - t_len % 2)
        if blocks >= 2:
            mat = np.column_stack(series)
            pbo = pbo_cscv(mat, n_blocks=blocks, max_splits=5000, seed=space.seed).to_dict()
    spec = suggest(optuna.trial.FixedTrial(best.params), space, base_model, base_whale, base_horizon_ms)
    table = cache.full_table(spec.whale, spec.horizon_ms)
    splits = purged_splits(
        table.ts_ms, table.end_ts_ms, spec.model.split, span_ms=cache.span_ms, horizon_ms=spec.horizon_ms
    )
    val = fit_validate(table, splits, spec.model)
    res = evaluate_test(table, splits, spec.model, val, n_trials=len(finished), trial_sharpes=sharpes, n_boot=n_boot)
    # The headline DSR is the validation one (what was selected on); the test DSR is kept too.
    res.metrics["test_dsr"] = res.metrics.pop("dsr")
    res.metrics["dsr"] = None if math.isnan(dsr.dsr) else dsr.dsr
    if pbo is not None:
        res.metrics["pbo"] = pbo["pbo"]
    by_symbol = {}
    if isinstance(cache, UniverseFeatureCache):
        member = cache.member_of(spec.whale, spec.horizon_ms)
        for i, name in enumerate(cache.names):
            m = member_test_metrics(
                table, member == i, res, n_trials=len(finished), trial_sharpes=sharpes, n_boot=n_boot
            )
            m["test_dsr"] = m.pop("dsr")
            m.update({k: res.metrics.get(k) for k in ("dsr", "pbo") if k in res.metrics})
            by_symbol[name] = m
    summary = SweepSummary(
        study.study_name,
        len(finished),
        len(complete),
        best.number,
        float(best.value),
        dict(best.params),
        dsr.to_dict(),
        pbo,
        res.metrics,
        spec,
        res,
        {k: v for k, v in res.metrics.items() if k.startswith("baseline_")},
    )
    summary.by_symbol = by_symbol
    return summary


def member_test_metrics(table: EventTable, mine: np.ndarray, res, **kw) -> dict:
    """The winner's figures (``res.metrics`` keys) on one universe member's rows of the pooled ``table``.

    The same booster and threshold, restricted to the member's test and validation events: its
    ``test_*``/``baseline_*`` from :func:`bt.model.evaluate_test`, its ``val_*`` from its share of
    the pooled out-of-fold predictions (``val_objective`` is the objective on its selected
    validation signals). The split boundaries and purge are the pooled ones.
    """
    import dataclasses

    from bt.model import independent_counts, objective_value

    val, cfg = res.validation, res.config
    te = res.splits.test[mine[res.splits.test]]
    keep = mine[val.val_idx]
    idx, prob = val.val_idx[keep], val.val_prob[keep]
    t = val.threshold.threshold
    sel = idx[prob >= t]
    n_ind = int(independent_counts(prob, table.ts_ms[idx], table.end_ts_ms[idx], np.array([t]))[0]) if idx.size else 0
    value = objective_value(
        table.net_return[sel], table.ts_ms[sel], cfg.objective, span_ms=val.val_span_ms, period_ms=cfg.period_ms
    )
    val_m = dataclasses.replace(
        val,
        val_idx=idx,
        val_prob=prob,
        value=value,
        threshold=dataclasses.replace(val.threshold, n_independent=n_ind),
    )
    out = evaluate_test(table, dataclasses.replace(res.splits, test=te), cfg, val_m, **kw)
    return out.metrics


def signal_config_of(run_config, spec: TrialSpec, threshold: float) -> dict:
    """The resolved signal config bundled with a registered model."""
    from datasets.durations import format_duration
    from signals import feature_spec_hash
    from signals.journal import config_id

    b = run_config.backtest
    model = spec.model.model_dump(mode="json", exclude={"sweep"})
    cfg = {
        "exchange": run_config.data.exchange,
        "symbol": run_config.data.symbol,
        **({"symbols": list(run_config.data.symbols or ())} if run_config.data.is_universe else {}),
        "whale": spec.whale,
        "horizon": format_duration(spec.horizon_ms),
        "entry_latency_ms": b.entry_latency_ms,
        "fee_bps": b.fee_bps,
        "slippage_bps": b.slippage_bps,
        "label_threshold": b.label_threshold,
        "take_profit": b.take_profit,
        "stop_loss": b.stop_loss,
        "threshold": float(threshold),
        "feature_names": list(spec.model.feature_names),
        "feature_spec_hash": feature_spec_hash(),
        "model": model,
    }
    cfg["config_id"] = config_id({"whale": spec.whale, "model": model, "threshold": float(threshold)})
    return cfg


def winner_config(run_config, spec: TrialSpec) -> dict:
    """The run config that reproduces the winner with ``bt run`` (no sweep section)."""
    from datasets.durations import format_duration

    raw = run_config.resolved()
    raw["signal"] = {"whale": spec.whale}
    raw["backtest"]["horizon"] = format_duration(spec.horizon_ms)
    raw["model"] = spec.model.model_dump(mode="json", exclude={"sweep"}, exclude_none=True)
    return raw


# --- driver -----------------------------------------------------------------------------------


def study_name_of(run_config) -> str:
    """``<name>-<hash of the resolved config>``: the same config resumes the same study."""
    import hashlib

    from signals.journal import canonical_json

    return f"{run_config.name}-{hashlib.sha256(canonical_json(run_config.resolved()).encode()).hexdigest()[:8]}"


def run_sweep(
    run_config,
    trades,
    *,
    n_trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    n_jobs: int = 1,
    worker: int = 0,
    progress: bool = True,
    n_boot: int = 2000,
    summarize_after: bool = True,
    cache: Cache | None = None,
    engine: str | None = None,
    master: str | None = None,
):
    """Run (or resume) the config's sweep until the study holds ``n_trials`` finished trials.

    Args:
        run_config: a ``RunConfig`` whose ``model.sweep`` is the search space.
        trades: an object with ``ts_ms, price, qty, side`` arrays (e.g. ``datasets.build.TradeSpan``);
            for a universe config (``data.symbols``), a list of them, one per member in order.
        n_trials: target number of finished trials in the study (resuming counts earlier ones).
        storage: Optuna storage URL (None: in memory).
        worker: added to the sampler seed, so workers on one study explore differently.
        cache: reuse the features of an earlier call over the same trades and config.
        engine: None: Optuna's ``study.optimize`` with ``n_jobs`` threads. ``"local"``/``"spark"``:
            rounds of ``n_jobs`` trials evaluated as :func:`whalebt.engine.run_tasks` tasks and told
            in trial order (:func:`_optimize_as_tasks`), the same study on either engine.

    Returns:
        ``(study, SweepSummary or None, cache)``.
    """
    import optuna
    from optuna.study import MaxTrialsCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if run_config.model is None:
        raise UserError("the config has no model section; add one with a sweep: search space")
    base_model = run_config.model
    space = base_model.sweep or SearchSpace()
    sp = base_model.split
    if run_config.data.is_universe:
        cache = _universe_cache(run_config, trades, cache)
    else:
        ts = np.asarray(trades.ts_ms, dtype=np.int64)
        if ts.size < 2:
            raise UserError("not enough trades to sweep over")
        span_ms = (int(ts[0]), int(ts[-1]) + 1)
        test_start = split_test_start_ms(span_ms, sp)
        if (
            not isinstance(cache, FeatureCache)
            or cache.span_ms != span_ms
            or cache.test_start_ms != test_start
            or cache.backtest != run_config.backtest
        ):
            cache = FeatureCache(
                ts,
                trades.price,
                trades.qty,
                trades.side,
                backtest=run_config.backtest,
                span_ms=span_ms,
                test_start_ms=test_start,
            )
    base_whale = run_config.signal.whale.to_dict()
    base_h = run_config.backtest.horizon_ms
    distributed = storage is not None and bool(storage) and not storage.startswith("sqlite")
    study = optuna.create_study(
        study_name=study_name or study_name_of(run_config),
        storage=open_storage(storage),
        load_if_exists=True,
        direction="maximize",
        sampler=make_sampler(space.sampler, space.seed + worker, distributed=distributed),
        pruner=make_pruner(space.pruner),
    )
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    done = len(_finished(study))
    remaining = max(0, n_trials - done)
    bar = None
    callbacks: list = [MaxTrialsCallback(n_trials, states=states)]
    if progress and remaining:
        from tqdm import tqdm

        bar = tqdm(total=n_trials, initial=done, desc=f"sweep {study.study_name}", unit="trial", file=sys.stderr)

        def tick(st, tr):
            bar.update(1)
            try:
                bar.set_postfix(best=f"{st.best_value:.5f}", refresh=False)
            except ValueError:
                pass

        callbacks.append(tick)
    objective = make_objective(cache, space, base_model, base_whale, base_h, worker=worker)
    try:
        if remaining and engine is not None:
            _optimize_as_tasks(
                study,
                cache,
                space,
                base_model,
                base_whale,
                base_h,
                n_trials=n_trials,
                batch=max(1, n_jobs),
                worker=worker,
                engine=engine,
                master=master,
                on_trial=callbacks[1] if len(callbacks) > 1 else None,
            )
        elif remaining:
            study.optimize(objective, n_trials=remaining, n_jobs=n_jobs, callbacks=callbacks, gc_after_trial=False)
    finally:
        if bar is not None:
            bar.close()
    summary = None
    if summarize_after:
        summary = summarize(study, cache, space, base_model, base_whale, base_h, n_boot=n_boot)
        summary.new_trials = [
            t.number for t in _finished(study) if t.number not in before and t.user_attrs.get("worker") == worker
        ]
    return study, summary, cache


def _universe_cache(run_config, spans, cache: Cache | None) -> UniverseFeatureCache:
    """The universe's cache over ``spans`` (one trade series per member, in ``data.members`` order).

    The span is first trade to last trade over every member (``bt run``'s pooled model uses the
    same), so the split boundaries are one set of instants for all symbols.
    """
    names = list(run_config.data.symbols or ())
    spans = list(spans) if isinstance(spans, (list, tuple)) else None
    if spans is None or len(spans) != len(names):
        raise UserError(
            f"a universe sweep needs one trade series per member ({len(names)}: {', '.join(names)}); "
            f"got {'one series' if spans is None else len(spans)}"
        )
    empty = [n for n, s in zip(names, spans) if len(s.ts_ms) < 2]
    if empty:
        raise UserError(
            f"not enough trades to sweep over for {', '.join(empty)} in {run_config.data.start}..{run_config.data.end}; "
            "drop it from data.symbols or widen the span"
        )
    span_ms = (min(int(s.ts_ms[0]) for s in spans), max(int(s.ts_ms[-1]) for s in spans) + 1)
    sp = run_config.model.split
    test_start = split_test_start_ms(span_ms, sp)
    if (
        isinstance(cache, UniverseFeatureCache)
        and cache.names == names
        and cache.span_ms == span_ms
        and cache.test_start_ms == test_start
        and cache.backtest == run_config.backtest
    ):
        return cache
    kw = {"backtest": run_config.backtest, "span_ms": span_ms, "test_start_ms": test_start}
    members = [FeatureCache(s.ts_ms, s.price, s.qty, s.side, **kw) for s in spans]
    return UniverseFeatureCache(members, names, **kw)


def _period_equity(ts_ms: np.ndarray, returns: np.ndarray):
    import pandas as pd

    order = np.argsort(ts_ms, kind="stable")
    eq = 1.0 + np.cumsum(np.asarray(returns, dtype=np.float64)[order])
    idx = pd.to_datetime(np.asarray(ts_ms, dtype=np.int64)[order], unit="ms", utc=True)
    return pd.DataFrame({"equity": eq}, index=idx)


def sweep_command(
    run_config,
    *,
    n_trials: int,
    storage: str | None,
    study_name: str | None = None,
    n_jobs: int = 1,
    worker: int = 0,
    results_dir: str = "results",
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    register_as: str | None = None,
    register: bool | str = "passing",
    summary_only: bool = False,
    allow_in_sample: bool = False,
    engine: str | None = None,
    master: str | None = None,
) -> dict:
    """``bt sweep``: load trades, run the study, write ``results/<study>/``, check the gate, log, register.

    Files: ``sweep.json`` (summary, with ``gate`` and ``registration``), ``best.yaml`` (the winner
    as a run config), ``trials.parquet``, ``metrics.json`` (the winner's test metrics with ``dsr``,
    ``pbo`` and ``gate``), ``lineage.json`` (what the winner was trained on), ``trades.parquet``
    (test events with prob and decision) and ``equity.parquet`` (cumulative test signal returns).

    Args:
        register: ``"passing"`` (default: register the winner only if it passes ``model.gate``),
            ``"always"`` (register it anyway; the failed verdict is tagged on the version) or
            ``"never"`` (no MLflow logging at all). ``True``/``False`` mean always/never.
        allow_in_sample: with ``model.uri``, do not refuse a span overlapping that model's
            train or validation range.
    """
    from pathlib import Path

    import pandas as pd
    import yaml

    from datasets.build import load_trades
    from datasets.lake import Lake

    from bt.registry import check_gate, lineage_of
    from bt.run import in_sample_guard

    mode = {True: "always", False: "never"}.get(register, register) if isinstance(register, bool) else register
    if mode not in REGISTER_MODES:
        raise UserError(f"--register must be one of {', '.join(REGISTER_MODES)}; got {register!r}")
    universe = run_config.data.is_universe
    if universe:
        from bt.universe import resolve_universe

        run_config = resolve_universe(run_config, quiet=False)  # best.yaml and the study name keep the list
    in_sample_guard(run_config, allow_in_sample=allow_in_sample, tracking_uri=tracking_uri)
    d = run_config.data
    if storage and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    lake = Lake(d.lake)
    names = list(d.symbols or ()) if universe else [str(d.symbol)]
    spans = [load_trades(lake, ex, sym, d.start, d.end) for ex, sym in d.members]
    for (ex, sym), sp in zip(d.members, spans):
        print(f"loaded {len(sp):,} trades of {ex}/{sym}", file=sys.stderr)
    span: Any = spans[0] if not universe else _Sources([x for sp in spans for x in sp.sources])
    study, summary, cache = run_sweep(
        run_config,
        spans if universe else span,
        n_trials=0 if summary_only else n_trials,
        storage=storage,
        study_name=study_name,
        n_jobs=n_jobs,
        worker=worker,
        n_boot=run_config.backtest.bootstrap,
        engine=engine,
        master=master,
    )
    res = summary.result
    b = run_config.backtest
    sig_cfg = signal_config_of(run_config, summary.spec, res.threshold)
    table = cache.full_table(summary.spec.whale, summary.spec.horizon_ms)
    te = res.splits.test
    lineage = lineage_of(res, table, exchange=d.exchange, symbols=names, span_ms=cache.span_ms, sources=span.sources)
    gate_cfg = run_config.model.gate
    verdict = check_gate(res.metrics, gate_cfg)
    gate_doc = {**verdict.to_dict(), "config": gate_cfg.model_dump()}
    if mode == "never":
        decision = "not registered: --register never"
    elif mode == "passing" and not verdict.ok:
        decision = "not registered: the winner fails its gate (--register always registers it anyway)"
    elif not verdict.ok:
        decision = "registered although the winner fails its gate (--register always)"
    else:
        decision = "registered: the winner passes its gate"
    will_register = decision.startswith("registered")
    registration = {"mode": mode, "registered": will_register, "decision": decision}
    trades_df = pd.DataFrame(
        {
            "ts_ms": table.ts_ms[te],
            "end_ts_ms": table.end_ts_ms[te],
            "net_return": table.net_return[te],
            "label": table.label[te],
            "prob": res.test_prob,
            "signal": res.test_signal,
            **{f"f_{n}": table.X[te, j] for j, n in enumerate(table.feature_names)},
        }
    )
    if isinstance(cache, UniverseFeatureCache):
        trades_df.insert(
            0,
            "symbol",
            np.asarray(cache.names, dtype=object)[cache.member_of(summary.spec.whale, summary.spec.horizon_ms)[te]],
        )
    metrics = {
        "run_id": summary.study_name,
        "name": run_config.name,
        "kind": "sweep",
        "config_id": sig_cfg["config_id"],
        "threshold": res.threshold,
        "horizon": sig_cfg["horizon"],
        "n_trials": summary.n_trials,
        **{k[len("test_") :]: v for k, v in res.metrics.items() if k.startswith("test_") and k != "test_dsr"},
        "dsr": res.metrics.get("dsr"),
        "test_dsr": res.metrics.get("test_dsr"),
        "pbo": res.metrics.get("pbo"),
        "model_metrics": res.metrics,
        "gate": gate_doc,
        "registration": registration,
        "costs": {"fee_bps": b.fee_bps, "slippage_bps": b.slippage_bps, "entry_latency_ms": b.entry_latency_ms},
    }
    if universe:
        # Per member, the headline's keys: its own test, baseline and validation figures under the
        # one model and threshold; what belongs to the study (trials, DSR, PBO, ids) is shared. Its
        # gate verdict is informative only: registration follows the pooled gate.
        metrics["symbols"] = names
        shared = dict(metrics)
        metrics["by_symbol"] = {
            name: {
                **shared,
                "symbols": [name],
                **{k[len("test_") :]: v for k, v in mm.items() if k.startswith("test_") and k != "test_dsr"},
                "test_dsr": mm.get("test_dsr"),
                "model_metrics": mm,
                "gate": {**check_gate(mm, gate_cfg).to_dict(), "config": gate_cfg.model_dump()},
            }
            for name, mm in summary.by_symbol.items()
        }
    out_dir = Path(results_dir) / summary.study_name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_doc = {
        "study": summary.study_name,
        "storage": storage,
        "n_trials": summary.n_trials,
        "n_complete": summary.n_complete,
        "best_trial": summary.best_number,
        "best_value": summary.best_value,
        "best_params": summary.best_params,
        "dsr": summary.dsr,
        "pbo": summary.pbo,
        "test": res.metrics,
        "signal_config": sig_cfg,
        "gate": gate_doc,
        "registration": registration,
        "lineage": lineage,
        "cache": {"hits": cache.hits, "misses": cache.misses},
    }
    if universe:
        sweep_doc["symbols"] = names
        sweep_doc["by_symbol"] = summary.by_symbol
    from bt.runfolder import json_text, write_run_folder

    def fill(tmp: Path) -> None:
        (tmp / "sweep.json").write_text(json_text(sweep_doc))
        (tmp / "metrics.json").write_text(json_text(metrics))
        (tmp / "lineage.json").write_text(json_text(lineage))
        (tmp / "best.yaml").write_text(yaml.safe_dump(winner_config(run_config, summary.spec), sort_keys=False))
        (tmp / "config.yaml").write_text(yaml.safe_dump(winner_config(run_config, summary.spec), sort_keys=False))
        study.trials_dataframe().drop(columns=["user_attrs_period_returns"], errors="ignore").to_parquet(
            tmp / "trials.parquet", index=False
        )
        trades_df.to_parquet(tmp / "trades.parquet", index=False)
        sel = trades_df[trades_df["signal"]]
        _period_equity(sel["ts_ms"].to_numpy(), sel["net_return"].to_numpy()).to_parquet(tmp / "equity.parquet")

    write_run_folder(out_dir, fill)
    result = {
        "study": summary.study_name,
        "n_trials": summary.n_trials,
        "best_value": summary.best_value,
        "dsr": res.metrics.get("dsr"),
        "pbo": res.metrics.get("pbo"),
        "test_n_signals": res.metrics.get("test_n_signals"),
        "test_n_independent": res.metrics.get("test_n_independent"),
        "test_mean_return": res.metrics.get("test_mean_return"),
        "baseline_mean_return": res.metrics.get("baseline_mean_return"),
        "threshold": res.threshold,
        "results": str(out_dir),
        "model_uri": None,
        "gate": gate_doc["verdict"],
        "gate_reasons": verdict.reasons,
        "gate_notes": verdict.notes,
        "register": mode,
        "registered": False,
        "registration": decision,
    }
    if universe:
        keys = ("test_n_signals", "test_n_independent", "test_mean_return", "baseline_mean_return")
        result["by_symbol"] = {n: {k: mm.get(k) for k in keys} for n, mm in summary.by_symbol.items()}
    if mode != "never":
        result.update(
            _log_sweep(
                run_config,
                study,
                summary,
                sig_cfg,
                span,
                worker=worker,
                out_dir=out_dir,
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                register_as=register_as,
                register_model=will_register,
                gate=verdict,
                lineage=lineage,
                metrics=metrics,
            )
        )
        result["registered"] = result.get("model_uri") is not None
    return result


@dataclass
class _Sources:
    """What the MLflow logging reads of a universe's trades: every member's partitions."""

    sources: list[dict]


def _log_sweep(
    run_config,
    study,
    summary: SweepSummary,
    sig_cfg: dict,
    span,
    *,
    worker: int,
    out_dir,
    tracking_uri,
    registry_uri,
    register_as,
    register_model: bool = True,
    gate=None,
    lineage: dict | None = None,
    metrics: dict | None = None,
) -> dict:
    """One parent MLflow run per study, one nested run per trial; register the winner if asked.

    The parent (tags ``whalebt.kind=sweep``, ``whalebt.study``) is found again by every later call
    and every worker on the study, so resuming adds the new trials under it and updates its
    metrics, tags and artifacts. Its metrics are those of the sweep's ``metrics.json`` named as a
    ``bt run``'s (:func:`bt.tracking.metric_values`): the winner's test figures as ``mean_return``,
    ``n_signals``, ..., and ``test_*``/``val_*``/``baseline_*``, ``dsr``, ``pbo``; a trial's are
    its ``val_*`` figures. The winner's params are tags ``whalebt.best.<name>`` (they change as the
    study grows; MLflow params cannot). The parent gets ``whalebt.gate`` (pass/fail) and
    ``whalebt.gate_reasons``; so does a registered version, with its lineage.
    """
    from bt.registry import connect, log_model_bundle
    from bt.tracking import (
        DEFAULT_EXPERIMENT,
        code_version,
        context_tags,
        data_digest,
        experiment,
        find_run,
        flatten,
        lake_dataset,
        metric_values,
        mlflow_calls,
    )

    mlflow = connect(tracking_uri, registry_uri)
    with mlflow_calls():
        from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
        from mlflow.tracking.context.registry import resolve_tags

        client = mlflow.MlflowClient()
        exp_id = experiment(mlflow, DEFAULT_EXPERIMENT)
        data_hash = data_digest(span.sources)
        tags = {
            "whalebt.kind": "sweep",
            "whalebt.study": summary.study_name,
            "whalebt.code_version": code_version(),
            "whalebt.data_snapshot": data_hash,
            "whalebt.config_id": sig_cfg["config_id"],
        }
        res = summary.result
        d = run_config.data
        # one symbol: whale-<symbol>; a universe (the model serves every member): whale-<config name>
        default = f"whale-{run_config.name.lower()}" if d.is_universe else f"whale-{str(d.symbol).lower()}"
        name = register_as or run_config.model.registry_name or default
        parent_id = _study_parent(client, exp_id, summary.study_name, resolve_tags, find_run)
        gate_info = (
            {}
            if gate is None
            else {"whalebt.gate": "pass" if gate.ok else "fail", "whalebt.gate_reasons": "; ".join(gate.reasons)[:5000]}
        )
        have = client.get_run(parent_id).data.params
        params = {k: str(v)[:6000] for k, v in flatten(run_config.resolved()).items() if k not in have}
        best = {f"whalebt.best.{k}": str(v)[:5000] for k, v in summary.best_params.items()}
        now = _now_ms()
        values = metric_values(metrics if metrics is not None else res.metrics)
        client.log_batch(
            parent_id,
            metrics=[Metric(k, v, now, 0) for k, v in values.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in {**tags, **gate_info, **best, **context_tags(metrics or {})}.items()],
        )
        what = ",".join(f"{ex}/{sym}" for ex, sym in d.members)
        ds = lake_dataset(d.lake, span.sources, f"{what} {d.start}..{d.end}")
        client.log_inputs(
            parent_id, [DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])]
        )
        client.log_artifacts(parent_id, str(out_dir))
        new = set(summary.new_trials)
        for t in _finished(study):
            if t.number not in new:  # logged by the worker (or the earlier call) that ran it
                continue
            child = client.create_run(
                exp_id,
                run_name=f"trial {t.number}",
                tags={
                    **resolve_tags(),
                    **tags,
                    "mlflow.parentRunId": parent_id,
                    "whalebt.kind": "trial",
                    "whalebt.trial": str(t.number),
                    "whalebt.trial_state": t.state.name,
                    "whalebt.worker": str(t.user_attrs.get("worker", worker)),
                    **(
                        {"whalebt.pruned_reason": str(t.user_attrs["pruned_reason"])[:5000]}
                        if "pruned_reason" in t.user_attrs
                        else {}
                    ),
                },
            )
            attrs = {k: v for k, v in t.user_attrs.items() if k not in ("worker", "period_returns", "pruned_reason")}
            m = metric_values(attrs)
            if t.value is not None:
                m.setdefault("val_objective", float(t.value))
            client.log_batch(
                child.info.run_id,
                metrics=[Metric(k, v, now, 0) for k, v in m.items()],
                params=[Param(k, str(v)[:500]) for k, v in t.params.items()],
            )
            client.set_terminated(child.info.run_id)
        if not register_model:
            client.set_terminated(parent_id)
            return {"model_uri": None, "mlflow_run_id": parent_id, "registered_model": None, "version": None}
        gate_tags = {
            k: res.metrics.get(k) for k in ("test_mean_return", "test_n_independent", "test_n_signals", "dsr", "pbo")
        }
        gate_tags.update(
            study=summary.study_name,
            config_id=sig_cfg["config_id"],
            data_snapshot=data_hash,
            **{k[len("whalebt.") :]: v for k, v in gate_info.items()},
        )
        with mlflow.start_run(run_id=parent_id):
            _, version = log_model_bundle(
                res.booster, sig_cfg, registered_model_name=name, tags=gate_tags, lineage=lineage
            )
    return {
        "model_uri": f"models:/{name}/{version}",
        "mlflow_run_id": parent_id,
        "registered_model": name,
        "version": str(version),
    }


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _study_parent(client, exp_id: str, study_name: str, resolve_tags, find_run) -> str:
    """The study's parent run: the one logged before, else a new one.

    Workers starting together may each create one; all of them then keep the oldest and a
    worker whose own is not the oldest deletes it, so the study ends with one parent.
    """
    want = {"whalebt.kind": "sweep", "whalebt.study": study_name}
    found = find_run(client, exp_id, want)
    if found is not None:
        return found.info.run_id
    mine = client.create_run(exp_id, run_name=f"sweep {study_name}", tags={**resolve_tags(), **want}).info.run_id
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in want.items())
    oldest = client.search_runs([exp_id], filter_string=filt, max_results=1, order_by=["attributes.start_time ASC"])
    if oldest and oldest[0].info.run_id != mine:
        client.delete_run(mine)
        return oldest[0].info.run_id
    return mine
