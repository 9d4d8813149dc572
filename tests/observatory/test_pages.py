"""The observatory's server side without a browser: run index, read-only routes, lake cells, live panels."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from bt.cli import main as bt_main
from observatory.app import CSP, Options, make_app
from observatory.lake import cell_state, lake_view
from observatory.live import panel, parse_metrics, scorecard
from observatory.runs import RunIndex


def _metrics(run_id: str, **over) -> dict:
    m = {
        "run_id": run_id,
        "name": run_id.rsplit("-", 1)[0],
        "config_id": "abc123def456",
        "horizon": "1h",
        "n_signals": 12,
        "n_independent": 10,
        "mean_return": 0.004,
        "median_return": 0.003,
        "p50": 0.003,
        "win_rate": 0.6,
        "hit_rate_1pct": 0.25,
        "model": None,
        "threshold": None,
        "data": {
            "exchange": "binance_usdm",
            "symbol": "PLANTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-08",
            "holes": [],
        },
    }
    m.update(over)
    return m


def _write_run(results: Path, run_id: str, **over) -> Path:
    d = results / run_id
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(_metrics(run_id, **over)))
    return d


async def _fetch(app, method: str, path: str):
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        r = await client.request(method, path)
        return r.status, r.headers, await r.text()


def fetch(opts: Options, path: str, method: str = "GET"):
    return asyncio.run(_fetch(make_app(opts), method, path))


def test_run_index_lists_run_folders_and_rereads_changed_ones(tmp_path):
    a = _write_run(tmp_path, "a-0000000001")
    _write_run(tmp_path, "b-0000000002", kind="sweep", data=None, n_trials=8)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    (tmp_path / ".a-0000000001.tmp-1-ff").mkdir()  # a run folder being built
    (tmp_path / ".a-0000000001.tmp-1-ff" / "metrics.json").write_text("{}")
    index = RunIndex(tmp_path)
    rows = {r.name: r for r in index.rows()}
    assert set(rows) == {"a-0000000001", "b-0000000002"}
    v = rows["a-0000000001"].values
    assert (v["span"], v["symbols"], v["model"], v["n_signals"]) == (
        "2024-03-01 → 2024-03-08",
        "binance_usdm/PLANTUSDT",
        "whale rule",
        12,
    )
    assert rows["b-0000000002"].values["model"] == "sweep winner (8 trials)"
    (a / "metrics.json").write_text(json.dumps(_metrics("a-0000000001", n_signals=99)))
    os.utime(a / "metrics.json", ns=(1, 10**18))
    assert index.get("a-0000000001").values["n_signals"] == 99
    assert index.get("../a-0000000001") is None and index.get(".a-0000000001.tmp-1-ff") is None
    assert index.by_config_id("abc123def456").name == "a-0000000001"  # the backtest, not the sweep


def test_routes_are_read_only_same_origin_and_confined_to_run_files(tmp_path):
    d = _write_run(tmp_path, "a-0000000001")
    (d / "config.yaml").write_text("name: a\n")
    (d / "tearsheet.html").write_text(
        '<html><head><link rel="shortcut icon" href="https://qtpylib.io/favicon.ico" type="image/x-icon">'
        "</head><body>tearsheet</body></html>"
    )
    opts = Options(results=str(tmp_path), lake=str(tmp_path / "no-lake"))
    status, headers, body = fetch(opts, "/")
    assert status == 200 and headers["Content-Security-Policy"] == CSP and "a-0000000001" in body
    assert fetch(opts, "/", method="POST")[0] == 405
    status, _, body = fetch(opts, "/runs/a-0000000001/tearsheet.html")
    assert status == 200 and "tearsheet" in body and "qtpylib" not in body
    assert fetch(opts, "/runs/a-0000000001/config.yaml")[0] == 404  # only report.html and tearsheet.html
    assert fetch(opts, "/runs/a-0000000001/report.html")[0] == 404
    assert fetch(opts, "/runs/nope")[0] == 404
    assert fetch(opts, "/runs/compare")[0] == 400
    status, _, body = fetch(opts, "/lake")
    assert status == 200 and "no lake at" in body
    status, _, body = fetch(opts, "/live")
    assert status == 200 and 'id="no-runners"' in body
    assert fetch(opts, "/live/0/panel")[0] == 404
    assert fetch(opts, "/sweeps/nope")[0] == 404
    status, headers, _ = fetch(opts, "/static/plotly.min.js")
    assert status == 200 and int(headers["Content-Length"]) > 3_000_000


def test_run_page_and_comparison_of_hand_written_folders(tmp_path):
    _write_run(tmp_path, "a-0000000001")
    _write_run(
        tmp_path,
        "b-0000000002",
        data={
            "exchange": "okx_swap",
            "symbol": "PLANTUSDT",
            "start": "2024-04-01",
            "end": "2024-04-03",
            "holes": [{"seconds": 7200, "text": "x"}],
        },
    )
    opts = Options(results=str(tmp_path))
    status, _, body = fetch(opts, "/runs/b-0000000002")
    assert status == 200 and "1 hole(s)" in body and "+0.400 %" in body and "60.0 %" in body
    status, _, body = fetch(opts, "/runs/compare?run=a-0000000001&run=b-0000000002")
    assert status == 200 and "Run comparison" in body and 'class="obs-nav"' in body
    assert "cover different spans" in body and "b-0000000002: its data has 1 hole(s)" in body
    assert fetch(opts, "/runs/compare?run=a-0000000001&run=zzz")[0] == 404


def test_lake_cells_from_reports(tmp_path):
    import numpy as np
    import pandas as pd

    from datasets.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    day = pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000
    n = 3000
    df = pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "XUSDT",
            "trade_id": np.arange(n),
            "ts_ms": day + np.arange(n) * 40_000,
            "price": 100.0,
            "qty": 1.0,
            "side": 1,
        }
    )
    lake.write_trades(df)  # 2024-03-01 all day long, 2024-03-02 until 09:19
    view = lake_view(tmp_path / "lake")
    (g,) = view["groups"]
    cells = {c["date"]: c for c in g["cells"]}
    assert cells["2024-03-01"]["state"] == "full" and cells["2024-03-01"]["rows"] == 2160
    assert cells["2024-03-02"]["state"] == "sparse" and 0.38 < cells["2024-03-02"]["coverage"] < 0.39
    assert g["rows"] == n and g["missing_days"] == 0 and g["sources"] == ["trades"]
    assert [w["label"] for w in g["weeks"]] == ["Mar 2024"]
    assert [None if c is None else c["date"] for c in g["weeks"][0]["days"]][3:6] == [None, "2024-03-01", "2024-03-02"]
    assert cell_state(None, None) == "unchecked" and cell_state({"issues": ["missing_ids"]}, 1.0) == "issues"
    assert cell_state({"issues": []}, 0.7) == "partial"


def test_live_panel_joins_signals_with_paper_outcomes_and_the_backtest():
    text = "\n".join(
        [
            "# TYPE whalebt_live_trades_total counter",
            'whalebt_live_trades_total{symbol="BTCUSDT"} 1317',
            'whalebt_live_signals_total{decision="long",symbol="BTCUSDT"} 3',
            'whalebt_live_latency_seconds_bucket{le="0.1"} 5',
        ]
    )
    assert parse_metrics(text) == [
        {"name": "trades_total", "labels": "symbol=BTCUSDT", "value": 1317.0},
        {"name": "signals_total", "labels": "decision=long,symbol=BTCUSDT", "value": 3.0},
    ]
    sig = [
        {
            "symbol": "BTCUSDT",
            "trade_id": i,
            "ts_ms": t,
            "decision": "long",
            "price": 1.0,
            "notional_usd": 1e5,
            "prob": None,
        }
        for i, t in ((1, 0), (2, 30_000), (3, 50_000))
    ]
    paper = [
        {
            "symbol": "BTCUSDT",
            "trade_id": 1,
            "config_id": "c1",
            "net_return": 0.002,
            "label": 1,
            "exit_reason": "horizon",
        },
        {"symbol": "BTCUSDT", "trade_id": 9, "config_id": "other", "net_return": -0.5, "label": 0},
    ]
    snap = {
        "url": "http://127.0.0.1:1",
        "health": {"ok": True, "config_id": "c1", "symbols": {"BTCUSDT": {"last_trade_ts_ms": 100_000}}},
        "metrics": [],
        "signals": sig,
        "paper": paper,
        "errors": [],
    }
    run = SimpleNamespace(metrics={"horizon": "1m", "mean_return": 0.001, "n_signals": 50, "win_rate": 0.5})
    p = panel(snap, run)
    assert [r["rec"]["trade_id"] for r in p["rows"]] == [3, 2, 1]  # newest first
    assert [r["status"] for r in p["rows"]] == ["open", "past horizon, awaiting the next trade", "closed (horizon)"]
    assert p["rows"][2]["outcome"]["net_return"] == 0.002 and p["rows"][0]["expected"] == 0.001
    assert p["n_outcomes"] == 1  # another config's outcome does not count
    card = {r["key"]: (r["backtest"], r["live"]) for r in p["score"]}
    assert card["n_signals"] == (50, 1) and card["mean_return"] == (0.001, 0.002) and card["win_rate"] == (0.5, 1.0)
    assert scorecard(None, [])[0] == {"key": "n_signals", "backtest": None, "live": 0}
    snap["paper"] = None
    assert panel(snap, None)["score"] is None


def test_runner_serves_its_paper_outcomes():
    from aiohttp import ClientSession

    from live.http import start_http

    closed = [{"trade_id": i, "net_return": 0.001 * i} for i in range(5)]
    runner = SimpleNamespace(
        recent=[], paper=SimpleNamespace(closed=closed), health=lambda: (True, {}), render_metrics=lambda: ""
    )

    async def main():
        app_runner, port = await start_http(runner, "127.0.0.1", 0)
        try:
            async with ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/paper?limit=2") as r:
                    two = await r.json()
                async with s.get(f"http://127.0.0.1:{port}/paper?limit=-1") as r:
                    bad = r.status
                runner.paper = None
                async with s.get(f"http://127.0.0.1:{port}/paper") as r:
                    none = await r.json()
        finally:
            await app_runner.cleanup()
        return two, bad, none

    two, bad, none = asyncio.run(main())
    assert two == closed[-2:] and bad == 400 and none == []


def test_bt_ui_user_errors(capsys):
    assert bt_main(["ui", "--live", "127.0.0.1:9100"]) == 1
    assert "--live expects a runner's http:// address" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert bt_main(["ui", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["--help"], ["ui", "--help"]])
def test_help_does_not_import_the_app(cmd):
    import subprocess
    import sys

    code = (
        "import sys; from bt.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('observatory.app', 'aiohttp', 'jinja2', 'plotly', 'selenium') if m in sys.modules]\n"
        "print(heavy)"
    ) % (cmd,)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
