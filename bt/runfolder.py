"""The one writer of a run folder (``results/<run_id>/``, a sweep's ``results/<study>/``).

:func:`write_run_folder` fills a sibling scratch directory ``.<name>.tmp-<pid>-<random>``, and only
when it is complete puts it in place:

- no folder yet: ``rename(tmp, dest)``;
- a folder there (Linux): ``renameat2(tmp, dest, RENAME_EXCHANGE)`` swaps the two directories in one
  step, so ``dest`` always names a complete folder (the old one, then the new one); the old one,
  now at the scratch name, is deleted;
- elsewhere (no ``renameat2``): ``rename(dest, .<name>.old-<pid>-<random>)`` then
  ``rename(tmp, dest)``: between those two calls (microseconds) ``dest`` does not exist. A crash
  in that window leaves the old folder under the ``.old-`` name, and the next start puts it back.

A reader sees the old folder or the new one, never a mix. ``kill -9`` leaves the scratch
directory; the next :func:`write_run_folder` into the same parent (and the start of ``bt run``)
removes those whose pid is dead (and restores an ``.old-`` folder whose ``dest`` is missing).
SIGTERM while writing removes the scratch directory before the process exits.

Versions before this writer used ``tempfile.mkdtemp(prefix=".<name>.")``: ``.<name>.<8 characters>``,
mode 0700, no pid. Those are removed too once untouched for :data:`OLD_STYLE_STALE_S` (no writer
of this version makes them, so only an older version still running could own one).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

from datasets._tempdirs import owned_name, owner_pid, pid_alive, sigterm_exits

__all__ = ["write_run_folder", "clean_stale_run_folders", "json_text"]


def _plain(o):
    """NaN/inf → None and NumPy scalars/arrays → Python, recursively."""
    import math

    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if hasattr(o, "tolist") and not isinstance(o, (str, bytes)):  # NumPy scalar or array
        return _plain(o.tolist())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return o


def json_text(obj) -> str:
    """The one encoding of the JSON files in a run or sweep folder: strict JSON (no NaN), indent 2.

    Non-finite numbers become null; anything else JSON does not know is written as its ``str``.
    """
    import json

    return json.dumps(_plain(obj), indent=2, allow_nan=False, default=str)


#: Age (seconds since the last change) after which an old-style ``.<name>.<8 characters>`` scratch
#: folder counts as left by a killed writer.
OLD_STYLE_STALE_S = 600
_OLD_STYLE = re.compile(r"\.(?P<dest>.+)\.[a-z0-9_]{8}")  # tempfile.mkdtemp's 8 random characters

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2``; False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _scratch_kind(name: str) -> tuple[str, str, int] | None:
    """``.<dest>.tmp-<pid>-<hex>`` / ``.<dest>.old-<pid>-<hex>`` → (dest name, kind, pid)."""
    if not name.startswith("."):
        return None
    for kind in ("tmp", "old"):
        head, sep, _ = name.rpartition(f".{kind}-")
        if sep and head:
            pid = owner_pid(name, f"{head}.{kind}-")
            if pid is not None:
                return head[1:], kind, pid
    return None


def _old_style_stale(e: os.DirEntry, now: float) -> bool:
    """An old-style ``mkdtemp`` scratch folder (``.<name>.<8 characters>``, mode 0700) untouched for long."""
    if not _OLD_STYLE.fullmatch(e.name) or not e.is_dir(follow_symlinks=False):
        return False
    st = e.stat(follow_symlinks=False)
    return stat.S_IMODE(st.st_mode) == 0o700 and now - st.st_mtime >= OLD_STYLE_STALE_S


def clean_stale_run_folders(parent: str | os.PathLike[str]) -> list[Path]:
    """Remove scratch folders under ``parent`` whose writer died; put back an orphaned old folder."""
    out: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return out
    now = time.time()
    for e in entries:
        got = _scratch_kind(e.name)
        if got is None and _old_style_stale(e, now):
            shutil.rmtree(e.path, ignore_errors=True)
            out.append(Path(e.path))
            continue
        if got is None or not e.is_dir(follow_symlinks=False):
            continue
        dest_name, kind, pid = got
        if pid == os.getpid() or pid_alive(pid):
            continue
        dest = Path(parent) / dest_name
        if kind == "old" and not dest.exists():
            os.rename(e.path, dest)  # the writer died between its two renames
        else:
            shutil.rmtree(e.path, ignore_errors=True)
        out.append(Path(e.path))
    return out


def write_run_folder(dest: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Build ``dest`` by calling ``fill(scratch_dir)``, then put it in place (see the module doc).

    If ``fill`` raises (or SIGTERM arrives), the scratch directory is removed and ``dest`` is unchanged.
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_run_folders(parent)
    tmp = parent / owned_name(f".{dest.name}.tmp-")
    with sigterm_exits():
        tmp.mkdir()
        try:
            fill(tmp)
            try:
                os.rename(tmp, dest)  # fails if dest is a non-empty directory
                return dest
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
            if not _exchange(tmp, dest):
                old = parent / owned_name(f".{dest.name}.old-")
                os.rename(dest, old)
                os.rename(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the old folder after a swap, or a failed build
    return dest
