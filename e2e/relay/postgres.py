"""PostgreSQL relay store: several relay processes on one database (SPEC.md §10.8).

Group commit: a writer thread runs the queued requests, each in its own ``SAVEPOINT``, in one
transaction on a connection of its own, through libpq directly (prepared statements; see
:class:`Raw`), and answers them once it commits. A process has several writers (``writers``,
:data:`DEFAULT_WRITERS` by default), each with its own connection, group transaction and queue;
a submission goes to its recipient's writer, so the groups that update one mailbox's usage row
do not wait for each other; writers meet each other as writers of different processes do. Reads
that decide nothing use a connection pool. Transactions run at READ COMMITTED. Round trips are
merged: the group's ``BEGIN`` with the first savepoint and the directory's generation (the
writer caches the directory, see :class:`~e2e.relay.store.DirectoryCache`); a request's writes
whose outcome it does not need, and the checks it needs to hold (its chat's lock, its nonce,
its mailbox quota: statements that fail on the server, see :class:`_WriterTx`), with its next
statement or with the release of its savepoint and the next one (libpq pipeline mode).

Every decision on a chat (a submission's policy check, a control, a report) first takes a
transaction-scoped advisory lock on that chat (the first 8 bytes of SHA-256(business | 0x00 |
customer)), so decisions on one chat are serial across all relay processes and each reads the
state the previous one committed. The writer only tries that lock and runs a request whose
chat is busy again in a later group, so it never waits while holding its group's other locks.
Uniqueness does the rest: a second accepted submission of one message id, a replayed nonce or
a second ledger line for a message hits a primary or unique key, and the request is run again
(bounded), then sees the first one's outcome. A one-time prekey is claimed with ``UPDATE ...
WHERE ... = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, so concurrent claims take
different prekeys. New mail is announced with ``NOTIFY e2e_mail`` after the delivering
transaction commits, by a notifier thread that sends whatever is pending in one statement;
each relay process ``LISTEN``s on one connection and wakes its waiting fetches.

No wait is unbounded: every connection has TCP keepalives, ``tcp_user_timeout`` and a connect
timeout (:func:`with_timeouts`), and every operation a time limit after which its connection is
shut down (:class:`~e2e.relay.pglink.Watchdog`), so a silent network answers 503, not never.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from e2e.errors import MailboxFull, StoreError, StoreUnavailable, Unauthenticated
from e2e.relay.pglink import (
    IO_SECONDS,
    WATCHDOG,
    WRITER_NAME,
    Raw,
    with_timeouts,
)
from e2e.relay.schema import (
    ADDED_COLUMNS,
    BUCKET_COLUMNS,
    RESERVE_MAIL,
    RESERVE_ROW,
    SCHEMA,
    TAKE_TOKEN,
    USE_NONCE,
    bucket_params,
)
from e2e.relay.store import CHAT_ROW, Quota, RelayStore, Tx
from e2e.relay.writer import (
    DIRECTORY_GENERATION,
    DIRECTORY_TABLES,
    CachedDirectory,
    DirectoryCache,
    Job,
    SqlTx,
    drain,
    finish_jobs,
)

__all__ = ["PostgresRelayStore", "DEFAULT_WRITERS", "MAX_WRITERS"]

T = TypeVar("T")
CHANNEL: Final = "e2e_mail"
#: Times a request is run again (a conflict, or its chat busy: about 5 s in all) before 503.
_RETRIES: Final = 100
_LOCK_ID: Final = 0x6532655F72656C61  # advisory lock serializing schema creation
#: Most requests committed together by the writer.
MAX_GROUP: Final = 32
_CONFLICTS = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.UniqueViolation,
    pg_errors.LockNotAvailable,
)
#: Writer connections (and group transactions at a time) per relay process, by default and
#: at most (the relay setting ``ops.pg_writers``).
DEFAULT_WRITERS: Final = 2
MAX_WRITERS: Final = 32
#: Longest a writer's statement waits for a row lock (a unique key another writer is
#: inserting, a mailbox's usage row another group updated) before its request is run again
#: in a later group: two groups that wait for each other's rows give up within this, not
#: after the server's deadlock check (``deadlock_timeout``, 1 s by default).
_LOCK_TIMEOUT: Final = b"SET lock_timeout = '200ms'"

#: Counts changes of the directory (see :class:`~e2e.relay.store.DirectoryCache`).
_DIRECTORY_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION e2e_directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE relay_meta SET value = value + 1 WHERE key = 'directory';
    RETURN NULL;
END $$"""
#: Once per directory table (made only if missing: no table lock on a running database).
_DIRECTORY_TRIGGER: Final = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'e2e_directory'
                   AND tgrelid = '{table}'::regclass) THEN
        CREATE TRIGGER e2e_directory AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION e2e_directory_changed();
    END IF;
