"""The store-backed async client: conversations survive restarts of every party, on SQLite
and PostgreSQL, with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from world import Service

from e2e.client import Client
from e2e.platform.policy import MessageClass

StoreFactory = Callable[[str], Any]


class World:
    """A customer (phone + laptop) and a business (admin + 2 agents) on one relay service
    (in this process, on the database engine of the client stores)."""

    def __init__(self, svc: Service, stores: StoreFactory) -> None:
        self.relay = svc
        self.stores = stores
        self.clients: dict[str, Client] = {}

    async def setup(self) -> None:
        c = self.relay.connect
        phone = await Client.create_account(self.stores("phone"), c, "carol", "customer")
        laptop = await phone.add_device(self.stores("laptop"), c)
        admin = await Client.create_account(self.stores("admin"), c, "acme", "business")
        agent1 = await admin.add_device(self.stores("agent1"), c)
        agent2 = await admin.add_device(self.stores("agent2"), c)
        self.clients = {"phone": phone, "laptop": laptop, "admin": admin, "agent1": agent1,
                        "agent2": agent2}  # fmt: skip

    async def restart(self, name: str) -> Client:
        await self.clients[name].aclose()
        client = await Client.open(self.stores(name), self.relay.connect)
        self.clients[name] = client
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        await self.relay.aclose()


def bodies(history: list) -> list[bytes]:  # type: ignore[type-arg]
    return [m.body for m in history]


def test_restart_every_party_mid_conversation(
    relay_db: str, tmp_path: Path, stores: StoreFactory
) -> None:
    async def run() -> None:
        w = World(Service(tmp_path, db=relay_db), stores)
        await w.setup()
        expected: list[bytes] = []
        for rnd in range(3):
            for name in list(w.clients):
                # restart this party, then carry on the conversation from both sides
                await w.restart(name)
                phone, agent1 = w.clients["phone"], w.clients["agent1"]
                text = f"customer {rnd}/{name}".encode()
                await phone.send("acme", text)
                expected.append(text)
                for other in w.clients.values():
                    await other.sync()
                reply = f"business {rnd}/{name}".encode()
                await agent1.send("carol", reply)
                expected.append(reply)
                for other in w.clients.values():
                    await other.sync()
        for name in ("phone", "laptop"):
            assert bodies(await w.clients[name].history("acme")) == expected, name
        for name in ("admin", "agent1", "agent2"):
            assert bodies(await w.clients[name].history("carol")) == expected, name
        for client in w.clients.values():
            assert client.errors == {}
            assert await client.pending() == []
        for client in w.clients.values():  # the last round's receipts (receipts get none)
            await client.sync()
        assert w.relay.pending() == 0
        await w.close()

    asyncio.run(run())


def test_crash_before_ack_redelivers_without_duplicates(
    relay_db: str, tmp_path: Path, stores: StoreFactory
) -> None:
    async def run() -> None:
        w = World(Service(tmp_path, db=relay_db), stores)
        await w.setup()
        phone, agent1 = w.clients["phone"], w.clients["agent1"]
        await phone.send("acme", "one")
        await phone.send("acme", "two")
        transport = agent1.transport

        async def lost_ack(seqs: list[int]) -> None:
            raise ConnectionError("crashed before the ack")

        transport.ack = lost_ack  # type: ignore[method-assign]
        try:
            await agent1.sync()
        except ConnectionError:
            pass
        agent1 = await w.restart("agent1")
        got = await agent1.sync()
        assert got == []  # both were committed before the crash: redelivery is recognised
        assert bodies(await agent1.history("carol")) == [b"one", b"two"]
        assert agent1.errors == {}
        await w.close()

    asyncio.run(run())


def test_crash_after_seal_before_submit_resends_once(
    relay_db: str, tmp_path: Path, stores: StoreFactory
) -> None:
    async def run() -> None:
        w = World(Service(tmp_path, db=relay_db), stores)
        await w.setup()
        phone = w.clients["phone"]

        async def crash(envelopes: list[bytes]) -> None:
            raise ConnectionError("crashed before the submit")

        phone.transport.submit = crash  # type: ignore[method-assign,assignment]
        try:
            await phone.send("acme", "sealed, not sent")
        except ConnectionError:
            pass
        phone = await w.restart("phone")  # reopening flushes the outbox
        assert await phone.pending() == []
        for name in ("agent1", "agent2", "laptop"):
            got = await w.clients[name].sync()
            assert [m.body for m in got if m.cls is not MessageClass.RECEIPT] == [
                b"sealed, not sent"
            ]
        # accepted by the relay but the answer lost: the resubmission is a duplicate,
        # taken as accepted, and every device gets the message once
        transport = phone.transport
        real = transport.submit

        async def lost_answer(envelopes: list[bytes]):  # type: ignore[no-untyped-def]
            await real(envelopes)
            raise ConnectionError("answer lost")

        transport.submit = lost_answer  # type: ignore[method-assign]
        try:
            await phone.send("acme", "answer lost")
        except ConnectionError:
            pass
        assert len(await phone.pending()) == 1
        phone = await w.restart("phone")
        assert await phone.pending() == []
        for name in ("agent1", "agent2", "laptop"):
            got = await w.clients[name].sync()
            assert [m.body for m in got if m.cls is not MessageClass.RECEIPT] == [b"answer lost"]
        hist = await phone.history("acme")
        assert [m.body for m in hist] == [b"sealed, not sent", b"answer lost"]
        await w.close()

    asyncio.run(run())
