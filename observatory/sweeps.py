"""The Sweeps view: studies written by ``bt sweep`` and, with a tracking URI, their registered versions.

A study folder is a results folder entry holding ``sweep.json`` (summary, gate, registration) and
``trials.parquet`` (Optuna's trials frame). The MLflow registry is read only when the observatory
was given a tracking URI; promotion stays a CLI act (``bt promote``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["list_studies", "read_study", "trials_figure", "registry_versions"]


def _load(path: Path) -> dict | None:
    try:
        doc = json.loads((path / "sweep.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def list_studies(results: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One summary per study folder, newest first."""
    root = Path(results)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.name.startswith(".") or not (d / "sweep.json").is_file():
            continue
        doc = _load(d)
        if doc is None:
            continue
        out.append(_summary(d, doc))
    out.sort(key=lambda s: (-s["mtime"], s["folder"]))
    return out


def _summary(d: Path, doc: dict) -> dict[str, Any]:
    test = doc.get("test") or {}
    gate = doc.get("gate") or {}
    reg = doc.get("registration") or {}
    return {
        "folder": d.name,
        "study": doc.get("study") or d.name,
        "mtime": (d / "sweep.json").stat().st_mtime,
        "n_trials": doc.get("n_trials"),
        "n_complete": doc.get("n_complete"),
        "best_trial": doc.get("best_trial"),
        "best_value": doc.get("best_value"),
        "best_params": doc.get("best_params") or {},
        "dsr": (doc.get("dsr") or {}).get("dsr") if isinstance(doc.get("dsr"), dict) else doc.get("dsr"),
        "pbo": (doc.get("pbo") or {}).get("pbo") if isinstance(doc.get("pbo"), dict) else doc.get("pbo"),
        "test_n_signals": test.get("test_n_signals"),
        "test_mean_return": test.get("test_mean_return"),
        "baseline_mean_return": test.get("baseline_mean_return"),
        "threshold": test.get("threshold"),
        "gate": gate.get("verdict"),
        "gate_reasons": gate.get("reasons") or [],
        "gate_notes": gate.get("notes") or [],
        "gate_config": gate.get("config") or {},
        "registration": reg.get("decision"),
        "config_id": (doc.get("signal_config") or {}).get("config_id"),
        "storage": doc.get("storage"),
    }


def read_study(results: str | os.PathLike[str], folder: str) -> tuple[dict[str, Any], Any] | None:
    """``(summary, trials frame or None)`` of one study folder, or None if there is no such study."""
    if not folder or "/" in folder or folder.startswith("."):
        return None
    d = Path(results) / folder
    doc = _load(d) if (d / "sweep.json").is_file() else None
    if doc is None:
        return None
    trials = None
    if (d / "trials.parquet").is_file():
        import pandas as pd

        trials = pd.read_parquet(d / "trials.parquet")
    return _summary(d, doc), trials


def trials_figure(trials: Any, study: str) -> dict:
    """Plotly figure (as a JSON-able dict) of each finished trial's objective over time and the best so far."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    if trials is not None and len(trials):
        t = trials.sort_values("number")
        when = t["datetime_complete"] if "datetime_complete" in t else t["number"]
        x = [str(v) for v in when]
        val = t["value"].to_numpy(np.float64)
        state = t["state"].astype(str).tolist() if "state" in t else ["COMPLETE"] * len(t)
        ok = np.array([s == "COMPLETE" for s in state]) & np.isfinite(val)
        text = [f"trial {n} ({s})" for n, s in zip(t["number"], state)]
        fig.add_trace(
            go.Scatter(
                x=[a for a, k in zip(x, ok) if k],
                y=val[ok].tolist(),
                mode="markers",
                name="trial objective",
                text=[a for a, k in zip(text, ok) if k],
            )
        )
        best = np.fmax.accumulate(np.where(ok, val, -np.inf))
        keep = np.isfinite(best)
        fig.add_trace(
            go.Scatter(
                x=[a for a, k in zip(x, keep) if k],
                y=best[keep].tolist(),
                mode="lines",
                line={"shape": "hv"},
                name="best so far",
            )
        )
    fig.update_layout(
        title=f"{study}: validation objective per trial over time",
        height=380,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        xaxis_title="trial completed (UTC)",
        yaxis_title="objective",
    )
    return json.loads(fig.to_json())


def registry_versions(tracking_uri: str, registry_uri: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Registered model versions by the study that made them (version tag ``whalebt.study``).

    Each: ``name``, ``version``, ``aliases`` (held by this version), ``gate`` (``whalebt.gate``),
    ``promoted_by``/``promoted_at``/``promotion_reason`` when promoted, ``uri``.
    """
    from bt.registry import TAG_PREFIX
    from bt.tracking import connect

    mlflow = connect(tracking_uri, registry_uri)
    client = mlflow.MlflowClient()
    out: dict[str, list[dict[str, Any]]] = {}
    for rm in client.search_registered_models():
        by_version: dict[str, list[str]] = {}
        for alias, ver in (rm.aliases or {}).items():
            by_version.setdefault(str(ver), []).append(alias)
        for mv in client.search_model_versions(f"name = '{rm.name}'"):
            tags = mv.tags or {}
            study = tags.get(TAG_PREFIX + "study")
            if not study:
                continue
            out.setdefault(study, []).append(
                {
                    "name": rm.name,
                    "version": str(mv.version),
                    "uri": f"models:/{rm.name}/{mv.version}",
                    "aliases": sorted(by_version.get(str(mv.version), [])),
                    "gate": tags.get(TAG_PREFIX + "gate"),
                    "promoted_by": tags.get(TAG_PREFIX + "promoted_by"),
                    "promoted_at": tags.get(TAG_PREFIX + "promoted_at"),
                    "promotion_reason": tags.get(TAG_PREFIX + "promotion_reason"),
                }
            )
    for vs in out.values():
        vs.sort(key=lambda v: (v["name"], int(v["version"]) if v["version"].isdigit() else 0))
    return out
