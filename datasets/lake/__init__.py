"""The medallion lake: a fixed partition scheme (``Lake``) over byte stores (``Store``)."""

from datasets.lake._lake import (
    LAYERS,
    Lake,
    LakeConflictError,
    LakeError,
    NoDataError,
    Partition,
    WriteResult,
    content_sha256,
)
from datasets.lake._store import LocalStore, MemoryStore, Store, StoreError, open_store

__all__ = [
    "LAYERS",
    "Lake",
    "LakeConflictError",
    "LakeError",
    "NoDataError",
    "Partition",
    "WriteResult",
    "content_sha256",
    "LocalStore",
    "MemoryStore",
    "Store",
    "StoreError",
    "open_store",
]
