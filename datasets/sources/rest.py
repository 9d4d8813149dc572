"""Trades from exchange REST APIs through ccxt: paginated, rate-limit aware, resumable, idempotent.

One function, :func:`ingest_rest`, pages through an exchange's public trade history and merges
what it gets into bronze, a batch at a time. ccxt supplies the HTTP client, its rate limiter
(``enableRateLimit``, which spaces requests by each endpoint's weight) and the mapping of error
answers to exception classes; this module calls ccxt's *implicit* endpoints (``fapiPublicGetAggTrades``
and so on) rather than ``fetch_trades``, because the unified method hides the exchange's ids and
cursors that exact pagination and resumption need, and needs ``load_markets`` (several large
requests) first.

The paging and row parsing of each exchange live in :mod:`datasets.exchanges` (the live runner's
warm-up uses the same Binance pager); this module drives them through ccxt and writes bronze.

Per exchange (``--since`` is inclusive, ``--until`` exclusive):

- **binance_usdm** ``GET /fapi/v1/aggTrades``: finds the first trade with time windows of at most
  one hour (``startTime``/``endTime``), then pages forward by ``fromId``. ``trade_id`` is the
  aggTrade id ``a``; ``side`` is -1 when ``m`` (the buyer was the maker).
- **okx_swap** ``GET /api/v5/market/history-trades``: OKX pages backwards only (newest first), so
  the span is cut into windows walked forward in time; each window is read backwards, first by
  timestamp (``type=2``, ``after=<window end>``), then by trade id (``type=1``). Sizes are contracts:
  ``qty = sz * ctVal`` (``sz * ctVal / px`` for coin-margined swaps), with ``ctVal`` read from
  ``/api/v5/public/instruments``. OKX keeps about three months of history.
- **bybit_linear** ``GET /v5/market/recent-trade``: Bybit serves only the latest 1000 trades of a
  linear contract, with no cursor. Older trades come from the Bybit archive
  (``datasets ingest bybit-archive``); a span older than what the API still holds is reported as a
  gap. Trade ids follow the Bybit archive: the top 63 bits of the match UUID (``execId``), so REST
  and archive trades merge; the WebSocket parser numbers live trades by ``seq`` instead.

**Resumption.** The run starts after the newest stored bronze trade of the run of consecutive
stored days that begins on ``--since``'s day (a missing day ends the run, so a hole is refetched,
not skipped). Trades already stored are merged, not duplicated, so resuming from a trade that
was stored by an archive ingest is safe. ``resume=False`` refetches the whole span.

**Batches.** Trades are written (``Lake.write_trades(mode="merge")``) each time ``batch_rows``
trades have arrived or a UTC day is complete, and once more at the end or on an error. Each
partition write is atomic and batches are written in time order, so bronze always holds a
gap-free prefix of the span: a crash loses at most the batch in flight.

Quality reports (``datasets status``) of the partitions that changed are refreshed at the end.

**Rate limits.** HTTP 429 and 418 (Binance's ban), OKX code 50011 and Bybit code 10006 are waited
out, honouring ``Retry-After`` (or Bybit's ``X-Bapi-Limit-Reset-Timestamp``); network errors and
5xx answers back off exponentially. A wait longer than ``Backoff.max_wait_s`` is not slept through:
the run stops, keeps what it stored and says when to rerun.
"""

from __future__ import annotations

from whalebt.errors import UserError
from whalebt.errors import WhalebtError
import datetime as dt
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from datasets._retry import backoff_s, retry_after_s
from datasets.lake import Lake, Partition, WriteResult
from datasets.exchanges import binance, bybit, okx
from datasets.exchanges._common import Trade
from datasets.schema import normalise_symbol
from datasets.validate import ROW, BadRowsError, screen_trades

__all__ = [
    "REST_EXCHANGES",
    "RestError",
    "Backoff",
    "RestIngestReport",
    "ingest_rest",
    "make_client",
    "point_client_at",
    "call_with_backoff",
    "resume_point",
    "parse_time_ms",
    "format_ms",
    "okx_inst_id",
    "binance_aggtrades_frame",
    "bybit_trades_frame",
    "okx_trades_frame",
]

