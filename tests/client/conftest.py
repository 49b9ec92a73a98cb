"""Fixtures for the client tests: stores on SQLite or PostgreSQL, the relay service's
database on the same engine, and a device store's backup."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import drop_pg_db, fresh_pg_db  # noqa: E402
from world import Backup  # noqa: E402

from e2e.store import Store

StoreFactory = Callable[[str], Callable[[], Store]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``stores(name)`` -> an opener of that device's store (the same data every call)."""
    keys: dict[str, bytes] = {}
    if request.param == "sqlite":
        from e2e.store.sqlite import SqliteStore

        def factory(name: str) -> Callable[[], Store]:
            key = keys.setdefault(name, os.urandom(32))
            return lambda: SqliteStore(tmp_path / f"{name}.db", key)

        yield factory
        return
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    from e2e.store.postgres import PostgresStore

    run = uuid.uuid4().hex[:8]

    def pg_factory(name: str) -> Callable[[], Store]:
        key = keys.setdefault(name, os.urandom(32))
        schema = f"client_{run}_{name.replace('-', '_')}"
        return lambda: PostgresStore(dsn, key, schema=schema)

    yield pg_factory
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"client_{run}_%",)
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def relay_db(stores: StoreFactory, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The relay service's database, on the engine of the client stores: a SQLite file, or a
    fresh PostgreSQL database (dropped afterwards) for the postgres case."""
    if "postgres" not in request.node.name:
        yield str(tmp_path / "relay.sqlite")
        return
    dsn = os.environ["E2E_PG_DSN"]
    db = fresh_pg_db(dsn)
    yield db
    drop_pg_db(dsn, db)


@pytest.fixture
def backup(fast_tmp: Path) -> Backup:
    """A :class:`Backup` kept in the test's scratch directory."""
    return Backup(fast_tmp)
