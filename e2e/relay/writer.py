"""What the relay store's two backends share in their writers (SPEC.md §10.8): the directory
cache each writer connection keeps, a DB-API :class:`~e2e.relay.store.Tx`, and group commit
(queued requests run in one transaction, each in its own savepoint, answered after the commit).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, Final, TypeAlias, TypeVar

from e2e.relay.store import Account, Tx

__all__ = [
    "CACHE_ENTRIES",
    "DIRECTORY_TABLES",
    "DIRECTORY_GENERATION",
    "DirectoryCache",
    "CachedDirectory",
    "SqlTx",
    "Sink",
    "Job",
    "settle",
    "finish_jobs",
    "drain",
]

#: The tables that make the directory (see :class:`DirectoryCache`).
DIRECTORY_TABLES: Final = ("accounts", "devices", "routes", "designated")
#: The statement reading the directory's generation (see :class:`DirectoryCache`).
DIRECTORY_GENERATION: Final = "SELECT value FROM relay_meta WHERE key = 'directory'"
#: Most device keys a writer's cache holds before it starts again.
CACHE_ENTRIES: Final = 100_000


class DirectoryCache:
    """The directory (accounts, device ids and keys, routes, designated devices) as one
    writer connection last read or wrote it. It changes seldom, and every change of it also
    increments the ``directory`` row of ``relay_meta`` in the same transaction (a trigger on
    each of :data:`DIRECTORY_TABLES` does, so a change by hand counts too); a writer reads
    that row when it starts a group transaction and drops its entries if the row moved, so
    entries are never older than the group's start, whoever changed the directory. A request rolled
    back to its savepoint may have changed entries, so a rollback drops them too."""

    __slots__ = ("generation", "accounts", "device_ids", "identities", "routes", "designated")

    def __init__(self) -> None:
        self.generation = -1
        self.accounts: dict[bytes, Account | None] = {}
        self.device_ids: dict[bytes, frozenset[int]] = {}
        self.identities: dict[tuple[bytes, int], bytes | None] = {}
        self.routes: dict[tuple[bytes, bytes], frozenset[int]] = {}
        self.designated: dict[bytes, frozenset[int]] = {}

    def clear(self) -> None:
        self.generation = -1
        self.accounts.clear()
        self.forget_devices()

    def forget_devices(self) -> None:
        for table in (self.device_ids, self.identities, self.routes, self.designated):
            table.clear()

    def check_generation(self, generation: int) -> None:
        """At a group's start: the ``directory`` row's value; entries go if it moved."""
        if generation != self.generation or len(self.identities) > CACHE_ENTRIES:
            self.clear()
            self.generation = generation


class CachedDirectory(Tx):
    """A :class:`Tx` mix-in answering directory reads from :attr:`cache` and keeping it true
    on directory writes (see :class:`DirectoryCache`)."""

    cache: DirectoryCache

    def account(self, name: bytes) -> Account | None:
        accounts = self.cache.accounts
        if name not in accounts:
            accounts[name] = super().account(name)
        return accounts[name]

    def accounts(self, *names: bytes) -> dict[bytes, Account]:
        cached = self.cache.accounts
        missing = [n for n in names if n not in cached]
        if missing:
            found = super().accounts(*missing)
            for n in missing:
                cached[n] = found.get(n)
        return {n: a for n in names if (a := cached[n]) is not None}

    def insert_account(self, acct: Account) -> None:
        self.cache.accounts.pop(acct.name, None)
        super().insert_account(acct)

    def device_ids(self, *accounts: bytes) -> dict[bytes, set[int]]:
        cached = self.cache.device_ids
        missing = [a for a in accounts if a not in cached]
        if missing:
            for a, ids in super().device_ids(*missing).items():
                cached[a] = frozenset(ids)
        return {a: set(cached[a]) for a in accounts}

    def device_identity(self, account: bytes, device_id: int) -> bytes | None:
        identities = self.cache.identities
        key = (account, device_id)
        if key not in identities:
            identities[key] = super().device_identity(account, device_id)
        return identities[key]

    def put_device(self, account: bytes, device_id: int, certificate: bytes,
                   identity: bytes) -> None:  # fmt: skip
        self.cache.forget_devices()
        super().put_device(account, device_id, certificate, identity)

    def delete_device(self, account: bytes, device_id: int) -> None:
        self.cache.forget_devices()
        super().delete_device(account, device_id)

    def forget_account(self, account: bytes) -> None:
        self.cache.forget_devices()
        super().forget_account(account)

    def route(self, business: bytes, customer: bytes) -> set[int]:
        routes = self.cache.routes
        key = (business, customer)
        if key not in routes:
            routes[key] = frozenset(super().route(business, customer))
        return set(routes[key])

    def set_route(self, business: bytes, customer: bytes, devices: Iterable[int]) -> None:
        self.cache.routes.pop((business, customer), None)
        super().set_route(business, customer, devices)

    def designated(self, business: bytes) -> set[int]:
        designated = self.cache.designated
        if business not in designated:
            designated[business] = frozenset(super().designated(business))
        return set(designated[business])

    def set_designated(self, business: bytes, devices: Iterable[int]) -> None:
        self.cache.designated.pop(business, None)
        super().set_designated(business, devices)


class SqlTx(Tx):
    """A :class:`Tx` over a DB-API cursor; ``?`` placeholders become ``paramstyle``."""

    def __init__(self, cursor: Any, placeholder: str = "?") -> None:
        self.cur = cursor
        self.placeholder = placeholder

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(self._sql(sql), tuple(params))

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(self._sql(sql), tuple(params))
        return list(self.cur.fetchall())


#: Where a queued job's outcome goes: a thread's future, or a coroutine's future on its loop.
Sink: TypeAlias = Future[Any] | tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]
#: A function to run in a store's group transaction, and where its outcome goes.
Job: TypeAlias = tuple[Callable[["Tx"], Any], Sink]


def settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the loop: hand a committed group's outcomes to the coroutines awaiting them."""
    for fut, ok, value in items:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def finish_jobs(jobs: Sequence[Job], outcomes: Sequence[tuple[bool, Any]]) -> None:
    """Hand each job its (ok, result or exception): thread futures directly, coroutine
    futures with one call onto each event loop."""
    on_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, sink), (ok, value) in zip(jobs, outcomes, strict=True):
        if isinstance(sink, Future):
            if ok:
                sink.set_result(value)
            else:
                sink.set_exception(value)
        else:
            on_loop.setdefault(sink[0], []).append((sink[1], ok, value))
    for loop, items in on_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(settle, items)


Q = TypeVar("Q")


def drain(q: queue.SimpleQueue[Q | None], group: list[Q], most: int) -> None:
    """Append to ``group`` what is already queued, up to ``most`` in all; a ``None`` (the
    stop signal) is left in the queue."""
    while len(group) < most:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            return
        if nxt is None:
            q.put(None)
            return
        group.append(nxt)
