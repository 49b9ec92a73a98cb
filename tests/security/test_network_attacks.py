"""Proof suite, part 2, through the network relay: forward secrecy, post-compromise security,
replay, tamper, re-addressing, impersonation and PQ-to-classical downgrade, with
``python -m e2e relay serve`` as a separate process (SQLite, and PostgreSQL) and e2e.client
devices on their own encrypted stores over HTTP.

The attacker sees what the relay's tap recorded (every request body it received and every
response body it sent) and, as a malicious relay, chooses what a device is handed: a delivery
from the tap, altered, is passed to the device's own receive step (:func:`state.open_delivery`,
one store transaction). "Compromise" is a copy of a device's store file with its storage key.
One relay process per backend serves the whole module; each test uses fresh accounts.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import httpx
import pytest
import secworld as sw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import RelayProcess, fresh_pg_db, pg_or_skip  # noqa: E402
from world import open_raw, run  # noqa: E402

from e2e import PQ, PrekeyBundle, Session  # noqa: E402
from e2e.client import Client  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.errors import (  # noqa: E402
    AuthenticationFailed,
    DecodeError,
    DuplicateMessage,
    DuplicateSubmission,
    E2EError,
    ReportRejected,
    SuiteMismatch,
    Unauthenticated,
    UnknownSuite,
    UntrustedDevice,  # noqa: E402
)
from e2e.frame import K  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from e2e.platform import wire  # noqa: E402
from e2e.platform.envelope import Delivery, Envelope  # noqa: E402
from e2e.platform.franking import Report, ReportItem  # noqa: E402
from e2e.platform.policy import MessageClass  # noqa: E402
from e2e.relay.tap import read_tap  # noqa: E402
from e2e.store.sqlite import SqliteStore  # noqa: E402

_T = TypeVar("_T")


@dataclass
class Net:
    """The module's relay process, its tap file and a scratch directory for device stores."""

    proc: RelayProcess
    tap: Path
    dir: Path
    keys: dict[str, bytes]

    def tap_records(self) -> list[tuple[str, bytes]]:
        return read_tap(self.tap.read_bytes())

    def tapped_deliveries(self, dev: Client, count: int) -> list[bytes]:
        """The last ``count`` deliveries the relay sent to ``dev`` (as the tap saw them; the
        tap is written just after the response, so wait for it)."""
        want = dev.addr.wire
        deadline = time.monotonic() + 10
        while True:
            found = []
            for ch, body in self.tap_records():
                if ch == "send:" + wire.Path.MAILBOX_FETCH:
                    try:
                        box = wire.Mailbox.from_bytes(body)
                    except E2EError:
                        continue  # an error body
                    for raw in box.deliveries:
                        if Delivery.from_bytes(raw).open_envelope().dest == want:
                            found.append(raw)
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, "the tap did not record the deliveries"
                return found[-count:]
            time.sleep(0.02)

    def tapped_submissions(self) -> list[bytes]:
        return [b for ch, b in self.tap_records() if ch == "recv:" + wire.Path.MESSAGE_SUBMIT]

    def store_path(self, name: str) -> Path:
        return self.dir / f"{name}.db"

    def opener(self, name: str) -> Callable[[], SqliteStore]:
        key = self.keys.setdefault(name, os.urandom(32))
        return lambda: SqliteStore(self.store_path(name), key)

    def steal(self, dev: Client, name: str, as_name: str) -> SqliteStore:
        """The attacker's copy of ``dev``'s store (file, epoch file) opened with its key."""
        src = self.store_path(name)
        dst = self.dir / f"{as_name}.db"
        with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
            a.backup(b)
        shutil.copyfile(str(src) + "-epoch", str(dst) + "-epoch")
        return SqliteStore(dst, self.keys[name])


