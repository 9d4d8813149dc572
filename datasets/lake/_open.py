"""The store factory: a lake URI to its backend.

It sits above the backends (``_store`` for local and memory, ``_azure`` for Azure Blob) so that
no backend imports another; the Azure SDK is imported only when an ``az://`` URI is opened.
"""

from __future__ import annotations

import os

from datasets.lake._store import LocalStore, MemoryStore, Store, StoreError

__all__ = ["open_store"]


def open_store(uri: str | os.PathLike[str]) -> Store:
    """Open a store from a URI.

    ``results/lake`` or ``file:///abs/path`` → :class:`LocalStore`; ``memory://name`` →
    :class:`MemoryStore`; ``az://container/prefix`` → the Azure Blob backend.
    """
    text = os.fspath(uri)
    if text.startswith("memory://"):
        return MemoryStore(text[len("memory://") :])
    if text.startswith("az://") or text.startswith("abfs://") or text.startswith("abfss://"):
        from datasets.lake._azure import AzureStore  # lazy: azure SDK only when used

        return AzureStore.from_uri(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        raise StoreError(
            f"unsupported lake URI {text!r}: use a local path, file://, memory://NAME or az://container/prefix"
        )
    return LocalStore(text)
