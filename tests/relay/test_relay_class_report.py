"""Message class reports over the relay process (SQLite and PostgreSQL): a business registers
its templates; a customer reports a message whose content does not fit its declared class;
the relay verifies the franking opening against its registered templates and bills one
penalty line per message."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device

from e2e.client import Client
from e2e.client.http import RelayClient
from e2e.errors import ReportRejected
from e2e.platform import wire
from e2e.platform.envelope import Delivery
from e2e.platform.franking import ReportItem
from e2e.platform.policy import MessageClass, PriceTable
from e2e.store.sqlite import SqliteStore

CUSTOMER, BUSINESS = 0, 1
SALE = b"Spring sale: 50% off everything this week only!"


def class_report(dev: Dev, delivery: bytes, fk: bytes, text: bytes) -> wire.ClassVerdict:
    item = ReportItem(delivery, fk, text).to_bytes()
    return dev.call(wire.Path.CLASS_REPORT, wire.SubmitClassReport(item), wire.ClassVerdict)


def refused(fn: object, *args: object) -> tuple[int, str]:
    with pytest.raises(Refused) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.status, exc.value.code


def send(biz: Dev, cust: Dev, cls: MessageClass, body: bytes) -> tuple[bytes, bytes, bytes]:
    """The business sends ``body`` declared as ``cls``; the customer's (delivery, franking
    key, text) of it."""
    envs = biz.envelopes(cust.acct.name, [cust.addr], cls, body=body)
    mid = biz.submit(envs).message_id
    (delivery,) = cust.fetch().deliveries
    assert Delivery.from_bytes(delivery).open_envelope().message_id == mid
    cust.ack([Delivery.from_bytes(delivery).seq])
    fk, text = biz.sent[mid]
    return delivery, fk, text


def test_misdeclared_marketing_is_penalized_once(client: httpx.Client) -> None:
    cust = new_device(client, b"alice", CUSTOMER)
    biz = new_device(client, b"shop", BUSINESS, tier=1)
    reg = wire.RegisterTemplate(b"sale-1", int(MessageClass.MARKETING), SALE)
    biz.call(wire.Path.TEMPLATE_REGISTER, reg)
    biz.call(wire.Path.TEMPLATE_REGISTER, reg)  # a retry is Ok
    other = wire.RegisterTemplate(b"sale-1", int(MessageClass.TEMPLATE), SALE)
    assert refused(biz.call, wire.Path.TEMPLATE_REGISTER, other) == (422, "not_allowed")
    assert refused(cust.call, wire.Path.TEMPLATE_REGISTER, reg)[1] == "not_allowed"
    cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))  # opens the window
    # The attack: marketing text declared as SERVICE inside the window, without opt-in.
    delivery, fk, text = send(biz, cust, MessageClass.SERVICE, SALE)
    before = biz.bill()
    assert before.total == 0 and before.penalty_counts == ()
    # A false opening of the same delivery (another text) is refused and changes nothing.
    assert refused(class_report, cust, delivery, fk, b"something else") == (422, "report_rejected")
    # Only the customer it was delivered to can report it.
    other_cust = new_device(client, b"mallory", CUSTOMER)
    assert refused(class_report, other_cust, delivery, fk, text)[1] == "report_rejected"
    assert biz.bill() == before
    verdict = class_report(cust, delivery, fk, text)
    full = PriceTable().price(MessageClass.MARKETING, False)
    assert (verdict.declared, verdict.content) == (MessageClass.SERVICE, MessageClass.MARKETING)
    assert verdict.price == full > 0
    bill = biz.bill()
    assert (bill.penalty_declared, bill.penalty_content) == (
        (int(MessageClass.SERVICE),),
        (int(MessageClass.MARKETING),),
    )
    assert (bill.penalty_counts, bill.penalty_prices, bill.total) == ((1,), (full,), full)
    # Reported again: refused, still one penalty line.
    assert refused(class_report, cust, delivery, fk, text) == (422, "report_rejected")
    assert biz.bill() == bill


def test_honest_business_cannot_be_penalized(client: httpx.Client) -> None:
    cust = new_device(client, b"bob", CUSTOMER)
    biz = new_device(client, b"mart", BUSINESS, tier=1)
    biz.call(wire.Path.TEMPLATE_REGISTER,
             wire.RegisterTemplate(b"sale-2", int(MessageClass.MARKETING), SALE))  # fmt: skip
    cust.submit(cust.envelopes(b"mart", [biz.addr], MessageClass.SERVICE))
    cust.control(wire.Control.OPT_IN, b"mart")
    honest = [
        send(biz, cust, MessageClass.SERVICE, b"Your order 1234 has shipped."),
        send(biz, cust, MessageClass.MARKETING, SALE),
    ]
    bill = biz.bill()
    for delivery, fk, text in honest:
        assert refused(class_report, cust, delivery, fk, text) == (422, "report_rejected")
        # Claiming the marketing text was sent (a false opening) does not help either.
        assert refused(class_report, cust, delivery, fk, SALE)[1] == "report_rejected"
    assert biz.bill() == bill and bill.penalty_counts == ()


@pytest.mark.parametrize("via", ["http", "in-process"])
def test_client_reports_misdeclared_class(tmp_path: Path, via: str) -> None:
    """The same path through e2e.client (over HTTP to the relay process, and to the
    in-process relay): real frames; the franking key and text come from the customer's
    decrypted history."""
    proc: RelayProcess | None = None
    if via == "http":
        proc = RelayProcess(str(tmp_path / "relay.db"), log_path=tmp_path / "relay.log").start()

    def store(name: str) -> Callable[[], SqliteStore]:
        key = os.urandom(32)
        return lambda: SqliteStore(tmp_path / f"{name}.db", key)

    async def run() -> None:
        net = (
            RelayClient(proc.url)
            if proc is not None
            else RelayClient.in_process(str(tmp_path / "relay.db"))
        )
        cust = await Client.create_account(store("c"), net.connect, "fay", "customer")
        biz = await Client.create_account(store("b"), net.connect, "deli", "business", tier=1)
        try:
            await biz.register_template(b"sale-3", MessageClass.MARKETING, SALE)
            await cust.send("deli", "hello")
            await biz.sync()
            honest = await biz.send("fay", "Your table is ready.")
            bad = await biz.send("fay", SALE)  # marketing declared as SERVICE
            got = {m.message_id: m for m in await cust.sync()}
            # The customer's device flags the misdeclared one (with the templates the relay
            # lists for the business), and only that one.
            assert got[honest.message_id].class_check is not None
            assert not got[honest.message_id].misdeclared
            flagged = got[bad.message_id].class_check
            assert flagged is not None and got[bad.message_id].misdeclared
            assert (flagged.declared, flagged.content) == (
                MessageClass.SERVICE, MessageClass.MARKETING,
            )  # fmt: skip
            with pytest.raises(ReportRejected):
                await cust.report_class("deli", honest.message_id)
            assert await cust.report_class("deli", bad.message_id) is MessageClass.MARKETING
            with pytest.raises(ReportRejected):
                await cust.report_class("deli", bad.message_id)
        finally:
            await cust.aclose()
            await biz.aclose()
            await net.aclose()

    try:
        asyncio.run(run())
    finally:
        if proc is not None:
            proc.stop()


def test_a_template_id_must_be_a_registered_template_of_the_declared_class(
    client: httpx.Client,
) -> None:
    """The relay sees a message's template id (metadata) but not its text: the id must name a
    template the sending business registered, as the class the message declares. A refused
    submission delivers and bills nothing."""
    cust = new_device(client, b"dana", CUSTOMER)
    biz = new_device(client, b"shop", BUSINESS, tier=1)
    reg = wire.RegisterTemplate(b"ship-1", int(MessageClass.TEMPLATE), b"Order shipped.")
    biz.call(wire.Path.TEMPLATE_REGISTER, reg)
    # Any device can list a business's templates (to check message classes with).
    listed = cust.call(wire.Path.TEMPLATE_LIST, wire.ListTemplates(b"shop"), wire.TemplateList)
    assert listed == wire.TemplateList(
        (b"ship-1",), (int(MessageClass.TEMPLATE),), (hashlib.sha256(b"Order shipped.").digest(),)
    )
    q = wire.ListTemplates(b"dana")
    assert refused(biz.call, wire.Path.TEMPLATE_LIST, q, wire.TemplateList)[1] == "not_allowed"
    cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    cust.control(wire.Control.OPT_IN, b"shop")  # marketing is allowed: only the id is wrong
    biz.ack([Delivery.from_bytes(d).seq for d in biz.fetch().deliveries])
    for cls, tid in (
        (MessageClass.TEMPLATE, b"never-registered"),
        (MessageClass.MARKETING, b"ship-1"),  # registered as TEMPLATE
    ):
        envs = biz.envelopes(b"dana", [cust.addr], cls, template_id=tid)
        assert refused(biz.submit, envs) == (422, "misdeclared_class")
    # A customer cannot name a template at all.
    envs = cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE, template_id=b"ship-1")
    assert refused(cust.submit, envs) == (422, "not_allowed")
    assert biz.fetch().deliveries == () and cust.fetch().deliveries == ()
    assert biz.bill().total == 0 and biz.bill().counts == ()
    # Copies of one message that disagree on the template id are malformed.
    mid = os.urandom(16)
    a = biz.envelopes(b"dana", [cust.addr], MessageClass.TEMPLATE, mid, template_id=b"ship-1")
    b = biz.envelopes(b"dana", [cust.addr], MessageClass.TEMPLATE, mid)
    assert refused(biz.submit, [a[0], b[0]])[0] == 400
    # The registered template, as its class: accepted and billed (in window: free on tier 1).
    receipt = biz.submit(biz.envelopes(b"dana", [cust.addr], MessageClass.TEMPLATE,
                                       template_id=b"ship-1"))  # fmt: skip
    assert receipt.copies == 1
    assert len(cust.fetch().deliveries) == 1
