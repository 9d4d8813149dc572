"""Universes: ``data.symbols`` / ``data.universe`` resolved into members, and what pools their studies.

:func:`resolve_universe` turns ``data.universe.rank`` into ``data.symbols`` (``datasets rank`` over
the klines of the ``lookback_days`` before ``data.start``, so the choice sees no day of the run).
``bt.run`` runs one event study per member (``bt.run.study_symbol``, exactly the study of that
symbol run alone) and pools them with the helpers here: the merged journal
(:class:`UniverseSignals`), the data section, and the report frames. Pooling reads no tape: each
member's task sends back the few trades it needs (``SymbolStudy.marks``: the pooled bars' marks
and the trades of its report's paths).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bt.config import ConfigError, RunConfig
from whalebt.errors import UserError

if TYPE_CHECKING:
    from bt.run import SymbolStudy

__all__ = [
    "resolve_universe",
    "symbols_on",
    "UniverseError",
    "UniverseSignals",
    "pooled_data",
    "pooled_paths",
    "equal_weight_benchmark",
    "member_marks",
]


def resolve_universe(config: RunConfig, *, quiet: bool = True) -> RunConfig:
    """The config with ``data.symbols`` filled in from ``data.universe.rank`` (unchanged if already set).

    Raises:
        ConfigError: the klines cannot be read or ranked, or no symbol is eligible.
    """
    d = config.data
    if d.symbols is not None or d.universe is None:
        return config
    from datasets.rank import RankError, RankFilters, load_exchange_info, load_klines, rank_symbols

    r = d.universe.rank
    end = d.start - dt.timedelta(days=1)
    start = end - dt.timedelta(days=r.lookback_days - 1)
    fields = {f.name for f in dataclasses.fields(RankFilters)}
    bad = sorted(set(r.filters) - fields)
    if bad:
        raise ConfigError(f"data.universe.rank.filters: unknown {bad}; expected some of {sorted(fields)}")
    try:
        klines = load_klines(r.klines, start=start, end=end)
        info = load_exchange_info(r.exchange_info) if r.exchange_info else None
        table = rank_symbols(
            klines,
            weights=None if r.by == "score" else {r.by: 1.0},
            filters=RankFilters(**r.filters),
            exchange_info=info,
        )
    except RankError as exc:
        raise ConfigError(f"data.universe.rank (klines {r.klines}, {start}..{end}): {exc}") from None
    table = table[table["eligible"]]
    if r.by != "score":  # one component: its own order (the score is its percentile rank, with ties)
        table = table.sort_values([r.by, "symbol"], ascending=[False, True], kind="stable")
    top = [str(s) for s in table["symbol"].head(r.top)]
    if not top:
        raise ConfigError(
            f"data.universe.rank: no eligible symbol in the klines of {r.klines} for {start}..{end}; "
            "run `datasets rank` on them to see why, or loosen data.universe.rank.filters"
        )
    if not quiet:
        print(
            f"universe: top {len(top)} of {r.exchange} by {r.by} over {start}..{end}: {','.join(top)}", file=sys.stderr
        )
    data = d.model_copy(update={"symbols": tuple(top)})
    return config.model_copy(update={"data": data})


class UniverseError(UserError):
    """A universe has no member where one is needed."""


def symbols_on(config: RunConfig, exchange: str) -> list[str]:
    """The config's symbols on ``exchange`` (``live run --config`` without ``--symbols``), universe resolved."""
    members = resolve_universe(config).data.members
    out = [sym for ex, sym in members if ex == exchange]
    if not out:
        have = ", ".join(f"{ex}:{sym}" for ex, sym in members)
        raise UniverseError(f"the config has no symbol on {exchange} (it has {have}); pass --symbols or --exchange")
    return out


