"""The picows connection: connect and reconnect with back-off, subscribe, keep-alive, staleness and renewal, the listener."""

from __future__ import annotations

from whalebt.errors import UserError
import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, cast

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)

from live.runner.options import (
    CLOSE_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    OPEN_TIMEOUT_S,
    PING_IDLE_S,
    REHEARSE_EVERY_S,
    backoff_delay,
)

if TYPE_CHECKING:
    from live.runner.core import Runner

log = logging.getLogger("whalebt.live")


async def _connect_loop(self: Runner) -> None:
    attempt = 0
    url = self.adapter.ws_url(self.symbols, self.opts.ws_url)
    while not self._stopping:
        got_data = False
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                transport, listener = await ws_connect(
                    lambda: _Listener(self),
                    url,
                    websocket_handshake_timeout=OPEN_TIMEOUT_S,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=PING_IDLE_S,
                    auto_ping_reply_timeout=PING_IDLE_S,
                    max_frame_size=MAX_MESSAGE_BYTES,
                    logger_name="whalebt",
                )
            got_data = await self._serve_connection(transport, cast(_Listener, listener), url)
        except WSInvalidURL as exc:
            raise UserError(
                f"--ws-url {url!r} is not a WebSocket URL ({exc}); expected ws://host:port/path or wss://..."
            ) from None
        except (OSError, WSError, TimeoutError) as exc:
            log.warning("connection to %s failed or dropped: %s", url, exc or type(exc).__name__)
        finally:
            self._transport = None
            self.connected = False
        if self._stopping:
            break
        if got_data:
            attempt = 0
        delay = backoff_delay(attempt, self.opts.backoff_base_s, self.opts.backoff_cap_s, self.rng)
        attempt += 1
        self.n_reconnects += 1
        log.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except (asyncio.TimeoutError, TimeoutError):
            pass


def _on_connected(self: Runner, transport: WSTransport) -> None:
    """The handshake is done and no frame of the new connection has been handled yet."""
    self._transport = transport
    if self._backlog is not None:
        self._pause_reading()
    if self.n_connections:
        # what passed while away comes over REST before the new connection's frames
        self._defer(self._catch_up())
    self.n_connections += 1


