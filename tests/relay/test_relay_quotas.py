"""Mailbox quotas and retention, receipts that cannot be a free channel, and a business that
blocks a customer (SPEC §10.13, §10.3), each attack run against the relay process on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relayhelp import Refused, RelayProcess, new_device, relay_with

from e2e.client import Client, RelayClient
from e2e.platform import wire
from e2e.platform.envelope import Delivery
from e2e.platform.policy import MessageClass
from e2e.relay.backends import open_store
from e2e.store import MemoryStore

CUSTOMER, BUSINESS = 0, 1


@pytest.fixture
def small(relay_db: str, tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay whose mailboxes hold 6 deliveries, 3 from one sender, and purges every 0.2 s."""
    env = {
        "E2E_RELAY_MAILBOX_MAX_MESSAGES": "6",
        "E2E_RELAY_MAILBOX_SENDER_MESSAGES": "3",
        "E2E_RELAY_OPS_UPKEEP_SECONDS": "0.2",
    }
    with relay_with(relay_db, tmp_path / "relay.log", env) as proc:
        yield proc


def _service(dev: object, to: bytes, dests: list[tuple[bytes, int]]) -> wire.Receipt:
    return dev.submit(dev.envelopes(to, dests, MessageClass.SERVICE))  # type: ignore[attr-defined]


def _drain(dev: object) -> int:
    box = dev.fetch()  # type: ignore[attr-defined]
    seqs = [Delivery.from_bytes(d).seq for d in box.deliveries]
    if seqs:
        dev.ack(seqs)  # type: ignore[attr-defined]
    return len(seqs)


def test_a_mailbox_holds_its_quota_in_all_and_from_each_sender(small: RelayProcess) -> None:
    """One customer fills its share of a business device's mailbox (3): its fourth message
    is refused 429 mailbox_full with a retry-after, nothing stored; two others fill the rest
    (6), then everyone is refused; once the device has fetched, senders are accepted again
    (on main the 100,000th junk message was accepted like the first)."""
    with httpx.Client(base_url=small.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann, bea, cid = (new_device(c, n, CUSTOMER) for n in (b"ann", b"bea", b"cid"))
        for _ in range(3):
            _service(ann, b"shop", [shop.addr])
        with pytest.raises(Refused) as full:
            _service(ann, b"shop", [shop.addr])
        assert (full.value.status, full.value.code) == (429, "mailbox_full")
        r = ann.raw(wire.Path.MESSAGE_SUBMIT, wire.Submit(tuple(
            ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE))).to_bytes())  # fmt: skip
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        for _ in range(3):
            _service(bea, b"shop", [shop.addr])
        with pytest.raises(Refused) as full:
            _service(cid, b"shop", [shop.addr])
        assert full.value.code == "mailbox_full"
        assert _drain(shop) == 6
        _service(cid, b"shop", [shop.addr])
        _service(ann, b"shop", [shop.addr])
        assert _drain(shop) == 2


def test_undelivered_mail_expires_and_frees_the_quota(small: RelayProcess, relay_db: str) -> None:
    """A delivery older than mailbox.retention_seconds is deleted by the upkeep, and no longer
    counts against its sender's share."""
    with httpx.Client(base_url=small.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann = new_device(c, b"ann", CUSTOMER)
        for _ in range(3):
            _service(ann, b"shop", [shop.addr])
        store = open_store(relay_db)
        try:
            old = int(time.time()) - 31 * 86_400
            store.run(lambda tx: tx.execute("UPDATE mailbox SET received_at = ?", (old,)))
        finally:
            store.close()
        deadline = time.monotonic() + 10
        while shop.fetch().deliveries and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shop.fetch().deliveries == ()
        for _ in range(3):
            _service(ann, b"shop", [shop.addr])  # its share is free again
        assert _drain(shop) == 3


def test_receipts_are_small_and_answer_messages(relay: RelayProcess) -> None:
    """A business may send a past customer receipts only for what that customer sent it
    (two per message, plus a few), each at most limits.receipt_bytes: on main it sent 60 kB
    receipts, free, without end."""
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann = new_device(c, b"ann", CUSTOMER)
        _service(ann, b"shop", [shop.addr])
        with pytest.raises(Refused) as big:
            shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.RECEIPT,
                                       frame_size=60_000))  # fmt: skip
        assert big.value.status == 413
        sent = 0
        with pytest.raises(Refused) as many:
            for _ in range(20):
                shop.submit(shop.envelopes(b"ann", [ann.addr], MessageClass.RECEIPT))
                sent += 1
        assert sent == 2 * 1 + 4 and many.value.code == "not_allowed"
        assert shop.bill().counts == ()  # receipts are never billed
        # The customer's side too: one message from the business, six receipts for it.
        _service(shop, b"ann", [ann.addr])
        got = 0
        with pytest.raises(Refused):
            for _ in range(20):
                ann.submit(ann.envelopes(b"shop", [shop.addr], MessageClass.RECEIPT))
                got += 1
        assert got == 2 * 1 + 4


