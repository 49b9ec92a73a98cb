"""The relay service in this process, and client devices on it: what the platform, client and
proof-suite tests drive (SPEC.md §10).

:class:`Service` is the relay service itself -- :func:`e2e.relay.create_app` (app, request
pipeline, handlers, store) on a SQLite file -- reached by :class:`~e2e.client.Client` devices
through :class:`~e2e.client.http.RelayClient` over httpx's ASGI transport, on the test's event
loop: the code that ``python -m e2e relay serve`` runs, without a socket. The relay and every
client share one :class:`~e2e.clock.ManualClock` (the policy's windows pass in an instant and
request signatures still verify); a tap records every request and answer body; the ad service
receives what the relay shares. The proof suite's process tests (tests/security/
test_network_attacks.py) start the relay as its own process instead.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from e2e.client import Client, inbox, state
from e2e.client.http import RelayClient
from e2e.client.transport import Connector, Transport
from e2e.clock import ManualClock
from e2e.keys import KeyPair
from e2e.platform import wire
from e2e.platform.adservice import AdService
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.policy import PolicyConfig
from e2e.relay.app import RelayApp, create_app
from e2e.relay.backends import open_store
from e2e.relay.config import RelayConfig
from e2e.relay.ratelimit import RateLimit
from e2e.relay.service import RelayService
from e2e.relay.store import RelayStore
from e2e.relay.tap import Recorder
from e2e.store import Address, MemoryStore, Store
from e2e.store.sqlite import SqliteStore

_T = TypeVar("_T")


#: The relay's settings here: its registration, device and claim limits (SPEC §10.13) out of
#: the way of scenarios that make many accounts and devices from one address.
GENEROUS: Final = (
    RelayConfig()
    .replace("admission", address_burst=1_000_000, burst=10**9, business_tier=-1)
    .replace("limits", devices_per_account=1000, claim_burst=100_000, device_claim_burst=100_000)
)


class _Receipts:
    """A device's transport that keeps the receipt of each accepted submission."""

    def __init__(self, inner: Transport, receipts: dict[bytes, wire.Receipt]) -> None:
        self.inner = inner
        self.receipts = receipts

    async def submit(self, envelopes: list[bytes], entry: bytes | None = None) -> wire.Receipt:
        got = await self.inner.submit(envelopes, entry)
        self.receipts[got.message_id] = got
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Watched:
    """A device's transport that records the name of every relay call it makes
    (:attr:`calls`) and runs :attr:`after` with it once the relay has answered (a test raises
    there to lose the answer of a request the relay applied)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.after: Callable[[str], None] | None = None

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)
        if not callable(fn) or name == "aclose":
            return fn

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            out = await fn(*args, **kwargs)
            if self.after is not None:
                self.after(name)
            return out

        return call


def watch(client: Client) -> Watched:
    """Put a :class:`Watched` transport in front of ``client``'s."""
    watched = Watched(client.transport)
    client.transport = watched  # type: ignore[assignment]
    return watched


async def open_raw(dev: Client, raw: bytes) -> state.Message:
    """The device's own receive step on one delivery, as a malicious relay or network hands
    it over (:func:`e2e.client.inbox.open_delivery`, one store transaction)."""
    return await dev._tx(lambda tx: inbox.open_delivery(tx, dev.profile, raw))


def rogue(account: bytes) -> tuple[bytes, list[bytes], bytes]:
    """What a relay can make up for ``account``: an account key it holds, one device that
    key certified and the device list it signed -- as ``fetch_devices`` answers."""
    eve, dev = KeyPair.generate(), KeyPair.generate()
    cert = DeviceCertificate.issue(eve, account, 1, dev.public).to_bytes()
    signed = SignedDeviceList.sign(eve, account, 1, [cert]).to_bytes()
    return eve.public, [cert], signed


def run(fn: Callable[[], Awaitable[_T]]) -> _T:
    """Run an async test body on a fresh event loop."""

    async def main() -> _T:
        return await fn()

    return asyncio.run(main())


def fast_dir(fallback: Path) -> Path:
    """A directory on tmpfs when the machine has one (the relay commits with fsync; a
    workload of thousands of messages tests what the relay sees, not the disk), else
    ``fallback``."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        return Path(tempfile.mkdtemp(prefix="e2e-world-", dir=shm))
    return fallback


class Serving:
    """What one device's connection to a malicious relay shows it: the ``overrides`` (async
    functions) instead of the honest connection's answers."""

    def __init__(self, honest: Any, **overrides: Any) -> None:
        self.honest = honest
        self.overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self.overrides.get(name) or getattr(self.honest, name)


