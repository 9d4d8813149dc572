"""Render an Azure Container Instances container group for `live run`, and its `az` command.

The YAML follows the ACI YAML reference (API version 2021-10-01). Secrets travel as
`secureValue` environment variables (and the config as a `secret` volume); the text shown to
people (`render(..., reveal=False)`) masks every secret, so a dry run never prints one.
"""

from __future__ import annotations

from whalebt.errors import UserError
import base64
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "AciSpec",
    "render_aci",
    "az_create_command",
    "SECURE_ENV_DEFAULT",
    "PLAIN_ENV_DEFAULT",
    "model_reach_warning",
]

#: Passed as secureValue when set in the environment of `live deploy aci`.
SECURE_ENV_DEFAULT = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN",
    "BINANCE_API_KEY",
    "WHALEBT_HTTP_TOKEN",  # the bearer token of /signals and /metrics: the container serves on 0.0.0.0
)
#: Passed as plain values when set (a tracking URI with credentials in it becomes secure).
PLAIN_ENV_DEFAULT = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "DATABRICKS_HOST",
)

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MASK = "*** (secure, not shown)"


@dataclass
class AciSpec:
    """One live runner as an ACI container group."""

    name: str
    resource_group: str
    image: str
    exchange: str
    symbols: list[str]
    model_uri: str | None = None
    config_text: str | None = None  # the run config's YAML, mounted as a secret volume
    location: str = "japaneast"
    cpu: float = 1.0
    memory_gb: float = 1.5
    http_port: int = 9100
    env: dict[str, str] = field(default_factory=dict)
    secure_env: dict[str, str] = field(default_factory=dict)
    registry_server: str | None = None
    registry_username: str | None = None
    registry_password: str | None = None
    journal_share: str | None = None  # Azure Files share for the journal (persists across restarts)
    storage_account: str | None = None
    storage_key: str | None = None
    extra_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append(
                f"--name must be 1-63 lower-case letters, digits or '-' (no leading/trailing '-'); got {self.name!r}"
            )
        if (self.model_uri is None) == (self.config_text is None):
            problems.append("give exactly one of --model URI or --config FILE")
        if self.journal_share and not (self.storage_account and self.storage_key):
            problems.append("--journal-share needs --storage-account and the account key in AZURE_STORAGE_KEY")
        if self.registry_server and not (self.registry_username and self.registry_password):
            problems.append("--registry-server needs --registry-username and the password in ACR_PASSWORD")
        if not (0 < self.cpu <= 4) or not (0 < self.memory_gb <= 16):
            problems.append(f"--cpu must be in (0, 4] and --memory-gb in (0, 16]; got {self.cpu}, {self.memory_gb}")
        if problems:
            raise UserError("; ".join(problems))

    def command(self) -> list[str]:
        cmd = ["live", "run"]
        cmd += ["--model", self.model_uri] if self.model_uri else ["--config", "/etc/whalebt/config.yaml"]
        cmd += [
            "--exchange",
            self.exchange,
            "--symbols",
            ",".join(self.symbols),
            "--http-host",
            "0.0.0.0",
            "--http-port",
            str(self.http_port),
            "--journal",
            "/journal/journal.jsonl" if self.journal_share else "/tmp/journal.jsonl",
        ]
        return cmd + list(self.extra_args)


