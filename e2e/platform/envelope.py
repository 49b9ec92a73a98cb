"""The envelope the relay routes, the delivery record it hands out, and the padded inner
message that travels inside the E2E frame (SPEC.md §10.2).

All three are canonical CBOR maps (the strict :func:`e2e.frame.decode_map` rules: exact key
set, exact types, shortest encodings, re-encoding must reproduce the input).

* :class:`Envelope` (sender to relay): routing metadata only - message class (and template
  id for a template), sender account and device, the logical recipient account, the
  destination account and device, a random message id, the franking commitment and, for an
  attachment message, its blob id - around the opaque E2E frame.
* :class:`Delivery` (relay to a device): the envelope as received, the relay's receive time,
  the relay's franking tag and a mailbox sequence number.
* :class:`Inner` (inside the E2E frame): the class, template id, accounts and message id
  again (checked against the envelope on receipt), the franking key, the text and an optional
  attachment pointer (SPEC §16.5, its blob id checked against the envelope's); padded to a
  bucket so the relay sees only the bucket size. The class and template id are thus
  authenticated end to end and committed to by the franking commitment, so the recipient can
  check them against the content (:func:`e2e.platform.policy.check_class`) and report a
  misdeclared class in a way the relay can verify (:mod:`e2e.platform.franking`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.attachment.pointer import BLOB_ID_LEN, Pointer
from e2e.constants import MAX_PLAINTEXT_BYTES
from e2e.errors import DecodeError, LimitExceeded
from e2e.frame import Field, decode_map, encode_map
from e2e.platform.policy import MessageClass, parse_class

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ACCOUNT_LEN",
    "MESSAGE_ID_LEN",
    "FRANKING_KEY_LEN",
    "TAG_LEN",
    "PAD_BUCKETS",
    "MAX_BODY_BYTES",
    "MAX_TEMPLATE_ID_LEN",
    "Envelope",
    "Delivery",
    "Inner",
    "pad",
    "unpad",
    "check_account",
    "check_blob_id",
    "check_attachment",
]

ENVELOPE_VERSION: Final = 1
MAX_ACCOUNT_LEN: Final = 64
MESSAGE_ID_LEN: Final = 16
FRANKING_KEY_LEN: Final = 32
TAG_LEN: Final = 32
#: Longest log head an inner message carries: a signed tree head (SPEC §13.2, §13.4).
MAX_LOG_HEAD: Final = 256
#: Padded plaintext sizes: powers of two from 128 bytes to MAX_PLAINTEXT_BYTES.
PAD_BUCKETS: Final = tuple(128 << i for i in range(12) if 128 << i <= MAX_PLAINTEXT_BYTES)
#: Largest text an inner message carries (its encoding and padding must fit the top bucket).
MAX_BODY_BYTES: Final = PAD_BUCKETS[-1] - 512
#: Largest envelope / delivery accepted (a top-bucket frame plus metadata).
MAX_ENVELOPE_BYTES: Final = MAX_PLAINTEXT_BYTES + 4096
_PAD_MARK: Final = 0x80
#: A template id is 1 to 32 bytes.
MAX_TEMPLATE_ID_LEN: Final = 32


def check_account(name: object) -> bytes:
    """An account id: 1 to 64 bytes."""
    if type(name) is not bytes or not 1 <= len(name) <= MAX_ACCOUNT_LEN:
        raise DecodeError("account id must be 1 to 64 bytes")
    return name


def check_blob_id(value: object) -> bytes:
    """A blob id: 16 bytes (SPEC §10.12)."""
    if type(value) is not bytes or len(value) != BLOB_ID_LEN:
        raise DecodeError("a blob id is 16 bytes")
    return value


def check_attachment(value: object) -> bytes | None:
    """None, or a well-formed attachment pointer's encoding (SPEC §16.5)."""
    if value is None:
        return None
    Pointer.from_bytes(value)
    return value  # type: ignore[return-value]


def check_template_id(value: object) -> bytes | None:
    """None, or a template id of 1 to 32 bytes."""
    if value is None:
        return None
    if type(value) is not bytes or not 1 <= len(value) <= MAX_TEMPLATE_ID_LEN:
        raise DecodeError("template id must be 1 to 32 bytes")
    return value


def pad(data: bytes) -> bytes:
    """ISO/IEC 7816-4 padding (0x80 then zeros) up to the smallest bucket that fits."""
    for size in PAD_BUCKETS:
        if len(data) < size:
            return data + bytes([_PAD_MARK]) + bytes(size - len(data) - 1)
    raise LimitExceeded("message too large for the largest padding bucket")


def unpad(data: bytes) -> bytes:
    """Inverse of :func:`pad`; :class:`DecodeError` unless ``data`` is exactly a padded bucket."""
    if len(data) not in PAD_BUCKETS:
        raise DecodeError("padded message is not a bucket size")
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != _PAD_MARK:
        raise DecodeError("padded message lacks its padding mark")
    return data[: end - 1]


