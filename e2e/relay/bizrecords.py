"""The relay store's records of the business platform (SPEC.md §17): catalogue templates,
the bill's categories, messaging tiers and quality events, ad entries. A mixin of
:class:`~e2e.relay.store.Tx`: the same SQL on both backends (the schema is the store's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["BusinessRecords"]


class BusinessRecords:
    """The business platform's statements, over the transaction's own ``execute``,
    ``fetchall``, ``fetchone`` and ``write``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError  # pragma: no cover - Tx's

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # pragma: no cover - Tx's

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        raise NotImplementedError  # pragma: no cover - Tx's

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError  # pragma: no cover - Tx's

    def insert_bill_category(self, business: bytes, message_id: bytes, category: int) -> None:
        """The catalogue category of a billed template message (SPEC §17.1)."""
        self.write(
            "INSERT INTO billing_category (business, message_id, category) VALUES (?, ?, ?)",
            (business, message_id, category),
        )

    def bill_categories(self, business: bytes) -> list[tuple[int, int, int, int]]:
        """(category, in window, count, unit price) of the billed catalogue templates."""
        rows = self.fetchall(
            "SELECT c.category, b.in_window, COUNT(*), b.price FROM billing b"
            " JOIN billing_category c ON c.business = b.business AND c.message_id = b.message_id"
            " WHERE b.business = ? GROUP BY c.category, b.in_window, b.price"
            " ORDER BY c.category, b.in_window, b.price",
            (business,),
        )
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def insert_catalogue(self, business: bytes, row: tuple[str, str, int, int, str, bytes, int,
                         str], at: int) -> None:  # fmt: skip
        """One template version: (name, language, version, category, text, parameter types,
        state, reason)."""
        self.execute(
            "INSERT INTO catalogue (business, name, language, version, category, text, params,"
            " state, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (business, *row, at),
        )

    def catalogue(self, business: bytes) -> list[tuple[str, str, int, int, str, bytes, int, str]]:
        """Every template version of ``business``, by (name, language, version)."""
        rows = self.fetchall(
            "SELECT name, language, version, category, text, params, state, reason"
            " FROM catalogue WHERE business = ? ORDER BY name, language, version",
            (business,),
        )
        return [(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7]) for r in rows]

    def catalogue_version(self, business: bytes, name: str, language: str,
                          version: int) -> tuple[int, int] | None:  # fmt: skip
        """(category, state) of one template version of ``business`` (None: no such one)."""
        row = self.fetchone(
            "SELECT category, state FROM catalogue WHERE business = ? AND name = ?"
            " AND language = ? AND version = ?",
            (business, name, language, version),
        )
        return None if row is None else (int(row[0]), int(row[1]))

    def set_catalogue_state(self, business: bytes, name: str, language: str, version: int,
                            state: int, reason: str) -> bool:  # fmt: skip
        """Set one version's review state; False if there is no such version."""
        cur = self.execute(
            "UPDATE catalogue SET state = ?, reason = ? WHERE business = ? AND name = ?"
            " AND language = ? AND version = ?",
            (state, reason, business, name, language, version),
        )
        return bool(cur.rowcount == 1)

    # -- messaging tiers (SPEC §17.3) ------------------------------------------------------

    def initiated_at(self, business: bytes, customer: bytes) -> int | None:
        """When ``business`` last started a conversation with ``customer`` (None: never)."""
        row = self.fetchone(
            "SELECT at FROM initiations WHERE business = ? AND customer = ?", (business, customer)
        )
        return None if row is None else int(row[0])

    def put_initiation(self, business: bytes, customer: bytes, at: int) -> None:
        self.write(
            "INSERT INTO initiations (business, customer, at) VALUES (?, ?, ?)"
            " ON CONFLICT (business, customer) DO UPDATE SET at = excluded.at",
            (business, customer, at),
        )

    def count_initiations(self, business: bytes, since: int) -> int:
        """Distinct customers ``business`` started a conversation with at or after ``since``."""
        row = self.fetchone(
            "SELECT COUNT(*) FROM initiations WHERE business = ? AND at >= ?", (business, since)
        )
        return int(row[0]) if row else 0

    def insert_quality_event(self, business: bytes, customer: bytes, kind: int, at: int) -> None:
        """A negative event (1 block, 2 spam report) of ``customer`` about ``business``."""
        self.write(
            "INSERT INTO quality_events (business, customer, kind, at) VALUES (?, ?, ?, ?)",
            (business, customer, kind, at),
        )

    def count_quality_events(self, business: bytes, since: int) -> int:
        row = self.fetchone(
            "SELECT COUNT(*) FROM quality_events WHERE business = ? AND at >= ?",
            (business, since),
        )
        return int(row[0]) if row else 0

    def messaging_tier(self, business: bytes) -> tuple[int, int] | None:
        """(level, when it was last evaluated) of ``business`` (None: never evaluated)."""
        row = self.fetchone(
            "SELECT level, evaluated FROM messaging_tiers WHERE business = ?", (business,)
        )
        return None if row is None else (int(row[0]), int(row[1]))

    def put_messaging_tier(self, business: bytes, level: int, evaluated: int) -> None:
        self.write(
            "INSERT INTO messaging_tiers (business, level, evaluated) VALUES (?, ?, ?)"
            " ON CONFLICT (business) DO UPDATE SET level = excluded.level,"
            " evaluated = excluded.evaluated",
            (business, level, evaluated),
        )

    # -- ad entry points (SPEC §17.4) -----------------------------------------------------

    def use_entry(self, token_id: bytes, business: bytes, ad_id: bytes, bucket: int) -> bool:
        """Record an entry token used for ``business``'s ad ``ad_id`` in time bucket
        ``bucket`` (no customer); False if the token was used before (a replay)."""
        row = self.fetchone(
            "INSERT INTO ad_entries (token_id, business, ad_id, bucket) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (token_id) DO NOTHING RETURNING 1",
            (token_id, business, ad_id, bucket),
        )
        return row is not None

    def entry_lines(self, business: bytes, limit: int) -> list[tuple[bytes, int]]:
        """(ad id, entries) of ``business``, by ad id, the first ``limit`` ads."""
        rows = self.fetchall(
            "SELECT ad_id, COUNT(*) FROM ad_entries WHERE business = ? GROUP BY ad_id"
            " ORDER BY ad_id LIMIT ?",
            (business, limit),
        )
        return [(bytes(r[0]), int(r[1])) for r in rows]

    def entries_after(self, after: int, limit: int) -> list[tuple[int, bytes, bytes, int]]:
        """(position, ad id, business, bucket) of the entries after position ``after``,
        oldest first, at most ``limit``."""
        rows = self.fetchall(
            "SELECT seq, ad_id, business, bucket FROM ad_entries WHERE seq > ? ORDER BY seq"
            " LIMIT ?",
            (after, limit),
        )
        return [(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    # -- notices to a business of its customers' controls and reports (SPEC §17.2) --------

    def insert_notice(self, business: bytes, customer: bytes, kind: int, value: int,
                      at: int) -> None:  # fmt: skip
        self.write(
            "INSERT INTO business_notices (business, customer, kind, value, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (business, customer, kind, value, at),
        )

    def notices_after(self, business: bytes, after: int,
                      limit: int) -> list[tuple[int, bytes, int, int, int]]:  # fmt: skip
        """(position, customer, kind, value, time) of ``business``'s notices after position
        ``after``, oldest first, at most ``limit``."""
        rows = self.fetchall(
            "SELECT seq, customer, kind, value, at FROM business_notices"
            " WHERE business = ? AND seq > ? ORDER BY seq LIMIT ?",
            (business, after, limit),
        )
        return [(int(r[0]), bytes(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]