def _probe(port: int, initial_s: int, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": port, "scheme": "http"},
        "initialDelaySeconds": initial_s,
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def render_aci(spec: AciSpec, *, reveal: bool) -> str:
    """The container group YAML; secrets masked unless `reveal` (the file handed to `az`)."""
    spec.validate()

    def secret(v: str) -> str:
        return v if reveal else MASK

    env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    env += [{"name": k, "secureValue": secret(v)} for k, v in sorted(spec.secure_env.items())]
    mounts, volumes = [], []
    if spec.config_text is not None:
        mounts.append({"name": "config", "mountPath": "/etc/whalebt", "readOnly": True})
        volumes.append(
            {"name": "config", "secret": {"config.yaml": secret(base64.b64encode(spec.config_text.encode()).decode())}}
        )
    if spec.journal_share:
        mounts.append({"name": "journal", "mountPath": "/journal"})
        volumes.append(
            {
                "name": "journal",
                "azureFile": {
                    "shareName": spec.journal_share,
                    "storageAccountName": spec.storage_account,
                    "storageAccountKey": secret(spec.storage_key or ""),
                },
            }
        )
    container: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command(),
        "ports": [{"protocol": "TCP", "port": spec.http_port}],
        "environmentVariables": env,
        "resources": {"requests": {"cpu": spec.cpu, "memoryInGB": spec.memory_gb}},
        # liveness tolerates a few minutes of reconnecting before ACI restarts the container
        "livenessProbe": _probe(spec.http_port, 120, 30, 6),
        "readinessProbe": _probe(spec.http_port, 30, 15, 3),
    }
    if mounts:
        container["volumeMounts"] = mounts
    props: dict[str, Any] = {
        "containers": [{"name": spec.name, "properties": container}],
        "osType": "Linux",
        "restartPolicy": "Always",
        "ipAddress": {"type": "Public", "ports": [{"protocol": "TCP", "port": spec.http_port}]},
    }
    if volumes:
        props["volumes"] = volumes
    if spec.registry_server:
        props["imageRegistryCredentials"] = [
            {
                "server": spec.registry_server,
                "username": spec.registry_username,
                "password": secret(spec.registry_password or ""),
            }
        ]
    doc = {
        "apiVersion": "2021-10-01",
        "location": spec.location,
        "name": spec.name,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "tags": {"app": "whalebt-live", "exchange": spec.exchange},
        "properties": props,
    }
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def az_create_command(spec: AciSpec, yaml_path: str) -> str:
    """The `az container create` command line for a rendered file."""
    return shlex.join(["az", "container", "create", "--resource-group", spec.resource_group, "--file", yaml_path])


def env_from_process(
    names_plain=PLAIN_ENV_DEFAULT, names_secure=SECURE_ENV_DEFAULT, environ: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Split the settings found in the environment into plain and secure variables."""
    environ = dict(os.environ if environ is None else environ)
    plain: dict[str, str] = {}
    secure: dict[str, str] = {}
    for k in names_plain:
        v = environ.get(k)
        if v:
            # a URI with user:password@ in it is a secret
            (secure if re.search(r"://[^/@\s]+:[^/@\s]+@", v) else plain)[k] = v
    for k in names_secure:
        v = environ.get(k)
        if v:
            secure[k] = v
    return plain, secure


def _is_local_store(uri: str) -> bool:
    """An MLflow store on this machine's disk (sqlite, file, a plain path): no container reaches it."""
    u = uri.strip().lower()
    return u.startswith(("sqlite:", "file:", "/", "./", "../", "~")) or "://" not in u and ":" not in u


def model_reach_warning(model_uri: str | None, env: dict[str, str]) -> str | None:
    """A warning if the container cannot load ``model_uri`` (a local registry or a local path)."""
    if not model_uri:
        return None
    if _is_local_store(model_uri):
        return f"--model {model_uri} is a path on this machine; the container cannot read it: register the model"
    if not model_uri.lower().startswith(("models:", "runs:")):
        return None
    store = env.get("MLFLOW_REGISTRY_URI") or env.get("MLFLOW_TRACKING_URI")
    if store is None:
        return (
            f"--model {model_uri} is resolved in the container against its default local registry "
            "(sqlite:///results/mlflow.db), which holds no model there: export MLFLOW_TRACKING_URI "
            "(a tracking server or Databricks) before deploying"
        )
    if _is_local_store(store):
        return (
            f"--model {model_uri} is resolved against {store.split('?')[0]}, a registry on this machine that Azure "
            "cannot reach: point MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI at a tracking server or Databricks"
        )
    return None
