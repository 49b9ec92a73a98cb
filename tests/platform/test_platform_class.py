"""The message class is bound end to end (inside the frame and in the franking commitment),
checked by the recipient's device against the content, and reportable in a way the relay
can verify (issue: a marketing text sent as SERVICE inside the window was accepted at price
0 without opt-in and nobody could tell)."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import Service, run

from e2e.client import Client
from e2e.errors import MisdeclaredClass, PolicyError, ReportRejected
from e2e.platform import MessageClass, PolicyConfig
from e2e.platform.envelope import Delivery, Envelope, Inner
from e2e.platform.franking import ReportItem, commit
from e2e.platform.policy import Template, check_class

S, T, M = MessageClass.SERVICE, MessageClass.TEMPLATE, MessageClass.MARKETING
PROMO = b"50% off all shoes this weekend only! Reply STOP to opt out"


async def world(d: Path) -> tuple[Service, Client, Client]:
    svc = Service(d)
    (shop,) = await svc.account("shop", "business", auto_receipts=False)
    (alice,) = await svc.account("alice", "customer", auto_receipts=False)
    await shop.register_template(b"promo-1", M, PROMO)
    await shop.register_template(b"receipt", T, b"Your order has shipped.")
    await alice.send("shop", "hi, where is my order?")  # opens the service window
    await shop.sync()
    return svc, shop, alice


async def penalties(shop: Client) -> list[tuple[int, int, int, int]]:
    bill = await shop.transport.bill()  # type: ignore[attr-defined]
    return list(zip(bill.penalty_declared, bill.penalty_content, bill.penalty_counts,
                    bill.penalty_prices, strict=True))  # fmt: skip


def test_marketing_sent_as_service_is_flagged_reported_and_penalized(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        # the attack: the registered marketing text, declared SERVICE inside the window
        sent = await shop.send("alice", PROMO, S)
        assert svc.receipts[sent.message_id].price == 0  # the relay bills what was declared
        (msg,) = await alice.sync()
        assert msg.cls is S and msg.misdeclared  # ... but the customer's device sees through it
        assert msg.class_check is not None and msg.class_check.content is M
        # the report reveals the message; the relay verifies its own tag and the commitment
        assert await alice.report_class("shop", msg.message_id) is M
        marketing = PolicyConfig().prices.marketing
        assert await penalties(shop) == [(S, M, 1, marketing)]
        with pytest.raises(ReportRejected):  # once per message
            await alice.report_class("shop", msg.message_id)
        assert await penalties(shop) == [(S, M, 1, marketing)]
        await svc.aclose()

    run(go)


def test_honest_messages_are_not_flagged_and_not_reportable(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await shop.send("alice", "Your parcel is at the door", S)
        await alice.opt_in("shop")
        await shop.send("alice", PROMO, M, template_id=b"promo-1")
        await shop.send("alice", b"Your order has shipped.", T, template_id=b"receipt")
        msgs = await alice.sync()
        assert [m.misdeclared for m in msgs] == [False, False, False]
        assert [m.template_id for m in msgs] == [None, b"promo-1", b"receipt"]
        for m in msgs:
            with pytest.raises(ReportRejected):
                await alice.report_class("shop", m.message_id)
        assert await penalties(shop) == []
        await svc.aclose()

    run(go)


def test_template_id_must_match_its_registered_class(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await alice.opt_in("shop")
        pending = svc.pending()
        with pytest.raises(MisdeclaredClass):  # the relay checks the metadata it can see
            await shop.send("alice", PROMO, T, template_id=b"promo-1")
        with pytest.raises(MisdeclaredClass):
            await shop.send("alice", PROMO, M, template_id=b"no-such")
        assert isinstance(MisdeclaredClass("x"), PolicyError)
        assert svc.pending() == pending and await shop.pending() == []
        await svc.aclose()

    run(go)


def test_a_report_cannot_change_the_declared_class_or_the_text(tmp_path: Path) -> None:
    """A customer cannot frame an honest business: the class and template id are in the
    relay's tag and in the commitment, and the text in the commitment."""

    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await shop.send("alice", "Your parcel is at the door", S)
        (msg,) = await alice.sync()
        delivery = Delivery.from_bytes(msg.delivery)
        env = delivery.open_envelope()
        # swap in the promo text: the commitment does not open to it
        swapped = ReportItem(msg.delivery, msg.franking_key, PROMO)
        # claim it was declared with another class: the relay's tag no longer verifies
        forged = Envelope(T, *[getattr(env, f) for f in (
            "from_account", "from_device", "to_account", "dest_account", "dest_device",
            "message_id", "commitment", "frame")])  # fmt: skip
        relabelled = ReportItem(
            Delivery(forged.to_bytes(), delivery.received_at, delivery.tag,
                     delivery.seq).to_bytes(),  # fmt: skip
            msg.franking_key,
            msg.body,
        )
        for item in (swapped, relabelled):
            with pytest.raises(ReportRejected):
                await alice.transport.report_class(item.to_bytes())
        assert await penalties(shop) == []
        await svc.aclose()

    run(go)


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
