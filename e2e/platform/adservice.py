"""The ad service: sees only the per-chat metadata the relay shares (SPEC.md §10.5), and
the conversions of its ads' entry points (SPEC §17.4).

For each (business, customer) chat the relay shares a :class:`ChatView` on every change:
marketing opt-in, whether the 24 h window is open, block and limit flags, message counts and
spam-report count - never an envelope, a frame or a key. This module owns that record's
format both ways (the relay encodes it, the ad service decodes it). The audience for a
business's marketing is the customers who opted in and neither blocked nor limited it; the
relay enforces the same rule again on every marketing send.

Ads open entry windows (SPEC §17.4): the ad service signs an entry token for each tap on an ad
(:meth:`AdService.issue_entry`, with its :class:`~e2e.platform.adentry.EntryKey`, whose public
half the relay is configured with); the customer's device presents it with its first message
to the business; the relay reports back only which ad led to a chat with which business in
which hour (:meth:`AdService.receive_conversions`), never the customer or the content.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from e2e.frame import Field, decode_map, encode_map
from e2e.platform.adentry import Conversion, Conversions, EntryKey
from e2e.platform.envelope import check_account
from e2e.platform.policy import ChatState, PolicyConfig

__all__ = ["ChatView", "AdService", "ENTRY_TOKEN_SECONDS"]

_MAX_COUNT: Final = 2**63 - 1
#: How long an entry token the ad service issues stays valid (a tap is answered soon).
ENTRY_TOKEN_SECONDS: Final = 24 * 3600
_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    3: Field(int, max_int=1),
    4: Field(int, max_int=1),
    5: Field(int, max_int=1),
    6: Field(int, max_int=1),
    7: Field(int, max_int=_MAX_COUNT),
    8: Field(int, max_int=_MAX_COUNT),
    9: Field(int, max_int=_MAX_COUNT),
}


@dataclass(frozen=True, slots=True)
class ChatView:
    """What the ad service learns of one chat: ``{0: 1, 1: business, 2: customer, 3: opted
    in, 4: window open, 5: blocked, 6: limited, 7: customer messages, 8: business messages,
    9: spam reports}`` (canonical CBOR, SPEC §5.1)."""

    business: bytes
    customer: bytes
    opted_in: bool
    window_open: bool
    blocked: bool
    limited: bool
    customer_messages: int
    business_messages: int
    spam_reports: int

    @property
    def marketable(self) -> bool:
        return self.opted_in and not self.blocked and not self.limited

    @classmethod
    def of(cls, business: bytes, customer: bytes, chat: ChatState, now: int,
           config: PolicyConfig) -> ChatView:  # fmt: skip
        """The view of a chat the relay holds, at time ``now``."""
        return cls(business, customer, chat.opted_in, chat.window_open(now, config),
                   chat.blocked, chat.limited, chat.counts.get("customer", 0),
                   chat.counts.get("business", 0), chat.spam_reports)  # fmt: skip

    def to_bytes(self) -> bytes:
        return encode_map({0: 1, 1: self.business, 2: self.customer, 3: int(self.opted_in),
                           4: int(self.window_open), 5: int(self.blocked), 6: int(self.limited),
                           7: self.customer_messages, 8: self.business_messages,
                           9: self.spam_reports})  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> ChatView:
        """Strictly decode a shared chat record (:class:`~e2e.errors.DecodeError`)."""
        obj = decode_map(data, _SCHEMA, "chat share", 1024, 1)
        return cls(check_account(obj[1]), check_account(obj[2]), bool(obj[3]), bool(obj[4]),
                   bool(obj[5]), bool(obj[6]), obj[7], obj[8], obj[9])  # fmt: skip


@dataclass
class AdService:
    """The ad service: every record the relay shared with it (:attr:`records`, in order, as
    received) and the newest view of each chat; the key it signs entry tokens with and the
    conversions the relay reported (:attr:`conversion_records`, as received)."""

    records: list[bytes] = field(default_factory=list)
    _chats: dict[tuple[bytes, bytes], ChatView] = field(default_factory=dict)
    entry_key: EntryKey = field(default_factory=EntryKey.generate)
    conversion_records: list[bytes] = field(default_factory=list)
    #: The position to ask the relay's conversions after (``GET /v1/ads/conversions``).
    cursor: int = 0
    _converted: Counter[tuple[bytes, bytes]] = field(default_factory=Counter)

    def issue_entry(self, ad_id: bytes, business: bytes, now: int,
                    seconds: int = ENTRY_TOKEN_SECONDS) -> bytes:  # fmt: skip
        """The entry token of one tap on ad ``ad_id`` of ``business`` (given to the
        customer's device, which presents it with its message to the business)."""
        return self.entry_key.issue(ad_id, business, now + seconds).to_bytes()

    def receive_conversions(self, data: bytes) -> int:
        """The relay's answer to ``GET /v1/ads/conversions?after=<cursor>``: its records are
        kept and counted, the cursor moves on; how many it held."""
        got = Conversions.from_bytes(data)
        for raw in got.records:
            c = Conversion.from_bytes(raw)
            self.conversion_records.append(raw)
            self._converted[(c.business, c.ad_id)] += 1
        self.cursor = max(self.cursor, got.cursor)
        return len(got.records)

    def conversions(self, business: bytes) -> dict[bytes, int]:
        """Chats each of ``business``'s ads led to, by ad id."""
        return {ad: n for (b, ad), n in sorted(self._converted.items()) if b == business}

    def receive(self, data: bytes) -> None:
        """One shared record (the relay's ``share`` callback)."""
        self.records.append(bytes(data))
        view = ChatView.from_bytes(data)
        self._chats[(view.business, view.customer)] = view

    def audience(self, business: bytes) -> list[bytes]:
        """Customers a business may send marketing to, sorted."""
        return sorted(c for (b, c), v in self._chats.items() if b == business and v.marketable)

    def view(self, business: bytes, customer: bytes) -> ChatView | None:
        return self._chats.get((business, customer))

    def stats(self, business: bytes) -> dict[str, int]:
        views = [v for (b, _), v in self._chats.items() if b == business]
        return {
            "chats": len(views),
            "open_windows": sum(v.window_open for v in views),
            "opted_in": sum(v.opted_in for v in views),
            "marketable": sum(v.marketable for v in views),
            "customer_messages": sum(v.customer_messages for v in views),
            "business_messages": sum(v.business_messages for v in views),
        }
