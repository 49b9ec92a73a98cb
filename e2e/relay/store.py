"""The relay store: everything the relay keeps, behind one transactional interface
(SPEC.md §10.8).

:class:`RelayStore` opens transactions; a :class:`Tx` reads and writes records. Every request
the relay serves runs its decision and its writes inside one transaction, so a refused request
(the transaction rolls back) leaves every record as it was, and on PostgreSQL several relay
processes share one database without lost updates (per-chat decision locks and unique keys,
retried on conflict).

The tables and the statements that are more than one line are :mod:`e2e.relay.schema`. The SQL
is shared by both backends (:mod:`e2e.relay.sqlite`, :mod:`e2e.relay.postgres`); a
backend supplies connections, the placeholder style and the one-time prekey claim statement.
What their writers share besides is :mod:`e2e.relay.writer`; :func:`e2e.relay.backends.open_store`
picks a backend. This module imports neither.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

from e2e.errors import UnknownAccount
from e2e.platform.policy import ChatState
from e2e.relay.bizrecords import BusinessRecords
from e2e.relay.schema import (
    BUCKET_VALUES,
    RESERVE_MAIL,
    RESERVE_ROW,
    TAKE_TOKEN,
    USE_NONCE,
    bucket_params,
)

__all__ = [
    "CHAT_ROW",
    "CUSTOMER",
    "BUSINESS",
    "Caller",
    "account_of",
    "Quota",
    "Account",
    "Mail",
    "SeenSubmission",
    "FrankingKey",
    "Tx",
    "RelayStore",
]

T = TypeVar("T")

#: An account's kind (``Account.kind``, wire ``RegisterAccount.kind``).
CUSTOMER: Final = 0
BUSINESS: Final = 1
#: A request's authenticated device: (account, device id).
Caller: TypeAlias = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class Account:
    name: bytes
    kind: int
    tier: int
    identity: bytes


@dataclass(frozen=True, slots=True)
class Mail:
    seq: int
    envelope: bytes
    received_at: int
    tag: bytes


@dataclass(frozen=True, slots=True)
class Quota:
    """What one device's mailbox may hold: in all, and from one sender account."""

    messages: int
    bytes: int
    sender_messages: int
    sender_bytes: int


@dataclass(frozen=True, slots=True)
class SeenSubmission:
    digest: bytes
    received_at: int
    copies: int
    price: int
    #: The accepted message's franking commitment (what a resend must carry, SPEC §10.11;
    #: None for a row written before the column existed).
    commitment: bytes | None = None


@dataclass(frozen=True, slots=True)
class FrankingKey:
    key_id: int
    secret: bytes = field(repr=False)
    created: int


#: A chat's row (:meth:`Tx.chat`): (business, customer).
CHAT_ROW: Final = (
    "SELECT last_customer_message, blocked, limited, opted_in, template_times,"
    " spam_reports, customer_count, business_count, blocked_customer,"
    " customer_receipts, business_receipts, entry_until FROM chats"
    " WHERE business = ? AND customer = ?"
)


