"""The relay's records over several PostgreSQL clusters (SPEC.md §10.14): a router that
opens one store per cluster and places each account by a :class:`~e2e.relay.placement.
PlacementMap`, the submission that commits on one cluster, and the outbox that carries its
copies to the others.

A chat (business, customer) lives on its **customer's** cluster (its home): the chat's state
and decision lock, and the sender's de-duplication record of a submission in it. A
submission is decided and committed in one transaction on the chat's home, exactly as on one
database; copies for mailboxes on the home are stored there, and copies for mailboxes on
other clusters (a customer's message to a business on another cluster, a business's copies
for its own other devices) are written, in the same transaction, to the home's
``cluster_outbox``. The receipt is sent once that one transaction commits: what is
acknowledged is durable on one cluster and needs no other cluster to be up.

An :class:`OutboxRelay` moves outbox rows to their mailboxes' clusters: at least once (a row
leaves the outbox only after its destination committed it) and applied exactly once (the
destination records (origin cluster, outbox id) in ``cluster_applied`` in the transaction
that stores the copy, and skips a row it has applied). It can be killed between any two
steps; the next one delivers what is left.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar

from e2e.errors import (
    Blocked,
    DecodeError,
    DuplicateSubmission,
    MailboxFull,
    StoreError,
    StoreUnavailable,
)
from e2e.platform.policy import ChatState, MessageClass
from e2e.relay.placement import PlacementMap, check_newer, cluster_of, slot_of
from e2e.relay.store import BUSINESS, Mail, Quota, RelayStore, SeenSubmission, Tx

__all__ = [
    "CLUSTER_SCHEMA",
    "Copy",
    "Submission",
    "ClusterReceipt",
    "OutboxRow",
    "ClusterRouter",
    "OutboxRelay",
    "submission_digest",
]

T = TypeVar("T")

#: The tables a cluster keeps besides the relay's own (PostgreSQL).
CLUSTER_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS cluster_outbox (id BIGSERIAL PRIMARY KEY,"
    " account BYTEA NOT NULL, device_id BIGINT NOT NULL, envelope BYTEA NOT NULL,"
    " received_at BIGINT NOT NULL, tag BYTEA NOT NULL, sender BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cluster_applied (origin TEXT NOT NULL,"
    " outbox_id BIGINT NOT NULL, account BYTEA NOT NULL, at BIGINT NOT NULL,"
    " PRIMARY KEY (origin, outbox_id))",
)
_SCHEMA_LOCK: Final = 0x6532655F636C7573  # advisory lock serializing the tables' creation
#: How long a destination remembers an applied outbox row after its origin cleared it: a
#: relay that took a row and stalls longer than this before applying it drops what it took
#: (see :meth:`OutboxRelay.apply`), so it can never apply a row twice.
APPLIED_SECONDS: Final = 24 * 3600
#: A relay applies what it took only within this many seconds of taking it.
_TAKE_FRESH: Final = APPLIED_SECONDS / 4
#: How long a sender's message id is remembered (as on one database, SPEC §10.8).
DEDUP_SECONDS: Final = 7 * 24 * 3600
#: Copies from another cluster were accepted by their home: they are counted in the
#: destination mailbox's usage (in all and from their sender) but never refused there.
_ADD_USAGE: Final = (
    " ON CONFLICT (account, device_id, sender) DO UPDATE"
    " SET messages = mailbox_usage.messages + excluded.messages,"
    " bytes = mailbox_usage.bytes + excluded.bytes"
)


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a submission: for one device's mailbox."""

    account: bytes
    device_id: int
    envelope: bytes = field(repr=False)
    tag: bytes


@dataclass(frozen=True, slots=True)
class Submission:
    """A submission as the router decides it: the sender's account and kind, the chat's
    other account, the message id and class, the copies, and the digest that identifies a
    retry of it (SHA-256 of the request, as :meth:`RelayService.prepare_submit` makes)."""

    sender: bytes
    sender_kind: int
    peer: bytes
    message_id: bytes
    cls: MessageClass
    copies: tuple[Copy, ...]
    digest: bytes

    @property
    def chat(self) -> tuple[bytes, bytes]:
        """(business, customer)."""
        if self.sender_kind == BUSINESS:
            return self.sender, self.peer
        return self.peer, self.sender


