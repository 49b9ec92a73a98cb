"""An in-memory store: the reference behaviour of the conformance suite (SPEC.md §9.3).

Records are sealed exactly as on disk (so tamper tests run here too). Transactions are
serialized by one lock and see their own writes; a transaction that raises leaves the store
exactly as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from e2e.errors import StoreError
from e2e.store._core import BaseTransaction, open_checks, overlay
from e2e.store.atrest import StorageKey
from e2e.store.freshness import EpochKeeper, Freshness, MemoryEpochKeeper
from e2e.store.interface import StoreTransaction

__all__ = ["MemoryStore"]

_Key = tuple[str, str]


class _MemoryTransaction(BaseTransaction):
    def __init__(self, key: StorageKey, fresh: Freshness, rows: dict[_Key, bytes]) -> None:
        super().__init__(key, fresh)
        self._rows = rows
        self._writes: dict[_Key, bytes | None] = {}

    def _get(self, kind: str, record_id: str) -> bytes | None:
        k = (kind, record_id)
        if k in self._writes:
            return self._writes[k]
        return self._rows.get(k)

    def _put(self, kind: str, record_id: str, value: bytes) -> None:
        self._writes[(kind, record_id)] = bytes(value)

    def _delete(self, kind: str, record_id: str) -> None:
        self._writes[(kind, record_id)] = None

    def _scan(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        rows = {i: v for (k, i), v in self._rows.items() if k == kind and i.startswith(prefix)}
        return sorted(overlay(rows, self._writes, kind, prefix).items())

    def _lock(self, kind: str, record_id: str) -> None:
        pass  # the whole store is locked for the transaction

    def _insert_new(self, kind: str, record_id: str, value: bytes) -> bool:
        if self._get(kind, record_id) is not None:
            return False
        self._put(kind, record_id, value)
        return True

    def _lock_epoch(self) -> None:
        pass

    def _headers(self) -> list[tuple[str, str, bytes]]:
        skip = {("meta", "kdf"), ("meta", "epoch")}
        return [(k, i, v[:25]) for (k, i), v in self._rows.items() if (k, i) not in skip]

    def _commit(self) -> None:
        self._prepare_commit()
        for k, v in self._writes.items():
            if v is None:
                self._rows.pop(k, None)
            else:
                self._rows[k] = v
        self._writes.clear()
        self._committed()


class MemoryStore:
    """A store in a dict. ``rows`` is exposed for tests (tampering) and nothing else."""

    def __init__(
        self,
        key: StorageKey | bytes | None = None,
        *,
        rows: dict[_Key, bytes] | None = None,
        keeper: EpochKeeper | None = None,
        accept_restore: bool = False,
    ) -> None:
        """A new store, or -- with ``rows`` of another MemoryStore -- the same data reopened
        (the key check then verifies ``key``). ``keeper`` keeps the epoch outside the rows
        (default: a new :class:`MemoryEpochKeeper`; pass the first store's ``keeper`` when
        reopening its rows to have a rollback of them detected). ``accept_restore``: see
        :func:`e2e.store._core.open_checks`."""
        if key is None:
            key = StorageKey.generate()
        self._key = key if isinstance(key, StorageKey) else StorageKey(key)
        self.rows: dict[_Key, bytes] = {} if rows is None else rows
        self.keeper: EpochKeeper = MemoryEpochKeeper() if keeper is None else keeper
        self._fresh = Freshness(self._key, self.keeper)
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._closed = False
        with self._begin() as tx:
            open_checks(tx, accept_restore=accept_restore)

    def __repr__(self) -> str:
        return f"MemoryStore(rows={len(self.rows)})"

    @contextmanager
    def _begin(self) -> Iterator[_MemoryTransaction]:
        if self._closed:
            raise StoreError("store is closed")
        if self._owner == threading.get_ident():
            raise StoreError("nested transaction")
        with self._mutex:
            self._owner = threading.get_ident()
            try:
                tx = _MemoryTransaction(self._key, self._fresh, self.rows)
                yield tx
                tx._commit()
            finally:
                self._owner = None

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """Open a transaction: it commits when the block exits, and rolls back if it raises."""
        return self._begin()

    def close(self) -> None:
        self._closed = True
