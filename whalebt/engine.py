"""Where independent tasks run: a local process pool, or Apache Spark (``--engine local|spark``).

:func:`run_tasks` maps a module-level function over picklable tasks and returns the results in
task order, so the result depends neither on the engine nor on the number of processes.
Objects every task shares (a loaded model, options) go in ``context``; a task reads them with
:func:`context`. The local engine forks ``jobs`` workers that inherit the context; the Spark
engine broadcasts it and runs one Spark task per task (``sc.parallelize(tasks, len(tasks))``).

Spark tasks read and write the lake through the project's own stores (a shared path or
``az://``), so Spark needs no Hadoop connector. pyspark is an optional extra
(``pip install 'whalebt[spark]'``) imported only when the Spark engine is used; standard library
otherwise.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import shutil
import sys
import threading
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from whalebt.errors import UserError

__all__ = [
    "ENGINES",
    "EngineError",
    "JobsError",
    "SparkTaskError",
    "default_jobs",
    "check_jobs",
    "check_engine",
    "spark_master",
    "spark_context",
    "run_tasks",
    "context",
]

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "spark")

_CONTEXT: dict[str, Any] = {}


class JobsError(UserError):
    """``--jobs`` is not a positive number of processes."""


class EngineError(UserError):
    """``--engine``/``--spark-master`` cannot be used as given (unknown engine, pyspark or Java missing)."""


class SparkTaskError(RuntimeError):
    """A Spark task failed with an exception that could not be sent back as itself."""


def default_jobs() -> int:
    """The cores this process may run on (all of them unless an affinity mask limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int | None) -> int:
    """``jobs`` or, for None, :func:`default_jobs`; refuses 0 and negatives."""
    if jobs is None:
        return default_jobs()
    if int(jobs) < 1:
        raise JobsError(f"--jobs must be at least 1 (processes); got {jobs}. Omit it to use every core")
    return int(jobs)


def check_engine(engine: str | None, master: str | None = None) -> str:
    """``engine`` (None: local); refuses an unknown one and ``--spark-master`` without Spark."""
    name = engine or "local"
    if name not in ENGINES:
        raise EngineError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if master and name != "spark":
        raise EngineError(f"--spark-master {master} needs --engine spark")
    return name


def spark_master(master: str | None = None, jobs: int | None = None) -> str:
    """The master URL: ``master``, else env ``SPARK_MASTER``, else ``local[N]`` (N = ``jobs`` or all cores)."""
    return master or os.environ.get("SPARK_MASTER") or f"local[{check_jobs(jobs)}]"


def context() -> dict[str, Any]:
    """What the caller of :func:`run_tasks` shared with the tasks (same object in one process)."""
    return _CONTEXT


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    jobs: int | None = None,
    *,
    context: dict[str, Any] | None = None,
    meanwhile: Callable[[], None] | None = None,
    engine: str | None = "local",
    master: str | None = None,
) -> list[R]:
    """``[fn(t) for t in tasks]`` on the engine, in task order.

    Local: up to ``jobs`` forked processes (one: in this process). Spark: one Spark task per task
    on ``master`` (:func:`spark_master`), ``fn`` and the tasks pickled, ``context`` broadcast.
    ``meanwhile``: run in this process while the tasks run (e.g. loading what the step after
    needs); not called by the local engine with one process. An exception of a task is raised
    here (the first in task order), as itself when it can be pickled.
    """
    global _CONTEXT
    name = check_engine(engine, master)
    if name == "spark":
        return _run_spark(fn, list(tasks), dict(context or {}), spark_master(master, jobs), meanwhile)
    n = min(check_jobs(jobs), len(tasks))
    previous, _CONTEXT = _CONTEXT, dict(context or {})
    try:
        if n <= 1:
            return [fn(t) for t in tasks]
        # fork: workers start at once with the parent's imports and compiled numba functions.
        with ProcessPoolExecutor(
            max_workers=n, mp_context=multiprocessing.get_context("fork"), initializer=_share_cores, initargs=(n,)
        ) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            if meanwhile is not None:
                meanwhile()
            return [f.result() for f in futures]
    finally:
        _CONTEXT = previous


