"""Two processes sharing one business agent's PostgreSQL store never reuse a message key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from e2e.client import Client, LocalRelay, state
from e2e.platform.envelope import Delivery, Envelope
from e2e.platform.relay import ManualClock, Relay
from e2e.store import Address, MemoryStore

pytestmark = pytest.mark.pg

WORKER = r"""
import os, sys
from e2e.client import state
from e2e.platform.policy import MessageClass
from e2e.store import Address
from e2e.store.postgres import PostgresStore

store = PostgresStore(os.environ["E2E_PG_DSN"], bytes.fromhex(sys.argv[1]), schema=sys.argv[2])
with store.transaction() as tx:
    profile = state.load_profile(tx)
for i in range(int(sys.argv[3])):
    with store.transaction() as tx:
        out = state.seal(tx, profile, "carol", MessageClass.SERVICE, os.urandom(16),
                         os.urandom(32), f"{sys.argv[4]}-{i}".encode(), [Address("carol", 1)])
    sys.stdout.write(out.envelopes[0].hex() + "\n")
    sys.stdout.flush()
store.close()
"""


def test_two_processes_on_one_agent_store_never_reuse_a_message_key() -> None:
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    from e2e.store.postgres import PostgresStore

    key = os.urandom(32)
    schema = f"client_proc_{uuid.uuid4().hex[:8]}"
    carol_store = MemoryStore()
    n = 40

    async def setup() -> None:
        local = LocalRelay(Relay(clock=ManualClock()))
        agent = await Client.create_account(
            lambda: PostgresStore(dsn, key, schema=schema), local.connect, "acme", "business"
        )
        carol = await Client.create_account(carol_store, local.connect, "carol", "customer")
        await carol.send("acme", "hi")
        await agent.sync()
        await carol.sync()
        await agent.aclose()
        await carol.aclose()
        local.close()

    asyncio.run(setup())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, key.hex(), schema, str(n), f"p{k}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    envelopes: list[bytes] = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        envelopes += [bytes.fromhex(line) for line in out.split()]
    assert len(envelopes) == 2 * n
    bodies = set()
    with MemoryStore(carol_store._key, rows=carol_store.rows).transaction() as tx:
        profile = state.load_profile(tx)
        assert profile is not None
        for seq, raw in enumerate(envelopes, 1):
            delivery = Delivery(raw, 1_767_225_600, b"\0" * 32, seq).to_bytes()
            msg = state.open_delivery(tx, profile, delivery)  # a reused key would fail here
            bodies.add(msg.body)
        assert Envelope.from_bytes(envelopes[0]).dest == Address("carol", 1).wire
    assert len(bodies) == 2 * n
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
