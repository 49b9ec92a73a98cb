"""SQLite relay store: one file, durable commits (SPEC.md §10.8).

WAL journal with ``synchronous=FULL``: a commit is on disk before the relay answers. Writers
take the database lock at the start of each transaction (``BEGIN IMMEDIATE``), so a policy
decision and its writes are one serial step even with several relay processes on one file
(they wait up to ``busy_timeout`` for each other). Mail wake-ups do not cross processes here;
waiters in other processes see new mail at their next poll.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from e2e.errors import StoreError
from e2e.relay.store import SCHEMA, RelayStore, SqlTx, Tx

__all__ = ["SqliteRelayStore"]


class _SqliteTx(SqlTx):
    def __init__(self, cursor: object) -> None:
        super().__init__(cursor)
        self.woken: list[tuple[bytes, int]] = []

    def notify(self, account: bytes, device_id: int) -> None:
        self.woken.append((account, device_id))

    def claim_prekey(self, account: bytes, device_id: int) -> bytes | None:
        row = self.fetchone(
            "UPDATE prekeys SET claimed = 1 WHERE rowid = (SELECT rowid FROM prekeys"
            " WHERE account = ? AND device_id = ? AND claimed = 0 ORDER BY prekey_id LIMIT 1)"
            " RETURNING bundle",
            (account, device_id),
        )
        return None if row is None else bytes(row[0])

    def insert_mail(self, account: bytes, device_id: int, envelope: bytes, received_at: int,
                    tag: bytes) -> int:  # fmt: skip
        row = self.fetchone(
            "INSERT INTO mailbox (account, device_id, envelope, received_at, tag)"
            " VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (account, device_id, envelope, received_at, tag),
        )
        assert row is not None
        return int(row[0])


class SqliteRelayStore(RelayStore):
    """The embedded default. One connection per process, used by one thread at a time."""

    def __init__(self, path: str, busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            for stmt in SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT").split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open relay database: {type(exc).__name__}") from None
        self._lock = threading.Lock()
        self._wake: Callable[[bytes, int], None] | None = None

    def listen(self, wake: Callable[[bytes, int], None]) -> None:
        self._wake = wake

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"relay database busy: {type(exc).__name__}") from None
            tx = _SqliteTx(cur)
            try:
                yield tx
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"relay database error: {type(exc).__name__}") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"relay commit failed: {type(exc).__name__}") from None
        wake = self._wake
        if wake is not None:
            for account, device_id in tx.woken:
                wake(account, device_id)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
