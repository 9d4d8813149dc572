"""Child processes of a ``bt run``: the quantstats tearsheet and the MLflow logging.

Both import seconds of libraries (quantstats and matplotlib; MLflow, SQLAlchemy and the sqlite
store with its migrations) that a run needs only at its end. A :class:`Worker` starts when the
run starts, so those imports and the store's set-up overlap the event study on another core
(a thread would fight the run for the GIL). It is then handed one job and waited for: the run
returns only once the child has written its files and exited; nothing outlives the run. A job
may come in parts (``send(part, last=False)``): the child starts on the first and asks for the
next one when it needs it (the MLflow child logs a run's values while its files are still
being written, then its files).

The child is forked where that is safe (POSIX, one Python thread: it shares the modules already
imported) and a fresh interpreter otherwise. It ends with ``os._exit`` once its result is sent:
its files are closed and flushed by then, and tearing down the imported libraries costs time.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import traceback
import types
from pathlib import Path
from typing import Any, Callable

__all__ = ["Worker", "WorkerError", "can_fork", "start_tearsheet_figures"]


class WorkerError(RuntimeError):
    """A child process died or failed without an exception the parent could rebuild."""


class _NoDownloads(types.ModuleType):
    """Stands in for yfinance in the tearsheet process: quantstats imports it only to download
    benchmarks by ticker, and this process hands it the benchmark's returns."""

    def __getattr__(self, name: str) -> Any:
        raise ImportError("the tearsheet process downloads nothing (yfinance is not loaded)")


def _prepare_tearsheet(_: Any) -> None:
    import logging

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    # Not loaded here (a third of quantstats' import): yfinance (with requests), and ipywidgets,
    # which seaborn imports for its interactive palette pickers only and does without.
    sys.modules.setdefault("yfinance", _NoDownloads("yfinance"))
    sys.modules.setdefault("ipywidgets", None)  # type: ignore[arg-type]
    import matplotlib

    matplotlib.use("svg")  # quantstats writes SVG; Agg would redraw every figure after saving it
    import quantstats  # noqa: F401


def _run_tearsheet(_: None, job: dict, more: Callable[[], Any]) -> None:
    import types

    from bt.report import write_tearsheet

    write_tearsheet(
        types.SimpleNamespace(equity=job["equity"]),
        job["metrics"],
        job["path"],
        job["benchmark"],
        other_half=start_tearsheet_figures,
    )


def start_tearsheet_figures(inputs: dict) -> "Worker | None":
    """A forked child drawing two thirds of the figures of the tearsheet of ``inputs``
    (``bt.report.draw_tearsheet_figures``); None where a fork is not safe (a fresh interpreter
    would import quantstats again: more time than those figures take)."""
    if not can_fork():
        return None
    other = Worker("tearsheet_figures")
    other.send(inputs)
    return other


def _run_tearsheet_figures(_: None, job: dict, more: Callable[[], Any]) -> dict[int, bytes]:
    from bt.report import draw_tearsheet_figures

    return draw_tearsheet_figures(**job)


def _prepare_mlflow(tracking_uri: str | None) -> Any:
    from bt.tracking import prepare_logging

    return prepare_logging(tracking_uri)


def _run_mlflow(prepared: Any, job: dict, more: Callable[[], Any]) -> Any:
    """``job``: the run's config and metrics; the run folder is its next part (None: not written)."""
    from bt.tracking import log_backtest

    return log_backtest(job["config"], job["metrics"], more, tracking_uri=job["tracking_uri"], new_run=job["new_run"])


#: kind → (prepare(arg) run while the parent computes, run(prepared, job, more) once the job
#: arrives; ``more()`` waits for the job's next part, None when the parent sends no more)
_KINDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any, Callable[[], Any]], Any]]] = {
    "tearsheet": (_prepare_tearsheet, _run_tearsheet),
    # Forked by the tearsheet child once its job came: two thirds of the page's figures (bt.report).
    "tearsheet_figures": (lambda _: None, _run_tearsheet_figures),
    "mlflow": (_prepare_mlflow, _run_mlflow),
}


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(kind: str, arg: Any, rfd: int, wfd: int) -> None:
    """The child: prepare, wait for the job (EOF first: cancelled), run it, send ``(ok, value)``.

    The job is read by a thread from the start, so the parent never waits for the imports; its
    later parts are read when ``run`` asks for them.
    """
    prepare, run = _KINDS[kind]
    got: list[bytes] = []

    def read() -> None:
        try:
            got.append(_read_message(rfd))
        except EOFError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    prepared, failure = None, None
    gc.disable()  # imports: allocations, hardly any garbage
    try:
        prepared = prepare(arg)
    except BaseException as exc:  # reported when the job comes
        failure = exc
    gc.enable()
    reader.join()
    if not got:
        return
    data = got[0]

    def more() -> Any:
        try:
            return pickle.loads(_read_message(rfd))
        except EOFError:
            return None

    try:
        if failure is not None:
            raise failure
        payload = pickle.dumps((True, run(prepared, pickle.loads(data), more)))
    except BaseException as exc:
        try:
            exc_bytes: bytes | None = pickle.dumps(exc)
        except Exception:
            exc_bytes = None
        payload = pickle.dumps((False, (exc_bytes, "".join(traceback.format_exception(exc)))))
    _write_all(wfd, payload)


