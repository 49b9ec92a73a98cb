"""Message franking for spam reports (SPEC.md §10.4).

The sender draws a fresh 32-byte franking key ``fk`` per message, puts it inside the E2E
plaintext, and puts a commitment in the envelope::

    commitment = HMAC-SHA256(fk, "E2E_FRANK_COMMIT_v1" | ctx | text)
    ctx        = CBOR {0: 1, 1: class, 2: from account, 3: to account, 4: message id
                       [, 5: template id] [, 6: SHA-256(attachment pointer)]}

HMAC-SHA256 keyed by a random key is a committing MAC: finding a second (fk', text') with
the same commitment would need an HMAC-SHA256 collision. At delivery the relay binds the
commitment to the routing metadata and its receive time with a key only it holds::

    tag = HMAC-SHA256(relay key, "E2E_FRANK_TAG_v1" | CBOR {0: 1, 1: commitment,
          2: from account, 3: from device, 4: to account, 5: dest account, 6: dest device,
          7: message id, 8: class, 9: receive time [, 10: template id] [, 11: blob id]})

The receiving device checks the commitment against what it decrypted (else the message is
refused: a business cannot send unreportable messages). To report, the customer reveals
the delivery record, ``fk`` and the text of each reported message; the relay checks its tag
(so the metadata and commitment are what it really routed) and the commitment (so the text is
what the sender really committed to). It learns nothing about messages not reported.

An attachment message (SPEC §16) commits to its pointer (blob id, key, digest, ...) through
the context, and its envelope's blob id is in the tag. A report reveals the pointer with the
text; the relay then knows the pointer is the one the sender franked, and checks that the blob
it stores under that id has the pointer's digest: the reported attachment is the one sent.

A *class report* (:func:`verify_class_report`) uses the same opening for one message whose
content does not fit its declared class: the relay learns from its own tag and the commitment
that the business really declared this class (and template id) for this text, and runs the
same pure rule as the device (:func:`e2e.platform.policy.check_class`) to confirm the
mismatch before it penalizes the business.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final

from e2e.attachment.pointer import Pointer
from e2e.errors import E2EError, ReportRejected
from e2e.frame import Field, decode_map, encode_map
from e2e.platform.envelope import (
    ENVELOPE_VERSION,
    FRANKING_KEY_LEN,
    MAX_BODY_BYTES,
    Delivery,
    Envelope,
    Inner,
    check_account,
    check_attachment,
)
from e2e.platform.policy import ClassCheck, MessageClass, Template, check_class

__all__ = [
    "COMMIT_LABEL",
    "TAG_LABEL",
    "MAX_REPORTED",
    "commit",
    "commit_inner",
    "relay_tag",
    "ReportItem",
    "Report",
    "VerifiedMessage",
    "verify_item",
    "verify_class_report",
]

COMMIT_LABEL: Final = b"E2E_FRANK_COMMIT_v1"
TAG_LABEL: Final = b"E2E_FRANK_TAG_v1"
#: A report reveals at most this many messages: the last ones of the chat.
MAX_REPORTED: Final = 5


def _context(
    cls: MessageClass,
    from_account: bytes,
    to_account: bytes,
    message_id: bytes,
    template_id: bytes | None,
    attachment: bytes | None = None,
) -> bytes:
    fields: dict[int, int | bytes] = {
        0: 1, 1: int(cls), 2: from_account, 3: to_account, 4: message_id
    }  # fmt: skip
    if template_id is not None:
        fields[5] = template_id
    if attachment is not None:
        fields[6] = sha256(attachment).digest()
    return encode_map(fields)


def commit(
    franking_key: bytes,
    cls: MessageClass,
    from_account: bytes,
    to_account: bytes,
    message_id: bytes,
    body: bytes,
    template_id: bytes | None = None,
    attachment: bytes | None = None,
) -> bytes:
    """The sender's franking commitment to ``body`` and its context (class, template id,
    accounts, message id, and the SHA-256 of an attachment's pointer encoding)."""
    ctx = _context(cls, from_account, to_account, message_id, template_id, attachment)
    return hmac.new(franking_key, COMMIT_LABEL + ctx + body, sha256).digest()


