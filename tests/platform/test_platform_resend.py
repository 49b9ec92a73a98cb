"""The relay's resend path (SPEC.md §10.7, §10.11), attacked: only the content the relay
accepted from that account (same message id and franking commitment) goes again, only to
devices of the chat, never billed, never past a block; every refusal stores nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from world import Service, run

from e2e.client import Client, state
from e2e.errors import Blocked, NotAllowed, StaleDeviceList
from e2e.platform.envelope import Delivery, Envelope
from e2e.store import Address


async def setup(d: Path) -> tuple[Service, Client, list[Client], Any]:
    svc = Service(d)
    [shop] = await svc.account("shop", "business", auto_receipts=False)
    carol = await svc.account("carol", "customer", 2, auto_receipts=False)
    await carol[0].send("shop", "hi")
    await shop.sync()
    svc.clock.advance(30)
    msg = await shop.send("carol", "your parcel left the depot")
    for c in carol:
        await c.sync()
    svc.clock.advance(600)
    return svc, shop, carol, msg


async def copies(dev: Client, msg: Any, to: list[Address], **change: Any) -> list[bytes]:
    """``dev``'s message sealed again for ``to`` (its fields changed as asked)."""

    def seal(tx: Any) -> tuple[bytes, ...]:
        return state.seal_copies(tx, dev.profile, state.Draft.of(msg), to)

    envs = [Envelope.from_bytes(e) for e in await dev._tx(seal)]
    if change:
        import dataclasses

        envs = [dataclasses.replace(e, **change) for e in envs]
    return [e.to_bytes() for e in envs]


def snapshot(svc: Service) -> tuple[Any, ...]:
    return (svc.rows("SELECT account, device_id, received_at FROM mailbox ORDER BY seq"),
            svc.rows("SELECT * FROM billing"), svc.rows("SELECT * FROM chats"))  # fmt: skip


def test_a_resend_goes_with_the_accepted_time_and_is_not_billed(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (phone, laptop), msg = await setup(fast_tmp)
        bill, chats = snapshot(svc)[1:]
        got = await shop.transport.resend(await copies(shop, msg, [Address("carol", 2)]))
        assert (got.message_id, got.received_at, got.copies, got.price) == (
            msg.message_id, msg.time, 1, 0)  # fmt: skip
        assert snapshot(svc) == ([(b"carol", 2, msg.time)], bill, chats)
        [raw] = await laptop.transport.fetch()
        assert Delivery.from_bytes(raw).received_at == msg.time
        assert await laptop.sync() == []  # the laptop had it: recognised, acknowledged
        assert svc.pending() == 0
        await svc.aclose()

    run(go)


def test_a_resend_of_other_content_or_another_message_is_refused(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (phone, _), msg = await setup(fast_tmp)
        before = snapshot(svc)
        laptop = [Address("carol", 2)]
        cases = [
            await copies(shop, msg, laptop, commitment=bytes(32)),  # other content
            await copies(shop, msg, laptop, message_id=bytes(16)),  # never accepted
        ]
        for envs in cases:
            with pytest.raises(NotAllowed):
                await shop.transport.resend(envs)
        # Another account may not resend the shop's message under its own name: carol's
        # device seals the same id and text; the relay has no such message from carol.
        forged = await copies(phone, msg, [Address("shop", 1)])
        with pytest.raises(NotAllowed):
            await phone.transport.resend(forged)
        assert snapshot(svc) == before
        await svc.aclose()

    run(go)


def test_a_resend_goes_only_to_devices_of_the_chat_and_not_past_a_block(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (phone, _), msg = await setup(fast_tmp)
        [bob] = await svc.account("bob", "customer")
        agent = await svc.add_device(shop)
        await shop.assign("carol", [1])  # the chat is the first shop device's only
        await shop.refresh("bob")
        await shop.refresh("shop")
        await shop._ensure_sessions([Address("bob", 1), agent.addr])
        before = snapshot(svc)
        with pytest.raises(StaleDeviceList) as refused:
            await shop.transport.resend(await copies(shop, msg, [Address("bob", 1)]))
        assert refused.value.extra == [(b"bob", 1)]
        with pytest.raises(StaleDeviceList):  # the shop's own device outside the route
            await shop.transport.resend(await copies(shop, msg, [agent.addr]))
        await phone.block("shop")
        before = snapshot(svc)
        with pytest.raises(Blocked):
            await shop.transport.resend(await copies(shop, msg, [Address("carol", 2)]))
        assert snapshot(svc) == before
        del bob
        await svc.aclose()

    run(go)
