"""The proof-suite world: 3 businesses x 20 customers, several devices each (e2e.client
devices on the relay service), >= 10k messages through a network with drops, reordering and
redelivery; key capture and byte scanning."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes, hmac
from world import Service

import e2e.ratchet as ratchet_mod
from e2e.client import Client, state
from e2e.client.transport import Transport
from e2e.errors import PolicyError
from e2e.message_key import HEADER_LABEL
from e2e.platform import Delivery, Envelope, MessageClass
from e2e.session import Session
from e2e.store import Address, StoreTransaction


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


def device_secrets(dev: Client) -> set[bytes]:
    """A device's long-term and prekey private keys, the account key if it holds it, and
    its sessions' current secrets, as its store holds them."""
    out: set[bytes] = set()
    with dev.store.transaction() as tx:
        out.add(tx.local_identity().private_bytes())
        account = state.account_key(tx)
        if account is not None:
            out.add(account.private_bytes())
        out.update(s.item.pair.private_bytes() for s in tx.signed_prekeys())
        out.update(o.pair.private_bytes() for o in tx.one_time_prekeys())
        out.update(k.item.pair.seed() for k in tx.kem_prekeys())
        for session in sessions(tx):
            r = session.ratchet
            out.add(r.dhs.private_bytes())
            for v in (r.rk, r.cks, r.ckr, r.hks, r.hkr, r.nhks, r.nhkr):
                if v is not None:
                    out.add(v)
            out.update(r.skipped.values())
    return out


def sessions(tx: StoreTransaction) -> list[Session]:
    """Every session a device's store holds (current and archived), with the accounts its
    certified device lists name."""
    out: list[Session] = []
    names = {unquote(k.split("/")[2]) for k in tx.app_keys("c/devices/")}
    for name in sorted(names):
        for device in tx.device_ids(name):
            addr = Address(name, device)
            current = tx.load_session(addr)
            out += ([current] if current is not None else []) + tx.archived_sessions(addr)
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


class Faulty:
    """A device's transport on a faulty network: each fetched batch is shuffled, some
    deliveries are dropped on the way (not acknowledged, so the relay delivers them again),
    some handed over twice (a redelivery the device must recognise), and a rare one is lost
    for good (acknowledged without reaching the device). Every accepted submission's
    destinations are recorded."""

    def __init__(self, inner: Transport, world: World) -> None:
        self.inner = inner
        self.world = world
        self.faults = False

    async def fetch(self, wait_ms: int = 0) -> list[bytes]:
        w = self.world
        batch = await self.inner.fetch(wait_ms)
        if not self.faults:
            return batch
        w.rng.shuffle(batch)
        out = []
        for raw in batch:
            if w.rng.random() < 0.08:
                w.drops += 1
                continue  # lost in transit: not acknowledged, the relay delivers it again
            d = Delivery.from_bytes(raw)
            if w.rng.random() < 0.003:
                env = d.open_envelope()
                w.lost.add((env.message_id, env.dest))
                await self.inner.ack([d.seq])  # lost for good
                continue
            out.append(raw)
            if w.rng.random() < 0.05:
                w.redeliveries += 1
                out.append(raw)  # handed over again after it was processed
        return out

    async def submit(self, envelopes: list[bytes], entry: bytes | None = None) -> Any:
        receipt = await self.inner.submit(envelopes, entry)
        envs = [Envelope.from_bytes(e) for e in envelopes]
        self.world.dests[envs[0].message_id] = {e.dest for e in envs}
        return receipt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class World:
    rng: random.Random
    svc: Service
    businesses: list[list[Client]]
    customers: list[tuple[list[Client], str]]
    # message id -> (sender addr, body); its destinations as submitted
    sent: dict[bytes, tuple[tuple[bytes, int], bytes]] = field(default_factory=dict)
    dests: dict[bytes, set[tuple[bytes, int]]] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)
    received: dict[tuple[bytes, int], dict[bytes, bytes]] = field(default_factory=dict)
    #: messages a device's sync returned more than once (a redelivery accepted twice)
    returned_twice: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    lost: set[tuple[bytes, tuple[bytes, int]]] = field(default_factory=set)
    drops: int = 0
    redeliveries: int = 0
    removed: set[tuple[bytes, int]] = field(default_factory=set)
    cap: KeyCapture | None = None
    device_changes: dict[int, Callable[[World], Awaitable[None]]] = field(default_factory=dict)

    def devices(self) -> list[Client]:
        out: list[Client] = []
        for b in self.businesses:
            out.extend(b)
        for c, _ in self.customers:
            out.extend(c)
        return out


