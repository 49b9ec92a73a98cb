"""Ad entry points through the relay process (SQLite and PostgreSQL), SPEC §17.4: a customer
who answers an ad with its entry token opens a free window longer than 24 h, closed on time
and by a block; every bad token is refused ``entry_refused`` with nothing recorded; the bill
lists the entry by ad; the ad service pulls conversions that name no customer. Time passing is
written into the relay's database (as the tier tests do): the relay's clock is the wall clock
its request signatures are checked against, so it cannot be wound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device, relay_with, run_earlier

from e2e.platform import wire
from e2e.platform.adentry import Conversion, EntryKey
from e2e.platform.adservice import AdService
from e2e.platform.envelope import Delivery
from e2e.platform.policy import MessageClass, PriceTable

CUSTOMER, BUSINESS = 0, 1
HOUR = 3600
REPORT_TOKEN = "ad-service-report-token"
PRICES = PriceTable()


def shift(db: str, seconds: int) -> None:
    """Everything the windows and conversions look at happened ``seconds`` earlier."""
    run_earlier(db, seconds, [("chats", "last_customer_message"), ("chats", "entry_until"),
                              ("ad_entries", "bucket"), ("initiations", "at")])


@pytest.fixture
def ads() -> AdService:
    return AdService()


@pytest.fixture
def relay_ads(relay_db: str, tmp_path: Path, ads: AdService) -> Iterator[RelayProcess]:
    """A relay that takes the ad service's tokens (72 h entry windows, hourly buckets)."""
    env = {"E2E_RELAY_ADS_ENTRY_KEY": ads.entry_key.public.hex(),
           "E2E_RELAY_ADS_REPORT_TOKEN": REPORT_TOKEN}  # fmt: skip
    with relay_with(relay_db, tmp_path / "relay.log", env) as proc:
        yield proc


def service(dev: Dev, to: Dev, entry: bytes | None = None) -> wire.Receipt:
    return dev.submit(dev.envelopes(to.acct.name, [to.addr], MessageClass.SERVICE), entry)


def template(biz: Dev, to: Dev) -> wire.Receipt:
    envs = biz.envelopes(to.acct.name, [to.addr], MessageClass.TEMPLATE, template_id=b"t")
    return biz.submit(envs)


def refused(fn: object, *args: object) -> Refused:
    with pytest.raises(Refused) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value


def window(dev: Dev, peer: bytes) -> bool:
    return bool(dev.call(wire.Path.CHAT_WINDOW, wire.WindowQuery(peer), wire.WindowState).open)


def pull(url: str, ads: AdService, token: str = REPORT_TOKEN) -> httpx.Response:
    return httpx.get(f"{url}{wire.Path.AD_CONVERSIONS}?after={ads.cursor}",
                     headers={"authorization": f"Bearer {token}"})  # fmt: skip


