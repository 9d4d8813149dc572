"""`bt run`: one config → events → signals → event study → portfolio → results/<run_id>/.

The steps are plain functions; :func:`run_backtest` strings them together, writes the run
folder and logs it to MLflow. Reports read the folder afterwards; they never recompute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bt.config import RunConfig
from bt.engine import Costs, FundingSeries, event_study
from bt.metrics import event_metrics, portfolio_metrics, signal_clusters
from bt.portfolio import PortfolioResult, simulate_portfolio
from bt.universe import UniverseSignals
from whalebt.cli import UserError
from datasets.build import (
    DataHolesError,
    DayTape,
    TradeSpan,
    ensure_gold,
    holes_line,
    open_tape,
    refresh_silver,
    tape_gold_events,
    span_holes,
    stale_silver_days,
    tape_ends_ms,
)
from datasets.durations import format_duration, parse_duration_ms
from datasets.lake import Lake
from datasets.tape import SubTape
from signals.journal import decide, journal_line, journal_record
from signals.outcome import DROP_KINDS, EXIT_REASONS

__all__ = [
    "RunResult",
    "SignalSet",
    "SymbolStudy",
    "compute_signals",
    "study_symbol",
    "run_backtest",
    "DEFAULT_RESULTS",
]

DEFAULT_RESULTS = "results"


@dataclass
class SignalSet:
    """Whale events of a config with the model's verdict on each."""

    span: TradeSpan | DayTape  # a DayTape in bt run / bt signals (read day by day), a TradeSpan from a worker
    events: pd.DataFrame  # gold rows + prob + decision + trade index
    config_id: str
    model_uri: str | None
    threshold: float | None
    gold_cached: bool
    model_metrics: dict | None = None  # validation/test figures of a model trained by the run
    oos_from_ms: int | None = None  # a trained model's test boundary: events before it were dropped
    model_lineage: dict | None = None  # a registered model's lineage (train/validation/test ranges)
    threshold_curve: dict | None = None  # a model trained by the run: validation curve (bt.model.threshold_curve)

    def journal(self) -> list[dict]:
        ev = self.events
        return [
            journal_record(
                exchange=self.span.exchange,
                symbol=self.span.symbol,
                trade_id=t,
                ts_ms=ts,
                price=p,
                notional_usd=nu,
                prob=None if np.isnan(pr) else pr,
                decision=d,
                config_id=self.config_id,
                model=self.model_uri,
            )
            for t, ts, p, nu, pr, d in zip(
                ev["trade_id"].to_numpy(),
                ev["ts_ms"].to_numpy(),
                ev["price"].to_numpy(),
                ev["notional_usd"].to_numpy(),
                ev["prob"].to_numpy(),
                ev["decision"].to_numpy(),
            )
        ]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    metrics: dict
    study: pd.DataFrame
    portfolio: PortfolioResult
    signals: SignalSet | UniverseSignals
    timings_s: dict = field(default_factory=dict)
    mlflow_run_id: str | None = None


class UniverseModelError(UserError):
    """A model cannot be trained over a universe (no trades, or no training events)."""


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def compute_signals(
    config: RunConfig,
    *,
    lake: Lake | None = None,
    quiet: bool = True,
    bundle=None,
    verdict=None,
    jobs: int = 1,
    fused: "FusedStudy | None" = None,
) -> SignalSet:
    """Open the trades day by day, build (or reuse) silver and gold, and decide each whale event.

    The trades are a :class:`datasets.tape.DayTape`: silver and gold are built one day at a time
    (the kernel's state carried across days), so memory does not grow with the span.

    ``bundle``: the already loaded registered model of ``model.uri`` (loaded here otherwise).
    ``verdict``: a :class:`bt.model.ModelVerdict` decided elsewhere (a universe's pooled model).
    ``jobs`` > 1: gold is built in day chunks on that many processes (:mod:`bt.chunks`, same events).
    ``fused``: a :class:`FusedStudy` of the config, bound here to the tape (a day tape; else left
    unbound): every event is studied in the same pass over the days as gold (or, gold cached, as
    the events' trade indices).
    """
    lake = lake or Lake(config.data.lake)
    d = config.data
    span = open_tape(lake, d.exchange, d.symbol, d.start, d.end)
    if fused is not None and isinstance(span, DayTape):
        fused.bind(span)
    else:
        fused = None
    _say(f"opened {len(span):,} trades of {d.exchange}/{d.symbol} in {len(span.partitions)} daily partitions", quiet)
    bt = config.backtest
    whale = config.signal.whale.to_dict()
    events_fn: Callable[[DayTape], pd.DataFrame] | None = None
    stale: list[int] = []
    if not isinstance(span, DayTape):
        refresh_silver(lake, span)  # first: gold over a whole span does not build it
    else:
        stale = stale_silver_days(lake, span)
        # One pass over the days: silver, gold's rows and outcome windows (and the event study's,
        # ``fused``) from each day's arrays read once; the kernel in it, or in day chunks before it.
        on_day = None if fused is None else fused.add_gold_day

        def events_fn(tape: DayTape) -> pd.DataFrame:
            hs, lat, silver = bt.all_horizons_ms, bt.entry_latency_ms, (lake, stale)
            if jobs > 1:
                from bt.chunks import chunked_gold_events

                return chunked_gold_events(tape, whale, hs, lat, jobs, silver=silver, on_day=on_day)
            return tape_gold_events(tape, whale, hs, lat, silver=silver, on_day=on_day)

    events, cached = ensure_gold(
        lake, span, whale, bt.all_horizons_ms, bt.entry_latency_ms, d.start, events_fn=events_fn
    )
    if cached and stale:
        refresh_silver(lake, span, stale)
    _say(f"{len(events):,} whale events ({'cached gold' if cached else 'built gold'})", quiet)
    events = events.copy()
    if fused is not None and cached:
        fused.add_cached(events)
    events["trade_idx"] = fused.trade_index(len(events)) if fused is not None else _trade_index(span, events)
    prob = np.full(len(events), np.nan)
    threshold = None
    model_uri = None
    model_metrics = None
    oos_from_ms = None
    lineage = None
    curve = None
    if config.model is not None:
        from bt.model import apply_model

        uri = config.model.uri
        if verdict is None and uri and bundle is None:
            from bt.registry import load_bundle

            bundle = load_bundle(uri)
        if verdict is None:
            verdict = apply_model(config, events, span, bundle=bundle)
        lineage = verdict.lineage
        prob, threshold, model_uri = verdict.prob, verdict.threshold, verdict.model_uri
        model_metrics, oos_from_ms = verdict.metrics, verdict.oos_from_ms
        curve = verdict.threshold_curve
        if oos_from_ms is not None:
            # A model trained by this run: only events from its test boundary on are out of sample.
            keep = events["ts_ms"].to_numpy(np.int64) >= oos_from_ms
            _say(
                f"model trained by this run: keeping the {int(keep.sum()):,} out-of-sample events "
                f"from {pd.Timestamp(oos_from_ms, unit='ms', tz='UTC')} on",
                quiet,
            )
            events, prob = events[keep].reset_index(drop=True), prob[keep]
    events["prob"] = prob
    events["decision"] = [decide(None if np.isnan(p) else p, threshold) for p in prob]
    return SignalSet(
        span, events, config.config_id, model_uri, threshold, cached, model_metrics, oos_from_ms, lineage, curve
    )


def _signals_task(task: tuple[RunConfig, object]) -> SignalSet:
    from bt.parallel import context

    member, verdict = task
    ctx = context()
    sig = compute_signals(member, quiet=bool(ctx.get("quiet", True)), bundle=ctx.get("bundle"), verdict=verdict)
    return replace(sig, span=_slim_span(sig.span, True))