def commit_inner(inner: Inner) -> bytes:
    """:func:`commit` of an inner message: what its envelopes carry and its recipient checks."""
    return commit(inner.franking_key, inner.cls, inner.from_account, inner.to_account,
                  inner.message_id, inner.body, inner.template_id, inner.attachment)  # fmt: skip


def relay_tag(key: bytes, env: Envelope, received_at: int) -> bytes:
    """The relay's franking tag over the commitment and the routing metadata."""
    fields: dict[int, int | bytes] = {
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
    if env.template_id is not None:
        fields[10] = env.template_id
    if env.blob_id is not None:
        fields[11] = env.blob_id
    meta = encode_map(fields)
    return hmac.new(key, TAG_LABEL + meta, sha256).digest()


_ITEM_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes, FRANKING_KEY_LEN),
    3: Field(bytes),
    4: Field(bytes, required=False),
}


@dataclass(frozen=True, slots=True, repr=False)
class ReportItem:
    """One revealed message: its delivery record, franking key, text and, for an attachment
    message, the attachment's pointer (which reveals its key)."""

    delivery: bytes
    franking_key: bytes
    body: bytes
    attachment: bytes | None = None

    def __repr__(self) -> str:
        return f"ReportItem({len(self.body)} B)"

    def to_bytes(self) -> bytes:
        fields: dict[int, int | bytes] = {
            0: ENVELOPE_VERSION, 1: self.delivery, 2: self.franking_key, 3: self.body
        }  # fmt: skip
        if self.attachment is not None:
            fields[4] = self.attachment
        return encode_map(fields)

    @classmethod
    def from_bytes(cls, raw: object) -> ReportItem:
        obj = decode_map(raw, _ITEM_SCHEMA, "report item", version=ENVELOPE_VERSION)
        if len(obj[3]) > MAX_BODY_BYTES:
            raise ReportRejected("reported text too long")
        return cls(obj[1], obj[2], obj[3], check_attachment(obj.get(4)))


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
    body: bytes = field(repr=False)
    template_id: bytes | None = None
    #: The attachment's pointer, franked with the message (None: no attachment).
    attachment: Pointer | None = field(default=None, repr=False)


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
        item.franking_key, env.cls, env.from_account, env.to_account, env.message_id, item.body,
        env.template_id, item.attachment,
    )  # fmt: skip
    if not hmac.compare_digest(expected, env.commitment):
        raise ReportRejected("franking commitment does not open to the revealed text")
    pointer = None if item.attachment is None else Pointer.from_bytes(item.attachment)
    if (None if pointer is None else pointer.blob_id) != env.blob_id:
        raise ReportRejected("the revealed attachment names another blob than the envelope")
    return VerifiedMessage(
        env.from_account, env.from_device, env.cls, delivery.received_at, env.message_id,
        item.body, env.template_id, pointer,
    )  # fmt: skip


def verify_class_report(
    key: bytes,
    item: ReportItem,
    reporter: bytes,
    business: bytes,
    templates: Mapping[bytes, Template],
    classify: Callable[[bytes], MessageClass | None] | None = None,
) -> tuple[VerifiedMessage, ClassCheck]:
    """Verify a report that one message's content does not fit its declared class.

    The franking is verified as for a spam report (:func:`verify_item`: the relay routed this
    message, declared as this class and template id, and the business committed to this
    text); then :func:`~e2e.platform.policy.check_class` with the business's registered
    ``templates`` (and the relay's optional ``classify``) must confirm the mismatch, else
    :class:`ReportRejected`. Returns the verified message and the verdict (its ``content`` is
    the class the business should have declared)."""
    verified = verify_item(key, item, reporter, business)
    verdict = check_class(verified.cls, verified.template_id, verified.body, templates, classify)
    if verdict.ok:
        raise ReportRejected("the reported message's content fits its declared class")
    return verified, verdict