def _faulty(world: World, dev: Client) -> Client:
    dev.transport = Faulty(dev.transport, world)  # type: ignore[assignment]
    return dev


async def build(svc: Service, seed: int = 1, customers_per_business: int = 20) -> World:
    world = World(random.Random(seed), svc, [], [])
    for i, agents in enumerate((2, 2, 3)):
        b = await svc.account(f"biz-{i}", "business", agents, prekeys=24, auto_receipts=False)
        world.businesses.append([_faulty(world, d) for d in b])
        # Outside the window a template or marketing message names a registered template
        # (SPEC §17.1); the relay checks the name and class, the devices the text.
        await b[0].register_template(b"tpl", MessageClass.TEMPLATE, "a template")
        await b[0].register_template(b"mkt", MessageClass.MARKETING, "a marketing message")
    for b in world.businesses:
        name, key = b[0].profile.account, await b[0].account_identity()
        for j in range(customers_per_business):
            devices = 2 if j % 4 == 0 else 1
            c = await svc.account(f"{name[-1]}c{j:02d}", "customer", devices, prekeys=4,
                                  auto_receipts=False)  # fmt: skip
            for dev in c:
                await dev.pin(name, key)  # verified out of band
                _faulty(world, dev)
            if j % 3 == 0:
                await c[0].opt_in(name)
            world.customers.append((c, name))
    world.device_changes = {
        3000: add_customer_device,
        4000: add_agent,
        6000: remove_customer_device,
    }
    return world


async def add_customer_device(world: World) -> None:
    c, business = world.customers[0]
    dev = await world.svc.add_device(c[0], prekeys=4, auto_receipts=False)
    await dev.pin(business, await world.businesses[0][0].account_identity())
    c.append(_faulty(world, dev))


async def add_agent(world: World) -> None:
    b = world.businesses[1]
    b.append(_faulty(world, await world.svc.add_device(b[0], prekeys=24, auto_receipts=False)))


async def remove_customer_device(world: World) -> None:
    c, _ = world.customers[4]  # a two-device customer
    gone = c.pop()
    world.removed.add(gone.addr.wire)
    await c[0].revoke_device(gone.addr.device)
    await gone.aclose()
    world.svc.clients.remove(gone)


def body(rng: random.Random, n: int) -> bytes:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
    return f"#{n:05d} {words} {rng.getrandbits(40):010x}".encode()


async def deliver(world: World, dev: Client, faults: bool) -> None:
    """One mailbox fetch with faults: drops (left for redelivery), reordering, redelivery of
    already-processed copies, and rare permanent loss (see :class:`Faulty`)."""
    if world.cap is not None:
        world.cap.holder = dev.addr.wire
    transport = dev.transport
    assert isinstance(transport, Faulty)
    transport.faults = faults
    got = world.received.setdefault(dev.addr.wire, {})
    for msg in await dev.sync():
        if msg.message_id in got:
            world.returned_twice += 1
        got[msg.message_id] = msg.body


async def run(world: World, messages: int = 10_000) -> None:
    rng = world.rng
    n = 0
    while n < messages:
        c, b = world.customers[rng.randrange(len(world.customers))]
        r = rng.random()
        if r < 0.45:
            sender, to, cls = rng.choice(c), b, MessageClass.SERVICE
        else:
            agents = world.businesses[int(b.rsplit("-", 1)[1])]
            sender, to = rng.choice(agents), c[0].profile.account
            cls = (
                MessageClass.SERVICE
                if r < 0.85
                else MessageClass.TEMPLATE
                if r < 0.95
                else MessageClass.MARKETING
            )
        text = body(rng, n)
        if world.cap is not None:
            world.cap.holder = sender.addr.wire
        try:
            tid = {MessageClass.TEMPLATE: b"tpl", MessageClass.MARKETING: b"mkt"}.get(cls)
            msg = await sender.send(to, text, cls, template_id=tid)
        except PolicyError as exc:
            name = type(exc).__name__
            world.refused[name] = world.refused.get(name, 0) + 1
            continue
        world.sent[msg.message_id] = (sender.addr.wire, text)
        world.bodies.append(text)
        n += 1
        if n in world.device_changes:
            await world.device_changes[n](world)
        if rng.random() < 0.02:
            world.svc.clock.advance(rng.randint(3600, 30 * 3600))
        if n % 7 == 0:
            for dev in rng.sample(world.devices(), 6):
                await deliver(world, dev, faults=True)
    # Drain: every device fetches until no mailbox holds anything (drops still happen).
    for _ in range(50):
        for dev in world.devices():
            await deliver(world, dev, faults=False)
        if world.svc.pending() == 0:
            break
