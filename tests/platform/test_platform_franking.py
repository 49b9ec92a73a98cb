"""Franking, receive-side checks of the envelope against the sealed metadata, device
certificates, and the demo."""

from __future__ import annotations

import os

import pytest

from e2e.clock import ManualClock
from e2e.errors import (
    E2EError,
    EnvelopeMismatch,
    FrankingMismatch,
    InvalidSignature,
    KeyChangePending,
    KeyMismatch,
    ReportRejected,
)
from e2e.keys import KeyPair
from e2e.platform import Business, Customer, Delivery, Inner, MessageClass, Relay
from e2e.platform.directory import DeviceCertificate
from e2e.platform.envelope import Envelope
from e2e.platform.franking import Report, ReportItem, commit


def chat():  # type: ignore[no-untyped-def]
    relay = Relay(clock=ManualClock())
    shop = Business("shop", relay)
    shop.add_device()
    alice = Customer("alice", relay)
    alice.add_device()
    alice.device.send(b"shop", "hi")
    shop.device.sync()
    return relay, shop, alice


def state(dev) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [s.to_bytes() for k in sorted(dev.sessions) for s in dev.sessions[k]]


def forge(relay, shop, *, env_cls, inner_cls, commitment=None, body=b"buy now"):  # type: ignore[no-untyped-def]
    """A malicious business device: frames the inner message itself and submits it."""
    dev = shop.device
    mid, fk = os.urandom(16), os.urandom(32)
    inner = Inner(inner_cls, b"shop", b"alice", mid, fk, body)
    c = commitment if commitment is not None else commit(fk, env_cls, b"shop", b"alice", mid, body)
    frame = dev._session_for((b"alice", 1)).encrypt(inner.to_padded())
    env = Envelope(env_cls, b"shop", 1, b"alice", b"alice", 1, mid, c, frame)
    relay.submit(dev.addr, [env.to_bytes()])
    return relay.fetch((b"alice", 1))[-1]


def test_report_of_last_five_verifies() -> None:
    relay, shop, alice = chat()
    for i in range(7):
        shop.device.send(b"alice", f"offer {i}")
    alice.device.sync()
    verified = alice.report_spam(shop)
    assert [v.body for v in verified] == [f"offer {i}".encode() for i in range(2, 7)]
    assert all(v.from_account == b"shop" and v.from_device == 1 for v in verified)
    assert relay.reports[-1][0] == b"alice"
    with pytest.raises(E2EError):
        shop.device.send(b"alice", "more")  # reporting blocked the business


def test_report_rejections() -> None:
    relay, shop, alice = chat()
    shop.device.send(b"alice", "genuine")
    msg = alice.device.sync()[-1]
    bob = Customer("bob", relay)
    bob.add_device()
    item = ReportItem(msg.delivery, msg.franking_key, msg.body)
    cases = [
        Report(b"bob", b"shop", (item,)),  # not delivered to bob
        Report(b"alice", b"shop", (ReportItem(msg.delivery, os.urandom(32), msg.body),)),
        Report(b"alice", b"shop", (ReportItem(msg.delivery, msg.franking_key, b"genuinE"),)),
        Report(b"alice", b"shop", (item, item)),  # the same message twice
    ]
    reporters = [b"bob", b"alice", b"alice", b"alice"]
    for report, reporter in zip(cases, reporters, strict=True):
        with pytest.raises(ReportRejected):
            relay.report(reporter, report.to_bytes())
    with pytest.raises(ReportRejected):
        relay.report(b"bob", Report(b"alice", b"shop", (item,)).to_bytes())
    with pytest.raises(ReportRejected):
        relay.report(b"alice", Report(b"alice", b"shop", ()).to_bytes())
    other = Business("other", relay)
    with pytest.raises(ReportRejected):
        relay.report(b"alice", Report(b"alice", other.name, (item,)).to_bytes())
    assert relay.reports == []
    assert relay.report(b"alice", Report(b"alice", b"shop", (item,)).to_bytes())


def test_device_refuses_a_bad_commitment_state_unchanged() -> None:
    relay, shop, alice = chat()
    raw = forge(relay, shop, env_cls=MessageClass.SERVICE, inner_cls=MessageClass.SERVICE,
                commitment=bytes(32))  # fmt: skip
    before = state(alice.device)
    with pytest.raises(FrankingMismatch):
        alice.device.receive(raw)
    assert state(alice.device) == before
    assert alice.device.errors == {"FrankingMismatch": 1}


def test_device_refuses_a_relabelled_class() -> None:
    """Marketing sealed inside, labelled service outside (to dodge opt-in and billing)."""
    relay, shop, alice = chat()
    raw = forge(relay, shop, env_cls=MessageClass.SERVICE, inner_cls=MessageClass.MARKETING)
    before = state(alice.device)
    with pytest.raises(EnvelopeMismatch):
        alice.device.receive(raw)
    assert state(alice.device) == before


def test_rogue_device_and_changed_identity_are_refused() -> None:
    relay, shop, alice = chat()
    alice.pin(shop)
    rogue = KeyPair.generate()
    fake = DeviceCertificate.issue(KeyPair.generate(), b"shop", 9, rogue.public)
    with pytest.raises(InvalidSignature):
        relay.register_device(fake.to_bytes())
    # A relay that inserts the rogue device anyway is caught by the key directory (the
    # served list is not the logged one) and, if it logs it too, by the pinned identity.
    relay._accounts[b"shop"].devices[9] = fake
    with pytest.raises(KeyMismatch):
        alice.device.refresh(b"shop")
    relay._log_account(b"shop")
    with pytest.raises(InvalidSignature):
        alice.device.refresh(b"shop")
    del relay._accounts[b"shop"].devices[9]
    relay._accounts[b"shop"].identity = KeyPair.generate().public
    with pytest.raises(KeyMismatch):
        alice.device.refresh(b"shop")
    relay._log_account(b"shop")
    with pytest.raises(KeyChangePending):
        alice.device.refresh(b"shop")


def test_delivery_for_another_device_is_refused() -> None:
    relay, shop, alice = chat()
    shop.device.send(b"alice", "x")
    raw = relay.fetch(alice.device.addr)[-1]
    d = Delivery.from_bytes(raw)
    env = d.open_envelope()
    moved = Envelope(env.cls, env.from_account, env.from_device, env.to_account, b"alice", 2,
                     env.message_id, env.commitment, env.frame)  # fmt: skip
    with pytest.raises(EnvelopeMismatch):
        alice.device.receive(Delivery(moved.to_bytes(), d.received_at, d.tag, d.seq).to_bytes())


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
