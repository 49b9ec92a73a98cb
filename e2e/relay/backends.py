"""The factories of the relay's store (SPEC.md §10.8) and blob store (§10.12): a backend
chosen by the database string.

It stands above the backends (:mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres`), which stand
above the interface (:mod:`e2e.relay.store`); the PostgreSQL one is imported only when asked
for, so a SQLite relay needs no psycopg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from e2e.relay.blobs import BlobLimits, BlobStore
from e2e.relay.store import Quota, RelayStore

if TYPE_CHECKING:
    from e2e.relay.cluster import ClusterRouter
    from e2e.relay.placement import PlacementMap

__all__ = ["open_store", "open_router", "open_blob_store", "blob_dir_for"]


def _is_pg(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://")) or "dbname=" in db


def open_store(db: str, pg_writers: int | None = None, pg_timeout: float | None = None,
               pg_affinity: bool = True) -> RelayStore:  # fmt: skip
    """A SQLite store for a path, a PostgreSQL store for a ``postgresql://`` DSN (with
    ``pg_writers`` writer connections and ``pg_timeout`` seconds a database operation may
    take, the store's defaults unless given, and ``pg_affinity``: see
    :class:`~e2e.relay.postgres.PostgresRelayStore`; SQLite has one writer per process)."""
    if _is_pg(db):
        from e2e.relay.pglink import IO_SECONDS
        from e2e.relay.postgres import DEFAULT_WRITERS, PostgresRelayStore

        return PostgresRelayStore(db, writers=pg_writers or DEFAULT_WRITERS,
                                  timeout=pg_timeout or IO_SECONDS,
                                  affinity=pg_affinity)  # fmt: skip
    from e2e.relay.sqlite import SqliteRelayStore

    return SqliteRelayStore(db)


def open_router(pmap: PlacementMap, dsns: Mapping[str, str], quota: Quota) -> ClusterRouter:
    """A router over several PostgreSQL clusters (SPEC §10.14): one :func:`open_store`
    store per cluster of ``pmap`` (``dsns`` maps each cluster's name to its DSN), opened when
    first needed."""
    from e2e.relay.cluster import ClusterRouter

    return ClusterRouter(pmap, dsns, open_store, quota)


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
