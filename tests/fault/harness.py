"""The fault-injection suite's world (SPEC.md §10.11): relay processes (``python -m e2e relay
serve``, two on one database) behind a :class:`~proxy.FaultProxy`, client devices talking
through it, and for each device an application that keeps what it learnt in its own "database"
(here: memory of the test process, which outlives a device's crash) together with the event
position it has reached, reading ``read_events(after=position)`` -- the exactly-once pattern of
SPEC §10.11.

A device's process is killed (as by kill -9) at an await point of its client: every store
transaction (as it begins, and once it has committed) and every relay call (before the request
leaves, and once the answer is in) counts one point; at the chosen point :class:`Crash` is
raised and from then on every store and relay call of that device raises it too. Nothing
uncommitted survives, nothing that committed is undone; the device is then opened again from
its store. Relay processes are killed with SIGKILL and started again. A device's disk may be
lost and a backup of its store (taken earlier in the schedule) put back: it recovers by
itself (SPEC §10.11), and its application, whose own database was not lost, tells by message
id what the restored device hands over again.

After a schedule the faults stop, every party is started again and the devices drain, then the
invariants are checked (:meth:`Fleet.check`):

* every message the relay accepted reaches the application of every recipient device exactly
  once (and a message it did not accept reaches none);
* every sender's application learns the fate of each of its sends exactly once (sent, or
  refused), and it agrees with the relay's record;
* no message key is used twice: no two different frames that left a device were encrypted
  under one sending chain key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy import FaultProxy, Faults

from e2e.client import Client, MessageReceived, MessageSent, SendRefused, Undecryptable, state
from e2e.client.http import RelayClient
from e2e.errors import E2EError
from e2e.keys import KeyPair
from e2e.platform.envelope import Envelope
from e2e.platform.policy import MessageClass
from e2e.ratchet import Ratchet
from e2e.store import Address, Store
from e2e.store.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from relayhelp import RelayProcess  # noqa: E402

PREKEYS = 4


class Crash(BaseException):  # noqa: N818 - a process death, not an error
    """The device's process is killed here (not an Exception: nothing catches it)."""


class Points:
    """The await points of one device's client; :attr:`crash_at` kills it at that point."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.count = 0
        self.names: list[str] = []
        self.dead = False
        self.where = ""
        self._lock = threading.Lock()

    def hit(self, name: str) -> None:
        with self._lock:
            if self.dead:
                raise Crash(name)
            if self.crash_at is not None and self.count == self.crash_at:
                self.dead, self.where = True, name
                raise Crash(name)
            self.count += 1
            self.names.append(name)


class CrashingStore:
    """A device's store whose transactions are await points of :class:`Points`."""

    def __init__(self, inner: Store, points: Points) -> None:
        self.inner = inner
        self.points = points

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        self.points.hit("store")
        with self.inner.transaction() as tx:
            yield tx
        self.points.hit("store:committed")

    def close(self) -> None:
        self.inner.close()


class CrashingTransport:
    """A device's transport whose calls are await points; it keeps every envelope that may
    have left the device (a submission's, before the request goes)."""

    def __init__(self, inner: Any, points: Points, sent: list[bytes]) -> None:
        self.inner = inner
        self.points = points
        self.sent = sent

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)
        if name == "aclose" or not callable(fn):
            return fn

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.points.hit(name)
            if name in ("submit", "resend"):
                self.sent.extend(args[0])
            out = await fn(*args, **kwargs)
            self.points.hit(f"{name}:answered")
            return out

        return call


@dataclass
class Intent:
    """A message the application decided to send (kept before it calls send)."""

    sender: str
    to: str
    cls: MessageClass
    text: bytes