def _times(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def account_of(tx: Tx, name: bytes) -> Account:
    """The account ``name`` (:class:`~e2e.errors.UnknownAccount` if there is none)."""
    acct = tx.account(name)
    if acct is None:
        raise UnknownAccount("unknown account")
    return acct


class Tx(BusinessRecords, abc.ABC):
    """One transaction's view of the relay's records."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    @abc.abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    def claim_prekey(self, account: bytes, device_id: int) -> bytes | None:
        """Mark the lowest unclaimed one-time prekey of the device claimed; its bundle."""

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement whose outcome the caller does not need. A backend may send it
        later, but in this transaction, before any other statement and before the request
        ends (its failure then fails the request); by default it runs at once."""
        self.execute(sql, params)

    def insert_mail(self, account: bytes, device_id: int, envelope: bytes, received_at: int,
                    tag: bytes, sender: bytes | None = None) -> None:  # fmt: skip
        """Append a delivery (its sequence number increases per store) from ``sender``'s
        account, which :meth:`reserve_mail` counted."""
        self.write(
            "INSERT INTO mailbox (account, device_id, envelope, received_at, tag, sender, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (account, device_id, envelope, received_at, tag, sender, len(envelope)),
        )

    def reserve_mail(self, sender: bytes, copies: Sequence[tuple[bytes, int, int]],
                     quota: Quota) -> bool:  # fmt: skip
        """Count ``copies`` ((account, device, bytes) each) from ``sender``'s account into
        their mailboxes' usage, in all and from that sender: True if each stays within
        ``quota``; False if one would not (the caller refuses the request, and its rollback
        undoes the counts). One statement, its rows in key order. A backend may instead
        answer True at once and check later in the same request, before it ends, refusing it
        then with :class:`~e2e.errors.MailboxFull` (the caller's refusal) and undoing it."""
        rows = sorted((a, d, who, n) for a, d, n in copies for who in (b"", sender))
        got = self.fetchall(
            RESERVE_MAIL.format(values=", ".join([RESERVE_ROW] * len(rows))),
            [v for r in rows for v in r]
            + [quota.messages, quota.sender_messages, quota.bytes, quota.sender_bytes],
        )
        return len(got) == len(rows)

    def _release_mail(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Uncount deleted deliveries, given as (account, device, sender, size) rows (rows
        stored before mailboxes were counted have no sender, and were never counted)."""
        totals: dict[tuple[bytes, int, bytes], list[int]] = {}
        for account, device_id, sender, size in rows:
            if sender is None:
                continue
            for who in (b"", bytes(sender)):
                t = totals.setdefault((bytes(account), device_id, who), [0, 0])
                t[0] += 1
                t[1] += int(size or 0)
        for (account, device_id, who), (n, size) in sorted(totals.items()):
            self.execute(
                "UPDATE mailbox_usage SET messages = messages - ?, bytes = bytes - ?"
                " WHERE account = ? AND device_id = ? AND sender = ?",
                (n, size, account, device_id, who),
            )
        for account, device_id in sorted({(a, d) for a, d, _ in totals}):
            self.execute(
                "DELETE FROM mailbox_usage WHERE account = ? AND device_id = ? AND messages <= 0",
                (account, device_id),
            )

    def mailbox_usage(self, account: bytes, device_id: int) -> tuple[int, int]:
        """(deliveries, bytes) counted in the device's mailbox."""
        row = self.fetchone(
            "SELECT messages, bytes FROM mailbox_usage WHERE account = ? AND device_id = ?"
            " AND sender = ?",
            (account, device_id, b""),
        )
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def lock_chat(self, business: bytes, customer: bytes) -> None:  # noqa: B027 - optional
        """Hold the chat's decision lock until the transaction ends (every decision on a chat
        takes it first, so decisions on one chat are serial). A no-op where every write
        transaction is serial anyway (SQLite)."""

    def notify(self, account: bytes, device_id: int) -> None:  # noqa: B027 - optional hook
        """Wake the waiters on this device's mailbox once the transaction commits."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    # -- accounts and devices ------------------------------------------------------------

    def account(self, name: bytes) -> Account | None:
        row = self.fetchone("SELECT kind, tier, identity FROM accounts WHERE name = ?", (name,))
        return None if row is None else Account(name, row[0], row[1], bytes(row[2]))

    def insert_account(self, acct: Account) -> None:
        self.execute(
            "INSERT INTO accounts (name, kind, tier, identity) VALUES (?, ?, ?, ?)",
            (acct.name, acct.kind, acct.tier, acct.identity),
        )

    def set_tier(self, name: bytes, tier: int) -> bool:
        """Set a business account's billing tier (the operator's); False if there is none."""
        row = self.fetchone("UPDATE accounts SET tier = ? WHERE name = ? AND kind = 1"
                            " RETURNING 1", (tier, name))  # fmt: skip
        return row is not None

    def accounts(self, *names: bytes) -> dict[bytes, Account]:
        """The named accounts that exist (one statement)."""
        rows = self.fetchall(
            "SELECT name, kind, tier, identity FROM accounts WHERE name IN"  # noqa: S608
            f" ({', '.join('?' * len(names))})",
            names,
        )
        return {bytes(r[0]): Account(bytes(r[0]), r[1], r[2], bytes(r[3])) for r in rows}

    def device_ids(self, *accounts: bytes) -> dict[bytes, set[int]]:
        """The registered device ids of each named account (one statement)."""
        rows = self.fetchall(
            "SELECT account, device_id FROM devices WHERE account IN"  # noqa: S608
            f" ({', '.join('?' * len(accounts))})",
            accounts,
        )
        out: dict[bytes, set[int]] = {a: set() for a in accounts}
        for account, device_id in rows:
            out[bytes(account)].add(device_id)
        return out

    def devices(self, account: bytes) -> dict[int, tuple[bytes, bytes]]:
        rows = self.fetchall(
            "SELECT device_id, certificate, identity FROM devices WHERE account = ?"
            " ORDER BY device_id",
            (account,),
        )
        return {r[0]: (bytes(r[1]), bytes(r[2])) for r in rows}

    def device_identity(self, account: bytes, device_id: int) -> bytes | None:
        row = self.fetchone(
            "SELECT identity FROM devices WHERE account = ? AND device_id = ?",
            (account, device_id),
        )
        return None if row is None else bytes(row[0])

    def put_device(self, account: bytes, device_id: int, certificate: bytes,
                   identity: bytes) -> None:  # fmt: skip
        self.execute(
            "INSERT INTO devices (account, device_id, certificate, identity) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account, device_id) DO UPDATE SET certificate = excluded.certificate,"
            " identity = excluded.identity",
            (account, device_id, certificate, identity),
        )

    def delete_device(self, account: bytes, device_id: int) -> None:
        for table in ("devices", "prekeys", "last_resort", "mailbox", "mailbox_usage"):
            self.execute(
                f"DELETE FROM {table} WHERE account = ? AND device_id = ?",  # noqa: S608
                (account, device_id),
            )
        for table in ("routes", "designated"):
            self.execute(
                f"DELETE FROM {table} WHERE business = ? AND device_id = ?",  # noqa: S608
                (account, device_id),
            )

    def device_list(self, account: bytes) -> bytes | None:
        """The account's signed device list in force (SPEC §10.1), if it has one."""
        row = self.fetchone("SELECT list FROM device_lists WHERE account = ?", (account,))
        return None if row is None else bytes(row[0])

    def put_device_list(self, account: bytes, version: int, raw: bytes) -> None:
        """Make ``raw`` (version ``version``) the account's device list in force."""
        self.execute(
            "INSERT INTO device_lists (account, version, list) VALUES (?, ?, ?)"
            " ON CONFLICT (account) DO UPDATE SET version = excluded.version,"
            " list = excluded.list",
            (account, version, raw),
        )

    def forget_account(self, account: bytes) -> None:
        """What a deleted account leaves besides its devices: routes and designations on
        either side, its recovery data."""
        self.execute("DELETE FROM routes WHERE business = ? OR customer = ?", (account, account))
        self.execute("DELETE FROM designated WHERE business = ?", (account,))
        self.execute("DELETE FROM recovery WHERE account = ?", (account,))

    # -- business routing (SPEC §10.10) --------------------------------------------------

    def route(self, business: bytes, customer: bytes) -> set[int]:
        """The devices assigned the chat (empty: no route)."""
        rows = self.fetchall(
            "SELECT device_id FROM routes WHERE business = ? AND customer = ?",
            (business, customer),
        )
        return {r[0] for r in rows}

    def set_route(self, business: bytes, customer: bytes, devices: Iterable[int]) -> None:
        self.execute("DELETE FROM routes WHERE business = ? AND customer = ?", (business, customer))
        for d in sorted(set(devices)):
            self.execute(
                "INSERT INTO routes (business, customer, device_id) VALUES (?, ?, ?)",
                (business, customer, d),
            )

    def designated(self, business: bytes) -> set[int]:
        rows = self.fetchall("SELECT device_id FROM designated WHERE business = ?", (business,))
        return {r[0] for r in rows}

    def set_designated(self, business: bytes, devices: Iterable[int]) -> None:
        self.execute("DELETE FROM designated WHERE business = ?", (business,))
        for d in sorted(set(devices)):
            self.execute(
                "INSERT INTO designated (business, device_id) VALUES (?, ?)", (business, d)
            )

    # -- prekeys -------------------------------------------------------------------------

    def insert_prekeys(self, account: bytes, device_id: int,
                       bundles: Sequence[tuple[int, bytes]]) -> int:  # fmt: skip
        """Pool one-time bundles, by prekey id; ids the device had before (claimed or not)
        are ignored. How many were new (one statement per hundred)."""
        added = 0
        for i in range(0, len(bundles), 100):
            part = bundles[i : i + 100]
            rows = self.fetchall(
                "INSERT INTO prekeys (account, device_id, prekey_id, bundle) VALUES "  # noqa: S608
                + ", ".join(["(?, ?, ?, ?)"] * len(part))
                + " ON CONFLICT (account, device_id, prekey_id) DO NOTHING RETURNING prekey_id",
                [v for prekey_id, bundle in part for v in (account, device_id, prekey_id, bundle)],
            )
            added += len(rows)
        return added

    def set_last_resort(self, account: bytes, device_id: int, bundle: bytes) -> None:
        self.execute(
            "INSERT INTO last_resort (account, device_id, bundle) VALUES (?, ?, ?)"
            " ON CONFLICT (account, device_id) DO UPDATE SET bundle = excluded.bundle",
            (account, device_id, bundle),
        )

    def last_resort(self, account: bytes, device_id: int) -> bytes | None:
        row = self.fetchone(
            "SELECT bundle FROM last_resort WHERE account = ? AND device_id = ?",
            (account, device_id),
        )
        return None if row is None else bytes(row[0])

    def count_prekeys(self, account: bytes, device_id: int) -> int:
        row = self.fetchone(
            "SELECT COUNT(*) FROM prekeys WHERE account = ? AND device_id = ? AND claimed = 0",
            (account, device_id),
        )
        return int(row[0]) if row else 0

    # -- submissions and mailboxes -------------------------------------------------------

    def seen(self, sender: bytes, message_id: bytes) -> SeenSubmission | None:
        row = self.fetchone(
            "SELECT digest, received_at, copies, price, commitment FROM submissions"
            " WHERE sender = ? AND message_id = ?",
            (sender, message_id),
        )
        if row is None:
            return None
        commitment = None if row[4] is None else bytes(row[4])
        return SeenSubmission(bytes(row[0]), row[1], row[2], row[3], commitment)

    def insert_seen(self, sender: bytes, message_id: bytes, seen: SeenSubmission,
                    expires: int) -> None:  # fmt: skip
        self.write(
            "INSERT INTO submissions (sender, message_id, digest, received_at, copies, price,"
            " expires, commitment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sender, message_id, seen.digest, seen.received_at, seen.copies, seen.price, expires,
             seen.commitment),
        )  # fmt: skip

    def fetch_mail(self, account: bytes, device_id: int, limit: int, budget: int,
                   each: int = 0) -> tuple[list[Mail], bool]:  # fmt: skip
        """The device's oldest deliveries: at most ``limit``, and as many as fit in ``budget``
        bytes counting ``each`` bytes besides each envelope, but always the first one; and
        whether more are waiting than these. The sizes are read first (``LENGTH`` of a stored
        blob reads no blob), then only the envelopes that fit."""
        sizes = self.fetchall(
            "SELECT seq, LENGTH(envelope) FROM mailbox WHERE account = ? AND device_id = ?"
            " ORDER BY seq LIMIT ?",
            (account, device_id, limit),
        )
        seqs: list[int] = []
        used = 0
        for seq, size in sizes:
            used += int(size) + each
            if seqs and used > budget:
                break
            seqs.append(seq)
        if not seqs:
            return [], False
        rows = self.fetchall(
            "SELECT seq, envelope, received_at, tag FROM mailbox WHERE account = ?"  # noqa: S608
            f" AND device_id = ? AND seq IN ({', '.join('?' * len(seqs))}) ORDER BY seq",
            (account, device_id, *seqs),
        )
        mail = [Mail(r[0], bytes(r[1]), r[2], bytes(r[3])) for r in rows]
        return mail, len(sizes) == limit or len(seqs) < len(sizes)

    def count_mail(self, account: bytes | None = None, device_id: int = 0) -> int:
        if account is None:
            row = self.fetchone("SELECT COUNT(*) FROM mailbox")
        else:
            row = self.fetchone(
                "SELECT COUNT(*) FROM mailbox WHERE account = ? AND device_id = ?",
                (account, device_id),
            )
        return int(row[0]) if row else 0

    def mail_since(self, seq: int | None) -> tuple[int, list[tuple[bytes, int]]]:
        """The highest delivery number now (never below ``seq``), and the devices with
        deliveries numbered above ``seq`` (none asked for when ``seq`` is None). On SQLite
        numbers only grow (``AUTOINCREMENT``) and commit in their order (writers take turns),
        so a caller that keeps the number it was told misses no delivery committed after it
        asked. Not so on PostgreSQL (a sequence's numbers commit in any order): it notifies."""
        row = self.fetchone("SELECT MAX(seq) FROM mailbox")
        top = int(row[0]) if row and row[0] is not None else 0
        if seq is not None and top <= seq:
            return seq, []  # nothing new (the highest may have been acknowledged since)
        if seq is None:
            return top, []
        rows = self.fetchall(
            "SELECT DISTINCT account, device_id FROM mailbox WHERE seq > ? AND seq <= ?",
            (seq, top),
        )
        return top, [(bytes(r[0]), int(r[1])) for r in rows]

    def ack(self, account: bytes, device_id: int, seqs: Sequence[int]) -> None:
        """Delete these deliveries of the device (unknown numbers are ignored) and uncount
        them (one statement, and one per sender of what was deleted)."""
        if not seqs:
            return
        rows = self.fetchall(
            "DELETE FROM mailbox WHERE account = ? AND device_id = ? AND seq IN"  # noqa: S608
            f" ({', '.join('?' * len(seqs))}) RETURNING account, device_id, sender, size",
            (account, device_id, *seqs),
        )
        self._release_mail(rows)

    def expire_mail(self, before: int, most: int = 1000) -> int:
        """Delete the oldest deliveries received before ``before`` (in sequence order, up to
        ``most``, stopping at the first newer one) and uncount them; how many."""
        rows = self.fetchall("SELECT seq, received_at FROM mailbox ORDER BY seq LIMIT ?", (most,))
        seqs = []
        for seq, received_at in rows:
            if received_at >= before:
                break
            seqs.append(seq)
        if not seqs:
            return 0
        gone = self.fetchall(
            "DELETE FROM mailbox WHERE seq IN"  # noqa: S608
            f" ({', '.join('?' * len(seqs))}) RETURNING account, device_id, sender, size",
            seqs,
        )
        self._release_mail(gone)
        return len(gone)

    # -- chats, billing, reports ---------------------------------------------------------

    def chat(self, business: bytes, customer: bytes) -> ChatState | None:
        row = self.fetchone(CHAT_ROW, (business, customer))
        if row is None:
            return None
        return ChatState(
            last_customer_message=row[0],
            blocked=bool(row[1]),
            limited=bool(row[2]),
            opted_in=bool(row[3]),
            template_times=_times(row[4]),
            spam_reports=row[5],
            counts={
                "customer": row[6],
                "business": row[7],
                "customer_receipts": row[9],
                "business_receipts": row[10],
            },  # fmt: skip
            blocked_customer=bool(row[8]),
            entry_until=row[11],
        )

    def put_chat(self, business: bytes, customer: bytes, chat: ChatState) -> None:
        self.write(
            "INSERT INTO chats (business, customer, last_customer_message, blocked, limited,"
            " opted_in, template_times, spam_reports, customer_count, business_count,"
            " blocked_customer, customer_receipts, business_receipts, entry_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (business, customer) DO UPDATE"
            " SET last_customer_message = excluded.last_customer_message,"
            " blocked = excluded.blocked, limited = excluded.limited,"
            " opted_in = excluded.opted_in, template_times = excluded.template_times,"
            " spam_reports = excluded.spam_reports, customer_count = excluded.customer_count,"
            " business_count = excluded.business_count,"
            " blocked_customer = excluded.blocked_customer,"
            " customer_receipts = excluded.customer_receipts,"
            " business_receipts = excluded.business_receipts,"
            " entry_until = excluded.entry_until",
            (
                business,
                customer,
                chat.last_customer_message,
                int(chat.blocked),
                int(chat.limited),
                int(chat.opted_in),
                ",".join(str(t) for t in chat.template_times),
                chat.spam_reports,
                chat.counts.get("customer", 0),
                chat.counts.get("business", 0),
                int(chat.blocked_customer),
                chat.counts.get("customer_receipts", 0),
                chat.counts.get("business_receipts", 0),
                chat.entry_until,
            ),
        )

    def insert_bill(self, business: bytes, message_id: bytes, cls: int, in_window: bool,
                    price: int, at: int) -> None:  # fmt: skip
        self.write(
            "INSERT INTO billing (business, message_id, cls, in_window, price, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (business, message_id, cls, int(in_window), price, at),
        )

    def bill(self, business: bytes) -> list[tuple[int, int, int, int]]:
        """(class, in window, count, unit price) per line, ascending."""
        return self._lines("billing", "cls", "in_window", business)

    def _lines(
        self, table: str, a: str, b: str, business: bytes
    ) -> list[tuple[int, int, int, int]]:
        """``(a, b, count, price)`` of ``table``'s rows of ``business``, grouped, ascending."""
        rows = self.fetchall(
            f"SELECT {a}, {b}, COUNT(*), price FROM {table} WHERE business = ?"  # noqa: S608
            f" GROUP BY {a}, {b}, price ORDER BY {a}, {b}, price",
            (business,),
        )
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def insert_report(self, reporter: bytes, business: bytes, at: int, messages: int,
                      report: bytes) -> None:  # fmt: skip
        self.execute(
            "INSERT INTO reports (reporter, business, at, messages, report) VALUES (?, ?, ?, ?, ?)",
            (reporter, business, at, messages, report),
        )

    def mark_reported(self, business: bytes, customer: bytes, ids: Sequence[bytes]) -> int:
        """Record that the customer reported these messages of the business; how many it had
        not reported before."""
        new = 0
        for message_id in ids:
            row = self.fetchone(
                "INSERT INTO reported (business, customer, message_id) VALUES (?, ?, ?)"
                " ON CONFLICT (business, customer, message_id) DO NOTHING RETURNING 1",
                (business, customer, message_id),
            )
            new += row is not None
        return new

    def insert_template(self, business: bytes, template_id: bytes, cls: int,
                        text_hash: bytes, at: int = 0) -> bool:  # fmt: skip
        """Register a template at time ``at``; False (nothing written) if the id is already
        registered."""
        cur = self.execute(
            "INSERT INTO templates (business, template_id, cls, text_hash, registered_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (business, template_id, cls, text_hash, at),
        )
        return bool(cur.rowcount == 1)

    def templates(self, business: bytes, at: int | None = None) -> list[tuple[bytes, int, bytes]]:
        """(template id, class, text hash) of ``business``'s registered templates (only those
        registered at or before time ``at``, if given)."""
        sql = "SELECT template_id, cls, text_hash FROM templates WHERE business = ?"
        if at is not None:
            sql += " AND registered_at <= ?"
        rows = self.fetchall(sql, (business,) if at is None else (business, at))
        return [(bytes(r[0]), r[1], bytes(r[2])) for r in rows]

    def insert_penalty(self, business: bytes, message_id: bytes, declared: int, content: int,
                       price: int, at: int, reporter: bytes) -> bool:  # fmt: skip
        """One penalty line per (business, message id); False (nothing written) if there is."""
        cur = self.execute(
            "INSERT INTO penalties (business, message_id, declared, content, price, at, reporter)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (business, message_id, declared, content, price, at, reporter),
        )
        return bool(cur.rowcount == 1)

    def penalties(self, business: bytes) -> list[tuple[int, int, int, int]]:
        """(declared class, content class, count, unit price) per penalty line, ascending."""
        return self._lines("penalties", "declared", "content", business)

    # -- franking keys, nonces, retention ------------------------------------------------

    def franking_keys(self) -> list[FrankingKey]:
        """Keys not retired, newest first."""
        rows = self.fetchall(
            "SELECT key_id, secret, created FROM franking_keys WHERE retired IS NULL"
            " ORDER BY key_id DESC"
        )
        return [FrankingKey(r[0], bytes(r[1]), r[2]) for r in rows]

    def insert_franking_key(self, key: FrankingKey) -> None:
        self.execute(
            "INSERT INTO franking_keys (key_id, secret, created) VALUES (?, ?, ?)",
            (key.key_id, key.secret, key.created),
        )

    def retire_franking_key(self, key_id: int, now: int) -> None:
        """Retired keys are erased: reports on messages tagged with them no longer verify."""
        self.execute(
            "UPDATE franking_keys SET retired = ?, secret = NULL WHERE key_id = ?",
            (now, key_id),
        )

    def reseal_franking_key(self, key_id: int, stored: bytes) -> None:
        """Replace a key's stored secret by ``stored`` (the same secret, now sealed)."""
        self.execute("UPDATE franking_keys SET secret = ? WHERE key_id = ?", (stored, key_id))

    def max_franking_key_id(self) -> int:
        row = self.fetchone("SELECT MAX(key_id) FROM franking_keys")
        return int(row[0]) if row and row[0] is not None else 0

    def use_nonce(self, account: bytes, device_id: int, nonce: bytes, expires: int) -> bool:
        """Record a request nonce; False if it was already used (a replay)."""
        row = self.fetchone(USE_NONCE, (account, device_id, nonce, expires))
        return row is not None

    def take_token(self, account: bytes, device_id: int, now: float, rate: float,
                   burst: float, want: int = 1) -> int:  # fmt: skip
        """Take up to ``want`` requests (1 ≤ ``want`` ≤ ``burst``) from the device's token
        bucket (``rate`` per second, up to ``burst``, refilled from the time of its last take
        to ``now``, Unix seconds); how many were taken. The bucket is a row, so every relay
        process on the database shares it. 0, and nothing changed, if it holds less than one
        request; else ``want`` if it holds that many, else 1."""
        row = self.fetchone(TAKE_TOKEN.format(source=BUCKET_VALUES),
                            bucket_params(account, device_id, now, rate, burst, want))  # fmt: skip
        return 0 if row is None else int(row[0])

    def admit(self, account: bytes, device_id: int, nonce: bytes, expires: int, now: float,
              rate: float, burst: float, want: int) -> tuple[int, bool]:  # fmt: skip
        """:meth:`take_token` (none if ``want`` is 0: the request spends a token its relay
        process took before), then :meth:`use_nonce`: (tokens taken, nonce fresh). The
        caller refuses the request (rolls back) if ``want`` was not 0 and none was taken, or
        the nonce is not fresh. A backend may answer the nonce fresh at once and check it
        later in the same request, refusing it then with :class:`~e2e.errors.Unauthenticated`
        (the caller's refusal of a replay) and undoing it."""
        taken = self.take_token(account, device_id, now, rate, burst, want) if want else 0
        if want and not taken:
            return 0, True
        return taken, self.use_nonce(account, device_id, nonce, expires)

    def purge_rate_buckets(self, now: float) -> None:
        """Drop the buckets that have refilled (a full bucket is the same as none)."""
        self.execute("DELETE FROM rate_buckets WHERE at + burst / rate < ?", (now,))

    # -- key directory (SPEC §13.4) ------------------------------------------------------

    def log_size(self) -> int:
        row = self.fetchone("SELECT COUNT(*) FROM key_log")
        return int(row[0]) if row else 0

    def log_entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``start .. end-1`` of the key log, in order."""
        rows = self.fetchall(
            "SELECT entry FROM key_log WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        )
        return [bytes(r[0]) for r in rows]

    def log_version(self, account: bytes) -> int:
        """The account's newest key-log version (0: none)."""
        row = self.fetchone("SELECT MAX(version) FROM key_log WHERE account = ?", (account,))
        return int(row[0]) if row and row[0] is not None else 0

    def append_log(self, account: bytes, version: int, entry: bytes) -> int:
        """Append one entry; its index."""
        idx = self.log_size()
        self.execute(
            "INSERT INTO key_log (idx, account, version, entry) VALUES (?, ?, ?, ?)",
            (idx, account, version, entry),
        )
        return idx

    def business_certificate(self, account: bytes) -> bytes | None:
        """The platform's certificate of business ``account`` (SPEC §13.3), if stored."""
        row = self.fetchone("SELECT certificate FROM business_certs WHERE account = ?", (account,))
        return None if row is None else bytes(row[0])

    def put_business_certificate(self, account: bytes, certificate: bytes) -> None:
        """Store (or replace) the certificate of business ``account``."""
        self.execute(
            "INSERT INTO business_certs (account, certificate) VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET certificate = excluded.certificate",
            (account, certificate),
        )

    def log_secret(self, slot: int = 1) -> bytes | None:
        """A key of the key directory as stored (slot 1: the log key, 2: the VRF key)."""
        row = self.fetchone("SELECT secret FROM log_keys WHERE id = ?", (slot,))
        return None if row is None else bytes(row[0])

    def replace_log_secret(self, stored: bytes, slot: int = 1) -> None:
        """Replace a stored key by ``stored`` (the same key, now sealed)."""
        self.execute("UPDATE log_keys SET secret = ? WHERE id = ?", (stored, slot))

    def set_log_secret(self, secret: bytes, slot: int = 1) -> None:
        self.execute(
            "INSERT INTO log_keys (id, secret) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            (slot, secret),
        )

    def purge(self, now: int) -> None:
        """Drop expired nonces, de-duplication records and provisioning grants."""
        self.execute("DELETE FROM auth_nonces WHERE expires < ?", (now,))
        self.execute("DELETE FROM submissions WHERE expires < ?", (now,))
        self.execute("DELETE FROM provisioning WHERE expires < ?", (now,))
        week = now - 7 * 24 * 3600  # what messaging tiers look back on (SPEC §17.3)
        self.execute("DELETE FROM initiations WHERE at < ?", (week,))
        self.execute("DELETE FROM quality_events WHERE at < ?", (week,))
        self.execute("DELETE FROM business_notices WHERE at < ?", (week,))


class RelayStore(abc.ABC):
    """A relay store backend."""

    #: True if waiters in other processes are woken by the database itself.
    cross_process_wakeups: bool = False

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A read-write transaction: committed durably on normal exit, rolled back on error."""

    def run(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one transaction, retrying it when the database reports a conflict."""
        with self.transaction() as tx:
            return fn(tx)

    async def run_async(self, fn: Callable[[Tx], T], executor: Executor | None = None,
                        key: bytes | None = None) -> T:  # fmt: skip
        """:meth:`run` for a coroutine: by default on a thread of ``executor``. A backend
        with a writer thread of its own hands ``fn`` to it and blocks no thread. ``key`` is a
        hint: a backend with several writers runs requests of one key on one writer (a
        submission's is its recipient account, whose mailbox counts every copy)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.run, fn)

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run a read-only ``fn`` (it must not write); by default as :meth:`run`."""
        return self.run(fn)

    def listen(self, wake: Callable[[Sequence[tuple[bytes, int]]], None]) -> None:  # noqa: B027
        """Call ``wake([(account, device), ...])`` when mail is delivered: by this process's
        own transactions, and by other processes' if the backend can tell (any thread)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def ping(self) -> None:
        self.read(lambda tx: tx.fetchone("SELECT 1"))
