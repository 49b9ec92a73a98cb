"""``python -m e2e demo``: a customer and a business talk through a relay.

Prints what each end sees, what the relay and the ad service see, the business's bill, and a
proof summary of checks run right now on this run's recordings. Sessions are persisted in an
embedded SQLite store (one sealed database per device, in a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from collections.abc import Callable

from e2e.errors import DuplicateMessage, E2EError, PolicyError
from e2e.platform import (
    AdService,
    Business,
    Customer,
    Delivery,
    Device,
    ManualClock,
    MessageClass,
    Relay,
)
from e2e.platform.envelope import Envelope
from e2e.session import Session
from e2e.suite import DEFAULT

__all__ = ["main"]

_HOUR = 3600
_START = 1_767_225_600  # the demo clock starts at 2026-01-01 00:00 UTC


def _name(addr: tuple[bytes, int]) -> str:
    return f"{addr[0].decode()}/{addr[1]}"


def _relay_line(raw: bytes) -> str:
    d = Delivery.from_bytes(raw)
    env = Envelope.from_bytes(d.envelope)
    return (
        f"{env.cls.name.lower():<9} {_name(env.sender):>13} -> {_name(env.dest):<13} "
        f"frame {len(env.frame):>4} B  id {env.message_id.hex()[:8]}  "
        f"+{(d.received_at - _START) // _HOUR}h"
    )


class _Stores:
    """One SQLite store per device; every session change is committed to it."""

    def __init__(self, directory: str) -> None:
        from e2e.store import Address
        from e2e.store.sqlite import SqliteStore

        self._address = Address
        self._open = SqliteStore
        self.directory = directory
        self.stores: dict[tuple[bytes, int], object] = {}
        self.writes = 0

    def __call__(self, device: Device, addr: tuple[bytes, int], sessions: list[Session]) -> None:
        store = self.stores.get(device.addr)
        if store is None:
            path = os.path.join(self.directory, f"{_name(device.addr).replace('/', '-')}.sqlite")
            store = self._open(path, os.urandom(32))
            self.stores[device.addr] = store
        with store.transaction() as tx:  # type: ignore[attr-defined]
            peer = self._address(addr[0].decode(), addr[1])
            if sessions:
                tx.save_session(peer, sessions[0])
            else:
                tx.delete_session(peer)
        self.writes += 1

    def reload_matches(self, devices: list[Device]) -> tuple[int, int]:
        """(sessions read back from the SQLite files equal to memory, sessions compared)."""
        same = total = 0
        for dev in devices:
            store = self.stores.get(dev.addr)
            if store is None:
                continue
            with store.transaction() as tx:  # type: ignore[attr-defined]
                for addr, sessions in dev.sessions.items():
                    loaded = tx.load_session(self._address(addr[0].decode(), addr[1]))
                    total += 1
                    same += loaded is not None and loaded.to_bytes() == sessions[0].to_bytes()
        return same, total

    def close(self) -> None:
        for store in self.stores.values():
            store.close()  # type: ignore[attr-defined]


def _sink(directory: str) -> tuple[Callable[..., None] | None, str]:
    try:
        stores = _Stores(directory)
    except ImportError:  # pragma: no cover - the store package is part of e2e
        return None, "in memory"
    return stores, "SQLite (one sealed file per device)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e demo")
    parser.add_argument("--seed", type=int, default=None, help="seed the delivery shuffling")
    args = parser.parse_args(argv)
    shuffle = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="e2e-demo-") as tmp:
        sink, where = _sink(tmp)
        try:
            return _run(shuffle, sink, where)
        finally:
            if isinstance(sink, _Stores):
                sink.close()


def _run(shuffle: random.Random, sink: Callable[..., None] | None, where: str) -> int:
    clock = ManualClock(_START)
    ads = AdService()
    relay = Relay(clock=clock, ad_service=ads)
    shop = Business("acme-shop", relay, session_sink=sink)
    agent1, agent2 = shop.add_device(), shop.add_device()
    alice = Customer("alice", relay, session_sink=sink)
    phone, laptop = alice.add_device(), alice.add_device()
    alice.pin(shop)
    texts: list[bytes] = []
    seen_by_relay: list[str] = []

    def pump(devices: list[Device], reorder: bool = False) -> None:
        for dev in devices:
            batch = relay.fetch(dev.addr)
            if reorder:
                shuffle.shuffle(batch)
            for raw in batch:
                seen_by_relay.append(_relay_line(raw))
                msg = dev.receive(raw)
                relay.ack(dev.addr, [Delivery.from_bytes(raw).seq])
                who = (
                    "me (other device)"
                    if msg.outgoing
                    else _name((msg.from_account, msg.from_device))
                )
                print(f"   {_name(dev.addr):<12} sees [{msg.cls.name.lower()}] from {who}: "
                      f"{msg.body.decode()!r}")  # fmt: skip

    def send(dev: Device, to: bytes, text: str, cls: MessageClass = MessageClass.SERVICE) -> bool:
        try:
            receipt = dev.send(to, text, cls)
        except PolicyError as exc:
            print(f"-- {_name(dev.addr)} [{cls.name.lower()}] {text!r}")
            print(f"   refused by the relay: {type(exc).__name__}: {exc}")
            return False
        texts.append(text.encode())
        price = f", billed {receipt.price}" if receipt.price else ""
        print(
            f"-- {_name(dev.addr)} [{cls.name.lower()}] {text!r} ({receipt.copies} copies{price})"
        )
        return True

    print(f"e2e demo: suite {DEFAULT.name}; sessions stored {where}")
    print("   acme-shop: agents 1 and 2; alice: devices 1 (phone) and 2 (laptop)\n")

    send(agent1, b"alice", "Hello! Want our newsletter?", MessageClass.TEMPLATE)
    send(phone, b"acme-shop", "Hi, my order #4417 has not arrived.")
    pump([agent1, agent2, laptop])
    print("\n   agent 1 answers three times; the relay hands them to the phone out of order:")
    send(agent1, b"alice", "Sorry about that, let me check.")
    send(agent1, b"alice", "It left the depot this morning.")
    send(agent1, b"alice", "Expected tomorrow before noon.")
    pump([phone], reorder=True)
    pump([agent2, laptop])
    print("\n   25 hours later, the 24 h service window is closed:")
    clock.advance(25 * _HOUR)
    send(agent2, b"alice", "Anything else?")
    send(agent2, b"alice", "Your order #4417 was delivered.", MessageClass.TEMPLATE)
    send(agent2, b"alice", "SALE: 30% off everything!", MessageClass.MARKETING)
    alice.opt_in(shop)
    print("   alice opts in to acme-shop marketing")
    send(agent2, b"alice", "SALE: 30% off everything!", MessageClass.MARKETING)
    alice.add_device()
    print("   alice adds device 3 (a tablet); the next send is re-fanned to it")
    send(agent2, b"alice", "SALE: last day!", MessageClass.MARKETING)
    pump([phone, laptop, alice.devices[3], agent1])
    verified = alice.report_spam(shop)
    print(f"\n   alice reports spam: the relay verified {len(verified)} revealed messages "
          f"(franking) and blocked acme-shop")  # fmt: skip
    send(agent1, b"alice", "Please come back!", MessageClass.TEMPLATE)

    print("\nWhat the relay saw (each delivered copy; it never sees a text or a key):")
    shown = seen_by_relay if len(seen_by_relay) <= 8 else seen_by_relay[:5] + seen_by_relay[-3:]
    for i, line in enumerate(shown):
        if i == 5 and len(seen_by_relay) > 8:
            print(f"   ... {len(seen_by_relay) - 8} more")
        print(f"   {line}")
    print("   (1937 B frames still carry the PQXDH set-up, ML-KEM ciphertext included, until the")
    print("   peer device answers; every text above fits the 128-byte padding bucket: 289 B)")
    print(f"   refusals: {dict(sorted(relay.refusals.items()))}")
    print("\nWhat the ad service saw (chat metadata only):")
    view = ads.view(shop.name, alice.name)
    assert view is not None
    print(f"   acme-shop/alice: opted_in={view.opted_in} window_open={view.window_open} "
          f"blocked={view.blocked} limited={view.limited} in={view.customer_messages} "
          f"out={view.business_messages} reports={view.spam_reports}")  # fmt: skip
    print(f"   marketing audience of acme-shop: {[c.decode() for c in ads.audience(shop.name)]}")
    bill = relay.bill(shop.name)
    print("\nBill for acme-shop:")
    for item in bill.lines:
        print(f"   {item.item:<28} {item.count:>3} x {item.unit_price:>3} = {item.amount:>5}")
    print(f"   {'total':<28} {bill.total:>17}")

    return _proof(relay, ads, [agent1, agent2, phone, laptop, alice.devices[3]], texts,
                  {v.body for v in verified}, sink)  # fmt: skip


def _windows(data: bytes) -> set[bytes]:
    return {data[i : i + 8] for i in range(len(data) - 7)}


def _hits(records: list[bytes], needles: set[bytes]) -> int:
    return sum(not needles.isdisjoint(r[i : i + 8] for i in range(len(r) - 7)) for r in records)


def _proof(
    relay: Relay,
    ads: AdService,
    devices: list[Device],
    texts: list[bytes],
    revealed: set[bytes],
    sink: Callable[..., None] | None,
) -> int:
    print("\nProof summary (checked now, on this run):")
    failures = 0

    def check(ok: bool, what: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"   [{'ok' if ok else 'FAIL'}] {what}")

    relay_recs = [d for _, d in relay.recorder.records] + relay.stored_bytes()
    ad_recs = [d for _, d in ads.recorder.records]
    shown = set().union(*(_windows(t) for t in revealed)) if revealed else set()
    private = set().union(*(_windows(t) for t in texts if t not in revealed)) - shown
    r_hits, a_hits = _hits(relay_recs, private), _hits(ad_recs, private)
    check(r_hits == 0 and a_hits == 0,
          f"{len(relay_recs)} relay records ({relay.recorder.total_bytes} B) and {len(ad_recs)} "
          f"ad-service records scanned for every 8-byte piece of the unreported texts: "
          f"{r_hits + a_hits} hits")  # fmt: skip
    found = sum(_hits(relay_recs, _windows(t)) > 0 for t in revealed)
    check(
        found == len(revealed),
        f"control: the {len(revealed)} texts alice revealed in her report are found: {found}",
    )
    secrets: set[bytes] = set()
    for dev in devices:
        secrets |= {dev.identity.private_bytes(), dev.account.identity.private_bytes()}
        secrets |= {p.pair.private_bytes() for p in dev.prekeys.signed.values()}
        secrets |= {p.pair.private_bytes() for p in dev.prekeys.one_time.values()}
        for sessions in dev.sessions.values():
            for s in sessions:
                r = s.ratchet
                secrets |= {k for k in (r.rk, r.cks, r.ckr, r.hks, r.hkr, r.nhks, r.nhkr) if k}
                secrets.add(r.dhs.private_bytes())
    pieces = {s[i : i + 8] for s in secrets for i in range(0, len(s) - 7, 8)}
    s_hits = _hits(relay_recs, pieces) + _hits(ad_recs, pieces)
    check(
        s_hits == 0,
        f"{len(secrets)} private keys and root/chain/header keys: {s_hits} records hold any",
    )
    # Tamper and replay, on a fresh copy delivered to the laptop.
    phone, laptop = devices[2], devices[3]
    relay.clock.advance(0)  # type: ignore[attr-defined]
    sent = phone.send(b"acme-shop", "one more question")
    texts.append(b"one more question")
    raw = relay.fetch(laptop.addr)[-1]
    d = Delivery.from_bytes(raw)
    before = [s.to_bytes() for ss in laptop.sessions.values() for s in ss]
    rejected = 0
    for i in range(len(d.envelope)):
        forged = bytearray(d.envelope)
        forged[i] ^= 0x01
        try:
            laptop.receive(Delivery(bytes(forged), d.received_at, d.tag, d.seq).to_bytes())
        except E2EError:
            rejected += 1
    after = [s.to_bytes() for ss in laptop.sessions.values() for s in ss]
    check(rejected == len(d.envelope) and before == after,
          f"every byte of one envelope flipped: {rejected}/{len(d.envelope)} rejected, "
          f"laptop state byte-identical")  # fmt: skip
    ok = laptop.receive(raw).message_id == sent.message_id
    try:
        laptop.receive(raw)
        replay = False
    except DuplicateMessage:
        replay = True
    check(ok and replay, "the genuine copy then opens once; its replay is rejected")
    other = relay.fetch(devices[0].addr)[-1]
    env = Envelope.from_bytes(Delivery.from_bytes(other).envelope)
    moved = Envelope(env.cls, env.from_account, env.from_device, env.to_account,
                     devices[1].addr[0], devices[1].addr[1], env.message_id, env.commitment,
                     env.frame)  # fmt: skip
    try:
        devices[1].receive(Delivery(moved.to_bytes(), 0, bytes(32), 0).to_bytes())
        moved_ok = False
    except E2EError:
        moved_ok = True
    check(moved_ok, "a copy re-addressed to another agent device does not open there")
    if isinstance(sink, _Stores):
        same, total = sink.reload_matches(devices)
        check(total > 0 and same == total,
              f"{sink.writes} session commits to {len(sink.stores)} sealed SQLite files; "
              f"{same}/{total} sessions read back equal the live ones")  # fmt: skip
    print("\nall checks passed" if failures == 0 else f"\n{failures} checks FAILED")
    return 0 if failures == 0 else 1
