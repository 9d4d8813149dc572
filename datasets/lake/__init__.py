"""The medallion lake: a fixed partition scheme (``Lake``) over byte stores (``Store``)."""

from datasets.lake._lake import (
    ID_SPACES,
    LAYERS,
    IdSpaceConflictError,
    Lake,
    LakeConflictError,
    LakeError,
    NoDataError,
    Partition,
    WriteResult,
    content_sha256,
    merge_intervals,
    partition_coverage,
)
from datasets.lake._open import open_store
from datasets.lake._store import LocalStore, MemoryStore, Store, StoreError

__all__ = [
    "ID_SPACES",
    "IdSpaceConflictError",
    "merge_intervals",
    "partition_coverage",
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
