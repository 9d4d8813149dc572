"""The runner's HTTP side: `/health`, `/metrics` (Prometheus text), `/signals?limit=N`, `/paper?limit=N`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from live.runner import Runner

__all__ = ["start_http", "is_loopback"]


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    """True for an interface only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_http(runner: "Runner", host: str, port: int, token: str | None = None):
    """Serve the runner's state; returns (aiohttp AppRunner, bound port).

    With ``token``, `/signals` and `/metrics` answer only requests carrying
    ``Authorization: Bearer <token>`` (401 otherwise); `/health` stays open for probes. Off
    loopback a token is required.
    """
    import errno
    import hmac

    from aiohttp import web

    from whalebt.errors import UserError

    if not token and not is_loopback(host):
        raise UserError(
            f"--http-host {host} is reachable from other machines: set WHALEBT_HTTP_TOKEN to a secret "
            "(e.g. `openssl rand -hex 32`) so that /signals and /metrics need it, or bind 127.0.0.1"
        )
    want = f"Bearer {token}".encode() if token else None

    def authorised(request: web.Request) -> bool:
        if want is None:
            return True
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), want)

    def denied() -> web.Response:
        return web.json_response(
            {"error": "this endpoint needs Authorization: Bearer <WHALEBT_HTTP_TOKEN>"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def health(request: web.Request) -> web.Response:
        ok, body = runner.health()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        if not authorised(request):
            return denied()
        return web.Response(
            text=runner.render_metrics(),
            content_type="text/plain",
            headers={"X-Content-Type-Options": "nosniff"},
            charset="utf-8",
        )

    def _limit(request: web.Request) -> int | None:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return None
        return limit if limit >= 0 else None

    def _bad_limit(request: web.Request) -> web.Response:
        raw = request.query.get("limit", "50")
        return web.json_response({"error": f"limit must be a whole number >= 0; got {raw!r}"}, status=400)

    async def signals(request: web.Request) -> web.Response:
        if not authorised(request):
            return denied()
        limit = _limit(request)
        if limit is None:
            return _bad_limit(request)
        recs = list(runner.recent)[-limit:] if limit else []
        return web.Response(text=json.dumps(recs), content_type="application/json")

    async def paper(request: web.Request) -> web.Response:
        """The last closed paper positions (docs/spec.md §5.5 lines); [] without a paper book."""
        if not authorised(request):
            return denied()
        limit = _limit(request)
        if limit is None:
            return _bad_limit(request)
        book = runner.paper
        recs = book.closed[-limit:] if book is not None and limit else []
        return web.Response(text=json.dumps(recs), content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/signals", signals)
    app.router.add_get("/paper", paper)
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await app_runner.setup()
    site = web.TCPSite(app_runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await app_runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"--http-port {port} on {host} is in use by another process; pick another port (0: any free one)"
            ) from None
        raise UserError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    bound = port
    for s in app_runner.sites:
        server = getattr(s, "_server", None)
        if server is not None and server.sockets:
            bound = server.sockets[0].getsockname()[1]
    return app_runner, bound
