"""One error base for problems the user can fix.

Every whalebt command prints a :class:`WhalebtError` as one ``Error: ...`` line and exits 1.
Any other exception is a bug: the command shows its traceback (exit 2), so it gets reported
instead of passing for a user mistake.
"""

from __future__ import annotations

__all__ = ["WhalebtError", "UserError"]


class WhalebtError(Exception):
    """A problem with the user's input, data or environment, said in one line with the fix."""


class UserError(WhalebtError, ValueError):
    """A user error that needs no class of its own (bad flag or value, missing file, ...).

    Also a ``ValueError``, so argparse ``type=`` converters and pydantic validators that raise it
    report it the way they report any invalid value.
    """
