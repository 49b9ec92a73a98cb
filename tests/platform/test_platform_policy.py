"""Relay policy from metadata alone, through the relay service: windows, templates, marketing,
controls, billing, routing and device-list changes. Every refusal is a typed PolicyError,
stores nothing at the relay, and -- a business device asks before it seals -- writes nothing
in the sender's store: no message key is spent."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from world import Service, run

from e2e.client import Client
from e2e.errors import (
    Blocked,
    DecodeError,
    Forbidden,
    Limited,
    NoPriorContact,
    NotAllowed,
    NotOptedIn,
    PolicyError,
    StaleDeviceList,
    WindowClosed,
)
from e2e.platform import Envelope, MessageClass, PolicyConfig, PriceTable
from e2e.store import Address

S, T, M = MessageClass.SERVICE, MessageClass.TEMPLATE, MessageClass.MARKETING
HOUR = 3600


async def make(d: Path, config: PolicyConfig | None = None, agents: int = 2,
               devices: int = 1) -> tuple[Service, list[Client], list[Client]]:  # fmt: skip
    svc = Service(d, config=config, stores="sqlite")
    shop = await svc.account("shop", "business", agents, auto_receipts=False)
    alice = await svc.account("alice", "customer", devices, auto_receipts=False)
    return svc, shop, alice


def rows(svc: Service, dev: Client) -> list[tuple[Any, ...]]:
    """A device's sessions (with their skipped keys and archives), outbox, history and seen
    ids as stored: sealed, so any write changes them (a fetched device list may be stored;
    a message key spent or a message queued may not)."""
    path = svc.dir / f"{dev.profile.account}-{dev.profile.device}.db"
    with sqlite3.connect(path) as c:
        got = c.execute("SELECT kind, id, value FROM records ORDER BY kind, id").fetchall()
    keep = ("c/out/", "c/msg/", "c/seen/")
    return [r for r in got if r[0] in ("session", "skip", "archive") or r[1].startswith(keep)]


async def refused(svc: Service, dev: Client, to: str, cls: MessageClass,
                  err: type[PolicyError]) -> None:  # fmt: skip
    pending, before = svc.pending(), rows(svc, dev)
    with pytest.raises(err):
        await dev.send(to, "x", cls)
    assert svc.pending() == pending  # nothing stored at the relay
    assert rows(svc, dev) == before  # nothing written: no message key spent


def test_no_business_initiated_contact(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, _ = await make(fast_tmp)
        for cls in (S, T, M):
            await refused(svc, shop[0], "alice", cls, NoPriorContact)
        assert svc.refusals()["no_prior_contact"] == 3
        await svc.aclose()

    run(go)


def test_window_opens_closes_and_resets(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp)
        await alice[0].send("shop", "hi")
        await shop[0].send("alice", "hello")
        svc.clock.advance(24 * HOUR - 1)
        await shop[0].send("alice", "still open")
        svc.clock.advance(1)
        await refused(svc, shop[0], "alice", S, WindowClosed)
        await shop[0].send("alice", "template is fine", T)
        await alice[0].send("shop", "me again")
        await shop[0].send("alice", "window reset")
        assert await shop[0].transport.window_open("alice")  # type: ignore[attr-defined]
        await svc.aclose()

    run(go)


def test_billing_with_a_configurable_price_table(fast_tmp: Path) -> None:
    async def go() -> None:
        prices = PriceTable(service=1, template=50, template_in_window=5, marketing=100)
        svc, shop, alice = await make(fast_tmp, PolicyConfig(prices=prices, window_seconds=HOUR))
        biz = shop[0]

        async def price(text: str, cls: MessageClass = S) -> int:
            return svc.receipts[(await biz.send("alice", text, cls)).message_id].price

        await alice[0].send("shop", "hi")
        await alice[0].opt_in("shop")
        assert await price("a") == 1
        assert await price("b", T) == 5
        assert await price("c", M) == 100
        svc.clock.advance(HOUR)
        await refused(svc, biz, "alice", S, WindowClosed)
        assert await price("d", T) == 50
        bill = await biz.transport.bill()  # type: ignore[attr-defined]
        lines = {(PriceTable.line(MessageClass(c), bool(w)), n, p) for c, w, n, p in
                 zip(bill.classes, bill.in_window, bill.counts, bill.unit_prices, strict=True)}
        assert lines == {
            ("service", 1, 1),
            ("template (in window)", 1, 5),
            ("template (outside window)", 1, 50),
            ("marketing", 1, 100),
        }  # fmt: skip
        assert bill.total == 156
        with pytest.raises(NotAllowed):  # customers are never billed: they have no bill
            await alice[0].transport.bill()  # type: ignore[attr-defined]
        assert svc.rows("SELECT business FROM billing") == [(b"shop",)] * 4
        await svc.aclose()

    run(go)


def test_marketing_needs_opt_in_and_no_block_or_limit(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp)
        biz, me = shop[0], alice[0]
        await me.send("shop", "hi")
        await refused(svc, biz, "alice", M, NotOptedIn)
        assert svc.ads.audience(b"shop") == []
        await me.opt_in("shop")
        assert svc.ads.audience(b"shop") == [b"alice"]
        await biz.send("alice", "sale", M)
        await me.limit("shop")
        assert svc.ads.audience(b"shop") == []
        await refused(svc, biz, "alice", M, Limited)
        await me.limit("shop", False)
        await me.block("shop")
        assert svc.ads.audience(b"shop") == []
        for cls in (S, T, M):
            await refused(svc, biz, "alice", cls, Blocked)
        await me.block("shop", False)
        await biz.send("alice", "welcome back")
        await svc.aclose()

    run(go)


def test_limit_caps_templates(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp, PolicyConfig(limited_templates=2))
        await alice[0].send("shop", "hi")
        await alice[0].limit("shop")
        await shop[0].send("alice", "service still fine")
        await shop[0].send("alice", "t1", T)
        await shop[0].send("alice", "t2", T)
        await refused(svc, shop[0], "alice", T, Limited)
        svc.clock.advance(24 * HOUR)
        await shop[0].send("alice", "t3 next day", T)
        await svc.aclose()

    run(go)


def test_roles_that_may_not_talk(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp)
        await svc.account("bob", "customer")
        other = await svc.account("other", "business")
        with pytest.raises(NotAllowed):
            await alice[0].send("bob", "hi")
        with pytest.raises(NotAllowed):
            await shop[0].send("other", "hi")
        with pytest.raises(NotAllowed):
            await alice[0].send("shop", "hi", T)
        with pytest.raises(NotAllowed):
            await shop[0].limit("alice")  # limits and opt-ins are a customer's (blocking is
            # both sides': a business blocks a customer, SPEC §10.13)
        assert other and svc.pending() == 0
        await svc.aclose()

    run(go)


def test_batch_must_cover_exactly_the_current_devices(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp, agents=2, devices=2)
        await alice[0].send("shop", "hi")
        # A hand-made batch that leaves out one agent is refused with the difference (the
        # relay never opens a frame, so opaque ones do here).
        mid = os.urandom(16)
        envs = [Envelope(S, b"alice", 1, b"shop", *dest, mid, bytes(32), b"frame").to_bytes()
                for dest in [(b"shop", 1), (b"alice", 2)]]  # fmt: skip
        pending = svc.pending()
        with pytest.raises(StaleDeviceList) as info:
            await alice[0].transport.submit(envs)
        assert info.value.missing == [(b"shop", 2)] and info.value.extra == []
        with pytest.raises(Forbidden):  # envelopes that claim another sender device
            await alice[1].transport.submit(envs)
        with pytest.raises(DecodeError):
            await alice[0].transport.submit([])
        assert svc.pending() == pending
        await svc.aclose()

    run(go)


def test_device_list_changes_are_followed(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await make(fast_tmp, agents=2, devices=1)
        await alice[0].send("shop", "hi")
        for a in shop:
            await a.sync()
        await shop[0].send("alice", "one")
        tablet = await svc.add_device(alice[0], auto_receipts=False)
        # The agent's cached list is stale: the relay says so, it refreshes and re-sends.
        two = await shop[0].send("alice", "two")
        assert svc.receipts[two.message_id].copies == 3  # alice 1, alice 2 (new), agent 2
        assert [m.body for m in await tablet.sync()] == [b"two"]
        assert [m.body for m in await alice[0].sync()] == [b"one", b"two"]
        await shop[0].revoke_device(2)
        after = await alice[0].send("shop", "after removal")
        assert svc.receipts[after.message_id].copies == 2  # agent 1 + tablet
        with alice[0].store.transaction() as tx:
            assert tx.load_session(Address("shop", 2)) is None
        assert svc.refusals()["stale_device_list"] == 2
        await svc.aclose()

    run(go)
