"""Franking, receive-side checks of the envelope against the sealed metadata, device
certificates, and the demo, through the relay service."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from world import Service, open_raw, run

from e2e.client import Client, Undecryptable
from e2e.errors import (
    E2EError,
    EnvelopeMismatch,
    Forbidden,
    InvalidSignature,
    KeyChangePending,
    KeyMismatch,
    ReportRejected,
)
from e2e.keys import KeyPair
from e2e.platform import Delivery, Inner, MessageClass
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.envelope import Envelope
from e2e.platform.franking import Report, ReportItem, commit
from e2e.store import Address


async def chat(d: Path, alice_devices: int = 1) -> tuple[Service, Client, list[Client]]:
    svc = Service(d, stores="sqlite")
    (shop,) = await svc.account("shop", "business", auto_receipts=False)
    alice = await svc.account("alice", "customer", alice_devices, auto_receipts=False)
    await alice[0].send("shop", "hi")
    await shop.sync()
    return svc, shop, alice


def rows(svc: Service, dev: Client) -> list[tuple[Any, ...]]:
    """Every record of the device's store as stored (sealed: any write changes them) but its
    event log and the store's epoch, which keeping a refused delivery writes (SPEC §10.11)."""
    with sqlite3.connect(svc.dir / f"{dev.profile.account}-{dev.profile.device}.db") as c:
        got = c.execute("SELECT kind, id, value FROM records ORDER BY kind, id").fetchall()
    return [r for r in got if not r[1].startswith("c/ev") and r[:2] != ("meta", "epoch")]


async def forge(shop: Client, *, env_cls: MessageClass, inner_cls: MessageClass,
                commitment: bytes | None = None, body: bytes = b"buy now") -> None:  # fmt: skip
    """A malicious business device: frames the inner message itself and submits it."""
    mid, fk = os.urandom(16), os.urandom(32)
    inner = Inner(inner_cls, b"shop", b"alice", mid, fk, body)
    c = commitment if commitment is not None else commit(fk, env_cls, b"shop", b"alice", mid, body)
    frame = await shop._tx(lambda tx: tx.encrypt(Address("alice", 1), inner.to_padded()))
    env = Envelope(env_cls, b"shop", 1, b"alice", b"alice", 1, mid, c, frame)
    await shop.transport.submit([env.to_bytes()])


