"""The embedded default store: one SQLite file (SPEC.md §9.3).

``journal_mode=WAL`` and ``synchronous=FULL`` make every committed transaction survive a
crash of the process or of the machine; every transaction starts with ``BEGIN IMMEDIATE``,
so it holds the write lock from its first read and two processes (or two store objects)
never advance one session concurrently. One :class:`SqliteStore` per thread.

Schema (``PRAGMA user_version`` = 1)::

    CREATE TABLE records (kind TEXT, id TEXT, value BLOB, PRIMARY KEY (kind, id)) WITHOUT ROWID

Every value is sealed by :mod:`e2e.store.atrest` except ``meta/kdf`` (scrypt salt and costs).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from e2e.errors import StoreError
from e2e.store._core import BaseTransaction, DatabaseStore, record_bytes
from e2e.store.atrest import SCRYPT_N, KdfParams, StorageKey
from e2e.store.freshness import EpochKeeper, FileEpochKeeper, Freshness
from e2e.store.interface import fault_point

__all__ = ["SqliteStore", "SCHEMA_VERSION"]

SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID
"""


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """[lo, hi): the ids starting with ``prefix`` in code point (= UTF-8 byte) order."""
    if not prefix:
        return "", None
    last = ord(prefix[-1])
    if last >= 0x10FFFF or 0xD7FF <= last < 0xE000:
        return prefix, None
    return prefix, prefix[:-1] + chr(last + 1)


class _SqliteTransaction(BaseTransaction):
    def __init__(self, key: StorageKey, fresh: Freshness, conn: sqlite3.Connection) -> None:
        super().__init__(key, fresh)
        self.connection = conn

    def _get(self, kind: str, record_id: str) -> bytes | None:
        row = self.connection.execute(
            "SELECT value FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ).fetchone()
        return None if row is None else record_bytes(row[0], kind, record_id)

    def _put(self, kind: str, record_id: str, value: bytes) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO records (kind, id, value) VALUES (?, ?, ?)",
            (kind, record_id, value),
        )

    def _delete(self, kind: str, record_id: str) -> None:
        self.connection.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    def _scan(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        lo, hi = prefix_range(prefix)
        if hi is None:
            rows = self.connection.execute(
                "SELECT id, value FROM records WHERE kind = ? AND id >= ? ORDER BY id", (kind, lo)
            ).fetchall()
        else:
            rows = self.connection.execute(
                "SELECT id, value FROM records WHERE kind = ? AND id >= ? AND id < ? ORDER BY id",
                (kind, lo, hi),
            ).fetchall()
        return [
            (str(i), record_bytes(v, kind, str(i)))
            for i, v in rows
            if isinstance(i, str) and i.startswith(prefix)
        ]

    def _lock(self, kind: str, record_id: str) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's write lock

    def _lock_epoch(self) -> None:
        pass  # the same write lock

    def _headers(self) -> list[tuple[str, str, bytes]]:
        rows = self.connection.execute(
            "SELECT kind, id, substr(value, 1, 25) FROM records "
            "WHERE NOT (kind = 'meta' AND id IN ('kdf', 'epoch'))"
        ).fetchall()
        return [(str(k), str(i), record_bytes(v, str(k), str(i))) for k, i, v in rows]

    def _insert_new(self, kind: str, record_id: str, value: bytes) -> bool:
        cur = self.connection.execute(
            "INSERT INTO records (kind, id, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (kind, record_id, value),
        )
        return cur.rowcount == 1


class SqliteStore(DatabaseStore):
    """A store in one SQLite file, sealed under ``key`` or a key derived from ``passphrase``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: StorageKey | bytes | None = None,
        *,
        passphrase: str | bytes | None = None,
        scrypt_n: int = SCRYPT_N,
        timeout: float = 30.0,
        keeper: EpochKeeper | None = None,
        accept_restore: bool = False,
    ) -> None:
        """Open (or create) the store at ``path``. ``keeper`` keeps the store's epoch outside
        the database (default: a :class:`FileEpochKeeper` at ``<path>-epoch``); opening a
        database behind its keeper, or with a record rolled back or deleted, raises
        :class:`~e2e.errors.RollbackDetected` unless ``accept_restore`` (a backup restored on
        purpose: its sessions must then take a fresh ratchet step before they send)."""
        if (key is None) == (passphrase is None):
            raise StoreError("give exactly one of a storage key and a passphrase")
        super().__init__()
        self.path = os.fspath(path)
        self.keeper = FileEpochKeeper(self.path + "-epoch") if keeper is None else keeper
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {type(exc).__name__}", "sqlite") from None
        self._open(key, passphrase, scrypt_n, accept_restore)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _setup(self) -> None:
        c = self._conn
        try:
            c.execute("PRAGMA journal_mode=WAL").fetchone()
            c.execute("PRAGMA synchronous=FULL")
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"store schema {version} is newer than this code", "sqlite")
            if version == 0:
                with _immediate(c):
                    c.execute(_SCHEMA)
                    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {type(exc).__name__}", "sqlite") from None

    def _kdf_params(self, scrypt_n: int) -> KdfParams:
        c = self._conn
        try:
            with _immediate(c):
                row = c.execute(
                    "SELECT value FROM records WHERE kind = 'meta' AND id = 'kdf'"
                ).fetchone()
                if row is None:
                    params = KdfParams.generate(scrypt_n)
                    c.execute(
                        "INSERT INTO records (kind, id, value) VALUES ('meta', 'kdf', ?)",
                        (params.to_bytes(),),
                    )
                else:
                    params = KdfParams.from_bytes(record_bytes(row[0], "meta", "kdf"))
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {type(exc).__name__}", "meta/kdf") from None
        return params

    def _locked_begin(self) -> Iterator[_SqliteTransaction]:
        c = self._conn
        self._owner = threading.get_ident()
        try:
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin: {exc.__class__.__name__}", "sqlite") from None
            try:
                tx = _SqliteTransaction(self._key, self._fresh, c)
                yield tx
                tx._prepare_commit()
                fault_point("before_commit")
                c.execute("COMMIT")
                tx._committed()
            except sqlite3.Error as exc:
                _rollback(c)
                raise StoreError(f"database error: {type(exc).__name__}", "sqlite") from None
            except BaseException:
                _rollback(c)
                raise
        finally:
            self._owner = None

    def close(self) -> None:
        self._conn.close()
        if isinstance(self.keeper, FileEpochKeeper):
            self.keeper.close()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` around the block: COMMIT when it exits, ROLLBACK if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
