"""Byte budgets on every answer (SPEC §10.13): no mailbox can be made impossible to empty.

A fetch answers at most ``mailbox.fetch_bytes`` of deliveries (2 MiB by default, under the 4 MiB
a client accepts) but always the oldest one, so each fetch makes progress; a submission whose
copy could not be fetched by its recipient is refused when it is submitted. Run against the
relay process on SQLite and PostgreSQL, the victim an e2e.client device."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device

from e2e.client import Client, RelayClient
from e2e.platform import wire
from e2e.platform.envelope import MAX_ENVELOPE_BYTES, Envelope
from e2e.platform.franking import commit
from e2e.platform.policy import MessageClass
from e2e.store import MemoryStore

CUSTOMER = 0


def _junk(sender: Dev, to: bytes, dest: tuple[bytes, int], size: int) -> bytes:
    """An envelope of ``size`` bytes around a frame of junk (the relay never opens frames)."""
    mid = os.urandom(16)
    acct, device = sender.acct.name, sender.device_id
    c = commit(os.urandom(32), MessageClass.SERVICE, acct, to, mid, b"")

    def make(frame: bytes) -> bytes:
        return Envelope(MessageClass.SERVICE, acct, device, to, dest[0], dest[1], mid, c,
                        frame).to_bytes()  # fmt: skip

    frame = b"x" * (size - len(make(b"x" * size)) + size)
    raw = make(frame)
    assert len(raw) == size, len(raw)
    return raw


def test_seventeen_largest_messages_do_not_brick_a_device(relay: RelayProcess) -> None:
    """17 messages of the largest size (4.5 MiB together) sent to a business device: every
    sync of the device succeeds and takes some of them (on main the answer was over the
    client's 4 MiB and every sync failed, for ever)."""

    async def run() -> None:
        net = RelayClient(relay.url)
        shop = await Client.create_account(MemoryStore(), net.connect, "shop", "business")
        with httpx.Client(base_url=relay.url, timeout=30) as c:
            mallory = new_device(c, b"mallory", CUSTOMER)
            for _ in range(17):
                mallory.submit([_junk(mallory, b"shop", (b"shop", 1), MAX_ENVELOPE_BYTES)])
        rounds = 0
        while sum(shop.errors.values()) < 17:
            rounds += 1
            assert rounds <= 5
            await shop.sync()  # never raises
        assert rounds >= 3  # 2 MiB per answer: 7 of them at most
        assert await shop.sync() == []
        await shop.aclose()
        await net.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("relay_db", ["sqlite"], indirect=True)
def test_a_copy_too_large_for_its_recipient_is_refused_at_submit(
    relay_db: str, tmp_path: Path
) -> None:
    """With answers of at most 64 KiB, a 100 kB envelope is refused when it is submitted
    (413, nothing stored), and 50 kB ones come one per fetch, each fetch saying how many more
    wait."""
    proc = RelayProcess(relay_db, log_path=tmp_path / "relay.log",
                        env={"E2E_RELAY_MAILBOX_FETCH_BYTES": "65536"}).start()  # fmt: skip
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            mallory = new_device(c, b"mallory", CUSTOMER)
            shop = new_device(c, b"shop", 1)
            with pytest.raises(Refused) as refused:
                mallory.submit([_junk(mallory, b"shop", shop.addr, 100_000)])
            assert refused.value.status == 413
            assert shop.fetch().deliveries == ()
            for _ in range(3):
                mallory.submit([_junk(mallory, b"shop", shop.addr, 50_000)])
            seen = []
            for more in (2, 1, 0):
                box = shop.fetch()
                assert len(box.deliveries) == 1 and box.more == more
                assert len(box.to_bytes()) <= 65536
                seen.append(box.deliveries[0])
                shop.ack([_seq(box)])
            assert len(set(seen)) == 3
    finally:
        proc.stop()


def _seq(box: wire.Mailbox) -> int:
    from e2e.platform.envelope import Delivery

    return Delivery.from_bytes(box.deliveries[0]).seq


def test_every_answer_is_bounded_below_what_a_client_accepts() -> None:
    """Every answer body's largest encoding (from its schema) is under the 4 MiB a client
    decodes, except a fetch's, which the relay bounds by ``mailbox.fetch_bytes`` (whose
    largest setting is under it too)."""
    from e2e.relay.config import Mailbox

    for endpoint in wire.ENDPOINTS:
        if endpoint.answer is wire.Mailbox:
            continue
        assert endpoint.answer.max_size() < wire.MAX_REQUEST_BYTES, endpoint.path
    assert wire.Mailbox.max_size() == wire.MAX_REQUEST_BYTES  # the schema alone does not bound it
    hi = Mailbox.__dataclass_fields__["fetch_bytes"].metadata["hi"]
    assert hi < wire.MAX_REQUEST_BYTES and MAX_ENVELOPE_BYTES + 200 < Mailbox().fetch_bytes
