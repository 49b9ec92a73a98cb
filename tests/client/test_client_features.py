"""Prekey upkeep, business routing, receipts and the event loop staying free."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from e2e.client import Client, LocalRelay, ReceiptStatus
from e2e.clock import ManualClock
from e2e.errors import NotAllowed, StoreError, WindowClosed
from e2e.platform.policy import MessageClass
from e2e.platform.relay import Relay
from e2e.store import MemoryStore, Store, StoreTransaction
from e2e.store.sqlite import SqliteStore


@pytest.fixture(autouse=True)
def fast_scrypt() -> Iterator[None]:
    """This module creates passphrase stores with scrypt n as low as 2^10, through the
    private hook that lowers the creation floor (SPEC.md §9.2)."""
    from e2e.store import atrest

    previous = atrest._set_scrypt_floor(2**10)
    yield
    atrest._set_scrypt_floor(previous)


def _mem() -> MemoryStore:
    return MemoryStore()


# -- prekeys ---------------------------------------------------------------------------------


class _AlwaysNew(dict):  # type: ignore[type-arg]
    """A relay that forgets which prekey ids it has seen (to show the test can fail)."""

    def setdefault(self, key, default=None):  # type: ignore[no-untyped-def]
        return set()


def _retried_upload_then_many_first_messages(relay: Relay) -> dict[str, int]:
    async def run() -> dict[str, int]:
        local = LocalRelay(relay)
        admin = await Client.create_account(_mem(), local.connect, "acme", "business", prekeys=4)
        fail = {"left": 1}

        def lose_answer(op: str) -> None:
            if op == "upload_prekeys" and fail["left"]:
                fail["left"] -= 1
                raise ConnectionError("answer lost after the relay stored the bundles")

        admin.transport.after = lose_answer  # type: ignore[attr-defined]
        # the relay's pool is drained below `low`: top up, lose the answer, retry
        for _ in range(4):
            await relay_take(local, relay, admin)
        with pytest.raises(ConnectionError):
            await admin.upkeep(low=2, target=6)
        await admin.upkeep(low=2, target=6)
        customers = [
            await Client.create_account(_mem(), local.connect, f"c{i}", "customer")
            for i in range(8)
        ]
        for c in customers:
            await c.send("acme", f"hello from {c.profile.account}")
        await admin.sync()
        errors = dict(admin.errors)
        hist = {m.conversation for c in customers for m in await admin.history(c.profile.account)}
        errors["received"] = len(hist)
        for c in [admin, *customers]:
            await c.aclose()
        local.close()
        return errors

    return asyncio.run(run())


async def relay_take(local: LocalRelay, relay: Relay, client: Client) -> None:
    """Someone fetches (and never uses) one of the client's one-time bundles."""
    await local.call(lambda: relay.fetch_bundle(*client.addr.wire))


def test_retried_prekey_upload_never_causes_prekey_reuse() -> None:
    out = _retried_upload_then_many_first_messages(Relay(clock=ManualClock()))
    assert out == {"received": 8}


def test_the_retry_test_fails_on_a_relay_without_idempotent_uploads() -> None:
    relay = Relay(clock=ManualClock())
    relay._published = _AlwaysNew()  # type: ignore[assignment]
    out = _retried_upload_then_many_first_messages(relay)
    assert out.get("PrekeyReused", 0) > 0


def test_upkeep_tops_up_when_low_and_marks_published() -> None:
    async def run() -> None:
        relay = Relay(clock=ManualClock())
        local = LocalRelay(relay)
        c = await Client.create_account(_mem(), local.connect, "acme", "business", prekeys=5)
        assert relay.prekey_count(*c.addr.wire) == 5
        assert await c.upkeep(low=3, target=5) == 5  # not low: nothing new
        for _ in range(3):
            await relay_take(local, relay, c)
        assert await c.upkeep(low=3, target=5) == 5  # 2 left < 3: topped up to 5
        with c.store.transaction() as tx:
            published = tx.app_keys("c/pub/")
        assert len(published) == 2 * 8  # one-time X25519 + one-time KEM ids, 8 bundles
        await c.aclose()
        local.close()

    asyncio.run(run())


# -- routing ---------------------------------------------------------------------------------


