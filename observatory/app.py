"""The observatory's aiohttp application: routes, templates and the read-only file serving.

Pages are rendered on the server with Jinja2; figures are plotly specs drawn by the plotly.js
that ships inside the installed ``plotly`` package (served from ``/static/plotly.min.js``), so
nothing is fetched from the network. Every response carries a Content-Security-Policy that
allows this origin only. Nothing here writes to the results folder, the lake or MLflow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from observatory import live as live_view
from observatory.lake import lake_view
from observatory.runs import COLUMNS, RUN_FILES, RunIndex, figure_rows
from observatory.sweeps import list_studies, read_study, registry_versions, trials_figure

__all__ = ["Options", "make_app", "serve"]

HERE = Path(__file__).resolve().parent
#: Same-origin only: inline scripts and styles (plotly specs, the reports) but no other host.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'"
)


@dataclass
class Options:
    """What ``bt ui`` points the observatory at."""

    results: str = "results"
    lake: str = "results/lake"
    tracking_uri: str | None = None
    registry_uri: str | None = None
    live: list[str] = field(default_factory=list)
    poll_ms: int = 2000


# --- formatting filters -------------------------------------------------------------------------


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def f_pct(v: Any, digits: int = 3) -> str:
    return "–" if _missing(v) else f"{100 * float(v):+.{digits}f} %"


def f_share(v: Any) -> str:
    return "–" if _missing(v) else f"{100 * float(v):.1f} %"


def f_num(v: Any, digits: int = 4) -> str:
    if _missing(v):
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    return f"{float(v):.{digits}f}"


def f_int(v: Any) -> str:
    return "–" if _missing(v) else f"{int(v):,}"


def f_ms(v: Any) -> str:
    if _missing(v):
        return "–"
    t = dt.datetime.fromtimestamp(int(v) / 1000, dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S") + f".{int(v) % 1000:03d}"


def f_bytes(v: Any) -> str:
    if _missing(v):
        return "–"
    n = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def sort_key(v: Any) -> str:
    """``data-v`` of a table cell: numbers sort as numbers, the rest as text, missing last."""
    if _missing(v):
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(float(v))
    return str(v)


def fig_json(spec: dict) -> Markup:
    """A figure spec as JSON safe inside ``<script type="application/json">``."""
    return Markup(json.dumps(spec).replace("</", "<\\/"))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(pct=f_pct, share=f_share, num=f_num, int=f_int, ms=f_ms, bytes=f_bytes, sortv=sort_key)
    env.filters["figjson"] = fig_json
    return env


# --- the app ------------------------------------------------------------------------------------

OPTS: web.AppKey[Options] = web.AppKey("opts", Options)
ENV: web.AppKey[jinja2.Environment] = web.AppKey("env", jinja2.Environment)
RUNS: web.AppKey[RunIndex] = web.AppKey("runs", RunIndex)
SESSION: web.AppKey[Any] = web.AppKey("session", object)


def _page(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    opts = request.app[OPTS]
    html = request.app[ENV].get_template(template).render(opts=opts, path=request.path, **ctx)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def _not_found(request: web.Request, what: str) -> web.Response:
    return _page(request, "error.html", status=404, title="Not found", message=what)


async def runs_page(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[RUNS].rows)
    return _page(request, "runs.html", title="Runs", rows=rows, columns=COLUMNS)


async def run_page(request: web.Request) -> web.Response:
    name = request.match_info["run"]
    row = await asyncio.to_thread(request.app[RUNS].get, name)
    if row is None:
        return _not_found(request, f"no run folder {name!r} under {request.app[OPTS].results}")
    figures = figure_rows(row.metrics)
    files = sorted(p.name for p in row.path.iterdir() if p.is_file())
    return _page(request, "run.html", title=row.values["run_id"], row=row, figures=figures, files=files)


async def run_file(request: web.Request) -> web.StreamResponse:
    name, fname = request.match_info["run"], request.match_info["file"]
    row = await asyncio.to_thread(request.app[RUNS].get, name)
    if row is None or fname not in RUN_FILES or not (row.path / fname).is_file():
        return _not_found(request, f"no {fname} in run folder {name!r}")
    text = await asyncio.to_thread((row.path / fname).read_text, "utf-8")
    # quantstats links its favicon from its web site: drop it so the page fetches nothing.
    text = text.replace('<link rel="shortcut icon" href="https://qtpylib.io/favicon.ico" type="image/x-icon">', "")
    return web.Response(text=text, content_type="text/html", charset="utf-8")


async def compare_page(request: web.Request) -> web.Response:
    names = request.query.getall("run", [])
    if not names:
        return _page(
            request, "error.html", status=400, title="Compare", message="select at least one run on the Runs page"
        )
    index = request.app[RUNS]
    rows = [index.get(n) for n in names]
    missing = [n for n, r in zip(names, rows) if r is None]
    if missing:
        return _not_found(request, f"no run folder {missing[0]!r} under {request.app[OPTS].results}")
    from bt.compare import load_run, render_compare

    def render() -> str:
        views = [load_run(r.path) for r in rows if r is not None]
        # Links in the page are relative to it: /runs/compare → /runs/<run>/report.html.
        return render_compare(views, Path(request.app[OPTS].results) / "compare.html")

    page = await asyncio.to_thread(render)
    nav = request.app[ENV].get_template("_nav.html").render(opts=request.app[OPTS], path="/runs/compare")
    page = page.replace("<body>", "<body>\n" + nav, 1)
    return web.Response(text=page, content_type="text/html", charset="utf-8")


async def sweeps_page(request: web.Request) -> web.Response:
    opts = request.app[OPTS]
    studies = await asyncio.to_thread(list_studies, opts.results)
    versions, reg_error = await _registry(request)
    return _page(request, "sweeps.html", title="Sweeps", studies=studies, versions=versions, reg_error=reg_error)


async def _registry(request: web.Request) -> tuple[dict | None, str | None]:
    opts = request.app[OPTS]
    if not opts.tracking_uri:
        return None, None
    try:
        return await asyncio.to_thread(registry_versions, opts.tracking_uri, opts.registry_uri), None
    except Exception as exc:  # an unreachable or foreign store: show it, keep the page
        return None, f"{type(exc).__name__}: {exc}"


async def sweep_page(request: web.Request) -> web.Response:
    opts = request.app[OPTS]
    got = await asyncio.to_thread(read_study, opts.results, request.match_info["study"])
    if got is None:
        return _not_found(request, f"no study folder {request.match_info['study']!r} under {opts.results}")
    summary, trials = got
    fig = await asyncio.to_thread(trials_figure, trials, summary["study"])
    table = []
    if trials is not None:
        keep = [c for c in trials.columns if c in ("number", "value", "state", "datetime_complete")]
        keep += [c for c in trials.columns if c.startswith("params_")]
        for rec in trials.sort_values("number")[keep].to_dict("records"):
            table.append({k.removeprefix("params_"): v for k, v in rec.items()})
    versions, reg_error = await _registry(request)
    return _page(
        request,
        "sweep.html",
        title=summary["study"],
        s=summary,
        fig=fig,
        trials=table,
        versions=(versions or {}).get(summary["study"], []) if versions is not None else None,
        reg_error=reg_error,
    )


async def lake_page(request: web.Request) -> web.Response:
    view = await asyncio.to_thread(lake_view, request.app[OPTS].lake)
    return _page(request, "lake.html", title="Lake", lake=view)


async def live_page(request: web.Request) -> web.Response:
    return _page(request, "live.html", title="Live", runners=list(enumerate(request.app[OPTS].live)))


async def live_panel(request: web.Request) -> web.Response:
    opts = request.app[OPTS]
    try:
        i = int(request.match_info["i"])
        url = opts.live[i]
    except (ValueError, IndexError):
        return web.Response(status=404, text="no such runner")
    snap = await live_view.fetch_runner(request.app[SESSION], url)
    cid = (snap.get("health") or {}).get("config_id")
    run = await asyncio.to_thread(request.app[RUNS].by_config_id, cid)
    panel = await asyncio.to_thread(live_view.panel, snap, run)
    html = request.app[ENV].get_template("_live_panel.html").render(p=panel, i=i, opts=opts)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def plotly_js(request: web.Request) -> web.FileResponse:
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return web.FileResponse(path, headers={"Cache-Control": "max-age=86400", "Content-Type": "text/javascript"})


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, text="the observatory is read-only")
    resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


async def _session_ctx(app: web.Application):
    import aiohttp

    app[SESSION] = aiohttp.ClientSession()
    yield
    await app[SESSION].close()


async def _warm_registry(app: web.Application) -> None:
    """Import MLflow and open the store in the background, so the first Sweeps page does not wait for it."""
    opts = app[OPTS]
    if not opts.tracking_uri:
        return

    def warm() -> None:
        try:
            registry_versions(opts.tracking_uri or "", opts.registry_uri)
        except Exception:  # the page reports the same error when it is opened
            pass

    app[WARMUP] = asyncio.get_running_loop().run_in_executor(None, warm)


WARMUP: web.AppKey[Any] = web.AppKey("warmup", object)


def make_app(opts: Options) -> web.Application:
    """The observatory over ``opts`` (nothing is read until a page is opened)."""
    app = web.Application(middlewares=[_headers])
    app[OPTS] = opts
    app[ENV] = _env()
    app[RUNS] = RunIndex(opts.results)
    app.cleanup_ctx.append(_session_ctx)
    app.on_startup.append(_warm_registry)
    r = app.router
    r.add_get("/", runs_page)
    r.add_get("/runs", runs_page)
    r.add_get("/runs/compare", compare_page)
    r.add_get("/runs/{run}", run_page)
    r.add_get("/runs/{run}/{file}", run_file)
    r.add_get("/sweeps", sweeps_page)
    r.add_get("/sweeps/{study}", sweep_page)
    r.add_get("/lake", lake_page)
    r.add_get("/live", live_page)
    r.add_get("/live/{i}/panel", live_panel)
    r.add_get("/static/plotly.min.js", plotly_js)
    r.add_get("/favicon.ico", favicon)
    r.add_static("/static/", HERE / "static", show_index=False)
    return app


async def _serve(opts: Options, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(opts), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"observatory: http://{shown}:{bound}/  (Ctrl-C stops it)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(opts: Options, host: str = "127.0.0.1", port: int = 8050) -> int:
    """Serve until SIGINT/SIGTERM; prints the URL (with the bound port when ``port`` is 0)."""
    asyncio.run(_serve(opts, host, port))
    print("observatory: stopped", file=sys.stderr)
    return 0
