"""Proof suite, part 4: attacks on identities, through ``python -m e2e relay serve`` as its own
process (SQLite and PostgreSQL), with e2e.client devices on their own stores over HTTP
(issue 25 items 1, 2, 8, 9, 10 and 11's names; issue 21 item 4). Each test is an attack the
relay used to let through; SPEC §12's attack table names them.

One relay process per backend serves the module; each test makes accounts of fresh names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relayhelp import (  # noqa: E402
    ROOT,
    Acct,
    Dev,
    Refused,
    RelayProcess,
    fresh_pg_db,
    new_device,
    pg_or_skip,
)
from world import Serving, rogue, run  # noqa: E402

from e2e.client import ADMIN, Client, state  # noqa: E402
from e2e.client.http import RelayClient  # noqa: E402
from e2e.client.joining import begin_link, recover_account  # noqa: E402
from e2e.errors import (  # noqa: E402
    AuthenticationFailed,
    CertificateError,
    DecodeError,
    Forbidden,
    InvalidName,
    InvalidSignature,
    KeyChangePending,
    KeyMismatch,
    KeyTransparencyError,
    LogForked,
    NoSuchBlob,
    NotAllowed,
    RateLimited,
    Revoked,
    StaleProof,
    StateError,
    Unauthenticated,
    UnknownAccount,
    WireFailure,
)
from e2e.keys import KeyPair  # noqa: E402
from e2e.platform import wire  # noqa: E402
from e2e.platform.certificates import BusinessCertificate, PlatformSigner  # noqa: E402
from e2e.platform.directory import DeviceCertificate, SignedDeviceList  # noqa: E402
from e2e.platform.leaves import Opening  # noqa: E402
from e2e.platform.merkle import LogSigner, SignedTreeHead, TreeHead  # noqa: E402
from e2e.platform.provisioning import LinkCode, seal_grant  # noqa: E402
from e2e.platform.recovery import RecoveryKey  # noqa: E402
from e2e.platform.transparency import MAX_OPENING_BYTES, DirectoryEntry, KeyLog  # noqa: E402
from e2e.platform.vrf import VrfKey  # noqa: E402
from e2e.relay.backends import open_store  # noqa: E402
from e2e.store import Address, MemoryStore  # noqa: E402
from e2e.store.sqlite import SqliteStore  # noqa: E402

_T = TypeVar("_T")


@dataclass
class Net:
    proc: RelayProcess
    db: str
    dir: Path


@pytest.fixture(scope="module", params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = tmp_path_factory.mktemp(f"ident-{request.param}")
    db = str(d / "relay.db") if request.param == "sqlite" else fresh_pg_db(pg_or_skip())
    proc = RelayProcess(db, log_path=d / "relay.log", extra=["--rate", "10000", "--burst", "10000"])
    proc.start()
    try:
        yield Net(proc, db, d)
    finally:
        proc.stop()


def fresh(prefix: str) -> str:
    return f"{prefix}{os.urandom(4).hex()}"


class World:
    """Devices of fresh accounts on the module's relay, each on its own memory store."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.http = RelayClient(net.proc.url)
        self.clients: list[Client] = []

    async def account(self, name: str, kind: str, **kw: object) -> Client:
        store = MemoryStore()
        dev = await Client.create_account(lambda: store, self.http.connect, name, kind,
                                          prekeys=4, auto_receipts=False, **kw)  # type: ignore[arg-type]  # fmt: skip
        self.clients.append(dev)
        return dev

    async def agent(self, shop: Client) -> Client:
        """A new agent device of the business ``shop`` (a member, on its own memory store)."""
        dev = await shop.add_device(MemoryStore(), self.http.connect, prekeys=4,
                                    auto_receipts=False)  # fmt: skip
        self.clients.append(dev)
        return dev

    async def shop_with_agent(self) -> tuple[Client, Client]:
        """A business of a fresh name (tier 1) and one agent device of it."""
        shop = await self.account(fresh("shop"), "business", tier=1)
        return shop, await self.agent(shop)

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
        await self.http.aclose()


