"""The ad service: sees only the per-chat metadata the relay shares (SPEC.md §8.5).

For each (business, customer) chat the relay shares: marketing opt-in, whether the 24 h window
is open, block and limit flags, message counts and spam-report count - never an envelope,
a frame or a key. Every byte received is recorded. The audience for a business's marketing
is the customers who opted in and neither blocked nor limited it; the relay enforces the same
rule again on every marketing send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.frame import Field, decode_map
from e2e.platform.envelope import check_account
from e2e.platform.relay import AdSink, Recorder

__all__ = ["ChatView", "AdService"]

_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    3: Field(int, max_int=1),
    4: Field(int, max_int=1),
    5: Field(int, max_int=1),
    6: Field(int, max_int=1),
    7: Field(int, max_int=2**63 - 1),
    8: Field(int, max_int=2**63 - 1),
    9: Field(int, max_int=2**63 - 1),
}


@dataclass(frozen=True, slots=True)
class ChatView:
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


class AdService(AdSink):
    def __init__(self) -> None:
        self.recorder = Recorder()
        self._chats: dict[tuple[bytes, bytes], ChatView] = {}

    def receive(self, data: bytes) -> None:
        self.recorder("recv:share", data)
        obj = decode_map(data, _SCHEMA, "chat share", 1024, 1)
        view = ChatView(
            check_account(obj[1]),
            check_account(obj[2]),
            bool(obj[3]),
            bool(obj[4]),
            bool(obj[5]),
            bool(obj[6]),
            obj[7],
            obj[8],
            obj[9],
        )
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
