"""The key directory over the wire (SPEC §13.4): the relay logs every account key and device
list in its store, serves signed heads and proofs, and keeps them across a restart."""

from __future__ import annotations

import httpx
import pytest
from relayhelp import Dev, Refused, RelayProcess, new_device

from e2e.errors import KeyMismatch
from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.merkle import ConsistencyProof, InclusionProof, SignedTreeHead
from e2e.platform.transparency import LogView

CUSTOMER, BUSINESS = 0, 1


class Client:
    """What a client does with the log endpoints (a pure LogView over the wire)."""

    def __init__(self, dev: Dev, log_key: bytes) -> None:
        self.dev = dev
        self.view = LogView(log_key)

    def prove(self, a: int, b: int) -> ConsistencyProof:
        r = self.dev.call(
            wire.Path.LOG_CONSISTENCY, wire.LogConsistencyQuery(a, b), wire.LogConsistency
        )
        return ConsistencyProof.from_bytes(r.proof)

    def head(self) -> SignedTreeHead:
        r = self.dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead)
        head = SignedTreeHead.from_bytes(r.head)
        self.view.check_head(head, self.prove)
        self.view.learn_vrf_key(r.vrf_key, r.vrf_signature)
        return head

    def verify(self, account: bytes) -> int:
        head = self.head()
        served = self.dev.devices(account)
        r = self.dev.call(wire.Path.LOG_LOOKUP, wire.LogLookup(account, head.size), wire.LogEntry)
        entry = self.view.check_served(
            account, served.identity, served.device_list, r.entry,
            InclusionProof.from_bytes(r.proof), head,
        )  # fmt: skip
        return entry.version

    def audit(self, account: bytes, identity: bytes) -> None:
        head = self.head()
        if not self.view.own_label:
            r = self.dev.call(wire.Path.LOG_LOOKUP, wire.LogLookup(account, head.size),
                              wire.LogEntry)  # fmt: skip
            self.view.learn_own_label(account, r.entry)
        got: list[tuple[bytes, InclusionProof]] = []
        while self.view.audited + len(got) < head.size:
            r = self.dev.call(
                wire.Path.LOG_ENTRIES,
                wire.LogEntriesQuery(self.view.audited + len(got), head.size),
                wire.LogEntries,
            )
            assert r.entries
            pairs = zip(r.entries, r.proofs, strict=True)
            got += [(e, InclusionProof.from_bytes(p)) for e, p in pairs]
        opened = {
            i: self.dev.call(wire.Path.LOG_OPEN, wire.LogOpen(i, head.size), wire.LogEntry).entry
            for i in self.view.own_leaves(got)
        }
        self.view.audit(account, identity, got, opened)


def _log_key(dev: Dev) -> bytes:
    # Pinned out of band in a real deployment; read once here.
    return dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead).log_key


def test_keys_and_device_lists_are_logged_proven_and_monitored(client: httpx.Client) -> None:
    alice = new_device(client, b"alice", CUSTOMER)
    shop = new_device(client, b"shop", BUSINESS, tier=1)
    key = _log_key(alice)
    owner = Client(shop, key)
    versions = [owner.verify(b"shop")]

    def changed() -> None:
        versions.append(owner.verify(b"shop"))

    agent2 = Dev(client, shop.acct, 2)
    agent2.register()
    changed()
    c = Client(alice, key)
    assert c.verify(b"shop") == 3  # registered, agent 1, agent 2
    assert c.verify(b"alice") == 2
    agent2.remove(1)  # agent 1 leaves
    shop = agent2
    owner.dev = agent2
    changed()
    assert c.verify(b"shop") == 4
    assert versions == [2, 3, 4]
    owner.audit(b"shop", shop.acct.identity.public)
    assert (owner.view.audited, owner.view.own_list) == (6, 3)
    # A monitor holding another account key finds every entry of the account foreign.
    with pytest.raises(KeyMismatch):
        Client(agent2, key).audit(b"shop", KeyPair.generate().public)


def test_bad_ranges_are_refused(client: httpx.Client) -> None:
    dev = new_device(client, b"alice", CUSTOMER)
    for path, req, resp in [
        (wire.Path.LOG_LOOKUP, wire.LogLookup(b"alice", 99), wire.LogEntry),
        (wire.Path.LOG_CONSISTENCY, wire.LogConsistencyQuery(2, 1), wire.LogConsistency),
        (wire.Path.LOG_CONSISTENCY, wire.LogConsistencyQuery(0, 1), wire.LogConsistency),
        (wire.Path.LOG_ENTRIES, wire.LogEntriesQuery(3, 1), wire.LogEntries),
    ]:
        with pytest.raises(Refused) as exc:
            dev.call(path, req, resp)
        assert exc.value.status == 400
    with pytest.raises(Refused) as exc:
        dev.call(wire.Path.LOG_LOOKUP, wire.LogLookup(b"nobody", 2), wire.LogEntry)
    assert exc.value.status in (400, 404)


def test_the_log_survives_a_restart(relay_db: str, tmp_path: object) -> None:
    proc = RelayProcess(relay_db).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30.0) as http:
            dev = new_device(http, b"alice", CUSTOMER)
            key = _log_key(dev)
            c = Client(dev, key)
            c.verify(b"alice")
            before = c.view.latest
    finally:
        proc.stop()
    proc = RelayProcess(relay_db).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=30.0) as http:
            dev.http = http
            assert _log_key(dev) == key
            new_device(http, b"bob", CUSTOMER)
            c.verify(b"alice")  # the new head is consistent with the one before the restart
            assert before is not None and c.view.latest is not None
            assert c.view.latest.size == before.size + 2
    finally:
        proc.stop()


def test_a_retried_device_registration_logs_nothing(client: httpx.Client) -> None:
    dev = new_device(client, b"alice", CUSTOMER)
    cert = dev.devices(b"alice").certificates[0]
    size = SignedTreeHead.from_bytes(
        dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead).head
    ).size
    dev.call(wire.Path.DEVICE_REGISTER, wire.RegisterDevice(cert))  # the same certificate
    again = SignedTreeHead.from_bytes(
        dev.call(wire.Path.LOG_HEAD, wire.LogHeadQuery(), wire.LogHead).head
    ).size
    assert again == size == 2
    # A new certificate for the device (re-keyed) is a new device list: logged.
    again = Dev(client, dev.acct, 1)
    again.register()
    assert Client(again, _log_key(again)).verify(b"alice") == 3