@dataclass
class App:
    """The application of one device: what it learnt, and the event position it reached,
    updated together (one write of its own database)."""

    position: int = 0
    #: Its device was restored from a backup: it may hand over again what it handed over
    #: after the backup, and the application tells it by message id (SPEC §10.11).
    dedup: bool = False
    received: collections.Counter[bytes] = field(default_factory=collections.Counter)
    bodies: dict[bytes, bytes] = field(default_factory=dict)
    fates: dict[bytes, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    undecryptable: collections.Counter[str] = field(default_factory=collections.Counter)
    events: int = 0

    def take(self, ev: Any) -> None:
        self.events += 1
        if isinstance(ev, MessageReceived):
            mid = ev.message.message_id
            if not (self.dedup and self.received[mid]):
                self.received[mid] += 1
            self.bodies[mid] = ev.message.body
        elif isinstance(ev, MessageSent):
            if not (self.dedup and "sent" in self.fates.get(ev.message.message_id, [])):
                self.fates[ev.message.message_id].append("sent")
        elif isinstance(ev, SendRefused):
            self.fates[ev.message_id].append("refused:" + ev.error)
        elif isinstance(ev, Undecryptable):
            self.undecryptable[ev.error] += 1
        self.position = ev.seq


@dataclass
class Device:
    name: str
    account: str
    kind: str
    path: Path
    key: bytes
    points: Points = field(default_factory=Points)
    client: Client | None = None
    inner: Store | None = None
    app: App = field(default_factory=App)
    #: A copy of its store file taken while it was closed, and whether it was put back.
    backup: Path | None = None
    restored: bool = False

    @property
    def addr(self) -> Address:
        assert self.client is not None
        return self.client.addr


@dataclass
class Figures:
    """What the runs did and what the checks found."""

    schedules: int = 0
    ops: int = 0
    intents: int = 0
    accepted: int = 0
    refused: int = 0
    deliveries: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong_fate: int = 0
    key_reuse: int = 0
    frames: int = 0
    undecryptable: collections.Counter[str] = field(default_factory=collections.Counter)
    crashes: collections.Counter[str] = field(default_factory=collections.Counter)
    relay_kills: int = 0
    restarts: int = 0
    restores: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: int = 0
    failed_ops: collections.Counter[str] = field(default_factory=collections.Counter)

    def problems(self) -> int:
        return self.lost + self.duplicated + self.wrong_fate + self.key_reuse

    def line(self) -> str:
        crashes = sum(self.crashes.values())
        return (
            f"{self.schedules} schedules, {self.ops} ops, {self.intents} sends "
            f"({self.accepted} accepted, {self.refused} refused), {self.deliveries} deliveries "
            f"checked, {self.frames} frames checked; client kills {crashes} (at "
            f"{len(self.crashes)} kinds of await point), relay kills (SIGKILL) "
            f"{self.relay_kills}, graceful restarts {self.restarts}, restores from a backup "
            f"{self.restores}; proxy: {self.requests} "
            f"requests, faults {dict(sorted(self.faults.items()))}; kept undecryptable "
            f"{dict(self.undecryptable)}; lost {self.lost}, duplicated {self.duplicated}, "
            f"wrong or missing fates {self.wrong_fate}, key reuse {self.key_reuse}"
        )


class KeySpy:
    """Every frame's sending chain key (a digest): two frames under one reuse a message key."""

    def __init__(self) -> None:
        self.key_of: dict[bytes, bytes] = {}
        self._encrypt = Ratchet.encrypt

    def install(self) -> None:
        spy = self

        def encrypt(self: Ratchet, *args: Any, **kwargs: Any) -> bytes:
            cks = self.cks
            frame = spy._encrypt(self, *args, **kwargs)
            if cks is not None:
                spy.key_of[hashlib.sha256(frame).digest()] = hashlib.sha256(cks).digest()
            return frame

        Ratchet.encrypt = encrypt  # type: ignore[method-assign]

    def remove(self) -> None:
        Ratchet.encrypt = self._encrypt  # type: ignore[method-assign]


class Fleet:
    """Relay processes (one database), shared by the worlds that run on them."""

    def __init__(self, directory: Path, db: str, relays: int = 2) -> None:
        self.dir = directory
        self.db = db
        key_file = directory / "relay.key"
        key_file.write_bytes(os.urandom(32))
        extra = ["--secret-key-file", str(key_file), "--rate", "100000", "--burst", "100000"]
        self.relays = [RelayProcess(db, extra=extra, log_path=directory / f"relay{i}.log")
                       for i in range(relays)]  # fmt: skip
        self.spy = KeySpy()
        self.figures = Figures()
        self.proxies: list[FaultProxy] = []
        self._restarting: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.gather(*(self._start(r) for r in self.relays))
        self.spy.install()

    @staticmethod
    async def _start(relay: RelayProcess) -> None:
        """Start a relay process, three tries (a shared database server may be short of
        connections for a moment); its log's end if it never comes up."""
        for attempt in range(3):
            try:
                await asyncio.to_thread(relay.start)
                return
            except RuntimeError as exc:
                if attempt == 2:
                    log = relay.log_path.read_text(errors="replace") if relay.log_path else ""
                    raise RuntimeError(f"{exc}; its log ends: {log[-2000:]}") from None
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        self.spy.remove()
        await self.settle()
        for r in self.relays:
            r.stop()

    async def settle(self) -> None:
        """Wait until every killed relay process is serving again."""
        while self._tasks:
            await self._tasks.pop()

    def kill_relay(self, i: int) -> None:
        """kill -9 one relay process; it is started again in the background."""
        relay = self.relays[i]
        if i in self._restarting or relay.proc is None:
            return
        self._restarting.add(i)
        for proxy in self.proxies:
            proxy.down(relay.port)
        relay.kill()
        self.figures.relay_kills += 1

        async def back() -> None:
            await self._start(relay)
            for proxy in self.proxies:
                proxy.up(relay.port)
            self._restarting.discard(i)

        self._tasks.append(asyncio.create_task(back()))

    def alive(self) -> list[int]:
        return [r.port for i, r in enumerate(self.relays) if i not in self._restarting]

    # -- the relay's records ----------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.db.startswith("postgres") or "dbname=" in self.db:
            import psycopg

            with psycopg.connect(self.db, autocommit=True) as conn:
                return list(conn.execute(sql.replace("?", "%s"), params).fetchall())  # type: ignore[arg-type]
        with sqlite3.connect(self.db, timeout=30) as conn:
            return list(conn.execute(sql, params).fetchall())

    def accepted(self, accounts: list[str]) -> set[bytes]:
        marks = ",".join("?" * len(accounts))
        rows = self._query(f"SELECT message_id FROM submissions WHERE sender IN ({marks})",
                           tuple(a.encode() for a in accounts))  # fmt: skip
        return {bytes(r[0]) for r in rows}

    def mailbox_rows(self, accounts: list[str]) -> int:
        marks = ",".join("?" * len(accounts))
        rows = self._query(f"SELECT COUNT(*) FROM mailbox WHERE account IN ({marks})",
                           tuple(a.encode() for a in accounts))  # fmt: skip
        return int(rows[0][0])


def _has_profile(dev: Device) -> bool:
    """Whether the device's store holds its profile (a linking got that far)."""
    store = SqliteStore(dev.path, dev.key, accept_restore=dev.restored)
    try:
        with store.transaction() as tx:
            return state.load_profile(tx) is not None
    finally:
        store.close()


class World:
    """One schedule's parties: a customer with two devices and a business with two, talking
    through a fault proxy of their own to the fleet's relay processes."""

    def __init__(self, fleet: Fleet, tag: str, seed: int) -> None:
        self.fleet = fleet
        self.tag = tag
        self.proxy = FaultProxy([r.port for r in fleet.relays], seed)
        self.net: RelayClient | None = None
        self.devices: list[Device] = []
        self.sent: list[bytes] = []
        self.intents: dict[bytes, Intent] = {}
        self.figures = fleet.figures

    async def start(self) -> tuple[list[Device], list[Device]]:
        """Start the proxy and make the two accounts and their devices (without faults)."""
        fleet = self.fleet
        await self.proxy.start()
        for port in self.proxy.upstreams:
            if port not in fleet.alive():
                self.proxy.down(port)
        fleet.proxies.append(self.proxy)
        self.net = RelayClient(self.proxy.url, retries=1, timeout=10.0)
        out = []
        for account, kind in ((f"c{self.tag}", "customer"), (f"b{self.tag}", "business")):
            first, second = (Device(f"{account}-{i}", account, kind,
                                    fleet.dir / f"{account}-{i}.db", os.urandom(32))
                             for i in (1, 2))  # fmt: skip
            try:  # a relay process another world killed may cut the registration short
                first.client = await Client.create_account(
                    self._opener(first), self._connect(first), account, kind, prekeys=PREKEYS
                )
            except E2EError:
                await self.reopen(first)  # the store holds the device: open registers it
            assert first.client is not None
            await self._add_device(first.client, second)
            out.append([first, second])
        self.devices = out[0] + out[1]
        return out[0], out[1]

    async def _add_device(self, admin: Client, dev: Device) -> None:
        """Link ``dev`` from the admin device. Certifying it reads the account's device list
        from the relay first, so a cut there leaves ``dev``'s store without a profile: the
        linking is done again. A cut after the store holds its profile leaves the rest to
        its next open (which registers it with the signed list it was given)."""
        for attempt in range(100):
            try:
                dev.client = await admin.add_device(
                    self._opener(dev), self._connect(dev), prekeys=PREKEYS
                )
                return
            except E2EError as exc:
                self.figures.failed_ops[f"add_device:{type(exc).__name__}"] += 1
                if dev.inner is not None:
                    dev.inner.close()
                    dev.inner = None
                if _has_profile(dev):
                    await self.reopen(dev)
                    return
                await asyncio.sleep(0.02 * min(attempt + 1, 10))
        raise AssertionError(f"{dev.name} could not be linked")

    async def aclose(self) -> None:
        for dev in self.devices:
            await self._close(dev)
        if self.net is not None:
            await self.net.aclose()
        self.fleet.proxies.remove(self.proxy)
        self.figures.requests += self.proxy.stats.requests
        self.figures.faults.update(self.proxy.stats.faults)
        await self.proxy.aclose()

    def _opener(self, dev: Device, **kw: Any) -> Callable[[], Store]:
        def open_store() -> Store:
            inner = SqliteStore(dev.path, dev.key, accept_restore=dev.restored, **kw)
            dev.inner = inner
            return CrashingStore(inner, dev.points)  # type: ignore[return-value]

        return open_store

    def _connect(self, dev: Device) -> Callable[[Address, KeyPair], Any]:
        assert self.net is not None
        net = self.net

        def connect(addr: Address, identity: KeyPair) -> Any:
            return CrashingTransport(net.connect(addr, identity), dev.points, self.sent)

        return connect

    async def _close(self, dev: Device) -> None:
        if dev.client is not None:
            with contextlib.suppress(Crash, E2EError):
                await dev.client.aclose()
            dev.client = None

    def _abandon(self, dev: Device) -> None:
        """What kill -9 leaves: the store as committed; nothing in memory."""
        client, dev.client = dev.client, None
        if client is not None:
            client._pool.shutdown(wait=False)
        if dev.inner is not None:
            with contextlib.suppress(Exception):
                dev.inner.close()
            dev.inner = None

    async def reopen(self, dev: Device) -> None:
        """Start a device's process again (after a crash or a graceful stop): open its client
        (retrying while the network fails), let its application catch up, then send again
        what the application meant to send and has no fate for."""
        dev.points = Points()
        for attempt in range(100):
            try:
                dev.client = await Client.open(self._opener(dev), self._connect(dev),
                                               prekeys=PREKEYS)  # fmt: skip
                break
            except E2EError as exc:
                self.figures.failed_ops[f"open:{type(exc).__name__}"] += 1
                if dev.inner is not None:
                    dev.inner.close()
                    dev.inner = None
                await asyncio.sleep(0.02 * min(attempt + 1, 10))
        else:
            raise AssertionError(f"{dev.name} could not be opened again")
        await self.catch_up(dev)

    async def catch_up(self, dev: Device) -> None:
        """The application reads what it missed, then sends again what has no fate yet."""
        await self._guard(dev, "drain", lambda: self.drain(dev))
        for mid, intent in list(self.intents.items()):
            if dev.client is not None and intent.sender == dev.name and not dev.app.fates.get(mid):
                await self.send_intent(dev, mid)

    # -- operations (each may crash its device) ----------------------------------------------

    async def _guard(self, dev: Device, what: str, op: Callable[[], Awaitable[None]]) -> None:
        self.figures.ops += 1
        try:
            await op()
        except Crash:
            self.figures.crashes[f"{what}@{dev.points.where}"] += 1
            self._abandon(dev)
        except E2EError as exc:
            self.figures.failed_ops[f"{what}:{type(exc).__name__}"] += 1

    async def drain(self, dev: Device) -> None:
        """The application reads what is new after its own position (and lets the device
        drop it); what it learns and its new position are one write of its database."""
        assert dev.client is not None
        while True:
            batch = await dev.client.read_events(after=dev.app.position)
            for ev in batch:
                dev.app.take(ev)
            if not batch:
                return
            await dev.client.ack(dev.app.position)

    async def send_intent(self, dev: Device, mid: bytes) -> None:
        assert dev.client is not None
        it = self.intents[mid]
        client = dev.client

        async def go() -> None:
            await client.send(it.to, it.text, it.cls, message_id=mid)
            await self.drain(dev)

        await self._guard(dev, "send", go)

    async def send(self, dev: Device, to: str, cls: MessageClass, rng: random.Random) -> None:
        if dev.client is None:
            await self.reopen(dev)
        mid = rng.randbytes(16)
        self.intents[mid] = Intent(dev.name, to, cls, f"{dev.name}:{mid.hex()[:8]}".encode())
        self.figures.intents += 1
        await self.send_intent(dev, mid)

    async def sync(self, dev: Device) -> None:
        if dev.client is None:
            await self.reopen(dev)
        assert dev.client is not None
        client = dev.client

        async def go() -> None:
            await client.sync()
            await self.drain(dev)

        await self._guard(dev, "sync", go)

    async def restart(self, dev: Device) -> None:
        await self._close(dev)
        self.figures.restarts += 1
        await self.reopen(dev)

    async def backup(self, dev: Device) -> None:
        """Stop the device, copy its store file (the whole store once closed), start it."""
        await self._close(dev)
        self._abandon(dev)
        dev.backup = dev.path.with_name(dev.path.name + ".backup")
        shutil.copyfile(dev.path, dev.backup)
        await self.reopen(dev)

    async def restore(self, dev: Device) -> None:
        """The device's disk is lost and its backup put back (accepted as a restore); its
        application, whose database was not lost, reads on from its own position."""
        assert dev.backup is not None
        await self._close(dev)
        self._abandon(dev)
        shutil.copyfile(dev.backup, dev.path)
        for suffix in ("-wal", "-shm"):
            Path(str(dev.path) + suffix).unlink(missing_ok=True)
        dev.restored = dev.app.dedup = True
        self.figures.restores += 1
        await self.reopen(dev)

    # -- the end of a schedule ------------------------------------------------------------

    async def heal(self) -> None:
        """No more faults; every relay process and device up; drain until nothing moves."""
        self.proxy.faults = Faults()
        await self.fleet.settle()
        for dev in self.devices:
            if dev.client is None:
                await self.reopen(dev)
        for _ in range(12):
            before = sum(d.app.events for d in self.devices)
            for dev in self.devices:
                await self.catch_up(dev)
                await self.sync(dev)
            moved = sum(d.app.events for d in self.devices) != before
            if not moved and not await self._pending():
                return
        raise AssertionError("the devices did not settle")

    async def _pending(self) -> bool:
        for dev in self.devices:
            assert dev.client is not None
            if await dev.client.pending():
                return True
        return self.fleet.mailbox_rows(sorted({d.account for d in self.devices})) > 0

    # -- the invariants ---------------------------------------------------------------------

    def check(self) -> list[str]:
        """The invariants over this world's sends; a list of what is wrong (empty: none)."""
        wrong: list[str] = []
        f = self.figures
        devices = self.devices
        accepted = self.fleet.accepted(sorted({d.account for d in devices}))
        by_name = {d.name: d for d in devices}
        for mid, it in self.intents.items():
            sender = by_name[it.sender]
            fate = sender.app.fates.get(mid, [])
            if mid in accepted:
                f.accepted += 1
                if fate != ["sent"]:
                    f.wrong_fate += 1
                    wrong.append(f"{mid.hex()[:8]} accepted, fate {fate}")
                for dev in devices:
                    if dev is sender or dev.account not in (it.to, sender.account):
                        continue
                    n = dev.app.received[mid]
                    f.deliveries += 1
                    if n == 0:
                        f.lost += 1
                        wrong.append(f"{mid.hex()[:8]} never reached {dev.name}")
                    elif n > 1:
                        f.duplicated += 1
                        wrong.append(f"{mid.hex()[:8]} reached {dev.name} {n} times")
                    elif dev.app.bodies[mid] != it.text:
                        f.lost += 1
                        wrong.append(f"{mid.hex()[:8]} reached {dev.name} altered")
            else:
                f.refused += 1
                if len(fate) != 1 or not fate[0].startswith("refused:"):
                    f.wrong_fate += 1
                    wrong.append(f"{mid.hex()[:8]} not accepted, fate {fate}")
                for dev in devices:
                    if dev.app.received[mid]:
                        f.lost += 1
                        wrong.append(f"{mid.hex()[:8]} refused yet reached {dev.name}")
        for d in devices:
            f.undecryptable.update(d.app.undecryptable)
        wrong += self.check_keys()
        return wrong

    def check_keys(self) -> list[str]:
        """No sending chain key under two different frames that left their device."""
        frames: dict[bytes, set[bytes]] = collections.defaultdict(set)
        for raw in self.sent:
            fh = hashlib.sha256(Envelope.from_bytes(raw).frame).digest()
            frames[self.fleet.spy.key_of[fh]].add(fh)
        self.figures.frames += len({h for hs in frames.values() for h in hs})
        reused = [k for k, hs in frames.items() if len(hs) > 1]
        self.figures.key_reuse += len(reused)
        return [f"chain key {k.hex()[:8]} under {len(frames[k])} frames" for k in reused]


async def run_schedule(fleet: Fleet, seed: int, index: int) -> list[str]:
    """Run one schedule on a fresh world; the invariants' complaints (empty: all held).

    The seed decides the operations, the devices' crash points, the relay kills and the
    proxy's faults (drawn per request, in arrival order)."""
    rng = random.Random(seed)
    world = World(fleet, f"{index}x{seed % 10_000}", seed)
    customers, businesses = await world.start()
    devices = customers + businesses
    cust, biz = customers[0].account, businesses[0].account
    world.proxy.faults = Faults(
        drop=rng.choice((0, 0.02, 0.05)), reset=rng.choice((0, 0.02, 0.05)),
        cut=rng.choice((0, 0.03, 0.08)), partial=rng.choice((0, 0.02)),
        delay=rng.choice((0, 0.05, 0.2)), duplicate=rng.choice((0, 0.03, 0.08)),
    )  # fmt: skip
    try:
        # the customer writes first (a business may not), then anything goes
        await world.send(customers[0], biz, MessageClass.SERVICE, rng)
        killed = restored = False
        saved = rng.choice(devices) if rng.random() < 0.5 else None
        if saved is not None:  # its disk may be lost later in the schedule
            await world.backup(saved)
        for _ in range(rng.randint(5, 12)):
            dev = rng.choice(devices)
            roll = rng.random()
            if dev.client is None:
                await world.reopen(dev)
            if rng.random() < 0.3:
                dev.points.crash_at = dev.points.count + rng.randint(0, 24)
            if roll < 0.42:
                to = biz if dev.kind == "customer" else cust
                cls = MessageClass.SERVICE
                if dev.kind == "business" and rng.random() < 0.15:
                    cls = MessageClass.MARKETING  # refused: the customer has not opted in
                await world.send(dev, to, cls, rng)
            elif roll < 0.78:
                await world.sync(dev)
            elif roll < 0.86:
                await world.restart(dev)
            elif roll < 0.96:
                if saved is not None and not restored:
                    restored = True  # a lost disk: one per schedule
                    await world.restore(saved)
                else:
                    await world.sync(dev)
            elif not killed:  # a relay process restarts in about a second: one per schedule
                killed = True
                fleet.kill_relay(rng.randrange(len(fleet.relays)))
            if dev.client is not None:
                dev.points.crash_at = None
        await world.heal()
        wrong = world.check()
    finally:
        await world.aclose()
    fleet.figures.schedules += 1
    return wrong


async def run_many(fleet: Fleet, seeds: list[int], concurrency: int,
                   report: Callable[[int, int, list[str]], None]) -> None:  # fmt: skip
    """Run the schedules, ``concurrency`` worlds at a time; ``report(index, seed, wrong)``."""
    todo = list(enumerate(seeds))

    async def worker() -> None:
        while todo:
            index, seed = todo.pop(0)
            report(index, seed, await run_schedule(fleet, seed, index))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def seeds(count: int, base: int | None = None) -> list[int]:
    """``count`` schedule seeds drawn from ``E2E_FAULT_SEED`` (or the clock); or exactly the
    seeds listed in ``E2E_FAULT_REPLAY`` (comma-separated, as a failure prints them)."""
    replay = os.environ.get("E2E_FAULT_REPLAY")
    if replay:
        return [int(s) for s in replay.split(",")]
    base = int(os.environ.get("E2E_FAULT_SEED", base if base is not None else time.time_ns()))
    rng = random.Random(base)
    return [rng.randrange(2**32) for _ in range(count)]


# -- a crash at every await point ----------------------------------------------------------------

Step = Callable[["World", list[Device], list[Device]], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """An operation of one device after a set-up: the operation is run with a crash at each
    of its await points in turn."""

    name: str
    setup: Step
    #: Which device runs the operation: (customers, businesses) -> device.
    who: Callable[[list[Device], list[Device]], Device]
    op: Step


def _rng() -> random.Random:
    return random.Random(os.urandom(8))


async def _first(w: World, c: list[Device], b: list[Device]) -> None:
    await w.send(c[0], b[0].account, MessageClass.SERVICE, _rng())


async def _talked(w: World, c: list[Device], b: list[Device]) -> None:
    await _first(w, c, b)
    for dev in (*b, *c):
        await w.sync(dev)


async def _waiting(w: World, c: list[Device], b: list[Device]) -> None:
    await _talked(w, c, b)
    for _ in range(2):
        await w.send(c[0], b[0].account, MessageClass.SERVICE, _rng())


async def _nothing(w: World, c: list[Device], b: list[Device]) -> None:
    return None


SCENARIOS = (
    Scenario("send: a customer's first message (device lists, bundles, seal, submit)",
             _nothing, lambda c, b: c[0], _first),
    Scenario("send: a business's reply (precheck, sessions from bundles)",
             lambda w, c, b: _first(w, c, b), lambda c, b: b[0],
             lambda w, c, b: w.send(b[0], c[0].account, MessageClass.SERVICE, _rng())),
    Scenario("send: a message in a running conversation", _talked, lambda c, b: c[0],
             lambda w, c, b: w.send(c[0], b[0].account, MessageClass.SERVICE, _rng())),
    Scenario("sync: a new customer's first message (device list, open, ack, receipt)",
             _first, lambda c, b: b[0], lambda w, c, b: w.sync(b[0])),
    Scenario("sync: two messages in a running conversation", _waiting, lambda c, b: b[0],
             lambda w, c, b: w.sync(b[0])),
)  # fmt: skip


async def crash_at(fleet: Fleet, scenario: Scenario, k: int, tag: str) -> tuple[str, list[str]]:
    """Run ``scenario`` on a fresh world with its device killed at the op's ``k``-th await
    point; (the point's name, or "" if the op has fewer points; the invariants'
    complaints)."""
    world = World(fleet, tag, k)
    c, b = await world.start()
    try:
        await scenario.setup(world, c, b)
        dev = scenario.who(c, b)
        if dev.client is None:
            await world.reopen(dev)
        dev.points.crash_at = dev.points.count + k
        await scenario.op(world, c, b)
        where = dev.points.where if dev.client is None else ""
        dev.points.crash_at = None
        await world.heal()
        return where, world.check()
    finally:
        await world.aclose()