def universe_signals(config: RunConfig, *, quiet: bool = True, jobs: int | None = None) -> UniverseSignals:
    """:func:`compute_signals` of every member of a universe (``jobs`` processes); ``bt signals`` of a universe.

    A model trained by the run is trained once over the universe (as ``bt run`` does).
    """
    from bt.parallel import check_jobs, run_tasks
    from bt.universe import resolve_universe

    n_jobs = check_jobs(jobs)
    config = resolve_universe(config, quiet=quiet)
    bundle = None
    if config.model is not None and config.model.uri:
        from bt.registry import load_bundle

        bundle = load_bundle(config.model.uri)
    members = [config.for_member(ex, sym) for ex, sym in config.data.members]
    verdicts: list = [None] * len(members)
    if config.model is not None and not config.model.uri:
        verdicts = _pooled_verdicts(members, config, n_jobs, quiet)
    sigs = run_tasks(_signals_task, list(zip(members, verdicts)), n_jobs, context={"bundle": bundle, "quiet": quiet})
    return UniverseSignals(sigs, config.config_id, sigs[0].model_uri, sigs[0].threshold)


def span_ms(config: RunConfig) -> tuple[int, int]:
    """``[start 00:00, end + 1 day)`` of the config's data span, in ms UTC."""
    start = int(pd.Timestamp(config.data.start, tz="UTC").value // 1_000_000)
    return start, int(pd.Timestamp(config.data.end, tz="UTC").value // 1_000_000) + 86_400_000


def in_sample_guard(
    config: RunConfig, *, allow_in_sample: bool = False, quiet: bool = False, tracking_uri: str | None = None
):
    """Load ``model.uri`` and refuse a span overlapping its train or validation data.

    Returns ``(bundle, overlaps)``; ``(None, [])`` without a registered model. Raises
    :class:`bt.registry.InSampleSpan` (one ``Error:`` line) on an overlap unless
    ``allow_in_sample``. A model without lineage gets a one-line warning and runs.
    """

    if config.model is None:
        return None, []
    uri = config.model.uri
    if not uri:
        return None, []
    from bt.registry import check_in_sample, load_bundle

    if tracking_uri:
        from bt.registry import connect

        connect(tracking_uri)
    bundle = load_bundle(uri)
    lo, hi = span_ms(config)
    overlaps, warning = check_in_sample(
        uri, bundle.lineage, lo, hi, f"{config.data.start}..{config.data.end}", allow=allow_in_sample
    )
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if overlaps:
        _say(
            f"warning: --allow-in-sample: signals inside {uri}'s "
            + " and ".join(o["part"] for o in overlaps)
            + " ranges are reported apart (metrics.json in_sample); the headline is out of sample",
            quiet,
        )
    return bundle, overlaps


def _trade_index(span: TradeSpan | DayTape, events: pd.DataFrame) -> np.ndarray:
    """Position of each event's trade in the span (events are trades of the span)."""
    if isinstance(span, DayTape):
        return span.trade_index(events["ts_ms"].to_numpy(np.int64), events["trade_id"].to_numpy(np.int64))
    ts = span.ts_ms
    lo = np.searchsorted(ts, events["ts_ms"].to_numpy(np.int64), side="left")
    hi = np.searchsorted(ts, events["ts_ms"].to_numpy(np.int64), side="right")
    want = events["trade_id"].to_numpy(np.int64)
    out = np.empty(len(events), np.int64)
    for j in range(len(events)):
        seg = span.trade_id[lo[j] : hi[j]]
        hit = np.flatnonzero(seg == want[j])
        if hit.size == 0:
            raise RuntimeError(f"gold event trade {want[j]} is not in bronze; rebuild gold")
        out[j] = lo[j] + hit[0]
    return out


def _load_funding(lake: Lake, span: TradeSpan | DayTape) -> FundingSeries | None:
    """Funding prints of the venue positions are held on, or None (with no data in the lake)."""
    from datasets.sources.funding import read_funding

    first, last = span.first_ts_ms, span.last_ts_ms
    assert first is not None and last is not None
    df = read_funding(lake, span.exchange, span.symbol, first, last + 86_400_000)
    if df is None or df.empty:
        return None
    return FundingSeries(df["ts_ms"].to_numpy(), df["rate"].to_numpy())


def funding_coverage(primary: pd.DataFrame, funding: FundingSeries | None) -> float | None:
    """Share of the signals with an exit whose holding window the funding history spans.

    A window is covered when no settlement can fall inside it unseen: the stored prints reach
    from at most one funding interval before the entry to beyond the exit (see
    :func:`bt.funding.funding_covered`; the interval is the prints' median spacing, 8 h with
    fewer than two prints). None without signals; 0.0 without any funding data.
    """
    from bt.funding import funding_covered

    held = primary[primary["exit_idx"].to_numpy() >= 0]
    if held.empty:
        return None
    if funding is None or not len(funding):
        return 0.0
    interval = int(np.median(np.diff(funding.ts_ms))) if len(funding) > 1 else 8 * 3_600_000
    ok = funding_covered(
        held["entry_ts_ms"].to_numpy(np.int64),
        held["exit_ts_ms"].to_numpy(np.int64),
        funding.ts_ms,
        interval_ms=interval,
    )
    return float(ok.mean())


class FundingMissingError(UserError):
    """``backtest.funding: required`` and the lake lacks funding for some holding windows."""


def _check_funding(
    coverage: float | None, funding: FundingSeries | None, mode: str, span: TradeSpan | DayTape, quiet: bool
) -> None:
    """One warning line (or, with ``backtest.funding: required``, an error) when funding is missing."""
    if coverage is None or coverage >= 1.0:
        return
    days = pd.to_datetime([span.first_ts_ms, span.last_ts_ms], unit="ms", utc=True).date
    how = (
        f"`datasets ingest funding --exchange {span.exchange} --symbol {span.symbol} --start {days[0]} --end {days[1]}`"
    )
    none = funding is None or not len(funding)
    what = (
        "no funding data in the lake for this symbol"
        if none
        else f"funding prints cover {coverage:.1%} of the signals' holding windows"
    )
    rest = "returns exclude funding" if none else "the others are charged no funding"
    if mode == "required":
        raise FundingMissingError(
            f"{what}, and backtest.funding is 'required'; ingest it with {how}, "
            "or set backtest.funding: optional to charge missing funding as zero"
        )
    _say(
        f"warning: {what}: {rest} (funding_coverage {coverage:.2f} in "
        f"metrics.json); ingest it with {how}, or set backtest.funding: required to refuse",
        quiet,
    )


@dataclass
class SymbolStudy:
    """One symbol's event study with everything a single-symbol run writes (and a universe pools)."""

    config: RunConfig  # the single-symbol config
    sig: SignalSet
    study: pd.DataFrame
    primary: pd.DataFrame  # headline rows of the primary horizon
    price_span: TradeSpan | DayTape
    funding: FundingSeries | None
    coverage: float | None
    holes: list[dict]
    pf: PortfolioResult
    span_ms: tuple[int, int]  # the portfolio's [start, end)
    metrics: dict  # exactly the metrics.json of this symbol run alone
    timings: dict = field(default_factory=dict)
    #: A DayTape price span: the trades the portfolio marks and the report read (one pass over the days).
    marks: SubTape | None = None
    #: A universe member of a model run: its report's calibration rows (:func:`_calibration`), made in its task.
    calibration: pd.DataFrame | None = None


def run_backtest(
    config: RunConfig,
    *,
    results_dir: str | os.PathLike[str] = DEFAULT_RESULTS,
    tracking_uri: str | None = None,
    log_mlflow: bool = True,
    tearsheet: bool = True,
    quiet: bool = False,
    allow_in_sample: bool = False,
    strict: bool = False,
    new_run: bool = False,
    jobs: int | None = None,
    engine: str | None = "local",
    spark_master: str | None = None,
) -> RunResult:
    """Run a config end to end and write ``results/<run_id>/``.

    Data with holes (requested days without a partition, or stored days their sources did not
    cover for a minute or more; :func:`datasets.build.span_holes`) still runs, with one warning
    line on stderr; ``strict`` refuses it (:class:`~datasets.build.DataHolesError`) before
    anything is written. Signals whose outcome window crosses uncovered time are dropped and
    counted in ``metrics["dropped"]``.

    Files: ``config.yaml`` (resolved), ``metrics.json``, ``signals.jsonl`` (docs/spec.md §5 journal),
    ``trades.parquet`` (event study, every horizon), ``positions.parquet``, ``equity.parquet``
    (equity and the mark price at each bar end), ``tearsheet.html`` (quantstats) and ``report.html``
    (:mod:`bt.evaluation`, with the frames it reads: ``paths.parquet``, ``price.parquet``; model runs
    ``calibration.parquet``, and ``threshold_curve.parquet`` for a model trained by the run).

    With a registered model (``model.uri``) whose train or validation range the span overlaps,
    the run is refused (:class:`bt.registry.InSampleSpan`) unless ``allow_in_sample``; then the
    signals inside those ranges go to ``metrics["in_sample"]``, the rest to
    ``metrics["out_of_sample"]``, and every headline figure (top level, ``by_horizon``,
    portfolio) is out of sample.

    MLflow (``log_mlflow``): the run logged before for the same resolved config and the same
    data (content hashes) is updated in place; ``new_run`` logs a new one (:mod:`bt.tracking`).

    A universe (``data.symbols`` / ``data.universe``) runs one study per symbol (``jobs``
    processes, default all cores; :mod:`bt.universe` pools them). A single symbol with ``jobs``
    given builds its gold in day chunks on that many processes (:mod:`bt.chunks`; same events);
    without it, in this process.

    ``engine="spark"`` runs each symbol's study (signals, event study, portfolio, metrics) as
    one Spark task on ``spark_master`` (:mod:`whalebt.engine`); the pooling and the run folder
    stay in this process, so the files equal the local engine's.
    """
    from bt.runfolder import clean_stale_run_folders
    from whalebt.engine import check_engine

    engine = check_engine(engine, spark_master)

    clean_stale_run_folders(results_dir)  # scratch folders of killed runs (bt.runfolder)
    if config.data.is_universe:
        return run_universe(
            config,
            results_dir=Path(results_dir),
            tracking_uri=tracking_uri,
            log_mlflow=log_mlflow,
            tearsheet=tearsheet,
            quiet=quiet,
            allow_in_sample=allow_in_sample,
            strict=strict,
            jobs=jobs,
            new_run=new_run,
            engine=engine,
            spark_master=spark_master,
        )
    from bt.background import Worker

    t0 = time.perf_counter()
    # Child processes import quantstats and MLflow (and open the store) while the run computes
    # (bt.background). A process that already imported quantstats (a notebook) draws in place.
    workers: dict[str, Worker] = {}
    try:
        if tearsheet and "quantstats" not in sys.modules:
            workers["tearsheet"] = Worker("tearsheet")
        if log_mlflow:
            workers["mlflow"] = Worker("mlflow", tracking_uri)
        return _run_single(
            config,
            t0,
            workers,
            results_dir,
            tracking_uri,
            log_mlflow,
            tearsheet,
            quiet,
            allow_in_sample,
            strict,
            new_run,
            engine,
            spark_master,
            jobs,
        )
    finally:
        for w in workers.values():
            w.cancel()


def _run_single(
    config: RunConfig,
    t0: float,
    workers: dict,
    results_dir: str | os.PathLike[str],
    tracking_uri: str | None,
    log_mlflow: bool,
    tearsheet: bool,
    quiet: bool,
    allow_in_sample: bool,
    strict: bool,
    new_run: bool,
    engine: str = "local",
    spark_master: str | None = None,
    jobs: int | None = None,
) -> RunResult:
    """One symbol's run: :func:`study_symbol`, then the run folder and MLflow.

    ``jobs``: processes for the gold's day chunks (None: this process). With ``engine="spark"``
    the study is one Spark task (the symbol is the one unit there is).
    """
    from bt.parallel import check_jobs

    lake = Lake(config.data.lake)
    bundle, overlaps = in_sample_guard(config, allow_in_sample=allow_in_sample, quiet=quiet, tracking_uri=tracking_uri)
    if engine == "spark":
        from bt.parallel import run_tasks

        ctx = {"bundle": bundle, "overlaps": overlaps, "quiet": quiet, "strict": strict}
        st = run_tasks(_study_task, [(config, None, None)], jobs, context=ctx, engine=engine, master=spark_master)[0]
    else:
        n_chunks = 1 if jobs is None else check_jobs(jobs)
        st = study_symbol(
            config, lake=lake, bundle=bundle, overlaps=overlaps, quiet=quiet, strict=strict, t0=t0, jobs=n_chunks
        )
    timings, metrics, sig, study, pf, price_span = st.timings, st.metrics, st.sig, st.study, st.pf, st.price_span
    mlflow_worker = workers.get("mlflow") if log_mlflow else None
    if mlflow_worker is not None:
        # The MLflow child logs the params, metrics and dataset input while the files are written
        # and the tearsheet drawn; the folder follows (_log_mlflow) once it is in place.
        mlflow_worker.send(
            {"config": config, "metrics": metrics, "tracking_uri": tracking_uri, "new_run": new_run}, last=False
        )
    try:
        t3 = time.perf_counter()
        artefacts = _report_artefacts(
            config, sig, study, _study_fn(config, price_span, st.funding), price_span, st.funding, st.span_ms, st.marks
        )
        benchmark = None
        if len(price_span):
            from bt.report import price_on_bars

            # The equity's index is the portfolio's start and bar ends: st.marks holds their trades.
            tape = (st.marks.ts_ms, st.marks.price) if st.marks is not None else (price_span.ts_ms, price_span.price)
            benchmark = price_on_bars(pf.equity.index, *tape)
        timings["report_data_s"] = time.perf_counter() - t3
        run_dir = _write_run(
            config,
            metrics,
            sig,
            study,
            pf,
            Path(results_dir),
            tearsheet,
            quiet,
            artefacts,
            benchmark,
            timings,
            workers.get("tearsheet"),
        )
    except BaseException:
        if mlflow_worker is not None:  # the MLflow run is marked FAILED, with no new files
            with contextlib.suppress(Exception):
                mlflow_worker.send(None)
                mlflow_worker.result()
        raise
    timings["total_s"] = time.perf_counter() - t0
    result = RunResult(config.run_id, run_dir, metrics, study, pf, sig, timings)
    if log_mlflow:
        _log_mlflow(result, config, tracking_uri, new_run, quiet, mlflow_worker)
    return result


def _log_mlflow(
    result: RunResult, config: RunConfig, tracking_uri: str | None, new_run: bool, quiet: bool, worker=None
) -> None:
    """Log (or update: same config, same data) the run's MLflow run (:mod:`bt.tracking`).

    ``worker``: a :class:`bt.background.Worker` of kind ``mlflow`` that was sent the config and
    metrics (:func:`_run_single`) and gets the run folder now (else logged in process).
    """
    t4 = time.perf_counter()
    if worker is not None:
        worker.send(result.run_dir)
        logged = worker.result()
    else:
        from bt.tracking import log_backtest

        logged = log_backtest(config, result.metrics, result.run_dir, tracking_uri=tracking_uri, new_run=new_run)
    result.mlflow_run_id = logged.run_id
    result.timings_s["mlflow_s"] = time.perf_counter() - t4
    what = "updated (same config and data; --new-run adds a copy)" if logged.updated else "logged"
    _say(f"MLflow run {logged.run_id} {what}" + (f": {logged.url}" if logged.url else ""), quiet)


def _study_fn(config: RunConfig, price_span: TradeSpan | DayTape, funding: FundingSeries | None):
    """``study_of(idx, trigger_ts, horizons)``: the event study over the config's price tape.

    Over a :class:`~datasets.tape.DayTape`, each trigger day's signals are studied on the trades
    of their outcome windows only (:meth:`~datasets.tape.DayTape.windows`) and the rows put back
    in the whole-span order with global indices: the same table as over the whole span.
    """
    bt = config.backtest
    study = _study_rows(config, price_span, funding)

    def study_of(idx: np.ndarray, ts: np.ndarray | None, hs: list[int]) -> pd.DataFrame:
        if not isinstance(price_span, DayTape):
            return study(price_span.ts_ms, price_span.price, idx, ts, hs)
        return _windowed_study(price_span, np.asarray(idx, dtype=np.int64), ts, hs, study, bt.entry_latency_ms)

    return study_of


def _study_rows(config: RunConfig, price_span: TradeSpan | DayTape, funding: FundingSeries | None):
    """``study(ts_ms, price, idx, trigger_ts, horizons)``: :func:`bt.engine.event_study` with the
    config's costs and rules, the funding and the price tape's coverage, on given trades."""
    bt = config.backtest

    def study(ts_ms: np.ndarray, price: np.ndarray, idx: np.ndarray, ts: np.ndarray | None, hs: list[int]):
        return event_study(
            ts_ms,
            price,
            idx,
            horizons_ms=hs,
            latency_ms=bt.entry_latency_ms,
            costs=Costs.from_bps(bt.fee_bps, bt.slippage_bps),
            label_threshold=bt.label_threshold,
            take_profit=bt.take_profit,
            stop_loss=bt.stop_loss,
            funding=funding,
            trigger_ts_ms=ts,
            coverage=price_span.coverage,
        )

    return study


def _windowed_study(
    tape: DayTape, idx: np.ndarray, ts: np.ndarray | None, hs: list[int], study, latency_ms: int
) -> pd.DataFrame:
    """:func:`bt.engine.event_study` of triggers ``idx`` over a tape, one trigger day at a time."""
    n = idx.size
    reach = max(hs, default=0)
    parts = []
    trig = None if ts is None else np.asarray(ts, dtype=np.int64)
    for sel, off, w_ts, w_px, local, w_trig in tape.windows(trig, idx, latency_ms, reach):
        f = study(w_ts, w_px, local, w_trig, hs)
        sig = f["signal"].to_numpy(np.int64)
        f["signal"] = sel[sig].astype(np.int64)
        f["trigger_idx"] = idx[sel][sig]
        for col in ("entry_idx", "exit_idx"):
            v = f[col].to_numpy(np.int64)
            f[col] = np.where(v >= 0, v + off, v)
        f["_k"] = np.repeat(np.arange(len(hs), dtype=np.int64), sel.size)
        parts.append(f)
    if not parts:
        return study(np.empty(0, np.int64), np.empty(0), idx, np.empty(0, np.int64) if trig is None else trig, hs)
    out = pd.concat(parts, ignore_index=True)
    order = np.argsort(out["_k"].to_numpy(np.int64) * max(n, 1) + out["signal"].to_numpy(np.int64), kind="stable")
    return out.iloc[order].drop(columns="_k").reset_index(drop=True)


class FusedStudy:
    """The event study of every gold event of a tape, made on trades another pass reads anyway.

    Gold built by this run: on the outcome windows gold's forward returns were read from
    (:func:`datasets.build.tape_gold_events`' ``on_day``, while those days are loaded). Gold
    cached: each trigger day's windows are read right after that day's events are looked up
    (:meth:`~datasets.tape.DayTape.trade_index`), so the tape's cache serves both. Either way the
    events' trade indices come out of the same pass (:meth:`trade_index`), and :meth:`of` gives
    the study of some of them (the long signals): the rows :func:`_windowed_study` makes of those
    triggers, bit for bit (an outcome's entry and exit are the same trades on any window holding
    it). Made unbound; :func:`compute_signals` binds it to the tape it opens (:meth:`bind`).
    """

    def __init__(self, config: RunConfig, lake: Lake) -> None:
        self.config, self.lake = config, lake
        self.hs, self.latency_ms = list(config.backtest.all_horizons_ms), int(config.backtest.entry_latency_ms)
        self.tape: DayTape | None = None
        self.funding: FundingSeries | None = None
        self._pos: list[np.ndarray] = []  # events' positions, group by group
        self._idx: list[np.ndarray] = []  # ... and their trades' global indices
        self._parts: list[pd.DataFrame] = []
        self._n = 0  # gold events seen (gold built by this run)
        self._table: pd.DataFrame | None = None

    def bind(self, tape: DayTape) -> None:
        """Study the events of ``tape``: its funding is read now (the study's rows need it)."""
        self.tape = tape
        self.funding = _load_funding(self.lake, tape) if len(tape) else None
        self.study = _study_rows(self.config, tape, self.funding)

    def _group(self, pos: np.ndarray, tix: np.ndarray, windows=None) -> None:
        assert self.tape is not None
        self._pos.append(pos)
        self._idx.append(tix)
        if windows is None:
            windows = self.tape.windows(None, tix, self.latency_ms, max(self.hs, default=0))
        for sel, off, ts, px, local, trig in windows:
            f = self.study(ts, px, local, trig, self.hs)
            sig = f["signal"].to_numpy(np.int64)
            f["signal"] = pos[sel][sig].astype(np.int64)
            f["trigger_idx"] = tix[sel][sig]
            for col in ("entry_idx", "exit_idx"):
                v = f[col].to_numpy(np.int64)
                f[col] = np.where(v >= 0, v + off, v)
            f["_k"] = np.repeat(np.arange(len(self.hs), dtype=np.int64), sel.size)
            self._parts.append(f)

    def add_gold_day(self, ev, frame: pd.DataFrame, windows: list[tuple]) -> None:
        """One day of gold built by this run: its kernel events, their gold rows, gold's windows."""
        assert self.tape is not None
        pos = self._n + np.arange(len(ev.idx), dtype=np.int64)
        self._n += len(ev.idx)
        tix = self.tape.trade_index(frame["ts_ms"].to_numpy(np.int64), frame["trade_id"].to_numpy(np.int64))
        # An event's trade is the first of its (time, id) on the tape; else gold's windows are not its own.
        self._group(pos, tix, windows if np.array_equal(tix, ev.idx) else None)

    def add_cached(self, events: pd.DataFrame) -> None:
        """Cached gold: the events' trade indices and their outcome windows, one trigger day at a time."""
        assert self.tape is not None
        ts, tid = events["ts_ms"].to_numpy(np.int64), events["trade_id"].to_numpy(np.int64)
        kday = self.tape.day_at(ts)
        for k in np.unique(kday):
            at = np.flatnonzero(kday == k).astype(np.int64)
            self._group(at, self.tape.trade_index(ts[at], tid[at]))

    def trade_index(self, n: int) -> np.ndarray:
        """The global trade index of each of the ``n`` events (:func:`_trade_index`)."""
        pos = np.concatenate(self._pos) if self._pos else np.empty(0, np.int64)
        if pos.size != n or np.unique(pos).size != n:
            raise RuntimeError(f"the fused pass saw {pos.size} events, not the {n} of gold")
        out = np.empty(n, np.int64)
        out[pos] = np.concatenate(self._idx) if self._idx else np.empty(0, np.int64)
        return out

    def of(self, idx: np.ndarray) -> pd.DataFrame | None:
        """The study of triggers ``idx`` (trade indices of some events, in the events' order), or
        None when they are not such a subsequence (the caller then studies them itself)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0 or not self._parts:
            return None
        every = self.trade_index(sum(p.size for p in self._pos))
        if (np.diff(every) <= 0).any():
            return None
        pos = np.searchsorted(every, idx)
        if (pos >= every.size).any() or not np.array_equal(every[np.minimum(pos, every.size - 1)], idx):
            return None
        if (np.diff(pos) <= 0).any():
            return None
        if self._table is None:
            out = pd.concat(self._parts, ignore_index=True)
            order = np.argsort(
                out["_k"].to_numpy(np.int64) * max(every.size, 1) + out["signal"].to_numpy(np.int64), kind="stable"
            )
            self._table = out.iloc[order].drop(columns="_k").reset_index(drop=True)
            self._parts = []
        t = self._table
        sig = t["signal"].to_numpy(np.int64)
        keep = np.isin(sig, pos)
        sub = t[keep].reset_index(drop=True)
        sub["signal"] = np.searchsorted(pos, sig[keep]).astype(np.int64)
        return sub


def horizon_metrics(headline: pd.DataFrame, config: RunConfig) -> dict[str, dict]:
    """``by_horizon`` of metrics.json over the headline rows of an event study."""
    bt = config.backtest
    by_h = {}
    for h in bt.all_horizons_ms:
        rows = headline[headline["horizon_ms"] == h]
        by_h[format_duration(h)] = event_metrics(
            rows["net_return"].to_numpy(),
            rows["label"].to_numpy(),
            cluster=rows["cluster"].to_numpy(),
            n_boot=bt.bootstrap,
            seed=bt.seed,
        )
        reasons = rows["exit_reason"].astype(str).value_counts()
        by_h[format_duration(h)]["dropped"] = {
            name: int(reasons.get(EXIT_REASONS[code], 0)) for code, name in DROP_KINDS.items()
        }
    return by_h


def split_metrics_of(study: pd.DataFrame, config: RunConfig, overlaps: list[dict]) -> dict:
    """``in_sample`` / ``out_of_sample`` figures of a study with an ``in_sample`` column."""
    bt = config.backtest
    horizons = bt.all_horizons_ms
    split_metrics: dict = {}
    for name, want in (("in_sample", True), ("out_of_sample", False)):
        part = study[study["in_sample"] == want]
        prim = part[part["horizon_ms"] == horizons[0]]
        split_metrics[name] = {
            **event_metrics(
                prim["net_return"].to_numpy(),
                prim["label"].to_numpy(),
                cluster=prim["cluster"].to_numpy(),
                n_boot=bt.bootstrap,
                seed=bt.seed,
            ),
            "by_horizon": {
                format_duration(h): event_metrics(
                    part.loc[part["horizon_ms"] == h, "net_return"].to_numpy(),
                    part.loc[part["horizon_ms"] == h, "label"].to_numpy(),
                    cluster=part.loc[part["horizon_ms"] == h, "cluster"].to_numpy(),
                    n_boot=0,
                )
                for h in horizons
            },
        }
    split_metrics["in_sample"]["ranges_ms"] = {o["part"]: [o["from_ms"], o["to_ms"]] for o in overlaps}
    return split_metrics


def add_clusters(study: pd.DataFrame, horizons: list[int]) -> None:
    """Signals whose [trigger, exit] windows overlap form one cluster (per horizon), in place."""
    study["cluster"] = np.int64(-1)
    for h in horizons:
        at = (study["horizon_ms"] == h).to_numpy()
        rows = study[at]
        study.loc[at, "cluster"] = signal_clusters(
            rows["trigger_ts_ms"].to_numpy(np.int64), rows["exit_ts_ms"].to_numpy(np.int64)
        )


def portfolio_span_ms(
    config: RunConfig, first_ms: int | None, last_ms: int | None, oos_from_ms: int | None
) -> tuple[int, int]:
    """The portfolio's ``[start, end)``: the config's days, cut to the price tape's first second
    and last trade, and to a model's test span (``oos_from_ms``, a model trained by the run)."""
    start_ms = int(pd.Timestamp(config.data.start, tz="UTC").value // 1_000_000)
    end_ms = int(pd.Timestamp(config.data.end, tz="UTC").value // 1_000_000) + 86_400_000
    end_ms = min(end_ms, last_ms + 1) if last_ms is not None else end_ms
    start_ms = max(start_ms, first_ms // 1000 * 1000) if first_ms is not None else start_ms
    if oos_from_ms is not None:
        start_ms = max(start_ms, int(oos_from_ms))  # the portfolio covers the test span only
    return start_ms, end_ms


def _bar_queries(span_ms: tuple[int, int], bar_ms: int) -> list[np.ndarray]:
    """The times a portfolio over ``span_ms`` marks at: each bar end and the start (DayTape.sample)."""
    start_ms, end_ms = span_ms
    return [np.arange(start_ms + bar_ms, end_ms + bar_ms, bar_ms, dtype=np.int64), np.asarray([start_ms], np.int64)]


def study_symbol(
    config: RunConfig,
    *,
    lake: Lake,
    bundle=None,
    overlaps: list[dict] | None = None,
    quiet: bool = False,
    strict: bool = False,
    t0: float | None = None,
    verdict=None,
    jobs: int = 1,
    mark_span_ms: tuple[int, int] | None = None,
) -> SymbolStudy:
    """Signals, event study, portfolio and metrics of a single-symbol config (no files written).

    ``jobs`` > 1: gold is built in parallel day chunks (:func:`compute_signals`).
    ``mark_span_ms``: a universe's portfolio span (:func:`portfolio_span_ms` of every member):
    ``marks`` then also holds the trades that mark its bars, so pooling reads no tape."""
    t0 = time.perf_counter() if t0 is None else t0
    overlaps = overlaps or []
    timings: dict[str, float] = {}
    bt = config.backtest
    horizons = bt.all_horizons_ms
    d = config.data
    fused = None
    if not d.price_exchange or d.price_exchange == d.exchange:
        # Prices on the events' own tape: the event study of every event is made in the signals'
        # pass over the days (FusedStudy), so each day is read once for silver, gold and the study.
        fused = FusedStudy(config, lake)
    sig = compute_signals(config, lake=lake, quiet=quiet, bundle=bundle, verdict=verdict, jobs=jobs, fused=fused)
    if fused is not None and fused.tape is None:
        fused = None  # not a day tape
    timings["signals_s"] = time.perf_counter() - t0
    span, events = sig.span, sig.events
    longs = events[events["decision"] == "long"].reset_index(drop=True)
    # Prices: the events' own venue, or another one (cross-exchange view: whales on one venue,
    # positions on another); triggers then map to that venue's last trade at or before them.
    price_span, trig_idx, trig_ts = span, longs["trade_idx"].to_numpy(np.int64), None
    pe = config.data.price_exchange
    if pe and pe != config.data.exchange:
        price_span = open_tape(lake, pe, config.data.symbol, config.data.start, config.data.end)
        trig_ts = longs["ts_ms"].to_numpy(np.int64)
        trig_idx = _last_at_or_before(price_span, trig_ts)
        _say(
            f"cross-exchange view: events on {config.data.exchange}, entries and exits on {pe} "
            f"({len(price_span):,} trades)",
            quiet,
        )
    holes = _check_holes(config, span, price_span, strict)
    if fused is not None:
        funding = fused.funding
    else:
        funding = _load_funding(lake, price_span) if len(price_span) else None
    t1 = time.perf_counter()
    study_of = _study_fn(config, price_span, funding)
    study = fused.of(trig_idx) if fused is not None else None
    if study is None:
        study = study_of(trig_idx, trig_ts, horizons)
    for col in ("trade_id", "ts_ms", "price", "notional_usd", "prob"):
        study[f"trigger_{col}"] = longs[col].to_numpy()[study["signal"].to_numpy()]
    timings["event_study_s"] = time.perf_counter() - t1
    # Signals whose [trigger, exit] windows overlap form one cluster (per horizon): they share
    # their outcome, so they count once in n_independent and are resampled together.
    add_clusters(study, horizons)
    split_metrics = None
    if overlaps:
        from bt.registry import in_sample_mask

        study["in_sample"] = in_sample_mask(sig.model_lineage, study["trigger_ts_ms"].to_numpy(np.int64))
        split_metrics = split_metrics_of(study, config, overlaps)
    headline = study if split_metrics is None else study[~study["in_sample"]]
    primary = headline[headline["horizon_ms"] == horizons[0]]
    coverage = funding_coverage(primary, funding)
    _check_funding(coverage, funding, bt.funding, price_span, quiet)
    by_h = horizon_metrics(headline, config)
    t2 = time.perf_counter()
    start_ms, end_ms = portfolio_span_ms(config, price_span.first_ts_ms, price_span.last_ts_ms, sig.oos_from_ms)
    bar_ms = parse_duration_ms(config.portfolio.bar)
    marks = None
    if isinstance(price_span, DayTape):
        # One pass over the days for every price read from here on: the portfolio's marks (the
        # last trade at or before each bar end and the start), the report's (_report_queries)
        # and, in a universe, the marks of the pooled portfolio's bars (``mark_span_ms``).
        queries, ends = _report_queries(study, (start_ms, end_ms))
        spans = [(start_ms, end_ms)] + ([mark_span_ms] if mark_span_ms is not None else [])
        marks = price_span.sample([*(q for span in spans for q in _bar_queries(span, bar_ms)), *queries], ends)
    pf = simulate_portfolio(
        primary,
        *((marks.ts_ms, marks.price) if marks is not None else (price_span.ts_ms, price_span.price)),
        fee=bt.fee_bps / 1e4,
        init_cash=config.portfolio.init_cash,
        max_positions=config.portfolio.max_positions,
        bar_ms=bar_ms,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    timings["portfolio_s"] = time.perf_counter() - t2
    dropped = primary["exit_reason"].astype(str).str.startswith("dropped")
    metrics = {
        "run_id": config.run_id,
        "name": config.name,
        "config_id": sig.config_id,
        "model": sig.model_uri,
        "threshold": sig.threshold,
        "horizon": format_duration(horizons[0]),
        **by_h[format_duration(horizons[0])],
        "mean_funding_return": float(primary["funding_return"].mean()) if len(primary) else 0.0,
        "funding_coverage": coverage,
        "n_whale_events": int(len(events)),
        "n_dropped": int(dropped.sum()),
        "costs": {
            "fee_bps": bt.fee_bps,
            "slippage_bps": bt.slippage_bps,
            "entry_latency_ms": bt.entry_latency_ms,
            "funding": funding is not None,
        },
        "data": {
            "exchange": config.data.exchange,
            "symbol": config.data.symbol,
            "start": str(config.data.start),
            "end": str(config.data.end),
            "first_trade_ms": span.first_ts_ms,
            "last_trade_ms": span.last_ts_ms,
            "n_trades": len(span),
            "lake": lake.uri,
            "partitions": span.sources,
            "price_exchange": price_span.exchange,
            **({"price_partitions": price_span.sources} if price_span is not span else {}),
            "coverage": _coverage_summary(price_span),
            "holes": holes,
        },
        "by_horizon": by_h,
        "portfolio": portfolio_metrics(
            pf.equity,
            pf.exposure,
            len(pf.positions),
            pf.positions["position_return"].to_numpy(),
        ),
    }
    metrics["portfolio"].update(
        max_positions=config.portfolio.max_positions, bar=config.portfolio.bar, init_cash=config.portfolio.init_cash
    )
    if split_metrics is not None:
        metrics.update(split_metrics)
        metrics["headline"] = "out_of_sample"
    if sig.model_uri is not None:
        metrics["model_lineage"] = (
            None
            if sig.model_lineage is None
            else {k: sig.model_lineage.get(k) for k in ("exchange", "symbols", "ranges_ms", "partitions_sha256")}
        )
    if sig.model_metrics is not None:
        metrics["model_metrics"] = sig.model_metrics
        metrics["dsr"] = sig.model_metrics.get("dsr")
    return SymbolStudy(
        config,
        sig,
        study,
        primary,
        price_span,
        funding,
        coverage,
        holes,
        pf,
        (start_ms, end_ms),
        metrics,
        timings,
        marks,
    )


def _light(st: SymbolStudy, keep_px: bool = True) -> SymbolStudy:
    """The study without the arrays pooling does not read (sent back from a worker process).

    ``keep_px`` False: no trades at all (a universe member, whose ``marks`` hold what pooling reads)."""
    price_span = _slim_span(st.price_span, keep_px)
    span = price_span if st.sig.span is st.price_span else _slim_span(st.sig.span, False)
    return replace(st, sig=replace(st.sig, span=span), price_span=price_span)


def _slim_span(span: TradeSpan | DayTape, keep_px: bool) -> TradeSpan:
    """A span with only ``ts_ms``/``price`` (or no trades at all): what a worker sends back.

    A :class:`~datasets.tape.DayTape` is read whole here (universe pooling still needs every price).
    """
    empty_i, empty_f, empty_b = np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int8)
    if isinstance(span, DayTape):
        ts, px = (span.ts_ms, span.price) if keep_px else (empty_i, empty_f)
        span.release()
        return TradeSpan(
            span.exchange,
            span.symbol,
            empty_i,
            ts,
            px,
            empty_f,
            empty_b,
            span.partitions,
            span.sources,
            span.coverage,
            span.start,
            span.end,
        )
    out = replace(span, trade_id=empty_i, qty=empty_f, side=empty_b)
    if not keep_px:
        out = replace(out, ts_ms=empty_i, price=empty_f)
    return out


def _events_task(member: RunConfig):
    """A member's gold events and model table, for a model pooled over the universe."""
    from bt.model import events_frame_table
    from bt.parallel import context

    sig = compute_signals(member.model_copy(update={"model": None}), quiet=bool(context().get("quiet", True)))
    table, _ = events_frame_table(sig.events, sig.span.ts_ms, sig.span.price, member)
    first = int(sig.span.ts_ms[0]) if len(sig.span) else None
    last = int(sig.span.ts_ms[-1]) + 1 if len(sig.span) else None
    return sig.events, table, first, last


def _pooled_verdicts(
    members: list[RunConfig],
    config: RunConfig,
    jobs: int,
    quiet: bool,
    engine: str | None = "local",
    spark_master: str | None = None,
) -> list:
    """Train one model over every member's events (same purged time splits for all)."""
    from bt.model import train_pooled
    from bt.parallel import run_tasks

    got = run_tasks(_events_task, members, jobs, context={"quiet": quiet}, engine=engine, master=spark_master)
    firsts = [g[2] for g in got if g[2] is not None]
    lasts = [g[3] for g in got if g[3] is not None]
    if not firsts:
        raise UniverseModelError("no trades in the universe's span; nothing to train on")
    _say(f"training one model over {sum(len(g[1]) for g in got):,} events of {len(members)} symbols", quiet)
    try:
        return train_pooled(config, [g[0] for g in got], [g[1] for g in got], (min(firsts), max(lasts)))
    except ValueError as exc:
        raise UniverseModelError(str(exc)) from None


def warm_member(config: RunConfig) -> None:
    """Load the compiled kernels a member's study runs (numba's on-disk cache) into this process.

    Called before the member processes fork, so they inherit the kernels instead of each loading
    them (the first load in a process also starts numba's compiler, ~0.6 s of CPU per process).
    Each kernel is called on two trades in the array layouts the study passes: read-only day arrays
    (zero-copy from parquet) and writeable concatenated windows. The modules a study imports
    lazily are imported here too, for the same reason.
    """
    import importlib

    for name in ("bt.evaluation", "bt.funding", "datasets.sources.funding"):
        importlib.import_module(name)
    from signals import WhaleParams, run_batch
    from signals.outcome import entry_exit

    params = WhaleParams.from_dict(config.signal.whale.to_dict())
    for writeable in (False, True):
        ts, px = np.array([0, 1000], np.int64), np.array([1.0, 1.0])
        qty, side = np.array([1.0, 1.0]), np.array([1, -1], np.int8)
        for a in (ts, px, qty, side):
            a.setflags(write=writeable)
        if not writeable:
            run_batch(ts, px, qty, side, params)
        entry_exit(ts, px, np.array([0], np.int64), latency_ms=0, horizons_ms=[1000])
    pos = pd.DataFrame(
        {"entry_ts_ms": [0], "exit_ts_ms": [1000], "entry_price": [1.0], "exit_price": [1.0], "funding_return": [0.0]}
    ).assign(exit_idx=1, signal=0)
    simulate_portfolio(pos, ts, px, fee=0.0, init_cash=1.0, max_positions=1, bar_ms=1000, start_ms=0, end_ms=1000)


def _study_task(task: tuple[RunConfig, object, tuple[int, int] | None]) -> SymbolStudy:
    """One symbol's study (a :func:`bt.parallel.run_tasks` task): ``(member, verdict or None, pool span)``.

    A universe member (pool span given: the pooled portfolio's ``[start, end)``) does here what
    pooling would otherwise do over its whole tape, so the results sent back are small: its marks
    cover the pooled bars and its report's trades, and a model run's calibration rows are made here.
    Without a pool span (one symbol on Spark), the prices come back whole.
    """
    from bt.parallel import context

    member, verdict, pool_span = task
    ctx = context()
    st = study_symbol(
        member,
        verdict=verdict,
        lake=Lake(member.data.lake),
        bundle=ctx.get("bundle"),
        overlaps=ctx.get("overlaps"),
        quiet=bool(ctx.get("quiet", True)),
        strict=bool(ctx.get("strict", False)),
        mark_span_ms=pool_span,
    )
    if pool_span is None:
        return _light(st)
    if member.model is not None:
        study_of = _study_fn(member, st.price_span, st.funding)
        st = replace(st, calibration=_calibration(member, st.sig, st.study, study_of, st.price_span))
    return _light(st, keep_px=False)


def run_universe(
    config: RunConfig,
    *,
    results_dir: Path,
    tracking_uri: str | None,
    log_mlflow: bool,
    tearsheet: bool,
    quiet: bool,
    allow_in_sample: bool,
    strict: bool,
    jobs: int | None,
    new_run: bool = False,
    engine: str | None = "local",
    spark_master: str | None = None,
) -> RunResult:
    """A universe run: one :func:`study_symbol` per member (``jobs`` processes or Spark tasks), pooled.

    ``metrics["by_symbol"][member]`` is the member's single-symbol metrics.json; the headline
    pools every member's signals (clusters of overlapping windows across symbols), and the
    portfolio shares its slots and cash across symbols (:func:`bt.portfolio.simulate_universe`).
    """
    from bt.parallel import check_jobs, run_tasks
    from bt.portfolio import simulate_universe, warm_universe
    from bt.universe import (
        member_marks,
        equal_weight_benchmark,
        pooled_data,
        pooled_funding_coverage,
        pooled_paths,
        resolve_universe,
    )

    t0 = time.perf_counter()
    n_jobs = check_jobs(jobs)
    config = resolve_universe(config, quiet=quiet)
    lake = Lake(config.data.lake)
    bundle, overlaps = in_sample_guard(config, allow_in_sample=allow_in_sample, quiet=quiet, tracking_uri=tracking_uri)
    names = list(config.data.symbols or ())
    members = [config.for_member(ex, sym) for ex, sym in config.data.members]
    where = f"{min(n_jobs, len(members))} processes" if engine != "spark" else "Spark"
    _say(f"universe of {len(members)} symbols ({','.join(names)}) on {where}", quiet)
    verdicts: list = [None] * len(members)
    if config.model is not None and not config.model.uri:
        verdicts = _pooled_verdicts(members, config, n_jobs, quiet, engine, spark_master)
    spans = [_member_span_ms(m, lake, v) for m, v in zip(members, verdicts)]
    pool_span = (min(a for a, _ in spans), max(b for _, b in spans))
    if engine != "spark":
        warm_member(config)  # forked members inherit the loaded kernels (one process: loaded once either way)
    t_members = time.perf_counter()
    studies = run_tasks(
        _study_task,
        [(m, v, pool_span) for m, v in zip(members, verdicts)],
        n_jobs,
        context={"bundle": bundle, "overlaps": overlaps, "quiet": quiet, "strict": strict},
        meanwhile=warm_universe,  # the pooling's compiled code loads while the members run
        engine=engine,
        master=spark_master,
    )
    # members_s: the members' tasks alone (what --jobs divides); studies_s also counts the set-up before.
    timings: dict[str, float] = {"studies_s": time.perf_counter() - t0, "members_s": time.perf_counter() - t_members}
    bt = config.backtest
    horizons = bt.all_horizons_ms
    parts = []
    for i, st in enumerate(studies):
        part = st.study.copy()
        part.insert(0, "symbol", st.config.data.symbol)
        part.insert(0, "exchange", st.config.data.exchange)
        part["_member"] = np.int64(i)
        parts.append(part)
    study = pd.concat(parts, ignore_index=True)
    add_clusters(study, horizons)  # across symbols: overlapping windows share market moves
    split_metrics = split_metrics_of(study, config, overlaps) if overlaps else None
    headline = study if split_metrics is None else study[~study["in_sample"]]
    primary = headline[headline["horizon_ms"] == horizons[0]]
    by_h = horizon_metrics(headline, config)
    if [st.span_ms for st in studies] != spans:
        raise RuntimeError(f"members' portfolio spans {[st.span_ms for st in studies]} are not the {spans} foreseen")
    start_ms, end_ms = pool_span
    marks = [member_marks(st) for st in studies]
    pf = simulate_universe(
        [st.primary for st in studies],
        [(m.ts_ms, m.price) for m in marks],
        names,
        fee=bt.fee_bps / 1e4,
        init_cash=config.portfolio.init_cash,
        max_positions=config.portfolio.max_positions,
        bar_ms=parse_duration_ms(config.portfolio.bar),
        start_ms=start_ms,
        end_ms=end_ms,
    )
    dropped = primary["exit_reason"].astype(str).str.startswith("dropped")
    sig = UniverseSignals(
        [st.sig for st in studies], config.config_id, studies[0].sig.model_uri, studies[0].sig.threshold
    )
    metrics = {
        "run_id": config.run_id,
        "name": config.name,
        "config_id": config.config_id,
        "model": sig.model_uri,
        "threshold": sig.threshold,
        "horizon": format_duration(horizons[0]),
        **by_h[format_duration(horizons[0])],
        "mean_funding_return": float(primary["funding_return"].mean()) if len(primary) else 0.0,
        "funding_coverage": pooled_funding_coverage(studies),
        "n_whale_events": int(sum(st.metrics["n_whale_events"] for st in studies)),
        "n_dropped": int(dropped.sum()),
        "costs": {
            "fee_bps": bt.fee_bps,
            "slippage_bps": bt.slippage_bps,
            "entry_latency_ms": bt.entry_latency_ms,
            "funding": any(st.funding is not None for st in studies),
        },
        "data": pooled_data(config, studies, lake.uri),
        "by_horizon": by_h,
        "portfolio": portfolio_metrics(
            pf.equity, pf.exposure, len(pf.positions), pf.positions["position_return"].to_numpy()
        ),
    }
    metrics["portfolio"].update(
        max_positions=config.portfolio.max_positions, bar=config.portfolio.bar, init_cash=config.portfolio.init_cash
    )
    if split_metrics is not None:
        metrics.update(split_metrics)
        metrics["headline"] = "out_of_sample"
    if sig.model_uri is not None:
        metrics["model_lineage"] = studies[0].metrics.get("model_lineage")
    if verdicts[0] is not None:
        metrics["model_metrics"] = verdicts[0].metrics
        metrics["dsr"] = verdicts[0].metrics.get("dsr")
    metrics["by_symbol"] = {name: st.metrics for name, st in zip(names, studies)}
    t3 = time.perf_counter()
    artefacts = {"paths": pooled_paths(config, studies, study)}
    cal = [st.calibration for st in studies]  # made in the members' tasks
    if any(c is not None for c in cal):
        artefacts["calibration"] = pd.concat([c for c in cal if c is not None], ignore_index=True)
    if verdicts[0] is not None and verdicts[0].threshold_curve is not None:
        artefacts["threshold_curve"] = pd.DataFrame(verdicts[0].threshold_curve)
    benchmark = equal_weight_benchmark(pf.equity.index, studies)
    timings["report_data_s"] = time.perf_counter() - t3
    study = study.drop(columns="_member")
    run_dir = _write_run(config, metrics, sig, study, pf, results_dir, tearsheet, quiet, artefacts, benchmark, timings)
    timings["total_s"] = time.perf_counter() - t0
    result = RunResult(config.run_id, run_dir, metrics, study, pf, sig, timings)
    if log_mlflow:
        _log_mlflow(result, config, tracking_uri, new_run, quiet)
    return result


def _member_span_ms(member: RunConfig, lake: Lake, verdict) -> tuple[int, int]:
    """A universe member's portfolio span, foreseen before its task runs (from the first and last
    trades of its price tape: ``ts_ms`` of two days read), so every task can mark the pooled bars."""
    d = member.data
    first_ms, last_ms = tape_ends_ms(lake, d.price_exchange or d.exchange, d.symbol, d.start, d.end)
    return portfolio_span_ms(member, first_ms, last_ms, getattr(verdict, "oos_from_ms", None))


def _report_queries(study: pd.DataFrame, span_ms: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """The times and trades :func:`bt.evaluation.run_artefacts` reads of the price tape: the
    price chart's steps, each held signal's path steps and its entry and exit (paths are clipped
    to them). ``(queries, indices)`` for :meth:`datasets.tape.DayTape.sample`."""
    from bt.evaluation import MAX_PRICE_POINTS, PATH_STEPS, headline_trades

    rows = headline_trades(study)
    longest = int(rows["horizon_ms"].max()) if len(rows) else 0
    held = rows[(rows["horizon_ms"] == longest) & (rows["exit_idx"] >= 0)]
    offsets = np.round(np.linspace(0, longest, PATH_STEPS + 1)).astype(np.int64)
    steps = np.minimum(
        held["entry_ts_ms"].to_numpy(np.int64)[:, None] + offsets[None, :],
        held["exit_ts_ms"].to_numpy(np.int64)[:, None],
    )
    lo, hi = span_ms
    edges = np.linspace(lo, hi, MAX_PRICE_POINTS + 1)[1:] if hi > lo else np.empty(0)
    ends = np.r_[study["entry_idx"].to_numpy(np.int64), study["exit_idx"].to_numpy(np.int64)]
    return [steps, edges], ends


def _report_artefacts(
    config, sig, study, study_of, price_span, funding, span_ms, marks: SubTape | None = None
) -> dict[str, pd.DataFrame]:
    """The frames report.html needs beyond trades.parquet (see :func:`bt.evaluation.run_artefacts`).

    Over a :class:`~datasets.tape.DayTape` the figures read a sub-tape holding every trade they
    look up (``marks`` when :func:`study_symbol` sampled it, else sampled here), with the
    study's entry/exit indices remapped to it: the same figures as over the whole span.

    Model runs also score every headline event's outcome at the primary horizon (not only the
    signals kept by the threshold) for the calibration figure.
    """
    from bt.evaluation import run_artefacts

    bt = config.backtest
    calibration = _calibration(config, sig, study, study_of, price_span)
    if isinstance(price_span, DayTape):
        sub = marks if marks is not None else price_span.sample(*_report_queries(study, span_ms))
        study = study.assign(
            entry_idx=sub.local(study["entry_idx"].to_numpy(np.int64)),
            exit_idx=sub.local(study["exit_idx"].to_numpy(np.int64)),
        )
        ts_ms, price = sub.ts_ms, sub.price
    else:
        ts_ms, price = price_span.ts_ms, price_span.price
    return run_artefacts(
        study,
        ts_ms=ts_ms,
        price=price,
        fee=bt.fee_bps / 1e4,
        funding=funding,
        n_boot=bt.bootstrap,
        seed=bt.seed,
        span_ms=span_ms,
        calibration=calibration,
        threshold_curve=sig.threshold_curve,
    )


def _calibration(config, sig, study, study_of, price_span) -> pd.DataFrame | None:
    """A model run's calibration rows: every headline event's outcome at the primary horizon
    (not only the signals the threshold kept) beside its probability; None without a model."""
    from bt.evaluation import calibration_table

    if config.model is None or not len(price_span):
        return None
    ev = sig.events
    if "in_sample" in study.columns:
        from bt.registry import in_sample_mask

        ev = ev[~in_sample_mask(sig.model_lineage, ev["ts_ms"].to_numpy(np.int64))]
    ts = ev["ts_ms"].to_numpy(np.int64)
    horizon_ms = config.backtest.horizon_ms
    if config.data.price_exchange and config.data.price_exchange != config.data.exchange:
        every = study_of(_last_at_or_before(price_span, ts), ts, [horizon_ms])
    else:
        every = study_of(ev["trade_idx"].to_numpy(np.int64), None, [horizon_ms])
    return calibration_table(ev["prob"].to_numpy(np.float64), every, ts)


def _last_at_or_before(span: TradeSpan | DayTape, ts: np.ndarray) -> np.ndarray:
    """Index of each time's last trade at or before it (-1 if none)."""
    if isinstance(span, DayTape):
        return span.last_at_or_before(ts)
    return np.searchsorted(span.ts_ms, ts, side="right").astype(np.int64) - 1


def _check_holes(
    config: RunConfig, span: TradeSpan | DayTape, price_span: TradeSpan | DayTape, strict: bool
) -> list[dict]:
    """Holes of the event span (and of the price venue's span): one warning line, or refusal."""
    holes = [{**h, "exchange": span.exchange} for h in span_holes(span)]
    if price_span is not span:
        holes += [{**h, "exchange": price_span.exchange} for h in span_holes(price_span)]
    if not holes:
        return holes
    cross = price_span is not span
    label_of = (lambda h: f"{h['exchange']} {h['text']}") if cross else (lambda h: h["text"])
    line = holes_line([{**h, "text": label_of(h)} for h in holes])
    what = f"{config.data.symbol} {config.data.start}..{config.data.end}"
    if strict:
        raise DataHolesError(
            f"data for {what} has holes and --strict refuses them: {line}. Ingest the missing days or "
            "recordings (`datasets status --detail` lists what is stored), or run without --strict; signals "
            "whose windows cross a hole are then dropped and counted as gaps"
        )
    print(f"warning: data has holes: {line}", file=sys.stderr, flush=True)
    return holes


def _coverage_summary(span: TradeSpan | DayTape, limit: int = 100) -> dict:
    """Covered time of the price tape for metrics.json: the intervals (up to ``limit``) and totals."""
    cov = np.asarray(
        span.coverage
        if span.coverage is not None
        else (
            [[span.first_ts_ms, span.last_ts_ms + 1]]
            if span.first_ts_ms is not None and span.last_ts_ms is not None
            else []
        ),
        dtype=np.int64,
    ).reshape(-1, 2)
    out = {
        "n_intervals": int(cov.shape[0]),
        "covered_s": float((cov[:, 1] - cov[:, 0]).sum() / 1000),
        "first_ms": int(cov[0, 0]) if len(cov) else None,
        "last_ms": int(cov[-1, 1]) if len(cov) else None,
        "sources": sorted({s.get("coverage_source", "") for s in span.sources}),
    }
    if len(cov) <= limit:
        out["intervals"] = cov.tolist()
    return out


def _write_run(
    config: RunConfig,
    metrics: dict,
    sig: SignalSet | UniverseSignals,
    study: pd.DataFrame,
    pf: PortfolioResult,
    results_dir: Path,
    tearsheet: bool,
    quiet: bool,
    artefacts: dict[str, pd.DataFrame] | None = None,
    benchmark: pd.Series | None = None,
    timings: dict[str, float] | None = None,
    worker=None,
) -> Path:
    """Write the run folder atomically: build it beside the target, then swap it in (bt.runfolder).

    Without ``tearsheet``, the folder's previous ``tearsheet.html`` is kept only when its
    ``metrics.json`` is byte-identical to the new one (same run, same numbers); otherwise it
    would describe another result, so it goes with the old folder.
    """
    from bt.runfolder import json_text, write_run_folder

    final = results_dir / config.run_id

    def fill(tmp: Path) -> None:
        (tmp / "config.yaml").write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
        (tmp / "metrics.json").write_text(json_text(metrics))
        if tearsheet and worker is not None:  # a bt.background.Worker: drawn while the other files are written
            worker.send(
                {"equity": pf.equity, "benchmark": benchmark, "metrics": metrics, "path": tmp / "tearsheet.html"}
            )
        with open(tmp / "signals.jsonl", "w") as fh:
            for rec in sig.journal():
                fh.write(journal_line(rec))
        study.to_parquet(tmp / "trades.parquet", index=False)
        pf.positions.to_parquet(tmp / "positions.parquet", index=False)
        # The mark price beside the equity: bt.api values the positions with it (Run.portfolio).
        pd.concat([pf.equity, pf.price], axis=1).to_parquet(tmp / "equity.parquet")
        for name, frame in (artefacts or {}).items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        if tearsheet and worker is None:
            from bt.report import write_tearsheet

            write_tearsheet(pf, metrics, tmp / "tearsheet.html", benchmark=benchmark)
        elif not tearsheet and (final / "tearsheet.html").is_file() and (final / "metrics.json").is_file():
            if (final / "metrics.json").read_bytes() == (tmp / "metrics.json").read_bytes():
                shutil.copy2(final / "tearsheet.html", tmp / "tearsheet.html")
        t = time.perf_counter()
        from bt.evaluation import write_report

        write_report(tmp)
        if timings is not None:
            timings["report_s"] = time.perf_counter() - t
        if tearsheet and worker is not None:
            t = time.perf_counter()
            worker.result()
            if timings is not None:
                timings["tearsheet_wait_s"] = time.perf_counter() - t

    write_run_folder(final, fill)
    _say(f"wrote {final}", quiet)
    return final