# -- issue 25 item 11: names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "nul\x00name",  # a NUL
        "evil\u202egnp.exe",  # a right-to-left override
        "zero\u200bwidth",  # a zero-width space
        "Pa\u0443Bank",  # Latin with a Cyrillic letter
        "cafe\u0301",  # not NFC
        "\uff30ayBank",  # fullwidth P: not NFKC-stable
        "two words",  # a space in an account name
    ],
)
def test_registration_refuses_names_that_do_not_show_what_they_are(net: Net, name: str) -> None:
    with httpx.Client(base_url=net.proc.url, timeout=30) as http:
        dev = Dev(http, Acct((name + os.urandom(3).hex()).encode(), 1, 1), 1)
        with pytest.raises(Refused) as err:
            dev.register_account()
        assert (err.value.status, err.value.code) == (400, "malformed")
        # The same request under a plain name is accepted: only the name was refused.
        ok = Dev(http, Acct(fresh("plain").encode(), 1, 1), 1)
        ok.register_account()


def test_a_client_refuses_such_a_name_before_anything_is_made(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        with pytest.raises(InvalidName):
            await w.account(fresh("Pa\u0443Bank"), "business", tier=1)
        await w.close()

    run(go)


def _certify(
    net: Net, account: str, display: str, key_file: Path
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "e2e", "relay", "certify-business", "--db", net.db,
           "--platform-key", str(key_file), "--account", account,
           "--display-name", display]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_confusable_business_names_are_never_verified(net: Net) -> None:
    """ "PаyBank" with a Cyrillic а: the operator's command refuses to certify it, and a
    client refuses a certificate with it even when the platform key signed it."""

    async def go() -> None:
        w = World(net)
        bank = await w.account(fresh("paybank"), "business", tier=1)
        cust = await w.account(fresh("cust"), "customer")
        platform = PlatformSigner()
        key_file = net.dir / f"platform-{os.urandom(3).hex()}.key"
        key_file.write_bytes(platform.private_bytes())
        await cust.pin_platform_key(platform.public)
        name = bank.profile.account
        for display in ("Pa\u0443Bank", "Pay\u202eBank", "\uff30ayBank"):
            done = _certify(net, name, display, key_file)
            assert done.returncode == 2, done.stdout
            assert not (await cust.business_identity(name)).verified
        # A certificate the platform key signed around the checks is refused by the client.
        bank_key = await bank.account_identity()
        forged = BusinessCertificate(name.encode(), "Pa\u0443Bank", bank_key, 0, 2**40,
                                     b"\x00" * 64)  # fmt: skip
        sig = platform._key.sign(forged.signed_bytes())
        raw = BusinessCertificate(name.encode(), "Pa\u0443Bank", bank_key, 0, 2**40, sig)
        store = open_store(net.db)
        try:
            store.run(lambda tx: tx.put_business_certificate(name.encode(), raw.to_bytes()))
        finally:
            store.close()
        with pytest.raises(CertificateError):
            await cust.business_identity(name)
        # The honest name is certified and shown.
        assert _certify(net, name, "Pay Bank", key_file).returncode == 0
        ident = await cust.business_identity(name)
        assert ident.verified and ident.display_name == "Pay Bank"
        await w.close()

    run(go)


# -- issue 25 item 1: a removed device comes back ---------------------------------------------


def test_a_removed_device_cannot_come_back(net: Net) -> None:
    """The agent's device is revoked; with its old store and keys it registers its old
    certificate again (alone, and with the older device list that carried it), tries any
    request, and waits for the customer's next message: it gets nothing."""

    async def go() -> None:
        w = World(net)
        shop, agent = await w.shop_with_agent()
        cust = await w.account(fresh("cust"), "customer")
        name = shop.profile.account
        await cust.send(name, "hello")
        assert [m.body for m in await agent.sync()] == [b"hello"]
        with agent.store.transaction() as tx:
            cert, old_list = state.certificate(tx), tx.app_get(state.REG_LIST)
        await shop.revoke_device(agent.profile.device)
        with pytest.raises(Revoked):
            await agent.transport.register_device(cert)
        with pytest.raises(Revoked):
            await agent.transport.register_device(cert, old_list)
        with pytest.raises(Unauthenticated):
            await agent.sync()
        sent = await cust.send(name, "my card number is 4111 1111 1111 1111")
        assert [m.message_id for m in await shop.sync()][-1] == sent.message_id
        with pytest.raises(Unauthenticated):
            await agent.sync()
        # The revocation is in the log: the owner's monitor passes, a peer's list is proven.
        await shop.pin_log_key(log_key(net))
        assert await shop.monitor() > 0
        await w.close()

    run(go)


def test_a_thief_with_the_old_key_of_a_rekeyed_device_cannot_take_it_back(net: Net) -> None:
    """Device 2 is re-keyed (a new certificate, the old one's serial tombstoned); a thief
    holding the old key and certificate registers them again: refused, and the owner's
    device keeps working."""
    with httpx.Client(base_url=net.proc.url, timeout=30) as http:
        acct = Acct(fresh("acct").encode(), 0)
        first = Dev(http, acct, 1)
        first.register_account()
        first.register()
        stolen = Dev(http, acct, 2)
        stolen.register()
        rekeyed = Dev(http, acct, 2)  # the owner re-installs device 2 with a new key
        rekeyed.register()
        with pytest.raises(Refused) as err:  # the thief holds no account key: the old certificate
            stolen.call(wire.Path.DEVICE_REGISTER, wire.RegisterDevice(stolen.certificate()))
        assert (err.value.status, err.value.code) == (403, "revoked")
        assert rekeyed.call(wire.Path.PREKEY_COUNT, wire.CountPrekeys(), wire.PrekeyCount)
        listed = first.devices(acct.name).certificates
        assert stolen.certificate() not in listed and rekeyed.certificate() in listed


def log_key(net: Net) -> bytes:
    """The relay's log key, as an application ships it (read here from a head's answer)."""
    return _log_key_of(net.proc)


# -- issue 25 item 8: device roles --------------------------------------------------------------


def test_an_agent_cannot_reroute_designate_or_remove(net: Net) -> None:
    """An agent device (not assigned the chat) tries to route the chat to itself, to
    designate itself for every chat, and to publish a device list without the admin (a
    list it captured, signed by the account key): each is refused, and routing is as the
    admin set it."""

    async def go() -> None:
        w = World(net)
        shop = await w.account(fresh("shop"), "business", tier=1)
        agents = [await w.agent(shop) for _ in range(2)]
        cust = await w.account(fresh("cust"), "customer")
        name, cname = shop.profile.account, cust.profile.account
        await shop.assign(cname, [agents[0].profile.device])
        intruder = agents[1]
        with pytest.raises(NotAllowed):
            await intruder.assign(cname, [intruder.profile.device])
        with pytest.raises(NotAllowed):
            await intruder.designate([intruder.profile.device])
        with intruder.store.transaction() as tx:  # a list the account key did sign
            signed = tx.app_get(state.REG_LIST)
        assert signed is not None
        with pytest.raises(NotAllowed):
            await intruder.transport.publish_devices(signed)
        with pytest.raises(StateError):  # it holds no account key to sign one
            await intruder.revoke_device(1)
        await cust.send(name, "where is my parcel?")
        assert [m.body for m in await agents[0].sync()] == [b"where is my parcel?"]
        assert await intruder.sync() == []
        # The admin itself cannot remove the last admin: its queued mail stays.
        with pytest.raises(NotAllowed):
            await shop.revoke_device(shop.profile.device)
        assert [m.body for m in await shop.sync()] == []  # routed away from the admin
        await w.close()

    run(go)


# -- issue 25 item 2: any peer could brick a device ----------------------------------------------


class _Carrying:
    """A view of the log that makes a device carry ``payload`` as its log head (what a
    malicious peer puts in its messages)."""

    forked = False

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def gossip(self) -> bytes:
        return self.payload


@pytest.mark.parametrize("payload", ["made-up-root", "size-zero", "other-key"])
def test_a_peer_cannot_brick_a_device_with_a_made_up_log_head(net: Net, payload: str) -> None:
    """A customer's message carries a log head it made up: a root of its own, a size of 0,
    a head signed by a key of its own. The business reads the message, the head is dropped
    as proof of nothing, and the business keeps sending and syncing."""

    async def go() -> None:
        w = World(net)
        key = log_key(net)
        shop = await w.account(fresh("shop"), "business", tier=1)
        mallory = await w.account(fresh("mal"), "customer")
        for c in (shop, mallory):
            await c.pin_log_key(key)
        name = shop.profile.account
        await mallory.send(name, "hi")
        await shop.sync()
        size = (await shop.log_view()).latest.size  # type: ignore[union-attr]
        carried = {
            "made-up-root": size.to_bytes(8, "big") + os.urandom(32),
            "size-zero": bytes(8) + os.urandom(32),
            "other-key": LogSigner().sign(TreeHead(size, os.urandom(32), 0)).to_bytes(),
        }[payload]

        async def view() -> _Carrying:
            return _Carrying(carried)

        mallory.log_view = view  # type: ignore[method-assign,assignment]
        await mallory.send(name, "a head of my own")
        got = await shop.sync()
        assert [m.body for m in got] == [b"a head of my own"]
        await shop.send(mallory.profile.account, "still here")
        assert await shop.sync() == []
        assert await shop.fork_evidence() is None
        assert sum(shop.errors.values()) == 1  # the head, counted; nothing else
        await w.close()

    run(go)


@pytest.fixture
def own_relay(net: Net, tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay process of this test's own, on the module's backend (restarted by the test)."""
    db = str(tmp_path / "relay.db") if not net.db.startswith(("host=", "postgres", "dbname")) \
        else fresh_pg_db(pg_or_skip())  # fmt: skip
    proc = RelayProcess(db, log_path=tmp_path / "relay.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def _directory(db: str) -> KeyLog:
    """The relay's key log as its operator holds it: its log and VRF keys (stored unsealed:
    these relays run without a secret key file) and every opening record."""
    store = open_store(db)
    try:
        log_key, vrf_key = (bytes(store.read(lambda tx, n=n: tx.log_secret(n)) or b"")
                            for n in (1, 2))  # fmt: skip
        records = [bytes(r[0]) for r in store.read(
            lambda tx: tx.fetchall("SELECT entry FROM key_log ORDER BY idx"))]  # fmt: skip
    finally:
        store.close()
    return KeyLog(LogSigner(log_key), VrfKey(vrf_key), records)


def test_a_fork_is_proven_by_two_signed_heads_and_the_user_has_a_way_out(
    own_relay: RelayProcess,
) -> None:
    """The operator (holding the log key) shows alice a forked log in which shop has its
    key. The bank, on the honest log, writes to alice: its signed head and the one alice
    accepted cannot both be the log's. Alice's device proves the fork with the two signed
    heads, refuses to send, and, once the operator's new log key ships, starts over under it:
    shop's key then shows as a changed key for the user to check."""

    async def go() -> None:
        http = RelayClient(own_relay.url)
        made: list[Client] = []

        async def account(name: str, kind: str) -> Client:
            dev = await Client.create_account(MemoryStore(), http.connect, name, kind,
                                              prekeys=4, auto_receipts=False)  # fmt: skip
            made.append(dev)
            return dev

        alice, bank, shop = (await account("alice", "customer"),
                             await account("bank", "business"),
                             await account("shop", "business"))  # fmt: skip
        key = _log_key_of(own_relay)
        for c in made:
            await c.pin_log_key(key)
        await alice.send("bank", "hi")
        await bank.sync()
        fork = _directory(own_relay.db)
        served = rogue(b"shop")
        fork.publish(b"shop", served[0], served[2])
        honest = alice.transport

        async def log_head() -> bytes:
            return fork.head(int(time.time())).to_bytes()

        async def log_lookup(account: str, size: int) -> tuple[bytes, bytes]:
            raw, proof = fork.lookup(account.encode(), size)
            return raw, proof.to_bytes()

        async def log_consistency(a: int, b: int) -> bytes:
            return fork.consistency(a, b).to_bytes()

        async def fetch_devices(account: str, chat: object = None) -> object:
            return served if account == "shop" else await honest.fetch_devices(account, chat)

        alice.transport = Serving(honest, log_head=log_head, log_lookup=log_lookup,  # type: ignore[assignment]
                                   log_consistency=log_consistency,
                                   fetch_devices=fetch_devices)  # fmt: skip
        await alice.refresh("shop")  # alice now trusts the relay's key for shop
        await account("carol", "customer")  # the honest log moves on
        await bank.refresh("alice")
        await bank.send("alice", "your statement is ready")
        with pytest.raises(LogForked):
            await alice.sync()
        evidence = await alice.fork_evidence()
        assert evidence is not None
        evidence.verify(key)  # two heads the log key signed: proof anyone can check
        with pytest.raises(LogForked):
            await alice.send("shop", "my card number is 4111 1111 1111 1111")
        alice.transport = honest
        # The way out: the operator starts a new log key; the application ships it.
        own_relay.stop()
        store = open_store(own_relay.db)
        store.run(lambda tx: tx.execute("DELETE FROM log_keys WHERE id = 1"))
        store.close()
        own_relay.start()
        new_key = _log_key_of(own_relay)
        assert new_key != key
        with pytest.raises(KeyTransparencyError):
            await alice.pin_log_key(new_key)
        for c in made:  # the application's update reaches every device
            await c.pin_log_key(new_key, replace=True)
        with pytest.raises(KeyChangePending):  # shop's real key: a change to check
            await alice.send("shop", "hello")
        [change] = await alice.key_changes()
        assert change.new == await shop.account_identity()
        await alice.accept_key_change("shop", change.new)
        await alice.send("shop", "hello")
        assert [m.body for m in await shop.sync()] == [b"hello"]
        for c in made:
            await c.aclose()
        await http.aclose()

    run(go)


def _log_key_of(proc: RelayProcess) -> bytes:
    with httpx.Client(base_url=proc.url, timeout=30) as http:
        dev = new_device(http, fresh("kt").encode(), 0)
        return bytes(dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead).log_key)


