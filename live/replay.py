"""`live replay`: serve a recording over a real WebSocket as the exchange would, with faults.

The server speaks each exchange's URL paths and subscription handshake:

- Binance USD-M: ``/stream?streams=a/b`` (combined frames), ``/ws/<stream>`` and ``/ws``
  (raw frames); ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` methods on any of them;
  REST ``/fapi/v1/aggTrades`` and ``/fapi/v1/historicalTrades`` on the same port, served
  from the recording's trades that have already been played (as the exchange serves the past).
- Bybit v5: ``/v5/public/<category>`` with ``{"op":"subscribe"}`` and ``{"op":"ping"}``.
- OKX v5: ``/ws/v5/public`` with ``{"op":"subscribe"}`` and the text ``ping``.

Only frames of subscribed streams are sent, at recorded pace times ``speed`` or as fast as
the socket takes them. The recording plays like a market: one tape whose position carries
over from one connection to the next, so a client that reconnects continues where it was.

Faults for tests and demos: ``drop_after`` (abort each connection after N frames),
``lose`` (frames that pass while the client is away: skipped on every reconnect, so the
client sees a gap), ``repeat`` (frames sent again after a reconnect: duplicates),
``stall_after`` + ``stall_s`` (go silent once, connection open), ``garbage_every``
(a malformed frame after every N frames).
"""

from __future__ import annotations

from whalebt.errors import UserError
import asyncio
import bisect
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from datasets.sources.recordings import exchange_for_url, iter_frames

__all__ = ["Tape", "ReplayServer", "FaultPlan", "load_tape"]

log = logging.getLogger("whalebt.live.replay")

_STREAM = re.compile(r'^\{"stream":"([^"]+)","data":')
_TOPIC = re.compile(r'"topic":"([^"]+)"')
_OKX_ARG = re.compile(r'"arg":\{"channel":"([^"]+)","instId":"([^"]+)"\}')


@dataclass
class TapeFrame:
    recv_ns: int
    key: str  # routing key: Binance stream, Bybit "<category>|<topic>", OKX "<channel>|<instId>"
    text: str
    #: the frame as WebSocket bytes on the wire (combined / raw Binance payload), encoded on first use
    wire: bytes | None = None
    wire_raw: bytes | None = None


