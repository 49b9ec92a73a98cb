"""The relay store's factory (SPEC.md §10.8): a backend chosen by the database string.

It stands above the backends (:mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres`), which stand
above the interface (:mod:`e2e.relay.store`); the PostgreSQL one is imported only when asked
for, so a SQLite relay needs no psycopg.
"""

from __future__ import annotations

from e2e.relay.store import RelayStore

__all__ = ["open_store"]


def open_store(db: str) -> RelayStore:
    """A SQLite store for a path, a PostgreSQL store for a ``postgresql://`` DSN."""
    if db.startswith(("postgresql://", "postgres://")) or "dbname=" in db:
        from e2e.relay.postgres import PostgresRelayStore

        return PostgresRelayStore(db)
    from e2e.relay.sqlite import SqliteRelayStore

    return SqliteRelayStore(db)