#: whalebt exchange name → ccxt class name.
REST_EXCHANGES = {"binance_usdm": "binanceusdm", "bybit_linear": "bybit", "okx_swap": "okx"}
#: What each endpoint's trade ids are (bronze footer ``id_space``): the same as the exchange's archive.
REST_ID_SPACES = {"binance_usdm": "binance_agg_trade", "bybit_linear": "bybit_match_uuid", "okx_swap": "okx_trade_id"}

#: Largest page each endpoint serves (the default page size).
PAGE_MAX = {"binance_usdm": 1000, "bybit_linear": 1000, "okx_swap": 100}

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


class RestError(WhalebtError, RuntimeError):
    """The exchange refused a request or kept failing; what was stored before stays stored."""


# ---------------------------------------------------------------------------- small helpers
def parse_time_ms(text: str | int, what: str = "time") -> int:
    """``2024-06-30``, ``2024-06-30T00:00``, ``...Z``/``+00:00`` or epoch milliseconds → ms UTC.

    A time without a zone is UTC.
    """
    s = str(text).strip()
    if s.isdigit():
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{what}: expected a date or time like 2024-06-30 or 2024-06-30T00:00 (UTC) "
            f"or epoch milliseconds; got {s!r}"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(round(t.timestamp() * 1000))


def format_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _say(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(msg, file=sys.stderr)


def okx_inst_id(symbol: str) -> str:
    """``BTCUSDT`` / ``BTC-USDT`` / ``BTC-USDT-SWAP`` → ``BTC-USDT-SWAP`` (:func:`datasets.exchanges.okx.to_inst_id`)."""
    return okx.to_inst_id(symbol)


# ---------------------------------------------------------------------------- ccxt client
def point_client_at(client: Any, base_url: str) -> None:
    """Send every API group of a ccxt exchange to ``base_url`` (same paths, other host).

    ccxt's ``proxyUrl`` mangles query strings, so the URLs themselves are rewritten. Used for
    test servers, mirrors and recording proxies.
    """
    base = base_url.rstrip("/")

    def rewrite(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rewrite(x) for k, x in v.items()}
        if isinstance(v, str) and "://" in v:
            path = urllib.parse.urlsplit(v.replace("{hostname}", str(getattr(client, "hostname", "") or "x"))).path
            return base + path
        return v

    client.urls["api"] = rewrite(client.urls["api"])


def make_client(
    exchange: str, *, api_url: str | None = None, rate_limit_ms: float | None = None, timeout_ms: int = 30_000
) -> Any:
    """A ccxt client for ``exchange`` with the rate limiter on.

    Args:
        exchange: ``binance_usdm``, ``bybit_linear`` or ``okx_swap``.
        api_url: send requests to this base URL instead of the exchange (tests, mirrors).
        rate_limit_ms: ccxt's spacing per unit of request weight (default: ccxt's per exchange).
        timeout_ms: per-request timeout.
    """
    if exchange not in REST_EXCHANGES:
        raise UserError(
            f"unknown exchange {exchange!r} for REST ingestion; expected one of {', '.join(REST_EXCHANGES)}"
        )
    import ccxt  # heavy: only when a client is made

    config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_ms)}
    if rate_limit_ms is not None:
        config["rateLimit"] = float(rate_limit_ms)
    client = getattr(ccxt, REST_EXCHANGES[exchange])(config)
    if api_url:
        point_client_at(client, api_url)
    return client


@dataclass
class Backoff:
    """How to wait after rate-limit and network errors.

    Attributes:
        max_retries: retries of one request before giving up.
        base_s: first exponential back-off (doubled per retry) when the answer names no wait.
        cap_s: largest exponential back-off.
        max_wait_s: a longer wait asked for by the exchange (an IP ban) stops the run instead.
        sleep: the sleeping function (tests may record the waits).
    """

    max_retries: int = 8
    base_s: float = 1.0
    cap_s: float = 60.0
    max_wait_s: float = 900.0
    sleep: Callable[[float], None] = time.sleep


@dataclass
class _Stats:
    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0


