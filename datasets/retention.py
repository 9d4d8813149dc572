"""Retention: delete or archive old raw files and bronze partitions, never what a model needs.

Plan first, act second: :func:`plan_retention` is pure listing and decides, per key, ``delete``,
``archive``, ``keep-protected`` or ``keep-undated``; :func:`apply_retention` carries a plan out,
archiving as copy → verify (SHA-256 of what the target returns) → delete, one key at a time, so
an interrupted run leaves every key either in its place or safely in the archive (running again
finishes the job).

Protection file ``registry/protected.json`` in the lake (written by the model registry through
:func:`protect`; format in docs/azure.md)::

    {"version": 1,
     "runs": [{"run_id": "3f2a...", "model": "models:/plant-whale/3", "added_at": "...",
               "keys": ["bronze/exchange=binance_usdm/symbol=PLANTUSDT/date=2024-03-01/part-0.parquet"],
               "prefixes": []}]}

A key is protected if it is listed in any run's ``keys`` or starts with one of its ``prefixes``.
"""

from __future__ import annotations

from whalebt.errors import UserError
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from datasets.lake import Lake, LakeError, Store, open_store
from datasets.lake._keys import key_date, quality_key

__all__ = [
    "PROTECTED_KEY",
    "RetainAction",
    "RetainResult",
    "Protection",
    "load_protection",
    "protect",
    "unprotect",
    "key_date",
    "plan_retention",
    "apply_retention",
]

PROTECTED_KEY = "registry/protected.json"
PROTECTED_VERSION = 1


@dataclass(frozen=True)
class Protection:
    """The keys and prefixes that retention must not touch, with the runs that need them."""

    keys: dict[str, list[str]] = field(default_factory=dict)  # key → run ids
    prefixes: dict[str, list[str]] = field(default_factory=dict)

    def runs_for(self, key: str) -> list[str]:
        runs = list(self.keys.get(key, []))
        for pre, ids in self.prefixes.items():
            if key.startswith(pre):
                runs.extend(ids)
        return sorted(set(runs))


def _load_doc(lake: Lake) -> dict:
    try:
        raw = lake.store.get(PROTECTED_KEY)
    except KeyError:
        return {"version": PROTECTED_VERSION, "runs": []}
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
            raise UserError("expected an object with a 'runs' list")
        for r in doc["runs"]:
            if (
                not isinstance(r, dict)
                or not isinstance(r.get("keys", []), list)
                or not isinstance(r.get("prefixes", []), list)
            ):
                raise UserError(f"each run needs 'keys' (and optional 'prefixes') lists; got {str(r)[:120]}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise LakeError(
            f"{lake.uri}/{PROTECTED_KEY} cannot be read ({exc}); retention refuses to guess what is "
            "protected. Fix the file (format in docs/azure.md) or restore it from the registry"
        ) from None
    return doc


def load_protection(lake: Lake) -> Protection:
    """Read ``registry/protected.json`` (an absent file protects nothing; a broken one is an error)."""
    prot = Protection()
    for run in _load_doc(lake)["runs"]:
        rid = str(run.get("run_id", "?"))
        for k in run.get("keys", []):
            prot.keys.setdefault(str(k), []).append(rid)
        for pre in run.get("prefixes", []):
            prot.prefixes.setdefault(str(pre), []).append(rid)
    return prot


def protect(
    lake: Lake, keys: Iterable[str], run_id: str, *, model: str | None = None, prefixes: Iterable[str] = ()
) -> None:
    """Record that run ``run_id`` (of ``model``) depends on ``keys``; replaces that run's entry.

    ``keys`` are what :func:`datasets.quality.lineage` returns as ``key``.
    """
    doc = _load_doc(lake)
    runs = [r for r in doc["runs"] if r.get("run_id") != run_id]
    runs.append(
        {
            "run_id": run_id,
            "model": model,
            "added_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "keys": sorted(set(keys)),
            "prefixes": sorted(set(prefixes)),
        }
    )
    doc = {"version": PROTECTED_VERSION, "runs": sorted(runs, key=lambda r: str(r.get("run_id")))}
    lake.store.put(PROTECTED_KEY, json.dumps(doc, indent=1).encode())


