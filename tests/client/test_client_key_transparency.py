"""Key transparency in the async client (SPEC §13.4): with the log key pinned, every device
list is proven in the relay's key log before anything is encrypted to it, the view of the
log lives in the device's store (so a rollback is caught across a restart), and an account
monitors its own entries. The relay is the service in this process, made malicious the way
its operator could: serving other keys to one device, editing its database, forking its log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from world import Service, Serving, rogue, run

from e2e.client import Client
from e2e.errors import KeyMismatch, LogRolledBack
from e2e.platform import wire
from e2e.platform.transparency import KeyLog

SECRET = b"my card number is 4111 1111 1111 1111"


async def _world(svc: Service, stores: Any) -> tuple[Client, Client, Client]:
    c = svc.connect
    phone = await Client.create_account(stores("phone"), c, "carol", "customer")
    admin = await Client.create_account(stores("admin"), c, "acme", "business")
    agent = await admin.add_device(stores("agent"), c)
    for client in (phone, admin, agent):
        await client.pin_log_key(svc.service.log_public_key)
    return phone, admin, agent


def _sent(svc: Service) -> int:
    """Submissions the relay received."""
    return len(svc.tap.channel("recv:" + wire.Path.MESSAGE_SUBMIT))


def _log(svc: Service) -> list[bytes]:
    return [bytes(r[0]) for r in svc.rows("SELECT entry FROM key_log ORDER BY idx")]


async def _close(svc: Service, *clients: Client) -> None:
    for client in clients:
        await client.aclose()
    await svc.aclose()


def test_proven_conversation_and_persisted_view(
    relay_db: str, tmp_path: Path, stores: Any
) -> None:
    async def go() -> None:
        svc = Service(tmp_path, db=relay_db)
        phone, admin, agent = await _world(svc, stores)
        await phone.send("acme", "hello")
        await agent.sync()
        view = await phone.log_view()
        assert view is not None and view.versions[b"acme"] == 3
        assert await admin.monitor() == len(_log(svc))
        await phone.aclose()
        phone = await Client.open(stores("phone"), svc.connect)
        again = await phone.log_view()
        assert again is not None and again.latest == view.latest
        await _close(svc, phone, admin, agent)

    run(go)


def test_substituted_key_refused_before_encryption(
    relay_db: str, tmp_path: Path, stores: Any
) -> None:
    async def go() -> None:
        svc = Service(tmp_path, db=relay_db)
        phone, admin, agent = await _world(svc, stores)
        served = rogue(b"acme")
        honest = phone.transport

        async def substituted(account: str, chat: Any = None) -> Any:
            if account == "acme":
                return served
            return await honest.fetch_devices(account, chat)

        phone.transport = Serving(honest, fetch_devices=substituted)  # type: ignore[assignment]
        before = _sent(svc)
        with pytest.raises(KeyMismatch):
            await phone.send("acme", SECRET)
        assert _sent(svc) == before
        assert all(SECRET not in d for _, d in svc.tap.records)
        # Logged as well: the business's own monitor finds it.
        phone.transport = honest

        def substitute(tx: Any) -> None:
            tx.execute("UPDATE accounts SET identity = ? WHERE name = ?", (served[0], b"acme"))
            svc.service._log_account(tx, b"acme", served[0])

        svc.operator().run(substitute)
        with pytest.raises(KeyMismatch):
            await admin.monitor()
        await _close(svc, phone, admin, agent)

    run(go)


def test_rollback_caught_after_a_restart(relay_db: str, tmp_path: Path, stores: Any) -> None:
    async def go() -> None:
        svc = Service(tmp_path, db=relay_db)
        phone, admin, agent = await _world(svc, stores)
        old = len(_log(svc))
        await phone.send("acme", "hello")
        third = await admin.add_device(stores("agent3"), svc.connect)
        await phone.refresh("acme")  # the phone has seen the log with agent 3
        await phone.aclose()
        # The relay forgets agent 3: its log goes back to before (the device stays listed).
        svc.operator().run(lambda tx: tx.execute("DELETE FROM key_log WHERE idx >= ?", (old,)))
        phone = await Client.open(stores("phone"), svc.connect)
        before = _sent(svc)
        with pytest.raises(LogRolledBack):
            await phone.refresh("acme")
        assert _sent(svc) == before
        await _close(svc, phone, admin, agent, third)

    run(go)


def test_over_http_against_the_relay_service(tmp_path: Path, stores: Any) -> None:
    from relayhelp import free_port

    from e2e.client.http import RelayClient
    from e2e.demo import RelayServer

    async def go() -> None:
        server = RelayServer(str(tmp_path / "relay.sqlite"), port=free_port()).start()
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

    run(go)


def test_split_view_caught_through_a_peer_head(
    relay_db: str, tmp_path: Path, stores: Any
) -> None:
    """The relay shows carol a forked log in which acme has the relay's key; the bank, on
    the honest log, writes to carol: its message carries its log head, carol's client finds
    the two logs cannot both be right and refuses to send anything after that."""
    from e2e.errors import LogForked

    async def go() -> None:
        svc = Service(tmp_path, db=relay_db)
        phone, admin, agent = await _world(svc, stores)
        bank = await Client.create_account(stores("bank"), svc.connect, "bank", "business")
        await bank.pin_log_key(svc.service.log_public_key)
        await phone.send("bank", "hi")  # carol accepts a head of the honest log
        await bank.sync()
        fork = KeyLog(svc.service._log.signer, svc.service._vrf, _log(svc))
        served = rogue(b"acme")
        fork.publish(b"acme", served[0], served[2])
        honest = phone.transport

        async def log_head() -> bytes:
            return fork.head(svc.clock()).to_bytes()

        async def log_lookup(account: str, size: int) -> tuple[bytes, bytes]:
            raw, proof = fork.lookup(account.encode(), size)
            return raw, proof.to_bytes()

        async def log_consistency(a: int, b: int) -> bytes:
            return fork.consistency(a, b).to_bytes()

        async def fetch_devices(account: str, chat: Any = None) -> Any:
            if account == "acme":
                return served
            return await honest.fetch_devices(account, chat)

        phone.transport = Serving(  # type: ignore[assignment]
            honest, log_head=log_head, log_lookup=log_lookup, log_consistency=log_consistency,
            fetch_devices=fetch_devices,
        )  # fmt: skip
        dave = await Client.create_account(stores("dave"), svc.connect, "dave", "customer")
        await bank.refresh("carol")  # the bank accepts the honest log's newest head
        await bank.send("carol", "your statement is ready")  # ... and carries it
        with pytest.raises(LogForked):
            await phone.sync()
        before = _sent(svc)
        with pytest.raises(LogForked):
            await phone.send("acme", SECRET)
        assert _sent(svc) == before
        assert all(SECRET not in d for _, d in svc.tap.records)
        phone.transport = honest
        await _close(svc, phone, admin, agent, bank, dave)

    run(go)
