"""Python API for notebooks: :func:`backtest` runs a config as ``bt run`` does, :func:`load_run`
opens a run folder, and :class:`Run` reads its files lazily (each on first access, then cached).

``import bt`` stays light: ``bt/__init__.py`` imports this module on first use of ``bt.Run``,
``bt.load_run`` or ``bt.backtest``; vectorbt is imported only by :attr:`Run.portfolio`.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from bt.config import RunConfig, load_config, parse_config
from bt.run import DEFAULT_RESULTS, run_backtest
from whalebt.cli import UserError
from datasets.durations import parse_duration_ms

if TYPE_CHECKING:
    import vectorbt as vbt

__all__ = ["Run", "RunNotFoundError", "load_run", "backtest"]


class RunNotFoundError(UserError, FileNotFoundError):
    """No run folder (or a run folder without the file asked for)."""


def _results_default() -> str:
    return os.environ.get("WHALEBT_RESULTS", DEFAULT_RESULTS)


class Run:
    """A run folder ``results/<run_id>/`` as written by ``bt run``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not (self.path / "metrics.json").is_file():
            raise RunNotFoundError(f"{self.path} is not a run folder (no metrics.json); `bt run CONFIG` writes one")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _file(self, name: str, how: str = "re-run `bt run` on its config to write it") -> Path:
        p = self.path / name
        if not p.is_file():
            raise RunNotFoundError(f"{p} not found; {how}")
        return p

    @property
    def run_id(self) -> str:
        return str(self.metrics.get("run_id") or self.path.name)

    @cached_property
    def config(self) -> RunConfig:
        """The resolved config of the run (``config.yaml``) as a :class:`bt.config.RunConfig`."""
        import yaml

        p = self._file("config.yaml")
        return parse_config(yaml.safe_load(p.read_text()), str(p))

    @cached_property
    def metrics(self) -> dict:
        """``metrics.json``."""
        return json.loads((self.path / "metrics.json").read_text())

    @cached_property
    def events(self) -> pd.DataFrame:
        """The event study (``trades.parquet``): one row per signal and horizon."""
        return pd.read_parquet(self._file("trades.parquet"))

    @cached_property
    def positions(self) -> pd.DataFrame:
        """The positions the portfolio took (``positions.parquet``): units, allocation, pnl."""
        return pd.read_parquet(self._file("positions.parquet"))

    @cached_property
    def signals(self) -> pd.DataFrame:
        """The signal journal (``signals.jsonl``, docs/spec.md §5): every whale event and its decision.

        It lists skipped events too, which the event study does not hold, so it cannot be rebuilt
        from :attr:`events`; a folder without it raises :class:`RunNotFoundError`.
        """
        p = self._file("signals.jsonl", "`bt signals CONFIG --out FILE` writes the journal of a config")
        with open(p) as fh:
            return pd.DataFrame.from_records([json.loads(line) for line in fh if line.strip()])

    @cached_property
    def _equity_frame(self) -> pd.DataFrame:
        return pd.read_parquet(self._file("equity.parquet"))

    @property
    def equity(self) -> pd.Series:
        """The portfolio's equity curve (``equity.parquet``), indexed by bar end (UTC)."""
        return self._equity_frame["equity"]

    @property
    def report_path(self) -> Path:
        """``report.html`` (the signal-evaluation report); FileNotFoundError when the run has none."""
        return self._file("report.html")

    @cached_property
    def portfolio(self) -> "vbt.Portfolio":
        """The run's positions as a ``vectorbt.Portfolio`` whose value equals :attr:`equity`.

        Built with ``Portfolio.from_orders``: each position buys its ``units`` at the event study's
        entry price (slippage included) and sells them at its exit price, fee per side as in the run;
        its funding is settled with the exit as a negative fixed fee when received and a positive
        one when paid (vectorbt 1.2 has no cash deposits). One column per portfolio slot with
        shared cash (grouped when ``max_positions`` > 1), so each vectorbt trade is one position.
        The rows are the equity's bar ends (marked at the stored price) plus one row per order at
        its trade's time; orders in the same millisecond are spread 1 ns apart, exits first, and
        an order in a bar's own millisecond ends on that bar. ``freq`` is the mean row spacing, so
        ``Period`` is the run's span, but vectorbt's durations and annualised ratios count rows of
        uneven length and are rough; metrics.json's figures (daily returns) are the reference.

        A universe run (``data.symbols``) gives one group of ``(symbol, slot)`` columns,
        ``max_positions`` slots per symbol on that symbol's prices (the equity's ``price_<SYM>``
        marks), sharing the one cash: its value is the run's equity too.
        """
        frame = self._equity_frame
        cfg = self.config
        if cfg.data.is_universe:
            names = list(cfg.data.symbols or ())
            missing = [f"price_{n}" for n in names if f"price_{n}" not in frame.columns]
            if missing:
                raise RunNotFoundError(
                    f"{self.path / 'equity.parquet'} has no mark prices {missing} of the universe's members; "
                    "re-run `bt run` on its config"
                )
            return build_universe_portfolio(
                self.positions,
                frame["equity"],
                frame,
                names,
                fee=cfg.backtest.fee_bps / 1e4,
                slippage=cfg.backtest.slippage_bps / 1e4,
                init_cash=cfg.portfolio.init_cash,
                max_positions=cfg.portfolio.max_positions,
                bar=cfg.portfolio.bar,
            )
        if "price" not in frame.columns:
            raise RunNotFoundError(
                f"{self.path / 'equity.parquet'} has no price column (written before mark prices were "
                "stored); re-run `bt run` on its config"
            )
        return build_portfolio(
            self.positions,
            frame["equity"],
            frame["price"],
            fee=cfg.backtest.fee_bps / 1e4,
            slippage=cfg.backtest.slippage_bps / 1e4,
            init_cash=cfg.portfolio.init_cash,
            max_positions=cfg.portfolio.max_positions,
            bar=cfg.portfolio.bar,
            name=cfg.data.symbol,
        )