async def _serve_connection(self: Runner, transport: WSTransport, listener: "_Listener", url: str) -> bool:
    """Subscribe, then watch the connection until it ends, goes stale or must be renewed.

    Frames are handled by the listener as they arrive; this coroutine only wakes every
    `tick` to check staleness and the renewal deadline. True if any message came.
    """
    loop = asyncio.get_running_loop()
    self.connected = True
    log.info("connected to %s", url)
    for msg in self.adapter.subscribe_messages(self.symbols, url):
        transport.send(WSMsgType.TEXT, msg.encode())
    pinger = asyncio.create_task(self._app_pings(transport)) if self.adapter.app_ping_text else None
    spinner = asyncio.create_task(self._poll_busily()) if self.opts.busy_poll else None
    closed = asyncio.ensure_future(transport.wait_disconnected())
    stopped = asyncio.ensure_future(self._stop.wait())
    stale_s = self.opts.stale_s
    renew_at = loop.time() + self.adapter.max_connection_s if self.adapter.max_connection_s else math.inf
    opened_ns = time.perf_counter_ns()
    tick = min(1.0, stale_s / 4, self.opts.silence_s / 2)
    trade_frames_at_open = self.n_trade_frames
    messages_at_open = self.n_frames
    try:
        while not closed.done():
            await asyncio.wait((closed, stopped), timeout=tick, return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                break
            if stopped.done():
                await self._close(transport, closed)
                break
            # silence while REST work holds the reading (see _defer) says nothing about the connection
            quiet_ns = time.perf_counter_ns() - max(opened_ns, self.last_frame_ns)
            if self._backlog is None and quiet_ns > stale_s * 1e9:
                log.warning("no frame for %.1f s: treating the connection as dead", stale_s)
                await self._close(transport, closed)
                break
            if self.n_trade_frames > trade_frames_at_open:
                if self.silent:
                    log.info("trades arrive now; the connection is no longer silent")
                    self.silent = None
            elif not self.silent and time.perf_counter_ns() - opened_ns > self.opts.silence_s * 1e9:
                self._set_silent(url, self.n_frames - messages_at_open)
            if loop.time() >= renew_at:
                log.info(
                    "renewing the connection before the exchange's %d h limit",
                    int((self.adapter.max_connection_s or 0) // 3600) + 1,
                )
                await self._close(transport, closed)
                break
        closed.result()  # raises what a frame callback raised (it ended the connection)
        peer = transport.close_handshake.recv if transport.close_handshake is not None else None
        if peer is not None and not self._stopping:
            log.warning("connection closed by the server: %s %s", peer.code.value, peer.reason)
    finally:
        self.silent = None
        stopped.cancel()
        if pinger:
            pinger.cancel()
        if spinner:
            spinner.cancel()
    return listener.n_messages > 0


def _set_silent(self: Runner, url: str, n_other: int) -> None:
    """The connection brought no trade of our symbols for `silence_s`: say so (log, /health, metric)."""
    what = self.adapter.subscription_names(self.symbols)
    self.silent = (
        f"connected to {url} {self.opts.silence_s:g} s ago, subscribed to {what}, and no trade for them came "
        f"({n_other} other frame(s)); check --symbols and --stream (a `live replay` serves only its recording's streams)"
    )
    self.n_silent += 1
    log.warning("silent connection: %s", self.silent)


async def _close(transport: WSTransport, closed: asyncio.Future) -> None:
    """Close handshake; the connection is cut if the server does not answer in time."""
    transport.send_close(WSCloseCode.OK)
    try:
        await asyncio.wait_for(asyncio.shield(closed), CLOSE_TIMEOUT_S)
    except TimeoutError:
        transport.disconnect(graceful=False)
        await asyncio.wait((closed,))


async def _app_pings(self: Runner, transport: WSTransport) -> None:
    text = self.adapter.app_ping_text
    assert text is not None  # the ping task starts only for adapters that send one
    payload = text.encode()
    while not transport.is_disconnected:
        await asyncio.sleep(self.adapter.app_ping_interval_s)
        transport.send(WSMsgType.TEXT, payload)


async def _poll_busily(self: Runner) -> None:
    """`--busy-poll`: poll the socket instead of sleeping, and keep the frame path warm.

    Why (measured at recorded pace on a shared 2-core VM): a runner that sleeps between
    frames gives its core away, other processes run there, and the next frame finds the
    caches and TLB cold: frames after a gap of a millisecond or more took ~200 µs instead of
    ~20 µs, all of parsing, id checks, merging, kernel and model alike. Spinning keeps the
    core; rehearsing the frame path when no frame came for `REHEARSE_EVERY_S` keeps it warm
    (either alone did not help much). The price is one core at 100%.
    """
    every_ns = int(REHEARSE_EVERY_S * 1e9)
    rehearsed_ns = 0
    while True:
        await asyncio.sleep(0)  # one loop iteration: a non-blocking poll, ready callbacks, timers
        now = time.perf_counter_ns()
        if now - max(self.last_frame_ns, rehearsed_ns) >= every_ns:
            rehearsed_ns = now
            self._rehearse()


class _Listener(WSListener):
    """picows callbacks of one connection: each complete message goes straight to the runner.

    A message is stamped as received when picows hands over its last frame, the equivalent of
    a client's `recv()` returning it. Text messages go on as `str` and binary ones as `bytes`
    (as websockets gives them); text that is not UTF-8 goes on as `bytes` for the parser to
    count as a bad frame. Exchanges do not fragment messages, but a fragmented one is assembled
    as the protocol requires. Pings are answered by picows; a close frame from the server is
    answered and ends the connection.
    """

    def __init__(self, runner: Runner):
        super().__init__()
        self._runner = runner
        self._parts: list[bytes] | None = None  # the frames so far of a fragmented message
        self._parts_text = False
        self.n_messages = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._runner._on_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t_recv_ns = time.perf_counter_ns()
        kind = frame.msg_type
        payload: str | bytes | None
        if kind is WSMsgType.TEXT and frame.fin:  # nearly every message
            try:
                payload = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                payload = frame.get_payload_as_bytes()
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        else:
            payload = self._assemble(kind, frame)
            if payload is None:
                return
        self.n_messages += 1
        if not self._runner._stopping:
            self._runner.on_message(payload, t_recv_ns)

    def _assemble(self, kind: WSMsgType, frame: WSFrame) -> bytes | str | None:
        """A binary message, or the last frame of a fragmented one: the whole message; else None."""
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            if frame.fin:
                return frame.get_payload_as_bytes()
            self._parts, self._parts_text = [frame.get_payload_as_bytes()], kind is WSMsgType.TEXT
            return None
        if kind is not WSMsgType.CONTINUATION or self._parts is None:
            return None  # a pong nobody asked for
        self._parts.append(frame.get_payload_as_bytes())
        if sum(map(len, self._parts)) > MAX_MESSAGE_BYTES:
            raise WSProtocolError(WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_MESSAGE_BYTES} bytes")
        if not frame.fin:
            return None
        payload, self._parts = b"".join(self._parts), None
        if self._parts_text:
            try:
                return payload.decode()
            except UnicodeDecodeError:
                pass
        return payload
