"""The factories of the relay's store (SPEC.md §10.8) and blob store (§10.12): a backend
chosen by the database string.

It stands above the backends (:mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres`), which stand
above the interface (:mod:`e2e.relay.store`); the PostgreSQL one is imported only when asked
for, so a SQLite relay needs no psycopg.
"""

from __future__ import annotations

from e2e.relay.blobs import BlobLimits, BlobStore
from e2e.relay.store import RelayStore

__all__ = ["open_store", "open_blob_store", "blob_dir_for"]


def _is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://")) or "dbname=" in db


def open_store(db: str) -> RelayStore:
    """A SQLite store for a path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if _is_pg(db):
        from e2e.relay.postgres import PostgresRelayStore

        return PostgresRelayStore(db)
    from e2e.relay.sqlite import SqliteRelayStore

    return SqliteRelayStore(db)


def blob_dir_for(db: str) -> str:
    """Where a SQLite relay database at ``db`` keeps its blobs: ``<db>.blobs`` beside it."""
    return db + ".blobs"


def open_blob_store(db: str, limits: BlobLimits | None = None) -> BlobStore:
    """The blob store of the relay database ``db``: tables in the PostgreSQL database of a
    DSN, else files in a directory beside the SQLite file."""
    if _is_pg(db):
        from e2e.relay.blobs.postgres import PostgresBlobStore

        return PostgresBlobStore(db, limits)
    from e2e.relay.blobs.fs import FilesystemBlobStore

    return FilesystemBlobStore(blob_dir_for(db), limits)
