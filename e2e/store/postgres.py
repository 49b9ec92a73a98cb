"""A PostgreSQL store (psycopg 3) for backends whose workers run on many machines (SPEC.md
§9.3).

Loading a session takes a transaction-scoped advisory lock on its (kind, id) -- which also
covers a session not written yet -- and reads the row ``FOR UPDATE``, so a second worker
that loads the same session waits until the first has committed and then sees its state:
two workers never advance one session concurrently. One :class:`PostgresStore` (one
connection) per thread; the isolation level is the server's default, READ COMMITTED.

Schema (in ``schema``, ``public`` by default)::

    CREATE TABLE e2e_records (kind text COLLATE "C", id text COLLATE "C", value bytea,
                              PRIMARY KEY (kind, id))

Install the driver with the ``pg`` extra (``psycopg[binary]>=3.1``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from e2e.errors import StoreError
from e2e.store._core import BaseTransaction, DatabaseStore, record_bytes
from e2e.store.atrest import SCRYPT_N, KdfParams, StorageKey
from e2e.store.freshness import EpochKeeper, Freshness, NoEpochKeeper
from e2e.store.interface import fault_point
from e2e.store.sqlite import prefix_range

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - the pg extra is not installed
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore"]


class _PgTransaction(BaseTransaction):
    _serialized = False  # rows read without a lock may change until the epoch lock is held

    def __init__(self, key: StorageKey, fresh: Freshness, conn: Any, table: Any) -> None:
        super().__init__(key, fresh)
        self.connection = conn
        self._t = table
        self._locked: set[tuple[str, str]] = set()
        self._q_get = sql.SQL("SELECT value FROM {} WHERE kind = %s AND id = %s").format(table)

    def _get(self, kind: str, record_id: str) -> bytes | None:
        q = self._q_get
        if (kind, record_id) in self._locked:
            q = q + sql.SQL(" FOR UPDATE")
        row = self.connection.execute(q, (kind, record_id)).fetchone()
        return None if row is None else record_bytes(row[0], kind, record_id)

    def _put(self, kind: str, record_id: str, value: bytes) -> None:
        self.connection.execute(
            sql.SQL(
                "INSERT INTO {} (kind, id, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (kind, id) DO UPDATE SET value = EXCLUDED.value"
            ).format(self._t),
            (kind, record_id, value),
        )

    def _delete(self, kind: str, record_id: str) -> None:
        self.connection.execute(
            sql.SQL("DELETE FROM {} WHERE kind = %s AND id = %s").format(self._t),
            (kind, record_id),
        )

    def _scan(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        lo, hi = prefix_range(prefix)
        if hi is None:
            rows = self.connection.execute(
                sql.SQL("SELECT id, value FROM {} WHERE kind = %s AND id >= %s ORDER BY id").format(
                    self._t
                ),
                (kind, lo),
            ).fetchall()
        else:
            rows = self.connection.execute(
                sql.SQL(
                    "SELECT id, value FROM {} WHERE kind = %s AND id >= %s AND id < %s ORDER BY id"
                ).format(self._t),
                (kind, lo, hi),
            ).fetchall()
        return [(i, record_bytes(v, kind, i)) for i, v in rows if i.startswith(prefix)]

    def _insert_new(self, kind: str, record_id: str, value: bytes) -> bool:
        row = self.connection.execute(
            sql.SQL(
                "INSERT INTO {} (kind, id, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (kind, id) DO NOTHING RETURNING 1"
            ).format(self._t),
            (kind, record_id, value),
        ).fetchone()
        return row is not None

    def _lock_epoch(self) -> None:
        self.connection.execute("SELECT pg_advisory_xact_lock(hashtextextended('meta/epoch', 0))")

    def _headers(self) -> list[tuple[str, str, bytes]]:
        rows = self.connection.execute(
            sql.SQL(
                "SELECT kind, id, substring(value from 1 for 25) FROM {} "
                "WHERE NOT (kind = 'meta' AND id IN ('kdf', 'epoch'))"
            ).format(self._t)
        ).fetchall()
        return [(k, i, record_bytes(v, k, i)) for k, i, v in rows]

    def _lock(self, kind: str, record_id: str) -> None:
        if (kind, record_id) in self._locked:
            return
        self.connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{kind}/{record_id}",)
        )
        self._locked.add((kind, record_id))


class PostgresStore(DatabaseStore):
    """A store in one PostgreSQL table, sealed under ``key`` or a passphrase-derived key."""

    def __init__(
        self,
        dsn: str,
        key: StorageKey | bytes | None = None,
        *,
        passphrase: str | bytes | None = None,
        schema: str = "public",
        scrypt_n: int = SCRYPT_N,
        connect_timeout: int = 30,
        keeper: EpochKeeper | None = None,
        accept_restore: bool = False,
    ) -> None:
        """Open (or create) the store in ``schema``. ``keeper`` keeps the store's epoch
        outside the database; the default (:class:`NoEpochKeeper`) keeps none, so a restore
        of the whole database is not detected (a record rolled back or deleted still is):
        give a keeper on another service to detect it. ``accept_restore``: see
        :class:`~e2e.store.sqlite.SqliteStore`."""
        if psycopg is None:  # pragma: no cover
            raise StoreError("psycopg 3 is not installed (pip install 'e2e[pg]')")
        if (key is None) == (passphrase is None):
            raise StoreError("give exactly one of a storage key and a passphrase")
        super().__init__()
        self.schema = schema
        self.keeper = NoEpochKeeper() if keeper is None else keeper
        self._table = sql.Identifier(schema, "e2e_records")
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect: {type(exc).__name__}", "postgres") from None
        self._open(key, passphrase, scrypt_n, accept_restore)

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    def _setup(self) -> None:
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('e2e-ddl', 0))")
                self._conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                self._conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        ' kind text COLLATE "C" NOT NULL,'
                        ' id text COLLATE "C" NOT NULL,'
                        " value bytea NOT NULL,"
                        " PRIMARY KEY (kind, id))"
                    ).format(self._table)
                )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot create the schema: {type(exc).__name__}", "postgres"
            ) from None

    def _kdf_params(self, scrypt_n: int) -> KdfParams:
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('meta/kdf', 0))")
                row = self._conn.execute(
                    sql.SQL("SELECT value FROM {} WHERE kind = 'meta' AND id = 'kdf'").format(
                        self._table
                    )
                ).fetchone()
                if row is not None:
                    return KdfParams.from_bytes(record_bytes(row[0], "meta", "kdf"))
                params = KdfParams.generate(scrypt_n)
                self._conn.execute(
                    sql.SQL("INSERT INTO {} (kind, id, value) VALUES ('meta', 'kdf', %s)").format(
                        self._table
                    ),
                    (params.to_bytes(),),
                )
                return params
        except psycopg.Error as exc:
            raise StoreError(f"database error: {type(exc).__name__}", "meta/kdf") from None

    def _locked_begin(self) -> Iterator[_PgTransaction]:
        self._owner = threading.get_ident()
        try:
            with self._conn.transaction():
                tx = _PgTransaction(self._key, self._fresh, self._conn, self._table)
                yield tx
                tx._prepare_commit()
                fault_point("before_commit")
            tx._committed()
        except psycopg.Error as exc:
            raise StoreError(f"database error: {type(exc).__name__}", "postgres") from None
        finally:
            self._owner = None

    def close(self) -> None:
        self._conn.close()