@dataclass(frozen=True, slots=True)
class ClusterReceipt:
    """An accepted submission: committed on ``home``; ``forwarded`` of its copies went to
    the outbox (0 for a retry answered from the de-duplication record)."""

    message_id: bytes
    received_at: int
    copies: int
    home: str
    forwarded: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    account: bytes
    device_id: int
    envelope: bytes
    received_at: int
    tag: bytes
    sender: bytes


class ClusterRouter:
    """One relay store per cluster of a placement map, opened on first use (a cluster down
    when the router starts costs only the requests that need it), and the routing of
    submissions, fetches and acknowledgements by account.

    ``opener`` makes a store from a cluster's DSN (:func:`e2e.relay.backends.open_store`).
    Every error of a cluster's store becomes :class:`~e2e.errors.StoreUnavailable`
    (retryable) naming the cluster; a refusal of the request itself passes through."""

    def __init__(
        self,
        pmap: PlacementMap,
        dsns: Mapping[str, str],
        opener: Callable[[str], RelayStore],
        quota: Quota,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = set(pmap.clusters) - set(dsns)
        if missing:
            raise ValueError(f"no DSN for clusters {sorted(missing)}")
        self.pmap = pmap
        self.dsns = dict(dsns)
        self.opener = opener
        self.quota = quota
        self.clock = clock
        self._stores: dict[str, RelayStore] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}

    # -- placement ------------------------------------------------------------------------

    def set_map(self, candidate: PlacementMap) -> None:
        """Put a newer map in force (:func:`~e2e.relay.placement.check_newer`); every
        cluster it names needs a DSN."""
        if set(candidate.clusters) - set(self.dsns):
            raise DecodeError("placement map names a cluster without a DSN")
        self.pmap = check_newer(self.pmap, candidate)

    def home(self, account: bytes) -> str:
        """The cluster holding ``account``."""
        return cluster_of(self.pmap, account)

    def moving(self, account: bytes) -> bool:
        return slot_of(self.pmap.seed, account) in self.pmap.moving

    def _writable(self, account: bytes) -> str:
        if self.moving(account):
            raise StoreUnavailable("account is being moved between clusters")
        return self.home(account)

    # -- stores ---------------------------------------------------------------------------

    def store(self, name: str) -> RelayStore:
        """The store of cluster ``name``, opened (with the cluster tables) if it is not. A
        cluster being opened (which may wait for its connection timeout if it is down) holds
        up only the requests that need it."""
        with self._lock:
            store = self._stores.get(name)
            if store is not None:
                return store
            opening = self._opening.setdefault(name, threading.Lock())
        with opening:
            with self._lock:
                store = self._stores.get(name)
            if store is not None:
                return store
            try:
                store = self.opener(self.dsns[name])
            except StoreError:
                raise StoreUnavailable(f"cluster {name} unavailable") from None
            try:
                with store.transaction() as tx:
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                    for stmt in CLUSTER_SCHEMA:
                        tx.execute(stmt)
            except StoreError:
                store.close()
                raise StoreUnavailable(f"cluster {name} unavailable") from None
            with self._lock:
                self._stores[name] = store
            return store

    def run(self, name: str, fn: Callable[[Tx], T]) -> T:
        """``fn`` in one transaction on cluster ``name``. Reads go this way too (through the
        store's writer connection, which is made again for each group after a failure): a
        pooled connection broken by an outage would fail once more after the cluster is back,
        and a pool with none waits for its timeout before refusing."""
        store = self.store(name)
        try:
            return store.run(fn)
        except StoreUnavailable:
            raise StoreUnavailable(f"cluster {name} unavailable") from None

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()

    # -- requests -------------------------------------------------------------------------

    def submit(self, sub: Submission) -> ClusterReceipt:
        """Decide and commit ``sub`` on its chat's home cluster (one transaction): the
        sender's retry of an accepted submission gets the same receipt and stores nothing;
        a reused message id is refused (``DuplicateSubmission``), as are a blocked sender
        (``Blocked``) and a full mailbox on the home (``MailboxFull``). Copies for mailboxes
        elsewhere (or in a slot being moved) go to the home's outbox in the same
        transaction. ``StoreUnavailable`` if the home is down or being moved: nothing was
        stored, unless the commit went through and only its answer was lost, which the
        sender's retry (the same submission) learns from the de-duplication record."""
        business, customer = sub.chat
        home = self._writable(customer)
        local: list[Copy] = []
        remote: list[Copy] = []
        for c in sub.copies:
            here = not self.moving(c.account) and self.home(c.account) == home
            (local if here else remote).append(c)
        now = int(self.clock())

        def decide(tx: Tx) -> ClusterReceipt:
            seen = tx.seen(sub.sender, sub.message_id)
            if seen is not None:
                if hmac.compare_digest(seen.digest, sub.digest):
                    return ClusterReceipt(sub.message_id, seen.received_at, seen.copies, home, 0)
                raise DuplicateSubmission("message id already used by this sender")
            tx.lock_chat(business, customer)
            chat = tx.chat(business, customer) or ChatState()
            if sub.sender_kind == BUSINESS:
                if chat.blocked:
                    raise Blocked("the customer blocked this business")
                chat.count("business", sub.cls)
            else:
                chat.check_customer_send()
                chat.count("customer", sub.cls)
            copies = [(c.account, c.device_id, len(c.envelope)) for c in local]
            if copies and not tx.reserve_mail(sub.sender, copies, self.quota):
                raise MailboxFull("a recipient's mailbox is full")
            tx.put_chat(business, customer, chat)
            for c in local:
                tx.insert_mail(c.account, c.device_id, c.envelope, now, c.tag, sub.sender)
                tx.notify(c.account, c.device_id)
            for c in remote:
                tx.write(
                    "INSERT INTO cluster_outbox (account, device_id, envelope, received_at,"
                    " tag, sender) VALUES (?, ?, ?, ?, ?, ?)",
                    (c.account, c.device_id, c.envelope, now, c.tag, sub.sender),
                )
            seen_now = SeenSubmission(sub.digest, now, len(sub.copies), 0, None)
            tx.insert_seen(sub.sender, sub.message_id, seen_now, now + DEDUP_SECONDS)
            return ClusterReceipt(sub.message_id, now, len(sub.copies), home, len(remote))

        return self.run(home, decide)

    def fetch(self, account: bytes, device_id: int, limit: int = 100) -> list[Mail]:
        """The device's oldest deliveries, from its account's cluster."""
        mail, _ = self.run(
            self.home(account),
            lambda tx: tx.fetch_mail(account, device_id, limit, 1 << 30),
        )
        return mail

    def ack(self, account: bytes, device_id: int, seqs: Sequence[int]) -> None:
        self.run(self._writable(account), lambda tx: tx.ack(account, device_id, seqs))

    def outbox_size(self, name: str) -> int:
        row = self.run(name, lambda tx: tx.fetchone("SELECT COUNT(*) FROM cluster_outbox"))
        return int(row[0]) if row else 0