def _asked_wait_s(client: Any) -> float | None:
    """The wait the last answer asked for: ``Retry-After`` (seconds or a date) or Bybit's reset time."""
    headers = getattr(client, "last_response_headers", None) or {}
    get = headers.get if hasattr(headers, "get") else (lambda k: None)
    ra = get("Retry-After") or get("retry-after")
    if ra:
        return retry_after_s(ra)
    reset = get("X-Bapi-Limit-Reset-Timestamp") or get("x-bapi-limit-reset-timestamp")
    if reset and str(reset).isdigit():
        return max(0.05, int(reset) / 1000 - time.time())
    return None


def call_with_backoff(
    client: Any, method: str, params: dict[str, Any], *, backoff: Backoff, stats: _Stats | None = None, what: str = ""
) -> Any:
    """Call ccxt implicit endpoint ``method`` with ``params``, waiting out rate limits and outages.

    Raises:
        RestError: the exchange rejected the request (bad symbol, bad parameter), asked for a
            longer wait than ``backoff.max_wait_s``, or kept failing for ``backoff.max_retries``.
    """
    import ccxt

    stats = stats if stats is not None else _Stats()
    label = what or f"{client.id} {method}"
    attempt = 0
    while True:
        stats.requests += 1
        try:
            return getattr(client, method)(params)
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
            asked = _asked_wait_s(client)
            kind, err = "rate limit", exc
        except (ccxt.RequestTimeout, ccxt.ExchangeNotAvailable, ccxt.NetworkError) as exc:
            asked, kind, err = None, "network/server error", exc
        except ccxt.BadSymbol as exc:
            raise RestError(
                f"{label}: the exchange does not know this symbol: {_short(exc)}. "
                "Check --symbol (e.g. BTCUSDT) and --exchange."
            ) from None
        except ccxt.BaseError as exc:
            raise RestError(f"{label}: the exchange rejected the request {params}: {_short(exc)}") from None
        attempt += 1
        if attempt > backoff.max_retries:
            raise RestError(
                f"{label}: gave up after {backoff.max_retries} retries; last answer: {_short(err)}. "
                "Everything fetched before is stored; rerun the same command to resume."
            )
        wait = asked if asked is not None else backoff_s(attempt - 1, backoff.base_s, backoff.cap_s)
        if wait > backoff.max_wait_s:
            resume_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=wait)
            raise RestError(
                f"{label}: the exchange asks to wait {wait:.0f} s ({_short(err)}); "
                f"that is longer than the {backoff.max_wait_s:.0f} s this run waits. What was "
                f"fetched is stored; rerun after {resume_at:%Y-%m-%d %H:%M} UTC to resume."
            )
        how = "as asked" if asked is not None else "back-off"
        _say(
            f"{label}: {kind} ({_short(err, 120)}); waiting {wait:.1f} s ({how}), retry {attempt}/{backoff.max_retries}"
        )
        stats.retries += 1
        stats.waited_s += wait
        backoff.sleep(wait)


def _short(exc: BaseException, n: int = 300) -> str:
    s = str(exc)
    return s if len(s) <= n else s[:n] + "..."


# ---------------------------------------------------------------------------- normalisation
_FRAME_COLS = ["exchange", "symbol", "trade_id", "ts_ms", "price", "qty", "side"]


def _ints(values) -> np.ndarray:
    """int64, or object when a value does not fit (refused later, naming it: datasets.validate)."""
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        return np.asarray(values, dtype=object)


def _frame(exchange: str, symbol: str, ids, ts, px, qty, side) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "exchange": np.full(n, exchange, dtype=object),
            "symbol": np.full(n, symbol, dtype=object),
            "trade_id": _ints(ids),
            "ts_ms": _ints(ts),
            "price": np.asarray(px, dtype=np.float64),
            "qty": np.asarray(qty, dtype=np.float64),
            "side": np.asarray(side, dtype=np.int8),
        },
        columns=_FRAME_COLS,
    )


def _trades_frame(trades: list[Trade], exchange: str, symbol: str) -> pd.DataFrame:
    cols = list(zip(*trades)) if trades else [()] * 7
    return _frame(exchange, symbol, *cols[2:])


