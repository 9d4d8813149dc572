"""Azure Blob Storage (and ADLS Gen2 through its Blob endpoint) as a lake store.

``az://container/prefix`` maps key ``k`` to blob ``prefix/k`` in ``container``. Credentials come
from the environment (or keyword arguments), in this order:

1. ``AZURE_STORAGE_CONNECTION_STRING``;
2. ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` (shared key) or ``AZURE_STORAGE_SAS_TOKEN``;
3. ``AZURE_STORAGE_ACCOUNT`` alone: ``DefaultAzureCredential`` (``az login``, managed identity,
   workload identity, ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET`` ...).

``AZURE_STORAGE_ACCOUNT_URL`` overrides the endpoint (sovereign clouds, private endpoints).
Credentials are never part of :attr:`AzureStore.uri`, ``repr`` or error messages.

Atomicity: a put stages the data as uncommitted blocks under the final blob name and then commits
the block list in one ``Put Block List`` call; small objects go in one ``Put Blob`` call. Both are
single requests that replace the blob in one step, so a reader sees the old blob, the new one or
none, and a writer that dies before the commit leaves no visible blob (the service drops
uncommitted blocks after a week, or at the next commit on that name). See docs/azure.md.

Locks (``lock(key)``): a 60 s lease on the empty blob ``.locks/<hash>.lock``, renewed every 20 s
while held and released at the end; a writer that dies stops renewing, so its lock frees itself
within 60 s. Waiting longer than ``lock_timeout_s`` (default 600) raises :class:`StoreError`.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import contextlib
import hashlib
import os
import threading
import time
import uuid
from typing import Iterable, Iterator, Mapping

from datasets.lake._store import LOCKS, Store, StoreError, lock_name

__all__ = ["AzureStore", "parse_az_uri"]

MiB = 1024 * 1024


def parse_az_uri(uri: str) -> tuple[str | None, str, str]:
    """Split a lake URI into ``(account or None, container, prefix)``.

    Accepted: ``az://container/prefix``, ``az://container``, and the ADLS Gen2 forms
    ``abfs[s]://container@account.dfs.core.windows.net/prefix``.
    """
    for scheme in ("az://", "abfss://", "abfs://"):
        if uri.startswith(scheme):
            rest = uri[len(scheme) :]
            break
    else:
        raise StoreError(f"not an Azure lake URI: {uri!r}; expected az://container/prefix")
    head, _, prefix = rest.partition("/")
    account = None
    if "@" in head:
        head, _, host = head.partition("@")
        account = host.split(".", 1)[0] or None
    container = head
    # Container names: 3-63 chars, lower-case letters, digits and single hyphens.
    ok = 3 <= len(container) <= 63 and all(c.islower() or c.isdigit() or c == "-" for c in container)
    if not ok or container.startswith("-") or container.endswith("-") or "--" in container:
        raise StoreError(
            f"invalid container name {container!r} in {uri!r}: Azure wants 3-63 lower-case letters, "
            "digits and single hyphens, e.g. az://lake/whale"
        )
    return account, container, prefix.strip("/")


def _safe_error(exc: BaseException) -> str:
    """Describe an SDK error by status and code only: messages can echo request URLs (SAS)."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    bits = [type(exc).__name__]
    if status:
        bits.append(f"HTTP {status}")
    if code:
        bits.append(str(code))
    return " ".join(bits)


