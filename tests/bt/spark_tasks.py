"""Module-level task functions for tests/bt/test_spark.py (Spark workers import them by name)."""

from __future__ import annotations

import os

from whalebt.engine import context
from whalebt.errors import UserError


class NotTwelveError(UserError):
    """A task's own error class, to check that Spark sends it back as itself."""


def scaled(x: int) -> tuple[int, int]:
    """``x * context()["k"]`` and the pid of the process that ran it."""
    return x * int(context()["k"]), os.getpid()


def refuse_twelve(x: int) -> int:
    if x == 12:
        raise NotTwelveError(f"task {x} refused")
    return x


def unpicklable_error(x: int) -> int:
    class Local(Exception):  # a class defined in a function cannot be pickled
        pass

    raise Local(f"local {x}")