def binance_aggtrades_frame(rows: list[dict], symbol: str) -> pd.DataFrame:
    """Binance ``/fapi/v1/aggTrades`` rows → bronze trades (``trade_id`` = ``a``)."""
    sym = normalise_symbol(symbol)
    return _trades_frame(binance.agg_trade_rows(rows, sym, error=RestError), "binance_usdm", sym)


def bybit_trades_frame(rows: list[dict]) -> pd.DataFrame:
    """Bybit ``/v5/market/recent-trade`` rows (newest first) → bronze trades, oldest first.

    ``trade_id`` follows the Bybit archive (:func:`datasets.exchanges.bybit.trade_id`): ``execId``
    is the trade's match UUID (the archive's ``trdMatchID``), and the id is its top 63 bits, so
    REST and archive trades of the same day merge without duplicates.
    """
    trades = bybit.recent_trade_rows(rows, error=RestError)
    return _trades_frame(trades, "bybit_linear", trades[0].symbol if trades else "")


def okx_trades_frame(rows: list[dict], instrument: dict) -> pd.DataFrame:
    """OKX ``/api/v5/market/history-trades`` rows → bronze trades (sizes from contracts to base units)."""
    try:
        inst = str(instrument["instId"])
        ct = float(instrument["ctVal"]) * float(instrument.get("ctMult") or 1)
        margin = "inverse" if instrument.get("ctType") == "inverse" else "linear"
        trades = okx.trade_rows(rows, exchanges=None, contract_values={inst.upper(): (ct, margin)})
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise RestError(
            f"okx history-trades: expected rows with tradeId, px, sz, side, ts; got "
            f"{rows[:1]} ({type(exc).__name__}: {exc})"
        ) from None
    return _trades_frame(trades, "okx_swap", okx.from_inst_id(inst))


# ---------------------------------------------------------------------------- resumption
def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date()


def resume_point(lake: Lake, exchange: str, symbol: str, since_ms: int, until_ms: int) -> tuple[int, int] | None:
    """``(ts_ms, trade_id)`` of the newest stored trade to continue after, or None to start at ``since``.

    Looks at the consecutive stored bronze days starting on ``since``'s day (a missing day ends
    the run) and returns the newest trade in ``[since, until)`` among them.
    """
    d0, d1 = _day(since_ms), _day(max(since_ms, until_ms - 1))
    parts = {p.date: p for p in lake.partitions("bronze", exchange, symbol, start=d0, end=d1)}
    days = []
    d = d0
    while d in parts:
        days.append(d)
        d += dt.timedelta(days=1)
    for d in reversed(days):
        df = lake.read_partition(parts[d], columns=["ts_ms", "trade_id"])
        df = df[(df["ts_ms"] >= since_ms) & (df["ts_ms"] < until_ms)]
        if len(df):
            last = df.sort_values(["ts_ms", "trade_id"], kind="stable").iloc[-1]
            return int(last["ts_ms"]), int(last["trade_id"])
    return None


# ---------------------------------------------------------------------------- the run
@dataclass
class RestIngestReport:
    """What one :func:`ingest_rest` run did."""

    exchange: str
    symbol: str
    since_ms: int
    until_ms: int
    resumed_from: tuple[int, int] | None = None
    trades: int = 0
    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    written: list[WriteResult] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def partitions_changed(self) -> list[Partition]:
        return sorted({w.partition for w in self.written if w.changed})


