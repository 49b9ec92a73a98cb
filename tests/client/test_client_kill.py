"""kill -9 of a business agent process mid-conversation, twice: reopened from its SQLite or
PostgreSQL store it continues; the customer gets every message exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from relayhelp import free_port

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.demo import RelayServer
from e2e.platform.policy import MessageClass
from e2e.store import Store
from e2e.store.sqlite import SqliteStore

pytestmark = pytest.mark.crash

AGENT = r"""
import asyncio, os, sys
from e2e.client import Client
from e2e.client.http import RelayClient

def opener(spec, key):
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from e2e.store.sqlite import SqliteStore
        return lambda: SqliteStore(where, key)
    from e2e.store.postgres import PostgresStore
    return lambda: PostgresStore(os.environ["E2E_PG_DSN"], key, schema=where)

async def main() -> None:
    url, spec, key, total = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
    net = RelayClient(url)
    agent = await Client.open(opener(spec, key), net.connect)
    done = sum(1 for m in await agent.history("carol") if m.outgoing and m.body != b"hi")
    print(f"resumed {done}", flush=True)
    for i in range(done, total):
        await agent.send("carol", f"m{i:03d}")
        print(f"sent {i}", flush=True)
    await agent.aclose()
    await net.aclose()

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def agent_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the agent keeps its state: ``sqlite:<path>`` or ``pg:<schema>``."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'agent.sqlite'}"
        return
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    schema = f"client_kill_{uuid.uuid4().hex[:8]}"
    yield f"pg:{schema}"
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _opener(spec: str, key: bytes) -> Callable[[], Store]:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        return lambda: SqliteStore(where, key)
    from e2e.store.postgres import PostgresStore

    return lambda: PostgresStore(os.environ["E2E_PG_DSN"], key, schema=where)


def test_agent_killed_twice_mid_conversation_loses_and_repeats_nothing(
    tmp_path: Path, agent_store: str
) -> None:
    total = 40
    key = os.urandom(32)
    server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()

    async def setup() -> None:
        net = RelayClient(server.url)
        agent = await Client.create_account(_opener(agent_store, key), net.connect,
                                            "acme", "business")  # fmt: skip
        carol = await Client.create_account(
            lambda: SqliteStore(str(tmp_path / "carol.sqlite"), key), net.connect,
            "carol", "customer", auto_receipts=False,
        )  # fmt: skip
        await carol.send("acme", "hi")
        await agent.sync()
        await agent.aclose()
        await carol.aclose()
        await net.aclose()

    asyncio.run(setup())
    cmd = [sys.executable, "-c", AGENT, server.url, agent_store, key.hex(), str(total)]
    for kill_after in (7, 19):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("sent ") and int(line.split()[1]) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)  # mid-send of the next message
                break
        proc.wait(60)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    async def check() -> list[bytes]:
        net = RelayClient(server.url)
        carol = await Client.open(lambda: SqliteStore(str(tmp_path / "carol.sqlite"), key),
                                  net.connect, auto_receipts=False)  # fmt: skip
        got = []
        for _ in range(10):
            got += [m.body for m in await carol.sync() if m.cls is MessageClass.SERVICE]
            if len(got) >= total:
                break
        assert carol.errors == {}
        await carol.aclose()
        await net.aclose()
        return got

    got = asyncio.run(check())
    server.stop()
    assert got == [f"m{i:03d}".encode() for i in range(total)]
