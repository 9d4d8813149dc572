"""MLflow model registry: bundle a trained whale model, register it, gate and record promotions.

A registered model is an MLflow pyfunc whose artifacts are the LightGBM booster (native text
format) and ``signal_config.json``: the resolved whale rule, horizon, costs, decision threshold,
feature names and the feature-spec hash of the kernel that produced its training features.
Loading checks that hash against the running code, and scores through the same numba trees
(:mod:`signals.trees_nb`) that the backtest and the live runner use.

Names pass through unchanged, so Unity Catalog names (``catalog.schema.model``) work with the
registry URI ``databricks-uc`` (``--registry-uri`` or ``MLFLOW_REGISTRY_URI``).
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import datetime as dt
import getpass
import json
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bt.config import GateConfig
from whalebt.cli import UserError

__all__ = [
    "ModelBundle",
    "load_bundle",
    "log_model_bundle",
    "pip_requirements",
    "GateResult",
    "check_gate",
    "GATE_KEYS",
    "PromotionRefused",
    "promote",
    "list_aliases",
    "connect",
    "TAG_PREFIX",
    "LINEAGE_ARTIFACT",
    "lineage_of",
    "lineage_tags",
    "model_lineage",
    "in_sample_overlap",
    "in_sample_mask",
    "InSampleSpan",
    "in_sample_message",
    "check_in_sample",
]

TAG_PREFIX = "whalebt."
#: Packages the pyfunc needs at load time (pinned to the versions running now).
_RUNTIME_PACKAGES = ("mlflow", "lightgbm", "numpy", "pandas", "numba", "scipy")


class PromotionRefused(WhalebtError, ValueError):
    """The gate refused a promotion; the message lists every failed condition."""


def pip_requirements() -> list[str]:
    """Explicit pins for the logged model (skips MLflow's slow dependency inference)."""
    out = []
    for pkg in _RUNTIME_PACKAGES:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def connect(tracking_uri: str | None = None, registry_uri: str | None = None):
    """Point MLflow at the tracking store and registry (:func:`bt.tracking.connect`)."""
    from bt.tracking import connect as _connect

    return _connect(tracking_uri, registry_uri)


# --- the bundle -------------------------------------------------------------------------------


@dataclass
class ModelBundle:
    """A booster with the signal config it belongs to, scored by the numba trees."""

    booster_text: str
    signal_config: dict
    lineage: dict | None = None  # lineage.json: data and time ranges it was trained on (None: older model)

    def __post_init__(self) -> None:
        from signals.trees_nb import ensemble_from_model_string

        self.ensemble = ensemble_from_model_string(self.booster_text)

    @property
    def threshold(self) -> float:
        return float(self.signal_config["threshold"])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.signal_config["feature_names"])

    def check_features(self) -> None:
        """Refuse a model trained on features this code computes differently."""
        from signals.features import feature_spec_hash

        want = self.signal_config.get("feature_spec_hash")
        have = feature_spec_hash()
        if want != have:
            raise UserError(
                f"the model was trained on feature spec {want}, but this code computes spec {have}; "
                "retrain it (bt sweep / bt run) with the current code"
            )

    def feature_columns(self, columns: Sequence[str]) -> list[int]:
        """Positions in ``columns`` of the model's features, in the model's order.

        Raises:
            ValueError: naming every feature the model needs that ``columns`` lacks.
        """
        columns = list(columns)
        missing = [n for n in self.feature_names if n not in columns]
        if missing:
            raise UserError(f"the model needs features {missing}; the input has {columns}")
        return [columns.index(n) for n in self.feature_names]

    def predict_matrix(self, X: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """Probabilities for rows whose columns are named ``columns`` (a superset of the model's)."""
        from signals.trees_nb import predict_proba

        return predict_proba(self.ensemble, np.asarray(X, dtype=np.float64)[:, self.feature_columns(columns)])


def _pyfunc_class():
    """The PythonModel subclass, built on first use so importing this module stays light."""
    import mlflow.pyfunc

    class WhaleSignalModel(mlflow.pyfunc.PythonModel):
        """pyfunc: a DataFrame of feature columns in, a DataFrame with ``prob`` out."""

        def load_context(self, context):
            booster = Path(context.artifacts["booster"]).read_text()
            cfg = json.loads(Path(context.artifacts["signal_config"]).read_text())
            lin = context.artifacts.get("lineage")
            lineage = json.loads(Path(lin).read_text()) if lin and Path(lin).is_file() else None
            self.bundle = ModelBundle(booster, cfg, lineage)

        def predict(self, context, model_input, params=None):
            import pandas as pd

            df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            prob = self.bundle.predict_matrix(df.to_numpy(np.float64), [str(c) for c in df.columns])
            return pd.DataFrame({"prob": prob})

    return WhaleSignalModel


def _signature(feature_names: Sequence[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", n) for n in feature_names]), outputs=Schema([ColSpec("double", "prob")])
    )


def log_model_bundle(
    booster: Any,
    signal_config: dict,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    tags: dict | None = None,
    lineage: dict | None = None,
):
    """Log the pyfunc into the active MLflow run, optionally registering a new version.

    Args:
        booster: a ``lightgbm.Booster``.
        signal_config: resolved whale rule, horizon, costs, ``threshold``, ``feature_names`` and
            ``feature_spec_hash`` (see :func:`bt.sweep.signal_config_of`).
        name: the logged model's name in the run (MLflow 3 ``name=``).
        registered_model_name: register under this name (passed through unchanged).
        tags: set on the new model version (metrics the promotion gate reads).
        lineage: from :func:`lineage_of`; bundled as ``lineage.json`` (read back by
            :func:`load_bundle` and :func:`model_lineage`) and summarised as ``whalebt.lineage.*``
            version tags.

    Returns:
        ``(model_info, version or None)``.
    """
    import mlflow

    need = {"threshold", "feature_names", "feature_spec_hash"} - set(signal_config)
    if need:
        raise ValueError(f"signal_config lacks {sorted(need)}")
    with tempfile.TemporaryDirectory(prefix="whalebt-model-") as tmp:
        bpath = Path(tmp) / "booster.txt"
        bpath.write_text(booster.model_to_string())
        cpath = Path(tmp) / "signal_config.json"
        cpath.write_text(json.dumps(signal_config, indent=2, sort_keys=True, default=str))
        lpath = None
        if lineage is not None:
            lpath = Path(tmp) / LINEAGE_ARTIFACT
            lpath.write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        from bt.tracking import mlflow_calls

        with mlflow_calls():
            # MLflow nags about type hints and input examples; the explicit signature covers both.
            info = _log_pyfunc(mlflow, name, signal_config, bpath, cpath, registered_model_name, lpath)
    mv = None
    if registered_model_name:
        mv = info.registered_model_version
        tags = {**(tags or {}), **(lineage_tags(lineage) if lineage is not None else {})}
        if tags:
            client = mlflow.MlflowClient()
            for k, v in tags.items():
                client.set_model_version_tag(
                    registered_model_name, str(mv), TAG_PREFIX + k, json.dumps(v) if not isinstance(v, str) else v
                )
    return info, mv


def _log_pyfunc(mlflow, name, signal_config, bpath, cpath, registered_model_name, lpath=None):
    artifacts = {"booster": str(bpath), "signal_config": str(cpath)}
    if lpath is not None:
        artifacts["lineage"] = str(lpath)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=_pyfunc_class()(),
        artifacts=artifacts,
        signature=_signature(signal_config["feature_names"]),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
    )


def load_bundle(uri: str) -> ModelBundle:
    """Load a logged or registered model (``models:/name@live``, ``runs:/...``) as a bundle."""
    from bt.tracking import mlflow_calls

    try:
        with mlflow_calls():  # no progress bar or warnings while the artifacts download
            import mlflow.pyfunc

            m = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises many types; the user needs the URI and the reason
        raise UserError(
            f"cannot load model {uri!r}: {exc}. Check the name, version or alias with `bt promote --list`"
        ) from None
    bundle = m.unwrap_python_model().bundle
    bundle.check_features()
    return bundle


# --- lineage: what a model was trained on ----------------------------------------------------

LINEAGE_ARTIFACT = "lineage.json"
#: Parts of a model's data that are in sample for it: a backtest over them is not a test.
IN_SAMPLE_PARTS = ("train", "validation")
_PART_NAMES = {"train": "training", "validation": "validation", "test": "test"}


def _extent(ts_ms: np.ndarray, end_ts_ms: np.ndarray, idx) -> list[int] | None:
    idx = np.asarray(idx if idx is not None else [], dtype=np.int64)
    if idx.size == 0:
        return None
    return [int(np.asarray(ts_ms)[idx].min()), int(np.asarray(end_ts_ms)[idx].max())]


def lineage_of(
    result, table, *, exchange: str, symbols: Sequence[str], span_ms: tuple[int, int], sources: Sequence[dict]
) -> dict:
    """The lineage of a trained model (:class:`bt.model.ModelResult` on ``table``).

    ``ranges_ms`` holds, per part, ``[first trigger, last exit]`` in ms UTC (inclusive) of the
    events that part actually used after purging: ``train`` = the rows the final booster was
    fitted on (train + validation when walk-forward refits), ``validation`` = the rows the
    threshold was chosen on, ``test`` = the rows of the one test evaluation; None for an empty
    part. ``partitions`` is the trade span's ``[{key, sha256, rows}]``.
    """
    import hashlib

    val = result.validation
    train_idx = val.train_idx if val.train_idx is not None else result.splits.train
    parts = [dict(p) for p in sources]
    return {
        "lineage_version": 1,
        "exchange": exchange,
        "symbols": [str(s) for s in symbols],
        "span_ms": [int(span_ms[0]), int(span_ms[1])],
        "ranges_ms": {
            "train": _extent(table.ts_ms, table.end_ts_ms, train_idx),
            "validation": _extent(table.ts_ms, table.end_ts_ms, val.val_idx),
            "test": _extent(table.ts_ms, table.end_ts_ms, result.splits.test),
        },
        "boundaries_ms": {k: int(v) for k, v in result.splits.boundaries_ms.items()},
        "purge_ms": int(result.splits.purge_ms),
        "partitions": parts,
        "partitions_sha256": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(),
    }


def lineage_tags(lineage: dict) -> dict:
    """Short model-version tags (``whalebt.lineage.*``) summarising a lineage dict."""
    r = lineage.get("ranges_ms") or {}
    return {
        "lineage.exchange": lineage.get("exchange"),
        "lineage.symbols": ",".join(lineage.get("symbols") or []),
        **{f"lineage.{k}_ms": json.dumps(r.get(k)) for k in ("train", "validation", "test")},
        "lineage.n_partitions": str(len(lineage.get("partitions") or [])),
        "lineage.partitions_sha256": lineage.get("partitions_sha256"),
    }


def model_lineage(uri: str) -> dict | None:
    """The lineage bundled with a logged or registered model, or None (registered before lineage).

    Reads the model's own ``lineage.json`` artifact (no feature-spec check, so an audit can
    inspect models this code could not score). Raises ValueError when the model cannot be loaded.
    """
    from bt.tracking import mlflow_calls

    try:
        with mlflow_calls():
            import mlflow.pyfunc

            m = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise UserError(
            f"cannot load model {uri!r}: {exc}. Check the name, version or alias with `bt promote --list`"
        ) from None
    return m.unwrap_python_model().bundle.lineage


def in_sample_overlap(
    lineage: dict | None, start_ms: int, end_ms: int, parts: Sequence[str] = IN_SAMPLE_PARTS
) -> list[dict]:
    """Parts of the model's data that ``[start_ms, end_ms)`` overlaps.

    Returns ``[{"part": "train"|"validation", "from_ms", "to_ms"}]`` (the part's inclusive
    range), in ``parts`` order; empty when there is no overlap or no lineage.
    """
    if not lineage:
        return []
    out = []
    for part in parts:
        rng = (lineage.get("ranges_ms") or {}).get(part)
        if rng is None:
            continue
        lo, hi = int(rng[0]), int(rng[1])
        if lo < int(end_ms) and hi >= int(start_ms):
            out.append({"part": part, "from_ms": lo, "to_ms": hi})
    return out


def in_sample_mask(lineage: dict | None, ts_ms: np.ndarray, parts: Sequence[str] = IN_SAMPLE_PARTS) -> np.ndarray:
    """True for each time in ``ts_ms`` inside the model's train or validation range."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    mask = np.zeros(ts.shape, dtype=bool)
    for part in parts:
        rng = ((lineage or {}).get("ranges_ms") or {}).get(part)
        if rng is not None:
            mask |= (ts >= int(rng[0])) & (ts <= int(rng[1]))
    return mask


class InSampleSpan(UserError):
    """A backtest span overlaps the data the model was trained or validated on."""


def _fmt_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def in_sample_message(uri: str, overlaps: list[dict], span_label: str, flag: str = "--allow-in-sample") -> str:
    """``span A..B overlaps the training range ... of URI (and validation ...); pick a span after ...``."""
    first, rest = overlaps[0], overlaps[1:]
    text = (
        f"span {span_label} overlaps the {_PART_NAMES[first['part']]} range {_fmt_ms(first['from_ms'])}.."
        f"{_fmt_ms(first['to_ms'])} of {uri}"
    )
    if rest:
        text += (
            " (and "
            + ", ".join(f"{_PART_NAMES[o['part']]} {_fmt_ms(o['from_ms'])}..{_fmt_ms(o['to_ms'])}" for o in rest)
            + ")"
        )
    after = max(o["to_ms"] for o in overlaps)
    return text + f"; pick a span after {_fmt_ms(after)} or pass {flag}"


def check_in_sample(
    uri: str, lineage: dict | None, start_ms: int, end_ms: int, span_label: str, *, allow: bool = False
) -> tuple[list[dict], str | None]:
    """Refuse (:class:`InSampleSpan`) a span that overlaps the model's train or validation data.

    Returns ``(overlaps, warning)``: overlaps (kept when ``allow``), and a one-line warning when
    the model has no lineage (its training ranges are unknown; the run goes on).
    """
    if lineage is None:
        return [], (
            f"warning: {uri} carries no lineage (registered before whalebt recorded it): its "
            "training ranges are unknown, so in-sample signals cannot be told apart"
        )
    overlaps = in_sample_overlap(lineage, start_ms, end_ms)
    if overlaps and not allow:
        raise InSampleSpan(in_sample_message(uri, overlaps, span_label))
    return overlaps, None


# --- gate and promotion -----------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reasons: list[str]  # one line per failed condition (empty when ok)
    values: dict
    notes: list[str] = field(default_factory=list)  # what the gate could not check, or checked on a fall-back

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "verdict": "pass" if self.ok else "fail",
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "values": dict(self.values),
        }


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(json.loads(v) if isinstance(v, str) else v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


#: Gate inputs, read from version tags (or the source run's metrics as a fall-back).
GATE_KEYS = ("test_mean_return", "test_n_independent", "test_n_signals", "dsr", "pbo")


def check_gate(values: dict, gate: GateConfig) -> GateResult:
    """Check a model's out-of-sample figures against the gate.

    Args:
        values: ``test_mean_return``, ``test_n_independent`` (independent test signals: clusters
            of overlapping outcome windows), ``dsr`` and ``pbo`` (missing counts as failing, but a
            missing ``pbo`` — a model not chosen by a sweep — is only noted). A version registered
            before independent signals were counted has only ``test_n_signals``: the gate then
            counts raw signals and says so in its reason and notes.
    """
    reasons: list[str] = []
    notes: list[str] = []
    mr, dsr, pbo = _num(values.get("test_mean_return")), _num(values.get("dsr")), _num(values.get("pbo"))
    ni, ns = _num(values.get("test_n_independent")), _num(values.get("test_n_signals"))
    if mr is None or not mr > gate.min_mean_return:
        reasons.append(
            f"out-of-sample mean return {mr if mr is None else f'{mr:.6f}'} is not above {gate.min_mean_return:g}"
        )
    if ni is not None:
        if ni < gate.min_test_signals:
            reasons.append(
                f"{int(ni)} independent test signals ({'?' if ns is None else int(ns)} signals; "
                f"overlapping outcome windows count once); the gate needs at least "
                f"{gate.min_test_signals}"
            )
    elif ns is not None:
        note = (
            "no test_n_independent (registered before independent signals were counted): "
            "the gate counted raw test signals"
        )
        notes.append(note)
        if ns < gate.min_test_signals:
            reasons.append(
                f"{int(ns)} test signals (raw count: this version was registered before "
                f"independent signals were counted); the gate needs at least "
                f"{gate.min_test_signals}"
            )
    else:
        reasons.append(f"no test signals; the gate needs at least {gate.min_test_signals}")
    if dsr is None or not dsr >= gate.min_dsr:
        reasons.append(f"deflated Sharpe ratio {dsr if dsr is None else f'{dsr:.3f}'} is below {gate.min_dsr:g}")
    if pbo is None:
        notes.append("no probability of backtest overfitting (not chosen by a sweep): max_pbo not checked")
    elif pbo > gate.max_pbo:
        reasons.append(f"probability of backtest overfitting {pbo:.3f} is above {gate.max_pbo:g}")
    return GateResult(
        not reasons,
        reasons,
        {"test_mean_return": mr, "test_n_independent": ni, "test_n_signals": ns, "dsr": dsr, "pbo": pbo},
        notes,
    )


def _gate_values(client, name: str, mv) -> dict:
    vals = {k[len(TAG_PREFIX) :]: v for k, v in (mv.tags or {}).items() if k.startswith(TAG_PREFIX)}
    if mv.run_id and not all(k in vals for k in GATE_KEYS):
        try:
            run_metrics = client.get_run(mv.run_id).data.metrics
        except Exception:  # the run may live in another workspace; tags are the primary source
            run_metrics = {}
        for k in GATE_KEYS:
            vals.setdefault(k, run_metrics.get(k))
    return vals


def promote(
    name: str,
    version: str | int,
    alias: str,
    *,
    gate: GateConfig,
    reason: str = "",
    force: bool = False,
    user: str | None = None,
) -> GateResult:
    """Set ``alias`` on ``name`` version ``version`` if it passes the gate.

    Records ``whalebt.promoted_by``/``promoted_at``/``promotion_reason``/``promoted_alias`` as
    version tags. Raises :class:`PromotionRefused` (nothing changed) when the gate fails and
    ``force`` is not set.
    """
    import mlflow

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as exc:
        raise UserError(f"no version {version} of registered model {name!r}: {exc}. See `bt promote --list`") from None
    res = check_gate(_gate_values(client, name, mv), gate)
    if not res.ok and not force:
        raise PromotionRefused(
            f"refused to set alias {alias!r} on {name} version {version}: "
            + "; ".join(res.reasons)
            + ". Lower the bounds with --min-dsr/--min-test-signals/--min-mean-return/--max-pbo, or --force"
        )
    who = user or getpass.getuser()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    why = reason or ("gate passed" if res.ok else "forced past the gate: " + "; ".join(res.reasons))
    for k, v in {"promoted_by": who, "promoted_at": now, "promotion_reason": why, "promoted_alias": alias}.items():
        client.set_model_version_tag(name, str(version), TAG_PREFIX + k, v)
    client.set_registered_model_alias(name, alias, str(version))
    return res


def list_aliases(name: str | None = None) -> list[dict]:
    """Rows ``{name, alias, version, promoted_by, promoted_at}`` for every alias in the registry."""
    import mlflow

    client = mlflow.MlflowClient()
    models = [client.get_registered_model(name)] if name else client.search_registered_models()
    rows = []
    for rm in models:
        for alias, ver in sorted((rm.aliases or {}).items()):
            mv = client.get_model_version(rm.name, str(ver))
            tags = mv.tags or {}
            rows.append(
                {
                    "name": rm.name,
                    "alias": alias,
                    "version": str(ver),
                    "promoted_by": tags.get(TAG_PREFIX + "promoted_by"),
                    "promoted_at": tags.get(TAG_PREFIX + "promoted_at"),
                }
            )
    return rows