# -- issue 25 item 9: contacts re-check device lists; the owner monitors by itself -------------


def _operator(net: Net, fn: Callable[[object], object]) -> object:
    """Edit the relay's database behind the running process, as its operator could."""
    store = open_store(net.db)
    try:
        return store.run(fn)  # type: ignore[arg-type]
    finally:
        store.close()


async def _shop_with_agent(w: World) -> tuple[Client, Client, Client]:
    shop, agent = await w.shop_with_agent()
    alice = await w.account(fresh("alice"), "customer")
    await alice.send(shop.profile.account, "hello")
    assert [m.body for m in await agent.sync()] == [b"hello"]
    await shop.sync()
    return shop, agent, alice


def _bring_back(net: Net, name: str, device: int, row: tuple[bytes, bytes],
                old_list: bytes | None) -> None:  # fmt: skip
    """The relay lists a revoked device again (and serves the older list that carried it)."""

    def edit(tx: object) -> None:
        tx.put_device(name.encode(), device, *row)  # type: ignore[attr-defined]
        if old_list is not None:
            tx.put_device_list(name.encode(), 1, old_list)  # type: ignore[attr-defined]

    _operator(net, edit)


def _capture(net: Net, name: str, device: int) -> tuple[tuple[bytes, bytes], bytes]:
    def read(tx: object) -> tuple[tuple[bytes, bytes], bytes]:
        cert, key = tx.devices(name.encode())[device]  # type: ignore[attr-defined]
        return (bytes(cert), bytes(key)), bytes(tx.device_list(name.encode()))  # type: ignore[attr-defined]

    return _operator(net, read)  # type: ignore[return-value]


