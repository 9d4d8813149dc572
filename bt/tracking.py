"""MLflow tracking of runs: params, metrics, lineage tags, the data read and the run folder.

Default store: ``sqlite:///results/mlflow.db`` (registry and aliases work without a server);
``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point elsewhere, e.g. an ``mlflow server``.

One MLflow run per input: a ``bt run`` is found again by its tag ``whalebt.input_key`` (hash
of the resolved config and of the content hashes of the partitions read) and updated in place;
``new_run=True`` (``bt run --new-run``) adds a copy. Metrics are the result's numbers only
(:func:`metric_values`, one naming for runs and sweeps); times, spans and cash go to params and
tags. The lake partitions read are logged as an MLflow dataset input (:func:`lake_dataset`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from whalebt.cli import DEFAULT_TRACKING_URI  # one default for --tracking-uri and the API

__all__ = [
    "DEFAULT_TRACKING_URI",
    "resolve_tracking_uri",
    "connect",
    "seed_sqlite_store",
    "prepare_logging",
    "log_backtest",
    "flatten",
    "code_version",
    "experiment",
    "quiet_mlflow",
    "mlflow_calls",
    "data_digest",
    "input_key",
    "metric_values",
    "context_tags",
    "lake_dataset",
    "find_run",
    "log_params_once",
    "EXPERIMENT_KIND_TAG",
    "EXPERIMENT_KIND",
    "run_url",
    "LoggedRun",
    "write_figures",
]

DEFAULT_EXPERIMENT = "whalebt"
#: The experiment tag MLflow 3's UI reads to choose between its GenAI and its machine-learning
#: screens; whalebt's experiments are model development, not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
    """Id of experiment ``name``, created with artifacts beside a local sqlite store.

    The experiment is tagged as model development (:data:`EXPERIMENT_KIND_TAG`), so MLflow 3 opens
    it on its training screens (runs, metrics, models) rather than its GenAI ones (traces,
    evaluations); an existing experiment without that tag gets it, one set by a user is kept.
    """
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    uri = mlflow.get_tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).resolve()
        artifact_location = (db.parent / "mlartifacts").as_uri()
    return mlflow.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page on an MLflow server (``http(s)://`` stores), on the machine-learning screens."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def quiet_mlflow() -> None:
    """Keep MLflow's own chatter out of ``bt`` output (before and after ``import mlflow``).

    Its logger only reports errors (``MLFLOW_LOGGING_LEVEL`` set beforehand wins), artifact
    downloads draw no progress bar (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``), and the database
    migration loggers stay quiet.
    """
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    level = getattr(logging, os.environ["MLFLOW_LOGGING_LEVEL"].upper(), logging.ERROR)
    logging.getLogger("mlflow").setLevel(level)
    for name in ("alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


_MLFLOW_DIR = os.sep + "mlflow" + os.sep
_NOISE = (UserWarning, FutureWarning, DeprecationWarning)


@contextlib.contextmanager
def mlflow_calls() -> Iterator[None]:
    """Around whalebt's MLflow calls: MLflow's user, future and deprecation warnings are dropped.

    Scoped to the block (``warnings.catch_warnings`` restores filters and ``showwarning``), so
    warnings of the user's own code after the call are untouched. MLflow resets filters inside
    some calls (``simplefilter("once")``), so the display hook drops them too.
    """
    quiet_mlflow()
    with warnings.catch_warnings():
        for category in _NOISE:
            warnings.simplefilter("ignore", category)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, _NOISE) or _MLFLOW_DIR in str(filename):
                return
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def connect(tracking_uri: str | None = None, registry_uri: str | None = None):
    """The one way whalebt points MLflow at its stores; returns the ``mlflow`` module.

    Tracking: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///results/mlflow.db``
    (its folder is created). Registry: ``registry_uri`` or ``$MLFLOW_REGISTRY_URI`` if set.
    """
    with mlflow_calls():
        import mlflow

        uri = resolve_tracking_uri(tracking_uri)
        if uri.startswith("sqlite:///") and "?" not in uri:
            db = Path(uri[len("sqlite:///") :])
            db.parent.mkdir(parents=True, exist_ok=True)
            if not db.exists():
                seed_sqlite_store(db)
        mlflow.set_tracking_uri(uri)
        reg = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
        if reg:
            mlflow.set_registry_uri(reg)
    return mlflow


def _store_template() -> Path:
    """The empty sqlite store of this MLflow version (:func:`seed_sqlite_store`), made once per
    machine in ``$XDG_CACHE_HOME/whalebt`` (``~/.cache/whalebt``)."""
    import sqlite3

    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whalebt"
    template = cache / f"mlflow-{mlflow.__version__}-empty-store.db"
    if template.exists():
        return template
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="template-") as tmp:
        db = Path(tmp) / "store.db"
        store = SqlAlchemyStore(f"sqlite:///{db}", Path(tmp).as_uri())  # its tables and migrations
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(db)) as con:
            # The default experiment names the template's artifact folder: MLflow makes it again
            # with the store's own when a store opens without it.
            con.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            con.execute("DELETE FROM experiments WHERE experiment_id = 0")
            con.commit()
            con.execute("VACUUM")
        os.replace(db, template)  # whole or not at all, also when two processes race here
    return template


def seed_sqlite_store(db: Path) -> None:
    """A new sqlite tracking store at ``db``, copied from an empty one made once (a new store
    otherwise runs MLflow's ~100 schema migrations: ~2 s on each first run into it).

    The copy is the store MLflow would create: the same tables at the same schema revision,
    with its default experiment made by MLflow on opening. Never replaces a store: if ``db``
    appears meanwhile (another process), that one is kept. Where the cache cannot be written,
    nothing is done and MLflow creates the store itself.
    """
    import shutil

    try:
        template = _store_template()
        fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=f".{db.name}.", suffix=".new")
        os.close(fd)
        try:
            shutil.copyfile(template, tmp)
            os.link(tmp, db)  # fails if the store exists by now: the one there stays
        finally:
            os.unlink(tmp)
    except OSError:
        return


def prepare_logging(tracking_uri: str | None = None) -> None:
    """What :func:`log_backtest` needs first, done ahead (``bt run`` does it while it computes).

    Imports MLflow with its sqlite store and dataset classes, points MLflow at the store and opens
    it: a client opens its store, which MLflow keeps for the next client (a new sqlite store gets
    its tables). Also runs once what the logging would load on its first call: MLflow's run-context
    tags (they import git and IPython) and the figures' plotly.js pin. Writes no run and no experiment.
    """
    mlflow = connect(tracking_uri)
    with mlflow_calls():
        import mlflow.data.meta_dataset  # noqa: F401
        from mlflow.entities import DatasetInput, InputTag, Metric, RunTag  # noqa: F401
        from mlflow.tracking.context.registry import resolve_tags

        mlflow.MlflowClient()
        resolve_tags()
    _plotly_head()


# --- what a run is logged with ------------------------------------------------------------------


def data_digest(partitions: list[dict]) -> str:
    """16 hex of the sha256 over the partitions read (keys, content hashes, rows): ``whalebt.data_snapshot``.

    Also the digest of the run's MLflow dataset input: the same data gives the same digest.
    """
    return hashlib.sha256(json.dumps(partitions, sort_keys=True).encode()).hexdigest()[:16]


def input_key(resolved_config: dict, digest: str) -> str:
    """The tag ``whalebt.input_key``: one MLflow run per resolved config and data digest."""
    from signals.journal import canonical_json

    return hashlib.sha256(f"{canonical_json(resolved_config)}\n{digest}".encode()).hexdigest()[:32]


#: metrics.json parts that are not numbers of the result (inputs, lineage, decisions).
_NOT_RESULTS = ("data", "costs", "gate", "registration", "model_lineage", "kind")
#: Numbers that describe the input or the span, not the result: tags or params, never metrics.
_CONTEXT_KEYS = ("portfolio.init_cash", "portfolio.max_positions", "portfolio.n_days", "purge_ms")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_values(metrics: dict) -> dict[str, float]:
    """The MLflow metrics of a ``metrics.json`` (``bt run`` and ``bt sweep`` alike).

    Names: the metrics.json keys, nested ones joined with ``.`` (``portfolio.sharpe``,
    ``by_horizon.1h.mean_return``), except ``model_metrics`` whose keys are already prefixed
    (``test_mean_return``, ``val_precision``, ``baseline_win_rate``) and are logged at the top
    level, so a model trained by ``bt run`` and a sweep's winner carry the same names; ``@`` is
    spelled ``_``. Left out: non-numbers, times (keys ending in ``_ms``) and the input's own numbers
    (initial cash, position limit, span length), which :func:`context_tags` and the params carry.
    """
    flat: dict[str, object] = {}
    for k, v in metrics.items():
        if k in _NOT_RESULTS or k == "model_metrics":
            continue
        flat.update(flatten({k: v}) if isinstance(v, dict) else {k: v})
    for k, v in flatten(metrics.get("model_metrics") or {}).items():
        flat.setdefault(k, v)
    return {
        k.replace("@", "_"): float(v)  # type: ignore[arg-type]
        for k, v in flat.items()
        if _is_number(v) and k not in _CONTEXT_KEYS and not any(p.endswith("_ms") for p in k.split("."))
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def context_tags(metrics: dict) -> dict[str, str]:
    """Times, spans and cash of a result as ``whalebt.*`` tags (ISO 8601 UTC), not metrics."""
    d = metrics.get("data") or {}
    p = metrics.get("portfolio") or {}
    mm = metrics.get("model_metrics") or {}
    tags: dict[str, object] = {
        "whalebt.created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "whalebt.span_start": d.get("start"),
        "whalebt.span_end": d.get("end"),
        "whalebt.first_trade_at": _iso(d.get("first_trade_ms")),
        "whalebt.last_trade_at": _iso(d.get("last_trade_ms")),
        "whalebt.span_days": p.get("n_days"),
        "whalebt.init_cash": p.get("init_cash"),
    }
    for k, v in (mm.get("boundaries_ms") or {}).items():
        tags[f"whalebt.model.{k}_from"] = _iso(v)
    if mm.get("purge_ms") is not None:
        from datasets.durations import format_duration

        tags["whalebt.model.purge"] = format_duration(int(mm["purge_ms"]))
    return {k: str(v) for k, v in tags.items() if v is not None}


def _lake_classes():
    """The MLflow dataset source and dataset of lake partitions (built on first use: mlflow is heavy)."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class LakeDatasetSource(DatasetSource):
        """Partitions of a whalebt lake: its URI and the partition keys read."""

        def __init__(self, uri: str, partitions: list[str]):
            self.uri = uri
            self.partitions = list(partitions)

        @staticmethod
        def _get_source_type() -> str:
            return "whalebt_lake"

        def load(self):
            return self.uri

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError("a whalebt lake source is built from a run, not resolved from a string")

        def to_dict(self) -> dict:
            return {"uri": self.uri, "partitions": self.partitions}

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict["uri"], source_dict.get("partitions", []))

    class LakeDataset(MetaDataset):
        """Metadata of the trades read (no data): digest from content hashes, rows as profile."""

        def __init__(self, source, name: str, digest: str, schema, n_rows: int):
            self._n_rows = int(n_rows)
            super().__init__(source, name=name, digest=digest, schema=schema)

        @property
        def profile(self):
            return {"num_rows": self._n_rows, "num_partitions": len(self.source.partitions)}

        def to_dict(self) -> dict:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return LakeDatasetSource, LakeDataset


