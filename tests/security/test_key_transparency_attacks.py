"""Proof suite, part 3: an active relay tries to make a device encrypt to a key it holds.

Each attack must be caught with a typed KeyTransparencyError (or CertificateError /
KeyChangePending) before any plaintext is encrypted to the rogue key: no envelope reaches
the relay, no session with a rogue key exists, and the secret text is nowhere in what the
relay saw. The relay here is the in-process one, manipulated the way a malicious operator
could: serving other keys, logging them, forking or rolling back its log.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.clock import ManualClock
from e2e.errors import (
    CertificateError,
    KeyChangePending,
    KeyMismatch,
    KeyTransparencyError,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.keys import KeyPair
from e2e.platform import Business, Customer, Relay
from e2e.platform.certificates import PlatformSigner
from e2e.platform.directory import DeviceCertificate
from e2e.platform.merkle import InclusionProof
from e2e.platform.transparency import KeyLog

SECRET = b"my card number is 4111 1111 1111 1111"


def world() -> tuple[Relay, Business, Customer]:
    relay = Relay(clock=ManualClock())
    shop = Business("shop", relay)
    shop.add_device()
    shop.add_device()
    alice = Customer("alice", relay)
    alice.add_device()
    return relay, shop, alice


def envelopes(relay: Relay) -> int:
    return relay.recorder.channels().get("recv:envelope", 0)


def assert_nothing_encrypted(relay: Relay, before: int, *devices: Any) -> None:
    assert envelopes(relay) == before
    assert all(SECRET not in data for _, data in relay.recorder.records)
    for dev in devices:
        assert not any(a[0] == b"shop" for a in dev.sessions)


def substitute(relay: Relay, account: bytes) -> tuple[KeyPair, DeviceCertificate]:
    """The relay swaps in its own account key and a device it certified itself."""
    eve, eve_dev = KeyPair.generate(), KeyPair.generate()
    cert = DeviceCertificate.issue(eve, account, 1, eve_dev.public)
    acct = relay._accounts[account]
    acct.identity = eve.public
    acct.devices = {1: cert}
    return eve, cert


def test_baseline_first_contact_is_proven_and_delivered() -> None:
    relay, shop, alice = world()
    alice.device.send(b"shop", SECRET)
    assert [m.body for m in shop.agents[0].sync()] == [SECRET]
    assert alice.log.versions[b"shop"] == 3  # registration, agent 1, agent 2
    shop.monitor()
    alice.monitor()
    assert shop.log.audited == len(relay.key_log.entries)


def test_substituted_account_key_on_first_contact() -> None:
    relay, shop, alice = world()
    before = envelopes(relay)
    substitute(relay, b"shop")
    with pytest.raises(KeyMismatch):
        alice.device.send(b"shop", SECRET)
    assert_nothing_encrypted(relay, before, alice.device)
    # Logging the substitution does not help the relay: the victim's monitor finds it.
    relay._log_account(b"shop")
    with pytest.raises(KeyMismatch):
        shop.monitor()


def test_substituted_key_of_a_known_contact_waits_for_the_application() -> None:
    relay, shop, alice = world()
    alice.device.send(b"shop", "hello")
    shop.agents[0].sync()
    events: list[object] = []
    alice.key_changes.on_change = events.append
    substitute(relay, b"shop")
    relay._log_account(b"shop")  # even a logged new key is a change the user must accept
    alice.device.peers.clear()  # e.g. the app restarted
    before = envelopes(relay)
    with pytest.raises(KeyChangePending):
        alice.device.send(b"shop", SECRET)
    with pytest.raises(KeyChangePending):
        alice.device.send(b"shop", SECRET)
    assert len(events) == 1
    assert_nothing_encrypted(relay, before)
    with pytest.raises(KeyMismatch):
        shop.monitor()


def test_rogue_device_added_by_the_relay() -> None:
    relay, shop, alice = world()
    # The relay kept the certificate of a device the business removed (say, a stolen
    # phone whose keys it now holds) and lists it again.
    old = relay._accounts[b"shop"].devices[2]
    shop.remove_device(2)
    relay._accounts[b"shop"].devices[2] = old
    before = envelopes(relay)
    with pytest.raises(KeyMismatch):
        alice.device.send(b"shop", SECRET)
    assert_nothing_encrypted(relay, before, alice.device)
    relay._log_account(b"shop")  # logged too: the business's monitor catches it
    with pytest.raises(KeyMismatch):
        shop.monitor()


def test_split_view_for_one_victim_is_caught_by_a_peer_head() -> None:
    relay, shop, alice = world()
    bank = Business("bank", relay)
    bank.add_device()
    # Alice talks to the bank first: she has accepted a head of the honest log.
    alice.device.send(b"bank", "hi")
    bank.device.sync()
    # Now the relay shows alice a forked log in which shop has the relay's key, while
    # everyone else (shop, bank) keeps seeing the honest log, which moves on.
    fork = KeyLog(relay.key_log.signer, relay.key_log.entries)
    honest = relay.key_log
    eve, eve_dev = KeyPair.generate(), KeyPair.generate()
    cert = DeviceCertificate.issue(eve, b"shop", 1, eve_dev.public)
    fork.publish(b"shop", eve.public, [cert.to_bytes()])
    carol = Customer("carol", relay)
    carol.add_device()
    bank.device.send(b"alice", "your statement is ready")  # carries the bank's newest head

    class Forked:
        """What alice's relay connection shows her."""

        def __getattr__(self, name: str) -> Any:
            return getattr(relay, name)

        def log_head(self) -> bytes:
            return fork.head(relay.clock()).to_bytes()

        def log_lookup(self, account: bytes, size: int) -> tuple[bytes, bytes]:
            raw, proof = fork.lookup(account, size)
            return raw, proof.to_bytes()

        def log_consistency(self, a: int, b: int) -> bytes:
            return fork.consistency(a, b).to_bytes()

        def fetch_devices(self, account: bytes) -> tuple[bytes, list[bytes]]:
            if account == b"shop":
                return eve.public, [cert.to_bytes()]
            return relay.fetch_devices(account)

    alice.relay = Forked()  # type: ignore[assignment]
    alice.log_head()  # alice's own view is consistent: the fork extends what she saw
    n = len(fork.entries)
    assert len(honest.entries) > n and honest.tree.root(n) != fork.tree.root(n)
    with pytest.raises(LogForked):
        alice.device.sync()  # the bank's message carries a head of the honest log
    before = envelopes(relay)
    with pytest.raises(LogForked):
        alice.device.send(b"shop", SECRET)
    assert_nothing_encrypted(relay, before, alice.device)


