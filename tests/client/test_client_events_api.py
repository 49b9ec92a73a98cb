"""The events API of a device (SPEC.md §10.11) over the relay service: every kind of event a
conversation produces arrives once, in order, from a cursor the application advances itself,
and survives a restart of the device."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from world import Service, run

from e2e.client import (
    Client,
    DevicesChanged,
    Event,
    KeyChanged,
    MessageReceived,
    MessageSent,
    ReceiptReceived,
    ReceiptStatus,
    SendRefused,
)
from e2e.errors import KeyChangePending, NoPriorContact, WireFailure
from e2e.platform.policy import MessageClass


async def take(dev: Client, n: int) -> list[Event]:
    """The next ``n`` events of ``dev`` through ``events()``, acknowledging each."""
    out: list[Event] = []
    async for ev in dev.events(wait_ms=2000):
        out.append(ev)
        await dev.ack(ev)
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def test_a_conversation_as_events(fast_tmp: Path) -> None:
    async def go() -> None:
        svc = Service(fast_tmp, stores="sqlite")
        [shop] = await svc.account("shop", "business")
        [carol] = await svc.account("carol", "customer")
        # A business may not write first: a refusal the business learns as an event too.
        with pytest.raises(NoPriorContact):
            await shop.send("carol", "buy now")
        [refused] = await shop.read_events()
        assert isinstance(refused, SendRefused) and refused.error == "NoPriorContact"
        assert (refused.to, refused.cls) == ("carol", MessageClass.SERVICE)
        await shop.ack(refused)

        hello = await carol.send("shop", "is my order shipped?")
        [sent] = await carol.read_events()
        assert isinstance(sent, MessageSent) and sent.message.message_id == hello.message_id
        [got] = await take(shop, 1)  # syncs: the message, and a delivered receipt goes back
        assert isinstance(got, MessageReceived)
        assert (got.message.body, got.message.sender.name) == (b"is my order shipped?", "carol")
        reply = await shop.send("carol", "yes, this morning")
        await shop.mark_read("carol", [hello.message_id])
        evs = await take(carol, 4)  # its own MessageSent first, then what the shop sent
        kinds = [type(e) for e in evs]
        assert kinds == [MessageSent, ReceiptReceived, MessageReceived, ReceiptReceived], kinds
        assert [e.status for e in evs if isinstance(e, ReceiptReceived)] == [
            ReceiptStatus.DELIVERED, ReceiptStatus.READ]  # fmt: skip
        assert evs[2].message.message_id == reply.message_id  # type: ignore[attr-defined]
        assert await carol.read_events() == []  # all acknowledged
        assert await carol.receipt_status(hello.message_id) == {"shop": ReceiptStatus.READ}

        # A device added to the shop's account: carol's next send finds the list changed.
        await svc.add_device(shop)
        await carol.send("shop", "thanks")
        changed = [e for e in await carol.read_events() if isinstance(e, DevicesChanged)]
        assert [(e.account, e.added, e.removed) for e in changed] == [("shop", (2,), ())]
        await svc.aclose()

    run(go)


def test_the_cursor_survives_a_restart_and_after_reads_from_any_position(fast_tmp: Path) -> None:
    async def go() -> None:
        svc = Service(fast_tmp, stores="sqlite")
        [shop] = await svc.account("shop", "business", auto_receipts=False)
        [carol] = await svc.account("carol", "customer", auto_receipts=False)
        for i in range(3):
            await carol.send("shop", f"m{i}")
        await shop.sync()
        evs = await shop.read_events()
        assert [e.message.body for e in evs] == [b"m0", b"m1", b"m2"]  # type: ignore[attr-defined]
        await shop.ack(evs[0])
        # A restart: the cursor is the store's; what was not acknowledged comes again.
        await shop.aclose()
        svc.clients.remove(shop)
        shop = await Client.open(svc.opener("shop-1"), svc.connect, auto_receipts=False)
        svc.clients.append(shop)
        assert await shop.cursor() == evs[0].seq
        assert await shop.read_events() == evs[1:]
        # An application keeping its own position reads from there, whatever the cursor.
        assert await shop.read_events(after=evs[1].seq) == evs[2:]
        assert await shop.ack(evs[2]) == evs[2].seq
        assert await shop.ack(evs[1]) == evs[2].seq  # never back
        assert await shop.read_events() == []
        await svc.aclose()

    run(go)


def test_a_key_change_is_an_event(fast_tmp: Path) -> None:
    async def go() -> None:
        svc = Service(fast_tmp)
        [shop] = await svc.account("shop", "business")
        [carol] = await svc.account("carol", "customer")
        await carol.send("shop", "hi")
        old = await shop.account_identity()
        # The operator resets the shop's account; it comes back under a new account key.
        for table, column in [("devices", "account"), ("device_lists", "account"),
                              ("prekeys", "account"),
                              ("last_resort", "account"), ("accounts", "name")]:  # fmt: skip
            svc.operator().run(
                lambda tx, t=table, c=column: tx.execute(f"DELETE FROM {t} WHERE {c} = ?",
                                                         (b"shop",))  # fmt: skip
            )
        await shop.aclose()
        svc.clients.remove(shop)
        [shop2] = await svc.account("shop", "business")
        new = await shop2.account_identity()
        with pytest.raises(KeyChangePending):
            await carol.refresh("shop")
        changes = [e for e in await carol.read_events() if isinstance(e, KeyChanged)]
        assert [(e.account, e.old, e.new) for e in changes] == [("shop", old, new)]
        with pytest.raises(KeyChangePending):
            await carol.refresh("shop")  # the same change again: no second event
        assert len([e for e in await carol.read_events() if isinstance(e, KeyChanged)]) == 1
        await svc.aclose()

    run(go)


def test_events_waits_out_an_unreachable_relay(fast_tmp: Path) -> None:
    """``events()`` keeps going through retryable failures of its syncs (here the first
    three fetches find the relay unreachable)."""

    async def go() -> None:
        svc = Service(fast_tmp)
        [shop] = await svc.account("shop", "business", auto_receipts=False)
        [carol] = await svc.account("carol", "customer", auto_receipts=False)
        await carol.send("shop", "anyone there?")
        failures = []
        fetch = shop.transport.fetch

        async def flaky(wait_ms: int = 0) -> list[bytes]:
            if len(failures) < 3:
                failures.append(wait_ms)
                raise WireFailure("relay unreachable")
            return await fetch(wait_ms)

        shop.transport.fetch = flaky  # type: ignore[method-assign]
        [ev] = await asyncio.wait_for(take(shop, 1), 30)
        assert isinstance(ev, MessageReceived) and ev.message.body == b"anyone there?"
        assert len(failures) == 3
        await svc.aclose()

    run(go)
