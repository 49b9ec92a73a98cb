"""The values a client device keeps in its store, and their record encodings (SPEC.md §10.10).

Values are canonical CBOR maps with small integer keys. A record that does not decode as its
kind is a :class:`~e2e.errors.StoreError` naming the record, never a crash. Account names in
record keys are percent-encoded (:func:`q`), so no name can reach into another's records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import cbor2

from e2e.errors import DecodeError, StoreError
from e2e.platform.envelope import MESSAGE_ID_LEN
from e2e.platform.policy import ClassCheck, MessageClass
from e2e.platform.templates import TemplateContent, parse_ref
from e2e.store import Address, StoreTransaction
from e2e.suite import DEFAULT, Suite

__all__ = [
    "ReceiptStatus",
    "Profile",
    "Message",
    "Receipt",
    "dump",
    "load",
    "load_fields",
    "q",
    "receipt_body",
    "retry_body",
    "parse_receipt",
    "check_to_obj",
    "check_from_obj",
    "MAX_RECEIPT_IDS",
]

#: Most message ids one receipt (or retry request) names.
#: Most message ids one receipt carries (a receipt's envelope is small: SPEC §10.13).
MAX_RECEIPT_IDS: Final = 100


class ReceiptStatus:
    """Receipt kinds, carried in a receipt's body and kept per message (higher wins).
    ``RETRY`` is not a status: a receipt of that kind is a retry request (SPEC §10.11)."""

    SENT: Final = 0
    DELIVERED: Final = 1
    READ: Final = 2
    RETRY: Final = 3


def dump(obj: object) -> bytes:
    """Canonical CBOR."""
    return cbor2.dumps(obj, canonical=True)


def load(raw: bytes, what: str) -> Any:
    """Decode a record; :class:`StoreError` naming ``what`` if it is not CBOR."""
    try:
        return cbor2.loads(raw)
    except Exception:  # any decoder failure is a malformed record
        raise StoreError("malformed record", what) from None


def load_fields(tx: StoreTransaction, key: str, count: int) -> tuple[Any, ...] | None:
    """Fields 0 to ``count - 1`` of the map in the application record ``key`` (the caller
    checks their types); None without the record, :class:`StoreError` if it is no such map."""
    raw = tx.app_get(key)
    if raw is None:
        return None
    obj = load(raw, "app/" + key)
    try:
        return tuple(obj[i] for i in range(count))
    except (KeyError, TypeError, IndexError):
        raise StoreError("malformed record", "app/" + key) from None


def q(name: str) -> str:
    """An account name as one record-key segment (percent-encoded, no ``/``)."""
    return quote(name, safe="")


@dataclass(frozen=True, slots=True)
class Profile:
    """Who this device is: its account, device id, the account kind and the suite it uses."""

    account: str
    device: int
    kind: str
    suite: Suite = DEFAULT
    #: Billing tier the account registers with (0 free, 1 API; customers 0).
    tier: int = 0

    @property
    def addr(self) -> Address:
        """This device's address."""
        return Address(self.account, self.device)


def check_to_obj(check: ClassCheck) -> dict[int, Any]:
    """A class check as a CBOR map."""
    return {0: int(check.declared), 1: int(check.content), 2: check.ok, 3: check.reason}


