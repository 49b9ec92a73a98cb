"""SQLite relay store: one file, durable commits, group commit (SPEC.md §10.8).

WAL journal with ``synchronous=FULL``: a commit is on disk before the relay answers. Writers
take the database lock at the start of each transaction (``BEGIN IMMEDIATE``), so a policy
decision and its writes are one serial step even with several relay processes on one file.
Relay processes take turns through an exclusive ``flock`` on ``<db>-writer`` before that (a
blocked process is woken as soon as the lock is free; SQLite's busy handler, still the
fallback for other writers, would poll).

Group commit: one writer thread runs the queued requests of a process, each in its own
``SAVEPOINT`` (a refused request rolls back to it and leaves no trace), inside one transaction,
and commits them together with one fsync; only then does any of them get its answer. Mail
wake-ups do not cross processes here; waiters in other processes see new mail at their next poll.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from e2e.errors import StoreError
from e2e.relay.store import SCHEMA, Job, RelayStore, SqlTx, Tx, drain, finish_jobs

__all__ = ["SqliteRelayStore"]

T = TypeVar("T")
#: Most requests committed together.
MAX_GROUP: Final = 64


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

    def insert_mail(
        self, account: bytes, device_id: int, envelope: bytes, received_at: int, tag: bytes
    ) -> int:
        row = self.fetchone(
            "INSERT INTO mailbox (account, device_id, envelope, received_at, tag)"
            " VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (account, device_id, envelope, received_at, tag),
        )
        assert row is not None
        return int(row[0])


class SqliteRelayStore(RelayStore):
    """The embedded default. One connection per process, used by one writer thread."""

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
        self._lockfile: int | None = None
        if path != ":memory:" and not path.startswith("file:"):
            try:
                self._lockfile = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open relay lock file: {type(exc).__name__}") from None
        self._wake: Callable[[Sequence[tuple[bytes, int]]], None] | None = None
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="relay-sqlite", daemon=True)
        self._writer.start()

        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []

    def listen(self, wake: Callable[[Sequence[tuple[bytes, int]]], None]) -> None:
        self._wake = wake

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run a read-only ``fn`` on this thread's reader connection (WAL: readers do not wait
        for the writer, and see only committed data)."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only = 1")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open relay database: {type(exc).__name__}") from None
            self._readers.conn = conn
            with self._lock:
                self._all_readers.append(conn)
        cur = conn.cursor()
        try:
            cur.execute("BEGIN")
            try:
                return fn(_SqliteTx(cur))
            finally:
                cur.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(f"relay database error: {type(exc).__name__}") from None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A transaction of its own (not grouped): for maintenance and tests."""
        with self._write_lock():
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
        self._woke(tx.woken)

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """This process's turn to write: the connection's thread lock, then an exclusive
        ``flock`` on ``<db>-writer`` shared by every relay process on the file. The kernel
        hands that lock to a waiting process the moment it is released, where SQLite's own
        busy handler would poll with growing sleeps (seconds of tail latency with two
        processes). The kernel drops it if the holder dies."""
        with self._lock:
            if self._lockfile is None:
                yield
                return
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)

    def _woke(self, woken: list[tuple[bytes, int]]) -> None:
        wake = self._wake
        if wake is not None and woken:
            wake(woken)

    def run(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in its own savepoint of the next group transaction; its result once
        that transaction is durably committed (or its error, having changed nothing)."""
        fut: Future[Any] = Future()
        self._queue.put((fn, fut))
        result: T = fut.result()
        return result

    async def run_async(self, fn: Callable[[Tx], T], executor: Executor | None = None) -> T:
        """As :meth:`run`, awaited: the writer thread settles the whole group's futures with
        one call onto the loop, and no other thread waits for the commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, (loop, fut)))
        return await fut

    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            drain(self._queue, jobs, MAX_GROUP)
            self._run_group(jobs)

    def _run_group(self, jobs: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        woken: list[tuple[bytes, int]] = []
        with self._write_lock():
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                err = StoreError(f"relay database busy: {type(exc).__name__}")
                finish_jobs(jobs, [(False, err)] * len(jobs))
                return
            for fn, _ in jobs:
                tx = _SqliteTx(cur)
                try:
                    cur.execute("SAVEPOINT req")
                    result = fn(tx)
                    cur.execute("RELEASE req")
                    outcomes.append((True, result))
                    woken += tx.woken
                except BaseException as exc:  # handed to the caller below
                    try:
                        cur.execute("ROLLBACK TO req")
                        cur.execute("RELEASE req")
                    except sqlite3.Error:
                        pass
                    if isinstance(exc, sqlite3.Error):
                        exc = StoreError(f"relay database error: {type(exc).__name__}")
                    outcomes.append((False, exc))
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                err = StoreError(f"relay commit failed: {type(exc).__name__}")
                finish_jobs(jobs, [(False, err)] * len(jobs))
                return
        self._woke(woken)
        finish_jobs(jobs, outcomes)

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10)
        with self._lock:
            self._conn.close()
            for conn in self._all_readers:
                conn.close()
            if self._lockfile is not None:
                os.close(self._lockfile)
                self._lockfile = None