END $$"""


#: A condition a held statement checks (see :meth:`_WriterTx.check`): false raises, so the
#: server skips the rest of the pipeline, and the request is rolled back to its savepoint.
_CHECK_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION e2e_check(ok boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'P0E2E', MESSAGE = 'e2e check failed';
    END IF;
    RETURN true;
END $$"""
#: A chat's (or any) decision lock, tried: fails the check if another transaction holds it.
_TRY_LOCK: Final = "SELECT e2e_check(pg_try_advisory_xact_lock(?))"
#: A nonce recorded, checked fresh.
_CHECK_NONCE: Final = (
    "WITH n AS (" + USE_NONCE + ") SELECT e2e_check(EXISTS (SELECT 1 FROM n))"  # noqa: S608
)

#: After a request: release its savepoint and set the next request's.
_NEXT_SAVEPOINT: Final = (b"RELEASE SAVEPOINT req", b"SAVEPOINT req")


class _Busy(Exception):
    """A chat's decision lock or a device's rate-bucket lock is held by another transaction:
    roll the request back to its savepoint and run it again in a later group. The writer never
    waits for such a lock while its group holds others, so two relay processes cannot
    deadlock on them."""


class _PgTx(SqlTx):
    def claim_prekey(self, account: bytes, device_id: int) -> bytes | None:
        row = self.fetchone(
            "UPDATE prekeys SET claimed = 1 WHERE (account, device_id, prekey_id) ="
            " (SELECT account, device_id, prekey_id FROM prekeys WHERE account = ?"
            " AND device_id = ? AND claimed = 0 ORDER BY prekey_id LIMIT 1"
            " FOR UPDATE SKIP LOCKED) RETURNING bundle",
            (account, device_id),
        )
        return None if row is None else bytes(row[0])

    def __init__(self, cursor: Any, placeholder: str = "%s") -> None:
        super().__init__(cursor, placeholder)
        self.woken: set[str] = set()

    def notify(self, account: bytes, device_id: int) -> None:
        # Sent after the commit, in a transaction of its own: a NOTIFY inside the delivering
        # transaction would hold PostgreSQL's notification queue lock across its WAL flush,
        # making every delivering commit in the cluster serial.
        self.woken.add(f"{account.hex()}:{device_id}")

    #: In a group transaction, a chat lock is only tried, never waited for (waiting while
    #: holding the other chats' locks of the group could deadlock with another process).
    grouped = False

    def lock_chat(self, business: bytes, customer: bytes) -> None:
        key = _lock_key(business + b"\x00" + customer)
        if not self.grouped:
            self.execute("SELECT pg_advisory_xact_lock(?)", (key,))
            return
        row = self.fetchone("SELECT pg_try_advisory_xact_lock(?)", (key,))
        if row is None or not row[0]:
            raise _Busy

    def take_token(self, account: bytes, device_id: int, now: float, rate: float,
                   burst: float, want: int = 1) -> int:  # fmt: skip
        # The bucket's row is written only under its advisory lock, so holding the lock
        # means its row lock is free: a group never waits for it (as for chats).
        if self.grouped:
            params = bucket_params(account, device_id, now, rate, burst, want)
            return int(self._try(_TRY_TAKE_TOKEN, account, device_id, params)[0] or 0)
        self.execute("SELECT pg_advisory_xact_lock(?)", (_bucket_key(account, device_id),))
        return super().take_token(account, device_id, now, rate, burst, want)

    def admit(self, account: bytes, device_id: int, nonce: bytes, expires: int, now: float,
              rate: float, burst: float, want: int) -> tuple[int, bool]:  # fmt: skip
        if not self.grouped or not want:
            return super().admit(account, device_id, nonce, expires, now, rate, burst, want)
        params = bucket_params(account, device_id, now, rate, burst, want)
        taken, fresh = self._try(_TRY_ADMIT, account, device_id,
                                 (*params, account, device_id, nonce, expires))  # fmt: skip
        return int(taken or 0), bool(fresh)

    def _try(self, sql: str, account: bytes, device_id: int,
             params: tuple[Any, ...]) -> tuple[Any, ...]:  # fmt: skip
        """Try the bucket's lock and take tokens (and record a nonce) in one round trip: the
        statement's columns after the first (the lock had); :class:`_Busy` if another
        transaction holds the lock."""
        row = self.fetchone(sql, (_bucket_key(account, device_id), *params))
        if row is None or not row[0]:
            raise _Busy
        return row[1:]


