"""MLflow tracking of runs: params, metrics, lineage tags and the run folder as artifacts.

Default store: ``sqlite:///results/mlflow.db`` (registry and aliases work without a server);
``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point elsewhere, e.g. an ``mlflow server``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

from whalebt.cli import DEFAULT_TRACKING_URI  # one default for --tracking-uri and the API

__all__ = [
    "DEFAULT_TRACKING_URI",
    "resolve_tracking_uri",
    "connect",
    "log_backtest",
    "flatten",
    "code_version",
    "experiment",
]

DEFAULT_EXPERIMENT = "whalebt"


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists kept as JSON text)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def code_version() -> str:
    """Git commit of the code that ran (``+dirty`` if the tree has changes), or the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if sha:
            return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "whalebt " + version("whalebt")
    except PackageNotFoundError:
        return "unknown"


def experiment(mlflow, name: str) -> str:
    """Id of experiment ``name``, created with artifacts beside a local sqlite store."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = mlflow.get_tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        artifact_location = (db.parent / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect(tracking_uri: str | None = None, registry_uri: str | None = None):
    """The one way whalebt points MLflow at its stores; returns the ``mlflow`` module.

    Tracking: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///results/mlflow.db``
    (its folder is created). Registry: ``registry_uri`` or ``$MLFLOW_REGISTRY_URI`` if set.
    """
    _quiet_mlflow()
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    reg = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
    if reg:
        mlflow.set_registry_uri(reg)
    return mlflow


def log_backtest(
    config, metrics: dict, run_dir: Path, *, tracking_uri: str | None = None, experiment_name: str | None = None
) -> str:
    """Log one ``bt run`` to MLflow; returns the MLflow run id."""
    mlflow = connect(tracking_uri)
    exp_id = experiment(mlflow, experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
    parts = metrics["data"]["partitions"] + metrics["data"].get("price_partitions", [])
    data_hash = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    numeric = {
        k: float(v)
        for k, v in flatten({k: v for k, v in metrics.items() if k not in ("data", "costs")}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=metrics["run_id"]) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(config.resolved()).items()})
        mlflow.log_metrics({k.replace("@", "_"): v for k, v in numeric.items()})
        mlflow.set_tags(
            {
                "whalebt.run_id": metrics["run_id"],
                "whalebt.config_id": metrics["config_id"],
                "whalebt.kind": "backtest",
                "whalebt.code_version": code_version(),
                "whalebt.data_snapshot": data_hash,
                "whalebt.data_partitions": json.dumps(parts)[:5000],
                "whalebt.lake": metrics["data"]["lake"],
            }
        )
        mlflow.log_artifacts(str(run_dir))
        return run.info.run_id
