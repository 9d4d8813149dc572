"""`bt audit CONFIG`: can the figures of this config be trusted? One verdict per check.

Each check returns a :class:`Check` (``pass``, ``warn`` or ``fail`` with the figure behind it);
:func:`audit` runs them all on a config and its lake. The checks read the same data and run
the same code as ``bt run``; the backtest runs into a scratch folder that is deleted
afterwards, without MLflow and without a tearsheet (the lake keeps the silver/gold caches
``bt run`` would write too).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from bt.config import RunConfig
from bt.metrics import MIN_CLUSTERS_FOR_CI, MIN_DAYS_CAGR, MIN_DAYS_SHARPE
from whalebt.cli import UserError

__all__ = [
    "Check",
    "audit",
    "kernel_detector",
    "check_causality",
    "check_in_sample",
    "check_clusters",
    "check_coverage",
    "check_id_spaces",
    "check_funding",
    "check_annualisation",
]

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One line of the verdict table."""

    name: str
    verdict: str  # pass | warn | fail
    figure: str  # what was measured, in words a user can act on

    def to_dict(self) -> dict:
        return asdict(self)


Detector = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def kernel_detector(whale: dict) -> Detector:
    """The signal kernel as a detector: trades in, (event index, event code, feature rows) out."""
    from signals import N_FEATURES, WhaleParams, run_batch

    params = WhaleParams.from_dict(whale)

    def detect(ts, px, q, sd):
        res = run_batch(ts, px, q, sd, params)
        idx = np.asarray(res.event_idx, np.int64)
        return idx, np.asarray(res.event_code), np.asarray(res.event_features, np.float64).reshape(idx.size, N_FEATURES)

    return detect


def check_causality(
    ts_ms: np.ndarray,
    price: np.ndarray,
    qty: np.ndarray,
    side: np.ndarray,
    detect: Detector,
    *,
    samples: int = 12,
    tail: int = 50_000,
    seed: int = 0,
) -> Check:
    """Scramble the trades after each of ``samples`` events; nothing up to the event may move.

    For an event at trade ``i``, prices, quantities and sides of up to ``tail`` trades after
    ``i`` are shuffled among themselves, and their quantities multiplied by a random factor up
    to 50 (so new whales appear in the future). The kernel runs again on the scrambled tape:
    every event at or before ``i`` must come back at the same trade with the same code and the
    same features, bit for bit. A rule or feature that looks ahead fails here.
    """
    ts = np.ascontiguousarray(ts_ms, np.int64)
    px = np.ascontiguousarray(price, np.float64)
    q = np.ascontiguousarray(qty, np.float64)
    sd = np.ascontiguousarray(side, np.int8)
    idx, codes, feats = detect(ts, px, q, sd)
    if idx.size == 0:
        return Check("causality", WARN, "no whale events in the span: nothing to perturb")
    rng = np.random.default_rng(seed)
    # Events with trades after them, spread over the span.
    candidates = np.flatnonzero(idx < ts.size - 1)
    if candidates.size == 0:
        return Check("causality", WARN, "every event is the span's last trade: nothing to perturb")
    pick = np.unique(candidates[np.linspace(0, candidates.size - 1, min(samples, candidates.size)).astype(np.int64)])
    moved = []
    for j in pick:
        i = int(idx[j])
        hi = min(ts.size, i + 1 + tail)
        perm = rng.permutation(hi - i - 1) + i + 1
        p2, q2, s2 = px[:hi].copy(), q[:hi].copy(), sd[:hi].copy()
        p2[i + 1 : hi], q2[i + 1 : hi], s2[i + 1 : hi] = px[perm], q[perm] * rng.uniform(1.0, 50.0, perm.size), sd[perm]
        idx2, codes2, f2 = detect(ts[:hi], p2, q2, s2)
        before, before2 = idx <= i, idx2 <= i
        same = (
            before.sum() == before2.sum()
            and np.array_equal(idx[before], idx2[before2])
            and np.array_equal(codes[before], codes2[before2])
            and np.array_equal(feats[before], f2[before2], equal_nan=True)
        )
        if not same:
            moved.append(i)
    n = len(pick)
    if moved:
        return Check(
            "causality",
            FAIL,
            f"events or features before the perturbation moved at {len(moved)} of "
            f"{n} sampled events (first at trade #{moved[0]}): the rule looks ahead",
        )
    return Check("causality", PASS, f"{n} sampled events, future trades scrambled: nothing before them moved")