def test_a_business_blocks_a_customer(relay: RelayProcess) -> None:
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann = new_device(c, b"ann", CUSTOMER)
        _service(ann, b"shop", [shop.addr])
        shop.control(wire.Control.BLOCK, b"ann")
        for cls in (MessageClass.SERVICE, MessageClass.RECEIPT):
            with pytest.raises(Refused) as blocked:
                ann.submit(ann.envelopes(b"shop", [shop.addr], cls))
            assert blocked.value.code == "blocked"
        with pytest.raises(Refused) as other:
            shop.control(wire.Control.LIMIT, b"ann")  # limits and opt-ins are the customer's
        assert other.value.code == "not_allowed"
        shop.control(wire.Control.BLOCK, b"ann", on=False)
        _service(ann, b"shop", [shop.addr])
        assert _drain(shop) == 2


def test_an_e2e_client_sends_receipts_within_the_limits(relay: RelayProcess) -> None:
    """A customer's device that receives 150 messages in one sync sends its delivered
    receipts in pieces of at most 100 ids, each within the relay's receipt size; the business
    sees every message delivered."""

    async def run() -> None:
        net = RelayClient(relay.url)
        shop = await Client.create_account(MemoryStore(), net.connect, "shop", "business")
        ann = await Client.create_account(MemoryStore(), net.connect, "ann", "customer")
        await ann.send("shop", "hello")
        await shop.sync()
        sent = [await shop.send("ann", f"reply {i}") for i in range(150)]
        got = [m for m in await ann.sync() if m.cls is not MessageClass.RECEIPT]
        assert len(got) == 150
        await shop.sync()
        for m in sent:
            assert (await shop.receipt_status(m.message_id)) == {"ann": 1}
        await ann.aclose()
        await shop.aclose()
        await net.aclose()

    asyncio.run(run())


