"""A local process pool for independent tasks (symbols of a universe, chunks of a span).

:func:`run_tasks` maps a module-level function over picklable tasks on ``jobs`` forked worker
processes and returns the results in task order, so the result never depends on ``jobs``.
Objects every task shares (a loaded model, options) go in ``context``: the workers inherit it
through the fork instead of receiving it pickled with each task (:func:`context`).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from whalebt.errors import UserError

__all__ = ["JobsError", "default_jobs", "check_jobs", "run_tasks", "context"]

T = TypeVar("T")
R = TypeVar("R")

_CONTEXT: dict[str, Any] = {}


class JobsError(UserError):
    """``--jobs`` is not a positive number of processes."""


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
) -> list[R]:
    """``[fn(t) for t in tasks]`` on up to ``jobs`` processes (one: in this process), in task order.

    ``meanwhile``: run in this process while the workers run (e.g. loading what the step after
    needs); not called with one process. An exception of a task is raised here (the first in
    task order).
    """
    global _CONTEXT
    n = min(check_jobs(jobs), len(tasks))
    previous, _CONTEXT = _CONTEXT, dict(context or {})
    try:
        if n <= 1:
            return [fn(t) for t in tasks]
        # fork: workers start at once with the parent's imports and compiled numba functions.
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            if meanwhile is not None:
                meanwhile()
            return [f.result() for f in futures]
    finally:
        _CONTEXT = previous