def check_from_obj(obj: Any) -> ClassCheck:
    """Inverse of :func:`check_to_obj` (KeyError, TypeError or ValueError if malformed)."""
    if type(obj[2]) is not bool or type(obj[3]) is not str:
        raise TypeError("malformed class check")
    return ClassCheck(MessageClass(obj[0]), MessageClass(obj[1]), obj[2], obj[3])


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """One message as a device holds it (received, or sent by this account).

    ``conversation`` is the other account; ``outgoing`` is True for messages of our own
    account (sent here or on another of our devices). ``delivery`` and ``franking_key`` are
    what a spam report reveals (received messages; a message this device sent keeps its
    franking key too, to send it again to a device that asks, SPEC §10.11)."""

    conversation: str
    sender: Address
    cls: MessageClass
    message_id: bytes
    body: bytes
    time: int
    outgoing: bool
    delivery: bytes = b""
    franking_key: bytes = b""
    template_id: bytes | None = None
    #: For a business's message to a customer: :func:`~e2e.platform.policy.check_class` of
    #: its content against its declared class, as the device found it when it received it
    #: (None: not checked; kept with the message's event, not in the history).
    class_check: ClassCheck | None = field(default=None, compare=False)
    #: The attachment's pointer encoding (SPEC §16.5), for an attachment message.
    attachment: bytes | None = None

    @property
    def misdeclared(self) -> bool:
        """True if its content belongs to a dearer class than declared (or its template id
        does not fit): a flag for the customer, who can report it."""
        return self.class_check is not None and not self.class_check.ok

    def __repr__(self) -> str:
        return f"Message({self.cls.name}, id={self.message_id.hex()[:8]}, {len(self.body)} B)"

    @property
    def text(self) -> str:
        """The body as text (replacement characters for invalid UTF-8); for a catalogue
        template message (SPEC §17.1), the text of its content."""
        if self.template_id is not None and parse_ref(self.template_id) is not None:
            try:
                return TemplateContent.from_bytes(self.body).text
            except DecodeError:
                pass
        return self.body.decode(errors="replace")

    @property
    def template_params(self) -> tuple[str, ...] | None:
        """A catalogue template message's parameters (None: not one, or malformed)."""
        if self.template_id is None or parse_ref(self.template_id) is None:
            return None
        try:
            return TemplateContent.from_bytes(self.body).params
        except DecodeError:
            return None

    def to_obj(self) -> dict[int, Any]:
        """The record as a CBOR map (key 11: the class check, in an event only; key 12: an
        attachment's pointer)."""
        obj: dict[int, Any] = {
            0: self.conversation,
            1: self.sender.name,
            2: self.sender.device,
            3: int(self.cls),
            4: self.message_id,
            5: self.body,
            6: self.time,
            7: self.outgoing,
            8: self.delivery,
            9: self.franking_key,
        }
        if self.template_id is not None:
            obj[10] = self.template_id
        if self.class_check is not None:
            obj[11] = check_to_obj(self.class_check)
        if self.attachment is not None:
            obj[12] = self.attachment
        return obj

    def to_record(self) -> bytes:
        """The ``c/msg/...`` record value (without the class check)."""
        obj = self.to_obj()
        obj.pop(11, None)
        return dump(obj)

    @classmethod
    def from_obj(cls, obj: Any, what: str) -> Message:
        """Inverse of :meth:`to_obj`; :class:`StoreError` naming ``what`` if malformed."""
        try:
            check = obj.get(11)
            if obj.get(12) is not None and type(obj[12]) is not bytes:
                raise TypeError("malformed attachment")
            return cls(
                obj[0],
                Address(obj[1], obj[2]),
                MessageClass(obj[3]),
                obj[4],
                obj[5],
                obj[6],
                obj[7],
                obj[8],
                obj[9],
                obj.get(10),
                None if check is None else check_from_obj(check),
                obj.get(12),
            )
        except (KeyError, TypeError, ValueError, AttributeError, StoreError):
            raise StoreError("malformed record", what) from None

    @classmethod
    def from_record(cls, raw: bytes, what: str) -> Message:
        """Inverse of :meth:`to_record`; :class:`StoreError` naming ``what`` if malformed."""
        return cls.from_obj(load(raw, what), what)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt's body: ``kind`` (:class:`ReceiptStatus`) and the message ids it is about;
    a retry request (``RETRY``) may add ``since``: also every message sent since that relay
    time."""

    kind: int
    message_ids: tuple[bytes, ...]
    since: int | None = None


def receipt_body(kind: int, message_ids: list[bytes]) -> bytes:
    """The body of a receipt message: {0: kind, 1: [message ids, at most MAX_RECEIPT_IDS]}."""
    if len(message_ids) > MAX_RECEIPT_IDS:
        raise DecodeError("a receipt carries at most MAX_RECEIPT_IDS message ids")
    return dump({0: kind, 1: list(message_ids)})


def retry_body(message_ids: list[bytes], since: int | None = None) -> bytes:
    """The body of a retry request: {0: 3, 1: [message ids], 2?: since (relay time)}."""
    obj: dict[int, Any] = {0: ReceiptStatus.RETRY, 1: list(message_ids)}
    if since is not None:
        obj[2] = since
    return dump(obj)


def parse_receipt(body: bytes) -> Receipt:
    """A receipt's or retry request's body; :class:`DecodeError` if malformed."""
    try:
        obj = cbor2.loads(body)
        kind, ids, since = obj[0], obj[1], obj.get(2)
    except Exception:
        raise DecodeError("malformed receipt") from None
    kinds = (ReceiptStatus.DELIVERED, ReceiptStatus.READ, ReceiptStatus.RETRY)
    if kind not in kinds or not isinstance(ids, list) or len(ids) > MAX_RECEIPT_IDS:
        raise DecodeError("malformed receipt")
    if not all(type(i) is bytes and len(i) == MESSAGE_ID_LEN for i in ids):
        raise DecodeError("malformed receipt")
    if since is not None and (kind != ReceiptStatus.RETRY or type(since) is not int or since < 0):
        raise DecodeError("malformed receipt")
    if set(obj) - {0, 1, 2}:
        raise DecodeError("malformed receipt")
    return Receipt(kind, tuple(ids), since)