def test_routing_assignment_reassignment_and_designated_archive() -> None:
    async def run() -> None:
        relay = Relay(clock=ManualClock())
        local = LocalRelay(relay)
        c = local.connect
        admin = await Client.create_account(_mem(), c, "acme", "business")
        agents = [await admin.add_device(_mem(), c) for _ in range(4)]  # devices 2..5
        archive = await admin.add_device(_mem(), c)  # device 6
        carol = await Client.create_account(_mem(), c, "carol", "customer")
        await admin.designate([archive.profile.device])
        await admin.assign("carol", [agents[0].profile.device])

        async def got(client: Client) -> list[bytes]:
            return [m.body for m in await client.sync() if m.cls is not MessageClass.RECEIPT]

        await carol.send("acme", "first")
        assert await got(agents[0]) == [b"first"]
        assert await got(archive) == [b"first"]
        for other in [admin, *agents[1:]]:
            assert await got(other) == []
        # only assigned (or designated) devices may answer
        with pytest.raises(NotAllowed):
            await agents[1].send("carol", "not my chat")
        await agents[0].send("carol", "agent 2 here")
        assert await got(carol) == [b"agent 2 here"]
        assert await got(archive) == [b"agent 2 here"]
        # reassign: the customer's cached route is stale, refreshed, and resent
        await admin.assign("carol", [agents[2].profile.device])
        await carol.send("acme", "second")
        assert await got(agents[2]) == [b"second"]
        assert await got(archive) == [b"second"]
        assert await got(agents[0]) == []
        await agents[2].send("carol", "agent 4 took over")
        assert await got(carol) == [b"agent 4 took over"]
        for client in [admin, *agents, archive, carol]:
            assert client.errors == {}
            await client.aclose()
        local.close()

    asyncio.run(run())


# -- receipts --------------------------------------------------------------------------------


def test_receipts_are_encrypted_unbilled_and_outside_the_window() -> None:
    async def run() -> None:
        clock = ManualClock()
        relay = Relay(clock=clock)
        local = LocalRelay(relay)
        biz = await Client.create_account(_mem(), local.connect, "acme", "business")
        carol = await Client.create_account(_mem(), local.connect, "carol", "customer")
        sent = await carol.send("acme", "where is my order?")
        got = await biz.sync()  # sends a delivered receipt
        assert [m.body for m in got] == [b"where is my order?"]
        await carol.sync()
        assert await carol.receipt_status(sent.message_id) == {"acme": ReceiptStatus.DELIVERED}
        await biz.mark_read("carol", [sent.message_id])
        await carol.sync()
        assert await carol.receipt_status(sent.message_id) == {"acme": ReceiptStatus.READ}
        reply = await biz.send("carol", "on its way")
        clock.advance(25 * 3600)  # the window closes
        await carol.sync()  # the customer's delivered receipt: does not reopen the window
        await biz.sync()
        assert await biz.receipt_status(reply.message_id) == {"carol": ReceiptStatus.DELIVERED}
        assert not relay.window_open(b"acme", b"carol")
        with pytest.raises(WindowClosed):
            await biz.send("carol", "still there?")
        await biz.mark_read("carol", [sent.message_id])  # never refused by the window
        lines = {line.item for line in relay.bill(b"acme").lines}
        assert "receipt" not in lines
        # receipts are E2E frames like any message: the relay never sees their body
        assert all(b"where is my order?" not in d for _, d in relay.recorder.records)
        for client in (biz, carol):
            assert client.errors == {}
            await client.aclose()
        local.close()

    asyncio.run(run())


# -- the event loop stays free --------------------------------------------------------------


class LoopGuard:
    """A store wrapper that fails if a transaction runs on the event loop's thread."""

    def __init__(self, inner: Store, loop_thread: int) -> None:
        self.inner = inner
        self.loop_thread = loop_thread
        self.transactions = 0

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        if threading.get_ident() == self.loop_thread:
            raise AssertionError("store transaction on the event loop thread")
        self.transactions += 1
        return self.inner.transaction()

    def close(self) -> None:
        if threading.get_ident() == self.loop_thread:
            raise AssertionError("store close on the event loop thread")
        self.inner.close()