def test_a_contact_rechecks_a_list_the_account_announced_as_changed(net: Net) -> None:
    """The business revokes its agent and writes to the customer (its message carries its
    device list's version). The relay then lists the agent again and serves the older list:
    the customer's next send re-checks the list, finds it older than announced, and seals
    nothing; the agent's mailbox gets nothing."""

    async def go() -> None:
        w = World(net)
        shop, agent, alice = await _shop_with_agent(w)
        name = shop.profile.account
        row, old_list = _capture(net, name, agent.profile.device)
        await shop.revoke_device(agent.profile.device)
        await shop.send(alice.profile.account, "your parcel left today")
        assert [m.body for m in await alice.sync()] == [b"your parcel left today"]
        _bring_back(net, name, agent.profile.device, row, old_list)
        with pytest.raises(StaleProof):
            await alice.send(name, "my card number is 4111 1111 1111 1111")
        assert await agent.sync() == []
        await w.close()

    run(go)


def test_a_contact_rechecks_a_cached_list_on_a_schedule(net: Net) -> None:
    """The business revokes its agent and says nothing; the relay keeps the agent listed
    (its row back, the signed list honest). The customer's cached list is due for a re-check
    (``recheck_seconds``): it is fetched again, the agent is not in the signed list, and the
    agent's mailbox gets nothing."""

    async def go() -> None:
        w = World(net)
        shop, agent, alice = await _shop_with_agent(w)
        name = shop.profile.account
        row, _ = _capture(net, name, agent.profile.device)
        await shop.revoke_device(agent.profile.device)
        _bring_back(net, name, agent.profile.device, row, None)
        alice.recheck_seconds = 0
        with pytest.raises(KeyMismatch):  # the chat's devices: one not in the signed list
            await alice.send(name, "my card number is 4111 1111 1111 1111")
        assert await agent.sync() == []
        await w.close()

    run(go)


