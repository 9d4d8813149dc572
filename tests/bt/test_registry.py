"""MLflow registry: log -> register -> alias -> load in a fresh process; gate; promotion records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bt.config import GateConfig
from bt.registry import PromotionRefused, check_gate

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _bundle_inputs(seed=0):
    import lightgbm as lgb

    from signals import FEATURE_NAMES, feature_spec_hash

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, len(FEATURE_NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) > 0.3).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7}, lgb.Dataset(X, y), num_boost_round=30
    )
    cfg = {
        "whale": {"min_notional_usd": 500000.0},
        "horizon": "1h",
        "threshold": 0.6,
        "feature_names": list(FEATURE_NAMES),
        "feature_spec_hash": feature_spec_hash(),
    }
    return booster, cfg, X


def _load_in_fresh_process(uri: str, tracking: str, X: np.ndarray, tmp: Path) -> np.ndarray:
    np.save(tmp / "X.npy", X)
    code = (
        "import sys, numpy as np, pandas as pd, mlflow.pyfunc\n"
        "from signals import FEATURE_NAMES\n"
        "X = np.load(sys.argv[2])\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "out = m.predict(pd.DataFrame(X, columns=list(FEATURE_NAMES)))\n"
        "np.save(sys.argv[3], out['prob'].to_numpy())\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    subprocess.run(
        [PY, "-c", code, uri, str(tmp / "X.npy"), str(tmp / "p.npy")], check=True, env=env, cwd=tmp, timeout=300
    )
    return np.load(tmp / "p.npy")


def _log_register_alias_load(tracking: str, tmp: Path, name: str):
    import mlflow

    from bt.tracking import experiment

    from bt.registry import connect, list_aliases, load_bundle, log_model_bundle, promote
    from signals.trees_nb import ensemble_from_booster, predict_proba

    connect(tracking)
    booster, cfg, X = _bundle_inputs()
    mlflow.set_experiment(
        experiment_id=experiment(mlflow, "whalebt-registry-test")
    )  # artifacts beside the db, not ./mlruns
    t0 = time.perf_counter()
    with mlflow.start_run():
        info, mv = log_model_bundle(
            booster,
            cfg,
            registered_model_name=name,
            tags={"test_mean_return": 0.004, "test_n_signals": 80, "dsr": 0.97},
        )
    log_s = time.perf_counter() - t0
    assert str(mv) == "1"
    res = promote(name, mv, "live", gate=GateConfig(min_test_signals=30, min_dsr=0.9), reason="test", user="tester")
    assert res.ok
    rows = list_aliases(name)
    assert rows == [
        {"name": name, "alias": "live", "version": "1", "promoted_by": "tester", "promoted_at": rows[0]["promoted_at"]}
    ]
    backtest_prob = predict_proba(ensemble_from_booster(booster), X)
    fresh = _load_in_fresh_process(f"models:/{name}@live", tracking, X, tmp)
    np.testing.assert_allclose(fresh, backtest_prob, rtol=0, atol=1e-12)
    bundle = load_bundle(f"models:/{name}@live")
    assert bundle.threshold == 0.6 and bundle.signal_config["whale"] == {"min_notional_usd": 500000.0}
    return log_s


def test_sqlite_log_register_alias_load_fresh_process(tmp_path):
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    # A Unity Catalog style three-part name passes through unchanged.
    log_s = _log_register_alias_load(tracking, tmp_path, "main.whales.whale-btcusdt")
    print(f"log_model + register: {log_s:.2f} s")


def test_gate_lists_every_failed_condition():
    g = GateConfig(min_mean_return=0.0, min_test_signals=30, min_dsr=0.95)
    res = check_gate({"test_mean_return": -0.001, "test_n_independent": 12, "test_n_signals": 12, "dsr": 0.4}, g)
    assert not res.ok
    assert res.reasons == [
        "out-of-sample mean return -0.001000 is not above 0",
        "12 independent test signals (12 signals; overlapping outcome windows count once); the gate needs at least 30",
        "deflated Sharpe ratio 0.400 is below 0.95",
    ]
    assert check_gate({"test_mean_return": "0.002", "test_n_independent": "31", "dsr": "0.96"}, g).ok
    missing = check_gate({}, g)
    assert missing.reasons[1] == "no test signals; the gate needs at least 30"


def test_gate_counts_independent_test_signals_and_says_when_it_cannot():
    g = GateConfig(min_mean_return=0.0, min_test_signals=30, min_dsr=0.5)
    # 40 test signals but only 3 independent ones (overlapping outcome windows): refused.
    res = check_gate({"test_mean_return": 0.01, "test_n_independent": 3, "test_n_signals": 40, "dsr": 0.9}, g)
    assert not res.ok
    assert res.reasons == [
        "3 independent test signals (40 signals; overlapping outcome windows count once); the gate needs at least 30"
    ]
    assert check_gate({"test_mean_return": 0.01, "test_n_independent": 31, "test_n_signals": 40, "dsr": 0.9}, g).ok
    # A version registered before this change has only test_n_signals: used, and said.
    old = check_gate({"test_mean_return": 0.01, "test_n_signals": 12, "dsr": 0.9}, g)
    assert old.reasons == [
        "12 test signals (raw count: this version was registered before independent "
        "signals were counted); the gate needs at least 30"
    ]
    assert any("raw test signals" in n for n in old.notes)
    passed_old = check_gate({"test_mean_return": 0.01, "test_n_signals": 40, "dsr": 0.9}, g)
    assert passed_old.ok and any("raw test signals" in n for n in passed_old.notes)


def test_gate_checks_pbo_when_there_is_one():
    g = GateConfig(min_test_signals=10)
    vals = {"test_mean_return": 0.01, "test_n_independent": 20, "test_n_signals": 20, "dsr": 0.9}
    assert check_gate({**vals, "pbo": 0.3}, g).ok
    bad = check_gate({**vals, "pbo": 0.71}, g)
    assert bad.reasons == ["probability of backtest overfitting 0.710 is above 0.5"]
    assert check_gate({**vals, "pbo": 0.71}, GateConfig(min_test_signals=10, max_pbo=0.8)).ok
    none = check_gate(vals, g)
    assert none.ok and any("max_pbo not checked" in n for n in none.notes)


def test_refused_promotion_changes_nothing(tmp_path, capsys):
    import mlflow

    from bt.tracking import experiment

    from bt.registry import connect, list_aliases, log_model_bundle, promote

    connect(f"sqlite:///{tmp_path}/mlflow.db")
    booster, cfg, _ = _bundle_inputs()
    mlflow.set_experiment(experiment_id=experiment(mlflow, "gate"))  # artifacts beside the db, not ./mlruns
    with mlflow.start_run():
        _, mv = log_model_bundle(
            booster,
            cfg,
            registered_model_name="whale-null",
            tags={"test_mean_return": -0.002, "test_n_signals": 50, "dsr": 0.1},
        )
    with pytest.raises(
        PromotionRefused,
        match=r"refused to set alias 'live' on whale-null version 1: "
        r"out-of-sample mean return -0.002000 is not above 0; "
        r"deflated Sharpe ratio 0.100 is below 0.5",
    ):
        promote("whale-null", mv, "live", gate=GateConfig())
    assert list_aliases("whale-null") == []
    # The CLI prints the refusal as one Error line and exits 1.
    from bt.cli import main as bt_main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = bt_main(
        ["promote", "whale-null", "--version", "1", "--alias", "live", "--tracking-uri", uri, "--min-dsr", "0.05"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1
    assert err == (
        "Error: refused to set alias 'live' on whale-null version 1: out-of-sample mean return "
        "-0.002000 is not above 0. Lower the bounds with --min-dsr/--min-test-signals/"
        "--min-mean-return/--max-pbo, or --force"
    )
    tags = mlflow.MlflowClient().get_model_version("whale-null", "1").tags
    assert "whalebt.promoted_by" not in tags
    # Forcing records why.
    promote("whale-null", mv, "live", gate=GateConfig(), force=True, user="ops")
    tags = mlflow.MlflowClient().get_model_version("whale-null", "1").tags
    assert tags["whalebt.promotion_reason"].startswith("forced past the gate: out-of-sample mean return")
    assert json.loads(tags["whalebt.dsr"]) == 0.1
    capsys.readouterr()
    assert bt_main(["promote", "--list", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.startswith("whale-null@live -> version 1  (by ops at ")


def test_feature_spec_mismatch_is_refused():
    from bt.registry import ModelBundle

    booster, cfg, _ = _bundle_inputs()
    b = ModelBundle(booster.model_to_string(), {**cfg, "feature_spec_hash": "0000000000000000"})
    with pytest.raises(ValueError, match="trained on feature spec 0000000000000000"):
        b.check_features()


@pytest.mark.services
def test_mlflow_server_log_register_alias_load(tmp_path):
    script = ROOT / "scripts" / "mlflow_server.sh"
    env = {**os.environ, "MLFLOW_SERVER_DIR": str(tmp_path / "server")}
    out = subprocess.run(
        ["bash", str(script), "start"], check=True, capture_output=True, text=True, env=env, timeout=180
    )
    url = out.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:")
    try:
        log_s = _log_register_alias_load(url, tmp_path, "whale-btcusdt")
        print(f"log_model + register against the server: {log_s:.2f} s")
    finally:
        subprocess.run(["bash", str(script), "stop"], check=False, env=env, timeout=60)
