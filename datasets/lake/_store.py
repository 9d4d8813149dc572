"""Byte stores behind the lake: one interface, several backends.

A store maps keys (``"bronze/exchange=binance_usdm/symbol=BTCUSDT/date=2024-03-01/part-0.parquet"``)
to bytes. ``put`` is atomic: a reader sees the old object, the new one, or nothing, never a prefix.
The lake keeps one object per partition, so an atomic put is an atomic partition write.

``lock(key)`` serialises writers of one key across processes (a read-merge-write of a partition
holds it): an ``fcntl.flock`` on ``<root>/.locks/<hash>.lock`` locally, a blob lease on Azure, a
per-key lock in memory. Lock objects live under ``.locks/`` and are never listed.
"""

from __future__ import annotations

from whalebt.errors import WhalebtError
import contextlib
import hashlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Store", "LocalStore", "MemoryStore", "StoreError", "LOCKS", "lock_name"]

LOCKS = ".locks/"


def lock_name(key: str) -> str:
    """The lock object of ``key``: ``.locks/<sha256 of the key, 32 hex>.lock``."""
    return f"{LOCKS}{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"


class StoreError(WhalebtError, RuntimeError):
    """A backend could not be opened or answered with an error."""


class Store(ABC):
    """Key → bytes, with atomic puts. Keys use ``/`` and never start with it."""

    uri: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (replacing any previous object)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object at ``key``; raise ``KeyError`` if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (temporary objects excluded)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key``; no error if it is absent."""

    def size(self, key: str) -> int:
        """Size in bytes of the object at ``key``."""
        return len(self.get(key))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        """Write the concatenated ``chunks`` at ``key`` atomically; nothing is written if the iterable raises."""
        self.put(key, b"".join(chunks))

    @abstractmethod
    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold the writer lock of ``key`` inside the ``with`` block (blocks until free; not re-entrant)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


TMP_MARK = ".tmp-"


class LocalStore(Store):
    """A directory on the local file system; atomic by write-to-temp then ``os.replace``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"invalid key {key!r}: keys are relative and never contain '..'")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_MARK, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        # Walk only below the deepest directory the prefix names.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.exists():
            return []
        keys = []
        for dirpath, dirs, files in os.walk(start):
            if dirpath == str(self.root) and LOCKS.rstrip("/") in dirs:
                dirs.remove(LOCKS.rstrip("/"))
            for name in files:
                if name.startswith(TMP_MARK):
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        import fcntl

        self._path(key)  # the key is valid
        path = self.root / lock_name(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the fd closes, also on kill -9
            yield
        finally:
            os.close(fd)


class MemoryStore(Store):
    """A process-local dict, for tests and scratch work. Named stores are shared in-process."""

    _named: dict[str, dict[str, bytes]] = {}
    _lock = threading.Lock()
    _key_locks: dict[tuple[int, str], threading.Lock] = {}

    def __init__(self, name: str = ""):
        self.uri = f"memory://{name}"
        with self._lock:
            self._data = self._named.setdefault(name, {}) if name else {}

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(data)

    def get(self, key: str) -> bytes:
        with self._lock:
            return self._data[key]

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._data if k.startswith(prefix))

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        with self._lock:
            lk = self._key_locks.setdefault((id(self._data), key), threading.Lock())
        with lk:
            yield