def test_the_owner_monitors_by_itself_as_it_syncs(net: Net) -> None:
    """With the log key pinned, sync audits the log for the account's own entries, a
    bounded number at a time; the relay logging the account's older device list again (its
    revoked agent back) is found by a sync, without the application asking."""

    async def go() -> None:
        w = World(net)
        shop, agent, _ = await _shop_with_agent(w)
        name = shop.profile.account
        _, old_list = _capture(net, name, agent.profile.device)
        await shop.pin_log_key(log_key(net))
        shop.monitor_seconds, shop.monitor_budget = 0, 2
        await shop.sync()
        view = await shop.log_view()
        assert view is not None and view.audited == 2  # bounded: two entries this sync
        shop.monitor_budget = 10**6
        await shop.sync()
        await shop.revoke_device(agent.profile.device)
        key = await shop.account_identity()
        directory = _directory(net.db)

        def relog(tx: object) -> None:
            version = tx.log_version(name.encode()) + 1  # type: ignore[attr-defined]
            record = directory.record(name.encode(), version, key, old_list, bytes(32))
            tx.append_log(name.encode(), version, record)  # type: ignore[attr-defined]

        _operator(net, relog)
        with pytest.raises(KeyMismatch):
            await shop.sync()
        assert await shop.monitor_alarm() is not None
        assert await shop.sync() == []  # kept, not raised at every sync
        await w.close()

    run(go)


