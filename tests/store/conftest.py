"""Fixtures of the store tests: one factory per backend, so one suite runs over all three.

The PostgreSQL backend needs E2E_PG_DSN (``source .ci/postgres.sh`` starts a throwaway
cluster and sets it). Without it the PostgreSQL tests are skipped on a developer machine and
FAIL under CI=true, so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.store import Store
from e2e.store.atrest import StorageKey
from e2e.store.memory import MemoryStore
from e2e.store.sqlite import SqliteStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg: needs PostgreSQL (E2E_PG_DSN)")
    config.addinivalue_line("markers", "crash: crash-recovery tests with killed child processes")


def pg_dsn() -> str:
    dsn = os.environ.get("E2E_PG_DSN", "")
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("E2E_PG_DSN is not set under CI: .ci/run must source .ci/postgres.sh")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    return dsn


class Backend:
    """Opens (and reopens) stores of one kind that share their data."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.key = StorageKey.generate()
        self.opened: list[Any] = []
        self.rows: dict[tuple[str, str], bytes] = {}
        self.schema = "t_" + uuid.uuid4().hex[:16]
        self.dsn = pg_dsn() if kind == "postgres" else ""

    def open(
        self, key: StorageKey | None = None, *, name: str = "a", passphrase: str | None = None
    ) -> Store:
        store: Any
        if passphrase is not None:
            assert key is None
        k = key or (None if passphrase is not None else self.key)
        if self.kind == "memory":
            if passphrase is not None:
                pytest.skip("the memory store takes a raw key only")
            rows = self.rows if name == "a" else self.__dict__.setdefault("rows_" + name, {})
            store = MemoryStore(k, rows=rows)
        elif self.kind == "sqlite":
            store = SqliteStore(self.tmp / f"{name}.db", k, passphrase=passphrase, scrypt_n=2**10)
        else:
            store = PostgresStore_(
                self.dsn, k, passphrase=passphrase, schema=f"{self.schema}_{name}", scrypt_n=2**10
            )
        self.opened.append(store)
        return store

    def close(self) -> None:
        for s in self.opened:
            try:
                s.close()
            except Exception:
                pass
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for (name,) in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                    (self.schema + "%",),
                ).fetchall():
                    conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def PostgresStore_(*args: Any, **kwargs: Any) -> Store:
    from e2e.store.postgres import PostgresStore

    return PostgresStore(*args, **kwargs)


BACKENDS = ["memory", "sqlite", "postgres"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the PostgreSQL cases ``pg`` (so ``-m pg`` / ``-m "not pg"`` select them)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgres":
            item.add_marker(pytest.mark.pg)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
