"""Proof suite, part 3: an active relay tries to make a device encrypt to a key it holds.

Each attack must be caught with a typed KeyTransparencyError (or CertificateError /
KeyChangePending) before any plaintext is encrypted to the rogue key: no submission reaches
the relay, no session with a rogue key exists, and the secret text is nowhere in what the
relay saw. The relay is the relay service (in this process, on its SQLite database), made
malicious the way its operator could: editing its database behind the running service
(other keys served, logged or not, an older log), or showing one victim's connection other
answers (a forked log, a stale proof).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from world import Service, Serving, rogue, run

from e2e.client import Client
from e2e.errors import (
    CertificateError,
    KeyChangePending,
    KeyMismatch,
    KeyTransparencyError,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.fingerprint import safety_number
from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.certificates import PlatformSigner
from e2e.platform.merkle import InclusionProof
from e2e.platform.transparency import KeyLog

SECRET = b"my card number is 4111 1111 1111 1111"


async def world(d: Path) -> tuple[Service, list[Client], Client]:
    """The business "shop" (two agent devices) and the customer "alice", every device with
    the relay's log key pinned (shipped with the application)."""
    svc = Service(d)
    shop = await svc.account("shop", "business", 2, auto_receipts=False)
    (alice,) = await svc.account("alice", "customer", auto_receipts=False)
    for c in (*shop, alice):
        await c.pin_log_key(svc.service.log_public_key)
    return svc, shop, alice


def submissions(svc: Service) -> int:
    return len(svc.tap.channel("recv:" + wire.Path.MESSAGE_SUBMIT))


async def assert_nothing_encrypted(svc: Service, before: int, *devices: Client) -> None:
    assert submissions(svc) == before
    assert all(SECRET not in data for _, data in svc.tap.records)
    assert all(SECRET not in data for data in svc.db_files())
    for dev in devices:
        with dev.store.transaction() as tx:
            assert tx.device_ids("shop") == []  # no session with any device of shop


def log_entries(svc: Service) -> list[bytes]:
    return [bytes(r[0]) for r in svc.rows("SELECT entry FROM key_log ORDER BY idx")]


def substitute(dev: Client, account: str, served: tuple[bytes, list[bytes], bytes]) -> None:
    """The relay serves ``dev`` another key and device list for ``account`` (to every other
    device, and to the account's own devices, it answers honestly)."""
    honest = dev.transport

    async def fetch_devices(name: str, chat: Any = None) -> Any:
        return served if name == account else await honest.fetch_devices(name, chat)

    dev.transport = Serving(honest, fetch_devices=fetch_devices)  # type: ignore[assignment]


def log_it(svc: Service, account: bytes, identity: bytes, signed: bytes) -> None:
    """The relay logs a key and signed device list as the account's newest entry."""

    def log(tx: Any) -> None:
        version = tx.log_version(account) + 1
        record = svc.service._log.record(account, version, identity, signed, os.urandom(32))
        tx.append_log(account, version, record)

    svc.operator().run(log)


def forget_lists(dev: Client, account: str) -> None:
    """The device drops what it cached of ``account``'s devices (say, the app restarted)."""
    with dev.store.transaction() as tx:
        for key in tx.app_keys(f"c/route/{account}/") + tx.app_keys(f"c/devices/{account}"):
            tx.app_delete(key)