class _Batcher:
    """Buffers trades in time order; writes a batch per ``batch_rows`` trades or completed UTC day."""

    def __init__(
        self,
        lake: Lake,
        report: RestIngestReport,
        batch_rows: int,
        bar: Any,
        *,
        cover_from: int | None = None,
        replace: bool = False,
        skip_bad_rows: bool = False,
    ) -> None:
        self.lake, self.report, self.batch_rows, self.bar = lake, report, max(1, int(batch_rows)), bar
        self.skip_bad_rows, self.seen = skip_bad_rows, 0
        self.frames: list[pd.DataFrame] = []
        self.rows = 0
        self.first_day: int | None = None
        # Coverage: the paged range. Each batch covers from where the last one stopped to its own
        # last millisecond (exclusive: more trades of it may follow); the final batch of a run that
        # got to the end covers up to `done_until`.
        self.cover_from = cover_from
        self.done_until: int | None = None
        self.replace = replace
        self.replaced: set[int] = set()

    def add(self, df: pd.DataFrame) -> None:
        if df.empty:
            return
        r = self.report
        df = df.assign(**{ROW: np.arange(self.seen + 1, self.seen + 1 + len(df), dtype=np.int64)})
        self.seen += len(df)
        r.trades += len(df)
        r.first_ts_ms = int(df["ts_ms"].iloc[0]) if r.first_ts_ms is None else r.first_ts_ms
        r.last_ts_ms = int(df["ts_ms"].iloc[-1])
        self.frames.append(df)
        self.rows += len(df)
        if self.first_day is None:
            self.first_day = int(df["ts_ms"].iloc[0]) // DAY_MS
        if self.rows >= self.batch_rows or int(df["ts_ms"].iloc[-1]) // DAY_MS > self.first_day:
            self.flush()
        self.bar.set_postfix_str(f"{r.trades:,} trades")

    def flush(self) -> None:
        if not self.frames:
            return
        batch = pd.concat(self.frames, ignore_index=True)
        what = f"{self.report.exchange} {self.report.symbol} REST trades"
        try:  # rows numbered in the order this run received them
            checked = screen_trades(batch, what=what, unit="trade", skip_bad_rows=self.skip_bad_rows)
        except BadRowsError:
            self.frames, self.rows, self.first_day = [], 0, None
            raise
        if len(checked.bad):
            self.lake.write_quarantine("rest", checked.bad)
            batch = checked.good.reset_index(drop=True)
            if batch.empty:
                self.frames, self.rows, self.first_day = [], 0, None
                return
        ts = batch["ts_ms"].to_numpy(np.int64)
        last = int(ts.max())
        lo = int(ts.min()) if self.cover_from is None else min(int(self.cover_from), int(ts.min()))
        hi = max(int(self.done_until), last + 1) if self.done_until is not None else last
        space = REST_ID_SPACES.get(self.report.exchange)
        days = ts // DAY_MS
        for d in np.unique(days):
            one = batch if days[0] == days[-1] else batch[days == d]
            mode: Literal["replace", "merge"] = "replace" if self.replace and int(d) not in self.replaced else "merge"
            self.replaced.add(int(d))
            self.report.written += self.lake.write_trades(
                one, mode=mode, what=what, coverage=[[lo, hi]], coverage_source="rest", id_space=space
            )
        self.cover_from = last
        self.frames, self.rows, self.first_day = [], 0, None