def test_report_of_last_five_verifies(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (alice,) = await chat(fast_tmp)
        for i in range(7):
            await shop.send("alice", f"offer {i}")
        await alice.sync()
        assert await alice.report_spam("shop") == 5
        [(reporter, business, count, raw)] = svc.rows(
            "SELECT reporter, business, messages, report FROM reports"
        )
        assert (reporter, business, count) == (b"alice", b"shop", 5)
        items = Report.from_bytes(raw).items
        assert [i.body for i in items] == [f"offer {i}".encode() for i in range(2, 7)]
        envs = [Delivery.from_bytes(i.delivery).open_envelope() for i in items]
        assert all(e.sender == (b"shop", 1) for e in envs)
        with pytest.raises(E2EError):
            await shop.send("alice", "more")  # reporting blocked the business
        await svc.aclose()

    run(go)


def test_report_rejections(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (alice,) = await chat(fast_tmp)
        await shop.send("alice", "genuine")
        msg = (await alice.sync())[-1]
        (bob,) = await svc.account("bob", "customer", auto_receipts=False)
        (other,) = await svc.account("other", "business", auto_receipts=False)
        item = ReportItem(msg.delivery, msg.franking_key, msg.body)
        cases = [
            (bob, Report(b"bob", b"shop", (item,))),  # not delivered to bob
            (alice, Report(b"alice", b"shop",
                           (ReportItem(msg.delivery, os.urandom(32), msg.body),))),
            (alice, Report(b"alice", b"shop",
                           (ReportItem(msg.delivery, msg.franking_key, b"genuinE"),))),
            (alice, Report(b"alice", b"shop", (item, item))),  # the same message twice
            (bob, Report(b"alice", b"shop", (item,))),  # signed for another customer
            (alice, Report(b"alice", b"shop", ())),
            (alice, Report(b"alice", b"other", (item,))),  # another business
        ]  # fmt: skip
        for reporter, report in cases:
            with pytest.raises(ReportRejected):
                await reporter.transport.report(report.to_bytes(), True)
        assert svc.rows("SELECT * FROM reports") == []
        assert other.profile.account == "other"
        good = Report(b"alice", b"shop", (item,)).to_bytes()
        assert await alice.transport.report(good, True) == 1
        await svc.aclose()

    run(go)


def test_device_refuses_a_bad_commitment_state_unchanged(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (alice,) = await chat(fast_tmp)
        await forge(shop, env_cls=MessageClass.SERVICE, inner_cls=MessageClass.SERVICE,
                    commitment=bytes(32))  # fmt: skip
        before = rows(svc, alice)
        assert await alice.sync() == []
        assert rows(svc, alice) == before  # sessions, history, seen ids: as they were
        assert alice.errors == {"FrankingMismatch": 1}
        # kept, with its reason, before it was acknowledged
        [kept] = [e for e in await alice.read_events() if isinstance(e, Undecryptable)]
        assert kept.error == "FrankingMismatch"
        assert kept.sender == Address("shop", 1) and kept.delivery
        assert svc.pending() == 0  # refused and acknowledged: not delivered again
        await svc.aclose()

    run(go)


def test_device_refuses_a_relabelled_class(fast_tmp: Path) -> None:
    """Marketing sealed inside, labelled service outside (to dodge opt-in and billing)."""

    async def go() -> None:
        svc, shop, (alice,) = await chat(fast_tmp)
        await forge(shop, env_cls=MessageClass.SERVICE, inner_cls=MessageClass.MARKETING)
        [raw] = await alice.transport.fetch()
        before = rows(svc, alice)
        with pytest.raises(EnvelopeMismatch):
            await open_raw(alice, raw)
        assert rows(svc, alice) == before
        await svc.aclose()

    run(go)


def test_rogue_device_and_changed_identity_are_refused(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, (alice,) = await chat(fast_tmp)
        await alice.pin_log_key(svc.service.log_public_key)
        shop_key = await shop.account_identity()
        rogue = KeyPair.generate()
        other = KeyPair.generate()
        fake = DeviceCertificate.issue(other, b"shop", 9, rogue.public)
        forged = SignedDeviceList.sign(other, b"shop", 99, [fake.to_bytes()]).to_bytes()
        dev = svc.relay.connect(Address("shop", 9), rogue)
        with pytest.raises(InvalidSignature):  # not signed by the account key
            await dev.register_device(fake.to_bytes(), forged)
        with pytest.raises(Forbidden):  # not in the account's device list
            await dev.register_device(fake.to_bytes())
        # A relay that inserts the rogue device anyway is caught: the served certificates are
        # not the account's signed device list, logged or not.
        svc.operator().run(lambda tx: tx.put_device(b"shop", 9, fake.to_bytes(), rogue.public))
        with pytest.raises(KeyMismatch):
            await alice.refresh("shop")
        svc.operator().run(lambda tx: svc.service._log_account(tx, b"shop", shop_key))
        with pytest.raises(KeyMismatch):
            await alice.refresh("shop")
        eve = KeyPair.generate().public

        def swap_key(tx: Any) -> None:
            tx.delete_device(b"shop", 9)
            tx.execute("UPDATE accounts SET identity = ? WHERE name = ?", (eve, b"shop"))

        svc.operator().run(swap_key)
        with pytest.raises(KeyMismatch):
            await alice.refresh("shop")
        svc.operator().run(lambda tx: svc.service._log_account(tx, b"shop", eve))
        with pytest.raises(KeyChangePending):
            await alice.refresh("shop")
        await svc.aclose()

    run(go)


def test_delivery_for_another_device_is_refused(fast_tmp: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await chat(fast_tmp, alice_devices=2)
        await shop.send("alice", "x")
        raw = (await alice[0].transport.fetch())[-1]
        d = Delivery.from_bytes(raw)
        env = d.open_envelope()
        moved = Envelope(env.cls, env.from_account, env.from_device, env.to_account, b"alice", 2,
                         env.message_id, env.commitment, env.frame)  # fmt: skip
        with pytest.raises(EnvelopeMismatch):  # handed to alice's device 1 as if it were 2's
            await open_raw(alice[0], Delivery(moved.to_bytes(), d.received_at, d.tag,
                                              d.seq).to_bytes())  # fmt: skip
        await svc.aclose()

    run(go)


def test_demo_runs_and_passes_its_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from e2e import demo

    assert demo.main([]) == 0
    out = capsys.readouterr().out
    for part in ("What the relay saw", "What the ad service saw", "Bill for acme-shop",
                 "Proof summary", "SQLite", "all checks passed", "WindowClosed",
                 "NotOptedIn", "NoPriorContact", "Blocked", "http://127.0.0.1:",
                 "agent 2 restarted from its SQLite store", "NotAllowed",
                 "alice: read"):  # fmt: skip
        assert part in out, part
    assert "FAIL" not in out