@dataclass
class Tape:
    """The received data frames of a recording with their routing keys."""

    family: str  # binance | bybit | okx
    frames: list[TapeFrame]
    source: str

    def keys(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.frames:
            out[f.key] = out.get(f.key, 0) + 1
        return out


def load_tape(path: str | Path) -> Tape:
    """Read a recording (any layout of `datasets.sources.recordings`) into a :class:`Tape`.

    Control frames of the recording (subscribe acks, pongs) are left out: the server makes
    its own. Frames without a routing key (e.g. a REST snapshot line) are left out too.
    """
    p = Path(path)
    frames: list[TapeFrame] = []
    families: set[str] = set()
    for fr in iter_frames(p):
        if fr.direction != "recv":
            continue
        ex = exchange_for_url(fr.url) if fr.url else "binance_usdm"
        if ex is None:
            continue
        fam = "binance" if ex.startswith("binance") else "bybit" if ex.startswith("bybit") else "okx"
        text = fr.text
        if fam == "binance":
            m = _STREAM.match(text)
            if not m:
                continue
            key = m.group(1).lower()
        elif fam == "bybit":
            m = _TOPIC.search(text)
            if not m or '"op"' in text[:40]:
                continue
            key = f"{ex.removeprefix('bybit_')}|{m.group(1)}"
        else:
            if text == "pong" or '"event"' in text[:20]:
                continue
            m = _OKX_ARG.search(text)
            if not m:
                continue
            key = f"{m.group(1)}|{m.group(2)}"
        families.add(fam)
        frames.append(TapeFrame(fr.recv_ns, key, text))
    if not frames:
        raise UserError(
            f"{p.name}: no exchange data frames to replay (found no Binance stream, Bybit topic or OKX channel frames)"
        )
    if len(families) > 1:
        raise UserError(f"{p.name} mixes exchanges {sorted(families)}; replay serves one exchange per file")
    return Tape(families.pop(), frames, p.name)


@dataclass
class FaultPlan:
    """Injected faults (see the module doc); None/0 switches one off."""

    drop_after: int | None = None
    lose: int = 0
    repeat: int = 0
    stall_after: int | None = None
    stall_s: float = 0.0
    garbage_every: int | None = None


_GARBAGE = ("\x00\x01 this is not JSON", "[1, 2, 3]", None)  # None: the next frame cut in half


class ReplayServer:
    """Serves a :class:`Tape`; `await start()`, then `port`, `url`; `await stop()`."""

    #: frames per socket write at max speed
    BATCH = 64

    def __init__(
        self,
        tape: Tape,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = math.inf,
        faults: FaultPlan | None = None,
        start_frame: int = 0,
    ):
        if not (speed > 0):
            raise UserError(f"speed must be > 0 (or max); got {speed!r}")
        self.tape = tape
        self.host = host
        self.port = port
        self.speed = speed
        self.faults = faults or FaultPlan()
        # start_frame > 0: the market has been running, its past is on REST only (warm-up tests)
        self.cursor = max(0, min(int(start_frame), len(tape.frames)))
        self.sent = 0  # data frames sent, all connections
        self.garbage_sent = 0
        self.connections = 0
        self.generation = 0
        self.stalled = False
        self.finished = asyncio.Event()
        self.ended_and_closed = asyncio.Event()
        self.rest_requests = 0
        self._server: Any = None  # websockets.asyncio.server.Server once started
        self._rest: dict[str, dict[str, list]] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "ReplayServer":
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=2**20,
            ping_interval=20,
            ping_timeout=20,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # ------------------------------------------------------------------ REST
    def _rest_index(self) -> dict[str, dict[str, list]]:
        """symbol → {"agg": [(id, pos, row)], "raw": [...]} from the tape's Binance trade frames."""
        if self._rest is None:
            idx: dict[str, dict[str, list]] = {}
            if self.tape.family == "binance":
                for pos, f in enumerate(self.tape.frames):
                    kind = f.key.rsplit("@", 1)[-1]
                    if kind not in ("aggtrade", "trade"):
                        continue
                    d = json.loads(f.text)["data"]
                    sym = str(d["s"]).upper()
                    book = idx.setdefault(sym, {"agg": [], "raw": []})
                    if kind == "aggtrade":
                        row = {
                            "a": d["a"],
                            "p": d["p"],
                            "q": d["q"],
                            "f": d.get("f", d["a"]),
                            "l": d.get("l", d["a"]),
                            "T": d["T"],
                            "m": d["m"],
                        }
                        book["agg"].append((int(d["a"]), pos, row))
                    elif d.get("X", "MARKET") == "MARKET":
                        qq = f"{float(d['p']) * float(d['q']):.8f}"
                        row = {
                            "id": d["t"],
                            "price": d["p"],
                            "qty": d["q"],
                            "quoteQty": qq,
                            "time": d["T"],
                            "isBuyerMaker": d["m"],
                        }
                        book["raw"].append((int(d["t"]), pos, row))
                for book in idx.values():
                    book["agg"].sort(key=lambda x: x[0])
                    book["raw"].sort(key=lambda x: x[0])
                    if not book["agg"] and book["raw"]:
                        book["agg"] = _aggregate(book["raw"])
            self._rest = idx
        return self._rest

    def _rest_rows(self, kind: str, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol", "").upper()
        if not sym:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}
        book = self._rest_index().get(sym, {}).get(kind, [])
        try:
            limit = min(int(q.get("limit", "500")), 1000 if kind == "agg" else 500)
            ids = [x[0] for x in book]
            if "fromId" in q:
                lo = bisect.bisect_left(ids, int(q["fromId"]))
                cand = book[lo:]
            else:
                cand = book
            if "startTime" in q or "endTime" in q:
                t0 = int(q.get("startTime", 0))
                t1 = int(q.get("endTime", 2**62))
                tkey = "T" if kind == "agg" else "time"
                cand = [x for x in cand if t0 <= int(x[2][tkey]) <= t1]
        except ValueError as exc:
            return 400, {"code": -1100, "msg": f"Illegal characters found in a parameter: {exc}"}
        played = [x[2] for x in cand if x[1] < self.cursor]
        if "fromId" not in q and "startTime" not in q:
            played = played[-limit:]
        return 200, played[:limit]

    def _process_request(self, connection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        self.rest_requests += 1
        parts = urlsplit(request.path)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/")
        if path == "/fapi/v1/aggTrades":
            status, body = self._rest_rows("agg", q)
        elif path in ("/fapi/v1/historicalTrades", "/fapi/v1/trades"):
            status, body = self._rest_rows("raw", q)
        elif path == "/fapi/v1/ping":
            status, body = 200, {}
        elif path == "/fapi/v1/time":
            status, body = 200, {"serverTime": time.time_ns() // 1_000_000}
        else:
            status, body = (
                404,
                {
                    "code": -1,
                    "msg": f"replay serves no {path}; it serves /fapi/v1/aggTrades, "
                    "/fapi/v1/historicalTrades and WebSocket upgrades",
                },
            )
        resp = connection.respond(status, json.dumps(body))
        del resp.headers["Content-Type"]
        resp.headers["Content-Type"] = "application/json"
        return resp

    # ------------------------------------------------------------------ WebSocket
    def _route(self, path: str) -> tuple[str, set[str], bool]:
        """(family, initial subscriptions, raw Binance frames?) of a request path; raises ValueError."""
        parts = urlsplit(path)
        p = parts.path.rstrip("/")
        fam = self.tape.family
        if fam == "binance":
            if p == "/stream":
                streams = parse_qs(parts.query).get("streams", [""])[-1]
                return fam, {s.lower() for s in streams.split("/") if s}, False
            if p == "/ws":
                return fam, set(), True
            if p.startswith("/ws/"):
                return fam, {s.lower() for s in p[4:].split("/") if s}, True
        elif fam == "bybit" and p.startswith("/v5/public/"):
            return fam, set(), False
        elif fam == "okx" and p == "/ws/v5/public":
            return fam, set(), False
        expected = {
            "binance": "/stream?streams=..., /ws, /ws/<stream>",
            "bybit": "/v5/public/linear",
            "okx": "/ws/v5/public",
        }[fam]
        raise ValueError(f"path {p!r} not served; this {fam} replay serves {expected}")

    async def _handler(self, ws) -> None:
        try:
            fam, subs, raw = self._route(ws.request.path)
        except ValueError as exc:
            log.warning("replay of %s: %s", self.tape.source, exc)
            await ws.close(1008, str(exc)[:120])
            return
        category = urlsplit(ws.request.path).path.rstrip("/").rsplit("/", 1)[-1] if fam == "bybit" else ""
        self.connections += 1
        conn_id = f"replay-{self.connections}"
        subscribed = asyncio.Event()
        if subs:
            self._warn_unknown(subs)
            subscribed.set()
        reader = asyncio.create_task(self._client_messages(ws, fam, category, subs, subscribed, conn_id))
        try:
            if not self.finished.is_set():
                waiter = asyncio.create_task(subscribed.wait())
                await asyncio.wait([waiter, reader], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if subscribed.is_set():
                    await self._stream(ws, subs, raw)
            if self.finished.is_set():
                await ws.wait_closed()  # stay open and quiet after the end, as a market with no trades
        finally:
            reader.cancel()

    def _warn_unknown(self, keys: set[str]) -> None:
        have = self.tape.keys()
        missing = sorted(k for k in keys if k not in have)
        if missing:
            top = ", ".join(f"{k} ({n})" for k, n in sorted(have.items(), key=lambda kv: -kv[1])[:8])
            log.warning("the recording has no frames for %s; it has: %s", ", ".join(missing), top)

    async def _client_messages(self, ws, fam, category, subs, subscribed, conn_id) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in ws:
                if fam == "okx" and msg == "ping":
                    await ws.send("pong")
                    continue
                try:
                    req = json.loads(msg)
                except json.JSONDecodeError:
                    await ws.send(json.dumps({"error": f"invalid JSON: {msg[:80]}"}))
                    continue
                if fam == "binance":
                    method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
                    if method == "SUBSCRIBE":
                        new = {str(s).lower() for s in params}
                        self._warn_unknown(new)
                        subs.update(new)
                        await ws.send(json.dumps({"result": None, "id": rid}))
                        subscribed.set()
                    elif method == "UNSUBSCRIBE":
                        subs.difference_update(str(s).lower() for s in params)
                        await ws.send(json.dumps({"result": None, "id": rid}))
                    elif method == "LIST_SUBSCRIPTIONS":
                        await ws.send(json.dumps({"result": sorted(subs), "id": rid}))
                    else:
                        await ws.send(
                            json.dumps({"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": rid})
                        )
                elif fam == "bybit":
                    op = req.get("op")
                    if op == "ping":
                        await ws.send(
                            json.dumps(
                                {
                                    "success": True,
                                    "ret_msg": "pong",
                                    "conn_id": conn_id,
                                    "req_id": req.get("req_id", ""),
                                    "op": "ping",
                                }
                            )
                        )
                    elif op == "subscribe":
                        new = {f"{category}|{a}" for a in req.get("args") or []}
                        self._warn_unknown(new)
                        subs.update(new)
                        await ws.send(
                            json.dumps(
                                {
                                    "success": True,
                                    "ret_msg": "",
                                    "conn_id": conn_id,
                                    "req_id": req.get("req_id", ""),
                                    "op": "subscribe",
                                }
                            )
                        )
                        subscribed.set()
                    else:
                        await ws.send(
                            json.dumps(
                                {"success": False, "ret_msg": f"unknown op {op!r}", "conn_id": conn_id, "op": op}
                            )
                        )
                else:
                    if req.get("op") == "subscribe":
                        for a in req.get("args") or []:
                            key = f"{a.get('channel')}|{a.get('instId')}"
                            self._warn_unknown({key})
                            subs.add(key)
                            await ws.send(json.dumps({"event": "subscribe", "arg": a, "connId": conn_id}))
                        subscribed.set()
                    else:
                        await ws.send(
                            json.dumps(
                                {
                                    "event": "error",
                                    "code": "60012",
                                    "msg": f"Invalid request: {msg[:80]}",
                                    "connId": conn_id,
                                }
                            )
                        )
        except ConnectionClosed:
            return

    def _skip(self, subs: set[str], n: int) -> None:
        """Advance the tape past `n` subscribed frames (they happen while the client is away)."""
        frames = self.tape.frames
        while n > 0 and self.cursor < len(frames):
            if frames[self.cursor].key in subs:
                n -= 1
            self.cursor += 1

    def _rewind(self, subs: set[str], n: int) -> None:
        frames = self.tape.frames
        while n > 0 and self.cursor > 0:
            self.cursor -= 1
            if frames[self.cursor].key in subs:
                n -= 1

    async def _stream(self, ws, subs: set[str], raw: bool) -> None:
        """Send the tape from the cursor until its end, a fault, or a newer connection.

        Frames go out pre-encoded (see `_wire`). At max speed they are written in batches of
        `BATCH` frames with one socket write and flow control each; per-frame `ws.send` costs
        ~15 µs in websockets, which made the server, not the client, the bottleneck.
        """
        f = self.faults
        self.generation += 1
        gen = self.generation
        if self.connections > 1:
            self._skip(subs, f.lose)
            self._rewind(subs, f.repeat)
        frames = self.tape.frames
        loop = asyncio.get_running_loop()
        paced = math.isfinite(self.speed)
        t0 = loop.time()
        base_ns = frames[self.cursor].recv_ns if self.cursor < len(frames) else 0
        sent_here = 0
        batch: list[bytes] = []
        while self.cursor < len(frames):
            if gen != self.generation:
                return  # a newer connection owns the tape
            fr = frames[self.cursor]
            if fr.key not in subs:
                self.cursor += 1
                continue
            if paced:
                delay = t0 + (fr.recv_ns - base_ns) / 1e9 / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif len(batch) >= self.BATCH:
                if not await _write(ws, batch):
                    return
                await asyncio.sleep(0)  # let REST requests and handshakes in
            if f.stall_after is not None and not self.stalled and self.sent >= f.stall_after:
                if not await _write(ws, batch):
                    return
                self.stalled = True
                log.info("replay: stalling %.1f s after %d frames (connection left open)", f.stall_s, self.sent)
                try:  # silent, but give up early if the client goes away
                    await asyncio.wait_for(ws.wait_closed(), f.stall_s)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                if gen != self.generation or ws.state is not State.OPEN:
                    return
                t0, base_ns = loop.time(), fr.recv_ns
            if (
                f.garbage_every
                and self.sent
                and self.sent % f.garbage_every == 0
                and self.garbage_sent < self.sent // f.garbage_every
            ):
                g = _GARBAGE[self.garbage_sent % len(_GARBAGE)]
                batch.append(_encode(g if g is not None else fr.text[: len(fr.text) // 2]))
                self.garbage_sent += 1
            batch.append(_wire(fr, raw))
            self.cursor += 1
            self.sent += 1
            sent_here += 1
            if paced and not await _write(ws, batch):
                return
            if f.drop_after and sent_here >= f.drop_after and self.cursor < len(frames):
                await _write(ws, batch)
                log.info(
                    "replay: dropping the connection after %d frames (tape at %d/%d)",
                    sent_here,
                    self.cursor,
                    len(frames),
                )
                ws.transport.abort()
                return
        if not await _write(ws, batch):
            return
        if gen == self.generation and self.cursor >= len(frames):
            self.finished.set()
            log.info("replay: end of recording (%d frames sent, %d garbage)", self.sent, self.garbage_sent)
            await ws.close(1000, "end of recording")
            self.ended_and_closed.set()


async def _write(ws, batch: list[bytes]) -> bool:
    """Write pre-encoded frames in one go and wait for the socket's buffer to drain; False if closed.

    The bytes bypass `ws.send` but are whole frames, so they interleave correctly with the
    control frames (pings, close) that websockets writes on the same transport.
    """
    if ws.state is not State.OPEN:
        return False
    if batch:
        ws.transport.write(b"".join(batch))
        batch.clear()
        try:
            await ws.drain()  # websockets' flow control (pause_writing / resume_writing)
        except ConnectionError:
            return False
    return True


def _aggregate(raw: list) -> list:
    """aggTrades from raw fills (a recording of @trade only): consecutive fills with equal time,
    price and side make one row with f/l their first/last fill id. Binance numbers aggTrades on its
    own; here `a` counts from 1, and a row is on REST once its last fill has been played."""
    out: list = []
    for tid, pos, r in raw:
        if out:
            cur = out[-1][2]
            if (
                cur["T"] == r["time"]
                and cur["p"] == r["price"]
                and cur["m"] == r["isBuyerMaker"]
                and cur["l"] == tid - 1
            ):
                cur["q"] = repr(float(cur["q"]) + float(r["qty"]))
                cur["l"] = tid
                out[-1] = (out[-1][0], pos, cur)
                continue
        out.append(
            (
                len(out) + 1,
                pos,
                {
                    "a": len(out) + 1,
                    "p": r["price"],
                    "q": r["qty"],
                    "f": tid,
                    "l": tid,
                    "T": r["time"],
                    "m": r["isBuyerMaker"],
                },
            )
        )
    return out


def _payload(fr: TapeFrame, raw: bool) -> str:
    if not raw:
        return fr.text
    m = _STREAM.match(fr.text)
    if m and fr.text.endswith("}"):
        return fr.text[m.end() : -1]
    return json.dumps(json.loads(fr.text)["data"])


def _encode(text: str) -> bytes:
    """One unmasked text frame (server to client), as websockets would write it."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def _wire(fr: TapeFrame, raw: bool) -> bytes:
    """The frame's bytes on the wire, encoded once per tape frame and layout."""
    if raw:
        if fr.wire_raw is None:
            fr.wire_raw = _encode(_payload(fr, True))
        return fr.wire_raw
    if fr.wire is None:
        fr.wire = _encode(fr.text)
    return fr.wire
