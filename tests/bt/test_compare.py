"""`bt compare`: one offline page from real run folders (a `bt run` and a `bt sweep`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bt.cli import main as bt_main
from planted_sweep import raw_config, write_lake


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from bt.config import parse_config
    from bt.run import run_backtest
    from bt.sweep import sweep_command

    tmp = tmp_path_factory.mktemp("compare")
    write_lake(tmp / "lake")
    raw = raw_config()
    raw["data"]["lake"] = str(tmp / "lake")
    results = tmp / "results"
    plain = {k: v for k, v in raw.items() if k != "model"}
    plain["name"] = "plain-whale"
    run = run_backtest(parse_config(plain), results_dir=results, log_mlflow=False, quiet=True)
    out = sweep_command(
        parse_config(raw),
        n_trials=4,
        storage=None,
        results_dir=str(results),
        tracking_uri=f"sqlite:///{tmp}/mlflow.db",
        register_as="whale-plantusdt",
        register="always",
    )  # registration mechanics, whatever the gate says
    return tmp, results, run.run_dir, Path(out["results"]), out


def test_compare_page_is_offline_and_complete(runs, capsys):
    tmp, results, run_dir, sweep_dir, _ = runs
    out = tmp / "pages" / "compare.html"
    rc = bt_main(["compare", str(run_dir), sweep_dir.name, "--out", str(out), "--results", str(results)])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out)
    page = out.read_text()
    # Offline: plotly is inlined, nothing is fetched.
    assert not re.search(r"<script[^>]+src=", page)
    lib = re.search(r'<script type="text/javascript">(.*?)</script>', page, re.S)
    assert len(lib.group(1)) > 3_000_000  # plotly.js itself is in the page
    ours = page[: lib.start()] + page[lib.end() :]
    assert not re.search(r'(src|href)="(https?:)?//', ours)
    run_id = json.loads((run_dir / "metrics.json").read_text())["run_id"]
    assert run_id in page and sweep_dir.name in page
    for label in (
        "deflated Sharpe ratio",
        "PBO",
        "mean return",
        "max drawdown",
        "Equity curves",
        "Return distributions",
        "Config differences",
    ):
        assert label in page
    # The sweep's DSR is shown as written in its metrics.json.
    dsr = json.loads((sweep_dir / "metrics.json").read_text())["dsr"]
    assert f"{dsr:.4f}" in page
    # The tearsheet link is relative to the page, so the folder can be moved or zipped.
    href = re.search(r'href="([^"]+tearsheet\.html)"', page).group(1)
    assert not href.startswith("/") and (out.parent / href).resolve() == (run_dir / "tearsheet.html").resolve()
    # Config differences: the sweep's winner has a model section; the plain run does not.
    assert "model.threshold.policy" in page or "model.lgbm" in page


def test_sweep_folder_is_a_reproducible_run_config(runs):
    _, _, _, sweep_dir, _ = runs
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    from bt.config import parse_config
    from bt.config import parse_model_config

    cfg = parse_config(best)  # a valid run config: `bt run best.yaml` retrains the winner
    m = parse_model_config(cfg.model)
    assert m.sweep is None and cfg.backtest.horizon == "30m"
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["n_trials"] == 4 and doc["signal_config"]["threshold"] == doc["test"]["threshold"]


def test_compare_unknown_run_says_what_exists(runs, capsys):
    tmp, results, run_dir, _, _ = runs
    rc = bt_main(["compare", run_dir.name[:-1], "--out", str(tmp / "x.html"), "--results", str(results)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith(f"Error: file not found: {run_dir.name[:-1]}") or "did you mean" in err


def test_sweep_registers_the_winner_with_a_nested_run_per_trial(runs):
    import mlflow
    import numpy as np
    import pandas as pd

    from bt.registry import connect, load_bundle

    tmp, _, _, sweep_dir, out = runs
    connect(f"sqlite:///{tmp}/mlflow.db")
    assert out["model_uri"] == "models:/whale-plantusdt/1"
    client = mlflow.MlflowClient()
    mv = client.get_model_version("whale-plantusdt", "1")
    metrics = json.loads((sweep_dir / "metrics.json").read_text())
    assert json.loads(mv.tags["whalebt.test_n_signals"]) == metrics["n_signals"]
    assert json.loads(mv.tags["whalebt.dsr"]) == metrics["dsr"]
    parent = client.get_run(out["mlflow_run_id"])
    assert parent.data.tags["whalebt.kind"] == "sweep" and parent.data.tags["whalebt.data_snapshot"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["whalebt.trial"] for r in children) == ["0", "1", "2", "3"]
    assert all(r.data.tags["whalebt.code_version"] for r in children)
    # The registered model scores the sweep's test events exactly as the sweep did.
    bundle = load_bundle(out["model_uri"])
    trades = pd.read_parquet(sweep_dir / "trades.parquet")
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert bundle.threshold == doc["signal_config"]["threshold"]
    assert (trades["prob"] >= bundle.threshold).tolist() == trades["signal"].tolist()
    from signals import FEATURE_NAMES

    X = trades[[f"f_{n}" for n in FEATURE_NAMES]].to_numpy()
    np.testing.assert_allclose(bundle.predict_matrix(X, FEATURE_NAMES), trades["prob"].to_numpy(), rtol=0, atol=1e-12)


def test_compare_distributions_share_their_bins(runs, tmp_path):
    from bt.compare import load_run, render_compare

    _, _, run_dir, sweep_dir, _ = runs
    page = render_compare([load_run(run_dir), load_run(sweep_dir)], tmp_path / "compare.html")
    # each run's histogram on the same bins (plotly gives overlaid histograms bins of their own)
    assert page.count('"bingroup":"returns"') == 2  # both runs' traces
    assert "net return (%)" in page and "share of the run's signals" in page


def test_compare_marks_no_run_best_on_a_tie(runs):
    from bt.compare import load_run, metric_rows

    _, _, run_dir, _, _ = runs
    a, b = load_run(run_dir), load_run(run_dir)
    b.metrics = {**a.metrics, "mean_return": a.metrics["mean_return"] + 0.001}
    rows = {r["label"]: r["best"] for r in metric_rows([a, b])}
    assert rows["mean return"] == 1 and rows["median return"] is None  # equal medians: neither is better


def test_compare_warns_when_runs_cover_different_spans(runs):
    from bt.compare import load_run, span_warnings

    _, _, run_dir, sweep_dir, _ = runs
    run, sweep = load_run(run_dir), load_run(sweep_dir)
    (w,) = span_warnings([run, sweep])
    assert "cover different spans" in w
    assert f"{run.run_id}: 2024-03-01 → 2024-03-08" in w and f"{sweep.run_id}: test 2024-03-" in w
    assert span_warnings([run, run]) == [] and span_warnings([run]) == []
    run.metrics["data"]["holes"] = [{"seconds": 5400}]
    assert span_warnings([run]) == [f"{run.run_id}: its data has 1 hole(s) of a minute or more (1.5 h uncovered)"]


def test_compare_says_which_one_percent_rate_is_net_and_which_gross(runs, tmp_path):
    from bt.compare import load_run, render_compare

    _, _, run_dir, _, _ = runs
    page = render_compare([load_run(run_dir), load_run(run_dir)], tmp_path / "compare.html")
    # precision counts gross returns >= +1 %, the hit rate net ones: the labels say so
    assert "precision (gross &gt;= +1%)" in page or "precision (gross >= +1%)" in page
    assert "hit rate (net &gt;= +1%)" in page or "hit rate (net >= +1%)" in page
    m = load_run(run_dir).metrics["data"]
    assert f"Equity (normalised to 1 at the start) — {m['start']} – {m['end']}" in page
