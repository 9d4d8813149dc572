"""Parity with a registered model: `live run` and `bt signals` give the same decisions and probabilities."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import yaml

from test_live_runner import BTC, BTC_WHALE, read_lines, run_live  # the harness: replay server + runner

pytestmark = pytest.mark.slow


def _register(tracking: str, name: str) -> str:
    import lightgbm as lgb
    import mlflow

    from bt.tracking import experiment

    from bt.registry import connect, log_model_bundle
    from signals import FEATURE_NAMES, feature_spec_hash

    connect(tracking)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, len(FEATURE_NAMES)))
    y = (X[:, FEATURE_NAMES.index("imbalance_5s")] + 0.3 * rng.normal(size=800) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7}, lgb.Dataset(X, y), num_boost_round=20
    )
    cfg = {
        "whale": dict(BTC_WHALE),
        "horizon": "1m",
        "threshold": 0.5,
        "feature_names": list(FEATURE_NAMES),
        "feature_spec_hash": feature_spec_hash(),
    }
    mlflow.set_experiment(
        experiment_id=experiment(mlflow, "whalebt-live-test")
    )  # artifacts beside the db, not ./mlruns
    with mlflow.start_run():
        _, mv = log_model_bundle(booster, cfg, registered_model_name=name)
    return f"models:/{name}/{mv}"


def test_registered_model_parity_with_bt_signals(tmp_path, monkeypatch):
    from bt.cli import main as bt_main
    from bt.config import load_config
    from datasets.cli import main as datasets_main
    from live.decider import Decider

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    uri = _register(tracking, "whale-live-parity")
    lake = tmp_path / "lake"
    assert datasets_main(["ingest", "recording", str(BTC), "--lake", str(lake)]) == 0
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "name": "live-model-parity",
                "data": {
                    "lake": str(lake),
                    "exchange": "binance_usdm",
                    "symbol": "BTCUSDT",
                    "start": "2024-08-08",
                    "end": "2024-08-08",
                },
                "signal": {"whale": dict(BTC_WHALE)},
                "model": {"uri": uri},
                "backtest": {"horizon": "1m"},
            }
        )
    )
    bt_out = tmp_path / "bt.jsonl"
    assert bt_main(["signals", str(cfg_path), "--out", str(bt_out)]) == 0
    want = read_lines(bt_out)

    decider = Decider.from_config(load_config(cfg_path), tracking_uri=tracking)
    journal = tmp_path / "live.jsonl"
    asyncio.run(run_live(BTC, "binance_usdm", ["BTCUSDT"], decider, journal, stream="trade"))
    got = read_lines(journal)

    assert len(got) == len(want) == 741
    decisions = {r["decision"] for r in want}
    assert decisions == {"long", "skip"}  # the model vetoes some events and keeps others
    for g, w in zip(got, want):
        assert {k: g[k] for k in g if k != "prob"} == {k: w[k] for k in w if k != "prob"}
        assert g["model"] == uri and g["prob"] == pytest.approx(w["prob"], abs=1e-12)
    # a model alone: its bundled rule and the config id of `model: {uri}` with that rule
    alone = Decider.from_model(uri, tracking_uri=tracking)
    assert alone.params == decider.params and alone.config_id == decider.config_id
    assert json.dumps(got[0]).startswith('{"exchange": "binance_usdm", "symbol": "BTCUSDT"')


@pytest.mark.parametrize("order", ["as computed", "permuted"])
def test_live_scoring_equals_the_bundles_own(order):
    """The live scorer calls the row scorer of `bt signals`' path directly: the same value, bit for bit,
    also for a model whose features are in another order than `FEATURE_NAMES`."""
    import lightgbm as lgb

    from bt.registry import ModelBundle
    from live.decider import _predictor
    from signals import FEATURE_NAMES, feature_spec_hash

    names = list(FEATURE_NAMES) if order == "as computed" else list(reversed(FEATURE_NAMES))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, len(names)))
    y = (X[:, 0] + 0.5 * rng.normal(size=500) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 7}, lgb.Dataset(X, y), num_boost_round=15
    )
    bundle = ModelBundle(
        booster.model_to_string(), {"threshold": 0.5, "feature_names": names, "feature_spec_hash": feature_spec_hash()}
    )
    predict = _predictor(bundle)
    rows = rng.normal(size=(50, len(FEATURE_NAMES)))
    rows[::7, 3] = np.nan
    want = bundle.predict_matrix(rows, tuple(FEATURE_NAMES))
    assert [predict(r) for r in rows] == want.tolist()