class _Bar:
    """Progress over the span, in minutes of market time covered."""

    def __init__(self, lo_ms: int, hi_ms: int, label: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.lo = lo_ms
        self.t = tqdm(
            total=max(1, (hi_ms - lo_ms) // 60_000),
            unit="min",
            desc=label,
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
        )

    def at(self, ts_ms: int) -> None:
        n = max(0, (ts_ms - self.lo) // 60_000)
        if n > self.t.n:
            self.t.update(min(n, self.t.total) - self.t.n)

    def set_postfix_str(self, s: str) -> None:
        self.t.set_postfix_str(s, refresh=False)

    def close(self) -> None:
        self.t.close()


def ingest_rest(
    lake: Lake | str,
    exchange: str,
    symbol: str,
    since_ms: int,
    until_ms: int | None = None,
    *,
    api_url: str | None = None,
    client: Any = None,
    resume: bool = True,
    batch_rows: int = 200_000,
    page_limit: int | None = None,
    window_ms: int = HOUR_MS,
    rate_limit_ms: float | None = None,
    backoff: Backoff | None = None,
    progress: bool = True,
    replace: bool = False,
    skip_bad_rows: bool = False,
) -> RestIngestReport:
    """Fetch the trades of ``[since_ms, until_ms)`` from an exchange's REST API into bronze.

    Args:
        lake: the lake (or its URI).
        exchange: ``binance_usdm``, ``bybit_linear`` or ``okx_swap``.
        symbol: ``BTCUSDT`` (OKX also takes ``BTC-USDT-SWAP``).
        since_ms: first millisecond of the span (inclusive).
        until_ms: end of the span (exclusive); default: now.
        api_url: base URL to send requests to instead of the exchange.
        client: a ccxt exchange object to use as is (overrides ``api_url``/``rate_limit_ms``).
        resume: continue after the newest stored trade (see the module doc); False refetches all.
        batch_rows: write to the lake after this many trades (and after each UTC day).
        page_limit: trades per request (default: the endpoint's maximum).
        window_ms: time window of Binance's first-trade search and of OKX's backward reads (≤ 1 h
            for Binance).
        rate_limit_ms: ccxt's spacing per unit of request weight (default: ccxt's).
        backoff: waits after rate-limit and network errors.
        progress: show a progress bar on stderr.
        replace: overwrite the span's bronze days with the fetched trades instead of merging
            (implies ``resume=False``); without it a stored day of another id space is refused
            before the first request.
        skip_bad_rows: quarantine trades that fail :func:`datasets.validate.screen_trades` (under
            ``quarantine/rest/``) and store the rest; by default a batch holding one raises before
            it is written (batches written before it stay).

    Each partition records the time range the run paged through as covered (``coverage_source``
    ``rest``) and the endpoint's id space (:data:`REST_ID_SPACES`).

    Returns:
        A :class:`RestIngestReport`; ``gaps`` lists parts of the span the API could not serve.

    Raises:
        RestError: the exchange rejected a request or kept failing (stored data is kept).
        ValueError: a bad argument.
    """
    if exchange not in REST_EXCHANGES:
        raise UserError(f"unknown exchange {exchange!r}; expected one of {', '.join(REST_EXCHANGES)}")
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    until_ms = int(until_ms) if until_ms is not None else int(time.time() * 1000)
    if until_ms <= since_ms:
        raise UserError(f"--until ({format_ms(until_ms)}) must be after --since ({format_ms(since_ms)})")
    limit = int(page_limit or PAGE_MAX[exchange])
    if not 1 <= limit <= PAGE_MAX[exchange]:
        raise UserError(f"page limit for {exchange} must be 1..{PAGE_MAX[exchange]}; got {limit}")
    if exchange == "binance_usdm" and not 1 <= window_ms <= HOUR_MS:
        raise UserError(f"binance_usdm time windows must be 1 ms..1 h; got {window_ms} ms")
    inst = okx.to_inst_id(symbol) if exchange == "okx_swap" else ""  # OKX only
    bronze_symbol = okx.from_inst_id(inst) if exchange == "okx_swap" else normalise_symbol(symbol)
    report = RestIngestReport(exchange, bronze_symbol, int(since_ms), until_ms)
    start_ms = int(since_ms)
    if replace:
        resume = False
    else:
        lake.check_id_space(
            exchange,
            bronze_symbol,
            [_day(since_ms) + dt.timedelta(days=i) for i in range((_day(until_ms - 1) - _day(since_ms)).days + 1)],
            REST_ID_SPACES[exchange],
        )
    if resume:
        report.resumed_from = resume_point(lake, exchange, bronze_symbol, since_ms, until_ms)
        if report.resumed_from:
            start_ms = report.resumed_from[0]
            _say(
                f"{exchange} {bronze_symbol}: resuming after the stored trade {report.resumed_from[1]} "
                f"at {format_ms(start_ms)} UTC"
            )
    client = client if client is not None else make_client(exchange, api_url=api_url, rate_limit_ms=rate_limit_ms)
    stats = _Stats()
    backoff = backoff or Backoff()

    def call(method: str, params: dict[str, Any]) -> Any:
        return call_with_backoff(
            client, method, params, backoff=backoff, stats=stats, what=f"{exchange} {bronze_symbol}"
        )

    bar = _Bar(start_ms, until_ms, f"{exchange} {bronze_symbol}", progress)
    batcher = _Batcher(lake, report, batch_rows, bar, cover_from=start_ms, replace=replace, skip_bad_rows=skip_bad_rows)
    try:
        if exchange == "binance_usdm":
            _run_binance(call, bronze_symbol, start_ms, until_ms, report.resumed_from, limit, window_ms, batcher, bar)
        elif exchange == "okx_swap":
            _run_okx(call, inst, start_ms, until_ms, limit, window_ms, batcher, bar)
        else:
            _run_bybit(call, bronze_symbol, int(since_ms), start_ms, until_ms, limit, batcher, report)
        bar.at(until_ms)
        # Paged to the end: the span is covered up to --until (or now, if that is later than now).
        batcher.done_until = min(until_ms, int(time.time() * 1000))
    finally:
        # Pages already received are complete and in order: keep them even when the run fails.
        try:
            batcher.flush()
        finally:
            bar.close()
            report.requests, report.retries, report.waited_s = stats.requests, stats.retries, stats.waited_s
    if report.partitions_changed:
        from datasets.quality import refresh_quality  # per-partition checks shown by `datasets status`

        refresh_quality(lake, report.partitions_changed)
    for g in report.gaps:
        _say(f"warning: {g}")
    return report


def _run_binance(
    call,
    symbol: str,
    lo: int,
    hi: int,
    resumed: tuple[int, int] | None,
    limit: int,
    window_ms: int,
    batcher: _Batcher,
    bar: _Bar,
) -> None:
    pager = binance.AggTradePager(
        symbol, lo, hi, limit=limit, window_ms=window_ms, from_id=resumed[1] + 1 if resumed else None, error=RestError
    )
    while (req := pager.next_request()) is not None:
        trades = pager.feed(call(binance.CCXT_METHODS[req.path], req.params))
        batcher.add(_trades_frame(trades, "binance_usdm", symbol))
        bar.at(pager.position_ms)


def _run_okx(call, inst_id: str, lo: int, hi: int, limit: int, window_ms: int, batcher: _Batcher, bar: _Bar) -> None:
    got = call("publicGetPublicInstruments", {"instType": "SWAP", "instId": inst_id}).get("data") or []
    if not got:
        raise RestError(f"okx_swap: OKX lists no SWAP instrument {inst_id}; check --symbol")
    instrument = got[0]
    if instrument.get("state") not in (None, "live"):
        _say(f"okx_swap {inst_id}: instrument state is {instrument.get('state')!r}, not 'live'")
    w = lo
    while w < hi:
        top = min(w + window_ms, hi)
        parts: list[pd.DataFrame] = []
        page = call("publicGetMarketHistoryTrades", {"instId": inst_id, "type": "2", "after": top, "limit": limit})[
            "data"
        ]
        while page:
            df = okx_trades_frame(page, instrument)
            parts.append(df[df["ts_ms"] >= w])
            if len(page) < limit or int(df["ts_ms"].min()) < w:
                break
            oldest = min(int(r["tradeId"]) for r in page)
            page = call(
                "publicGetMarketHistoryTrades", {"instId": inst_id, "type": "1", "after": oldest, "limit": limit}
            )["data"]
        if parts:
            window = pd.concat(parts, ignore_index=True).drop_duplicates("trade_id")
            batcher.add(window.sort_values(["ts_ms", "trade_id"], kind="stable").reset_index(drop=True))
        w = top
        bar.at(w)


def _run_bybit(
    call, symbol: str, since: int, start: int, hi: int, limit: int, batcher: _Batcher, report: RestIngestReport
) -> None:
    # One request returns all Bybit still serves: keep every trade of [since, hi) (merging
    # makes the overlap with stored trades harmless); a full page that does not reach back to the
    # newest stored trade (or to since) leaves a hole, which is reported.
    res = call("publicGetV5MarketRecentTrade", {"category": "linear", "symbol": symbol, "limit": limit})
    rows = (res.get("result") or {}).get("list") or []
    df = bybit_trades_frame(rows)
    if len(rows) >= limit and len(df):
        oldest = int(df["ts_ms"].min())
        if oldest > start:
            batcher.cover_from = oldest  # what came before is not served: not covered
            report.gaps.append(
                f"bybit_linear {symbol}: trades from {format_ms(start)} to {format_ms(min(oldest, hi))} UTC are not "
                f"available: Bybit's REST API serves only the latest {limit} trades. Take them from the archive "
                f"(datasets ingest bybit-archive), or run this command more often."
            )
    ts = df["ts_ms"].to_numpy()
    batcher.add(df[(ts >= since) & (ts < hi)].reset_index(drop=True))
