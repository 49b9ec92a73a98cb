"""SQLite relay store: one file, durable commits, group commit (SPEC.md §10.8).

WAL journal with ``synchronous=FULL``: a commit is on disk before the relay answers. Writers
take the database lock at the start of each transaction (``BEGIN IMMEDIATE``), so a policy
decision and its writes are one serial step even with several relay processes on one file.
Relay processes take turns through an exclusive ``flock`` on ``<db>-writer`` before that (a
blocked process is woken as soon as the lock is free; SQLite's busy handler, still the
fallback for other writers, would poll).

Group commit: queued requests run in one transaction, each in its own ``SAVEPOINT`` (a
refused request rolls back to it and leaves no trace), committed together with one fsync; only
then does any of them get its answer. Requests awaited on an event loop form their groups on
that loop (:meth:`SqliteRelayStore.run_async`); requests from other threads go to a writer
thread. The writer's connection caches the directory and chats (:class:`_Cache`). Mail
wake-ups do not cross processes here; each process's mail watch (:meth:`RelayApp._watch_mail`)
finds other processes' deliveries.
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

from e2e.errors import StoreError, StoreUnavailable
from e2e.platform.policy import ChatState
from e2e.relay.schema import ADDED_COLUMNS, SCHEMA
from e2e.relay.store import RelayStore, Tx
from e2e.relay.writer import (
    CACHE_ENTRIES,
    DIRECTORY_GENERATION,
    DIRECTORY_TABLES,
    CachedDirectory,
    DirectoryCache,
    Job,
    SqlTx,
    drain,
    finish_jobs,
    settle,
)

__all__ = ["SqliteRelayStore"]

T = TypeVar("T")
#: Counts changes of the directory (see :class:`~e2e.relay.store.DirectoryCache`), once per
#: directory table and kind of change.
_DIRECTORY_TRIGGER: Final = (
    "CREATE TRIGGER IF NOT EXISTS e2e_directory_{table}_{op} AFTER {op} ON {table}"
    " BEGIN UPDATE relay_meta SET value = value + 1 WHERE key = 'directory'; END"
)
#: Most requests committed together.
MAX_GROUP: Final = 64
#: The chat counts the chats table stores.
_COUNTS: Final = ("customer", "business", "customer_receipts", "business_receipts")


class _Cache(DirectoryCache):
    """The writer's :class:`DirectoryCache`, and the chats as it last read or wrote them:
    those are valid while no other connection has written to the file. Each group starts by
    reading ``PRAGMA data_version``, which changes exactly when another connection has
    committed; if it moved, the chats go, and the directory's generation row is read."""

    __slots__ = ("version", "chats")

    def __init__(self) -> None:
        super().__init__()
        self.version = -1
        self.chats: dict[tuple[bytes, bytes], ChatState | None] = {}

    def clear(self) -> None:
        super().clear()
        self.version = -1
        self.chats.clear()

    def check(self, cur: sqlite3.Cursor) -> None:
        """At the start of a write transaction (holding the write lock): drop what another
        connection may have changed."""
        version = cur.execute("PRAGMA data_version").fetchone()[0]
        if len(self.chats) > CACHE_ENTRIES:
            self.chats.clear()
        if version == self.version:
            return
        self.chats.clear()
        self.version = version
        row = cur.execute(DIRECTORY_GENERATION).fetchone()
        self.check_generation(0 if row is None else int(row[0]))


def _copy_chat(c: ChatState) -> ChatState:
    """A copy of ``c`` as reading it back from the chats table gives it (only the counts of
    :data:`_COUNTS` are stored), sharing nothing mutable with it."""
    counts = {k: c.counts.get(k, 0) for k in _COUNTS}
    return ChatState(c.last_customer_message, bool(c.blocked), bool(c.limited),
                     bool(c.opted_in), list(c.template_times), c.spam_reports,
                     counts, bool(c.blocked_customer), c.entry_until)  # fmt: skip


