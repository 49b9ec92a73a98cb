"""Store benchmarks: load + decrypt + save (+ commit) of one message, with 1k and with 100k
sessions stored, for the SQLite and the PostgreSQL store; bytes per idle session.

Each case "<backend>-store-msg" pairs the 100k-session store (kind "e2e") with the
1k-session one (kind "floor"), so benches/check_ratios.py reports the per-message ratio
between the two sizes (target <= 1.3). The stored sessions are copies of one serialized,
established PQ session, each sealed at rest under its own id, as a real store holds them.

    pytest benches/bench_store.py --benchmark-only --benchmark-json=bench.json
    python benches/check_ratios.py bench.json
"""

from __future__ import annotations

import os
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benches.conftest import QUICK
from benches.workloads import established
from e2e import PQ
from e2e.store import Address, Store
from e2e.store.atrest import StorageKey
from e2e.store.sqlite import SqliteStore

SIZES = {"floor": 1_000, "e2e": 100_000}
ROUNDS = 150 if QUICK else 440
WARMUP = 30
_KEY = StorageKey(bytes(range(32)))


@dataclass
class Prepared:
    store: Store
    #: (peer, frame): each round decrypts for another peer, picked at random across the store;
    #: ``timed`` for the rounds measured on this store, ``other`` for the untimed messages this
    #: store gets while the other size is measured.
    timed: Iterator[tuple[Address, bytes]]
    other: Iterator[tuple[Address, bytes]]
    idle_bytes: float


def _addr(i: int) -> Address:
    return Address(f"peer-{i:06d}", 1)


def _sessions(n: int) -> tuple[list[tuple[Address, bytes]], list[tuple[str, bytes]]]:
    """n sealed copies of Bob's established session, and the rounds' work: Alice's next frame
    decrypts under every copy, so each round can take a different peer."""
    alice, bob = established(PQ.id)
    frame = alice.encrypt(b"m" * 64)
    state = bob.to_bytes()
    rows = [(_addr(i).record_id, _KEY.seal("session", _addr(i).record_id, state)) for i in range(n)]
    per = ROUNDS + WARMUP + 1
    picks = random.Random(n).sample(range(n), min(n, 2 * per))
    return [(_addr(i), frame) for i in picks], rows


def _split(
    work: list[tuple[Address, bytes]],
) -> tuple[Iterator[tuple[Address, bytes]], Iterator[tuple[Address, bytes]]]:
    half = len(work) // 2
    return iter(work[:half]), iter(work[half:])


def _receive(store: Store, peer: Address, frame: bytes) -> None:
    with store.transaction() as tx:
        tx.decrypt(peer, frame)


def _pg_dsn() -> str:
    dsn = os.environ.get("E2E_PG_DSN", "")
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("E2E_PG_DSN is not set under CI: source .ci/postgres.sh")
        pytest.skip("E2E_PG_DSN not set")
    return dsn


def prepare_sqlite(path: Path, n: int) -> Prepared:
    work, rows = _sessions(n)
    SqliteStore(path, _KEY).close()
    conn = sqlite3.connect(path)
    base = _sqlite_bytes(conn)
    with conn:
        conn.executemany("INSERT INTO records (kind, id, value) VALUES ('session', ?, ?)", rows)
    idle = (_sqlite_bytes(conn) - base) / n
    conn.close()
    return Prepared(SqliteStore(path, _KEY), *_split(work), idle)


def _sqlite_bytes(conn: sqlite3.Connection) -> int:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size: int = (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]
    return size


def prepare_postgres(dsn: str, schema: str, n: int) -> Prepared:
    import psycopg

    from e2e.store.postgres import PostgresStore

    work, rows = _sessions(n)
    PostgresStore(dsn, _KEY, schema=schema).close()
    table = f'"{schema}".e2e_records'
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY {table} (kind, id, value) FROM STDIN") as cp:
            for rid, value in rows:
                cp.write_row(("session", rid, value))
        conn.execute(f"VACUUM ANALYZE {table}")
        try:  # flush the load's dirty pages now, not during the timed rounds
            conn.execute("CHECKPOINT")
        except psycopg.Error:
            pass
        size = conn.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()
        assert size is not None
    return Prepared(PostgresStore(dsn, _KEY, schema=schema), *_split(work), size[0] / n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Prepared]]:
    """Prepared stores by (backend, kind), made on first use and shared by the module."""
    made: dict[tuple[str, str], Prepared] = {}
    schemas: list[str] = []

    def get(backend: str, kind: str) -> Prepared:
        if (backend, kind) not in made:
            n = SIZES[kind]
            if backend == "sqlite":
                path = tmp_path_factory.mktemp("bench-store") / f"{kind}.db"
                made[(backend, kind)] = prepare_sqlite(path, n)
            else:
                schema = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
                schemas.append(schema)
                made[(backend, kind)] = prepare_postgres(_pg_dsn(), schema, n)
        return made[(backend, kind)]

    yield get
    for p in made.values():
        p.store.close()
    if schemas:
        import psycopg

        with psycopg.connect(_pg_dsn(), autocommit=True) as conn:
            for s in schemas:
                conn.execute(f'DROP SCHEMA "{s}" CASCADE')


@pytest.mark.parametrize("kind", ["e2e", "floor"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_store_message(benchmark: Any, prepared: Any, backend: str, kind: str) -> None:
    """One received message: BEGIN, load the session, decrypt, save, COMMIT.

    Every round also receives one untimed message on the store of the other size, so the
    two measurements interleave and share the machine's conditions (load, caches, WAL).
    """
    p: Prepared = prepared(backend, kind)
    q: Prepared = prepared(backend, "floor" if kind == "e2e" else "e2e")

    def setup() -> tuple[tuple[Store, Address, bytes], dict[str, Any]]:
        _receive(q.store, *next(q.other))
        return (p.store, *next(p.timed)), {}

    case = f"{backend}-store-msg"
    benchmark.group = case
    benchmark.extra_info.update(
        case=case,
        kind=kind,
        messages=1,
        sessions=SIZES[kind],
        state_bytes={f"{backend}-stored-idle-session-{SIZES[kind] // 1000}k": round(p.idle_bytes)},
    )
    benchmark.pedantic(
        _receive,
        setup=setup,
        rounds=ROUNDS,
        warmup_rounds=WARMUP,
        iterations=1,
    )