def check_clusters(metrics: dict) -> Check:
    """Signals vs independent clusters of the primary horizon."""
    n, k = metrics.get("n_signals", 0), metrics.get("n_independent", 0)
    fig = f"{n} signals, {k} independent (overlapping {metrics['horizon']} outcome windows count once)"
    if n == 0:
        return Check("clusters", FAIL, "no signals to evaluate")
    if k < MIN_CLUSTERS_FOR_CI:
        return Check("clusters", FAIL, f"{fig}; fewer than {MIN_CLUSTERS_FOR_CI}: no confidence interval")
    if k < n / 2:
        return Check("clusters", WARN, f"{fig}; most signals share their outcome with another")
    return Check("clusters", PASS, fig)


def check_coverage(holes: list[dict], metrics: dict) -> Check:
    """Holes in the span and the signals they cost.

    ``holes`` as from :func:`datasets.build.span_holes`. Requested days the lake has no partition
    for fail (the span is not what the config says); stretches of stored days that no source
    covered (a recording of minutes, a feed that dropped) warn: the run drops the signals whose
    windows cross them and counts them as gaps.
    """
    dropped = metrics.get("dropped") or {}
    cost = f"{dropped.get('gap', 0)} signals dropped at gaps, {dropped.get('end_of_data', 0)} at the end of the data"
    missing = [h for h in holes if h["kind"] == "no_partition"]
    if missing:
        days = ", ".join(h["text"].replace(" (no partition)", "") for h in missing)
        return Check("coverage", FAIL, f"no data for {days}; {cost} (ingest the days or shorten data.start..end)")
    if holes:
        hours = sum(h["seconds"] for h in holes) / 3600
        return Check(
            "coverage",
            WARN,
            f"{len(holes)} uncovered stretch{'es' if len(holes) > 1 else ''} "
            f"({hours:.1f} h) inside stored days; {cost}",
        )
    return Check("coverage", PASS, f"every requested day is covered; {cost}")


def check_id_spaces(report: list[dict]) -> Check:
    """Id spaces and duplicates of the span's bronze partitions (:func:`datasets.quality.span_id_report`)."""
    if not report:
        return Check("id spaces", FAIL, "no bronze partitions in the span")
    spaces = sorted({r["id_space"] for r in report})
    fig = f"{len(report)} partition{'s' if len(report) > 1 else ''}, id space {'/'.join(spaces)}"
    doubled = [r for r in report if "cross_source_duplicates" in r["issues"] or r["duplicate_ids"]]
    if doubled:
        worst = max(doubled, key=lambda r: r["cross_source_duplicates"] + r["duplicate_ids"])
        return Check(
            "id spaces",
            FAIL,
            f"{fig}; {len(doubled)} look stored twice, e.g. {worst['date']}: "
            f"{worst['cross_source_duplicates']:,} rows repeat another row's time, "
            f"price, size and side ({worst['cross_source_share']:.0%}), "
            f"{worst['duplicate_ids']:,} repeat an id. Re-ingest that day from one "
            "source with `--replace`",
        )
    missing = sum(r["missing_ids"] or 0 for r in report)
    if missing:
        return Check(
            "id spaces",
            WARN,
            f"{fig}; {missing:,} ids missing where ids count up by one "
            "(`datasets status --detail --refresh` lists the days)",
        )
    if "unknown" in spaces:
        return Check(
            "id spaces",
            WARN,
            f"{fig}; partitions written before id spaces were recorded: re-ingest them to record theirs",
        )
    return Check("id spaces", PASS, f"{fig}; no cross-source duplicates")


