"""The message class is bound end to end (inside the frame and in the franking commitment),
checked by the recipient's device against the content, and reportable in a way the relay
can verify (issue: a marketing text sent as SERVICE inside the window was accepted at price
0 without opt-in and nobody could tell)."""

from __future__ import annotations

import pytest

from e2e.clock import ManualClock
from e2e.errors import MisdeclaredClass, PolicyError, ReportRejected
from e2e.platform import Business, Customer, MessageClass, Relay
from e2e.platform.envelope import Delivery, Envelope, Inner
from e2e.platform.franking import ReportItem, commit, verify_class_report
from e2e.platform.policy import Template, check_class

S, T, M = MessageClass.SERVICE, MessageClass.TEMPLATE, MessageClass.MARKETING
PROMO = b"50% off all shoes this weekend only! Reply STOP to opt out"


def world() -> tuple[Relay, Business, Customer]:
    relay = Relay(clock=ManualClock())
    shop = Business("shop", relay)
    shop.add_device()
    alice = Customer("alice", relay)
    alice.add_device()
    relay.register_template(b"shop", b"promo-1", M, PROMO)
    relay.register_template(b"shop", b"receipt", T, b"Your order has shipped.")
    alice.device.send(b"shop", "hi, where is my order?")  # opens the service window
    shop.device.sync()
    return relay, shop, alice


def test_marketing_sent_as_service_is_flagged_reported_and_penalized() -> None:
    relay, shop, alice = world()
    # the attack: the registered marketing text, declared SERVICE inside the window
    receipt = shop.device.send(b"alice", PROMO, S)
    assert receipt.price == 0  # the relay cannot read it: it bills what was declared ...
    (msg,) = alice.device.sync()
    assert msg.cls is S and msg.misdeclared  # ... but the customer's device sees through it
    assert msg.class_check is not None and msg.class_check.content is M
    # the report reveals the message; the relay verifies its own tag and the commitment
    verdict = alice.report_class(msg)
    assert (verdict.declared, verdict.content) == (S, M)
    bill = relay.bill(b"shop")
    penalty = [line for line in bill.lines if line.item.startswith("penalty")]
    assert [(p.item, p.count, p.unit_price) for p in penalty] == [
        ("penalty: marketing declared as service", 1, relay.config.prices.marketing)
    ]
    with pytest.raises(ReportRejected):  # once per message
        alice.report_class(msg)


def test_honest_messages_are_not_flagged_and_not_reportable() -> None:
    relay, shop, alice = world()
    shop.device.send(b"alice", "Your parcel is at the door", S)
    relay.opt_in(b"alice", b"shop")
    shop.device.send(b"alice", PROMO, M, template_id=b"promo-1")
    shop.device.send(b"alice", b"Your order has shipped.", T, template_id=b"receipt")
    msgs = alice.device.sync()
    assert [m.misdeclared for m in msgs] == [False, False, False]
    for m in msgs:
        with pytest.raises(ReportRejected):
            alice.report_class(m)
    assert not any(line.item.startswith("penalty") for line in relay.bill(b"shop").lines)


def test_template_id_must_match_its_registered_class() -> None:
    relay, shop, alice = world()
    relay.opt_in(b"alice", b"shop")
    with pytest.raises(MisdeclaredClass):  # the relay checks the metadata it can see
        shop.device.send(b"alice", PROMO, T, template_id=b"promo-1")
    with pytest.raises(MisdeclaredClass):
        shop.device.send(b"alice", PROMO, M, template_id=b"no-such")
    assert isinstance(MisdeclaredClass("x"), PolicyError)


def test_a_report_cannot_change_the_declared_class_or_the_text() -> None:
    """A customer cannot frame an honest business: the class and template id are in the
    relay's tag and in the commitment, and the text in the commitment."""
    relay, shop, alice = world()
    shop.device.send(b"alice", "Your parcel is at the door", S)
    (msg,) = alice.device.sync()
    templates = relay.templates(b"shop")
    key = relay._frank_key
    delivery = Delivery.from_bytes(msg.delivery)
    env = delivery.open_envelope()
    # swap in the promo text: the commitment does not open to it
    with pytest.raises(ReportRejected):
        verify_class_report(key, ReportItem(msg.delivery, msg.franking_key, PROMO), b"alice",
                            b"shop", templates)  # fmt: skip
    # claim it was declared with another class: the relay's tag no longer verifies
    forged = Envelope(T, *[getattr(env, f) for f in (
        "from_account", "from_device", "to_account", "dest_account", "dest_device",
        "message_id", "commitment", "frame")])  # fmt: skip
    item = ReportItem(
        Delivery(forged.to_bytes(), delivery.received_at, delivery.tag, delivery.seq).to_bytes(),
        msg.franking_key,
        msg.body,
    )
    with pytest.raises(ReportRejected):
        verify_class_report(key, item, b"alice", b"shop", templates)


def test_class_and_template_id_are_bound_in_frame_and_commitment() -> None:
    fk, mid = b"K" * 32, bytes(16)
    base = commit(fk, S, b"shop", b"alice", mid, PROMO)
    assert commit(fk, M, b"shop", b"alice", mid, PROMO) != base
    assert commit(fk, S, b"shop", b"alice", mid, PROMO, b"promo-1") != base
    inner = Inner(M, b"shop", b"alice", mid, fk, PROMO, template_id=b"promo-1")
    assert Inner.from_padded(inner.to_padded()) == inner
    env = Envelope(M, b"shop", 1, b"alice", b"alice", 1, mid, base, b"f", b"promo-1")
    assert Envelope.from_bytes(env.to_bytes()) == env
    assert inner.matches(env)
    assert not Inner(M, b"shop", b"alice", mid, fk, PROMO).matches(env)  # template id differs


def test_check_class_rules() -> None:
    reg = {t.template_id: t for t in (Template.of(b"p", M, PROMO), Template.of(b"r", T, b"R"))}
    assert check_class(S, None, b"hello", reg).ok
    assert not check_class(S, None, PROMO, reg).ok  # a marketing template sent free-form
    assert not check_class(T, None, PROMO, reg).ok
    assert check_class(M, None, PROMO, reg).ok
    assert check_class(M, None, b"hello", reg).ok  # over-declaring costs the business only
    assert not check_class(M, b"r", b"R", reg).ok  # template of another class
    assert not check_class(T, b"r", b"not R", reg).ok  # not the template's text
    assert not check_class(T, b"zz", b"R", reg).ok  # unknown template
    assert check_class(T, b"r", b"R", reg).ok
    # an application classifier can flag unregistered free text
    verdict = check_class(S, None, b"BUY NOW", reg, lambda body: M if b"BUY" in body else None)
    assert not verdict.ok and verdict.underdeclared and verdict.content is M