def _bucket_key(account: bytes, device_id: int) -> int:
    return _lock_key(b"rate\x00" + account + b"\x00" + device_id.to_bytes(8, "big", signed=True))


def _lock_key(name: bytes) -> int:
    """A transaction-scoped advisory lock's key: the first 8 bytes of SHA-256(name)."""
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


_TRY_TAKE: Final = (
    "WITH lk AS (SELECT pg_try_advisory_xact_lock(?) AS ok), took AS ("  # noqa: S608
    + TAKE_TOKEN.format(source=f"SELECT {BUCKET_COLUMNS} FROM lk WHERE lk.ok")  # noqa: S608
    + ")"
)
#: (lock held, tokens taken or NULL): the bucket's upsert runs only if the lock was had.
_TRY_TAKE_TOKEN: Final = (
    _TRY_TAKE + " SELECT (SELECT ok FROM lk), (SELECT taken FROM took)"  # noqa: S608
)
#: (lock held, tokens taken or NULL, nonce fresh); the caller rolls back unless the lock was
#: had, a token taken and the nonce fresh.
_TRY_ADMIT: Final = (
    _TRY_TAKE  # noqa: S608
    + ", fresh AS ("
    + USE_NONCE
    + ") SELECT (SELECT ok FROM lk), (SELECT taken FROM took), EXISTS (SELECT 1 FROM fresh)"
)


class _WriterTx(CachedDirectory, _PgTx):
    """The writer's transactions: :class:`_PgTx` over :class:`Raw`, chat locks only tried,
    the directory read through the writer's :class:`DirectoryCache`.

    Statements whose rows the request does not need are held and sent in one pipeline with
    the next statement whose rows it needs (or with the request's end): writes, and *checks*,
    statements that fail on the server when their condition is false (:data:`_CHECK_FUNCTION`)
    and then raise the error they were held with. The server skips what follows a failed
    check, and the request rolls back to its savepoint, so a check refuses the request
    exactly as the caller's own refusal would. Held as checks: a chat's decision lock (the
    chat's row, read in the same pipeline after the lock's statement, is read with a snapshot
    taken once the lock is held), a request's nonce when its process holds a rate-limit token,
    and a submission's mailbox quota. Reads can be held too (:meth:`read_ahead`: the chat's
    row, with its lock). A submission takes its chat's lock before its de-duplication lookup,
    so a customer's submission takes two round trips: the nonce, the chat's lock and row and
    the lookup; the writes with the release of the request's savepoint and the next one."""

    grouped = True

    def __init__(self, raw: Raw, cache: DirectoryCache) -> None:
        super().__init__(None, "?")
        self.raw = raw
        self.cache = cache
        self.later: list[tuple[str, Sequence[Any]]] = []
        self.checks: dict[int, BaseException] = {}
        #: Held reads (by their place in :attr:`later`), and the rows of those sent since.
        self.reads: dict[int, tuple[str, tuple[Any, ...]]] = {}
        self.rows_read: dict[tuple[str, tuple[Any, ...]], list[tuple[Any, ...]]] = {}
        self.locked: set[tuple[bytes, bytes]] = set()

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Held until the next statement or the request's end, and sent with it."""
        self.rows_read.clear()  # rows read before a write may be older than it
        self.reads.clear()
        self.later.append((sql, params))

    def check(self, sql: str, params: Sequence[Any], error: BaseException) -> None:
        """Hold ``sql`` (a statement calling ``e2e_check``), as :meth:`write` does; the
        request fails with ``error`` if its check fails."""
        self.checks[len(self.later)] = error
        self.write(sql, params)

    def read_ahead(self, sql: str, params: Sequence[Any]) -> None:
        """Hold a read, sent with the next statement; :meth:`fetchall` of the same statement
        answers from its rows unless a write was held or sent after it."""
        self.reads[len(self.later)] = (sql, tuple(params))
        self.later.append((sql, params))

    def _send(self, sql: str | None = None, params: Sequence[Any] = (),
              commands: Sequence[bytes] = ()) -> pq.abc.PGresult | None:  # fmt: skip
        """The held statements, then ``sql``, then ``commands``, in one round trip; ``sql``'s
        result (None without it)."""
        later, self.later = self.later, []
        checks, self.checks = self.checks, {}
        reads, self.reads = self.reads, {}
        if sql is not None:
            later.append((sql, params))
        if not later and not commands:
            return None
        if len(later) == 1 and not commands and not checks and not reads:
            return self.raw.run(*later[0])
        results = self.raw.pipeline(later, commands, checks)
        for i, key in reads.items():
            res = results[i]
            if res is not None:
                self.rows_read[key] = Raw.rows(res)
        return results[-1] if sql is not None else None

    def flush(self, commands: Sequence[bytes] = ()) -> None:
        """Send the held statements, then ``commands``, in one round trip."""
        self._send(None, (), commands)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.rows_read.clear()
        res = self._send(sql, params)
        assert res is not None
        return Raw.rowcount(res)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        key = (sql, tuple(params))
        if key in self.rows_read and not self.later:
            return self.rows_read.pop(key)
        res = self._send(sql, params)
        assert res is not None
        return Raw.rows(res)

    def lock_chat(self, business: bytes, customer: bytes) -> None:
        """Tried, as a check held with the chat's row read after it (a snapshot taken once
        the lock is held): both go with the request's next statement."""
        if (business, customer) in self.locked:
            return
        self.locked.add((business, customer))
        self.check(_TRY_LOCK, (_lock_key(business + b"\x00" + customer),), _Busy())
        self.read_ahead(CHAT_ROW, (business, customer))

    def admit(self, account: bytes, device_id: int, nonce: bytes, expires: int, now: float,
              rate: float, burst: float, want: int) -> tuple[int, bool]:  # fmt: skip
        if want:
            return super().admit(account, device_id, nonce, expires, now, rate, burst, want)
        # The same refusal as the caller's for a nonce that is not fresh (SPEC §10.9).
        self.check(_CHECK_NONCE, (account, device_id, nonce, expires),
                   Unauthenticated("request replayed"))  # fmt: skip
        return 0, True

    def reserve_mail(self, sender: bytes, copies: Sequence[tuple[bytes, int, int]],
                     quota: Quota) -> bool:  # fmt: skip
        rows = sorted((a, d, who, n) for a, d, n in copies for who in (b"", sender))
        reserve = RESERVE_MAIL.format(values=", ".join([RESERVE_ROW] * len(rows)))
        self.check(
            f"WITH r AS ({reserve}) SELECT e2e_check(COUNT(*) = ?) FROM r",  # noqa: S608
            [v for r in rows for v in r]
            + [quota.messages, quota.sender_messages, quota.bytes, quota.sender_bytes, len(rows)],
            MailboxFull("a recipient's mailbox is full"),
        )
        return True