def check_funding(metrics: dict, config: RunConfig) -> Check:
    """Share of holding windows with funding prints."""
    cov = metrics.get("funding_coverage")
    if cov is None:
        return Check("funding", WARN, "no signal was held: coverage not measurable")
    fig = f"funding covers {cov:.0%} of the holding windows"
    if cov >= 1.0:
        return Check("funding", PASS, fig)
    if config.backtest.funding == "required":
        return Check("funding", FAIL, f"{fig}, and backtest.funding is 'required'")
    return Check("funding", WARN, f"{fig}; the rest are charged no funding (`datasets ingest funding`)")


def check_annualisation(metrics: dict) -> Check:
    """Span length vs the annualised figures it can support."""
    days = float(metrics["portfolio"].get("n_days") or 0.0)
    fig = f"span {days:.2f} days"
    if days < 1.0:
        return Check(
            "annualisation",
            FAIL,
            f"{fig}: under a day, portfolio figures are noise (Sharpe, Sortino and CAGR are left null)",
        )
    if days < MIN_DAYS_CAGR:
        what = "Sharpe/Sortino and CAGR" if days < MIN_DAYS_SHARPE else "CAGR"
        return Check("annualisation", WARN, f"{fig}: {what} left null (need {MIN_DAYS_SHARPE} / {MIN_DAYS_CAGR} days)")
    return Check("annualisation", PASS, f"{fig}: daily returns, 365 a year")


def check_in_sample(config: RunConfig, tracking_uri: str | None = None) -> Check:
    """The span against the train/validation ranges of ``model.uri`` (from the model's lineage)."""
    from bt.registry import in_sample_message, in_sample_overlap
    from bt.run import in_sample_guard, span_ms

    uri = config.model.uri if config.model is not None else None
    if not uri:
        return Check(
            "in-sample",
            PASS,
            "no registered model (model.uri not set): a model trained by the run is scored on its test part only",
        )
    bundle, _ = in_sample_guard(config, allow_in_sample=True, quiet=True, tracking_uri=tracking_uri)
    lineage = getattr(bundle, "lineage", None)
    if lineage is None:
        return Check("in-sample", WARN, f"{uri} carries no lineage: its training ranges are unknown")
    lo, hi = span_ms(config)
    overlaps = in_sample_overlap(lineage, lo, hi)
    if overlaps:
        label = f"{config.data.start}..{config.data.end}"
        return Check("in-sample", FAIL, in_sample_message(uri, overlaps, label))
    return Check("in-sample", PASS, f"span is outside the train and validation ranges of {uri}")


def audit(config: RunConfig, *, samples: int = 12, seed: int = 0, tracking_uri: str | None = None) -> list[Check]:
    """Run every check on ``config``; the backtest runs into a scratch folder, nothing is kept."""
    from bt.run import run_backtest
    from datasets.build import load_trades, span_holes
    from datasets.lake import Lake
    from datasets.quality import span_id_report

    if config.data.is_universe:
        raise UserError("bt audit checks one symbol (data.symbol); audit a universe's members one at a time")
    checks: list[Check] = []
    lake = Lake(config.data.lake)
    d = config.data
    span = load_trades(lake, d.exchange, d.symbol, d.start, d.end)
    checks.append(
        check_causality(
            span.ts_ms,
            span.price,
            span.qty,
            span.side,
            kernel_detector(config.signal.whale.to_dict()),
            samples=samples,
            seed=seed,
        )
    )
    checks.append(check_in_sample(config, tracking_uri))
    checks.append(check_id_spaces(span_id_report(lake, span.partitions)))
    # Measure with missing funding charged as zero and in-sample signals split off; the checks
    # then judge the config's own rules.
    measured = config.model_copy(update={"backtest": config.backtest.model_copy(update={"funding": "optional"})})
    with tempfile.TemporaryDirectory(prefix="whalebt-audit-") as tmp:
        try:
            result = run_backtest(
                measured,
                results_dir=tmp,
                log_mlflow=False,
                tearsheet=False,
                quiet=True,
                allow_in_sample=True,
                tracking_uri=tracking_uri,
            )
        except UserError as exc:
            checks.append(Check("backtest", FAIL, f"bt run refuses this config: {exc}"))
            return checks
    m = result.metrics
    checks.append(check_clusters(m))
    checks.append(check_coverage(span_holes(span), m))
    checks.append(check_funding(m, config))
    checks.append(check_annualisation(m))
    return checks
