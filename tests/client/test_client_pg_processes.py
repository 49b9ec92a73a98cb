"""Two processes sharing one business agent's PostgreSQL store never reuse a message key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from world import Service

from e2e.client import Client, inbox, state
from e2e.platform.envelope import Delivery, Envelope
from e2e.store import Address, MemoryStore, upkeep

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
        draft = state.Draft("carol", MessageClass.SERVICE, os.urandom(16), os.urandom(32),
                            f"{sys.argv[4]}-{i}".encode())
        out = state.seal(tx, profile, draft, [Address("carol", 1)])
    sys.stdout.write(out.envelopes[0].hex() + "\n")
    sys.stdout.flush()
store.close()
"""


def test_two_processes_on_one_agent_store_never_reuse_a_message_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
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
        svc = Service(tmp_path)
        agent = await Client.create_account(
            lambda: PostgresStore(dsn, key, schema=schema), svc.connect, "acme", "business"
        )
        carol = await Client.create_account(carol_store, svc.connect, "carol", "customer")
        await carol.send("acme", "hi")
        await agent.sync()
        await carol.sync()
        await agent.aclose()
        await carol.aclose()
        await svc.aclose()

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
            msg = inbox.open_delivery(tx, profile, delivery)  # a reused key would fail here
            bodies.add(msg.body)
        assert Envelope.from_bytes(envelopes[0]).dest == Address("carol", 1).wire
    assert len(bodies) == 2 * n
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


WORKER_CLIENT = r"""
import asyncio, os, sys, time
from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.store.postgres import PostgresStore

async def main() -> None:
    url, key, schema, tag = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
    net = RelayClient(url)
    store = lambda: PostgresStore(os.environ["E2E_PG_DSN"], key, schema=schema)
    agent = await Client.open(store, net.connect, auto_receipts=False)
    deadline = time.monotonic() + 60
    replied = 0
    while time.monotonic() < deadline:
        got = await agent.sync(wait_ms=300)
        for m in got:
            if not m.outgoing and m.body.startswith(b"q"):
                await agent.send("carol", b"re " + m.body + b" by " + tag.encode())
                replied += 1
        if any(m.body == b"stop" for m in got) or os.path.exists(sys.argv[5]):
            break
    print(replied, sum(agent.errors.values()), flush=True)
    await agent.aclose()
    await net.aclose()

asyncio.run(main())
"""


def test_two_client_processes_share_one_agent_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two processes run the same agent device (one PostgreSQL store) against the relay
    service, both fetching and answering: every question is answered once, every answer
    opens at the customer (no message key used twice), no message is held twice."""
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    from relayhelp import free_port

    from e2e.client.http import RelayClient
    from e2e.demo import RelayServer
    from e2e.platform.policy import MessageClass
    from e2e.store.postgres import PostgresStore

    key = os.urandom(32)
    schema = f"client_two_{uuid.uuid4().hex[:8]}"
    server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()
    stop = tmp_path / "stop"
    questions = 30

    procs: list[subprocess.Popen[str]] = []

    async def converse() -> list[bytes]:
        net = RelayClient(server.url)
        agent = await Client.create_account(
            lambda: PostgresStore(dsn, key, schema=schema), net.connect, "acme", "business"
        )
        await agent.aclose()
        carol = await Client.create_account(MemoryStore(), net.connect, "carol", "customer",
                                            auto_receipts=False)  # fmt: skip
        procs.extend(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER_CLIENT,
                    server.url,
                    key.hex(),
                    schema,
                    f"p{k}",
                    str(stop),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for k in range(2)
        )
        answers: list[bytes] = []
        for i in range(questions):
            await carol.send("acme", f"q{i:02d}")
            answers += [m.body for m in await carol.sync() if m.cls is MessageClass.SERVICE]
        for _ in range(100):
            if len(answers) >= questions:
                break
            answers += [m.body for m in await carol.sync(wait_ms=500)]
        stop.write_text("done")
        assert carol.errors == {}
        await carol.aclose()
        await net.aclose()
        return answers

    answers = asyncio.run(converse())
    outs = [p.communicate(timeout=120)[0] for p in procs]
    server.stop()
    replied = [int(o.split()[0]) for o in outs]
    assert sum(replied) == questions, outs
    assert sorted(a.split(b" by ")[0] for a in answers) == [
        f"re q{i:02d}".encode() for i in range(questions)
    ]

    async def agent_history() -> list[bytes]:
        from e2e.client import state

        store = PostgresStore(dsn, key, schema=schema)
        with store.transaction() as tx:
            out = [m.body for m in state.history(tx, "carol")]
        store.close()
        return out

    hist = asyncio.run(agent_history())
    assert len(hist) == len(set(hist)) == 2 * questions, sorted(hist)  # each once
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


PREKEY_WORKER = r"""
import os, sys
from e2e import PQ
from e2e.store import upkeep
from e2e.store.postgres import PostgresStore

store = PostgresStore(os.environ["E2E_PG_DSN"], bytes.fromhex(sys.argv[1]), schema=sys.argv[2])
for _ in range(40):
    with store.transaction() as tx:
        tx.add_one_time_prekey(upkeep.KeyPair.generate())
store.close()
"""


def test_two_processes_never_take_the_same_prekey_id() -> None:
    dsn = os.environ.get("E2E_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("E2E_PG_DSN not set under CI")
        pytest.skip("E2E_PG_DSN not set (source .ci/postgres.sh)")
    from e2e.store.postgres import PostgresStore

    key = os.urandom(32)
    schema = f"client_ids_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(dsn, key, schema=schema)
    with store.transaction() as tx:
        upkeep.ensure_identity(tx)
    procs = [
        subprocess.Popen([sys.executable, "-c", PREKEY_WORKER, key.hex(), schema]) for _ in range(2)
    ]
    for p in procs:
        assert p.wait(300) == 0
    with store.transaction() as tx:
        assert len(tx.one_time_prekeys()) == 80  # no id taken twice (one would overwrite)
    store.close()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
