"""A full `bt run` reading from an Azure lake (Azurite) equals the same run from a local lake."""

from __future__ import annotations

import json

import pytest
import yaml

import bt.cli
from bt.config import load_config
from datasets.lake import Lake
from test_run import _market

pytestmark = pytest.mark.services


def test_bt_run_from_azurite_equals_local(tmp_path, azure_lake_uri, capsys):
    trades = _market(n=30_000)
    Lake(tmp_path / "lake").write_trades(trades)
    Lake(azure_lake_uri).write_trades(trades)
    cfg = {
        "name": "az",
        "data": {
            "lake": str(tmp_path / "lake"),
            "exchange": "binance_usdm",
            "symbol": "TESTUSDT",
            "start": "2024-03-01",
            "end": "2024-03-02",
        },
        "signal": {"whale": {"min_notional_usd": 2500}},
        "backtest": {"horizon": "5m", "bootstrap": 200},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = {}
    for name, lake in (("local", str(tmp_path / "lake")), ("azure", azure_lake_uri)):
        rc = bt.cli.main(
            ["run", str(path), "--lake", lake, "--results", str(tmp_path / name), "--no-mlflow", "--no-tearsheet"]
        )
        assert rc == 0
        run_id = load_config(path, lake=lake).run_id
        runs[name] = json.loads((tmp_path / name / run_id / "metrics.json").read_text())
        runs[name]["signals"] = (tmp_path / name / run_id / "signals.jsonl").read_text()
    local, azure = runs["local"], runs["azure"]
    for m in (local, azure):
        m.pop("run_id")
        m["data"].pop("lake", None)
    assert azure == local
    assert local["n_signals"] > 20
    # gold and silver were cached in the Azure lake too
    assert Lake(azure_lake_uri).partitions("silver", "binance_usdm", "TESTUSDT")