# -- issue 21 item 4: device lifecycle -------------------------------------------------------


def test_a_new_device_is_linked_through_the_relay_which_learns_nothing(net: Net) -> None:
    """A new admin device shows a link code; the admin device reads it and sends the grant
    (with the account key) sealed to it through the relay. The sealed grant holds no key in
    clear, a grant the relay makes itself is refused, and the linked device talks at once."""

    async def go() -> None:
        w = World(net)
        shop = await w.account(fresh("shop"), "business", tier=1)
        alice = await w.account(fresh("alice"), "customer")
        # The relay (knowing the provisioning id) puts a grant of its own in the mailbox.
        fake = await begin_link(MemoryStore(), w.http)
        forged = seal_grant(LinkCode(fake.code.provisioning_id, KeyPair.generate().public,
                                     fake.code.identity), b"grant of the relay's")  # fmt: skip
        _operator(net, lambda tx: tx.execute(  # type: ignore[attr-defined]
            "INSERT INTO provisioning (id, sealed, expires) VALUES (?, ?, ?)",
            (fake.code.provisioning_id, forged, int(time.time()) + 600)))  # fmt: skip
        with pytest.raises(AuthenticationFailed):
            await fake.finish(timeout=10, poll=0.05)
        # The honest link.
        request = await begin_link(MemoryStore(), w.http)
        sent: list[bytes] = []
        honest = shop.transport

        async def provision_send(pid: bytes, sealed: bytes) -> None:
            sent.append(sealed)
            await honest.provision_send(pid, sealed)

        shop.transport = Serving(honest, provision_send=provision_send)  # type: ignore[assignment]
        device = await shop.link_device(request.text, role=ADMIN)
        linked = await request.finish(timeout=30, poll=0.05, prekeys=4, auto_receipts=False)
        w.clients.append(linked)
        assert linked.profile.device == device
        with shop.store.transaction() as tx:
            account_key = state.account_key(tx)
        assert account_key is not None and account_key.private_bytes() not in sent[0]
        await alice.send(shop.profile.account, "hello new phone")
        assert [m.body for m in await linked.sync()] == [b"hello new phone"]
        await linked.send(alice.profile.account, "hello from the new phone")
        assert [m.body for m in await alice.sync()] == [b"hello from the new phone"]
        # It holds the account key (an admin): it can revoke.
        await linked.revoke_device(1)
        with pytest.raises(Unauthenticated):
            await shop.sync()
        await w.close()

    run(go)


