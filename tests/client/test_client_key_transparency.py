"""Key transparency in the async client (SPEC §13.4): with the log key pinned, every device
list is proven in the relay's key log before anything is encrypted to it, the view of the
log lives in the device's store (so a rollback is caught across a restart), and an account
monitors its own entries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from e2e.client import Client, LocalRelay
from e2e.errors import KeyMismatch, LogRolledBack
from e2e.keys import KeyPair
from e2e.platform.directory import DeviceCertificate
from e2e.platform.relay import Relay
from e2e.platform.transparency import KeyLog

SECRET = b"my card number is 4111 1111 1111 1111"


async def _world(relay: Relay, stores: Any) -> tuple[LocalRelay, Client, Client, Client]:
    local = LocalRelay(relay)
    c = local.connect
    phone = await Client.create_account(stores("phone"), c, "carol", "customer")
    admin = await Client.create_account(stores("admin"), c, "acme", "business")
    agent = await admin.add_device(stores("agent"), c)
    for client in (phone, admin, agent):
        await client.pin_log_key(relay.log_public_key)
    return local, phone, admin, agent


def _sent(relay: Relay) -> int:
    return relay.recorder.channels().get("recv:envelope", 0)


def test_proven_conversation_and_persisted_view(relay: Relay, stores: Any) -> None:
    async def run() -> None:
        local, phone, admin, agent = await _world(relay, stores)
        await phone.send("acme", "hello")
        await agent.sync()
        view = await phone.log_view()
        assert view is not None and view.versions[b"acme"] == 3
        assert await admin.monitor() == len(relay.key_log.entries)
        await phone.aclose()
        phone = await Client.open(stores("phone"), local.connect)
        again = await phone.log_view()
        assert again is not None and again.latest == view.latest
        for client in (phone, admin, agent):
            await client.aclose()
        local.close()

    asyncio.run(run())


def test_substituted_key_refused_before_encryption(relay: Relay, stores: Any) -> None:
    async def run() -> None:
        local, phone, admin, agent = await _world(relay, stores)
        eve, dev = KeyPair.generate(), KeyPair.generate()
        fake = DeviceCertificate.issue(eve, b"acme", 1, dev.public).to_bytes()
        real = relay.fetch_devices

        def substituted(account: bytes, chat: Any = None) -> tuple[bytes, list[bytes]]:
            if account == b"acme":
                return eve.public, [fake]
            return real(account, chat) if chat is not None else real(account)

        relay.fetch_devices = substituted  # type: ignore[method-assign]
        before = _sent(relay)
        with pytest.raises(KeyMismatch):
            await phone.send("acme", SECRET)
        assert _sent(relay) == before
        assert all(SECRET not in d for _, d in relay.recorder.records)
        # Logged as well: the business's own monitor finds it.
        relay.fetch_devices = real  # type: ignore[method-assign]
        relay._accounts[b"acme"].identity = eve.public
        relay._log_account(b"acme")
        with pytest.raises(KeyMismatch):
            await admin.monitor()
        for client in (phone, admin, agent):
            await client.aclose()
        local.close()

    asyncio.run(run())


def test_rollback_caught_after_a_restart(relay: Relay, stores: Any) -> None:
    async def run() -> None:
        local, phone, admin, agent = await _world(relay, stores)
        old = list(relay.key_log.entries)
        await phone.send("acme", "hello")
        third = await admin.add_device(stores("agent3"), local.connect)
        await phone.refresh("acme")  # the phone has seen the log with agent 3
        await phone.aclose()
        relay.key_log = KeyLog(relay.key_log.signer, old)  # the relay forgets agent 3 ...
        phone = await Client.open(stores("phone"), local.connect)
        before = _sent(relay)
        with pytest.raises(LogRolledBack):
            await phone.refresh("acme")
        assert _sent(relay) == before
        for client in (phone, admin, agent, third):
            await client.aclose()
        local.close()

    asyncio.run(run())


def test_over_http_against_the_relay_service(tmp_path: Any, stores: Any) -> None:
    from e2e.client.http import RelayClient
    from e2e.demo import RelayServer

    async def run() -> None:
        server = RelayServer(str(tmp_path / "relay.sqlite")).start()
        net = RelayClient(server.url)
        try:
            c = net.connect
            phone = await Client.create_account(stores("phone"), c, "carol", "customer")
            admin = await Client.create_account(stores("admin"), c, "acme", "business")
            agent = await admin.add_device(stores("agent"), c)
            key = server.app.service.log_public_key
            for client in (phone, admin, agent):
                await client.pin_log_key(key)
            await phone.send("acme", "hello over http")
            assert [m.body for m in await agent.sync()] == [b"hello over http"]
            assert await admin.monitor() > 0
            view = await phone.log_view()
            assert view is not None and view.versions[b"acme"] == 3
            for client in (phone, admin, agent):
                await client.aclose()
        finally:
            await net.aclose()
            server.stop()

    asyncio.run(run())


def test_split_view_caught_through_a_peer_head(relay: Relay, stores: Any) -> None:
    """The relay shows carol a forked log in which acme has the relay's key; the bank, on
    the honest log, writes to carol: its message carries its log head, carol's client finds
    the two logs cannot both be right and refuses to send anything after that."""
    from e2e.errors import LogForked

    async def run() -> None:
        local, phone, admin, agent = await _world(relay, stores)
        bank = await Client.create_account(stores("bank"), local.connect, "bank", "business")
        await bank.pin_log_key(relay.log_public_key)
        await phone.send("bank", "hi")  # carol accepts a head of the honest log
        await bank.sync()
        fork = KeyLog(relay.key_log.signer, relay.key_log.entries)
        eve, dev = KeyPair.generate(), KeyPair.generate()
        fake = DeviceCertificate.issue(eve, b"acme", 1, dev.public).to_bytes()
        fork.publish(b"acme", eve.public, [fake])
        honest = phone.transport

        class Forked:
            def __getattr__(self, name: str) -> Any:
                return getattr(honest, name)

            async def log_head(self) -> bytes:
                return fork.head(relay.clock()).to_bytes()

            async def log_lookup(self, account: str, size: int) -> tuple[bytes, bytes]:
                raw, proof = fork.lookup(account.encode(), size)
                return raw, proof.to_bytes()

            async def log_consistency(self, a: int, b: int) -> bytes:
                return fork.consistency(a, b).to_bytes()

            async def fetch_devices(self, account: str, chat: Any = None) -> Any:
                if account == "acme":
                    return eve.public, [fake]
                return await honest.fetch_devices(account, chat)

        phone.transport = Forked()
        dave = await Client.create_account(stores("dave"), local.connect, "dave", "customer")
        await bank.refresh("carol")  # the bank accepts the honest log's newest head
        await bank.send("carol", "your statement is ready")  # ... and carries it
        with pytest.raises(LogForked):
            await phone.sync()
        before = _sent(relay)
        with pytest.raises(LogForked):
            await phone.send("acme", SECRET)
        assert _sent(relay) == before
        assert all(SECRET not in d for _, d in relay.recorder.records)
        for client in (phone, admin, agent, bank, dave):
            await client.aclose()
        local.close()

    asyncio.run(run())
