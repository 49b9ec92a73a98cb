"""PostgreSQL relay store: several relay processes on one database (SPEC.md §10.8).

Transactions run at READ COMMITTED. Every decision on a chat (a submission's policy check, a
control, a report) first takes a transaction-scoped advisory lock on that chat
(``pg_advisory_xact_lock`` of the first 8 bytes of SHA-256(business | 0x00 | customer)), so
decisions on one chat are serial across all relay processes and each reads the state the
previous one committed. Uniqueness does the rest: a second accepted submission of one message
id, a replayed nonce or a second ledger line for a message hits a primary or unique key, and
the transaction is retried (bounded), then sees the first one's outcome. A one-time prekey is
claimed with ``UPDATE ... WHERE ... = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, so
concurrent claims take different prekeys. New mail is announced with ``NOTIFY e2e_mail``
after the delivering transaction commits, by a notifier thread that sends whatever is pending
in one statement; each relay process ``LISTEN``s on one connection and wakes its waiting
fetches.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from e2e.errors import StoreError
from e2e.relay.store import SCHEMA, RelayStore, SqlTx, Tx

__all__ = ["PostgresRelayStore"]

T = TypeVar("T")
CHANNEL: Final = "e2e_mail"
_RETRIES: Final = 30
_LOCK_ID: Final = 0x6532655F72656C61  # advisory lock serializing schema creation


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

    def insert_mail(self, account: bytes, device_id: int, envelope: bytes, received_at: int,
                    tag: bytes) -> int:  # fmt: skip
        row = self.fetchone(
            "INSERT INTO mailbox (account, device_id, envelope, received_at, tag)"
            " VALUES (?, ?, ?, ?, ?) RETURNING seq",
            (account, device_id, envelope, received_at, tag),
        )
        assert row is not None
        return int(row[0])

    def __init__(self, cursor: Any, placeholder: str = "%s") -> None:
        super().__init__(cursor, placeholder)
        self.woken: set[str] = set()

    def notify(self, account: bytes, device_id: int) -> None:
        # Sent after the commit, in a transaction of its own: a NOTIFY inside the delivering
        # transaction would hold PostgreSQL's notification queue lock across its WAL flush,
        # making every delivering commit in the cluster serial.
        self.woken.add(f"{account.hex()}:{device_id}")

    def lock_chat(self, business: bytes, customer: bytes) -> None:
        digest = hashlib.sha256(business + b"\x00" + customer).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))


class PostgresRelayStore(RelayStore):
    """Relay state in PostgreSQL, through a connection pool."""

    cross_process_wakeups = True

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8) -> None:
        self.dsn = dsn
        try:
            self.pool = ConnectionPool(
                dsn, min_size=min_size, max_size=max_size, open=True, timeout=30,
                kwargs={"autocommit": False},
            )  # fmt: skip
            with self.pool.connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                for stmt in SCHEMA.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                    if stmt.strip():
                        conn.execute(stmt.replace("BLOB", "BYTEA"))
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

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
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
                conn.execute("SELECT pg_notify(%s, unnest(%s::text[]))", (CHANNEL, sorted(pending)))
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
            raise StoreError(f"relay database error: {type(exc).__name__}") from None

    def run(self, fn: Callable[[Tx], T]) -> T:
        for _ in range(_RETRIES):
            try:
                with self._tx() as tx:
                    return fn(tx)
            except (
                pg_errors.SerializationFailure,
                pg_errors.DeadlockDetected,
                pg_errors.UniqueViolation,
            ):
                continue
            except psycopg.Error as exc:
                raise StoreError(f"relay database error: {type(exc).__name__}") from None
        raise StoreError("relay database kept conflicting")

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