class _SqliteTx(CachedDirectory, SqlTx):
    def __init__(self, cursor: object, cache: _Cache | None = None) -> None:
        super().__init__(cursor)
        self.woken: list[tuple[bytes, int]] = []
        self.cache: _Cache = cache or _Cache()

    def notify(self, account: bytes, device_id: int) -> None:
        self.woken.append((account, device_id))

    def chat(self, business: bytes, customer: bytes) -> ChatState | None:
        chats = self.cache.chats
        key = (business, customer)
        if key not in chats:
            chats[key] = super().chat(business, customer)
        chat = chats[key]
        return None if chat is None else _copy_chat(chat)

    def put_chat(self, business: bytes, customer: bytes, chat: ChatState) -> None:
        self.cache.chats.pop((business, customer), None)
        super().put_chat(business, customer, chat)
        self.cache.chats[(business, customer)] = _copy_chat(chat)

    # -- backend statements ---------------------------------------------------------------

    def claim_prekey(self, account: bytes, device_id: int) -> bytes | None:
        row = self.fetchone(
            "UPDATE prekeys SET claimed = 1 WHERE rowid = (SELECT rowid FROM prekeys"
            " WHERE account = ? AND device_id = ? AND claimed = 0 ORDER BY prekey_id LIMIT 1)"
            " RETURNING bundle",
            (account, device_id),
        )
        return None if row is None else bytes(row[0])