def unprotect(lake: Lake, run_id: str) -> bool:
    """Drop run ``run_id``'s entry; True if there was one."""
    doc = _load_doc(lake)
    runs = [r for r in doc["runs"] if r.get("run_id") != run_id]
    if len(runs) == len(doc["runs"]):
        return False
    lake.store.put(PROTECTED_KEY, json.dumps({"version": PROTECTED_VERSION, "runs": runs}, indent=1).encode())
    return True


@dataclass(frozen=True)
class RetainAction:
    key: str
    day: dt.date | None
    action: str  # "delete" | "archive" | "keep-protected" | "keep-undated"
    runs: tuple[str, ...] = ()  # protecting runs
    extra: tuple[str, ...] = ()  # keys that go with it (a partition's quality report)


def plan_retention(
    lake: Lake,
    layer: str,
    older_than_days: int,
    *,
    today: dt.date | None = None,
    archive: bool = False,
    force: bool = False,
    exchange: str | None = None,
    symbol: str | None = None,
) -> list[RetainAction]:
    """Decide what happens to each ``layer`` key older than ``older_than_days`` (by its date).

    Keys dated on or after ``today - older_than_days`` are not listed. ``force`` turns
    ``keep-protected`` into ``delete``/``archive``.
    """

    if layer not in ("raw", "bronze"):
        raise LakeError(
            f"retention works on the raw and bronze layers; got {layer!r} "
            "(silver and gold are rebuilt from bronze: delete them with the store's tools)"
        )
    if older_than_days < 1:
        raise LakeError(f"--older-than must be at least 1 day; got {older_than_days}")
    today = today or dt.datetime.now(dt.timezone.utc).date()
    cutoff = today - dt.timedelta(days=older_than_days)
    prot = load_protection(lake)
    go = "archive" if archive else "delete"
    out: list[RetainAction] = []
    if layer == "bronze":
        for p in lake.partitions("bronze", exchange, symbol):
            if p.date >= cutoff:
                continue
            runs = prot.runs_for(p.key)
            act = "keep-protected" if runs and not force else go
            out.append(RetainAction(p.key, p.date, act, tuple(runs), (quality_key(p),)))
    else:
        for key in lake.store.list("raw/"):
            day = key_date(key)
            if exchange and f"/{exchange}" not in key and not key.startswith(f"raw/{exchange}"):
                continue
            if symbol and symbol.upper() not in key.upper():
                continue
            if day is None:
                out.append(RetainAction(key, None, "keep-undated"))
                continue
            if day >= cutoff:
                continue
            runs = prot.runs_for(key)
            out.append(RetainAction(key, day, "keep-protected" if runs and not force else go, tuple(runs)))
    return out


@dataclass
class RetainResult:
    deleted: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    bytes: int = 0


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def apply_retention(
    lake: Lake,
    plan: list[RetainAction],
    *,
    archive_to: str | Store | None = None,
    progress: bool = True,
) -> RetainResult:
    """Carry out ``plan``: delete, or copy → verify → delete for ``archive``.

    A key whose archive copy already exists with *other* content is not deleted and is reported
    as failed (the archive keeps its copy); an identical copy counts as archived.
    """
    target: Store | None = None
    if any(a.action == "archive" for a in plan):
        if archive_to is None:
            raise LakeError("the plan archives keys but no --archive-to target was given")
        target = archive_to if isinstance(archive_to, Store) else open_store(archive_to)
        if target.uri == lake.store.uri:
            raise LakeError(f"--archive-to {target.uri} is the lake itself; archive to another place")
    res = RetainResult()
    todo = [a for a in plan if a.action in ("delete", "archive")]
    it: Iterable[RetainAction] = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="retain", unit="key", leave=False)
    for a in it:
        try:
            if a.action == "archive":
                assert target is not None
                data = lake.store.get(a.key)
                if target.exists(a.key):
                    if _sha(target.get(a.key)) != _sha(data):
                        res.failed.append((a.key, f"{target.uri}/{a.key} exists with other content; kept both"))
                        continue
                else:
                    target.put(a.key, data)
                if _sha(target.get(a.key)) != _sha(data):
                    res.failed.append((a.key, "archive copy does not read back identical; kept the original"))
                    continue
                res.archived.append(a.key)
                res.bytes += len(data)
            else:
                try:
                    res.bytes += lake.store.size(a.key)
                except KeyError:
                    pass
                res.deleted.append(a.key)
            lake.store.delete(a.key)
            for k in a.extra:
                lake.store.delete(k)
        except KeyError:
            continue  # gone since the plan was made: nothing to do
    return res
