"""MLflow as its users know it: one run per input, its data as a dataset input, figures,
params/tags for times and cash, a parent run per sweep study, no MLflow noise in `bt` output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import bt.cli
from bt.config import load_config
from datasets.lake import Lake
from planted_sweep import raw_config, write_lake

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000


def _market(n=40_000, days=2, seed=1, start="2024-03-01"):
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1_000_000)
    ts = np.sort(rng.integers(0, days * DAY_MS, n)) + t0
    px = 100 * np.exp(np.cumsum(rng.normal(0, 3e-4, n)))
    return pd.DataFrame(
        {
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "trade_id": np.arange(n) + 1000,
            "ts_ms": ts,
            "price": px,
            "qty": rng.lognormal(0, 1.4, n),
            "side": np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8),
        }
    )


@pytest.fixture
def run_cfg(tmp_path):
    Lake(tmp_path / "lake").write_trades(_market())
    cfg = {
        "name": "tracked",
        "data": {
            "lake": str(tmp_path / "lake"),
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-02",
        },
        "signal": {"whale": {"min_notional_usd": 2500}},
        "backtest": {"horizon": "5m", "horizons": ["1m"], "bootstrap": 100},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path, path


def _runs(uri: str, kind: str = "backtest"):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("whalebt")
    return client, exp, client.search_runs([exp.experiment_id], filter_string=f"tags.`whalebt.kind` = '{kind}'")


def test_same_config_and_data_update_one_run_and_new_run_adds_one(run_cfg, capsys):
    tmp, path = run_cfg
    uri = f"sqlite:///{tmp}/mlflow.db"
    args = ["run", str(path), "--results", str(tmp / "results"), "--tracking-uri", uri, "--no-tearsheet"]
    assert bt.cli.main(args) == 0
    assert bt.cli.main(args) == 0
    assert "updated (same config and data" in capsys.readouterr().err
    client, _, runs = _runs(uri)
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == load_config(path).run_id
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.html", "trades.parquet"} <= names
    # --new-run forces a copy; the next plain run updates the newest of them.
    assert bt.cli.main([*args, "--new-run"]) == 0
    assert len(_runs(uri)[2]) == 2
    assert bt.cli.main(args) == 0
    assert len(_runs(uri)[2]) == 2
    # Other data (a changed partition, so other content hashes) is another input: a new run.
    lake = Lake(tmp / "lake")
    lake.write_trades(_market(n=500, days=1, seed=9, start="2024-03-02").assign(trade_id=lambda d: d.trade_id + 10**7))
    assert bt.cli.main(args) == 0
    runs = _runs(uri)[2]
    assert len(runs) == 3 and len({r.data.tags["whalebt.input_key"] for r in runs}) == 2


def test_updated_run_replaces_artifacts_that_the_new_folder_lacks(run_cfg):
    tmp, path = run_cfg
    uri = f"sqlite:///{tmp}/mlflow.db"
    base = ["run", str(path), "--results", str(tmp / "results"), "--tracking-uri", uri]
    assert bt.cli.main(base) == 0
    client, _, (run,) = _runs(uri)
    assert "tearsheet.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Same numbers without a tearsheet keep it in the folder (bt.run); other numbers would not.
    (tmp / "results" / load_config(path).run_id / "tearsheet.html").unlink()
    assert bt.cli.main([*base, "--no-tearsheet"]) == 0
    client, _, (again,) = _runs(uri)
    assert again.info.run_id == run.info.run_id
    assert "tearsheet.html" not in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_run_that_fails_while_writing_its_folder_leaves_no_half_logged_mlflow_run(run_cfg, monkeypatch):
    """The MLflow child logs the values while the folder is written; when writing fails, a new
    MLflow run ends FAILED with no files, an updated one keeps its files and FINISHED status."""
    import bt.evaluation

    tmp, path = run_cfg
    uri = f"sqlite:///{tmp}/mlflow.db"
    args = ["run", str(path), "--results", str(tmp / "results"), "--tracking-uri", uri]

    def broken(run_dir):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(bt.evaluation, "write_report", broken)
        assert bt.cli.main(args) != 0
    client, _, (failed,) = _runs(uri)
    assert failed.info.status == "FAILED" and client.list_artifacts(failed.info.run_id) == []
    assert not (tmp / "results" / load_config(path).run_id).exists()
    client.delete_run(failed.info.run_id)
    assert bt.cli.main(args) == 0
    client, _, (run,) = _runs(uri)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.info.status == "FINISHED" and {"tearsheet.html", "report.html", "figures"} <= files
    with monkeypatch.context() as m:
        m.setattr(bt.evaluation, "write_report", broken)
        assert bt.cli.main(args) != 0
    client, _, (again,) = _runs(uri)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == files
    assert (tmp / "results" / load_config(path).run_id / "tearsheet.html").is_file()


def test_run_logs_its_lake_partitions_as_a_dataset_input_figures_and_context_tags(run_cfg):
    from bt.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, data_digest

    tmp, path = run_cfg
    uri = f"sqlite:///{tmp}/mlflow.db"
    assert (
        bt.cli.main(["run", str(path), "--results", str(tmp / "results"), "--tracking-uri", uri, "--no-tearsheet"]) == 0
    )
    client, exp, (run,) = _runs(uri)
    m = json.loads((tmp / "results" / load_config(path).run_id / "metrics.json").read_text())
    parts = m["data"]["partitions"]
    # The data: one dataset input, source = lake URI + partition keys, digest from the content hashes.
    (inp,) = run.inputs.dataset_inputs
    ds = inp.dataset
    assert ds.digest == data_digest(parts) == run.data.tags["whalebt.data_snapshot"]
    assert ds.source_type == "whalebt_lake"
    assert json.loads(ds.source) == {"uri": m["data"]["lake"], "partitions": [p["key"] for p in parts]}
    assert json.loads(ds.profile)["num_rows"] == sum(p["rows"] for p in parts) == m["data"]["n_trades"]
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "backtest"}
    assert ds.name == "binance_usdm/TESTUSDT 2024-03-01..2024-03-02"
    # Figures via log_figure, beside report.html.
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/equity.html", "figures/path.html", "figures/distribution.html"} <= figs
    page = Path(client.download_artifacts(run.info.run_id, "figures/path.html", str(tmp / "dl"))).read_text()
    report = (tmp / "results" / load_config(path).run_id / "report.html").read_text()
    spec = re.search(r'id="fig-path-data">(.*?)</script>', report, re.S).group(1)
    assert spec in page and "Plotly.newPlot" in page and "cdn.plot.ly" in page
    # Times, spans and cash are params/tags; metrics are the result's numbers.
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert not [k for k in metrics if k.endswith("_ms") or "init_cash" in k or "n_days" in k or "max_positions" in k]
    assert metrics["mean_return"] == pytest.approx(m["mean_return"])
    assert metrics["portfolio.total_return"] == pytest.approx(m["portfolio"]["total_return"])
    assert params["portfolio.init_cash"] == str(m["portfolio"]["init_cash"])
    assert tags["whalebt.init_cash"] == str(m["portfolio"]["init_cash"])
    assert tags["whalebt.span_start"] == "2024-03-01" and tags["whalebt.span_end"] == "2024-03-02"
    assert tags["whalebt.first_trade_at"].startswith("2024-03-01T") and tags["whalebt.created_at"]
    # The experiment opens on MLflow's model-development screens, not the GenAI ones.
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_metric_names_leave_out_times_and_lift_model_metrics():
    from bt.tracking import context_tags, metric_values

    m = {
        "run_id": "x",
        "n_signals": 3,
        "mean_return": 0.01,
        "threshold": 0.6,
        "data": {"n_trades": 5},
        "portfolio": {"init_cash": 1e4, "sharpe": None, "total_return": 0.1, "n_days": 2.0},
        "by_horizon": {"1h": {"mean_return": 0.02}},
        "model_metrics": {
            "test_mean_return": 0.01,
            "val_precision": 0.5,
            "threshold": 0.6,
            "purge_ms": 60_000,
            "boundaries_ms": {"test": 1_709_251_200_000},
            "threshold_rule": "max_mean_return",
        },
        "mean_return_ci95": [0.0, 0.02],
    }
    assert metric_values(m) == {
        "n_signals": 3.0,
        "mean_return": 0.01,
        "threshold": 0.6,
        "portfolio.total_return": 0.1,
        "by_horizon.1h.mean_return": 0.02,
        "test_mean_return": 0.01,
        "val_precision": 0.5,
    }
    tags = context_tags(m)
    assert tags["whalebt.model.test_from"] == "2024-03-01T00:00:00.000+00:00"
    assert tags["whalebt.model.purge"] == "1m" and tags["whalebt.init_cash"] == "10000.0"


def test_sweep_has_one_parent_per_study_and_shares_metric_names_with_runs(tmp_path, capsys):
    write_lake(tmp_path / "lake", null=True)
    raw = raw_config()
    raw["data"]["lake"] = str(tmp_path / "lake")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [
        str(cfg),
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--results",
        str(tmp_path / "res"),
        "--tracking-uri",
        uri,
    ]
    assert bt.cli.main(["sweep", *common, "--trials", "2"]) == 0
    assert bt.cli.main(["sweep", *common, "--trials", "4"]) == 0  # resumes the study: 2 more trials
    out = capsys.readouterr().out
    assert re.search(r"test_mean_return +[-+]\d+\.\d{3} %", out)  # a percentage, not a fraction
    client, exp, parents = _runs(uri, "sweep")
    assert len(parents) == 1
    (parent,) = parents
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`whalebt.kind` = 'trial'")
    assert sorted(int(t.data.tags["whalebt.trial"]) for t in trials) == [0, 1, 2, 3]
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    (inp,) = parent.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
    assert inp.dataset.digest == parent.data.tags["whalebt.data_snapshot"]
    doc = json.loads(next((tmp_path / "res").iterdir()).joinpath("sweep.json").read_text())
    assert {f"whalebt.best.{k}": str(v) for k, v in doc["best_params"].items()}.items() <= parent.data.tags.items()
    # The same figures under the same names: the sweep's winner and a model trained by `bt run`.
    sweep_names = set(parent.data.metrics)
    assert {"mean_return", "n_signals", "test_mean_return", "val_mean_return", "dsr", "threshold"} <= sweep_names
    assert not [k for k in sweep_names if k.endswith("_ms") or k.startswith("model_metrics.")]
    assert any("val_mean_return" in t.data.metrics for t in trials)
    assert all("objective" not in t.data.metrics for t in trials)
    winner = next((tmp_path / "res").iterdir()) / "best.yaml"
    assert (
        bt.cli.main(["run", str(winner), "--results", str(tmp_path / "r"), "--tracking-uri", uri, "--no-tearsheet"])
        == 0
    )
    (run,) = _runs(uri)[2]
    shared = {"mean_return", "n_signals", "test_mean_return", "val_mean_return", "threshold", "dsr"}
    assert shared <= set(run.data.metrics) & sweep_names


def _quiet_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp)  # nothing cached from other runs
    return env


def _noise(err: str) -> list[str]:
    return [
        line
        for line in err.splitlines()
        if re.search(r"WARNING|Warning:|Downloading artifacts|FutureWarning|INFO \[alembic", line)
    ]


def test_bt_output_carries_no_mlflow_warnings_or_progress_bars(tmp_path):
    write_lake(tmp_path / "lake", null=True)
    raw = raw_config()
    raw["data"]["lake"] = str(tmp_path / "lake")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = _quiet_env(tmp_path)
    bt_cmd = [sys.executable, "-m", "bt.cli"]
    sweep = subprocess.run(
        [
            *bt_cmd,
            "sweep",
            str(cfg),
            "--trials",
            "2",
            "--results",
            str(tmp_path / "res"),
            "--tracking-uri",
            uri,
            "--register",
            "always",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert _noise(sweep.stderr) == []
    model_uri = json.loads(sweep.stdout)["model_uri"]
    best = yaml.safe_load(next((tmp_path / "res").iterdir()).joinpath("best.yaml").read_text())
    run_cfg = {**best, "model": {"uri": model_uri}}  # the winner's whale rule and horizon
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_cfg))
    run = subprocess.run(
        [
            *bt_cmd,
            "run",
            str(path),
            "--results",
            str(tmp_path / "r"),
            "--tracking-uri",
            uri,
            "--allow-in-sample",
            "--no-tearsheet",
        ],
        env={**env, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert _noise(run.stderr) == [] and "MLflow run " in run.stderr


def _schema(db: Path) -> list[tuple[str, list[str]]]:
    """A sqlite file's tables, indexes and their columns and constraints (MLflow's migrations
    write a table's constraints in an order that differs from one creation to the next)."""
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    return [(name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())) for name, sql in rows]


