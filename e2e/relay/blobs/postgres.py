"""Blobs in the relay's PostgreSQL database (SPEC.md §10.12), for relays that share it.

Rows in ``relay_blobs`` and ``relay_blob_grants``; bytes in ``relay_blob_parts`` (blob id,
start offset, up to 1 MiB of data), so every relay process on the database serves every blob.
A writer holds a session advisory lock on the blob (one writer per blob across processes) and
writes its parts and the new durable offset in one transaction per sync: the row never claims
bytes the database does not hold, and a crash mid-request loses only what was not synced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from e2e.errors import OffsetConflict, StoreError
from e2e.relay.blobs import PIECE, SCHEMA, BlobInfo, BlobLimits, BlobStore, BlobWriter, Exec
from e2e.relay.pglink import with_timeouts

__all__ = ["PostgresBlobStore"]

T = TypeVar("T")
_PARTS: Final = """
CREATE TABLE IF NOT EXISTS relay_blob_parts (
    blob_id BYTEA NOT NULL,
    start BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, start)
)"""
#: Ciphertext does not compress: store parts out of line without trying (TOAST's pglz spent
#: CPU on every part for nothing: 50 MiB/s of uploads through the relay, 85 without). Set only
#: when missing, so a relay process starting takes no table lock on a running database.
_NO_COMPRESSION: Final = """
DO $$ BEGIN
    IF (SELECT attstorage FROM pg_attribute WHERE attrelid = 'relay_blob_parts'::regclass
        AND attname = 'data') <> 'e' THEN
        ALTER TABLE relay_blob_parts ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END $$"""
_SCHEMA_LOCK: Final = 0x6532655F626C6F62  # "e2e_blob": serializes schema creation


def _lock_key(label: bytes, value: bytes) -> int:
    return int.from_bytes(hashlib.sha256(label + value).digest()[:8], "big", signed=True)


class PostgresBlobStore(BlobStore):
    """Blob rows and bytes in tables of the PostgreSQL database at ``dsn``. Its connections
    get the relay store's keepalives, ``tcp_user_timeout`` and ``connect_timeout`` unless
    ``dsn`` sets them (:func:`~e2e.relay.pglink.with_timeouts`): a database that silently
    stops answering fails a blob request instead of holding it forever."""

    def __init__(self, dsn: str, limits: BlobLimits | None = None, max_connections: int = 8):
        self.limits = limits or BlobLimits()
        try:
            self.pool = ConnectionPool(
                with_timeouts(dsn),
                min_size=1,
                max_size=max_connections,
                open=True,
                name="e2e-blobs",
            )
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for stmt in [*SCHEMA.format(bytes="BYTEA").split(";"), _PARTS, _NO_COMPRESSION]:
                    conn.execute(stmt)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the blob store: {type(exc).__name__}") from None

    def close(self) -> None:
        self.pool.close()

    def _transaction(self, fn: Callable[[Exec], T], lock: bytes = b"") -> T:
        try:
            with self.pool.connection() as conn, conn.transaction():
                if lock:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(b"owner", lock),))

                def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    cur = conn.execute(sql.replace("?", "%s"), params)
                    return cur.fetchall() if cur.description else []

                return fn(execute)
        except psycopg.Error as exc:
            raise StoreError(f"blob store: {type(exc).__name__}") from None

    def _open_writer(self, info: BlobInfo, most: int) -> BlobWriter:
        return _PartWriter(self, info, most)

    def _read(self, info: BlobInfo, start: int, end: int) -> Iterator[bytes]:
        return self._parts(info.blob_id, start, end)

    def _parts(self, blob_id: bytes, start: int, end: int) -> Iterator[bytes]:
        # one short query per part, each on a pooled connection: a slow reader holds none
        at = start
        first = True
        while at < end:
            sql = (
                "SELECT start, data FROM relay_blob_parts WHERE blob_id = %s AND start <= %s"
                " ORDER BY start DESC LIMIT 1"
                if first
                else "SELECT start, data FROM relay_blob_parts WHERE blob_id = %s AND start = %s"
            )
            try:
                with self.pool.connection() as conn:
                    row = conn.cursor(binary=True).execute(sql, (blob_id, at)).fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"blob store: {type(exc).__name__}") from None
            if row is None or row[0] + len(row[1]) <= at:
                raise StoreError("blob parts missing")
            first = False
            part_start, data = row[0], row[1]
            piece = data[at - part_start : end - part_start]
            at += len(piece)
            yield bytes(piece)

    def _delete_bytes(self, blob_ids: Sequence[bytes]) -> None:
        self._transaction(
            lambda execute: [
                execute("DELETE FROM relay_blob_parts WHERE blob_id = ?", (b,)) for b in blob_ids
            ]
        )


class _PartWriter(BlobWriter):
    def __init__(self, store: PostgresBlobStore, info: BlobInfo, most: int) -> None:
        super().__init__(store, info, most)
        self._pool = store.pool
        self._key = _lock_key(b"blob", info.blob_id)
        self._buf = bytearray()
        self._next = info.offset  # where the next part starts
        try:
            self._conn: psycopg.Connection[Any] | None = self._pool.getconn()
            held = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            self._conn.commit()
        except psycopg.Error as exc:
            self._drop()
            raise StoreError(f"blob store: {type(exc).__name__}") from None
        if not held or not held[0]:
            self._drop()
            raise OffsetConflict("another upload request holds the blob")

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.putconn(conn)

    def _exec(self, sql: str, params: Sequence[Any]) -> None:
        assert self._conn is not None
        try:
            self._conn.execute(sql, params)
        except psycopg.Error as exc:
            raise StoreError(f"blob store: {type(exc).__name__}") from None

    def _start(self) -> None:
        self._exec(
            "DELETE FROM relay_blob_parts WHERE blob_id = %s AND start >= %s",
            (self.info.blob_id, self.offset),
        )

    def _flush(self, everything: bool) -> None:
        while len(self._buf) >= PIECE or (everything and self._buf):
            part = bytes(self._buf[:PIECE])
            self._exec(
                "INSERT INTO relay_blob_parts (blob_id, start, data) VALUES (%s, %s, %b)",
                (self.info.blob_id, self._next, part),
            )
            del self._buf[: len(part)]
            self._next += len(part)

    def _write(self, data: bytes | memoryview) -> None:
        self._buf += data
        self._flush(everything=False)

    def _sync(self) -> None:
        self._flush(everything=True)

    def _record(self, offset: int, length: int | None, now: int, completed: int | None) -> None:
        self._exec(
            "UPDATE relay_blobs SET durable = %s, length = %s, touched = %s, completed = %s"
            " WHERE id = %s",
            (offset, length, now, completed, self.info.blob_id),
        )
        assert self._conn is not None
        try:
            self._conn.commit()
        except psycopg.Error as exc:
            raise StoreError(f"blob store: {type(exc).__name__}") from None

    def _release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()  # whatever was not synced
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            conn.commit()
        except psycopg.Error:
            conn.close()  # a closed connection drops its locks; the pool replaces it
        finally:
            self._drop()
