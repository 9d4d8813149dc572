"""`live replay` + `live run` as processes: SIGTERM drain, HTTP, and parity with `bt signals`."""

from __future__ import annotations

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

from live.cli import main as live_main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REAL = Path(__file__).resolve().parents[1] / "data" / "real"
BTC = REAL / "binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
CONFIG = ROOT / "configs" / "demo_live.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _metric(text: str, line_prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_live_run_process_matches_bt_signals_and_drains_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lake = tmp_path / "lake"
    subprocess.run(
        [BIN / "datasets", "ingest", "recording", str(BTC), "--lake", str(lake)],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    bt_out = tmp_path / "bt.jsonl"
    subprocess.run(
        [BIN / "bt", "signals", str(CONFIG), "--lake", str(lake), "--out", str(bt_out)],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )

    replay = subprocess.Popen(
        [BIN / "live", "replay", str(BTC), "--port", "0", "--speed", "max"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    run = None
    try:
        url = replay.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), "live replay did not start"
        port = _free_port()
        journal = tmp_path / "live.jsonl"
        out_f, err_f = open(tmp_path / "run.out", "w"), open(tmp_path / "run.err", "w")
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
                url + "/stream",
                "--stream",
                "trade",
                "--journal",
                str(journal),
                "--http-port",
                str(port),
            ],
            stdout=out_f,
            stderr=err_f,
            text=True,
            env=env,
            cwd=ROOT,
        )
        deadline = time.time() + 240
        metrics = ""
        health = (0, "")
        while time.time() < deadline:
            assert run.poll() is None, (tmp_path / "run.err").read_text()
            try:
                status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
                health = _get(f"http://127.0.0.1:{port}/health")
            except OSError:
                time.sleep(0.2)
                continue
            # 10,447 merged rows; the last one waits for a fill that never comes, until the drain
            if _metric(metrics, 'whalebt_live_trades_total{symbol="BTCUSDT"}') == 10446:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"live run did not process the recording; last /metrics:\n{metrics[:2000]}")
        assert health[0] in (200, 503) and json.loads(health[1])["ready"] is True
        assert _metric(metrics, 'whalebt_live_frames_total{exchange="binance_usdm"}') == 21313
        status, sig = _get(f"http://127.0.0.1:{port}/signals?limit=2")
        assert status == 200 and len(json.loads(sig)) == 2
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        out, err = (tmp_path / "run.out").read_text(), (tmp_path / "run.err").read_text()
        assert run.returncode == 0, err
        assert "stopping: draining and flushing the journal" in err
        assert "stopped: 21313 frames, 10447 trades, 741 events, 741 signals" in err
    finally:
        for p in (run, replay):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
    # the same bytes as `bt signals` on the same trades, in the journal and on stdout
    assert journal.read_bytes() == bt_out.read_bytes()
    assert out.splitlines() == journal.read_text().splitlines()
    assert len(out.splitlines()) == 741


@pytest.mark.slow  # MLflow creates its sqlite registry: ~10-20 s
def test_unknown_model_is_a_user_error(capsys, tmp_path):
    rc = live_main(
        [
            "run",
            "--model",
            "models:/whale-nope/7",
            "--exchange",
            "binance_usdm",
            "--symbols",
            "BTCUSDT",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    try:
        import bt.registry  # noqa: F401
    except ImportError:
        assert err.startswith("Error: --model models:/whale-nope/7: this build has no model registry")
    else:
        assert err.startswith("Error: cannot load model 'models:/whale-nope/7': ")


def test_run_rejects_separated_symbols(capsys):
    rc = live_main(["run", "--config", str(CONFIG), "--exchange", "binance_usdm", "--symbols", "BTC-USDT"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        "Error: symbols are upper case without separators (BTCUSDT, not BTC-USDT); got ['BTC-USDT']"
    )


def test_replay_missing_file(capsys, tmp_path):
    rc = live_main(["replay", str(tmp_path / "nope.gz"), "--port", "0"])
    assert rc == 1
    assert capsys.readouterr().err.strip() == (
        f"Error: recording {tmp_path / 'nope.gz'} not found; give a file such as "
        "tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz"
    )


def test_okx_unknown_contract_fails_before_connecting(capsys):
    rc = live_main(
        [
            "run",
            "--config",
            str(CONFIG),
            "--exchange",
            "okx_swap",
            "--symbols",
            "PEPEUSDT",
            "--ws-url",
            "ws://127.0.0.1:9/ws/v5/public",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "Error: okx: contract value of PEPE-USDT-SWAP is not known" in err


def test_report_puts_live_paper_metrics_next_to_the_backtest(tmp_path, capsys):
    from bt.config import load_config

    cfg = load_config(CONFIG)
    paper = tmp_path / "p.jsonl"
    rows = [
        {
            "exchange": "binance_usdm",
            "symbol": "BTCUSDT",
            "trade_id": i,
            "ts_ms": 1723161258650 + i,
            "config_id": cfg.config_id,
            "net_return": r,
            "gross_return": r + 0.001,
            "label": int(r + 0.001 >= 0.001),
            "exit_reason": "horizon",
        }
        for i, r in enumerate([0.002, -0.001, 0.0005, 0.004])
    ]
    rows.append({**rows[0], "config_id": "another-config", "net_return": 9.0})  # not this config's
    paper.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = tmp_path / "results"
    (results / cfg.run_id).mkdir(parents=True)
    (results / cfg.run_id / "metrics.json").write_text(json.dumps({"n_signals": 120, "mean_return": 0.0011}))
    assert (
        live_main(["report", "--config", str(CONFIG), "--paper", str(paper), "--results", str(results), "--json"]) == 0
    )
    card = json.loads(capsys.readouterr().out)
    rows = {k: [b, lv] for k, b, lv in card["rows"]}
    assert rows["n_signals"] == [120, 4]
    assert rows["mean_return"][0] == 0.0011 and rows["mean_return"][1] == pytest.approx(0.001375)
    assert rows["win_rate"] == [None, 0.75] and card["config_id"] == cfg.config_id
    assert (
        live_main(["report", "--config", str(CONFIG), "--paper", str(paper), "--results", str(tmp_path / "none")]) == 0
    )
    out = capsys.readouterr()
    assert "live paper" in out.out and f"no backtest yet: run `bt run {CONFIG}`" in out.err
