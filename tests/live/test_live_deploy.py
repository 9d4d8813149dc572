"""`live deploy aci`: the rendered container group, its az command, and secrets never printed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from live.cli import main as live_main
from live.deploy import MASK, AciSpec, env_from_process, render_aci

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo_live.yaml"
SECRET = "AccountKey=SUPERSECRET0123456789"


@pytest.fixture
def azure_env(monkeypatch):
    for k in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "MLFLOW_TRACKING_TOKEN",
        "DATABRICKS_TOKEN",
        "BINANCE_API_KEY",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_USERNAME",
        "DATABRICKS_HOST",
        "ACR_PASSWORD",
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"DefaultEndpointsProtocol=https;{SECRET}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:hunter2@mlflow.example.com")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "databricks-uc")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "STORAGEKEY-XYZ")
    monkeypatch.setenv("ACR_PASSWORD", "ACRPASS-XYZ")


def test_dry_run_prints_yaml_and_az_command_without_secrets(azure_env, capsys):
    rc = live_main(
        [
            "deploy",
            "aci",
            "--model",
            "models:/whale-btcusdt@live",
            "--resource-group",
            "rg-whale",
            "--name",
            "whale-live",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--image",
            "myacr.azurecr.io/whalebt-live:0.1.0",
            "--registry-server",
            "myacr.azurecr.io",
            "--registry-username",
            "myacr",
            "--journal-share",
            "journal",
            "--storage-account",
            "whalebt",
            "--dry-run",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    for secret in ("SUPERSECRET", "hunter2", "STORAGEKEY-XYZ", "ACRPASS-XYZ"):
        assert secret not in out
    lines = out.rstrip("\n").splitlines()
    assert lines[-1] == "az container create --resource-group rg-whale --file whale-live.aci.yaml"
    doc = yaml.safe_load(out.split("# then run:")[0])
    assert doc["apiVersion"] == "2021-10-01" and doc["location"] == "japaneast" and doc["name"] == "whale-live"
    c = doc["properties"]["containers"][0]["properties"]
    assert c["command"] == [
        "live",
        "run",
        "--model",
        "models:/whale-btcusdt@live",
        "--exchange",
        "binance_usdm",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--http-host",
        "0.0.0.0",
        "--http-port",
        "9100",
        "--journal",
        "/journal/journal.jsonl",
    ]
    env = {e["name"]: e for e in c["environmentVariables"]}
    assert env["MLFLOW_REGISTRY_URI"] == {"name": "MLFLOW_REGISTRY_URI", "value": "databricks-uc"}
    assert env["MLFLOW_TRACKING_URI"] == {"name": "MLFLOW_TRACKING_URI", "secureValue": MASK}  # has a password
    assert env["AZURE_STORAGE_CONNECTION_STRING"]["secureValue"] == MASK
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": 9100, "scheme": "http"}
    assert doc["properties"]["ipAddress"]["ports"] == [{"protocol": "TCP", "port": 9100}]
    assert doc["properties"]["imageRegistryCredentials"][0]["password"] == MASK
    assert doc["properties"]["volumes"][0]["azureFile"]["storageAccountKey"] == MASK


def test_config_goes_in_as_a_secret_volume(azure_env, capsys, tmp_path):
    out_file = tmp_path / "g.yaml"
    rc = live_main(
        [
            "deploy",
            "aci",
            "--config",
            str(CONFIG),
            "--resource-group",
            "rg",
            "--name",
            "whale-demo",
            "--out",
            str(out_file),
            "--dry-run",
        ]
    )
    assert rc == 0
    out = capsys.readouterr()
    assert "lost on restart" in out.err
    doc = yaml.safe_load(out_file.read_text())
    c = doc["properties"]["containers"][0]["properties"]
    assert c["command"][2:4] == ["--config", "/etc/whalebt/config.yaml"]
    assert c["volumeMounts"] == [{"name": "config", "mountPath": "/etc/whalebt", "readOnly": True}]
    assert doc["properties"]["volumes"] == [{"name": "config", "secret": {"config.yaml": MASK}}]


def test_the_file_for_az_carries_the_real_values():
    spec = AciSpec(
        name="w",
        resource_group="rg",
        image="img",
        exchange="bybit_linear",
        symbols=["BTCUSDT"],
        config_text="name: x\n",
        secure_env={"BINANCE_API_KEY": "k-123"},
    )
    doc = yaml.safe_load(render_aci(spec, reveal=True))
    c = doc["properties"]["containers"][0]["properties"]
    assert c["environmentVariables"] == [{"name": "BINANCE_API_KEY", "secureValue": "k-123"}]
    assert base64.b64decode(doc["properties"]["volumes"][0]["secret"]["config.yaml"]) == b"name: x\n"
    assert "k-123" not in render_aci(spec, reveal=False)


def test_env_split_treats_credentials_in_uris_as_secrets():
    plain, secure = env_from_process(
        environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AZURE_CLIENT_SECRET": "s", "UNRELATED": "x"}
    )
    assert plain == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"} and secure == {"AZURE_CLIENT_SECRET": "s"}


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--name", "Whale_Live"], "Error: --name must be 1-63 lower-case letters, digits or '-'"),
        (
            ["--name", "w", "--journal-share", "j"],
            "Error: --journal-share needs --storage-account and the account key in AZURE_STORAGE_KEY",
        ),
        (["--name", "w", "--env", "NOEQUALS"], "Error: --env expects NAME=VALUE; got 'NOEQUALS'"),
        (
            ["--name", "w", "--secure-env", "WHALEBT_SURELY_UNSET"],
            "Error: --secure-env WHALEBT_SURELY_UNSET: WHALEBT_SURELY_UNSET is not set in this environment; export it first",
        ),
    ],
)
def test_user_errors(monkeypatch, capsys, argv, msg):
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    rc = live_main(["deploy", "aci", "--model", "models:/m@live", "--resource-group", "rg", *argv, "--dry-run"])
    assert rc == 1
    assert capsys.readouterr().err.strip().startswith(msg)