def _order_events(positions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries and exits in the order bt.portfolio books them: by time, exits first, then by position."""
    n = len(positions)
    ts = np.empty(2 * n, np.int64)
    ts[0::2] = positions["entry_ts_ms"].to_numpy(np.int64)
    ts[1::2] = positions["exit_ts_ms"].to_numpy(np.int64)
    kind = np.tile(np.array([1, 0], np.int64), n)  # 1 entry, 0 exit
    order = np.argsort(ts * 2 + kind, kind="mergesort")
    return ts[order], kind[order], np.repeat(np.arange(n), 2)[order]


def _row_times(ev_ts: np.ndarray, eq_ns: np.ndarray) -> np.ndarray:
    """Row time (ns) of each order: orders of one millisecond get 1 ns steps; in a bar's
    millisecond the last one lands on the bar (the bar is valued after them), elsewhere the first
    is on the millisecond."""
    bars = set(eq_ns[1:].tolist())
    row_ns = np.empty(ev_ts.size, np.int64)
    i = 0
    while i < ev_ts.size:
        k = i
        while k < ev_ts.size and ev_ts[k] == ev_ts[i]:
            k += 1
        t = int(ev_ts[i]) * 1_000_000
        m = k - i
        if t in bars:
            row_ns[i:k] = t - np.arange(m - 1, -1, -1)
        else:
            row_ns[i:k] = t + np.arange(m) + (1 if t == eq_ns[0] else 0)
        i = k
    return row_ns


def _slots(ev_kind: np.ndarray, ev_pos: np.ndarray, group: np.ndarray, n_groups: int, max_positions: int):
    """Slot of each position within its group: the lowest free one when it enters, so no slot holds two at once."""
    slot_of = np.full(group.size, -1, np.int64)
    busy = np.zeros((n_groups, max_positions), bool)
    for kind, j in zip(ev_kind, ev_pos):
        g = group[j]
        if kind == 1:
            free = np.flatnonzero(~busy[g])
            if free.size == 0:
                raise ValueError(f"more than max_positions={max_positions} positions open at once")
            slot_of[j] = free[0]
            busy[g, free[0]] = True
        else:
            busy[g, slot_of[j]] = False
    return slot_of


def _from_positions(
    pos: pd.DataFrame,
    equity: pd.Series,
    marks: np.ndarray,
    member: np.ndarray,
    columns: pd.Index,
    *,
    fee: float,
    slippage: float,
    init_cash: float,
    max_positions: int,
    bar: str,
    group_by,
) -> "vbt.Portfolio":
    """The orders of ``pos`` on ``len(columns)`` columns: ``max_positions`` slots per member.

    ``marks``: ``(len(equity), n_members)`` mark prices at the equity's bar ends; ``member``: the
    member index of each position (column block ``member * max_positions + slot``).
    """
    import vectorbt as vbt

    n_members = marks.shape[1]
    ev_ts, ev_kind, ev_pos = _order_events(pos)
    slot_of = _slots(ev_kind, ev_pos, member, n_members, max_positions)
    eq_ns = equity.index.as_unit("ns").asi8
    row_ns = _row_times(ev_ts, eq_ns)
    index = pd.DatetimeIndex(np.union1d(eq_ns, row_ns)).tz_localize("UTC")
    nrow, ncol = len(index), len(columns)
    close = np.full((nrow, n_members), np.nan)
    entry_px = pos["entry_price"].to_numpy(np.float64)
    exit_px = pos["exit_price"].to_numpy(np.float64)
    at = index.asi8.searchsorted(row_ns)
    # Between bars the market is the order's own trade (the entry price before slippage).
    close[at, member[ev_pos]] = np.where(ev_kind == 1, entry_px[ev_pos] / (1.0 + slippage), exit_px[ev_pos])
    close[index.asi8.searchsorted(eq_ns)] = marks
    if n_members > 1:  # another member's order row: this one's market is its last price
        close = pd.DataFrame(close).ffill().to_numpy()
    size = np.full((nrow, ncol), np.nan)
    px = np.full((nrow, ncol), np.inf)  # inf: at the close (no order there)
    fixed = np.zeros((nrow, ncol))
    units = pos["units"].to_numpy(np.float64)
    funding = np.nan_to_num(pos["funding_return"].to_numpy(np.float64))
    col = member[ev_pos] * max_positions + slot_of[ev_pos]
    size[at, col] = np.where(ev_kind == 1, units[ev_pos], -units[ev_pos])
    px[at, col] = np.where(ev_kind == 1, entry_px[ev_pos], exit_px[ev_pos])
    # Funding settles at the exit on the entry notional (bt.portfolio): a fee when paid, a credit when received.
    fixed[at, col] = np.where(ev_kind == 0, -units[ev_pos] * entry_px[ev_pos] * funding[ev_pos], 0.0)
    # vectorbt measures time in rows: with the mean row spacing, its Period is the run's span.
    freq = (index[-1] - index[0]) / nrow if nrow > 1 else pd.Timedelta(parse_duration_ms(bar), unit="ms")

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(a, index=index, columns=columns)

    return vbt.Portfolio.from_orders(
        frame(np.repeat(close, max_positions, axis=1)),
        size=frame(size),
        size_type="amount",
        direction="longonly",
        price=frame(px),
        fees=fee,
        fixed_fees=frame(fixed),
        init_cash=init_cash,
        cash_sharing=True,
        group_by=group_by,
        freq=freq,
    )


def build_portfolio(
    positions: pd.DataFrame,
    equity: pd.Series,
    price: pd.Series,
    *,
    fee: float,
    slippage: float,
    init_cash: float,
    max_positions: int,
    bar: str,
    name: str = "portfolio",
) -> "vbt.Portfolio":
    """A ``vectorbt.Portfolio`` of a run's positions (see :attr:`Run.portfolio`)."""
    pos = positions.reset_index(drop=True)
    return _from_positions(
        pos,
        equity,
        price.to_numpy(np.float64)[:, None],
        np.zeros(len(pos), np.int64),
        pd.Index(range(max_positions), name="slot"),
        fee=fee,
        slippage=slippage,
        init_cash=init_cash,
        max_positions=max_positions,
        bar=bar,
        group_by=pd.Index([name] * max_positions, name="symbol") if max_positions > 1 else None,
    )


def build_universe_portfolio(
    positions: pd.DataFrame,
    equity: pd.Series,
    prices: pd.DataFrame,
    names: list[str],
    *,
    fee: float,
    slippage: float,
    init_cash: float,
    max_positions: int,
    bar: str,
) -> "vbt.Portfolio":
    """A ``vectorbt.Portfolio`` of a universe run's positions (see :attr:`Run.portfolio`).

    ``prices``: the equity's ``price_<SYM>`` mark columns; ``names``: the members in order (the
    positions' ``symbol`` values). Columns are ``(symbol, slot)``, ``max_positions`` slots per
    symbol (all slots may be taken by one symbol), each on its symbol's prices, all in one group
    with shared cash as :func:`bt.portfolio.simulate_universe` shares them.
    """
    pos = positions.reset_index(drop=True)
    known = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(pos["symbol"].astype(str)) - set(known))
    if unknown:
        raise ValueError(f"positions of {unknown}, which are not members ({', '.join(names)})")
    member = pos["symbol"].astype(str).map(known).to_numpy(np.int64)
    columns = pd.MultiIndex.from_product([list(names), range(max_positions)], names=["symbol", "slot"])
    return _from_positions(
        pos,
        equity,
        prices[[f"price_{n}" for n in names]].to_numpy(np.float64),
        member,
        columns,
        fee=fee,
        slippage=slippage,
        init_cash=init_cash,
        max_positions=max_positions,
        bar=bar,
        group_by=pd.Index(["universe"] * len(columns), name="group"),
    )