def test_an_account_whose_devices_are_lost_is_recovered_and_the_relay_cannot_take_it(
    net: Net,
) -> None:
    """Alice loses her only device. The relay, with its database, cannot open the sealed
    account key nor sign a device list; guessing the recovery key is refused after five
    tries an hour. Alice, with the recovery key shown when she made the account, recovers
    it: her lost device is revoked, her contacts see no key change, and mail reaches her."""

    async def go() -> None:
        w = World(net)
        shop = await w.account(fresh("shop"), "business", tier=1)
        alice = await w.account(fresh("alice"), "customer")
        name = alice.profile.account
        assert alice.recovery_key is not None
        shown = alice.recovery_key
        await alice.send(shop.profile.account, "hello")
        await shop.sync()
        lost = alice  # the phone is lost: its store is gone
        # The relay alone: the sealed account key does not open without the recovery key ...
        sealed = _operator(net, lambda tx: bytes(tx.fetchone(  # type: ignore[attr-defined]
            "SELECT sealed FROM recovery WHERE account = ?", (name.encode(),))[0]))  # fmt: skip
        with pytest.raises(AuthenticationFailed):
            RecoveryKey.generate().open(name.encode(), sealed)  # type: ignore[arg-type]
        # ... and a device list it signs itself is refused.
        mine, device_key = KeyPair.generate(), KeyPair.generate()
        cert = DeviceCertificate.issue(mine, name.encode(), 9, device_key.public, 99)
        forged = SignedDeviceList.sign(mine, name.encode(), 99, [cert.to_bytes()]).to_bytes()
        with pytest.raises(InvalidSignature):
            await w.http.connect(Address(name, 9), device_key).register_device(
                cert.to_bytes(), forged)  # fmt: skip
        # Alice recovers with her key.
        back = await recover_account(MemoryStore(), w.http, name, shown, prekeys=4,
                                     auto_receipts=False)  # fmt: skip
        w.clients.append(back)
        with pytest.raises(Unauthenticated):
            await lost.sync()
        await shop.send(name, "welcome back")
        assert [m.body for m in await back.sync()] == [b"welcome back"]
        await back.send(shop.profile.account, "thanks")
        assert [m.body for m in await shop.sync()] == [b"thanks"]
        assert await shop.key_changes() == []
        await w.close()

    run(go)


def test_guessing_a_recovery_key_is_rate_limited(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        alice = await w.account(fresh("alice"), "customer")
        name = alice.profile.account
        for _ in range(5):
            with pytest.raises(Unauthenticated):
                await recover_account(MemoryStore(), w.http, name, RecoveryKey.generate().text())
        with pytest.raises(RateLimited):  # the sixth, even with the right key, this hour
            await recover_account(MemoryStore(), w.http, name, alice.recovery_key or "")
        with pytest.raises(DecodeError):  # a mistyped key never reaches the relay
            await recover_account(MemoryStore(), w.http, name, (alice.recovery_key or "")[:-1])
        await w.close()

    run(go)


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, piece: bytes) -> None:
        self.data += piece


def test_a_deleted_account_is_gone_and_its_name_stays_taken(net: Net) -> None:
    async def go() -> None:
        w = World(net)
        shop, agent = await w.shop_with_agent()
        alice = await w.account(fresh("alice"), "customer")
        name = shop.profile.account
        await shop.assign(alice.profile.account, [agent.profile.device])
        await alice.send(name, "hello")
        await agent.sync()

        async def invoice() -> AsyncIterator[bytes]:
            yield b"%PDF-1.4 invoice 2026-0042"

        await agent.send_attachment(alice.profile.account, invoice(), size=26,
                                    content_type="application/pdf",
                                    file_name="invoice.pdf")  # fmt: skip
        (got,) = [m for m in await alice.sync() if m.attachment]
        sink = _Sink()
        await alice.download(got, sink)
        assert sink.data == b"%PDF-1.4 invoice 2026-0042"
        await shop.pin_log_key(log_key(net))
        await shop.delete_account()
        with pytest.raises(NoSuchBlob):  # the account's uploads went with it
            await alice.download(got, _Sink())

        def left(tx: object) -> list[int]:
            q = tx.fetchone  # type: ignore[attr-defined]
            n = name.encode()
            return [int(q(sql, (n,))[0]) for sql in (
                "SELECT COUNT(*) FROM devices WHERE account = ?",
                "SELECT COUNT(*) FROM mailbox WHERE account = ?",
                "SELECT COUNT(*) FROM prekeys WHERE account = ?",
                "SELECT COUNT(*) FROM last_resort WHERE account = ?",
                "SELECT COUNT(*) FROM routes WHERE business = ?",
                "SELECT COUNT(*) FROM recovery WHERE account = ?",
            )]  # fmt: skip

        assert _operator(net, left) == [0, 0, 0, 0, 0, 0]
        last = _operator(net, lambda tx: bytes(tx.fetchone(  # type: ignore[attr-defined]
            "SELECT entry FROM key_log WHERE account = ? ORDER BY idx DESC LIMIT 1",
            (name.encode(),))[0]))  # fmt: skip
        opened = Opening.from_bytes(last, MAX_OPENING_BYTES)  # type: ignore[arg-type]
        tombstone = DirectoryEntry.from_bytes(opened.entry).signed_list()
        assert tombstone is not None and tombstone.deleted and not tombstone.certs
        with pytest.raises(UnknownAccount):
            await alice.send(name, "are you there?")
        with httpx.Client(base_url=net.proc.url, timeout=30) as http:
            taker = Dev(http, Acct(name.encode(), 1, 1), 1)
            with pytest.raises(Refused) as err:
                taker.register_account()
            assert err.value.code == "conflict"
        await w.close()

    run(go)


