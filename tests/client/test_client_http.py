"""The client over HTTP against the relay service: every party -- each device and the relay
itself -- restarted mid-conversation, on SQLite and on PostgreSQL, loses and duplicates
nothing; routing over the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from relayhelp import free_port

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.demo import RelayServer
from e2e.errors import NoPriorContact, NotAllowed
from e2e.platform.policy import MessageClass

StoreFactory = Callable[[str], Any]


def test_every_party_restarts_over_http(stores: StoreFactory, relay_db: str) -> None:
    async def run() -> None:
        server = RelayServer(relay_db, port=free_port()).start()
        net = RelayClient(server.url)
        c = net.connect
        clients: dict[str, Client] = {}
        clients["phone"] = await Client.create_account(stores("phone"), c, "carol", "customer")
        clients["laptop"] = await clients["phone"].add_device(stores("laptop"), c)
        clients["admin"] = await Client.create_account(stores("admin"), c, "acme", "business")
        clients["agent"] = await clients["admin"].add_device(stores("agent"), c)
        await clients["admin"].designate([1])
        await clients["admin"].assign("carol", [2])
        expected: list[bytes] = []
        for rnd, name in enumerate(["relay", *clients, "relay"]):
            if name == "relay":
                server.stop()
                server = RelayServer(relay_db, port=server.port).start()
            else:
                await clients[name].aclose()
                clients[name] = await Client.open(stores(name), c)
            text = f"customer {rnd} after {name} restarted".encode()
            await clients["phone"].send("acme", text)
            expected.append(text)
            for other in clients.values():
                await other.sync()
            reply = f"agent {rnd}".encode()
            await clients["agent"].send("carol", reply)
            expected.append(reply)
            for other in clients.values():
                await other.sync()
        for name in ("phone", "laptop"):
            assert [m.body for m in await clients[name].history("acme")] == expected
        for name in ("admin", "agent"):
            assert [m.body for m in await clients[name].history("carol")] == expected
        for client in clients.values():
            await client.sync()
            assert client.errors == {}
            assert await client.pending() == []
        for client in clients.values():
            await client.aclose()
        await net.aclose()
        server.stop()

    asyncio.run(run())


def test_routing_over_http(tmp_path: Path) -> None:
    from e2e.store import MemoryStore

    async def run() -> None:
        server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()
        net = RelayClient(server.url)
        c = net.connect
        admin = await Client.create_account(MemoryStore(), c, "acme", "business")
        agents = [await admin.add_device(MemoryStore(), c) for _ in range(3)]
        carol = await Client.create_account(MemoryStore(), c, "carol", "customer")
        await admin.designate([1])
        await admin.assign("carol", [agents[0].profile.device])

        async def got(client: Client) -> list[bytes]:
            return [m.body for m in await client.sync() if m.cls is not MessageClass.RECEIPT]

        await carol.send("acme", "hello")
        assert await got(agents[0]) == [b"hello"]
        assert await got(admin) == [b"hello"]
        assert await got(agents[1]) == [] and await got(agents[2]) == []
        with pytest.raises(NotAllowed):
            await agents[1].send("carol", "not mine")
        await admin.assign("carol", [agents[2].profile.device])
        await carol.send("acme", "again")
        assert await got(agents[2]) == [b"again"]
        assert await got(agents[0]) == []
        for client in (admin, *agents, carol):
            assert client.errors == {}
            await client.aclose()
        await net.aclose()
        server.stop()

    asyncio.run(run())


def test_lost_prekey_upload_answer_over_http_loses_nothing(tmp_path: Path) -> None:
    """The relay stores an upload but its answer is lost; the client retries the same
    prekey ids. Then more first messages than prekeys arrive: none fails as PrekeyReused."""
    import httpx

    from e2e.store import MemoryStore

    class LoseOneUploadAnswer(httpx.AsyncHTTPTransport):
        lost = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.url.path == "/v1/prekeys/upload" and self.lost == 1:
                self.lost = 2
                await response.aclose()
                raise httpx.ReadError("connection reset after the relay committed")
            return response

    async def run() -> None:
        server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()
        lossy = LoseOneUploadAnswer()
        net = RelayClient(server.url, transport=lossy, retries=0)
        plain = RelayClient(server.url)
        agent = await Client.create_account(MemoryStore(), net.connect, "acme", "business",
                                            prekeys=3)  # fmt: skip
        customers = [
            await Client.create_account(MemoryStore(), plain.connect, f"c{i}", "customer")
            for i in range(3)
        ]
        for c in customers:  # drain the agent's three one-time prekeys
            await c.send("acme", f"hi from {c.profile.account}")
        lossy.lost = 1
        with pytest.raises(Exception):  # noqa: B017 - the transport error, as the client sees it
            await agent.upkeep(low=2, target=4)
        assert await agent.upkeep(low=2, target=4) == 4  # the retry: same ids, nothing doubled
        late = [
            await Client.create_account(MemoryStore(), plain.connect, f"d{i}", "customer")
            for i in range(6)
        ]
        for c in late:
            await c.send("acme", f"hello from {c.profile.account}")
        got = await agent.sync()
        assert len([m for m in got if m.cls is MessageClass.SERVICE]) == 9
        assert agent.errors == {}
        for client in (agent, *customers, *late):
            await client.aclose()
        await net.aclose()
        await plain.aclose()
        server.stop()

    asyncio.run(run())


def test_sync_with_a_wait_is_pushed_the_message(tmp_path: Path) -> None:
    import time

    from e2e.store import MemoryStore

    async def run() -> None:
        server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()
        net = RelayClient(server.url)
        agent = await Client.create_account(MemoryStore(), net.connect, "acme", "business")
        carol = await Client.create_account(MemoryStore(), net.connect, "carol", "customer")
        started = time.monotonic()
        waiting = asyncio.ensure_future(agent.sync(wait_ms=20_000))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # held by the relay: nothing to deliver yet
        await carol.send("acme", "push me")
        got = await asyncio.wait_for(waiting, 15)
        assert [m.body for m in got] == [b"push me"]
        assert time.monotonic() - started < 15  # answered on arrival, not at the end of the wait
        for client in (agent, carol):
            await client.aclose()
        await net.aclose()
        server.stop()

    asyncio.run(run())


def test_the_in_process_relay_is_the_service_and_keeps_its_state(
    stores: StoreFactory, relay_db: str
) -> None:
    """``RelayClient.in_process`` runs the relay service itself (policy and store), so a message
    queued before that relay is closed is delivered by a new one on the same database, and a
    business still may not write first."""

    async def run() -> None:
        secret = b"\x07" * 32
        relay = RelayClient.in_process(relay_db, secret_key=secret)
        admin = await Client.create_account(stores("admin"), relay.connect, "acme", "business")
        phone = await Client.create_account(stores("phone"), relay.connect, "carol", "customer")
        with pytest.raises(NoPriorContact):  # the service's policy: a business may not write first
            await admin.send("carol", b"buy now", MessageClass.MARKETING)
        await phone.send("acme", b"before the relay closed")
        for client in (admin, phone):
            await client.aclose()
        await relay.aclose()

        relay = RelayClient.in_process(relay_db, secret_key=secret)  # the same database
        admin = await Client.open(stores("admin"), relay.connect)
        assert [m.body for m in await admin.sync()] == [b"before the relay closed"]
        await admin.aclose()
        await relay.aclose()

    asyncio.run(run())