def _spawned() -> None:
    """Entry point of a fresh-interpreter child: ``kind``, read and write fds in argv."""
    kind, rfd, wfd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    arg, sys.argv = pickle.loads(_read_message(rfd))  # the parent's argv: MLflow's source tags read it
    _serve(kind, arg, rfd, wfd)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _message(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _read_message(fd: int) -> bytes:
    """One length-prefixed message from a pipe (EOFError if it closes first)."""
    head = b""
    while len(head) < 8:
        b = os.read(fd, 8 - len(head))
        if not b:
            raise EOFError("the parent closed the pipe")
        head += b
    n, out = int.from_bytes(head, "little"), b""
    while len(out) < n:
        b = os.read(fd, n - len(out))
        if not b:
            raise EOFError("the parent closed the pipe")
        out += b
    return out


#: Parent-side pipe ends of the live workers: a child forked later closes its copies.
_PARENT_FDS: set[int] = set()
#: In a child, the pipe ends it serves its parent on: a worker it forks in turn closes them.
_SERVING_FDS: list[int] = []


def can_fork() -> bool:
    """Whether a worker can be forked here (POSIX, and no other Python thread holding locks)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Worker:
    """One child process of ``kind`` (``tearsheet``, ``mlflow``), prepared with ``arg`` from now on.

    :meth:`send` hands it its job, :meth:`result` waits for the child to finish and returns its
    value or raises its exception; :meth:`cancel` kills a child that has not been waited for.
    Its stderr goes to a temporary file, quoted when it dies.
    """

    def __init__(self, kind: str, arg: Any = None) -> None:
        self.kind = kind
        self._err = tempfile.TemporaryFile()
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        self._job_w: int | None = job_w
        self._res_r: int | None = res_r
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        if can_fork():
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child
                code = 0
                try:
                    gc.freeze()  # the parent's objects stay shared, unscanned
                    for fd in (job_w, res_r, *_PARENT_FDS, *_SERVING_FDS):
                        os.close(fd)
                    _PARENT_FDS.clear()  # those numbers are free now: later files may reuse them
                    _SERVING_FDS[:] = [job_r, res_w]
                    os.dup2(self._err.fileno(), 2)
                    _serve(kind, arg, job_r, res_w)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            self.pid = pid
        else:
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from bt.background import _spawned; _spawned()", kind, str(job_r), str(res_w)],
                pass_fds=(job_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._err,
                env={**os.environ, "PYTHONPATH": path},
            )
            data = pickle.dumps((arg, list(sys.argv)))
            _write_all(job_w, _message(data))
        os.close(job_r)
        os.close(res_w)
        _PARENT_FDS.update((job_w, res_r))

    def send(self, job: Any, *, last: bool = True) -> None:
        """Hand the child its job, or a part of it (``last=False``: more parts follow)."""
        data = pickle.dumps(job)
        assert self._job_w is not None, "a worker takes one job"
        try:
            _write_all(self._job_w, _message(data))
        except BrokenPipeError:
            last = True  # the child died; result() says how
        finally:
            if last:
                self._close("_job_w")

    def _close(self, name: str) -> None:
        fd = getattr(self, name)
        if fd is not None:
            setattr(self, name, None)
            _PARENT_FDS.discard(fd)
            os.close(fd)

    def _wait(self) -> int:
        if self._proc is not None:
            return self._proc.wait()
        assert self.pid is not None
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return os.waitstatus_to_exitcode(status)

    def result(self) -> Any:
        """Wait for the child; its value, or its exception raised here."""
        assert self._res_r is not None
        if self._job_w is not None:
            self._close("_job_w")
        data = _read_all(self._res_r)
        self._close("_res_r")
        code = self._wait()
        if not data:
            self._err.seek(0)
            tail = self._err.read().decode(errors="replace").strip().splitlines()[-5:]
            self._err.close()
            raise WorkerError(f"the {self.kind} process died (exit code {code}): " + " | ".join(tail))
        self._err.close()
        ok, value = pickle.loads(data)
        if ok:
            return value
        exc_bytes, text = value
        try:
            exc = pickle.loads(exc_bytes) if exc_bytes is not None else None
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            raise exc
        raise WorkerError(f"the {self.kind} process failed: {text.strip().splitlines()[-1]}")

    def cancel(self) -> None:
        """Kill the child unless it was waited for (a failed run)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
        elif self.pid is not None:
            import signal

            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = None
        self._close("_job_w")
        self._close("_res_r")
        if not self._err.closed:
            self._err.close()
