"""The wire API end to end against a relay server process (SQLite and PostgreSQL)."""

from __future__ import annotations

import httpx
import pytest
from relayhelp import Dev, Refused, new_device

from e2e.platform import wire
from e2e.platform.policy import MessageClass

CUSTOMER, BUSINESS = 0, 1


def test_conversation_policy_and_billing(client: httpx.Client) -> None:
    cust = new_device(client, b"alice", CUSTOMER)
    biz = new_device(client, b"shop", BUSINESS, tier=1)
    # A business cannot write first.
    with pytest.raises(Refused) as exc:
        biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.SERVICE))
    assert (exc.value.status, exc.value.code) == (422, "no_prior_contact")
    r = cust.submit(cust.envelopes(b"shop", [biz.addr], MessageClass.SERVICE))
    assert (r.copies, r.price) == (1, 0)
    box = biz.fetch()
    assert len(box.deliveries) == 1
    r2 = biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE))
    assert r2.price == 0  # template in window
    with pytest.raises(Refused) as exc:
        biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.MARKETING))
    assert exc.value.code == "not_opted_in"
    cust.control(wire.Control.OPT_IN, b"shop")
    r3 = biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.MARKETING))
    assert r3.price == 80
    bill = biz.bill()
    assert bill.total == 80 and sum(bill.counts) == 2
    cust.control(wire.Control.BLOCK, b"shop")
    with pytest.raises(Refused) as exc:
        biz.submit(biz.envelopes(b"alice", [cust.addr], MessageClass.TEMPLATE))
    assert exc.value.code == "blocked"
    assert biz.bill().counts == bill.counts  # nothing billed for the refusal
    seqs = [wire_seq(d) for d in cust.fetch().deliveries]
    assert len(seqs) == 2
    cust.ack(seqs)
    assert cust.fetch().deliveries == ()


def wire_seq(raw: bytes) -> int:
    from e2e.platform.envelope import Delivery

    return Delivery.from_bytes(raw).seq


def test_prekey_upload_is_idempotent_and_claims_are_single(client: httpx.Client) -> None:
    dev = new_device(client, b"bob", CUSTOMER, one_time=3)
    assert dev.upload().one_time == 3  # the retried upload adds nothing
    other = new_device(client, b"corp", BUSINESS)
    got = [other.claim(b"bob", 1) for _ in range(5)]
    assert [g.one_time for g in got] == [True, True, True, False, False]
    assert len({g.bundle for g in got[:3]}) == 3
    assert dev.upload().one_time == 0  # re-uploading claimed ids does not revive them


def test_retried_submission_is_stored_once(client: httpx.Client) -> None:
    cust = new_device(client, b"carol", CUSTOMER)
    biz = new_device(client, b"store", BUSINESS)
    envs = cust.envelopes(b"store", [biz.addr], MessageClass.SERVICE)
    first = cust.submit(envs)
    again = cust.submit(envs)
    assert again == first
    assert len(biz.fetch().deliveries) == 1
    other = cust.envelopes(b"store", [biz.addr], MessageClass.SERVICE, first.message_id, b"x")
    with pytest.raises(Refused) as exc:
        cust.submit(other)
    assert (exc.value.status, exc.value.code) == (409, "duplicate_submission")


def test_stale_device_list(client: httpx.Client) -> None:
    cust = new_device(client, b"dave", CUSTOMER)
    biz = new_device(client, b"mart", BUSINESS)
    agent2 = Dev(client, biz.acct, 2)
    agent2.register()
    with pytest.raises(Refused) as exc:
        cust.submit(cust.envelopes(b"mart", [biz.addr], MessageClass.SERVICE))
    assert exc.value.code == "stale_device_list"
    assert exc.value.error.missing == ((b"mart", 2),)
    assert isinstance(exc.value.error.to_error(), Exception)


def test_long_poll_wakes_on_new_mail(client: httpx.Client, relay: object) -> None:
    import threading
    import time

    cust = new_device(client, b"erin", CUSTOMER)
    biz = new_device(client, b"cafe", BUSINESS)
    out: list[wire.Mailbox] = []

    def wait() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c2:
            biz.http = c2
            out.append(biz.fetch(wait_ms=10_000))

    t = threading.Thread(target=wait)
    started = time.monotonic()
    t.start()
    time.sleep(0.3)
    cust.submit(cust.envelopes(b"cafe", [biz.addr], MessageClass.SERVICE))
    t.join(15)
    assert out and len(out[0].deliveries) == 1
    assert time.monotonic() - started < 9
