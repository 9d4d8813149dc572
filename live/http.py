"""The runner's HTTP side: `/health`, `/metrics` (Prometheus text), `/signals?limit=N`, `/paper?limit=N`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from live.runner import Runner

__all__ = ["start_http"]


async def start_http(runner: "Runner", host: str, port: int):
    """Serve the runner's state; returns (aiohttp AppRunner, bound port)."""
    from aiohttp import web

    async def health(request: web.Request) -> web.Response:
        ok, body = runner.health()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
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
        limit = _limit(request)
        if limit is None:
            return _bad_limit(request)
        recs = list(runner.recent)[-limit:] if limit else []
        return web.Response(text=json.dumps(recs), content_type="application/json")

    async def paper(request: web.Request) -> web.Response:
        """The last closed paper positions (docs/spec.md §5.5 lines); [] without a paper book."""
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
    await site.start()
    bound = port
    for s in app_runner.sites:
        server = getattr(s, "_server", None)
        if server is not None and server.sockets:
            bound = server.sockets[0].getsockname()[1]
    return app_runner, bound
