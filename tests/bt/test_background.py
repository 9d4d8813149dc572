"""bt.background: the tearsheet and the MLflow logging of a `bt run` run in child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bt.background as bg
from bt.config import load_config
from datasets.lake import Lake
from test_evaluation import _write_cfg  # beside this file
from test_run import _market
from whalebt.cli import UserError

ROOT = Path(__file__).resolve().parents[2]


class _Refused(UserError):
    pass


def _kind(prepare, run):
    return {"probe": (prepare, run)}


def test_a_forked_worker_returns_its_value_and_raises_its_error(monkeypatch):
    assert bg.can_fork()
    monkeypatch.setattr(bg, "_KINDS", _kind(lambda arg: arg * 2, lambda prepared, job, more: (prepared, job, os.getpid())))
    w = bg.Worker("probe", 21)
    w.send("job")
    prepared, job, pid = w.result()
    assert (prepared, job) == (42, "job") and pid != os.getpid()

    def refuse(prepared, job, more):
        raise _Refused(f"no {job}")

    monkeypatch.setattr(bg, "_KINDS", _kind(lambda arg: None, refuse))
    w = bg.Worker("probe")
    w.send("thanks")
    with pytest.raises(_Refused, match="no thanks"):
        w.result()

    def crash(prepared, job, more):
        os._exit(3)

    monkeypatch.setattr(bg, "_KINDS", _kind(lambda arg: None, crash))
    w = bg.Worker("probe")
    w.send(None)
    with pytest.raises(bg.WorkerError, match="exit code 3"):
        w.result()
    w = bg.Worker("probe")  # cancelled before its job: killed and reaped
    pid = w.pid
    assert pid is not None
    w.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_job_in_parts_reaches_the_child_part_by_part(monkeypatch):
    """The child starts on the first part and gets the later ones when it asks; None once the
    parent sent its last part (or waits for the result without sending more)."""

    def run(prepared, job, more):
        return [job, more(), more(), more()]

    monkeypatch.setattr(bg, "_KINDS", _kind(lambda arg: None, run))
    w = bg.Worker("probe")
    w.send("first", last=False)
    w.send({"second": 2}, last=False)
    w.send("third")
    assert w.result() == ["first", {"second": 2}, "third", None]
    w = bg.Worker("probe")
    w.send("only", last=False)
    assert w.result() == ["only", None, None, None]


def test_a_spawned_worker_draws_the_same_tearsheet(monkeypatch, tmp_path):
    monkeypatch.setattr(bg, "can_fork", lambda: False)
    idx = pd.date_range("2024-03-01", periods=3 * 1440, freq="min", tz="UTC")
    equity = pd.Series(10_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-4, idx.size))), index=idx)
    metrics = {"name": "spawned", "horizon": "5m", "data": {"exchange": "binance_usdm", "symbol": "TESTUSDT"}}
    w = bg.Worker("tearsheet")
    assert w.pid is None  # a fresh interpreter, not a fork
    w.send({"equity": equity, "benchmark": None, "metrics": metrics, "path": tmp_path / "t.html"})
    assert w.result() is None
    assert "2024-03-01 → 2024-03-03" in (tmp_path / "t.html").read_text()


_SPLIT = r"""
import json, re, sys, types
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib
import bt.background, bt.report
matplotlib.rcParams["svg.hashsalt"] = "test"  # the SVG ids, random by default, made comparable
out = Path(sys.argv[1])
idx = pd.date_range("2024-03-01", periods=10 * 1440, freq="min", tz="UTC")
eq = pd.Series(10_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-4, idx.size))), index=idx)
bm = pd.Series(100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 1e-4, idx.size))), index=idx)
m = {"name": "split", "horizon": "5m", "data": {"exchange": "binance_usdm", "symbol": "TESTUSDT"}}
split_used = []
draw_split = bt.report._draw_split
def spy(*a):
    split_used.append(draw_split(*a))
    return split_used[-1]
bt.report._draw_split = spy
def page(name, split):
    other = bt.background.start_tearsheet_figures if split else None
    bt.report.write_tearsheet(types.SimpleNamespace(equity=eq), m, out / name, bm, other_half=other)
    return re.sub(r"<dc:date>[^<]*</dc:date>", "", (out / name).read_text())
whole, halves = page("whole.html", False), page("halves.html", True)
def broken(**job):
    raise RuntimeError("the figures' child fails")
bt.report.draw_tearsheet_figures = broken  # the forked child inherits it
fallback = page("fallback.html", True)
print(json.dumps({"split_used": split_used, "same": whole == halves, "fallback_same": whole == fallback,
                  "marks_left": "whalebt-tearsheet-figure" in halves + fallback, "figures": whole.count("<svg")}))
"""


def test_the_tearsheet_drawn_by_two_processes_is_the_page_one_draws(tmp_path):
    """write_tearsheet(other_half=start_tearsheet_figures): a forked child draws every second figure; the page is the
    one a single process draws, and when the child fails the whole page is drawn here."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _SPLIT, str(tmp_path)], capture_output=True, text=True, env=env, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["split_used"] == [False, True, False]  # not asked; split; the child failed
    assert got["same"] and got["fallback_same"] and not got["marks_left"]
    assert got["figures"] >= 10


_CHILD = """
import json, os, sys
import bt.cli
rc = bt.cli.main(["run", sys.argv[1], "--results", sys.argv[2], "--tracking-uri", sys.argv[3]])
try:
    os.waitpid(-1, os.WNOHANG)
    children = "left"
except ChildProcessError:
    children = "none"
heavy = [m for m in ("mlflow", "quantstats", "matplotlib", "plotly.graph_objects") if m in sys.modules]
print(json.dumps({"rc": rc, "heavy": heavy, "children": children}))
"""


def test_a_run_logs_and_draws_in_children_and_waits_for_them(tmp_path):
    Lake(tmp_path / "lake").write_trades(_market())
    path = _write_cfg(tmp_path, "children")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "bt")])}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(tmp_path / "results"), uri],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # The run imported none of quantstats, MLflow or plotly's graph objects itself, and every child
    # it started was done and reaped when it returned.
    assert got == {"rc": 0, "heavy": [], "children": "none"}
    run_dir = tmp_path / "results" / load_config(path).run_id
    assert {"report.html", "tearsheet.html", "metrics.json"} <= {p.name for p in run_dir.iterdir()}
    assert not list(run_dir.glob(".*"))  # no scratch files left
    import mlflow

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("whalebt").experiment_id])
    assert run.data.tags["whalebt.run_id"] == load_config(path).run_id
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "tearsheet.html", "metrics.json", "figures"} <= arts
    m = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["mean_return"] == pytest.approx(m["mean_return"])