def lake_dataset(lake_uri: str, partitions: list[dict], name: str):
    """An MLflow dataset describing the bronze partitions read: source = lake URI + partition
    keys, digest = :func:`data_digest` (their content hashes), schema = the bronze columns."""
    from mlflow.types import ColSpec, Schema

    from datasets.schema import BRONZE_COLUMNS

    kinds = {"int64": "long", "int8": "integer", "float64": "double"}
    schema = Schema([ColSpec(kinds.get(t, "string"), c) for c, t in BRONZE_COLUMNS.items()])
    source_cls, dataset_cls = _lake_classes()
    source = source_cls(lake_uri, [p["key"] for p in partitions])
    rows = sum(int(p.get("rows") or 0) for p in partitions)
    return dataset_cls(source, name, data_digest(partitions), schema, rows)


def find_run(client, experiment_id: str, tags: dict[str, str]):
    """The newest active run of the experiment carrying all ``tags``, or None."""
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs(
        [experiment_id], filter_string=filt, max_results=1, order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def log_params_once(client, run, params: dict[str, str]) -> bool:
    """Log the params ``run`` lacks (MLflow params cannot change); False if one would change."""
    have = run.data.params if run is not None else {}
    if any(k in have and have[k] != v for k, v in params.items()):
        return False
    new = {k: v for k, v in params.items() if k not in have}
    if new:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i : i + 100])
    return True


