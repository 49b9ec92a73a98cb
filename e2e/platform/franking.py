"""Message franking for spam reports (SPEC.md §8.4).

The sender draws a fresh 32-byte franking key ``fk`` per message, puts it inside the E2E
plaintext, and puts a commitment in the envelope::

    commitment = HMAC-SHA256(fk, "E2E_FRANK_COMMIT_v1" | ctx | text)
    ctx        = CBOR {0: 1, 1: class, 2: from account, 3: to account, 4: message id}

HMAC-SHA256 keyed by a random key is a committing MAC: finding a second (fk', text') with
the same commitment would need an HMAC-SHA256 collision. At delivery the relay binds the
commitment to the routing metadata and its receive time with a key only it holds::

    tag = HMAC-SHA256(relay key, "E2E_FRANK_TAG_v1" | CBOR {0: 1, 1: commitment,
          2: from account, 3: from device, 4: to account, 5: dest account, 6: dest device,
          7: message id, 8: class, 9: receive time})

The receiving device checks the commitment against what it decrypted (else the message is
refused: a business cannot send unreportable messages). To report, the customer reveals
the delivery record, ``fk`` and the text of each reported message; the relay checks its tag
(so the metadata and commitment are what it really routed) and the commitment (so the text is
what the sender really committed to). It learns nothing about messages not reported.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from hashlib import sha256
from typing import Final

from e2e.errors import E2EError
from e2e.frame import Field, decode_map, encode_map
from e2e.platform.envelope import (
    ENVELOPE_VERSION,
    FRANKING_KEY_LEN,
    MAX_BODY_BYTES,
    Delivery,
    Envelope,
    check_account,
)
from e2e.platform.policy import MessageClass, ReportRejected

__all__ = [
    "COMMIT_LABEL",
    "TAG_LABEL",
    "MAX_REPORTED",
    "commit",
    "relay_tag",
    "ReportItem",
    "Report",
    "VerifiedMessage",
    "verify_item",
]

COMMIT_LABEL: Final = b"E2E_FRANK_COMMIT_v1"
TAG_LABEL: Final = b"E2E_FRANK_TAG_v1"
#: A report reveals at most this many messages: the last ones of the chat.
MAX_REPORTED: Final = 5


def _context(cls: MessageClass, from_account: bytes, to_account: bytes, message_id: bytes) -> bytes:
    return encode_map({0: 1, 1: int(cls), 2: from_account, 3: to_account, 4: message_id})


def commit(
    franking_key: bytes,
    cls: MessageClass,
    from_account: bytes,
    to_account: bytes,
    message_id: bytes,
    body: bytes,
) -> bytes:
    """The sender's franking commitment to ``body`` and its context."""
    ctx = _context(cls, from_account, to_account, message_id)
    return hmac.new(franking_key, COMMIT_LABEL + ctx + body, sha256).digest()


def relay_tag(key: bytes, env: Envelope, received_at: int) -> bytes:
    """The relay's franking tag over the commitment and the routing metadata."""
    meta = encode_map(
        {
            0: 1,
            1: env.commitment,
            2: env.from_account,
            3: env.from_device,
            4: env.to_account,
            5: env.dest_account,
            6: env.dest_device,
            7: env.message_id,
            8: int(env.cls),
            9: received_at,
        }
    )
    return hmac.new(key, TAG_LABEL + meta, sha256).digest()


_ITEM_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes, FRANKING_KEY_LEN),
    3: Field(bytes),
}


@dataclass(frozen=True, slots=True, repr=False)
class ReportItem:
    """One revealed message: its delivery record, franking key and text."""

    delivery: bytes
    franking_key: bytes
    body: bytes

    def __repr__(self) -> str:
        return f"ReportItem({len(self.body)} B)"

    def to_bytes(self) -> bytes:
        return encode_map(
            {0: ENVELOPE_VERSION, 1: self.delivery, 2: self.franking_key, 3: self.body}
        )

    @classmethod
    def from_bytes(cls, raw: object) -> ReportItem:
        obj = decode_map(raw, _ITEM_SCHEMA, "report item", version=ENVELOPE_VERSION)
        if len(obj[3]) > MAX_BODY_BYTES:
            raise ReportRejected("reported text too long")
        return cls(obj[1], obj[2], obj[3])


_REPORT_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes),
    **{3 + i: Field(bytes, required=False) for i in range(MAX_REPORTED)},
}


@dataclass(frozen=True, slots=True)
class Report:
    """A customer's spam report against a business: 1 to 5 revealed messages."""

    reporter: bytes
    business: bytes
    items: tuple[ReportItem, ...]

    def to_bytes(self) -> bytes:
        fields: dict[int, int | bytes] = {0: ENVELOPE_VERSION, 1: self.reporter, 2: self.business}
        for i, item in enumerate(self.items):
            fields[3 + i] = item.to_bytes()
        return encode_map(fields)

    @classmethod
    def from_bytes(cls, raw: object) -> Report:
        obj = decode_map(raw, _REPORT_SCHEMA, "report", version=ENVELOPE_VERSION)
        count = len(obj) - 3
        if count < 1 or any(3 + i not in obj for i in range(count)):
            raise ReportRejected("a report reveals 1 to 5 messages, numbered from the first")
        return cls(
            check_account(obj[1]),
            check_account(obj[2]),
            tuple(ReportItem.from_bytes(obj[3 + i]) for i in range(count)),
        )


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """A reported message the relay has verified the business really sent."""

    from_account: bytes
    from_device: int
    cls: MessageClass
    received_at: int
    message_id: bytes
    body: bytes


def verify_item(key: bytes, item: ReportItem, reporter: bytes, business: bytes) -> VerifiedMessage:
    """Check one revealed message; :class:`ReportRejected` unless both MACs verify."""
    try:
        delivery = Delivery.from_bytes(item.delivery)
        env = delivery.open_envelope()
    except E2EError:
        raise ReportRejected("reported delivery record is malformed") from None
    if env.dest_account != reporter or env.to_account != reporter:
        raise ReportRejected("reported message was not delivered to the reporter")
    if env.from_account != business:
        raise ReportRejected("reported message is not from the reported business")
    if not hmac.compare_digest(relay_tag(key, env, delivery.received_at), delivery.tag):
        raise ReportRejected("franking tag does not verify: not a message the relay routed")
    expected = commit(
        item.franking_key, env.cls, env.from_account, env.to_account, env.message_id, item.body
    )
    if not hmac.compare_digest(expected, env.commitment):
        raise ReportRejected("franking commitment does not open to the revealed text")
    return VerifiedMessage(
        env.from_account, env.from_device, env.cls, delivery.received_at, env.message_id, item.body
    )
