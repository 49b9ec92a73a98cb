"""Messaging tiers and quality through the relay process (SQLite and PostgreSQL), SPEC §17.3:
a business may start conversations with its level's limit of customers per 24 h (a template
outside the window starts one); the limit is refused with tier_limit and shown to the
business; volume raises the level a day later, blocks and spam reports lower quality and then
the level. Time passing is written into the relay's database, as its clock cannot be wound."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, new_device, relay_with, run_earlier

from e2e.platform import wire
from e2e.platform.envelope import Delivery
from e2e.platform.policy import MessageClass
from e2e.platform.tiers import Quality, TierConfig

CUSTOMER, BUSINESS = 0, 1
LIMIT = TierConfig().limits[0]


def earlier(db: str, seconds: int) -> None:
    """Everything the tiers look at happened ``seconds`` earlier."""
    run_earlier(db, seconds, [("chats", "last_customer_message"), ("initiations", "at"),
                              ("quality_events", "at"), ("messaging_tiers", "evaluated")])


def tier(biz: Dev) -> wire.TierInfo:
    return biz.call(wire.Path.BUSINESS_TIER, wire.TierQuery(), wire.TierInfo)


def template(biz: Dev, cust: Dev) -> wire.Receipt:
    envs = biz.envelopes(cust.acct.name, [cust.addr], MessageClass.TEMPLATE, template_id=b"t")
    return biz.submit(envs)


def test_tier_limit_then_volume_raises_and_blocks_lower(client: httpx.Client,
                                                        relay_db: str) -> None:  # fmt: skip
    biz = new_device(client, b"shop", BUSINESS, tier=1)
    reg = wire.RegisterTemplate(b"t", int(MessageClass.TEMPLATE), b"Your order shipped.")
    biz.call(wire.Path.TEMPLATE_REGISTER, reg)
    customers = [new_device(client, f"c{i:03d}".encode(), CUSTOMER, one_time=0)
                 for i in range(LIMIT + 2)]  # fmt: skip
    for c in customers:
        c.submit(c.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    info = tier(biz)
    assert (info.level, info.limit, info.used, info.quality) == (0, LIMIT, 0, Quality.HIGH)
    earlier(relay_db, 25 * 3600)  # every window closed
    for c in customers[:LIMIT]:
        template(biz, c)
    with pytest.raises(Refused) as exc:  # one customer more than the tier allows
        template(biz, customers[LIMIT])
    assert (exc.value.status, exc.value.code) == (422, "tier_limit")
    pre = wire.Precheck.of(int(MessageClass.TEMPLATE), customers[LIMIT].acct.name,
                           [customers[LIMIT].addr], b"t")  # fmt: skip
    with pytest.raises(Refused):  # the precheck says the same, changing nothing
        biz.call(wire.Path.MESSAGE_PRECHECK, pre)
    template(biz, customers[0])  # a customer already counted today is not counted again
    # A customer who writes opens the window: answering is not starting a conversation.
    last = customers[LIMIT + 1]
    last.submit(last.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    template(biz, last)
    assert (tier(biz).used, tier(biz).level) == (LIMIT, 0)
    bill = biz.bill()
    assert sum(bill.counts) == LIMIT + 2  # the refused one was not billed
    # A day later: volume (LIMIT customers in a week, at least half the limit) raises a level.
    earlier(relay_db, 25 * 3600)
    info = tier(biz)
    assert (info.level, info.limit, info.used, info.quality) == (1, TierConfig().limits[1], 0,
                                                                  Quality.HIGH)  # fmt: skip
    template(biz, customers[LIMIT])  # the customer refused yesterday can be reached now
    # Customers block and report: quality drops at once, the level a day later.
    low = int(TierConfig().low * LIMIT) + 1
    for c in customers[:low]:
        c.control(wire.Control.BLOCK, b"shop")
    c.control(wire.Control.BLOCK, b"shop")  # blocking again is not another event
    reporter = customers[low]  # and one reports what the business answered it as spam
    reporter.submit(reporter.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    biz.submit(biz.envelopes(reporter.acct.name, [reporter.addr], MessageClass.SERVICE))
    delivery = reporter.fetch().deliveries[-1]
    mid = Delivery.from_bytes(delivery).open_envelope().message_id
    fk, text = biz.sent[mid]
    assert reporter.report(b"shop", [(delivery, fk, text)], block=False).message_ids == (mid,)
    reporter.report(b"shop", [(delivery, fk, text)], block=False)  # again: counted once
    info = tier(biz)
    assert (info.quality, info.negatives, info.level) == (Quality.LOW, low + 1, 1)
    earlier(relay_db, 25 * 3600)
    assert (tier(biz).level, tier(biz).limit) == (0, LIMIT)
    with pytest.raises(Refused) as exc2:  # customers cannot query a tier
        customers[0].call(wire.Path.BUSINESS_TIER, wire.TierQuery(), wire.TierInfo)
    assert exc2.value.code == "not_allowed"


def test_the_relay_configuration_sets_tiers_and_prices(relay_db: str, tmp_path: Path) -> None:
    """The relay process takes its tier limits and category prices from its configuration
    (SPEC §10.9 ``[tiers]``, ``[prices]``), not the defaults."""
    env = {"E2E_RELAY_TIERS_LIMITS": "2,4", "E2E_RELAY_PRICES_UTILITY": "13",
           "E2E_RELAY_ADMISSION_BUSINESS_TIER": "1"}  # fmt: skip
    with relay_with(relay_db, tmp_path / "relay.log", env) as proc, \
            httpx.Client(base_url=proc.url, timeout=30.0) as client:  # fmt: skip
        biz = new_device(client, b"shop", BUSINESS, tier=0)  # billed on the operator's tier
        reg = wire.RegisterCatalogue(b"order", b"en", 1, b"Your order {{1}} has shipped.",
                                     bytes([1]))  # fmt: skip
        answer = biz.call(wire.Path.CATALOGUE_REGISTER, reg, wire.CatalogueAnswer)
        assert (answer.version, answer.state) == (1, 1)  # approved
        customers = [new_device(client, f"c{i}".encode(), CUSTOMER, one_time=0) for i in range(3)]
        for c in customers:
            c.submit(c.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
        earlier(relay_db, 25 * 3600)  # every window closed
        for c in customers[:2]:
            biz.submit(biz.envelopes(c.acct.name, [c.addr], MessageClass.TEMPLATE,
                                     template_id=b"order.en.1"))  # fmt: skip
        with pytest.raises(Refused) as exc:  # the configured limit of level 0 is 2
            biz.submit(biz.envelopes(customers[2].acct.name, [customers[2].addr],
                                     MessageClass.TEMPLATE, template_id=b"order.en.1"))  # fmt: skip
        assert (exc.value.status, exc.value.code) == (422, "tier_limit")
        info = tier(biz)
        assert (info.level, info.limit, info.used) == (0, 2, 2)
        bill = biz.bill()
        assert (bill.category_prices, bill.total) == ((13,), 26)  # the configured utility price


def test_a_business_reads_its_customers_notices(client: httpx.Client) -> None:
    """The relay tells a business what its customers did about it (SPEC §17.2): each change
    of a block, limit or opt-in, and each spam report with the messages it newly reported,
    in order, after a position; nothing for a control that changed nothing; only to the
    business."""
    biz = new_device(client, b"shop", BUSINESS, tier=1)
    ann = new_device(client, b"ann", CUSTOMER)
    ann.submit(ann.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    biz.submit(biz.envelopes(b"ann", [ann.addr], MessageClass.SERVICE))
    ann.control(wire.Control.LIMIT, b"shop")
    ann.control(wire.Control.LIMIT, b"shop")  # already on: no notice
    ann.control(wire.Control.LIMIT, b"shop", on=False)
    delivery = ann.fetch().deliveries[-1]
    mid = Delivery.from_bytes(delivery).open_envelope().message_id
    fk, text = biz.sent[mid]
    ann.report(b"shop", [(delivery, fk, text)], block=True)
    ann.report(b"shop", [(delivery, fk, text)], block=True)  # nothing new: no notice
    got = biz.call(wire.Path.BUSINESS_NOTICES, wire.NoticeQuery(0), wire.Notices)
    N = wire.Notices
    assert list(zip(got.customers, got.kinds, got.values, strict=True)) == [
        (b"ann", N.LIMIT, 1), (b"ann", N.LIMIT, 0), (b"ann", N.SPAM_REPORT, 1),
        (b"ann", N.BLOCK, 1)]  # fmt: skip
    assert list(got.seqs) == sorted(got.seqs)
    later = biz.call(wire.Path.BUSINESS_NOTICES, wire.NoticeQuery(got.seqs[1]), wire.Notices)
    assert later.seqs == got.seqs[2:]
    with pytest.raises(Refused) as exc:
        ann.call(wire.Path.BUSINESS_NOTICES, wire.NoticeQuery(0), wire.Notices)
    assert exc.value.code == "not_allowed"
