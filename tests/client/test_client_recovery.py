"""Session recovery (SPEC.md §10.11): the retry protocol, and a device restored from a backup
that recovers by itself. The first test is issue 21's backup scenario; it fails on the code
before the retry protocol (every send of the restored agent raises RatchetStepRequired, the
customer's next messages fail with AuthenticationFailed and are dropped)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from world import Backup, Service, run

from e2e.client import Client, MessageReceived, Undecryptable, inbox
from e2e.frame import decode_message
from e2e.platform.envelope import Envelope
from e2e.ratchet import Ratchet
from e2e.store import Address
from e2e.store.sqlite import SqliteStore


@pytest.fixture
def chain_keys(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """A digest of every sending chain key a frame is encrypted under (a chain key names the
    message key it derives: two frames under one reuse a key)."""
    used: list[bytes] = []
    encrypt = Ratchet.encrypt

    def spy(self: Ratchet, *args: Any, **kwargs: Any) -> bytes:
        if self.cks is not None and not self.must_ratchet:
            used.append(hashlib.sha256(self.cks).digest())
        return encrypt(self, *args, **kwargs)

    monkeypatch.setattr(Ratchet, "encrypt", spy)
    return used


def bodies(msgs: list[Any]) -> list[bytes]:
    return [m.body for m in msgs]


def test_an_agent_restored_from_a_backup_recovers_by_itself(fast_tmp: Path, backup: Backup) -> None:
    """The agent's store is backed up; the conversation goes on (both sides ratchet); the
    agent's disk is lost and the backup restored. Reopened, the agent recovers without help:
    its peers are asked to re-key and send again what it lost, it sends on new sessions only,
    and in the end the customer has every message the agent sent and the agent every message
    the customer sent, each once."""
    key = os.urandom(32)
    path = fast_tmp / "agent.db"

    def agent_store() -> SqliteStore:
        return SqliteStore(path, key)

    async def go() -> None:
        svc = Service(fast_tmp)
        agent = await Client.create_account(agent_store, svc.connect, "acme", "business")
        [carol] = await svc.account("carol", "customer")
        await carol.send("acme", "m1 where is my parcel?")
        await agent.sync()
        await agent.send("carol", "r1 let me check")
        await carol.sync()
        agent = await backup.take(agent, path, key, svc.connect)
        for i in (2, 3):
            svc.clock.advance(60)  # resent messages keep their time: the history sorts by it
            await carol.send("acme", f"m{i} any news?")
            await agent.sync()
            await agent.send("carol", f"r{i} on its way")
            await carol.sync()
        svc.clock.advance(60)
        await carol.send("acme", "m4 thanks")  # in the mailbox when the agent's disk dies
        agent = await backup.restore(agent, path, key, svc.connect)  # the disk is lost
        for _ in range(3):
            await carol.sync()
            await agent.sync()
        await agent.send("carol", "r5 delivered today")
        await carol.sync()
        await carol.send("acme", "m6 got it")
        for _ in range(2):
            await agent.sync()
            await carol.sync()
        got = [m.body for m in await agent.history("carol") if not m.outgoing]
        assert got == [b"m1 where is my parcel?", b"m2 any news?", b"m3 any news?",
                       b"m4 thanks", b"m6 got it"]  # fmt: skip
        seen = [m.body for m in await carol.history("acme") if not m.outgoing]
        assert seen == [b"r1 let me check", b"r2 on its way", b"r3 on its way",
                        b"r5 delivered today"]  # fmt: skip
        opened = [e.message.body for e in await agent.read_events()
                  if isinstance(e, MessageReceived) and not e.message.outgoing]  # fmt: skip
        assert len(opened) == len(set(opened))  # each handed over once
        await svc.aclose()
        await agent.aclose()

    run(go)


def test_no_message_key_of_the_older_state_is_used_again(
    fast_tmp: Path, chain_keys: list[bytes], backup: Backup
) -> None:
    """The restored agent's sends use new sessions only: no sending chain key it used after
    the backup is used again after the restore, and its first frame to each device is the
    first message of a new session."""
    key = os.urandom(32)
    path = fast_tmp / "agent.db"

    async def go() -> None:
        svc = Service(fast_tmp)
        agent = await Client.create_account(lambda: SqliteStore(path, key), svc.connect,
                                            "acme", "business", auto_receipts=False)  # fmt: skip
        [carol] = await svc.account("carol", "customer", auto_receipts=False)
        await carol.send("acme", "hi")
        await agent.sync()
        agent = await backup.take(agent, path, key, svc.connect, auto_receipts=False)
        mark = len(chain_keys)
        for i in range(3):
            await agent.send("carol", f"after the backup {i}")
        after_backup = set(chain_keys[mark:])
        await carol.sync()
        agent = await backup.restore(agent, path, key, svc.connect, auto_receipts=False)
        mark = len(chain_keys)
        submitted: list[bytes] = []
        submit = agent.transport.submit

        async def record(envelopes: list[bytes]) -> Any:
            submitted.extend(envelopes)
            return await submit(envelopes)

        agent.transport.submit = record  # type: ignore[method-assign]
        await agent.send("carol", "after the restore")
        after_restore = set(chain_keys[mark:])
        assert after_backup and after_restore and not after_backup & after_restore
        [env] = [Envelope.from_bytes(e) for e in submitted if Envelope.from_bytes(e).cls == 1]
        assert decode_message(env.frame).prekey is not None  # a new session's first message
        await carol.sync()
        assert [m.body for m in await carol.history("acme") if not m.outgoing][-1] == (
            b"after the restore")
        await svc.aclose()
        await agent.aclose()

    run(go)


def test_a_conversation_the_backup_did_not_know_is_asked_for_in_full(
    fast_tmp: Path, backup: Backup
) -> None:
    """Carol's second phone is backed up before she ever wrote to the shop; her first phone
    writes (the second reads its copies), then the second phone's store is restored. Its
    backup knows no conversation to ask, so nothing is asked until the first phone's next
    copy fails to decrypt: that retry request asks for everything the conversation sent since
    the restored store's newest message, and the second phone ends with every message (found
    by the fault suite: before, it asked for the failed message alone, and the earlier ones
    were lost to it)."""

    async def go() -> None:
        svc = Service(fast_tmp, stores="sqlite")
        [shop] = await svc.account("shop", "business", auto_receipts=False)
        phone, tablet = await svc.account("carol", "customer", devices=2, auto_receipts=False)
        path, key = svc.dir / "carol-2.db", svc.keys["carol-2"]
        tablet = await backup.take(tablet, path, key, svc.connect, auto_receipts=False)
        for text in ("m1", "m2"):
            svc.clock.advance(60)  # resent messages keep their time: the history sorts by it
            await phone.send("shop", text)
            await tablet.sync()
        await tablet.send("shop", "t1")  # the phone's session with the tablet is answered
        await phone.sync()
        await shop.sync()
        tablet = await backup.restore(tablet, path, key, svc.connect, auto_receipts=False)
        svc.clock.advance(60)
        await phone.send("shop", "m3")
        assert await tablet.sync() == []  # no session: kept, a retry request sent
        await phone.sync()  # the request: m1, m2 and m3 sealed again for the tablet
        await tablet.sync()
        got = [m.body for m in await tablet.history("shop") if m.body != b"t1"]
        assert got == [b"m1", b"m2", b"m3"]  # (t1, its own, is lost with its store)
        svc.clients = [shop, phone, tablet]  # the first tablet client is closed already
        await svc.aclose()

    run(go)


def test_a_conversation_the_backup_did_not_know_is_asked_for_when_it_opens(
    fast_tmp: Path, backup: Backup
) -> None:
    """The shop's second device is backed up before carol ever wrote; it opens (and
    acknowledges) her first message, then its store is restored. Her next message still
    opens (her sessions with it were never answered: prekey messages the backup's prekeys
    open), and that is when the restored device asks her devices for everything since: it
    ends with both messages (found by the fault suite: m1 was lost)."""

    async def go() -> None:
        svc = Service(fast_tmp, stores="sqlite")
        shop, desk = await svc.account("shop", "business", devices=2, auto_receipts=False)
        [carol] = await svc.account("carol", "customer", auto_receipts=False)
        path, key = svc.dir / "shop-2.db", svc.keys["shop-2"]
        desk = await backup.take(desk, path, key, svc.connect, auto_receipts=False)
        svc.clock.advance(60)
        await carol.send("shop", "m1")
        assert bodies(await desk.sync()) == [b"m1"]
        desk = await backup.restore(desk, path, key, svc.connect, auto_receipts=False)
        svc.clock.advance(60)
        await carol.send("shop", "m2")
        assert bodies(await desk.sync()) == [b"m2"]  # opens: the conversation is asked
        await carol.sync()  # the request: m1 and m2 sealed again for the desk
        await desk.sync()
        assert bodies(await desk.history("carol")) == [b"m1", b"m2"]
        svc.clients = [shop, carol, desk]  # the first desk client is closed already
        await svc.aclose()

    run(go)


def test_a_message_that_does_not_decrypt_is_asked_for_again(fast_tmp: Path) -> None:
    """Carol's session with the shop is lost (only hers): the shop's next message does not
    decrypt. It is kept as Undecryptable, carol asks the shop device on a new session, the
    shop sends it again, and it arrives as the message itself, with the same id."""

    async def go() -> None:
        svc = Service(fast_tmp)
        shop, carol = await svc.chat("shop", "carol")
        await shop.send("carol", "hello")
        await carol.sync()
        await carol._tx(lambda tx: tx.delete_session(Address("shop", 1)))
        lost = await shop.send("carol", "your code is 1234")
        assert await carol.sync() == []  # kept, a retry request sent
        await shop.sync()  # the request: the shop seals it again for carol alone
        [again] = await carol.sync()
        assert (again.body, again.message_id) == (b"your code is 1234", lost.message_id)
        kinds = Undecryptable | MessageReceived
        evs = [e for e in await carol.read_events() if isinstance(e, kinds)]
        assert [type(e).__name__ for e in evs][-2:] == ["Undecryptable", "MessageReceived"]
        assert evs[-2].message_id == lost.message_id  # type: ignore[union-attr]
        assert carol.errors == {"DecryptError": 1}
        # Both ends talk on: the shop's next message decrypts at once.
        await shop.send("carol", "anything else?")
        assert bodies(await carol.sync()) == [b"anything else?"]
        await carol.send("shop", "no, thanks")
        assert bodies(await shop.sync()) == [b"no, thanks"]
        await svc.aclose()

    run(go)


def test_retry_requests_are_bounded_per_message(fast_tmp: Path) -> None:
    """A message its sender cannot send again (a relay injecting copies that never decrypt,
    under a real message id) is asked for at most MAX_RETRIES times."""

    async def go() -> None:
        svc = Service(fast_tmp)
        shop, carol = await svc.chat("shop", "carol")
        sent = await shop.send("carol", "hello")
        [raw] = await carol.transport.fetch()
        requests = 0
        submit = carol.transport.submit

        async def count(envelopes: list[bytes]) -> Any:
            nonlocal requests
            requests += 1
            return await submit(envelopes)

        carol.transport.submit = count  # type: ignore[method-assign]
        from e2e.platform.envelope import Delivery

        d = Delivery.from_bytes(raw)
        env = Envelope.from_bytes(d.envelope)
        broken = Envelope(env.cls, env.from_account, env.from_device, env.to_account,
                          env.dest_account, env.dest_device, env.message_id, env.commitment,
                          env.frame[:-1] + bytes([env.frame[-1] ^ 1]), env.template_id)  # fmt: skip
        for seq in range(5):
            bad = Delivery(broken.to_bytes(), d.received_at, d.tag, 10_000 + seq).to_bytes()
            await carol._take([bad], None)
            await carol._follow_up()
        assert requests == inbox.MAX_RETRIES
        assert carol.errors == {"AuthenticationFailed": 5}
        del sent
        await svc.aclose()

    run(go)
