"""Key transparency: what proving a key costs a device (SPEC §13.4).

Reported, not bounded: a first message to an account verifies one signed tree head (with a
consistency proof from the previous head), the VRF proof of the account's label (SPEC
§13.5) and one inclusion proof, and compares the served signed device list with the logged
one; a device-list change costs the same again. Each is
compared with the first message itself (PQXDH set-up plus one encryption, suite 3) measured
in the same run: the ``ratio_to_first_message`` (of medians: the machine is shared) in each
result's extra info.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import KeyPair, LocalPrekeys, Session
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.merkle import InclusionProof, LogSigner
from e2e.platform.transparency import KeyLog, LogView
from e2e.platform.vrf import VrfKey
from e2e.suite import PQ, get_suite

ACCOUNTS = 1024
_first: dict[str, float] = {}


def _world() -> tuple[KeyLog, KeyPair, list[bytes], bytes]:
    log = KeyLog(LogSigner(), VrfKey(bytes(range(32))))
    for i in range(ACCOUNTS - 1):
        log.publish(f"c{i:05d}".encode(), KeyPair.generate().public, b"")
    shop = KeyPair.generate()
    agents = [KeyPair.generate() for _ in range(3)]
    certs = [
        DeviceCertificate.issue(shop, b"shop", i + 1, a.public, i + 1).to_bytes()
        for i, a in enumerate(agents)
    ]
    signed = SignedDeviceList.sign(shop, b"shop", 1, certs).to_bytes()
    log.publish(b"shop", shop.public, signed)
    return log, shop, certs, signed


def test_first_message(benchmark: Any) -> None:
    suite = get_suite(PQ.id)
    keys = LocalPrekeys.generate(KeyPair.generate(), suite, one_time=1)
    bundle = keys.bundle().to_bytes()
    me = KeyPair.generate()

    def first() -> None:
        Session.initiate(me, bundle, allowed_suites=(suite,)).encrypt(b"hello")

    benchmark.group = "kt"
    benchmark(first)
    _first["s"] = benchmark.stats.stats.median


def _ratio(benchmark: Any) -> None:
    if "s" in _first:
        benchmark.extra_info["ratio_to_first_message"] = round(
            benchmark.stats.stats.median / _first["s"], 3
        )


@pytest.mark.parametrize("change", [False, True], ids=["first-contact", "device-list-change"])
def test_prove_account(benchmark: Any, change: bool) -> None:
    """Accept the relay's newest head (signature + consistency proof from the last head we
    saw) and prove the account's key and device list in it."""
    log, shop, certs, signed = _world()
    identity = shop.public
    old = log.head(100)
    if change:
        signed = SignedDeviceList.sign(shop, b"shop", 2, certs[:2], [3]).to_bytes()
        log.publish(b"shop", identity, signed)
    head = log.head(200)
    raw, proof = log.lookup(b"shop", head.size)
    wire = proof.to_bytes()

    def setup() -> tuple[tuple[LogView], dict[str, Any]]:
        view = LogView(log.signer.public)
        view.learn_vrf_key(log.vrf.public, log.vrf_statement())
        view.check_head(old, log.consistency)
        return (view,), {}

    def prove(view: LogView) -> None:
        view.check_head(head, log.consistency)
        view.check_served(b"shop", identity, signed, raw, InclusionProof.from_bytes(wire), head)

    benchmark.group = "kt"
    benchmark.extra_info["log_entries"] = len(log.records)
    benchmark.pedantic(prove, setup=setup, rounds=200)
    _ratio(benchmark)


def test_monitor_one_entry(benchmark: Any) -> None:
    """An account's monitor, per new log leaf: one inclusion proof and one decode, and for
    the account's own leaf (one of the 64) its opening checked (a VRF proof)."""
    log, shop, _, _ = _world()
    identity = shop.public
    head = log.head(100)
    size = len(log.records)
    entries = log.leaves_since(size - 64, size)
    own = log.lookup(b"shop", size)[0]

    def setup() -> tuple[tuple[LogView], dict[str, Any]]:
        view = LogView(log.signer.public)
        view.learn_vrf_key(log.vrf.public, log.vrf_statement())
        view.learn_own_label(b"shop", own)
        view.check_head(head, log.consistency)
        view.audited = size - 64
        return (view,), {}

    def audit(view: LogView) -> None:
        view.audit(
            b"shop", identity, entries, {i: log.records[i] for i in view.own_leaves(entries)}
        )

    benchmark.group = "kt"
    benchmark.extra_info["entries_per_call"] = 64
    benchmark.pedantic(audit, setup=setup, rounds=50)