@dataclasses.dataclass
class UniverseSignals:
    """The members' signal sets; :meth:`journal` merges their lines in time order (ties: member order)."""

    members: list[Any]  # bt.run.SignalSet of each member, in the universe's order
    config_id: str
    model_uri: str | None
    threshold: float | None

    def journal(self) -> list[dict]:
        recs: list[tuple[int, int, dict]] = []
        for m, sig in enumerate(self.members):
            for i, rec in enumerate(sig.journal()):
                recs.append((int(rec["ts_ms"]), m * (1 << 40) + i, rec))
        recs.sort(key=lambda x: (x[0], x[1]))
        return [r for _, _, r in recs]

    @property
    def events(self) -> pd.DataFrame:
        frames = [s.events.assign(exchange=s.span.exchange, symbol=s.span.symbol) for s in self.members]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pooled_data(config: RunConfig, studies: list[SymbolStudy], lake_uri: str) -> dict:
    """``metrics["data"]`` of a universe: the span, the members, and their trades, partitions and holes."""
    names = list(config.data.symbols or ())
    firsts = [s.metrics["data"]["first_trade_ms"] for s in studies if s.metrics["data"]["first_trade_ms"] is not None]
    lasts = [s.metrics["data"]["last_trade_ms"] for s in studies if s.metrics["data"]["last_trade_ms"] is not None]
    covs = [s.metrics["data"]["coverage"] for s in studies]
    return {
        "exchange": config.data.exchange,
        "symbol": ",".join(names),
        "symbols": names,
        "start": str(config.data.start),
        "end": str(config.data.end),
        "first_trade_ms": min(firsts) if firsts else None,
        "last_trade_ms": max(lasts) if lasts else None,
        "n_trades": int(sum(s.metrics["data"]["n_trades"] for s in studies)),
        "lake": lake_uri,
        "partitions": [p for s in studies for p in s.metrics["data"]["partitions"]],
        "price_exchange": config.data.price_exchange or config.data.exchange,
        "coverage": {
            "n_intervals": int(sum(c["n_intervals"] for c in covs)),
            "covered_s": float(sum(c["covered_s"] for c in covs)),
            "first_ms": min((c["first_ms"] for c in covs if c["first_ms"] is not None), default=None),
            "last_ms": max((c["last_ms"] for c in covs if c["last_ms"] is not None), default=None),
            "sources": sorted({x for c in covs for x in c["sources"]}),
        },
        "holes": [{**h, "symbol": n} for n, s in zip(names, studies) for h in s.holes],
        "universe": None if config.data.universe is None else config.data.universe.model_dump(mode="json"),
    }


def pooled_funding_coverage(studies: list[SymbolStudy]) -> float | None:
    """Share of all members' held signals whose holding window the funding history spans."""
    num = den = 0.0
    for s in studies:
        if s.coverage is None:
            continue
        n = int((s.primary["exit_idx"].to_numpy() >= 0).sum())
        num += s.coverage * n
        den += n
    return None if den == 0 else num / den


def pooled_paths(config: RunConfig, studies: list[SymbolStudy], pooled: pd.DataFrame) -> pd.DataFrame:
    """``paths.parquet`` of a universe: every member's held signals at the longest horizon, pooled clusters."""
    from bt.evaluation import average_path, headline_trades, return_paths

    bt = config.backtest
    rows = headline_trades(pooled)
    longest = int(rows["horizon_ms"].max()) if len(rows) else 0
    held = rows[(rows["horizon_ms"] == longest) & (rows["exit_idx"] >= 0)]
    offsets, values, clusters = None, [], []
    for i, s in enumerate(studies):
        mine = held[held["_member"] == i]
        # The member's marks hold every trade its paths read (its task sampled its report's queries).
        sub = member_marks(s)
        mine = mine.assign(
            entry_idx=sub.local(mine["entry_idx"].to_numpy(np.int64)),
            exit_idx=sub.local(mine["exit_idx"].to_numpy(np.int64)),
        )
        offsets, v = return_paths(
            mine, sub.ts_ms, sub.price, horizon_ms=longest, fee=bt.fee_bps / 1e4, funding=s.funding
        )
        values.append(v)
        clusters.append(mine["cluster"].to_numpy(np.int64))
    assert offsets is not None
    return average_path(offsets, np.concatenate(values), np.concatenate(clusters), n_boot=bt.bootstrap, seed=bt.seed)


def member_marks(s: SymbolStudy):
    """A member's sampled trades (``SymbolStudy.marks``): pooling reads them, never the tape."""
    if s.marks is None:
        raise RuntimeError(f"{s.config.data.symbol}: a universe member's study came back without its marks")
    return s.marks


def equal_weight_benchmark(index: pd.DatetimeIndex, studies: list[SymbolStudy]) -> pd.Series | None:
    """Buy and hold of every member with equal cash at the first bar, on the equity curve's bars."""
    from bt.report import price_on_bars

    curves = []
    for s in studies:
        sub = member_marks(s)  # the trades at or before each of the pooled bars (and the first trade)
        if len(sub.gidx):
            p = price_on_bars(index, sub.ts_ms, sub.price)
            curves.append(p / p.iloc[0])
    if not curves:
        return None
    return pd.concat(curves, axis=1).mean(axis=1)