def test_a_new_sqlite_store_is_seeded_from_a_template_equal_to_the_store_mlflow_creates(tmp_path, monkeypatch):
    """A first run into a new store copies an empty store made once per machine instead of
    running MLflow's migrations on every new store: same tables, same revision, MLflow's own
    default experiment; an existing store is never replaced."""
    import sqlite3

    from bt.tracking import seed_sqlite_store
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = tmp_path / "made" / "mlflow.db"
    made.parent.mkdir()
    SqlAlchemyStore(f"sqlite:///{made}", (tmp_path / "made" / "art").as_uri()).engine.dispose()
    seeded = tmp_path / "seeded" / "mlflow.db"
    seeded.parent.mkdir()
    seed_sqlite_store(seeded)
    assert list((tmp_path / "cache" / "whalebt").glob("mlflow-*-empty-store.db"))
    assert [p.name for p in seeded.parent.iterdir()] == ["mlflow.db"]  # no temporary file left
    store = SqlAlchemyStore(f"sqlite:///{seeded}", (tmp_path / "seeded" / "art").as_uri())
    assert _schema(seeded) == _schema(made)
    default = store.get_experiment("0")
    assert default.name == "Default" and default.artifact_location.endswith("seeded/art/0")
    exp = store.create_experiment("x")
    assert exp == "1"
    store.engine.dispose()
    for db in (made, seeded):
        with sqlite3.connect(db) as con:
            assert len(con.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
    with sqlite3.connect(made) as a, sqlite3.connect(seeded) as b:
        for table in ("alembic_version", "workspaces"):
            assert a.execute(f"SELECT * FROM {table}").fetchall() == b.execute(f"SELECT * FROM {table}").fetchall()

    before = seeded.read_bytes()
    seed_sqlite_store(seeded)  # a store there already: left as it is
    assert seeded.read_bytes() == before

    # Where the cache cannot be written, MLflow creates the store itself.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "made" / "mlflow.db"))  # a file, not a folder
    other = tmp_path / "other.db"
    seed_sqlite_store(other)
    assert not other.exists()