def _share_cores(n_workers: int) -> None:
    """A pool worker's share of the cores for pyarrow's decoding threads (its CPU pool has a thread
    per core in every process): ``n_workers`` processes each with all cores' threads fight over
    them (~10 % slower members on 2 cores, bench/bench_scale.py)."""
    import pyarrow as pa

    pa.set_cpu_count(max(1, default_jobs() // n_workers))


# --- Spark --------------------------------------------------------------------------------------

_SC_LOCK = threading.Lock()


def _project_root() -> str | None:
    """The folder holding our packages when they run from a source tree (not installed)."""
    root = Path(__file__).resolve().parents[1]
    return None if "site-packages" in root.parts or "dist-packages" in root.parts else str(root)


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def spark_context(master: str | None = None, jobs: int | None = None):
    """The active SparkContext (Databricks, a notebook, an earlier call), or a new one on the master.

    A new one runs its Python workers with this interpreter (``PYSPARK_PYTHON``) and with the
    project's source tree on their ``PYTHONPATH``, so they import the same code as this process.
    """
    try:
        with warnings.catch_warnings():  # pyspark 4.3 warns about pandas 3 on import; we use no pandas API of it
            warnings.simplefilter("ignore", FutureWarning)
            import pyspark
    except ImportError:
        raise EngineError(
            "--engine spark needs pyspark: pip install 'whalebt[spark]' (pyspark==4.3.0), or use --engine local"
        ) from None
    with _SC_LOCK:
        active = pyspark.SparkContext._active_spark_context
        if active is not None:
            return active
        if _java() is None:
            raise EngineError(
                "--engine spark needs Java 17 or later to start Spark: install it "
                "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME; or use --engine local"
            )
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        paths = [p for p in (_project_root(), os.environ.get("PYTHONPATH")) if p]
        conf = (
            pyspark.SparkConf()
            .setMaster(spark_master(master, jobs))
            .setAppName("whalebt")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.ui.enabled", "false")
        )
        if paths:
            conf.setExecutorEnv("PYTHONPATH", os.pathsep.join(paths))
        if "local" in conf.get("spark.master", ""):  # this JVM only: errors, not Spark's start-up notes
            conf.set("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_quiet_log4j()}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sc = pyspark.SparkContext.getOrCreate(conf)
        sc.setLogLevel("ERROR")
        return sc


def _quiet_log4j() -> str:
    """A log4j2 configuration that prints errors only, on stderr (one file per user)."""
    import tempfile

    path = Path(tempfile.gettempdir()) / f"whalebt-spark-log4j2-{os.getuid()}.properties"
    if not path.exists():
        path.write_text(
            "rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
            "appender.console.type = Console\nappender.console.name = console\n"
            "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n"
        )
    return str(path)


def _spark_call(fn: Callable, shared: Any, task: Any) -> tuple[str, Any]:
    """A Spark task: ``fn(task)`` with the broadcast context; an exception comes back as a value."""
    global _CONTEXT
    previous, _CONTEXT = _CONTEXT, shared.value
    try:
        return "ok", fn(task)
    except BaseException as exc:  # noqa: B036 - sent back to the driver, which raises it
        text = "".join(traceback.format_exception(exc))
        try:
            blob = pickle.dumps(exc)
            pickle.loads(blob)
        except Exception:
            blob = None
        return "error", (blob, f"{type(exc).__name__}: {exc}", text)
    finally:
        _CONTEXT = previous


def _run_spark(
    fn: Callable[[T], R],
    tasks: list[T],
    shared: dict[str, Any],
    master: str,
    meanwhile: Callable[[], None] | None,
) -> list[R]:
    if not tasks:
        return []
    sc = spark_context(master)
    bc = sc.broadcast(shared)
    # fn and the broadcast travel in the closure (pickled once per job), the tasks as data.
    rdd = sc.parallelize(tasks, len(tasks)).map(functools.partial(_spark_call, fn, bc))
    got: dict[str, Any] = {}

    def collect() -> None:
        try:
            got["rows"] = rdd.collect()
        except BaseException as exc:  # noqa: B036 - raised in the caller's thread below
            got["exc"] = exc

    try:
        if meanwhile is None:
            collect()
        else:
            worker = threading.Thread(target=collect, name="whalebt-spark-collect", daemon=True)
            worker.start()
            meanwhile()
            worker.join()
    finally:
        bc.unpersist()
    if "exc" in got:
        raise got["exc"]
    out = []
    for status, value in got["rows"]:
        if status == "error":
            blob, line, text = value
            if blob is not None:
                exc = pickle.loads(blob)
                exc.add_note(f"(raised in a Spark task)\n{text}")
                raise exc
            raise SparkTaskError(f"a Spark task failed: {line}\n{text}")
        out.append(value)
    return out
