"""REST work of the runner: the async HTTP client, gap backfill, reconnect catch-up and the warm-up (pagers from :mod:`datasets.exchanges`)."""

from __future__ import annotations

from whalebt.errors import UserError
import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from datasets._retry import retry_async
from datasets.sources.frames import Trade
from live.adapters import RestError
from live.runner.ids import SymbolFeed
from live.runner.options import backoff_delay

if TYPE_CHECKING:
    from live.runner.core import Runner

log = logging.getLogger("whalebt.live")


class _TransientRestError(RestError):
    """A REST answer worth retrying (a 5xx or 429, a network error, a cut body)."""


async def _get_json(self: Runner, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    import aiohttp

    if self._session is None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    base = (self.opts.rest_url or self.adapter.default_rest_url).rstrip("/")
    session = self._session
    query = {k: str(v) for k, v in params.items()}

    async def once() -> Any:
        try:
            async with session.get(base + path, params=query, headers=headers) as resp:
                body = await resp.text()
                if resp.status == 200:
                    return json.loads(body)
                error = RestError if resp.status in (400, 401, 403, 404) else _TransientRestError
                raise error(f"GET {base}{path} → HTTP {resp.status}: {body[:200]}")
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            raise _TransientRestError(f"GET {base}{path} failed: {_describe(exc)}") from None

    return await retry_async(
        once,
        retries=max(0, self.opts.rest_retries - 1),
        delay=lambda i, _: backoff_delay(i, self.opts.backoff_base_s, self.opts.backoff_cap_s, self.rng),
        retry_on=(_TransientRestError,),
    )


def _describe(exc: BaseException) -> str:
    """A network error in a few words (no network, DNS, refused, timeout) instead of its repr."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host} (no network, or DNS down?)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({why.lower()}; no network, or the service is down?)"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer within 15 s"
    if isinstance(exc, json.JSONDecodeError):
        return f"the answer is not JSON ({exc.msg})"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


async def _backfill(self: Runner, feed: SymbolFeed, lo: int, hi: int) -> None:
    t0 = time.perf_counter_ns()
    try:
        await self._backfill_ids(feed, lo, hi)
    finally:
        self._io_ns += time.perf_counter_ns() - t0


async def _backfill_ids(self: Runner, feed: SymbolFeed, lo: int, hi: int) -> None:
    feed.n_gaps += 1
    want = hi - lo + 1
    log.warning("%s: gap of %d trade id(s) %d..%d; backfilling over REST", feed.symbol, want, lo, hi)
    try:
        rows = await self.adapter.fetch_ids(self._get_json, feed.symbol, lo, hi)
    except RestError as exc:
        feed.n_unfilled += want
        log.error("%s: backfill of %d..%d failed, %d trade(s) missing: %s", feed.symbol, lo, hi, want, exc)
        return
    for r in rows:
        self._on_row(feed, r, True)
    feed.n_backfilled += len(rows)
    if len(rows) < want:
        feed.n_unfilled += want - len(rows)
        log.error("%s: REST returned %d of the %d missing trades", feed.symbol, len(rows), want)


async def _catch_up(self: Runner) -> None:
    """After a reconnect, fetch over REST what passed while away, before reading on.

    A gap shows up by itself when the next trade of a symbol arrives, but trades lost at the
    end of a symbol's burst, or all of a quiet symbol's, would wait for that: on exchanges
    with consecutive ids each symbol is caught up from its last id (or, never seen yet,
    from the stream's last trade time) to what REST has now.
    """
    if not self.adapter.contiguous_ids:
        return
    for feed in self.feeds.values():
        try:
            if feed.last_id is not None:
                rows = await self.adapter.fetch_ids(
                    self._get_json, feed.symbol, feed.last_id + 1, feed.last_id + 10_000_000
                )
            elif self.last_stream_ts_ms is not None:
                t0 = self.last_stream_ts_ms - 1000
                rows = await self.adapter.fetch_since(self._get_json, feed.symbol, t0, t0 + 3_600_000)
            else:
                continue
        except RestError as exc:
            log.error("%s: catching up over REST after the reconnect failed: %s", feed.symbol, exc)
            continue
        n_before = feed.n_trades
        for r in rows:
            self._on_row(feed, r, True)
        if rows:
            feed.n_gaps += 1
            feed.n_backfilled += len(rows)
            log.warning(
                "%s: %d trade(s) passed during the reconnect; fetched over REST (%d new)",
                feed.symbol,
                len(rows),
                feed.n_trades - n_before,
            )


def warmup_seconds(self: Runner) -> float:
    """History the kernel needs before its signals mean what the backtest's do."""
    if self.opts.warmup_s is not None:
        return float(self.opts.warmup_s)
    p = self.decider.params
    need = 60.0  # the longest feature window (signals.features.WINDOWS_S)
    if p.window_s is not None:
        need = max(need, float(p.lookback_s + p.window_s))
    return need + 5.0


async def _warm_up(self: Runner) -> None:
    mode = self.opts.warmup_from
    if mode == "none":
        for f in self.feeds.values():
            f.live = True
        log.info("warm-up: none; the kernel starts cold and signals are allowed from the first trade")
        return
    span_s = self.warmup_seconds()
    until = self.opts.clock_ms()
    since = until - int(span_s * 1000)
    for sym, feed in self.feeds.items():
        if self._stop.is_set():
            return
        if mode == "rest":
            try:
                rows = await self.adapter.fetch_since(self._get_json, sym, since, until)
            except RestError as exc:
                raise RestError(
                    f"warm-up of {sym} over REST failed: {exc}. Retry, or start with --warmup-from lake or none"
                ) from None
        elif mode == "lake":
            rows = self._lake_rows(sym, since, until)
        else:
            raise UserError(f"--warmup-from must be rest, lake or none; got {mode!r}")
        self.warm_rows[sym] = len(rows)
        for r in rows:
            self._on_row(feed, r, True)
        raw_last = getattr(self.adapter, "last_raw_ids", {}).get(sym)
        if raw_last is not None:  # Binance @trade: REST gave aggTrades; continue from their last fill id
            feed.last_id = raw_last
        if rows:
            feed.warmed_up(rows[-1].ts_ms)
        feed.live = True
        first = rows[0].ts_ms if rows else None
        log.info(
            "warm-up: %s %d trades from %s (%s .. %s, %.0f s asked); signals allowed after trade id %s",
            sym,
            len(rows),
            mode,
            first,
            rows[-1].ts_ms if rows else None,
            span_s,
            feed.last_id,
        )


def _lake_rows(self: Runner, symbol: str, since_ms: int, until_ms: int) -> list[Trade]:
    import datetime as dt

    from datasets.lake import Lake, NoDataError

    if not self.opts.lake:
        raise UserError("--warmup-from lake needs --lake (or WHALEBT_LAKE)")
    lake = Lake(self.opts.lake)
    d0 = dt.datetime.fromtimestamp(since_ms / 1000, dt.timezone.utc).date()
    d1 = dt.datetime.fromtimestamp(until_ms / 1000, dt.timezone.utc).date()
    try:
        df = lake.read("bronze", self.adapter.exchange, symbol, d0, d1)
    except NoDataError as exc:
        log.warning("warm-up from lake: %s; starting cold", exc)
        return []
    df = df[(df.ts_ms >= since_ms) & (df.ts_ms <= until_ms)].sort_values(["ts_ms", "trade_id"])
    ex = self.adapter.exchange
    return [
        Trade(ex, symbol, int(t), int(ts), float(p), float(q), int(s))
        for t, ts, p, q, s in zip(df.trade_id, df.ts_ms, df.price, df.qty, df.side)
    ]