@pytest.fixture(scope="module", params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp(f"net-{request.param}")
    db = str(d / "relay.db") if request.param == "sqlite" else fresh_pg_db(pg_or_skip())
    tap = d / "tap.bin"
    extra = ["--tap", str(tap), "--rate", "10000", "--burst", "10000"]
    proc = RelayProcess(db, log_path=d / "relay.log", extra=extra)
    proc.start()
    try:
        yield Net(proc, tap, d, {})
    finally:
        proc.stop()


def rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of a device store as stored (sealed values: any write re-seals, so equal
    rows mean nothing was written)."""
    with sqlite3.connect(path) as c:
        return c.execute("SELECT kind, id, value FROM records ORDER BY kind, id").fetchall()


def plaintext_dump(store: SqliteStore) -> bytes:
    """Every record of a store, opened with its key (what the thief of store and key reads)."""
    out = []
    with store.transaction() as tx:
        for kind, rid, _ in tx._headers():
            v = tx._read(kind, rid)
            if v is not None:
                out.append(v)
    return b"\x00".join(out)


class World:
    """A customer and a business of fresh names on the module's relay."""

    def __init__(self, net: Net) -> None:
        self.net = net
        tag = os.urandom(4).hex()
        self.cust_name, self.shop_name = f"cu{tag}", f"sh{tag}"
        self.http = RelayClient(net.proc.url)
        self.clients: list[Client] = []

    async def start(self, agents: int = 1) -> tuple[Client, list[Client]]:
        c = self.http.connect
        shop = await Client.create_account(self.net.opener(self.shop_name), c,
                                           self.shop_name, "business", tier=1, prekeys=4,
                                           auto_receipts=False)  # fmt: skip
        devs = [shop]
        for i in range(agents - 1):
            devs.append(await shop.add_device(self.net.opener(f"{self.shop_name}-{i}"), c,
                                              prekeys=4, auto_receipts=False))  # fmt: skip
        cust = await Client.create_account(self.net.opener(self.cust_name), c,
                                           self.cust_name, "customer", prekeys=4,
                                           auto_receipts=False)  # fmt: skip
        self.clients = [*devs, cust]
        await cust.send(self.shop_name, "hello")
        for d in devs:
            await d.sync()
        return cust, devs

    async def close(self) -> None:
        for cl in self.clients:
            await cl.aclose()
        await self.http.aclose()


def test_forward_secrecy_stolen_store_decrypts_nothing_earlier(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        cap = sw.KeyCapture()
        n = 10  # the last one stays unread until after the control snapshot
        with cap.active():
            for i in range(n):
                await agent.send(w.cust_name, f"message number {i}")
                if i % 3 == 2:
                    # The network hands the customer this round's messages newest first.
                    raws = await cust.transport.fetch()
                    for raw in reversed(raws):
                        await open_raw(cust, raw)
                    await cust.transport.ack([Delivery.from_bytes(r).seq for r in raws])
                    await cust.send(w.shop_name, f"ack {i}")  # DH ratchet steps in between
                    await agent.sync()
            early = net.steal(cust, w.cust_name, "early")  # control: before the last sync
            await cust.sync()
        frames = [Delivery.from_bytes(r).open_envelope().frame
                  for r in net.tapped_deliveries(cust, 1)]  # fmt: skip
        assert len([m for m in await cust.history(w.shop_name) if not m.outgoing]) == n
        # Control: a copy taken before the device opened the last message does open it.
        with early.transaction() as tx:
            assert tx.decrypt(agent.addr, frames[-1]).find(b"message number 9") >= 0
        early.close()
        # The copy taken after: nothing sent earlier opens (newest first, then older).
        earlier = [Delivery.from_bytes(r).open_envelope().frame
                   for r in _all_delivered(net, cust, agent)]  # fmt: skip
        assert len(earlier) >= n
        stolen = net.steal(cust, w.cust_name, "late")
        for frame in reversed(earlier):
            with pytest.raises(E2EError), stolen.transaction() as tx:
                tx.decrypt(agent.addr, frame)
        dump = plaintext_dump(stolen)
        stolen.close()
        assert cap.used
        for key in cap.used:
            assert key not in dump
        await w.close()

    run(go)


def _all_delivered(net: Net, dev: Client, sender: Client) -> list[bytes]:
    want = sender.addr.wire
    out = []
    for ch, body in net.tap_records():
        if ch == "send:" + wire.Path.MAILBOX_FETCH:
            try:
                box = wire.Mailbox.from_bytes(body)
            except E2EError:
                continue
            for raw in box.deliveries:
                env = Delivery.from_bytes(raw).open_envelope()
                if env.dest == dev.addr.wire and env.sender == want:
                    out.append(raw)
    return out


def test_post_compromise_clone_stops_after_one_dh_round_trip(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        await agent.send(w.cust_name, "before")
        await cust.sync()
        clone = net.steal(cust, w.cust_name, "clone")  # the attacker's copy, with the key

        async def next_frame(text: str) -> bytes:
            await agent.send(w.cust_name, text)
            got = await cust.sync()
            assert [m.body for m in got if not m.outgoing] == [text.encode()]
            return Delivery.from_bytes(net.tapped_deliveries(cust, 1)[0]).open_envelope().frame

        def clone_reads(frame: bytes) -> bytes:
            with clone.transaction() as tx:
                return tx.decrypt(agent.addr, frame)

        assert b"still readable" in clone_reads(await next_frame("still readable by the clone"))
        await cust.send(w.shop_name, "reply on the ratchet key the attacker also holds")
        await agent.sync()
        f2 = await next_frame("agent ratchets, but against that same compromised key")
        assert b"compromised key" in clone_reads(f2)
        # The round trip: the customer draws a ratchet key the clone does not know.
        await cust.send(w.shop_name, "honest reply with a fresh ratchet key")
        await agent.sync()
        f3 = await next_frame("after the round trip")
        with pytest.raises(AuthenticationFailed):
            clone_reads(f3)
        clone.close()
        await w.close()

    run(go)


def test_replay_of_delivery_and_of_submission(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        await agent.send(w.cust_name, "once")
        assert [m.body for m in await cust.sync()] == [b"once"]
        raw = net.tapped_deliveries(cust, 1)[0]
        before = rows(net.store_path(w.cust_name))
        with pytest.raises(DuplicateMessage):
            await open_raw(cust, raw)
        assert rows(net.store_path(w.cust_name)) == before
        # The submission, taken from the tap, sent again by the relay's attacker: without
        # the device's signature it is refused; signed (a retry) it is stored once.
        sub = [b for b in net.tapped_submissions()
               if Envelope.from_bytes(wire.Submit.from_bytes(b).envelopes[0]).message_id
               == Delivery.from_bytes(raw).open_envelope().message_id][0]  # fmt: skip
        async with httpx.AsyncClient(base_url=net.proc.url) as h:
            r = await h.post(wire.Path.MESSAGE_SUBMIT, content=sub,
                             headers={"content-type": wire.CONTENT_TYPE})  # fmt: skip
            assert r.status_code == 401
        envs = list(wire.Submit.from_bytes(sub).envelopes)
        await agent.transport.submit(envs)
        assert await cust.transport.fetch() == []
        # Another batch under the message id the relay accepted: refused, nothing stored.
        env = Envelope.from_bytes(envs[0])
        other = Envelope(env.cls, env.from_account, env.from_device, env.to_account,
                         env.dest_account, env.dest_device, env.message_id, env.commitment,
                         env.frame[:-1] + bytes([env.frame[-1] ^ 1]))  # fmt: skip
        with pytest.raises(DuplicateSubmission):
            await agent.transport.submit([other.to_bytes()])
        assert await cust.transport.fetch() == []
        assert rows(net.store_path(w.cust_name)) == before
        await w.close()

    run(go)


def test_tamper_any_byte_of_envelope_rejected_state_unchanged(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        await agent.send(w.cust_name, "tamper me")
        fetched = await cust.transport.fetch()  # fetched, not yet opened
        raw = net.tapped_deliveries(cust, 1)[0]
        assert fetched == [raw]
        d = Delivery.from_bytes(raw)
        before = rows(net.store_path(w.cust_name))
        for i in range(len(d.envelope)):
            forged = bytearray(d.envelope)
            forged[i] ^= 0x80
            bad = Delivery(bytes(forged), d.received_at, d.tag, d.seq).to_bytes()
            with pytest.raises(E2EError):
                await open_raw(cust, bad)
        assert rows(net.store_path(w.cust_name)) == before
        msg = await open_raw(cust, raw)
        assert msg.body == b"tamper me"  # control: the honest copy
        assert rows(net.store_path(w.cust_name)) != before
        # The relay's franking tag is not the device's to check, but a report with a forged
        # tag, or a forged text, is refused; the honest report verifies.
        shop, me = w.shop_name.encode(), w.cust_name.encode()
        bad = Delivery(d.envelope, d.received_at, bytes(32), d.seq).to_bytes()
        for item in (ReportItem(bad, msg.franking_key, msg.body),
                     ReportItem(raw, msg.franking_key, b"other")):  # fmt: skip
            with pytest.raises(ReportRejected):
                await cust.transport.report(Report(me, shop, (item,)).to_bytes(), False)
        good = Report(me, shop, (ReportItem(raw, msg.franking_key, msg.body),))
        assert await cust.transport.report(good.to_bytes(), False) == 1
        await w.close()

    run(go)


def test_readdressed_frame_fails_on_other_device(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (a1, a2) = await w.start(agents=2)
        await cust.send(w.shop_name, "for agent 1 only")
        raw = (await a1.transport.fetch())[-1]
        assert raw in net.tapped_deliveries(a1, 1)
        env = Delivery.from_bytes(raw).open_envelope()
        moved = Envelope(env.cls, env.from_account, env.from_device, env.to_account,
                         a2.addr.account, a2.addr.device, env.message_id,
                         env.commitment, env.frame)  # fmt: skip
        path2 = net.store_path(f"{w.shop_name}-0")
        before = rows(path2)
        with pytest.raises(E2EError):
            await open_raw(a2, Delivery(moved.to_bytes(), 0, bytes(32), 1).to_bytes())
        with pytest.raises(E2EError):  # unchanged envelope, wrong mailbox
            await open_raw(a2, raw)
        assert rows(path2) == before
        assert (await open_raw(a1, raw)).body == b"for agent 1 only"  # control
        await w.close()

    run(go)


def test_impersonation_with_only_the_victims_identity_key(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        victim_key = (await cust._tx(lambda tx: tx.local_identity())).public
        mallory = KeyPair.generate()
        fake = KeyPair.from_stored(mallory.private_bytes(), victim_key)
        bundle = PrekeyBundle.from_bytes(await cust.transport.fetch_bundle(agent.addr))
        path = net.store_path(w.shop_name)
        before = rows(path)
        for who in (fake, mallory):  # claims her key without its private half; her own key
            frame = Session.initiate(who, bundle).encrypt(b"I am the customer")
            env = Envelope(MessageClass.SERVICE, cust.addr.account, cust.addr.device,
                           agent.addr.account, agent.addr.account,
                           agent.addr.device, os.urandom(16), bytes(32), frame)  # fmt: skip
            exc = AuthenticationFailed if who is fake else UntrustedDevice
            with pytest.raises(exc):
                await open_raw(agent, Delivery(env.to_bytes(), 0, bytes(32), 1).to_bytes())
            # Submitted through the relay signed with a key that is not the customer's
            # device key: refused before anything is stored.
            with pytest.raises(Unauthenticated):
                await w.http.connect(cust.addr, who).submit([env.to_bytes()])
        assert rows(path) == before
        assert await agent.transport.fetch() == []
        await w.close()

    run(go)


class BundleSwap:
    """A malicious relay as the device sees it: serves ``bundle`` for every prekey claim."""

    def __init__(self, inner: Any, bundle: bytes) -> None:
        self.inner, self.bundle = inner, bundle

    async def fetch_bundle(self, device: Any) -> bytes:
        return self.bundle

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _relabelled(raw: bytes, drop: tuple[int, ...], suite: int) -> bytes:
    """``raw`` (a canonical CBOR map) with the keys ``drop`` removed and its suite id set."""
    fields = {k: v for k, v in cbor2.loads(raw).items() if k not in drop}
    return cbor2.dumps(dict(sorted({**fields, K.SUITE: suite}.items())))


def test_pq_to_classical_downgrade_refused(net: Net) -> None:
    """There is no classical frame suite to fall back to (suite 1 is retired, SPEC §1): a
    relay serving the agent's PQ bundle stripped of its KEM prekey (as suite 1, or still as
    the PQ suite) makes the sender refuse before anything is encrypted, and a PQ initial message
    relabelled as suite 1 is refused by the agent's device with its store unchanged."""

    async def go() -> None:
        w = World(net)
        cust, (agent,) = await w.start()
        raw = await cust.transport.fetch_bundle(agent.addr)
        kem = (K.KEM_ID, K.KEM_PK, K.KEM_SIG)
        stripped_as_1 = _relabelled(raw, kem, 1)
        relabelled_as_1 = _relabelled(raw, (), 1)
        stripped_as_pq = _relabelled(raw, kem, PQ.id)
        for relabelled in (stripped_as_1, relabelled_as_1):
            with pytest.raises(UnknownSuite):
                PrekeyBundle.from_bytes(relabelled)
            with pytest.raises(UnknownSuite):
                Session.initiate(KeyPair.generate(), relabelled)
        name = f"dg{os.urandom(4).hex()}"
        dg = await Client.create_account(net.opener(name), w.http.connect, name, "customer",
                                         prekeys=4, auto_receipts=False)  # fmt: skip
        w.clients.append(dg)
        honest = dg.transport
        for bad, error in (
            (stripped_as_1, UnknownSuite),
            (relabelled_as_1, UnknownSuite),
            (stripped_as_pq, DecodeError),
        ):
            dg.transport = BundleSwap(honest, bad)  # type: ignore[assignment]
            with pytest.raises(error):
                await dg.send(w.shop_name, "downgraded?")
            assert await dg.pending() == []
        dg.transport = honest
        assert await agent.transport.fetch() == []
        await dg.send(w.shop_name, "control: the honest PQ bundle")  # the method itself works
        assert [m.body for m in await agent.sync()] == [b"control: the honest PQ bundle"]
        # A PQ initial message from that customer's device key, relabelled as suite 1 (KEM
        # fields kept or stripped), handed to the agent device: refused, nothing stored.
        sender = await dg._tx(lambda tx: tx.local_identity())
        frame = Session.initiate(sender, await cust.transport.fetch_bundle(agent.addr)).encrypt(
            b"x"
        )
        path = net.store_path(w.shop_name)
        for drop in ((), (K.KEM_ID, K.KEM_CT)):
            env = Envelope(MessageClass.SERVICE, dg.addr.account, dg.addr.device,
                           agent.addr.account, agent.addr.account, agent.addr.device,
                           os.urandom(16), bytes(32), _relabelled(frame, drop, 1))  # fmt: skip
            before = rows(path)
            with pytest.raises(UnknownSuite):
                await open_raw(agent, Delivery(env.to_bytes(), 0, bytes(32), 1).to_bytes())
            assert rows(path) == before
        # The honest PQ initial message cut short: refused as malformed, nothing stored.
        env = Envelope(MessageClass.SERVICE, dg.addr.account, dg.addr.device,
                       agent.addr.account, agent.addr.account, agent.addr.device,
                       os.urandom(16), bytes(32), frame[:-1])  # fmt: skip
        before = rows(path)
        with pytest.raises((DecodeError, SuiteMismatch)):
            await open_raw(agent, Delivery(env.to_bytes(), 0, bytes(32), 1).to_bytes())
        assert rows(path) == before
        await w.close()

    run(go)