class _E:
    VERSION = 0
    CLASS = 1
    FROM_ACCOUNT = 2
    FROM_DEVICE = 3
    TO_ACCOUNT = 4
    DEST_ACCOUNT = 5
    DEST_DEVICE = 6
    MESSAGE_ID = 7
    COMMITMENT = 8
    FRAME = 9
    TEMPLATE_ID = 10
    BLOB_ID = 11


_ENVELOPE_SCHEMA: Final = {
    _E.VERSION: Field(int),
    _E.CLASS: Field(int),
    _E.FROM_ACCOUNT: Field(bytes),
    _E.FROM_DEVICE: Field(int),
    _E.TO_ACCOUNT: Field(bytes),
    _E.DEST_ACCOUNT: Field(bytes),
    _E.DEST_DEVICE: Field(int),
    _E.MESSAGE_ID: Field(bytes, MESSAGE_ID_LEN),
    _E.COMMITMENT: Field(bytes, TAG_LEN),
    _E.FRAME: Field(bytes),
    _E.TEMPLATE_ID: Field(bytes, required=False),
    _E.BLOB_ID: Field(bytes, BLOB_ID_LEN, required=False),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One device copy of one logical message, as the sender hands it to the relay."""

    cls: MessageClass
    from_account: bytes
    from_device: int
    to_account: bytes
    dest_account: bytes
    dest_device: int
    message_id: bytes
    commitment: bytes
    frame: bytes
    template_id: bytes | None = None
    #: The blob of the message's attachment (SPEC §16), named so that the relay can check
    #: the sender may use it and let the recipients read it (§10.12); None without one.
    blob_id: bytes | None = None

    @property
    def dest(self) -> tuple[bytes, int]:
        return (self.dest_account, self.dest_device)

    @property
    def sender(self) -> tuple[bytes, int]:
        return (self.from_account, self.from_device)

    def to_bytes(self) -> bytes:
        fields: dict[int, int | bytes] = {
            _E.VERSION: ENVELOPE_VERSION,
            _E.CLASS: int(self.cls),
            _E.FROM_ACCOUNT: self.from_account,
            _E.FROM_DEVICE: self.from_device,
            _E.TO_ACCOUNT: self.to_account,
            _E.DEST_ACCOUNT: self.dest_account,
            _E.DEST_DEVICE: self.dest_device,
            _E.MESSAGE_ID: self.message_id,
            _E.COMMITMENT: self.commitment,
            _E.FRAME: self.frame,
        }
        if self.template_id is not None:
            fields[_E.TEMPLATE_ID] = check_template_id(self.template_id) or b""
        if self.blob_id is not None:
            fields[_E.BLOB_ID] = check_blob_id(self.blob_id)
        return encode_map(fields)

    @classmethod
    def from_bytes(cls, raw: object) -> Envelope:
        obj = decode_map(raw, _ENVELOPE_SCHEMA, "envelope", MAX_ENVELOPE_BYTES, ENVELOPE_VERSION)
        return cls(
            parse_class(obj[_E.CLASS]),
            check_account(obj[_E.FROM_ACCOUNT]),
            obj[_E.FROM_DEVICE],
            check_account(obj[_E.TO_ACCOUNT]),
            check_account(obj[_E.DEST_ACCOUNT]),
            obj[_E.DEST_DEVICE],
            obj[_E.MESSAGE_ID],
            obj[_E.COMMITMENT],
            obj[_E.FRAME],
            check_template_id(obj.get(_E.TEMPLATE_ID)),
            None if _E.BLOB_ID not in obj else check_blob_id(obj[_E.BLOB_ID]),
        )


class _D:
    VERSION = 0
    ENVELOPE = 1
    RECEIVED_AT = 2
    TAG = 3
    SEQ = 4


_DELIVERY_SCHEMA: Final = {
    _D.VERSION: Field(int),
    _D.ENVELOPE: Field(bytes),
    _D.RECEIVED_AT: Field(int, max_int=2**63 - 1),
    _D.TAG: Field(bytes, TAG_LEN),
    _D.SEQ: Field(int, max_int=2**63 - 1),
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the relay puts in a device's mailbox: the envelope bytes as received, the relay's
    receive time (seconds), its franking tag over them, and the mailbox sequence number."""

    envelope: bytes
    received_at: int
    tag: bytes
    seq: int

    def to_bytes(self) -> bytes:
        return encode_map(
            {
                _D.VERSION: ENVELOPE_VERSION,
                _D.ENVELOPE: self.envelope,
                _D.RECEIVED_AT: self.received_at,
                _D.TAG: self.tag,
                _D.SEQ: self.seq,
            }
        )

    @classmethod
    def from_bytes(cls, raw: object) -> Delivery:
        obj = decode_map(
            raw, _DELIVERY_SCHEMA, "delivery", MAX_ENVELOPE_BYTES + 64, ENVELOPE_VERSION
        )
        return cls(obj[_D.ENVELOPE], obj[_D.RECEIVED_AT], obj[_D.TAG], obj[_D.SEQ])

    def open_envelope(self) -> Envelope:
        return Envelope.from_bytes(self.envelope)


class _I:
    VERSION = 0
    CLASS = 1
    FROM_ACCOUNT = 2
    TO_ACCOUNT = 3
    MESSAGE_ID = 4
    FRANKING_KEY = 5
    BODY = 6
    LOG_HEAD = 7
    TEMPLATE_ID = 8
    ATTACHMENT = 9
    LIST_VERSION = 10


_INNER_SCHEMA: Final = {
    _I.VERSION: Field(int),
    _I.CLASS: Field(int),
    _I.FROM_ACCOUNT: Field(bytes),
    _I.TO_ACCOUNT: Field(bytes),
    _I.MESSAGE_ID: Field(bytes, MESSAGE_ID_LEN),
    _I.FRANKING_KEY: Field(bytes, FRANKING_KEY_LEN),
    _I.BODY: Field(bytes),
    _I.LOG_HEAD: Field(bytes, required=False),
    _I.TEMPLATE_ID: Field(bytes, required=False),
    _I.ATTACHMENT: Field(bytes, required=False),
    _I.LIST_VERSION: Field(int, required=False, max_int=2**63 - 1),
}


@dataclass(frozen=True, slots=True, repr=False)
class Inner:
    """The E2E plaintext before padding. Its ``repr`` shows neither key nor text."""

    cls: MessageClass
    from_account: bytes
    to_account: bytes
    message_id: bytes
    franking_key: bytes
    body: bytes
    #: The sender's newest key-transparency log head as the log key signed it (SPEC
    #: §13.4), or empty; omitted from the encoding when empty. Opaque here: the receiver
    #: checks the signature and drops a head that is not the log's.
    log_head: bytes = b""
    template_id: bytes | None = None
    #: The attachment's pointer (SPEC §16.5), encoded; None for a message without one.
    attachment: bytes | None = None
    #: The version of the sender account's signed device list the sender holds (SPEC
    #: §10.1, §10.10), 0 if unknown: a peer holding an older one re-checks it before its
    #: next send. Omitted when 0.
    list_version: int = 0

    def __repr__(self) -> str:
        return f"Inner(cls={self.cls.name}, id={self.message_id.hex()[:8]}, {len(self.body)} B)"

    def to_padded(self) -> bytes:
        if len(self.body) > MAX_BODY_BYTES:
            raise LimitExceeded("message text larger than MAX_BODY_BYTES")
        fields: dict[int, int | bytes] = {
            _I.VERSION: ENVELOPE_VERSION,
            _I.CLASS: int(self.cls),
            _I.FROM_ACCOUNT: self.from_account,
            _I.TO_ACCOUNT: self.to_account,
            _I.MESSAGE_ID: self.message_id,
            _I.FRANKING_KEY: self.franking_key,
            _I.BODY: self.body,
        }
        if self.log_head:
            fields[_I.LOG_HEAD] = self.log_head
        if self.template_id is not None:
            fields[_I.TEMPLATE_ID] = check_template_id(self.template_id) or b""
        if self.attachment is not None:
            fields[_I.ATTACHMENT] = self.attachment
        if self.list_version:
            fields[_I.LIST_VERSION] = self.list_version
        return pad(encode_map(fields))

    @classmethod
    def from_padded(cls, data: bytes) -> Inner:
        obj = decode_map(unpad(data), _INNER_SCHEMA, "inner message", MAX_PLAINTEXT_BYTES)
        if not 0 < len(obj.get(_I.LOG_HEAD, b"-")) <= MAX_LOG_HEAD:
            raise DecodeError("inner message: log head of 1 to 256 bytes")
        if obj.get(_I.LIST_VERSION) == 0:
            raise DecodeError("inner message: a device list version of 0 is absent")
        return cls(
            parse_class(obj[_I.CLASS]),
            check_account(obj[_I.FROM_ACCOUNT]),
            check_account(obj[_I.TO_ACCOUNT]),
            obj[_I.MESSAGE_ID],
            obj[_I.FRANKING_KEY],
            obj[_I.BODY],
            obj.get(_I.LOG_HEAD, b""),
            check_template_id(obj.get(_I.TEMPLATE_ID)),
            check_attachment(obj.get(_I.ATTACHMENT)),
            obj.get(_I.LIST_VERSION, 0),
        )

    @property
    def pointer(self) -> Pointer | None:
        """The attachment's pointer, decoded (checked when the message was decoded)."""
        return None if self.attachment is None else Pointer.from_bytes(self.attachment)

    @property
    def blob_id(self) -> bytes | None:
        pointer = self.pointer
        return None if pointer is None else pointer.blob_id

    def matches(self, env: Envelope) -> bool:
        """True if the sender's metadata inside the frame equals the envelope's."""
        return (
            self.cls is env.cls
            and self.template_id == env.template_id
            and self.from_account == env.from_account
            and self.to_account == env.to_account
            and self.message_id == env.message_id
            and self.blob_id == env.blob_id
        )