class PostgresRelayStore(RelayStore):
    """Relay state in PostgreSQL: ``writers`` writer connections (each running one group
    transaction at a time, :data:`DEFAULT_WRITERS` unless given, at most
    :data:`MAX_WRITERS`) and a pool for reads. Every connection has TCP timeouts
    (:func:`with_timeouts`) and every operation a bound (``timeout``, :data:`IO_SECONDS` by
    default). With ``affinity`` a request given a key (:meth:`run_async`) runs on the writer
    its key hashes to; requests without one, or all without ``affinity``, go round the
    writers in turn."""

    cross_process_wakeups = True

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8,
                 writers: int = DEFAULT_WRITERS, timeout: float = IO_SECONDS,
                 affinity: bool = True) -> None:  # fmt: skip
        if not 1 <= writers <= MAX_WRITERS:
            raise StoreError(f"writers must be 1 to {MAX_WRITERS}")
        if not timeout > 0:
            raise StoreError("timeout must be positive")
        try:
            dsn = with_timeouts(dsn)
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreError("cannot open relay database: bad connection string") from None
        self.dsn = dsn
        self.timeout = timeout
        params.setdefault("application_name", WRITER_NAME)
        self._writer_dsn = make_conninfo(**params)  # type: ignore[arg-type]
        try:
            self.pool = ConnectionPool(
                dsn, min_size=min_size, max_size=max_size, open=True, timeout=timeout,
                kwargs={"autocommit": False},
            )  # fmt: skip
            with self.pool.connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                for stmt in SCHEMA.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                    if stmt.strip():
                        conn.execute(stmt.replace("BLOB", "BYTEA"))
                for table, column, decl in ADDED_COLUMNS:
                    conn.execute(
                        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
                        f" {decl.replace('BLOB', 'BYTEA')}"
                    )
                conn.execute(_DIRECTORY_FUNCTION)
                conn.execute(_CHECK_FUNCTION)
                for table in DIRECTORY_TABLES:
                    conn.execute(_DIRECTORY_TRIGGER.replace("{table}", table))
        except psycopg.Error as exc:
            raise StoreError(f"cannot open relay database: {type(exc).__name__}") from None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._pending: set[str] = set()
        self._notify_lock = threading.Lock()
        self._notify_event = threading.Event()
        self._notify_thread = threading.Thread(
            target=self._notifier, name="relay-notify", daemon=True
        )
        self._notify_thread.start()
        # A queue per writer: a request with a key goes to the writer its key hashes to, so
        # the requests that update one row (a recipient's mailbox usage) are not spread over
        # groups that would wait for each other's commits; others go round the writers.
        self._queues: list[queue.SimpleQueue[tuple[Job, int] | None]] = [
            queue.SimpleQueue() for _ in range(writers)
        ]
        self._turn = itertools.count()
        self._affinity = affinity
        self._writers = [
            threading.Thread(
                target=self._write_loop, args=(q,), name=f"relay-pg-{i}", daemon=True
            )  # fmt: skip
            for i, q in enumerate(self._queues)
        ]
        for writer in self._writers:
            writer.start()

    # -- group commit ---------------------------------------------------------------------

    def run(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in its own savepoint of the writer's next group transaction; its result
        once that transaction is committed (or its error, having changed nothing)."""
        fut: Future[Any] = Future()
        self._queue(None).put(((fn, fut), 0))
        result: T = fut.result()
        return result

    async def run_async(self, fn: Callable[[Tx], T], executor: Executor | None = None,
                        key: bytes | None = None) -> T:  # fmt: skip
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue(key).put(((fn, (loop, fut)), 0))
        return await fut

    def _queue(self, key: bytes | None) -> queue.SimpleQueue[tuple[Job, int] | None]:
        """The queue of the writer that runs a request with ``key`` (None: the next one)."""
        queues = self._queues
        if len(queues) == 1:
            return queues[0]
        if key is None or not self._affinity:
            return queues[next(self._turn) % len(queues)]
        return queues[hash(key) % len(queues)]

    def read(self, fn: Callable[[Tx], T]) -> T:
        """A read-only ``fn`` on a pooled connection (it sees committed data only)."""
        try:
            with self.pool.connection() as conn:
                with WATCHDOG.bound(conn.pgconn, self.timeout), conn.cursor() as cur:
                    result = fn(_PgTx(cur, "%s"))
                conn.rollback()
                return result
        except psycopg.Error as exc:
            raise StoreUnavailable(f"relay database error: {type(exc).__name__}") from None

    def _write_loop(self, jobs: queue.SimpleQueue[tuple[Job, int] | None]) -> None:
        conn: psycopg.Connection[Any] | None = None
        raw: Raw | None = None
        cache = DirectoryCache()
        parked: list[tuple[float, Job, int]] = []  # (when to run again, job, tries)
        while True:
            now = time.monotonic()
            group = [(job, tries) for due, job, tries in parked if due <= now]
            parked = [p for p in parked if p[0] > now]
            if not group:
                wait = min(p[0] for p in parked) - now if parked else None
                try:
                    first = jobs.get(timeout=wait)
                except queue.Empty:
                    continue
                if first is None:
                    break
                group = [first]
            drain(jobs, group, MAX_GROUP)
            try:
                if conn is None or raw is None or conn.closed:
                    conn = psycopg.connect(self._writer_dsn, autocommit=True)
                    raw = Raw(conn)
                    raw.command(_LOCK_TIMEOUT)
                with WATCHDOG.bound(raw.pg, self.timeout):
                    again = self._run_group(raw, cache, group)
                for job, tries in again:
                    # Again after a short, growing pause: a busy chat's lock is held by
                    # another writer's group (this process's or another's), which commits
                    # within milliseconds.
                    parked.append((time.monotonic() + min(0.05, 0.001 * 2**tries), job, tries))
            except psycopg.Error as exc:
                # The group's transaction failed as a whole (connection lost, commit failed):
                # none of its requests was answered yet; all are refused (503), none applied.
                err = StoreUnavailable(f"relay database error: {type(exc).__name__}")
                finish_jobs([job for job, _ in group], [(False, err)] * len(group))
                cache.clear()
                if conn is not None:
                    conn.close()
                conn = raw = None
        if conn is not None:
            conn.close()

    def _run_group(
        self, raw: Raw, cache: DirectoryCache, group: list[tuple[Job, int]]
    ) -> list[tuple[Job, int]]:
        """Run the group in one transaction, a savepoint each; commit; answer the requests
        that ran. The ones to run again (a conflict, or a busy chat) are returned.

        Round trips: the transaction's start, the first savepoint and the directory's
        generation go in one; a request's held writes (:meth:`_WriterTx.write`), the release
        of its savepoint and the next request's savepoint go in one; the commit is the
        last."""
        done: list[Job] = []
        outcomes: list[tuple[bool, Any]] = []
        again: list[tuple[Job, int]] = []
        woken: set[str] = set()
        res = raw.query(b"BEGIN; SAVEPOINT req; " + DIRECTORY_GENERATION.encode())
        try:
            generation = res[0][0] if res else None
            cache.check_generation(0 if generation is None else int(generation))
            for job, tries in group:  # each starts in a fresh savepoint "req"
                tx = _WriterTx(raw, cache)
                try:
                    result = job[0](tx)
                    tx.flush(_NEXT_SAVEPOINT)
                except BaseException as exc:  # handed to the caller below, or run again
                    # ROLLBACK TO keeps the savepoint: the next request runs in it.
                    raw.command(b"ROLLBACK TO SAVEPOINT req")
                    cache.clear()
                    if isinstance(exc, (_Busy, *_CONFLICTS)):
                        if tries + 1 < _RETRIES:
                            again.append((job, tries + 1))
                            continue
                        exc = StoreUnavailable("relay database kept conflicting")
                    elif isinstance(exc, psycopg.Error):
                        exc = StoreUnavailable(f"relay database error: {type(exc).__name__}")
                    done.append(job)
                    outcomes.append((False, exc))
                    continue
                done.append(job)
                outcomes.append((True, result))
                woken |= tx.woken
            raw.command(b"COMMIT")
        except BaseException:
            cache.clear()
            if raw.pg.status == pq.ConnStatus.OK:
                raw.pg.exec_(b"ROLLBACK")
            raise
        if woken:
            with self._notify_lock:
                self._pending |= woken
            self._notify_event.set()
        finish_jobs(done, outcomes)
        return again

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            with WATCHDOG.bound(conn.pgconn, self.timeout):
                with conn.cursor() as cur:
                    tx = _PgTx(cur, "%s")
                    yield tx
                conn.commit()
        if tx.woken:
            # After the commit: a waiter woken now finds the mail. (A crash before the
            # notifier sends it only delays it: the long-poll ends, the next fetch finds it.)
            with self._notify_lock:
                self._pending |= tx.woken
            self._notify_event.set()

    def _notifier(self) -> None:
        """Send the pending wake-ups, all at once, in autocommit statements of their own
        (off the request path: one statement per burst of deliveries, not per request)."""
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            self._notify_event.wait(1.0)
            self._notify_event.clear()
            with self._notify_lock:
                pending, self._pending = self._pending, set()
            if not pending:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                with WATCHDOG.bound(conn.pgconn, self.timeout):
                    conn.execute(
                        "SELECT pg_notify(%s, unnest(%s::text[]))", (CHANNEL, sorted(pending))
                    )
            except psycopg.Error:
                conn = None  # the waiters' long-polls end and they fetch again
                self._stop.wait(0.5)
        if conn is not None:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with self._tx() as tx:
                yield tx
        except psycopg.Error as exc:
            raise StoreUnavailable(f"relay database error: {type(exc).__name__}") from None

    def listen(self, wake: Callable[[Sequence[tuple[bytes, int]]], None]) -> None:
        if self._listener is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        while not self._stop.is_set():
                            for note in conn.notifies(timeout=1.0):
                                _deliver(wake, note.payload)
                except psycopg.Error:
                    self._stop.wait(1.0)

        self._listener = threading.Thread(target=loop, name="relay-listen", daemon=True)
        self._listener.start()

    def close(self) -> None:
        for jobs in self._queues:
            jobs.put(None)
        for writer in self._writers:
            writer.join(timeout=10)
        self._stop.set()
        self._notify_event.set()
        self._notify_thread.join(timeout=5)
        if self._listener is not None:
            self._listener.join(timeout=5)
        self.pool.close()


def _deliver(wake: Callable[[Sequence[tuple[bytes, int]]], None], payload: Any) -> None:
    account, _, device = str(payload).partition(":")
    try:
        woken = [(bytes.fromhex(account), int(device))]
    except ValueError:
        return
    wake(woken)