def test_a_database_made_before_gets_the_new_columns(relay_db: str) -> None:
    """A relay database made before mailboxes were counted (no sender or size per delivery,
    no receipt counts per chat) is brought up to date when a relay opens it; its old
    deliveries are fetched and acknowledged as before, uncounted."""
    old = [
        "CREATE TABLE mailbox (seq {serial}, account BLOB NOT NULL, device_id BIGINT NOT NULL,"
        " envelope BLOB NOT NULL, received_at BIGINT NOT NULL, tag BLOB NOT NULL)",
        "CREATE TABLE chats (business BLOB NOT NULL, customer BLOB NOT NULL,"
        " last_customer_message BIGINT, blocked INTEGER NOT NULL, limited INTEGER NOT NULL,"
        " opted_in INTEGER NOT NULL, template_times TEXT NOT NULL, spam_reports BIGINT NOT NULL,"
        " customer_count BIGINT NOT NULL, business_count BIGINT NOT NULL,"
        " PRIMARY KEY (business, customer))",
        "INSERT INTO mailbox (account, device_id, envelope, received_at, tag)"
        " VALUES (X'73686f70', 1, X'00', 1, X'00')",
    ]
    if relay_db.endswith(".db"):
        import sqlite3

        with sqlite3.connect(relay_db) as conn:
            for stmt in old:
                conn.execute(stmt.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
    else:
        import psycopg

        with psycopg.connect(relay_db, autocommit=True) as conn:
            for stmt in old:
                stmt = stmt.format(serial="BIGSERIAL PRIMARY KEY").replace("BLOB", "BYTEA")
                conn.execute(stmt.replace("X'", "'\\x"))  # type: ignore[arg-type]
    store = open_store(relay_db)
    try:
        assert store.read(lambda tx: tx.fetchall("SELECT sender, size FROM mailbox")) == [
            (None, None)
        ]
        assert store.read(lambda tx: tx.chat(b"shop", b"ann")) is None
        store.run(lambda tx: tx.ack(b"shop", 1, [1]))
        assert store.read(lambda tx: tx.count_mail()) == 0
    finally:
        store.close()


def _resend(dev: object, envs: list[bytes]) -> wire.Receipt:
    """Resend copies of an accepted message (the very envelopes it was submitted as)."""
    return dev.call(wire.Path.MESSAGE_RESEND, wire.Resend(tuple(envs)),  # type: ignore[attr-defined]
                    wire.Receipt)  # fmt: skip


def test_a_resend_is_refused_past_the_quota_as_a_submit_is(small: RelayProcess) -> None:
    """A customer that filled its share of a business device's mailbox is refused a resend
    of an accepted message with the very error a submission gets (429 mailbox_full, with a
    retry-after): a resend is no way around the quota."""
    with httpx.Client(base_url=small.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann = new_device(c, b"ann", CUSTOMER)
        first = ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE)
        ann.submit(first)
        _service(ann, b"shop", [shop.addr])
        _resend(ann, first)  # the third delivery from ann: within its share
        with pytest.raises(Refused) as by_submit:
            _service(ann, b"shop", [shop.addr])
        with pytest.raises(Refused) as by_resend:
            _resend(ann, first)
        assert (by_resend.value.status, by_resend.value.code) == (
            by_submit.value.status, by_submit.value.code) == (429, "mailbox_full")  # fmt: skip
        r = ann.raw(wire.Path.MESSAGE_RESEND, wire.Resend(tuple(first)).to_bytes())
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert _drain(shop) == 3  # nothing of the refused ones was stored


def test_a_resend_is_refused_past_either_sides_block(relay: RelayProcess) -> None:
    """A resend is refused ``blocked`` exactly where a submission is: a customer's resend
    once the business blocked it (accepted on main: only a business's resend was checked),
    and a business's once the customer blocked it; unblocked, both go through again."""
    with httpx.Client(base_url=relay.url, timeout=30) as c:
        shop = new_device(c, b"shop", BUSINESS)
        ann = new_device(c, b"ann", CUSTOMER)
        asked = ann.envelopes(b"shop", [shop.addr], MessageClass.SERVICE)
        ann.submit(asked)
        answer = shop.envelopes(b"ann", [ann.addr], MessageClass.SERVICE)
        shop.submit(answer)
        shop.control(wire.Control.BLOCK, b"ann")
        for sender, envs in ((ann, asked), (ann, None)):
            with pytest.raises(Refused) as blocked:
                if envs is None:
                    _service(sender, b"shop", [shop.addr])
                else:
                    _resend(sender, envs)
            assert (blocked.value.status, blocked.value.code) == (422, "blocked")
        shop.control(wire.Control.BLOCK, b"ann", on=False)
        ann.control(wire.Control.BLOCK, b"shop")
        with pytest.raises(Refused) as by_resend:
            _resend(shop, answer)
        with pytest.raises(Refused) as by_submit:
            _service(shop, b"ann", [ann.addr])
        assert by_resend.value.code == by_submit.value.code == "blocked"
        ann.control(wire.Control.BLOCK, b"shop", on=False)
        _resend(ann, asked)
        _resend(shop, answer)
        assert _drain(shop) == 2 and _drain(ann) == 2