def test_store_work_and_scrypt_never_run_on_the_event_loop(tmp_path: Path) -> None:
    async def run() -> None:
        me = threading.get_ident()
        relay = Relay(clock=ManualClock())
        local = LocalRelay(relay)
        opened: list[int] = []

        def open_with_passphrase(name: str) -> LoopGuard:
            opened.append(threading.get_ident())
            store = SqliteStore(tmp_path / f"{name}.db", passphrase="pw", scrypt_n=2**12)
            return LoopGuard(store, me)

        a = await Client.create_account(
            lambda: open_with_passphrase("a"), local.connect, "acme", "business"
        )
        b = await Client.create_account(
            lambda: open_with_passphrase("b"), local.connect, "carol", "customer"
        )
        for i in range(5):
            await b.send("acme", f"m{i}")
            await a.sync()
            await a.send("carol", f"r{i}")
            await b.sync()
        assert me not in opened and len(opened) == 2
        assert isinstance(a.store, LoopGuard) and a.store.transactions > 20
        await a.aclose()
        await b.aclose()
        local.close()

    asyncio.run(run())


def test_a_store_of_another_device_is_refused() -> None:
    async def run() -> None:
        local = LocalRelay(Relay(clock=ManualClock()))
        store = MemoryStore()
        c = await Client.create_account(store, local.connect, "acme", "business")
        with pytest.raises(Exception) as info:
            await Client.create_account(store, local.connect, "other", "business")
        assert "already belongs" in str(info.value) or isinstance(info.value, StoreError)
        await c.aclose()
        local.close()

    asyncio.run(run())


def test_steady_state_cost_does_not_grow_with_unassigned_agents() -> None:
    """Counted, not timed: a steady-state customer message makes the same relay calls and
    the same number of copies whether the business has 2 or 30 agents."""

    async def run(agents: int) -> tuple[list[str], int, list[str], int]:
        relay = Relay(clock=ManualClock())
        local = LocalRelay(relay)
        c = local.connect
        admin = await Client.create_account(_mem(), c, "acme", "business", prekeys=1)
        devs = [await admin.add_device(_mem(), c, prekeys=1) for _ in range(agents)]
        carol = await Client.create_account(_mem(), c, "carol", "customer", auto_receipts=False)
        await admin.designate([1])
        await admin.assign("carol", [devs[-1].profile.device])
        calls: list[str] = []
        carol.transport.after = calls.append  # type: ignore[attr-defined]
        before = relay.pending()
        await carol.send("acme", "first")
        first_calls, first_copies = list(calls), relay.pending() - before
        calls.clear()
        before = relay.pending()
        await carol.send("acme", "steady")
        steady_calls, steady_copies = list(calls), relay.pending() - before
        for d in [admin, *devs, carol]:
            await d.aclose()
        local.close()
        return first_calls, first_copies, steady_calls, steady_copies

    small, large = asyncio.run(run(2)), asyncio.run(run(30))
    assert small == large
    first_calls, first_copies, steady_calls, steady_copies = small
    assert steady_calls == ["submit"] and steady_copies == 2  # the agent and the archive
    assert first_calls.count("fetch_bundle") == 2 and first_copies == 2


def test_a_send_the_relay_never_got_goes_first_on_the_next_send() -> None:
    async def run() -> None:
        local = LocalRelay(Relay(clock=ManualClock()))
        biz = await Client.create_account(_mem(), local.connect, "acme", "business")
        carol = await Client.create_account(_mem(), local.connect, "carol", "customer")
        real = carol.transport.submit

        async def down(envelopes: list[bytes]):  # type: ignore[no-untyped-def]
            raise ConnectionError("relay unreachable")

        carol.transport.submit = down  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await carol.send("acme", "first, while the relay is down")
        assert [o.body for o in await carol.pending()] == [b"first, while the relay is down"]
        carol.transport.submit = real  # type: ignore[method-assign]
        await carol.send("acme", "second")
        assert await carol.pending() == []
        got = [m.body for m in await biz.sync()]
        assert got == [b"first, while the relay is down", b"second"]
        assert [m.body for m in await carol.history("acme")] == got
        for c in (biz, carol):
            await c.aclose()
        local.close()

    asyncio.run(run())