def test_baseline_first_contact_is_proven_and_delivered(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await alice.send("shop", SECRET)
        assert [m.body for m in await shop[0].sync()] == [SECRET]
        view = await alice.log_view()
        assert view is not None and view.versions[b"shop"] == 3  # registration, 2 devices
        await shop[0].monitor()
        await alice.monitor()
        shop_view = await shop[0].log_view()
        assert shop_view is not None and shop_view.audited == len(log_entries(svc))
        await svc.aclose()

    run(go)


def test_substituted_account_key_on_first_contact(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        before = submissions(svc)
        served = rogue(b"shop")
        substitute(alice, "shop", served)
        with pytest.raises(KeyMismatch):
            await alice.send("shop", SECRET)
        await assert_nothing_encrypted(svc, before, alice)
        # Logging the substitution does not help the relay: the victim's monitor finds it.
        log_it(svc, b"shop", served[0], served[2])
        with pytest.raises(KeyMismatch):
            await shop[0].monitor()
        await svc.aclose()

    run(go)


def test_substituted_key_of_a_known_contact_waits_for_the_application(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await alice.send("shop", "hello")
        await shop[0].sync()
        served = rogue(b"shop")
        substitute(alice, "shop", served)
        log_it(svc, b"shop", served[0], served[2])  # even a logged new key is a change to accept
        forget_lists(alice, "shop")
        before = submissions(svc)
        with pytest.raises(KeyChangePending):
            await alice.send("shop", SECRET)
        with pytest.raises(KeyChangePending):
            await alice.send("shop", SECRET)
        assert len(await alice.key_changes()) == 1
        assert submissions(svc) == before
        assert all(SECRET not in data for _, data in svc.tap.records)
        with pytest.raises(KeyMismatch):
            await shop[0].monitor()
        await svc.aclose()

    run(go)


def test_rogue_device_added_by_the_relay(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        # The relay kept the certificate of a device the business removed (say, a stolen
        # phone whose keys it now holds) and lists it again.
        [(old_cert, old_key)] = svc.rows(
            "SELECT certificate, identity FROM devices WHERE device_id = 2"
        )
        await shop[0].revoke_device(2)
        svc.operator().run(lambda tx: tx.put_device(b"shop", 2, bytes(old_cert), bytes(old_key)))
        before = submissions(svc)
        with pytest.raises(KeyMismatch):
            await alice.send("shop", SECRET)
        await assert_nothing_encrypted(svc, before, alice)
        await svc.aclose()

    run(go)


def test_rogue_device_logged_by_the_relay_is_found_by_the_owners_monitor(tmp_path: Path) -> None:
    """The relay brings a removed device back with the account's own older device list,
    which the account did sign, and logs it as the newest entry: the owner's monitor finds
    a device list older than one it audited (issue 25 item 1)."""

    async def go() -> None:
        svc, shop, _ = await world(tmp_path)
        [(old_cert, old_key)] = svc.rows(
            "SELECT certificate, identity FROM devices WHERE device_id = 2"
        )
        [(old_list,)] = svc.rows("SELECT list FROM device_lists WHERE account = X'73686f70'")
        await shop[0].monitor()
        await shop[0].revoke_device(2)
        await shop[0].monitor()

        def bring_back(tx: Any) -> None:
            tx.put_device(b"shop", 2, bytes(old_cert), bytes(old_key))
            tx.execute("UPDATE device_lists SET list = ? WHERE account = ?",
                       (bytes(old_list), b"shop"))  # fmt: skip

        svc.operator().run(bring_back)
        shop_key = await shop[0].account_identity()
        log_it(svc, b"shop", shop_key, bytes(old_list))  # logged: the monitor must catch it
        try:
            with pytest.raises(KeyMismatch):
                await shop[0].monitor()
        finally:
            await svc.aclose()

    run(go)


def test_split_view_for_one_victim_is_caught_by_a_peer_head(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        (bank,) = await svc.account("bank", "business", auto_receipts=False)
        await bank.pin_log_key(svc.service.log_public_key)
        # Alice talks to the bank first: she has accepted a head of the honest log.
        await alice.send("bank", "hi")
        await bank.sync()
        # Now the relay shows alice a forked log in which shop has the relay's key, while
        # everyone else (shop, bank) keeps seeing the honest log, which moves on.
        fork = KeyLog(svc.service._log.signer, svc.service._vrf, log_entries(svc))
        served = rogue(b"shop")
        fork.publish(b"shop", served[0], served[2])
        await svc.account("carol", "customer")
        await bank.refresh("alice")  # the bank accepts the honest log's newest head ...
        await bank.send("alice", "your statement is ready")  # ... and carries it
        honest = alice.transport

        async def log_head() -> bytes:
            return fork.head(svc.clock()).to_bytes()

        async def log_lookup(account: str, size: int) -> tuple[bytes, bytes]:
            raw, proof = fork.lookup(account.encode(), size)
            return raw, proof.to_bytes()

        async def log_consistency(a: int, b: int) -> bytes:
            return fork.consistency(a, b).to_bytes()

        async def fetch_devices(account: str, chat: Any = None) -> Any:
            if account == "shop":
                return served
            return await honest.fetch_devices(account, chat)

        alice.transport = Serving(  # type: ignore[assignment]
            honest, log_head=log_head, log_lookup=log_lookup, log_consistency=log_consistency,
            fetch_devices=fetch_devices,
        )  # fmt: skip
        view = await alice.log_view()
        assert view is not None
        await alice._accept_head(view)  # alice's own view is consistent: the fork extends it
        n = len(fork.records)
        honest_entries = log_entries(svc)
        assert len(honest_entries) > n
        assert KeyLog(fork.signer, fork.vrf, honest_entries).tree.root(n) != fork.tree.root(n)
        with pytest.raises(LogForked):
            await alice.sync()  # the bank's message carries a head of the honest log
        before = submissions(svc)
        with pytest.raises(LogForked):
            await alice.send("shop", SECRET)
        alice.transport = honest
        await assert_nothing_encrypted(svc, before, alice)
        await svc.aclose()

    run(go)


def test_rollback_to_an_older_log(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        old = len(log_entries(svc))
        [(old_cert, old_key)] = svc.rows(
            "SELECT certificate, identity FROM devices WHERE device_id = 2"
        )
        await shop[0].revoke_device(2)
        await alice.send("shop", "hello")  # alice has seen the log without device 2
        await shop[0].sync()

        def roll_back(tx: Any) -> None:  # the log (and device list) of before the removal
            tx.execute("DELETE FROM key_log WHERE idx >= ?", (old,))
            tx.put_device(b"shop", 2, bytes(old_cert), bytes(old_key))

        svc.operator().run(roll_back)
        forget_lists(alice, "shop")
        before = submissions(svc)
        with pytest.raises(LogRolledBack):
            await alice.send("shop", SECRET)
        assert submissions(svc) == before
        assert all(SECRET not in d for _, d in svc.tap.records)
        await svc.aclose()

    run(go)


def test_stale_inclusion_proof(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        [(old_cert, old_key)] = svc.rows(
            "SELECT certificate, identity FROM devices WHERE device_id = 2"
        )
        await alice.refresh("shop")  # alice saw version 3 (two agents)
        await shop[0].revoke_device(2)
        await alice.refresh("shop")  # ... and version 4 (one agent)
        entries = log_entries(svc)
        directory = KeyLog(svc.service._log.signer, svc.service._vrf, entries)
        v3 = next(i for i in range(len(entries))
                  if (directory.entry(i).account, directory.entry(i).version)
                  == (b"shop", 3))  # fmt: skip
        honest = alice.transport

        # The relay serves the older entry (device 2 still listed) with a proof that is
        # valid in the current tree, and lists device 2 again.
        async def stale_entry(account: str, size: int) -> tuple[bytes, bytes]:
            if account != "shop":
                return await honest.log_lookup(account, size)
            tree = KeyLog(svc.service._log.signer, svc.service._vrf, log_entries(svc)).tree
            path = tuple(tree.inclusion_proof(v3, size))
            return entries[v3], InclusionProof(v3, size, path).to_bytes()

        alice.transport = Serving(honest, log_lookup=stale_entry)  # type: ignore[assignment]
        svc.operator().run(lambda tx: tx.put_device(b"shop", 2, bytes(old_cert), bytes(old_key)))
        forget_lists(alice, "shop")
        before = submissions(svc)
        with pytest.raises(StaleProof):
            await alice.send("shop", SECRET)
        assert submissions(svc) == before

        # Or a proof for the right entry, but against an older, smaller tree.
        svc.operator().run(lambda tx: tx.delete_device(b"shop", 2))

        async def old_tree(account: str, size: int) -> tuple[bytes, bytes]:
            return await honest.log_lookup(account, size - 1 if account == "shop" else size)

        alice.transport = Serving(honest, log_lookup=old_tree)  # type: ignore[assignment]
        await svc.account("dave", "customer")  # the log grows by one unrelated entry
        with pytest.raises(KeyTransparencyError):
            await alice.send("shop", SECRET)
        assert submissions(svc) == before
        alice.transport = honest
        await svc.aclose()

    run(go)


def test_fake_business_name(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        platform = PlatformSigner()
        await alice.pin_platform_key(platform.public)
        now = int(time.time())
        assert not (await alice.business_identity("shop")).verified
        shop_key = await shop[0].account_identity()

        def serve(cert: bytes) -> None:  # the relay stores whatever it likes
            svc.operator().run(lambda tx: tx.put_business_certificate(b"shop", cert))

        # The real certificate shows the certified name.
        serve(platform.certify(b"shop", "Shop Ltd", shop_key, now, 86400).to_bytes())
        ident = await alice.business_identity("shop")
        assert ident.verified and ident.display_name == "Shop Ltd"
        # The relay certifies a better-sounding name under a key of its own ...
        serve(PlatformSigner().certify(b"shop", "Big Bank", shop_key, now, 86400).to_bytes())
        with pytest.raises(CertificateError):
            await alice.business_identity("shop")
        # ... or moves a real certificate of another business to this account.
        (bank,) = await svc.account("bank", "business")
        bank_key = await bank.account_identity()
        serve(platform.certify(b"bank", "Big Bank", bank_key, now, 86400).to_bytes())
        with pytest.raises(CertificateError):
            await alice.business_identity("shop")
        await svc.aclose()

    run(go)


def test_safety_numbers_expose_a_substitution(tmp_path: Path) -> None:
    async def go() -> None:
        svc, shop, alice = await world(tmp_path)
        await alice.refresh("shop")
        await shop[0].refresh("alice")
        alice_key, shop_key = await alice.account_identity(), await shop[0].account_identity()
        seen_by_alice, seen_by_shop = await alice.pinned("shop"), await shop[0].pinned("alice")
        assert seen_by_alice == shop_key and seen_by_shop == alice_key
        mine = safety_number(b"alice", alice_key, b"shop", seen_by_alice)
        theirs = safety_number(b"shop", shop_key, b"alice", seen_by_shop)
        assert mine.display == theirs.display
        assert mine.scannable.compare(theirs.scannable.to_bytes())
        # Had alice pinned a substituted key, the numbers would differ.
        fake = safety_number(b"alice", alice_key, b"shop", KeyPair.generate().public)
        assert fake.display != theirs.display
        assert not fake.scannable.compare(theirs.scannable.to_bytes())
        await svc.aclose()

    run(go)
