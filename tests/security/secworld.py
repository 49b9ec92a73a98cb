"""The proof-suite world: 3 businesses x 20 customers, several devices each, >= 10k messages
through a relay with drops, reordering and redelivery; key capture and byte scanning."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, hmac

import e2e.ratchet as ratchet_mod
from e2e.clock import ManualClock
from e2e.errors import DuplicateMessage, E2EError, PolicyError
from e2e.message_key import HEADER_LABEL
from e2e.platform import AdService, Business, Customer, Delivery, Device, MessageClass, Relay
from e2e.suite import PQ


def header_aead_key(key: bytes) -> bytes:
    """EKh = HMAC-SHA256(HEADER_LABEL, HK | 0x01) (SPEC.md §4.4), recomputed here."""
    h = hmac.HMAC(HEADER_LABEL, hashes.SHA256())
    h.update(key + b"\x01")
    return h.finalize()


WORDS = (
    "parcel refund invoice warranty courier tracking delivery replacement voucher "
    "receipt payment balance upgrade schedule appointment booking pickup window "
    "address missing damaged return exchange confirm thanks please urgent today"
).split()


@dataclass
class KeyCapture:
    """Every secret the ratchet derives or uses, captured at the KDF/AEAD boundary."""

    secrets: set[bytes] = field(default_factory=set)
    #: Per device: chain keys it stepped and message keys that opened a message for it. (A
    #: key its peer used for a frame this device never got is not "used" by this device.)
    used_by: dict[object, set[bytes]] = field(default_factory=dict)
    #: The device the current operation runs on (set by the workload around each call).
    holder: object = None

    @property
    def used(self) -> set[bytes]:
        return set().union(*self.used_by.values()) if self.used_by else set()

    def _used(self, key: bytes) -> None:
        self.used_by.setdefault(self.holder, set()).add(key)

    @contextmanager
    def active(self) -> Iterator[KeyCapture]:
        orig = (
            ratchet_mod.kdf_ck,
            ratchet_mod.root_step,
            ratchet_mod.header_cipher,
            ratchet_mod.seal,
            ratchet_mod.open_,
        )
        add = self.secrets.add

        def kdf_ck(suite, ck):  # type: ignore[no-untyped-def]
            out = orig[0](suite, ck)
            add(ck)
            self._used(ck)
            add(out[0])
            add(out[1])  # the message key: EK | MC
            add(out[1][:32])  # EK
            add(out[1][32:])  # MC: travels only inside the sealed header
            return out

        def root_step(suite, rk, dh_out):  # type: ignore[no-untyped-def]
            out = orig[1](suite, rk, dh_out)
            add(rk)
            add(dh_out)
            for v in out:
                if v is not None:
                    add(v)
            return out

        def header_cipher(key):  # type: ignore[no-untyped-def]
            # Every header key the ratchet uses passes through here (its AEAD is then cached).
            add(key)
            add(header_aead_key(key))
            return orig[2](key)

        def seal(mk, nonce, ad, pt):  # type: ignore[no-untyped-def]
            add(mk)
            add(mk[:32])
            return orig[3](mk, nonce, ad, pt)

        def open_(mk, commitment, nonce, ad, body):  # type: ignore[no-untyped-def]
            add(mk)
            add(mk[:32])
            out = orig[4](mk, commitment, nonce, ad, body)
            self._used(mk)
            return out

        ratchet_mod.kdf_ck = kdf_ck  # type: ignore[assignment]
        ratchet_mod.root_step = root_step  # type: ignore[assignment]
        ratchet_mod.header_cipher = header_cipher
        ratchet_mod.seal = seal  # type: ignore[assignment]
        ratchet_mod.open_ = open_  # type: ignore[assignment]
        try:
            yield self
        finally:
            (
                ratchet_mod.kdf_ck,
                ratchet_mod.root_step,
                ratchet_mod.header_cipher,
                ratchet_mod.seal,
                ratchet_mod.open_,
            ) = orig


def device_secrets(dev: Device) -> set[bytes]:
    """A device's long-term and prekey private keys, and its sessions' current secrets."""
    out = {dev.identity.private_bytes(), dev.account.identity.private_bytes()}
    pk = dev.prekeys
    out.update(s.pair.private_bytes() for s in pk.signed.values())
    out.update(o.pair.private_bytes() for o in pk.one_time.values())
    out.update(k.pair.seed() for k in pk.kem.values())
    for sessions in dev.sessions.values():
        for s in sessions:
            r = s.ratchet
            out.add(r.dhs.private_bytes())
            for v in (r.rk, r.cks, r.ckr, r.hks, r.hkr, r.nhks, r.nhkr):
                if v is not None:
                    out.add(v)
            out.update(r.skipped.values())
    return out


def windows(data: bytes, n: int = 8) -> Iterator[bytes]:
    return (data[i : i + n] for i in range(len(data) - n + 1))


def scan(records: list[bytes], needles: set[bytes], n: int = 8) -> set[bytes]:
    """The n-byte needles that occur anywhere in ``records`` (every offset is checked)."""
    hits: set[bytes] = set()
    for rec in records:
        if len(rec) < n:
            continue
        if not needles.isdisjoint(rec[i : i + n] for i in range(len(rec) - n + 1)):
            hits.update(w for w in windows(rec, n) if w in needles)
    return hits


def secret_needles(secrets: set[bytes]) -> set[bytes]:
    """The aligned 8-byte pieces of each secret: any leak of >= 15 contiguous secret bytes,
    and any whole secret, contains one."""
    return {s[i : i + 8] for s in secrets for i in range(0, len(s) - 7, 8)}


@dataclass
class World:
    rng: random.Random
    clock: ManualClock
    relay: Relay
    ads: AdService
    businesses: list[Business]
    customers: list[tuple[Customer, Business]]
    # message id -> (sender addr, body, set of destination addresses)
    sent: dict[bytes, tuple[tuple[bytes, int], bytes, set[tuple[bytes, int]]]] = field(
        default_factory=dict
    )
    bodies: list[bytes] = field(default_factory=list)
    received: dict[tuple[bytes, int], dict[bytes, bytes]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    lost: set[tuple[bytes, tuple[bytes, int]]] = field(default_factory=set)
    duplicates_rejected: int = 0
    drops: int = 0
    redeliveries: int = 0
    errors: list[str] = field(default_factory=list)
    removed: set[tuple[bytes, int]] = field(default_factory=set)
    cap: KeyCapture | None = None
    device_changes: dict[int, Callable[[World], None]] = field(default_factory=dict)

    def devices(self) -> list[Device]:
        out: list[Device] = []
        for b in self.businesses:
            out.extend(b.agents)
        for c, _ in self.customers:
            out.extend(c.devices.values())
        return out


def build(seed: int = 1, customers_per_business: int = 20) -> World:
    rng = random.Random(seed)
    clock = ManualClock()
    ads = AdService()
    relay = Relay(clock=clock, ad_service=ads)
    businesses = []
    for i, agents in enumerate((2, 2, 3)):
        b = Business(f"biz-{i}", relay)
        for _ in range(agents):
            b.add_device(one_time=24, suite=PQ)
        businesses.append(b)
    customers = []
    for b in businesses:
        for j in range(customers_per_business):
            c = Customer(f"{b.name.decode()[-1]}c{j:02d}", relay)
            c.pin(b)
            for _ in range(2 if j % 4 == 0 else 1):
                c.add_device(one_time=4, suite=PQ)
            if j % 3 == 0:
                c.opt_in(b)
            customers.append((c, b))
    world = World(rng, clock, relay, ads, businesses, customers)
    world.device_changes = {
        3000: add_customer_device,
        4000: add_agent,
        6000: remove_customer_device,
    }
    return world


def add_customer_device(world: World) -> None:
    world.customers[0][0].add_device(one_time=4, suite=PQ)


def add_agent(world: World) -> None:
    world.businesses[1].add_device(one_time=24, suite=PQ)


def remove_customer_device(world: World) -> None:
    c = world.customers[4][0]  # a two-device customer
    dev = max(c.devices)
    world.removed.add((c.name, dev))
    c.remove_device(dev)


def body(rng: random.Random, n: int) -> bytes:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
    return f"#{n:05d} {words} {rng.getrandbits(40):010x}".encode()


def deliver(world: World, dev: Device, faults: bool) -> None:
    if world.cap is not None:
        world.cap.holder = dev.addr
    """One mailbox fetch with faults: drops (left for redelivery), reordering, redelivery of
    already-processed copies, and rare permanent loss."""
    rng = world.rng
    batch = world.relay.fetch(dev.addr)
    if faults:
        rng.shuffle(batch)
    for raw in batch:
        d = Delivery.from_bytes(raw)
        if faults and rng.random() < 0.08:
            world.drops += 1
            continue  # lost in transit: not acknowledged, the relay delivers it again
        env = d.open_envelope()
        if faults and rng.random() < 0.003:
            world.lost.add((env.message_id, dev.addr))
            world.relay.ack(dev.addr, [d.seq])  # lost for good
            continue
        try:
            msg = dev.receive(raw)
            world.received.setdefault(dev.addr, {})[msg.message_id] = msg.body
        except DuplicateMessage:
            world.duplicates_rejected += 1
        except E2EError as exc:
            world.errors.append(type(exc).__name__)
        if faults and rng.random() < 0.05:
            world.redeliveries += 1
            try:
                dev.receive(raw)
                world.errors.append("redelivery accepted")
            except DuplicateMessage:
                world.duplicates_rejected += 1
        world.relay.ack(dev.addr, [d.seq])


def run(world: World, messages: int = 10_000) -> None:
    rng = world.rng
    n = 0
    attempts = 0
    while n < messages:
        attempts += 1
        c, b = world.customers[rng.randrange(len(world.customers))]
        r = rng.random()
        if r < 0.45:
            sender = rng.choice(list(c.devices.values()))
            to, cls = b.name, MessageClass.SERVICE
        else:
            sender = rng.choice(b.agents)
            to = c.name
            cls = (
                MessageClass.SERVICE
                if r < 0.85
                else MessageClass.TEMPLATE
                if r < 0.95
                else MessageClass.MARKETING
            )
        text = body(rng, n)
        if world.cap is not None:
            world.cap.holder = sender.addr
        try:
            receipt = sender.send(to, text, cls)
        except PolicyError as exc:
            name = type(exc).__name__
            world.refused[name] = world.refused.get(name, 0) + 1
            continue
        dests = {(to, d) for d in sender.peers[to]} | {
            (sender.account.name, d) for d in sender.peers[sender.account.name]
        }
        dests.discard(sender.addr)
        world.sent[receipt.message_id] = (sender.addr, text, dests)
        world.bodies.append(text)
        n += 1
        if n in world.device_changes:
            world.device_changes[n](world)
        if rng.random() < 0.02:
            world.clock.advance(rng.randint(3600, 30 * 3600))
        if n % 7 == 0:
            for dev in rng.sample(world.devices(), 6):
                deliver(world, dev, faults=True)
    # Drain: every device fetches until no mailbox holds anything (drops still happen).
    for _ in range(50):
        for dev in world.devices():
            deliver(world, dev, faults=False)
        if world.relay.pending() == 0:
            break
