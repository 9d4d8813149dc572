"""Independent tasks (symbols of a universe, chunks of a span) on a local process pool or Spark.

:func:`run_tasks` maps a module-level function over picklable tasks and returns the results in
task order, so the result never depends on ``jobs`` or the engine (``--engine local|spark``).
Objects every task shares (a loaded model, options) go in ``context``: local workers inherit it
through the fork, Spark tasks receive it broadcast (:func:`context`). The engine itself is
:mod:`whalebt.engine`, which ``datasets`` uses too.
"""

from __future__ import annotations

from whalebt.engine import JobsError, check_jobs, context, default_jobs, run_tasks

__all__ = ["JobsError", "default_jobs", "check_jobs", "run_tasks", "context"]