def _artifact_paths(repo, path: str | None = None) -> set[str]:
    """Every file under ``path`` of an artifact repository (MLflow's ``get_artifact_repository``
    of the run's artifact URI: ``client.list_artifacts`` would load the whole run, its params,
    metrics and tags, again for each folder)."""
    out: set[str] = set()
    for f in repo.list_artifacts(path):
        out |= _artifact_paths(repo, f.path) if f.is_dir else {f.path}
    return out


#: Most points of the equity figure (evenly spaced bars, the last one always kept).
MAX_EQUITY_POINTS = 5000


def _equity_figure(run_dir: Path, metrics: dict):
    """Equity of the portfolio against buying and holding the symbol (both from the initial equity).

    A plotly figure as plotly.js reads it (see :mod:`bt.evaluation`), the curves as typed arrays.
    """
    import base64

    import numpy as np
    import pandas as pd

    from bt.evaluation import _template

    eq = pd.read_parquet(run_dir / "equity.parquet")
    if len(eq) > MAX_EQUITY_POINTS:
        eq = eq.iloc[np.unique(np.r_[np.linspace(0, len(eq) - 1, MAX_EQUITY_POINTS).astype(np.int64), len(eq) - 1])]
    x = [t.isoformat() for t in eq.index]

    def typed(v: pd.Series) -> dict:  # plotly.js typed array, as plotly writes numpy data
        return {"dtype": "f8", "bdata": base64.b64encode(np.ascontiguousarray(v, dtype="<f8").tobytes()).decode()}

    data = []
    if len(eq):
        data.append({"mode": "lines", "name": "portfolio", "x": x, "y": typed(eq["equity"]), "type": "scatter"})
        if "price" in eq and float(eq["price"].iloc[0]) > 0:
            bh = eq["price"] / float(eq["price"].iloc[0]) * float(eq["equity"].iloc[0])
            name = f"buy and hold {metrics['data']['symbol']}"
            data.append({"mode": "lines", "name": name, "x": x, "y": typed(bh), "type": "scatter"})
    d = metrics["data"]
    layout = {
        "title": {"text": f"equity, {d['exchange']}/{d['symbol']} {d['start']}..{d['end']}"},
        "template": _template(),
        "yaxis": {"title": {"text": "equity"}},
    }
    return {"data": data, "layout": layout}


