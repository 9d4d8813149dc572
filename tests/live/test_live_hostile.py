"""Hostile and careless input to `live run`: frames, ids, times, restarts, options, the HTTP side.

Every test drives the real runner (the `live run` process, or `live.runner.Runner` in process)
against the real replay server fed with the real recorded frames of tests/data/real, with
crafted frames spliced in where a test needs them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bt.config import load_config
from live.decider import Decider
from live.replay import ReplayServer, Tape, TapeFrame, load_tape
from live.runner import Runner, RunnerOptions
from signals.journal import journal_line
from test_live_runner import BINANCE_MULTI, BTC, SMALL_WHALE, batch_journal, decider_for, read_lines, run_live

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONFIG = ROOT / "configs" / "demo_live.yaml"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("WHALEBT_HTTP_TOKEN", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(text: str, line_prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _live(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "live", *args],
        capture_output=True,
        text=True,
        env=kw.pop("env", ENV),
        cwd=ROOT,
        timeout=kw.pop("timeout", 120),
        **kw,
    )


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), p.stderr
    return last


class _Replay:
    """`live replay FILE` as a process; `.url` is its ws:// base."""

    def __init__(self, path: Path, *args: str):
        self.p = subprocess.Popen(
            [BIN / "live", "replay", str(path), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        self.url = self.p.stdout.readline().strip()
        assert self.url.startswith("ws://127.0.0.1:"), "live replay did not start"
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()


def _btc_lines() -> list[str]:
    with gzip.open(BTC, "rt") as fh:
        return fh.read().splitlines()


def _demo_expected() -> bytes:
    dec = Decider.from_config(load_config(CONFIG))
    return "".join(journal_line(r) for r in batch_journal(BTC, dec, "binance_usdm")["BTCUSDT"]).encode()


# ---------------------------------------------------------------------------------------------- 1, 2: frames
def _hostile(real: dict) -> list[tuple[str, str]]:
    """(reason, data) of crafted @trade frames next to the real trade `real` (its id and time)."""
    t, T = real["t"], real["T"]

    def trade(**over) -> str:
        d = {
            "e": "trade",
            "E": T,
            "T": T,
            "s": "BTCUSDT",
            "t": t + 1,
            "p": "61800.30",
            "q": "0.006",
            "X": "MARKET",
            "m": False,
        }
        d.update(over)
        return json.dumps(d)

    deep = "[" * 3000 + "]" * 3000
    return [
        ("RecursionError", trade().replace('"61800.30"', deep, 1)),
        ("OverflowError", trade(T=10**30)),
        ("int-string limit", trade().replace(f'"t": {t + 1}', '"t": ' + "9" * 5000, 1)),
        ("id of 2^62", trade(t=2**62)),
        ("T of 2^62", trade(T=2**62)),
        ("T a day ahead of the stream", trade(T=T + 86_400_000)),
        ("T before 2010", trade(T=5)),
        ("price an object", trade(p={"x": 1})),
        ("price inf", trade(p="1e400")),
        ("price nan", trade(p="nan")),
        ("negative qty", trade(q="-1")),
        ("id a string", trade(t="abc")),
        ("id negative", trade(t=-7)),
    ]


def test_hostile_frames_are_counted_and_skipped_and_the_journal_still_equals_bt_signals(tmp_path):
    lines = _btc_lines()
    out, n_hostile, k = [], 0, 0
    for line in lines:
        out.append(line)
        ns, _, text = line.partition(" ")
        if '"btcusdt@trade"' not in text:
            continue
        k += 1
        if k % 1500 == 0:  # after every 1500th real fill, each hostile frame once, in turn
            real = json.loads(text)["data"]
            reason, data = _hostile(real)[(k // 1500 - 1) % len(_hostile(real))]
            out.append(f'{ns} {{"stream":"btcusdt@trade","data":{data}}}')
            n_hostile += 1
    assert n_hostile == 14 > len(_hostile({"t": 1, "T": 1}))  # every kind at least once
    rec = tmp_path / "hostile_stream.txt"
    rec.write_text("\n".join(out) + "\n")
    replay = _Replay(rec, "--speed", "max", "--exit-at-end")
    journal, metrics = tmp_path / "live.jsonl", tmp_path / "m.prom"
    try:
        p = _live(
            "run",
            "--config",
            str(CONFIG),
            "--exchange",
            "binance_usdm",
            "--symbols",
            "BTCUSDT",
            "--ws-url",
            replay.url + "/stream",
            "--stream",
            "trade",
            "--journal",
            str(journal),
            "--idle-exit-s",
            "3",
            "--metrics-out",
            str(metrics),
            "--quiet",
            timeout=240,
        )
    finally:
        replay.stop()
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    m = metrics.read_text()
    assert _metric(m, 'whalebt_live_bad_frames_total{exchange="binance_usdm"}') == n_hostile
    assert (
        _metric(m, 'whalebt_live_implausible_trades_total{symbol="BTCUSDT"}') == n_hostile - 5
    )  # 2 nested, 1 huge number, 2 wrong types
    assert "implausible trade refused" in p.stderr and "RecursionError" in p.stderr
    assert journal.read_bytes() == _demo_expected()


@pytest.mark.parametrize(
    "exchange,path,symbols,frame",
    [
        (
            "bybit_linear",
            "bybit_v5_multi_2026-08-09_frames.jsonl.zst",
            ["BTCUSDT"],
            '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":%s,"s":"BTCUSDT","S":"Buy",'
            '"v":"0.1","p":"60000","i":"1a2b","seq":%s}]}',
        ),
        (
            "okx_swap",
            "okx_v5_multi_2022-05-13_frames.txt",
            ["BTC-USDT-SWAP"],
            '{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","tradeId":"%s",'
            '"px":"30000","sz":"1","side":"buy","ts":"%s"}]}',
        ),
    ],
)
def test_hostile_frames_on_bybit_and_okx_are_bad_frames_not_fatal(tmp_path, exchange, path, symbols, frame):
    from test_live_runner import REAL

    dec = decider_for(SMALL_WHALE, exchange)
    now = time.time_ns() // 1_000_000
    if exchange == "bybit_linear":
        crafted = [
            frame % (2**62, 5),
            frame % (10**30, 5),
            frame % (now, "9" * 5000),
            frame % (now, "[" * 3000 + "]" * 3000),
        ]
    else:
        crafted = [
            frame % (5, 2**62),
            frame % ("9" * 5000, now),
            frame % (1, 10**30),
            frame.replace('"1"', "[" * 3000 + "]" * 3000) % (5, now),
        ]
    journal = tmp_path / "j.jsonl"

    async def go():
        clean, _ = await run_live(REAL / path, exchange, symbols, dec, journal.with_name("clean.jsonl"))
        r = Runner(RunnerOptions(exchange=exchange, symbols=symbols, echo=False, journal=str(journal)), dec)
        r._open_journal()
        for fr in crafted:  # straight into the frame path the WebSocket callback calls
            r.handle_frame(fr, time.perf_counter_ns())
        r._drain()
        return clean, r

    clean, r = asyncio.run(go())
    assert r.n_bad == len(crafted) and r.counters()["trades"] == 0
    assert clean.n_bad == 0


def test_a_journaled_far_future_event_does_not_suppress_events_on_restart(tmp_path):
    dec = decider_for(SMALL_WHALE)
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    want = batch_journal(BINANCE_MULTI, dec, "binance_usdm")
    sym = next(s for s in syms if want.get(s))
    poison = dict(want[sym][0], trade_id=2**62, ts_ms=2**62)
    journal = tmp_path / "j.jsonl"
    journal.write_text(journal_line(poison))
    asyncio.run(run_live(BINANCE_MULTI, "binance_usdm", syms, dec, journal))
    got = read_lines(journal)[1:]
    assert [r for r in got if r["symbol"] == sym] == want[sym]


# ---------------------------------------------------------------------------------------------- 2: stuck symbol
def test_a_symbol_whose_trades_keep_arriving_but_never_advance_turns_health_503(tmp_path):
    """Real frames, then the server re-sends the last one for 3 s: every trade is a repeat."""
    tape = load_tape(BINANCE_MULTI)
    base = tape.frames[0].recv_ns
    frames = [TapeFrame(base + (f.recv_ns - base) // 1000, f.key, f.text) for f in tape.frames]  # 1000x
    last = next(f for f in reversed(frames) if f.key.endswith("@aggtrade"))
    end = frames[-1].recv_ns
    frames += [TapeFrame(end + i * 50_000_000, last.key, last.text) for i in range(1, 81)]  # 20/s for 4 s
    sym = json.loads(last.text)["data"]["s"]
    dec = decider_for(SMALL_WHALE)
    seen: dict = {}

    async def go():
        server = await ReplayServer(Tape(tape.family, frames, "stuck"), speed=1.0).start()
        opts = RunnerOptions(
            exchange="binance_usdm",
            symbols=[sym],
            ws_url=server.url + "/stream",
            rest_url=f"http://127.0.0.1:{server.port}",
            echo=False,
            http_port=0,
            max_frame_age_s=1.0,
        )
        r = Runner(opts, dec)
        task = asyncio.create_task(r.run())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                ok, body = r.health()
                if r.n_trade_frames > 10 and "ok" not in seen and ok:
                    seen["ok"] = body
                if not ok and any("none was taken" in x for x in body["reasons"]):
                    seen["stuck"] = body
                    break
        finally:
            r.stop()
            await task
            await server.stop()

    asyncio.run(go())
    assert "stuck" in seen, "health never reported the stuck symbol"
    assert seen["stuck"]["symbols"][sym]["stuck_s"] > 1.0
    assert seen["stuck"]["connected"] is True


# ---------------------------------------------------------------------------------------------- 3: restart hole
def test_kill_9_restart_without_warm_up_records_the_hole_and_says_so(tmp_path):
    replay = _Replay(BTC, "--speed", "max", "--stall-after", "9000", "--stall-s", "20")
    journal = tmp_path / "live.jsonl"
    port = _free_port()
    args = [
        "run",
        "--config",
        str(CONFIG),
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT",
        "--ws-url",
        replay.url + "/stream",
        "--stream",
        "trade",
        "--journal",
        str(journal),
        "--quiet",
    ]
    run1 = subprocess.Popen(
        [BIN / "live", *args, "--http-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        cwd=ROOT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if (
                    _metric(
                        _get(f"http://127.0.0.1:{port}/metrics")[1],
                        'whalebt_live_frames_total{exchange="binance_usdm"}',
                    )
                    == 9000
                ):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the first run did not reach the stall")
        run1.send_signal(signal.SIGKILL)
        run1.wait(timeout=10)
        before = read_lines(journal)
        assert before
        # the restart warms up over the replay's REST, which has nothing at today's wall clock
        port2 = _free_port()
        run2 = subprocess.Popen(
            [
                BIN / "live",
                *args,
                "--warmup-from",
                "rest",
                "--http-port",
                str(port2),
                "--idle-exit-s",
                "3",
                "--metrics-out",
                str(tmp_path / "m.prom"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        health = None
        deadline = time.time() + 120
        while time.time() < deadline and run2.poll() is None:
            try:
                status, body = _get(f"http://127.0.0.1:{port2}/health")
                if json.loads(body).get("warnings"):
                    health = json.loads(body)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        err = run2.communicate(timeout=120)[1]
    finally:
        replay.stop()
    assert run2.returncode == 0, err[-3000:]
    assert health is not None and "hole in the journal" in health["warnings"][0]
    assert health["symbols"]["BTCUSDT"]["holes"] == 1
    assert "restart could not warm up (the rest warm-up returned no trades)" in err
    m = (tmp_path / "m.prom").read_text()
    assert _metric(m, 'whalebt_live_journal_holes_total{symbol="BTCUSDT"}') == 1
    assert _metric(m, 'whalebt_live_warmup_trades{symbol="BTCUSDT"}') == 0
    recs = read_lines(journal)
    holes = [r for r in recs if r.get("record") == "hole"]
    assert len(holes) == 1 and holes[0]["symbol"] == "BTCUSDT" and holes[0]["from_ts_ms"] == before[-1]["ts_ms"]
    assert holes[0]["to_ts_ms"] > holes[0]["from_ts_ms"]
    # signal lines stay byte for byte `bt signals` lines: the ones before the hole are its first ones
    sig_lines = [x for x in journal.read_text().splitlines(keepends=True) if '"record": "hole"' not in x]
    want = _demo_expected().decode().splitlines(keepends=True)
    assert sig_lines[: len(before)] == want[: len(before)]
    assert set(sig_lines) <= set(want)
    # live report shows the hole
    paper = tmp_path / "live.paper.jsonl"
    rep = _live("report", "--config", str(CONFIG), "--paper", str(paper), "--results", str(tmp_path / "res"))
    assert rep.returncode == 0, rep.stderr
    assert "hole" in rep.stdout and str(holes[0]["from_ts_ms"]) in rep.stdout.replace("\n", "")
    rep = _live("report", "--config", str(CONFIG), "--paper", str(paper), "--results", str(tmp_path / "res"), "--json")
    assert json.loads(rep.stdout)["holes"] == holes


# ---------------------------------------------------------------------------------------------- 7: silence
def test_a_server_that_sends_nothing_for_the_streams_is_reported(tmp_path):
    """The README's replay serves @trade only; `live run` asks for @aggTrade (the default)."""
    replay = _Replay(BTC, "--speed", "max")
    port = _free_port()
    metrics = tmp_path / "m.prom"
    try:
        run = subprocess.Popen(
            [
                BIN / "live",
                "run",
                "--config",
                str(CONFIG),
                "--exchange",
                "binance_usdm",
                "--symbols",
                "BTCUSDT",
                "--ws-url",
                replay.url + "/stream",
                "--http-port",
                str(port),
                "--silence-s",
                "1",
                "--idle-exit-s",
                "4",
                "--metrics-out",
                str(metrics),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        body = None
        deadline = time.time() + 60
        while time.time() < deadline and run.poll() is None:
            try:
                status, text = _get(f"http://127.0.0.1:{port}/health")
                if status == 503 and any("no trade for them came" in r for r in json.loads(text)["reasons"]):
                    body = json.loads(text)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        err = run.communicate(timeout=60)[1]
    finally:
        replay.stop()
    assert run.returncode == 0, err
    assert body is not None, err
    assert "btcusdt@aggTrade" in body["reasons"][-1]
    assert "silent connection" in err and "the server sent no trade for btcusdt@aggTrade" in err
    assert _metric(metrics.read_text(), 'whalebt_live_silent_connections_total{exchange="binance_usdm"}') == 1


# ---------------------------------------------------------------------------------------------- 4, 5: errors
BASE = [
    "run",
    "--config",
    str(CONFIG),
    "--exchange",
    "binance_usdm",
    "--symbols",
    "BTCUSDT",
    "--ws-url",
    "ws://127.0.0.1:9/stream",
]


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--stale-s", "-1"], "Error: --stale-s must be a number of seconds above 0; got -1.0"),
        (["--backoff-base-s", "0"], "Error: --backoff-base-s must be a number of seconds above 0; got 0.0"),
        (["--idle-exit-s", "0"], "Error: --idle-exit-s must be a number of seconds above 0"),
        (["--backoff-base-s", "5", "--backoff-cap-s", "1"], "Error: --backoff-cap-s (1.0) must be at least"),
        (["--health-max-age-s", "nan"], "Error: --health-max-age-s must be a number of seconds above 0"),
        (["--warmup-s", "-3"], "Error: --warmup-s must be between 0 and 86400 seconds"),
        (["--max-backfill-ids", "-1"], "Error: --max-backfill-ids must be 0 or more"),
        (["--http-port", "70000"], "Error: --http-port must be between 0 and 65535; got 70000"),
        (["--http-port", "0", "--http-host", "0.0.0.0"], "Error: --http-host 0.0.0.0 is reachable from other machines"),
    ],
)
def test_senseless_options_are_refused(extra, msg):
    assert _one_error_line(_live(*BASE, *extra)).startswith(msg)


def test_journal_that_is_a_directory_is_refused(tmp_path):
    last = _one_error_line(_live(*BASE, "--journal", str(tmp_path)))
    assert last.startswith(f"Error: --journal {tmp_path} is a directory")


def test_busy_http_port_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        last = _one_error_line(_live(*BASE, "--http-port", str(port), "--journal", str(tmp_path / "j.jsonl")))
    assert last.startswith(f"Error: --http-port {port} on 127.0.0.1 is in use")
    assert not (tmp_path / "j.jsonl").exists()  # nothing opened before the port was checked


def test_no_network_at_start_is_one_error_line():
    p = _live(
        "run",
        "--config",
        str(CONFIG),
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT",
        "--rest-url",
        "http://127.0.0.1:9",
        "--backoff-base-s",
        "0.01",
        "--backoff-cap-s",
        "0.02",
    )
    last = _one_error_line(p)
    assert last.startswith(
        "Error: warm-up of BTCUSDT over REST failed: GET http://127.0.0.1:9/fapi/v1/aggTrades "
        "failed: cannot connect to 127.0.0.1:9 ("
    ), last
    assert "ConnectionKey" not in last and len(last) < 400
    p = _live(
        "run",
        "--config",
        str(CONFIG),
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT",
        "--rest-url",
        "http://no-such-host.invalid",
        "--backoff-base-s",
        "0.01",
        "--backoff-cap-s",
        "0.02",
    )
    last = _one_error_line(p)
    assert "failed: cannot resolve no-such-host.invalid (no network, or DNS down?)" in last
    assert "ConnectionKey" not in last and "--warmup-from lake or none" in last
    # the WebSocket side retries with back-off and says so
    p = _live(
        "run",
        "--config",
        str(CONFIG),
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT",
        "--ws-url",
        "ws://no-such-host.invalid/stream",
        "--backoff-base-s",
        "0.05",
        "--backoff-cap-s",
        "0.1",
        "--idle-exit-s",
        "1",
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr
    assert "connection to ws://no-such-host.invalid/stream" in p.stderr and "reconnecting in" in p.stderr


class _Forbidding:
    """A storage endpoint that answers every request 403 with a long XML body."""

    BODY = (
        "<?xml version='1.0'?><Error><Code>AuthenticationFailed</Code><Message>Server failed to "
        "authenticate the request. SECRET-DETAIL " + "x" * 3000 + "</Message></Error>"
    )

    def __init__(self):
        import http.server
        import threading

        body = self.BODY.encode()

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(403)
                self.send_header("x-ms-error-code", "AuthenticationFailed")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = _answer

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _conn_str(endpoint: str) -> str:
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint};"


def test_rejected_journal_blob_credentials_are_one_short_error_line(tmp_path):
    srv = _Forbidding()
    env = {**ENV, "AZURE_STORAGE_CONNECTION_STRING": _conn_str(f"http://127.0.0.1:{srv.port}/devstoreaccount1")}
    p = _live(*BASE, "--journal", str(tmp_path / "j.jsonl"), "--journal-blob", "az://journals/live/j.jsonl", env=env)
    last = _one_error_line(p)
    assert last.startswith("Error: --journal-blob az://journals/live/j.jsonl:") and "403" in last
    assert "SECRET-DETAIL" not in p.stderr and len(last) < 400


def test_unreachable_journal_blob_account_fails_within_the_timeout(tmp_path):
    # a listening socket that never answers: the SDK would wait and retry for over a minute
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(100)
        env = {
            **ENV,
            "AZURE_STORAGE_CONNECTION_STRING": _conn_str(f"http://127.0.0.1:{s.getsockname()[1]}/devstoreaccount1"),
        }
        t0 = time.monotonic()
        p = _live(*BASE, "--journal-blob", "az://journals/live/j.jsonl", "--journal-blob-timeout-s", "2", env=env)
        took = time.monotonic() - t0
    assert "did not answer within 2 s (--journal-blob-timeout-s)" in _one_error_line(p)
    assert took < 15


# ---------------------------------------------------------------------------------------------- 6: token
def test_signals_and_metrics_need_the_bearer_token_health_does_not(tmp_path):
    replay = _Replay(BINANCE_MULTI, "--speed", "max")
    port = _free_port()
    token = "t0k3n-" + "a" * 20
    env = {**ENV, "WHALEBT_HTTP_TOKEN": token}
    run = subprocess.Popen(
        [
            BIN / "live",
            "run",
            "--config",
            str(CONFIG),
            "--exchange",
            "binance_usdm",
            "--symbols",
            "CTKUSDT",
            "--ws-url",
            replay.url + "/stream",
            "--http-host",
            "0.0.0.0",
            "--http-port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            assert run.poll() is None, run.stderr.read()
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                time.sleep(0.2)
        assert status in (200, 503)
        for path in ("/signals", "/metrics"):
            assert _get(f"http://127.0.0.1:{port}{path}")[0] == 401
            assert _get(f"http://127.0.0.1:{port}{path}", token="wrong")[0] == 401
            assert _get(f"http://127.0.0.1:{port}{path}", token=token)[0] == 200
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        replay.stop()
    assert token not in run.stderr.read()


# ---------------------------------------------------------------------------------------------- 5: deploy
def test_deploy_aci_warns_about_a_local_registry_and_needs_the_http_token(monkeypatch, capsys, tmp_path):
    from live.cli import main as live_main

    monkeypatch.delenv("WHALEBT_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    argv = [
        "deploy",
        "aci",
        "--model",
        "models:/whale-btcusdt@live",
        "--resource-group",
        "rg",
        "--name",
        "w",
        "--image",
        "img",
    ]
    assert live_main([*argv, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "a registry on this machine that Azure cannot reach" in err
    assert "needs WHALEBT_HTTP_TOKEN" in err
    assert live_main(argv) == 1
    assert "Error: the container serves HTTP on 0.0.0.0" in capsys.readouterr().err
    monkeypatch.setenv("WHALEBT_HTTP_TOKEN", "s3cr3t-token")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert live_main([*argv, "--dry-run"]) == 0
    cap = capsys.readouterr()
    assert "s3cr3t-token" not in cap.out and "Azure cannot reach" not in cap.err
    assert "- name: WHALEBT_HTTP_TOKEN" in cap.out


@pytest.mark.slow  # MLflow creates its sqlite registry
def test_a_model_trained_on_another_symbol_is_warned_about(tmp_path):
    import lightgbm as lgb
    import mlflow
    import numpy as np

    from bt.registry import connect, log_model_bundle
    from bt.tracking import experiment
    from signals import FEATURE_NAMES, feature_spec_hash
    from test_live_runner import BTC_WHALE

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    connect(tracking)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, len(FEATURE_NAMES)))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 5},
        lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
        num_boost_round=5,
    )
    cfg = {
        "whale": dict(BTC_WHALE),
        "horizon": "1m",
        "threshold": 0.5,
        "feature_names": list(FEATURE_NAMES),
        "feature_spec_hash": feature_spec_hash(),
    }
    mlflow.set_experiment(experiment_id=experiment(mlflow, "whalebt-live-test"))
    with mlflow.start_run():
        _, mv = log_model_bundle(
            booster,
            cfg,
            registered_model_name="whale-eth",
            lineage={"lineage_version": 1, "exchange": "binance_usdm", "symbols": ["ETHUSDT"], "ranges_ms": {}},
        )
    p = _live(
        "run",
        "--model",
        f"models:/whale-eth/{mv}",
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT",
        "--ws-url",
        "ws://127.0.0.1:9/stream",
        "--idle-exit-s",
        "1",
        "--tracking-uri",
        tracking,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert (
        f"model models:/whale-eth/{mv} was trained on binance_usdm ETHUSDT; running it on binance_usdm BTCUSDT"
        in p.stderr
    )