def test_a_device_opens_offline_reads_its_history_and_queues_sends(
    own_relay: RelayProcess, tmp_path: Path
) -> None:
    async def go() -> None:
        http = RelayClient(own_relay.url, retries=0)
        key = os.urandom(32)

        def alice_store() -> SqliteStore:
            return SqliteStore(tmp_path / "alice.db", key)

        shop = await Client.create_account(MemoryStore(), http.connect, "shop", "business",
                                           prekeys=4, auto_receipts=False)  # fmt: skip
        alice = await Client.create_account(alice_store, http.connect, "alice", "customer",
                                            prekeys=4, auto_receipts=False)  # fmt: skip
        await alice.send("shop", "first")
        await shop.sync()
        await shop.send("alice", "reply")
        await alice.sync()
        await alice.aclose()
        own_relay.stop()
        alice = await Client.open(alice_store, http.connect, prekeys=4, auto_receipts=False)
        assert [m.text for m in await alice.history("shop")] == ["first", "reply"]
        with pytest.raises(WireFailure):
            await alice.send("shop", "written offline")
        assert [o.body for o in await alice.pending()] == [b"written offline"]
        own_relay.start()
        await alice.flush()
        assert await alice.pending() == []
        assert [m.body for m in await shop.sync()] == [b"written offline"]
        for c in (alice, shop):
            await c.aclose()
        await http.aclose()

    run(go)


# -- issue 25 item 10: the key directory cannot be enumerated; routing stays private ----------


def test_the_key_directory_cannot_be_enumerated(net: Net) -> None:
    """A device reads the whole key log: it finds labels and commitments, no account name,
    no key; opening another account's leaf is refused. A name it knows still proves."""

    async def go() -> None:
        w = World(net)
        names = [fresh("secretbiz"), fresh("secretcust")]
        shop = await w.account(names[0], "business", tier=1)
        cust = await w.account(names[1], "customer")
        keys = [await shop.account_identity(), await cust.account_identity()]
        with httpx.Client(base_url=net.proc.url, timeout=30) as http:
            snoop = new_device(http, fresh("snoop").encode(), 0)
            head = snoop.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead)
            size = SignedTreeHead.from_bytes(head.head).size
            seen, start = b"", 0
            while start < size:
                page = snoop.call(wire.Path.LOG_ENTRIES, wire.LogEntriesQuery(start, size),
                                  wire.LogEntries)  # fmt: skip
                seen += b"".join(page.entries)
                start += len(page.entries)
            assert start == size > 0
            for secret in (*(n.encode() for n in names), *keys):
                assert secret not in seen
            opened, refused = [], 0
            for index in range(size):
                try:
                    got = snoop.call(wire.Path.LOG_OPEN, wire.LogOpen(index, size),
                                     wire.LogEntry)  # fmt: skip
                except Refused as err:
                    assert err.code == "forbidden"
                    refused += 1
                else:
                    record = Opening.from_bytes(got.entry, MAX_OPENING_BYTES)
                    opened.append(DirectoryEntry.from_bytes(record.entry).account)
            # Only the snoop's own leaves open (its monitor); every other is refused.
            assert opened and set(opened) == {snoop.acct.name} and refused == size - len(opened)
        # Knowing the name, a device proves the account as before.
        await cust.pin_log_key(log_key(net))
        await cust.send(names[0], "hello")
        assert [m.body for m in await shop.sync()] == [b"hello"]
        await w.close()

    run(go)


def test_who_serves_whom_is_not_another_devices_to_see(net: Net) -> None:
    """Any device used to ask which agent serves which customer (the chat's device list);
    now only the chat's customer and the business itself may."""

    async def go() -> None:
        w = World(net)
        shop, agent = await w.shop_with_agent()
        alice = await w.account(fresh("alice"), "customer")
        bob = await w.account(fresh("bob"), "customer")
        name, a = shop.profile.account, alice.profile.account
        await shop.assign(a, [agent.profile.device])
        with pytest.raises(Forbidden):
            await bob.transport.fetch_devices(name, a)
        _, certs, _ = await alice.transport.fetch_devices(name, a)
        assert len(certs) == 1  # alice's own chat: the agent it routes to
        await w.close()

    run(go)