def test_an_ad_opens_a_free_window_that_closes_on_time(relay_ads: RelayProcess, relay_db: str,
                                                       ads: AdService) -> None:  # fmt: skip
    """Ann answers the shop's ad, Bea writes without one. A day later Bea's window is closed
    (a service message refused, a template billed) while Ann's entry window lets the shop
    answer freely and for nothing; 73 h on, Ann's is closed too. The bill lists the entry
    under its ad, free."""
    with httpx.Client(base_url=relay_ads.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        reg = wire.RegisterTemplate(b"t", int(MessageClass.TEMPLATE), b"Your order shipped.")
        shop.call(wire.Path.TEMPLATE_REGISTER, reg)
        ann, bea = new_device(c, b"ann", CUSTOMER), new_device(c, b"bea", CUSTOMER)
        token = ads.issue_entry(b"spring-sale", b"shop", int(time.time()))
        assert service(ann, shop, token).price == 0
        service(bea, shop)
        shift(relay_db, 25 * HOUR)
        assert refused(service, shop, bea).code == "window_closed"
        assert template(shop, bea).price == PRICES.template  # outside the window: billed
        assert window(shop, b"ann") and window(ann, b"shop") and not window(shop, b"bea")
        assert service(shop, ann).price == 0
        assert template(shop, ann).price == 0  # a template in the entry window: free too
        tier = shop.call(wire.Path.BUSINESS_TIER, wire.TierQuery(), wire.TierInfo)
        assert tier.used == 1  # only Bea's template started a conversation
        shift(relay_db, 47 * HOUR - 60)
        assert service(shop, ann).price == 0  # a minute before 72 h: still open
        shift(relay_db, 120)
        assert refused(service, shop, ann).code == "window_closed"
        assert not window(shop, b"ann")
        bill = shop.bill()
        assert (bill.entry_ads, bill.entry_counts) == ((b"spring-sale",), (1,))
        assert bill.total == PRICES.template  # Bea's template, nothing of Ann's chat
        # Ann writes again: the ordinary 24 h window, no second entry.
        service(ann, shop)
        assert service(shop, ann).price == 0 and shop.bill().entry_counts == (1,)


def test_bad_tokens_are_refused_and_change_nothing(relay_ads: RelayProcess,
                                                   ads: AdService) -> None:  # fmt: skip
    """Forged, another business's, expired, too long-lived, malformed, replayed, presented by
    the business or with a receipt: each refused 422 ``entry_refused``, the message with it
    not delivered and no window opened. A retry of the accepted submission is not a replay."""
    now = int(time.time())
    with httpx.Client(base_url=relay_ads.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        new_device(c, b"mall", BUSINESS, tier=1)
        ann = new_device(c, b"ann", CUSTOMER)
        forged = EntryKey.generate().issue(b"ad", b"shop", now + HOUR).to_bytes()
        bad = {
            "forged": forged,
            "other business": ads.issue_entry(b"ad", b"mall", now),
            "expired": ads.issue_entry(b"ad", b"shop", now, seconds=-5),
            "too long-lived": ads.issue_entry(b"ad", b"shop", now, seconds=30 * 86_400),
            "malformed": b"\xa1\x00\x01",
        }
        for name, token in bad.items():
            err = refused(service, ann, shop, token)
            assert (err.status, err.code) == (422, "entry_refused"), name
        assert shop.fetch().deliveries == ()
        assert not window(shop, b"ann")  # nothing opened a window
        good = ads.issue_entry(b"ad", b"shop", now)
        envs = ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE)
        first = ann.submit(envs, good)
        assert ann.submit(envs, good) == first  # the same submission again: its receipt
        err = refused(service, ann, shop, good)  # the token on another message: a replay
        assert (err.code, err.error.message) == ("entry_refused", "the entry token was used before")
        receipt = ann.envelopes(b"shop", [shop.addr], MessageClass.RECEIPT)
        assert refused(ann.submit, receipt, ads.issue_entry(b"ad", b"shop", now)).code == (
            "entry_refused")  # fmt: skip
        fresh = ads.issue_entry(b"ad", b"shop", now)
        assert refused(service, shop, ann, fresh).code == "entry_refused"  # not a business's
        assert len(shop.fetch().deliveries) == 1  # only the accepted message
        assert shop.bill().entry_counts == (1,)


def test_limit_report_and_block_inside_an_entry_window(relay_ads: RelayProcess, relay_db: str,
                                                       ads: AdService) -> None:  # fmt: skip
    """Inside an entry window the customer's controls hold: a limit refuses marketing, a spam
    report is verified and counted, a block refuses everything and closes the entry window
    for good (unblocked a day later, the shop may not answer freely)."""
    with httpx.Client(base_url=relay_ads.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        ann = new_device(c, b"ann", CUSTOMER)
        service(ann, shop, ads.issue_entry(b"winter", b"shop", int(time.time())))
        ann.control(wire.Control.OPT_IN, b"shop")
        ann.control(wire.Control.LIMIT, b"shop")
        marketing = shop.envelopes(b"ann", [ann.addr], MessageClass.MARKETING)
        assert refused(shop.submit, marketing).code == "limited"
        ann.control(wire.Control.LIMIT, b"shop", on=False)
        shift(relay_db, 25 * HOUR)
        service(shop, ann)  # in the entry window only
        delivery = ann.fetch().deliveries[-1]
        mid = Delivery.from_bytes(delivery).open_envelope().message_id
        fk, text = shop.sent[mid]
        verdict = ann.report(b"shop", [(delivery, fk, text)], block=False)
        assert verdict.message_ids == (mid,)
        tier = shop.call(wire.Path.BUSINESS_TIER, wire.TierQuery(), wire.TierInfo)
        assert tier.negatives == 1
        ann.control(wire.Control.BLOCK, b"shop")
        assert refused(service, shop, ann).code == "blocked"
        late = ads.issue_entry(b"winter", b"shop", int(time.time()))
        assert refused(service, ann, shop, late).code == "entry_refused"  # not while blocked
        ann.control(wire.Control.BLOCK, b"shop", on=False)
        assert refused(service, shop, ann).code == "window_closed"  # the block closed it
        assert not window(ann, b"shop")


def test_conversions_reach_the_ad_service_by_ad_and_hour(relay_ads: RelayProcess, relay_db: str,
                                                         ads: AdService) -> None:  # fmt: skip
    """The ad service pulls, with its token, one conversion per entry: the ad, the business
    and the hour, never the customer; an hour not yet over is held back; a wrong or missing
    token is refused 401."""
    with httpx.Client(base_url=relay_ads.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        customers = [new_device(c, n, CUSTOMER) for n in (b"ann", b"bea", b"cid")]
        now = int(time.time())
        for dev, ad in zip(customers, (b"spring", b"spring", b"summer"), strict=True):
            service(dev, shop, ads.issue_entry(ad, b"shop", now))
        service(customers[0], shop)  # an ordinary message: no conversion
        assert pull(relay_ads.url, ads, "x" * 24).status_code == 401
        assert httpx.get(relay_ads.url + wire.Path.AD_CONVERSIONS).status_code == 401
        bad = httpx.get(f"{relay_ads.url}{wire.Path.AD_CONVERSIONS}?after=-1",
                        headers={"authorization": f"Bearer {REPORT_TOKEN}"})  # fmt: skip
        assert bad.status_code == 400
        first = pull(relay_ads.url, ads)
        assert first.status_code == 200
        assert ads.receive_conversions(first.content) == 0  # this hour is not over yet
        shift(relay_db, 2 * HOUR)  # the hour ended (and its margin passed)
        assert ads.receive_conversions(pull(relay_ads.url, ads).content) == 3
        assert ads.conversions(b"shop") == {b"spring": 2, b"summer": 1}
        assert ads.receive_conversions(pull(relay_ads.url, ads).content) == 0  # cursor moved
        for raw in ads.conversion_records:
            conv = Conversion.from_bytes(raw)
            assert conv.bucket % HOUR == 0 and conv.business == b"shop"
            assert all(d.acct.name not in raw for d in customers)


def test_a_relay_without_an_ad_key_takes_no_tokens(relay_db: str, tmp_path: Path) -> None:
    """No ``ads.entry_key``: every token is refused, and conversions are not served."""
    ads = AdService()
    with relay_with(relay_db, tmp_path / "relay.log", {}) as proc, \
            httpx.Client(base_url=proc.url, timeout=30) as c:  # fmt: skip
        shop = new_device(c, b"shop", BUSINESS, tier=1)
        ann = new_device(c, b"ann", CUSTOMER)
        token = ads.issue_entry(b"ad", b"shop", int(time.time()))
        assert refused(service, ann, shop, token).code == "entry_refused"
        assert pull(proc.url, ads).status_code == 401