class SqliteRelayStore(RelayStore):
    """The embedded default. One write connection per process, used by one group at a time
    (on an event loop, or on the writer thread), and a reader connection per thread."""

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
            for table, column, decl in ADDED_COLUMNS:
                have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            for table in DIRECTORY_TABLES:
                for op in ("INSERT", "UPDATE", "DELETE"):
                    trigger = _DIRECTORY_TRIGGER.replace("{op}", op).replace("{table}", table)
                    self._conn.execute(trigger)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open relay database: {type(exc).__name__}") from None
        self._lock = threading.Lock()
        self._cache = _Cache()
        self._lockfile: int | None = None
        if path != ":memory:" and not path.startswith("file:"):
            try:
                self._lockfile = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open relay lock file: {type(exc).__name__}") from None
        self._wake: Callable[[Sequence[tuple[bytes, int]]], None] | None = None
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._on_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable[[Tx], Any], Any]]] = {}
        self._flushers: set[asyncio.Task[None]] = set()
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
            raise StoreUnavailable(f"relay database error: {type(exc).__name__}") from None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A transaction of its own (not grouped): for maintenance and tests."""
        with self._write_lock():
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"relay database busy: {type(exc).__name__}") from None
            self._cache.check(cur)
            tx = _SqliteTx(cur, self._cache)
            try:
                yield tx
            except sqlite3.Error as exc:
                self._cache.clear()
                self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"relay database error: {type(exc).__name__}") from None
            except BaseException:
                self._cache.clear()
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._cache.clear()
                self._conn.execute("ROLLBACK")
                raise StoreUnavailable(f"relay commit failed: {type(exc).__name__}") from None
        self._woke(tx.woken)

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """This process's turn to write (see :meth:`_acquire`), for the length of a block."""
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        """Take this process's turn to write: the connection's thread lock, then an exclusive
        ``flock`` on ``<db>-writer`` shared by every relay process on the file. The kernel
        hands that lock to a waiting process the moment it is released, where SQLite's own
        busy handler would poll with growing sleeps (seconds of tail latency with two
        processes). The kernel drops it if the holder dies."""
        self._lock.acquire()
        if self._lockfile is not None:
            try:
                fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise

    def _release(self) -> None:
        if self._lockfile is not None:
            fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        self._lock.release()

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

    async def run_async(self, fn: Callable[[Tx], T], executor: Executor | None = None,
                        key: bytes | None = None) -> T:  # fmt: skip
        """As :meth:`run`, awaited (one writer per process: ``key`` changes nothing). The
        coroutines of one event loop form their own groups, which run on the loop itself:
        only taking the write turn and the commit (the fsync) go to a thread. A group's
        statements then cost no hand-offs of the interpreter lock between threads, which
        cost more than the statements themselves."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        pending = self._on_loop.get(loop)
        if pending is None:
            pending = self._on_loop[loop] = []
            task = loop.create_task(self._flush(loop, pending))
            self._flushers.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._flushers.discard)
        pending.append((fn, fut))
        return await fut

    async def _flush(
        self, loop: asyncio.AbstractEventLoop, pending: list[tuple[Callable[[Tx], Any], Any]]
    ) -> None:
        """Run ``pending`` (this loop's queued requests) in groups until none is left."""
        try:
            while pending:
                begin = loop.run_in_executor(None, self._begin)
                cur: sqlite3.Cursor | None = None
                failed: StoreError = StoreUnavailable("relay database busy")
                try:
                    cur = await asyncio.shield(begin)
                except asyncio.CancelledError:
                    # The loop is going away: once the thread has the turn, give it back.
                    begin.add_done_callback(self._give_back)
                    raise
                except StoreError as err:
                    failed = err
                jobs = pending[:MAX_GROUP]  # what arrived while waiting for the turn joins
                del pending[:MAX_GROUP]
                if cur is None:
                    settle([(fut, False, failed) for _, fut in jobs])
                    continue
                outcomes, woken = self._steps(cur, [fn for fn, _ in jobs])
                try:
                    await loop.run_in_executor(None, self._commit)
                except StoreError as err:
                    outcomes, woken = [(False, err)] * len(jobs), []
                self._woke(woken)
                settle([(fut, ok, v) for (_, fut), (ok, v) in zip(jobs, outcomes, strict=True)])
        finally:
            del self._on_loop[loop]

    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            drain(self._queue, jobs, MAX_GROUP)
            self._run_group(jobs)

    def _begin(self) -> sqlite3.Cursor:
        """Take the write turn and begin a group transaction (StoreError, turn given back, if
        the database stays busy)."""
        try:
            self._acquire()
        except OSError as exc:
            raise StoreError(f"relay lock file: {type(exc).__name__}") from None
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._release()
            raise StoreUnavailable(f"relay database busy: {type(exc).__name__}") from None
        try:
            self._cache.check(cur)
        except sqlite3.Error:
            self._cache.clear()
        return cur

    def _steps(
        self, cur: sqlite3.Cursor, fns: Sequence[Callable[[Tx], Any]]
    ) -> tuple[list[tuple[bool, Any]], list[tuple[bytes, int]]]:
        """Run each request in its own savepoint of the group transaction: (ok, result or
        error) of each, and the mailboxes to wake once committed."""
        outcomes: list[tuple[bool, Any]] = []
        woken: list[tuple[bytes, int]] = []
        cache = self._cache
        for fn in fns:
            tx = _SqliteTx(cur, cache)
            try:
                cur.execute("SAVEPOINT req")
                result = fn(tx)
                cur.execute("RELEASE req")
                outcomes.append((True, result))
                woken += tx.woken
            except BaseException as exc:  # handed to the caller
                cache.clear()
                try:
                    cur.execute("ROLLBACK TO req")
                    cur.execute("RELEASE req")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    exc = StoreUnavailable(f"relay database error: {type(exc).__name__}")
                outcomes.append((False, exc))
        return outcomes, woken

    def _give_back(self, begun: asyncio.Future[sqlite3.Cursor]) -> None:
        """A group that was begun but will not run: roll it back and give back the turn."""
        if begun.cancelled() or begun.exception() is not None:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        finally:
            self._release()

    def _commit(self) -> None:
        """Commit the group durably and give back the turn (StoreError if the commit failed:
        then nothing of the group is kept)."""
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._cache.clear()
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreUnavailable(f"relay commit failed: {type(exc).__name__}") from None
        finally:
            self._release()

    def _run_group(self, jobs: list[Job]) -> None:
        """On the writer thread: one group of :meth:`run` callers."""
        try:
            cur = self._begin()
        except StoreError as err:
            finish_jobs(jobs, [(False, err)] * len(jobs))
            return
        outcomes, woken = self._steps(cur, [fn for fn, _ in jobs])
        try:
            self._commit()
        except StoreError as err:
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