def submission_digest(sender: bytes, message_id: bytes, copies: Iterable[Copy]) -> bytes:
    """A digest identifying a submission's content (for callers without a request body)."""
    h = hashlib.sha256(len(sender).to_bytes(2, "big") + sender + message_id)
    for c in copies:
        h.update(len(c.account).to_bytes(2, "big") + c.account + c.device_id.to_bytes(8, "big"))
        h.update(len(c.envelope).to_bytes(4, "big") + c.envelope + c.tag)
    return h.digest()


class OutboxRelay:
    """Moves one cluster's outbox rows to their mailboxes' clusters, in three steps that a
    kill may separate: :meth:`take` (read the oldest rows on the origin), :meth:`apply`
    (store each on its destination with its (origin, id) applied record, one transaction per
    destination, rows already applied skipped), :meth:`clear` (delete the delivered rows on
    the origin). :meth:`pump` runs the three. A destination that is down, or an account
    being moved, keeps its rows in the outbox for a later pump."""

    def __init__(self, router: ClusterRouter, origin: str, batch: int = 256) -> None:
        self.router = router
        self.origin = origin
        self.batch = batch
        self._taken_at = 0.0

    def take(self) -> list[OutboxRow]:
        """The origin's oldest outbox rows (up to ``batch``)."""
        rows = self.router.run(
            self.origin,
            lambda tx: tx.fetchall(
                "SELECT id, account, device_id, envelope, received_at, tag, sender"
                " FROM cluster_outbox ORDER BY id LIMIT ?",
                (self.batch,),
            ),
        )
        self._taken_at = time.monotonic()
        return [
            OutboxRow(
                int(r[0]), bytes(r[1]), int(r[2]), bytes(r[3]), int(r[4]), bytes(r[5]), bytes(r[6])
            )  # fmt: skip
            for r in rows
        ]

    def apply(self, rows: Sequence[OutboxRow]) -> tuple[list[OutboxRow], int]:
        """Store ``rows`` on their destinations: (the rows now on their destination, to be
        cleared; how many of them this call stored, the others having been stored before).
        Rows for a destination that is down or an account being moved are left out."""
        if time.monotonic() - self._taken_at > _TAKE_FRESH:
            return [], 0  # taken too long ago: take them again
        by_dest: dict[str, list[OutboxRow]] = {}
        for row in rows:
            if not self.router.moving(row.account):
                by_dest.setdefault(self.router.home(row.account), []).append(row)
        delivered: list[OutboxRow] = []
        stored = 0
        now = int(self.router.clock())
        for dest, part in sorted(by_dest.items()):
            try:
                stored += self.router.run(dest, partial(self._store, rows=part, now=now))
            except StoreUnavailable:
                continue
            delivered += part
        return delivered, stored

    def _store(self, tx: Tx, rows: Sequence[OutboxRow], now: int) -> int:
        fresh = {
            int(r[0])
            for r in tx.fetchall(
                "INSERT INTO cluster_applied (origin, outbox_id, account, at) VALUES "  # noqa: S608
                + ", ".join(["(?, ?, ?, ?)"] * len(rows))
                + " ON CONFLICT (origin, outbox_id) DO NOTHING RETURNING outbox_id",
                [v for r in rows for v in (self.origin, r.id, r.account, now)],
            )
        }
        new = [r for r in rows if r.id in fresh]
        usage: dict[tuple[bytes, int, bytes], list[int]] = {}
        for r in new:
            for who in (b"", r.sender):
                u = usage.setdefault((r.account, r.device_id, who), [0, 0])
                u[0] += 1
                u[1] += len(r.envelope)
        if usage:
            keys = sorted(usage)
            tx.write(
                "INSERT INTO mailbox_usage (account, device_id, sender, messages, bytes)"  # noqa: S608
                " VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * len(keys)) + _ADD_USAGE,
                [v for k in keys for v in (*k, *usage[k])],
            )
        for r in new:
            tx.insert_mail(r.account, r.device_id, r.envelope, r.received_at, r.tag, r.sender)
            tx.notify(r.account, r.device_id)
        return len(new)

    def clear(self, rows: Sequence[OutboxRow]) -> None:
        """Delete delivered rows from the origin's outbox."""
        if not rows:
            return
        ids = [r.id for r in rows]
        self.router.run(
            self.origin,
            lambda tx: tx.execute(
                "DELETE FROM cluster_outbox WHERE id IN"  # noqa: S608
                f" ({', '.join('?' * len(ids))})",
                ids,
            ),
        )

    def pump(self) -> int:
        """Take, apply and clear one batch; how many rows it stored on destinations."""
        rows = self.take()
        if not rows:
            return 0
        delivered, stored = self.apply(rows)
        self.clear(delivered)
        return stored

    def forget_applied(self, dest: str) -> int:
        """On ``dest``: drop the applied records of this origin that can no longer be
        needed (older than :data:`APPLIED_SECONDS` and below the origin's oldest row still
        in its outbox); how many."""
        row = self.router.run(
            self.origin, lambda tx: tx.fetchone("SELECT MIN(id) FROM cluster_outbox")
        )
        floor = None if row is None or row[0] is None else int(row[0])
        before = int(self.router.clock()) - APPLIED_SECONDS
        sql = "DELETE FROM cluster_applied WHERE origin = ? AND at < ?"
        params: list[Any] = [self.origin, before]
        if floor is not None:
            sql += " AND outbox_id < ?"
            params.append(floor)
        return int(self.router.run(dest, lambda tx: tx.execute(sql, params)).rowcount)