class Service:
    """The relay service in this process and the devices made on it.

    ``stores``: "memory" (each device on a :class:`MemoryStore`) or "sqlite" (each on its own
    sealed SQLite file in ``directory``). ``db``: the relay's database (default: a SQLite file
    in ``directory``; a PostgreSQL DSN runs the PostgreSQL backend)."""

    def __init__(
        self,
        directory: Path,
        *,
        config: PolicyConfig | None = None,
        db: str | None = None,
        stores: str = "memory",
        secret_key: bytes | None = None,
    ) -> None:
        self.dir = directory
        self.clock = ManualClock()
        self.ads = AdService()
        self.tap = Recorder()
        self.db = db or str(directory / "relay.sqlite")
        self.app: RelayApp = create_app(
            self.db, config=config, clock=self.clock, share=self.ads.receive, tap=self.tap,
            rate_limit=RateLimit(1e9, 1e9), secret_key=secret_key or os.urandom(32),
            settings=GENEROUS,
        )  # fmt: skip
        self.relay = RelayClient.serving(self.app, clock=self.clock)
        self.stores = stores
        #: The relay's receipt of every accepted message, by message id.
        self.receipts: dict[bytes, wire.Receipt] = {}
        self.keys: dict[str, bytes] = {}
        self.clients: list[Client] = []
        self._operator: RelayStore | None = None

    @property
    def service(self) -> RelayService:
        return self.app.service

    @property
    def store(self) -> RelayStore:
        return self.app.store

    # -- devices -------------------------------------------------------------------------

    def connect(self, addr: Address, identity: KeyPair) -> Transport:
        """The relay client's connector, keeping every receipt in :attr:`receipts`."""
        return _Receipts(self.relay.connect(addr, identity), self.receipts)

    def opener(self, name: str) -> Callable[[], Store]:
        """The store of device ``name`` (the same data at every call)."""
        if self.stores == "memory":
            store = MemoryStore()
            return lambda: store
        key = self.keys.setdefault(name, os.urandom(32))
        return lambda: SqliteStore(self.dir / f"{name}.db", key)

    async def account(self, name: str, kind: str, devices: int = 1, **kw: Any) -> list[Client]:
        """A new account and its devices (the first holds the account key); ``kw`` goes to
        every device (``tier``, ``prekeys``, ``auto_receipts``...)."""
        tier = kw.pop("tier", 1 if kind == "business" else 0)
        first = await Client.create_account(self.opener(f"{name}-1"), self.connect, name,
                                            kind, tier=tier, **kw)  # fmt: skip
        self.clients.append(first)
        out = [first]
        for _ in range(devices - 1):
            out.append(await self.add_device(first, **kw))
        return out

    async def chat(self, business: str, customer: str) -> tuple[Client, Client]:
        """A business and a customer of one device each (no automatic receipts), the
        customer's first message ("hi") read by the business: (business, customer)."""
        [biz] = await self.account(business, "business", auto_receipts=False)
        [cust] = await self.account(customer, "customer", auto_receipts=False)
        await cust.send(business, "hi")
        await biz.sync()
        return biz, cust

    async def add_device(self, first: Client, **kw: Any) -> Client:
        """Another device of ``first``'s account, certified by it."""
        n = len([c for c in self.clients if c.profile.account == first.profile.account]) + 1
        dev = await first.add_device(self.opener(f"{first.profile.account}-{n}"),
                                     self.connect, **kw)  # fmt: skip
        self.clients.append(dev)
        return dev

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()
        self.clients.clear()
        await self.relay.aclose()
        if self._operator is not None:
            self._operator.close()

    # -- what the relay holds and saw ----------------------------------------------------

    def pending(self) -> int:
        """Deliveries waiting in every mailbox."""
        return int(self.store.read(lambda tx: tx.count_mail()))

    def refusals(self) -> collections.Counter[str]:
        """Refused requests by error code, as the relay counted them."""
        out: collections.Counter[str] = collections.Counter()
        for key, n in self.app.counters.items():
            kind, _, code = key.partition(":")
            if kind == "refused":
                out[code] += n
        return out

    def db_files(self) -> list[bytes]:
        """The relay's database files as bytes on disk (SQLite: the file and its WAL)."""
        out = []
        for suffix in ("", "-wal", "-journal"):
            p = Path(self.db + suffix)
            if p.exists():
                out.append(p.read_bytes())
        return out

    def operator(self) -> RelayStore:
        """The relay's database through a connection of its own, as its operator (or an
        attacker holding it) would edit it behind the running service."""
        if self._operator is None:
            self._operator = open_store(self.db)
        return self._operator

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query on the relay's store."""
        return list(self.store.read(lambda tx: tx.fetchall(sql)))


class Backup:
    """One backup of a device's SQLite store, as an operator takes and restores it: the
    client is closed first (the closed file is the whole store), and a restore puts the copy
    back without the live store's WAL files and reopens it with ``accept_restore`` (its
    epoch keeper file stays newer, so the store would refuse it otherwise)."""

    def __init__(self, directory: Path) -> None:
        self.copy = directory / f"backup-{uuid.uuid4().hex[:8]}.db"

    async def take(
        self, client: Client, path: Path, key: bytes, connect: Connector, **kw: Any
    ) -> Client:
        """Close ``client``, copy its store at ``path``, and open the device again."""
        await client.aclose()
        shutil.copyfile(path, self.copy)
        return await Client.open(lambda: SqliteStore(path, key), connect, **kw)

    async def restore(
        self, client: Client, path: Path, key: bytes, connect: Connector, **kw: Any
    ) -> Client:
        """Close ``client`` (its disk is lost), put the backup back at ``path`` and open the
        restored device."""
        await client.aclose()
        shutil.copyfile(self.copy, path)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return await Client.open(lambda: SqliteStore(path, key, accept_restore=True), connect,
                                 **kw)  # fmt: skip

