"""Fixtures of the relay tests: a relay server process on SQLite and on PostgreSQL.

PostgreSQL needs E2E_PG_DSN (``source .ci/postgres.sh``); under CI=true a missing cluster
fails instead of skipping.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relayhelp import RelayProcess, fresh_pg_db  # noqa: E402
from relayhelp import pg_or_skip as _pg_or_skip  # noqa: E402

from e2e.relay.backends import open_store  # noqa: E402
from e2e.relay.store import RelayStore  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def relay_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh relay database: a SQLite file, or a new database on the PostgreSQL cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    return fresh_pg_db(_pg_or_skip())


@pytest.fixture
def pg_db() -> str:
    return fresh_pg_db(_pg_or_skip())


@pytest.fixture
def relay(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(relay: RelayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.url, timeout=30.0) as c:
        yield c


@pytest.fixture
def two_of(relay_db: str) -> Iterator[tuple[RelayStore, RelayStore]]:
    """Two stores on one database: two relay processes, as far as the database can tell."""
    a, b = open_store(relay_db), open_store(relay_db)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