def load_run(path_or_run_id: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None) -> Run:
    """Open a run folder, given its path or its run_id under ``results_dir``.

    ``results_dir`` defaults to ``$WHALEBT_RESULTS`` or ``results``, as for ``bt run``.
    """
    p = Path(path_or_run_id)
    if (p / "metrics.json").is_file():
        return Run(p)
    results = Path(results_dir if results_dir is not None else _results_default())
    if (results / p / "metrics.json").is_file():
        return Run(results / p)
    runs = sorted(d.name for d in results.glob("*/") if (d / "metrics.json").is_file()) if results.is_dir() else []
    have = f"runs in {results}: {', '.join(runs)}" if runs else f"no runs in {results}"
    raise RunNotFoundError(f"no run folder {str(path_or_run_id)!r} (as a path or a run_id); {have}")


def _config_of(config: str | os.PathLike[str] | Mapping[str, Any] | RunConfig, lake: str | None) -> RunConfig:
    if isinstance(config, RunConfig):
        return (
            config
            if lake is None
            else config.model_copy(update={"data": config.data.model_copy(update={"lake": lake})})
        )
    if isinstance(config, Mapping):
        raw: dict[str, Any] = dict(config)
        lake = lake or os.environ.get("WHALEBT_LAKE")  # as load_config does for a file
        if lake and isinstance(raw.get("data"), Mapping):
            raw["data"] = {**raw["data"], "lake": lake}
        return parse_config(raw, "config")
    return load_config(config, lake=lake)


def backtest(
    config: str | os.PathLike[str] | Mapping[str, Any] | RunConfig,
    *,
    lake: str | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    log_mlflow: bool = True,
    tearsheet: bool = True,
    allow_in_sample: bool = False,
    strict: bool = False,
    quiet: bool = False,
) -> Run:
    """Run a config as ``bt run`` does and open its folder.

    ``config``: a YAML file, or the same data as a dict (validated the same way). The keywords are
    ``bt run``'s options: ``lake`` (--lake), ``results_dir`` (--results), ``tracking_uri``,
    ``log_mlflow=False`` (--no-mlflow), ``tearsheet=False`` (--no-tearsheet), ``allow_in_sample``,
    ``strict``; ``quiet`` silences the progress lines on stderr.
    """
    result = run_backtest(
        _config_of(config, lake),
        results_dir=results_dir if results_dir is not None else _results_default(),
        tracking_uri=tracking_uri,
        log_mlflow=log_mlflow,
        tearsheet=tearsheet,
        quiet=quiet,
        allow_in_sample=allow_in_sample,
        strict=strict,
    )
    return Run(result.run_dir)