def test_rollback_to_an_older_log() -> None:
    relay, shop, alice = world()
    old_entries = list(relay.key_log.entries)
    old_cert = relay._accounts[b"shop"].devices[2]
    shop.remove_device(2)
    alice.device.send(b"shop", "hello")  # alice has seen the log without device 2
    shop.agents[0].sync()
    # The relay rolls back to the log (and device list) from before the removal.
    relay.key_log = KeyLog(relay.key_log.signer, old_entries)
    relay._accounts[b"shop"].devices[2] = old_cert
    alice.device.peers.clear()
    before = envelopes(relay)
    with pytest.raises(LogRolledBack):
        alice.device.send(b"shop", SECRET)
    assert envelopes(relay) == before
    assert all(SECRET not in d for _, d in relay.recorder.records)


def test_stale_inclusion_proof() -> None:
    relay, shop, alice = world()
    old_cert = relay._accounts[b"shop"].devices[2]
    alice.device.refresh(b"shop")  # alice saw version 3 (two agents)
    v3 = relay.key_log.latest[b"shop"]
    shop.remove_device(2)
    alice.device.refresh(b"shop")  # ... and version 4 (one agent)
    honest_lookup = relay.log_lookup

    # The relay serves the older entry (device 2 still listed) with a proof that is
    # valid in the current tree, and lists device 2 again.
    def stale_entry(account: bytes, size: int) -> tuple[bytes, bytes]:
        index = v3 if account == b"shop" else relay.key_log.latest[account]
        raw = relay.key_log.entries[index]
        path = tuple(relay.key_log.tree.inclusion_proof(index, size))
        return raw, InclusionProof(index, size, path).to_bytes()

    relay.log_lookup = stale_entry  # type: ignore[method-assign]
    relay._accounts[b"shop"].devices[2] = old_cert
    alice.device.peers.clear()
    before = envelopes(relay)
    with pytest.raises(StaleProof):
        alice.device.send(b"shop", SECRET)
    assert envelopes(relay) == before

    # Or a proof for the right entry, but against an older, smaller tree.
    del relay._accounts[b"shop"].devices[2]

    def old_tree(account: bytes, size: int) -> tuple[bytes, bytes]:
        return honest_lookup(account, size - 1) if account == b"shop" else honest_lookup(
            account, size
        )

    relay.log_lookup = old_tree  # type: ignore[method-assign]
    relay._log_account(b"alice")  # the log grows by one unrelated entry
    with pytest.raises(KeyTransparencyError):
        alice.device.send(b"shop", SECRET)
    assert envelopes(relay) == before


def test_fake_business_name() -> None:
    relay, shop, alice = world()
    platform = PlatformSigner()
    alice.platform_key = platform.public
    now = relay.clock()
    alice.device.refresh(b"shop")
    assert not alice.business_identity(b"shop", now).verified
    # The real certificate shows the certified name.
    cert = platform.certify(b"shop", "Shop Ltd", shop.identity.public, now, 86400)
    relay.set_business_certificate(b"shop", cert.to_bytes())
    ident = alice.business_identity(b"shop", now)
    assert ident.verified and ident.display_name == "Shop Ltd"
    # The relay certifies a better-sounding name under a key of its own ...
    fake = PlatformSigner().certify(b"shop", "Big Bank", shop.identity.public, now, 86400)
    relay.set_business_certificate(b"shop", fake.to_bytes())
    with pytest.raises(CertificateError):
        alice.business_identity(b"shop", now)
    # ... or moves a real certificate of another business to this account.
    bank = Business("bank", relay)
    real_bank = platform.certify(b"bank", "Big Bank", bank.identity.public, now, 86400)
    relay.set_business_certificate(b"shop", real_bank.to_bytes())
    with pytest.raises(CertificateError):
        alice.business_identity(b"shop", now)


def test_safety_numbers_expose_a_substitution() -> None:
    relay, shop, alice = world()
    alice.device.refresh(b"shop")
    shop.agents[0].refresh(b"alice")
    mine, theirs = alice.safety_number(b"shop"), shop.safety_number(b"alice")
    assert mine.display == theirs.display
    assert mine.scannable.compare(theirs.scannable.to_bytes())
    # Had alice pinned a substituted key, the numbers would differ.
    alice.pinned[b"shop"] = KeyPair.generate().public
    assert alice.safety_number(b"shop").display != theirs.display
    assert not alice.safety_number(b"shop").scannable.compare(theirs.scannable.to_bytes())