_SPEC = re.compile(r'<script type="application/json" id="fig-([\w-]+)-data">(.*?)</script>', re.S)


def _figure_page(name: str, spec_json: str, head: str) -> str:
    """What ``mlflow.log_figure`` stores for a plotly figure: one page, plotly.js from its CDN."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title>{head}</head>"
        "<body style='margin:0'><div id='fig' style='width:100%;height:100vh'></div>"
        f'<script type="application/json" id="spec">{spec_json}</script>'
        "<script>var s=JSON.parse(document.getElementById('spec').textContent);"
        "Plotly.newPlot('fig',s.data,s.layout,{responsive:true,displaylogo:false});</script></body></html>"
    )


@functools.lru_cache(maxsize=1)
def _plotly_head() -> str:
    """The ``<script>`` loading plotly.js from its CDN, pinned by version and hash (sha384 of the
    4 MB bundle plotly ships: hashed once per process)."""
    import base64

    from plotly.io._utils import plotly_cdn_url
    from plotly.offline import get_plotlyjs

    sri = "sha384-" + base64.b64encode(hashlib.sha384(get_plotlyjs().encode()).digest()).decode()
    return f'<script charset="utf-8" src="{plotly_cdn_url()}" integrity="{sri}" crossorigin="anonymous"></script>'


def write_figures(run_dir: Path, out: Path, metrics: dict) -> list[str]:
    """``out/<name>.html`` for the equity curve and every figure of the run's ``report.html``.

    The report's figures are taken from the page itself (the JSON it renders), so they are not
    rebuilt; each page is what ``mlflow.log_figure`` writes for a plotly figure (plotly.js from
    its CDN, pinned by version and hash). Returns the names written.
    """
    head = _plotly_head()
    out.mkdir(parents=True, exist_ok=True)
    from bt.evaluation import figure_json

    specs = {"equity": figure_json(_equity_figure(run_dir, metrics)).replace("</", "<\\/")}
    report = Path(run_dir) / "report.html"
    if report.is_file():
        for div, spec in _SPEC.findall(report.read_text(encoding="utf-8")):
            specs[div.replace("-", "_")] = spec
    for name, spec in specs.items():
        (out / f"{name}.html").write_text(_figure_page(name, spec, head), encoding="utf-8")
    return list(specs)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    updated: bool  # an existing run of the same input was updated
    url: str | None  # its page on an MLflow server (None for a sqlite store)


def log_backtest(
    config,
    metrics: dict,
    run_dir: Path | Callable[[], Path | None],
    *,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    new_run: bool = False,
) -> LoggedRun:
    """Log one ``bt run`` to MLflow; returns its run id, whether it updated a run, its page.

    The run holding the same ``whalebt.input_key`` is updated: params it lacks are added, metrics
    and tags take the new values, the artifacts are replaced (files the new folder no longer has
    are deleted after the upload). ``new_run`` (or a param whose value would change) starts a new
    run instead.

    ``run_dir`` may be a function giving the run folder once it is written: the params, metrics,
    tags and dataset input are logged first (they need only ``config`` and ``metrics``), then it is
    called, and the folder's files and figures uploaded. When it gives None (the folder was not
    written: the run failed), no file is uploaded: a new MLflow run ends FAILED, an updated one
    keeps its files and status (its values were logged again, the same input giving the same).
    """
    mlflow = connect(tracking_uri)
    with mlflow_calls():
        client = mlflow.MlflowClient()
        exp_id = experiment(mlflow, experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
        parts = metrics["data"]["partitions"] + metrics["data"].get("price_partitions", [])
        digest = data_digest(parts)
        key = input_key(config.resolved(), digest)
        params = {k: str(v)[:6000] for k, v in flatten(config.resolved()).items()}
        run = None if new_run else find_run(client, exp_id, {"whalebt.input_key": key, "whalebt.kind": "backtest"})
        if run is not None and not log_params_once(client, run, params):
            run = None
        updated = run is not None
        if run is None:
            from mlflow.tracking.context.registry import resolve_tags

            run = client.create_run(exp_id, run_name=metrics["run_id"], tags=resolve_tags())
            log_params_once(client, run, params)
        run_id = run.info.run_id
        from mlflow.entities import Metric, RunTag

        now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        tags = {
            "whalebt.run_id": metrics["run_id"],
            "whalebt.config_id": metrics["config_id"],
            "whalebt.kind": "backtest",
            "whalebt.input_key": key,
            "whalebt.code_version": code_version(),
            "whalebt.data_snapshot": digest,
            "whalebt.data_partitions": json.dumps(parts)[:5000],
            "whalebt.lake": metrics["data"]["lake"],
            **context_tags(metrics),
        }
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metric_values(metrics).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        d = metrics["data"]
        ds = lake_dataset(d["lake"], parts, f"{d['exchange']}/{d['symbol']} {d['start']}..{d['end']}")
        from mlflow.entities import DatasetInput, InputTag

        client.log_inputs(run_id, [DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", "backtest")])])
        repo = None
        if updated:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repo = get_artifact_repository(run.info.artifact_uri)
        before = _artifact_paths(repo) if repo is not None else set()
        folder = run_dir() if callable(run_dir) else run_dir
        if folder is None:  # an updated run keeps its files and status; a new one is FAILED
            if not updated:
                client.set_terminated(run_id, status="FAILED")
            return LoggedRun(run_id, updated, run_url(mlflow.get_tracking_uri(), exp_id, run_id))
        folder = Path(folder)
        client.log_artifacts(run_id, str(folder))
        now_paths = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        with tempfile.TemporaryDirectory(prefix="whalebt-figures-") as tmp:
            names = write_figures(folder, Path(tmp), metrics)
            client.log_artifacts(run_id, tmp, "figures")
        now_paths |= {f"figures/{n}.html" for n in names}
        if before - now_paths:
            _delete_artifacts(repo, sorted(before - now_paths))
        client.set_terminated(run_id)
    return LoggedRun(run_id, updated, run_url(mlflow.get_tracking_uri(), exp_id, run_id))


def _delete_artifacts(repo, paths: list[str]) -> None:
    """Delete stale artifacts of an updated run where its artifact repository allows it."""
    for path in paths:
        try:
            repo.delete_artifacts(path)
        except Exception:  # stores without deletes (or a file already gone) keep the old copy
            pass
