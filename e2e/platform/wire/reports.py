"""Wire bodies of spam reports and class reports (SPEC.md §10.7, §10.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.platform.envelope import MAX_ENVELOPE_BYTES, MESSAGE_ID_LEN
from e2e.platform.wire.codec import Body, F, key

__all__ = ["SubmitReport", "ReportVerdict", "SubmitClassReport", "ClassVerdict"]

_MESSAGE_ID: Final = F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN)
_CLASS: Final = F(int, max_int=255)


@dataclass(frozen=True, slots=True)
class SubmitReport(Body):
    """``{1: report (SPEC §10.4), 2: block (0/1)}``; the caller must be the reporter's device."""

    report: bytes = key(1, F(bytes, 1, 6 * (MAX_ENVELOPE_BYTES + 4096)))
    block: bool = key(2, F(int, max_int=1))


@dataclass(frozen=True, slots=True)
class ReportVerdict(Body):
    """``{1: [message ids verified], 2: [their receive times], 3: [their classes],
    4?: [blob ids of reported attachments whose stored blob has the franked digest]}``."""

    message_ids: tuple[bytes, ...] = key(
        1, F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN, array=True, count=8)
    )
    received_at: tuple[int, ...] = key(2, F(int, array=True, count=8))
    classes: tuple[int, ...] = key(3, F(int, array=True, count=8, max_int=255))
    attachments: tuple[bytes, ...] = key(
        4, F(bytes, 16, 16, required=False, array=True, count=8), ()
    )


@dataclass(frozen=True, slots=True)
class SubmitClassReport(Body):
    """``{1: one report item (SPEC §10.4: delivery record, franking key, text)}``; the caller
    must be a device of the customer the message was delivered to."""

    item: bytes = key(1, F(bytes, 1, MAX_ENVELOPE_BYTES + 4096))


@dataclass(frozen=True, slots=True)
class ClassVerdict(Body):
    """``{1: message id, 2: declared class, 3: class of the content, 4: penalty unit price}``:
    the verified mismatch and the penalty line the business was billed."""

    message_id: bytes = key(1, _MESSAGE_ID)
    declared: int = key(2, _CLASS)
    content: int = key(3, _CLASS)
    price: int = key(4, F(int))