class AzureStore(Store):
    """Blobs in one container under a prefix; atomic puts by committed block lists.

    Args:
        container: container name (created on the first write if missing).
        prefix: folder inside the container (no leading or trailing ``/``).
        connection_string, account, key, sas_token, credential, account_url: explicit
            credentials; anything not given is read from ``env`` as described in the module doc.
        env: where to read ``AZURE_STORAGE_*`` (default ``os.environ``).
        block_size: bytes per staged block for large objects.
        max_concurrency: blocks staged in parallel (bounds memory to about this many blocks).
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        connection_string: str | None = None,
        account: str | None = None,
        key: str | None = None,
        sas_token: str | None = None,
        credential: object | None = None,
        account_url: str | None = None,
        env: Mapping[str, str] | None = None,
        block_size: int = 8 * MiB,
        max_concurrency: int = 4,
    ):
        env = os.environ if env is None else env
        self.container = container
        self.prefix = prefix.strip("/")
        self.uri = f"az://{container}/{self.prefix}" if self.prefix else f"az://{container}"
        self.block_size = int(block_size)
        self.max_concurrency = max(1, int(max_concurrency))
        self._service = self._make_service(
            connection_string=connection_string or env.get("AZURE_STORAGE_CONNECTION_STRING"),
            account=account or env.get("AZURE_STORAGE_ACCOUNT"),
            key=key or env.get("AZURE_STORAGE_KEY"),
            sas_token=sas_token or env.get("AZURE_STORAGE_SAS_TOKEN"),
            credential=credential,
            account_url=account_url or env.get("AZURE_STORAGE_ACCOUNT_URL"),
        )
        self.account = self._service.account_name
        self._client = self._service.get_container_client(container)
        self._container_checked = False

    @classmethod
    def from_uri(cls, uri: str, **kwargs) -> "AzureStore":
        """Open ``az://container/prefix`` (or an ``abfs[s]://`` URI) with credentials from the environment."""
        account, container, prefix = parse_az_uri(uri)
        if account and not kwargs.get("account"):
            kwargs["account"] = account
        return cls(container, prefix, **kwargs)

    @staticmethod
    def _make_service(*, connection_string, account, key, sas_token, credential, account_url):
        from azure.storage.blob import BlobServiceClient

        opts = dict(retry_total=5, connection_timeout=20, read_timeout=120, logging_enable=False)
        if connection_string:
            try:
                return BlobServiceClient.from_connection_string(connection_string, **opts)
            except ValueError:
                # The SDK's message can quote the string; say only what is wrong with it.
                raise StoreError(
                    "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string; copy it from "
                    "the portal (Storage account > Access keys) or unset it to use another method"
                ) from None
        if not account:
            raise StoreError(
                "an az:// lake needs credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY (or AZURE_STORAGE_SAS_TOKEN), or "
                "AZURE_STORAGE_ACCOUNT alone to sign in with DefaultAzureCredential (az login, "
                "managed identity)"
            )
        url = account_url or f"https://{account}.blob.core.windows.net"
        if credential is None:
            if key:
                from azure.core.credentials import AzureNamedKeyCredential

                credential = AzureNamedKeyCredential(account, key)
            elif sas_token:
                credential = sas_token.lstrip("?")
            else:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
        return BlobServiceClient(url, credential=credential, **opts)

    # ---------------------------------------------------------------- helpers
    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"invalid key {key!r}: keys are relative and never contain '..'")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _blob(self, key: str):
        return self._client.get_blob_client(self._name(key))

    def append_client(self, key: str):
        """The client of an append blob at ``key``, created (with its container) if absent.

        For append-only logs such as the live journal's copy; not part of the Store contract.
        """
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        self._ensure_container()
        blob = self._blob(key)
        try:
            blob.create_append_blob(if_none_match="*")
        except ResourceExistsError:
            pass  # appending to the existing journal copy
        except HttpResponseError as exc:
            if exc.status_code not in (409, 412):
                raise self._wrap("create append blob", key, exc) from None
        return blob

    def _ensure_container(self) -> None:
        if self._container_checked:
            return
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        try:
            self._client.create_container()
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code == 403 and self._client.exists():
                pass  # may write blobs but not create containers: fine, it is there
            elif exc.status_code == 403:
                raise StoreError(
                    f"container {self.container!r} does not exist in account {self.account!r} and "
                    f"these credentials may not create it ({_safe_error(exc)}); create it in the "
                    "portal or `az storage container create`, or grant the role 'Storage Blob Data "
                    "Contributor' on the account"
                ) from None
            else:
                raise StoreError(f"could not create container {self.container!r}: {_safe_error(exc)}") from None
        self._container_checked = True

    def _wrap(self, what: str, key: str, exc: BaseException) -> StoreError:
        from azure.core.exceptions import ClientAuthenticationError

        hint = ""
        if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
            hint = (
                "; signing in failed (DefaultAzureCredential found no usable identity): run "
                "`az login`, use a managed identity, or set AZURE_STORAGE_KEY or "
                "AZURE_STORAGE_CONNECTION_STRING"
            )
        elif getattr(exc, "status_code", None) == 403:
            hint = "; the credentials lack permission (needs 'Storage Blob Data Contributor' to write)"
        return StoreError(f"{what} {self.uri}/{key} failed: {_safe_error(exc)}{hint}")

    # ---------------------------------------------------------------- Store API
    def put(self, key: str, data: bytes) -> None:
        data = bytes(data)
        if len(data) <= self.block_size:
            self._with_container(lambda: self._put_single(key, data), "write", key)
        else:
            self.put_stream(key, (data[i : i + self.block_size] for i in range(0, len(data), self.block_size)))

    def _put_single(self, key: str, data: bytes) -> None:
        self._blob(key).upload_blob(
            data,
            overwrite=True,
            validate_content=True,
            metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def _with_container(self, fn, what: str, key: str):
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        self._ensure_container()
        try:
            return fn()
        except ResourceNotFoundError:
            # Container deleted since we checked: create it once more and retry.
            self._container_checked = False
            self._ensure_container()
            try:
                return fn()
            except HttpResponseError as exc:
                raise self._wrap(what, key, exc) from None
        except HttpResponseError as exc:
            raise self._wrap(what, key, exc) from None

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        """Write an object from an iterable of byte chunks, atomically.

        Chunks are regrouped into ``block_size`` blocks, staged (up to ``max_concurrency`` in
        flight) and committed in one call at the end. If the iterable raises or the process
        dies, the commit never happens and nothing becomes visible under ``key``.
        """
        from azure.storage.blob import BlobBlock

        blob = self._blob(key)
        tag = uuid.uuid4().hex
        sha = hashlib.sha256()
        ids: list[str] = []

        def stage(block_id: str, block: bytes) -> None:
            blob.stage_block(block_id, block, validate_content=True)

        def blocks() -> Iterator[bytes]:
            buf = bytearray()
            for chunk in chunks:
                buf += chunk
                while len(buf) >= self.block_size:
                    yield bytes(buf[: self.block_size])
                    del buf[: self.block_size]
            if buf:
                yield bytes(buf)

        def run() -> None:
            with cf.ThreadPoolExecutor(self.max_concurrency) as pool:
                pending: set[cf.Future] = set()
                try:
                    for block in blocks():
                        sha.update(block)
                        # Same length for every id of a blob, as the service requires.
                        block_id = base64.b64encode(f"{tag}-{len(ids):08d}".encode()).decode()
                        ids.append(block_id)
                        pending.add(pool.submit(stage, block_id, block))
                        if len(pending) >= self.max_concurrency:
                            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                            for f in done:
                                f.result()
                    for f in cf.as_completed(pending):
                        f.result()
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
            blob.commit_block_list([BlobBlock(block_id=i) for i in ids], metadata={"sha256": sha.hexdigest()})

        from azure.core.exceptions import HttpResponseError

        self._ensure_container()
        try:
            run()
        except HttpResponseError as exc:
            raise self._wrap("write", key, exc) from None

    def get(self, key: str) -> bytes:
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

        from datasets._retry import retry

        def read() -> bytes:
            return self._blob(key).download_blob(max_concurrency=self.max_concurrency).readall()

        try:
            # Replaced between two ranged reads (the SDK pins the ETag): read the new one.
            return retry(read, retries=2, delay=lambda i, _: 0.0, retry_on=(ResourceModifiedError,))
        except ResourceNotFoundError:
            raise KeyError(key) from None
        except ResourceModifiedError:
            raise
        except HttpResponseError as exc:
            raise self._wrap("read", key, exc) from None

    def exists(self, key: str) -> bool:
        from azure.core.exceptions import HttpResponseError

        try:
            return self._blob(key).exists()
        except HttpResponseError as exc:
            raise self._wrap("look up", key, exc) from None

    def list(self, prefix: str = "") -> list[str]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        try:
            for b in self._client.list_blobs(name_starts_with=base + prefix, include=["metadata"]):
                # ADLS Gen2 (hierarchical namespace) lists directories as empty marker blobs.
                if (b.metadata or {}).get("hdi_isfolder") == "true" or b.name.startswith(base + LOCKS):
                    continue
                keys.append(b.name[len(base) :])
        except ResourceNotFoundError:
            return []  # no container yet: nothing stored
        except HttpResponseError as exc:
            raise self._wrap("list", prefix, exc) from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            raise self._wrap("delete", key, exc) from None

    def size(self, key: str) -> int:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            return int(self._blob(key).get_blob_properties().size)
        except ResourceNotFoundError:
            raise KeyError(key) from None
        except HttpResponseError as exc:
            raise self._wrap("look up", key, exc) from None

    lock_timeout_s: float = 600.0
    LEASE_S = 60

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        self._name(key)  # the key is valid
        name = lock_name(key)
        blob = self._blob(name)

        def create() -> None:
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass

        self._with_container(create, "create lock", name)
        deadline, wait = time.monotonic() + self.lock_timeout_s, 0.05
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=self.LEASE_S)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409: another writer holds the lease
                    raise self._wrap("lock", key, exc) from None
            if time.monotonic() > deadline:
                raise StoreError(
                    f"could not lock {self.uri}/{key} within {self.lock_timeout_s:.0f} s: another writer holds it; "
                    "try again when it has finished"
                )
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.LEASE_S / 3):
                try:
                    lease.renew()
                except HttpResponseError:
                    return

        keeper = threading.Thread(target=renew, name=f"lease {name}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()
            try:
                lease.release()
            except HttpResponseError:
                pass  # expired already: free anyway

    def uncommitted_blocks(self, key: str) -> int:
        """Number of staged, uncommitted blocks under ``key`` (what an interrupted put leaves)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            _committed, uncommitted = self._blob(key).get_block_list("uncommitted")
        except ResourceNotFoundError:
            return 0
        return len(uncommitted)

    def close(self) -> None:
        self._service.close()
