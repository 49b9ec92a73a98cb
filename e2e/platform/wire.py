"""The relay's wire API, version 1: paths, bodies, errors and device authentication
(SPEC.md §10.7). Shared by the relay server (:mod:`e2e.relay`) and its clients.

Every request and response body is one canonical CBOR map (the rules of SPEC §5.1) with small
unsigned-integer keys, key 0 the wire version (1). A value is an unsigned integer, a byte
string, or a definite-length array of unsigned integers or of byte strings (one level, never
mixed). :func:`decode_body` walks the item heads before any decoder runs (so a nested,
indefinite, truncated or oversized input costs nothing), checks the exact key set and types,
and requires re-encoding to reproduce the input byte for byte.

Authentication (:func:`sign_request`, :func:`parse_auth`): each request carries an
``authorization: E2E-Device <token>`` header, ``token`` the unpadded base64url of the CBOR map
``{0: 1, 1: account, 2: device id, 3: unix time (s), 4: nonce (16 bytes), 5: signature (64)}``,
where the signature is an XEdDSA signature by the device identity key (the key its account's
certificate vouches for) over::

    "E2E_RELAY_AUTH_v1" | CBOR {0: 1, 1: method, 2: path, 3: SHA-256(body), 4: account,
                                5: device id, 6: time, 7: nonce}

The relay accepts a request only if the device is registered (or, for device registration,
the certificate in the body verifies under the account key), the signature verifies, the time
is within :data:`AUTH_SKEW` seconds of its own, and the (account, device, nonce) triple was not
seen before (nonces are kept until they expire).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar

import cbor2

from e2e import xeddsa
from e2e.errors import (
    Blocked,
    Conflict,
    DecodeError,
    DuplicateSubmission,
    E2EError,
    Forbidden,
    InvalidKey,
    InvalidSignature,
    Limited,
    LimitExceeded,
    NoPriorContact,
    NoSuchEndpoint,
    NotAllowed,
    NotOptedIn,
    PolicyError,
    RateLimited,
    ReportRejected,
    StaleDeviceList,
    StoreError,
    StoreUnavailable,
    Unauthenticated,
    UnknownAccount,
    UnsupportedVersion,
    WindowClosed,
)
from e2e.keys import X25519_LEN, KeyPair
from e2e.platform.envelope import (
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_TEMPLATE_ID_LEN,
    MESSAGE_ID_LEN,
    check_account,
)

__all__ = [
    "ListTemplates",
    "TemplateList",
    "MAX_TEMPLATES",
    "WIRE_VERSION",
    "CONTENT_TYPE",
    "AUTH_SCHEME",
    "AUTH_LABEL",
    "AUTH_SKEW",
    "NONCE_LEN",
    "MAX_REQUEST_BYTES",
    "MAX_BATCH",
    "MAX_PREKEYS_PER_UPLOAD",
    "MAX_FETCH",
    "MAX_WAIT_MS",
    "Path",
    "ERRORS",
    "error_for",
    "error_status",
    "WireError",
    "decode_body",
    "encode_body",
    "AuthToken",
    "auth_message",
    "sign_request",
    "parse_auth",
    "body_digest",
    "Ok",
    "RegisterAccount",
    "RegisterDevice",
    "RemoveDevice",
    "ListDevices",
    "Route",
    "Designate",
    "DeviceList",
    "UploadPrekeys",
    "PrekeyCount",
    "CountPrekeys",
    "ClaimPrekey",
    "ClaimedPrekey",
    "Precheck",
    "Submit",
    "Receipt",
    "Fetch",
    "Mailbox",
    "Ack",
    "Control",
    "WindowQuery",
    "WindowState",
    "SubmitReport",
    "ReportVerdict",
    "BillQuery",
    "BillLines",
    "account_signature_message",
    "MAX_LOG_ENTRIES",
    "LogHeadQuery",
    "LogHead",
    "LogLookup",
    "LogEntry",
    "LogConsistencyQuery",
    "LogConsistency",
    "BusinessCertQuery",
    "BusinessCert",
    "LogEntriesQuery",
    "LogEntries",
]

WIRE_VERSION: Final = 1
CONTENT_TYPE: Final = "application/cbor"
AUTH_SCHEME: Final = "E2E-Device"
AUTH_LABEL: Final = b"E2E_RELAY_AUTH_v1"
ACCOUNT_LABEL: Final = b"E2E_RELAY_ACCOUNT_v1"
#: A request's time may differ from the relay's by at most this many seconds.
AUTH_SKEW: Final = 300
NONCE_LEN: Final = 16
#: Largest request body: a batch of MAX_BATCH top-bucket envelopes would not fit; the relay
#: caps the whole body (413) before reading further.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
#: Most envelopes in one submission (devices of the recipient plus the sender's own others).
MAX_BATCH: Final = 64
MAX_PREKEYS_PER_UPLOAD: Final = 200
MAX_BUNDLE_BYTES: Final = 4096
#: Most deliveries one fetch returns.
MAX_FETCH: Final = 256
#: Longest a fetch waits for new mail (long-poll push), in milliseconds.
MAX_WAIT_MS: Final = 25_000
#: Most key-log entries one /v1/log/entries answer carries (a monitor pages through).
MAX_LOG_ENTRIES: Final = 256
#: Largest signed tree head, directory entry and proof (SPEC §13.2, §13.4).
_MAX_HEAD: Final = 256
_MAX_ENTRY: Final = 512
_MAX_PROOF: Final = 8192
_MAX_U63: Final = 2**63 - 1


class Path:
    """Endpoint paths (all ``POST`` with CBOR bodies, except the ``GET`` ones noted)."""

    ACCOUNT_REGISTER: Final = "/v1/accounts/register"
    DEVICE_REGISTER: Final = "/v1/devices/register"
    DEVICE_REMOVE: Final = "/v1/devices/remove"
    DEVICE_LIST: Final = "/v1/devices/list"
    #: (Business) the devices that receive one customer's chat (SPEC §10.10).
    CHAT_ROUTE: Final = "/v1/chats/route"
    #: (Business) devices that receive every routed chat, such as an archive.
    DEVICE_DESIGNATE: Final = "/v1/devices/designate"
    PREKEY_UPLOAD: Final = "/v1/prekeys/upload"
    PREKEY_COUNT: Final = "/v1/prekeys/count"
    PREKEY_CLAIM: Final = "/v1/prekeys/claim"
    MESSAGE_PRECHECK: Final = "/v1/messages/precheck"
    MESSAGE_SUBMIT: Final = "/v1/messages/submit"
    MAILBOX_FETCH: Final = "/v1/mailbox/fetch"
    MAILBOX_ACK: Final = "/v1/mailbox/ack"
    CHAT_CONTROL: Final = "/v1/chats/control"
    CHAT_WINDOW: Final = "/v1/chats/window"
    REPORT: Final = "/v1/reports/submit"
    BILL: Final = "/v1/billing/summary"
    #: (Business) register a template's class and text (SPEC §10.4).
    TEMPLATE_REGISTER: Final = "/v1/templates/register"
    TEMPLATE_LIST: Final = "/v1/templates/list"
    #: (Customer) report one message whose content does not fit its declared class.
    CLASS_REPORT: Final = "/v1/reports/class"
    #: Key directory (SPEC §13.4): signed tree head, proofs, entries for monitors.
    LOG_HEAD: Final = "/v1/log/head"
    LOG_LOOKUP: Final = "/v1/log/lookup"
    LOG_CONSISTENCY: Final = "/v1/log/consistency"
    LOG_ENTRIES: Final = "/v1/log/entries"
    BUSINESS_CERT: Final = "/v1/business/certificate"
    #: GET, unauthenticated: 200 with an empty Ok body once the store answers.
    HEALTH: Final = "/v1/health"
    #: GET, unauthenticated: text counters (Prometheus text format).
    METRICS: Final = "/v1/metrics"
    #: POST, unauthenticated: answers Ok doing nothing (the load bench's baseline).
    NOOP: Final = "/v1/noop"


# -- errors -------------------------------------------------------------------------------


#: Error code -> (HTTP status, error type). The relay answers the most specific entry whose
#: type the error is an instance of (the table is ordered subclass first).
ERRORS: Final[tuple[tuple[str, int, type[E2EError]], ...]] = (
    ("unauthenticated", 401, Unauthenticated),
    ("forbidden", 403, Forbidden),
    ("rate_limited", 429, RateLimited),
    ("no_such_endpoint", 404, NoSuchEndpoint),
    ("too_large", 413, LimitExceeded),
    ("unsupported_version", 400, UnsupportedVersion),
    ("malformed", 400, DecodeError),
    ("invalid_key", 400, InvalidKey),
    ("invalid_signature", 400, InvalidSignature),
    ("unknown_account", 404, UnknownAccount),
    ("stale_device_list", 409, StaleDeviceList),
    ("duplicate_submission", 409, DuplicateSubmission),
    ("conflict", 409, Conflict),
    ("window_closed", 422, WindowClosed),
    ("no_prior_contact", 422, NoPriorContact),
    ("blocked", 422, Blocked),
    ("limited", 422, Limited),
    ("not_opted_in", 422, NotOptedIn),
    ("not_allowed", 422, NotAllowed),
    ("report_rejected", 422, ReportRejected),
    ("refused", 422, PolicyError),
    ("store_unavailable", 503, StoreUnavailable),
    ("store_unavailable", 503, StoreError),
    ("rejected", 400, E2EError),
)
#: Code -> (status, the type a client raises): the first row of each code.
_BY_CODE: Final = {code: (status, cls) for code, status, cls in reversed(ERRORS)}


def error_status(exc: E2EError) -> tuple[int, str]:
    """(HTTP status, code) for a typed error."""
    for code, status, cls in ERRORS:
        if isinstance(exc, cls):
            return status, code
    return 400, "rejected"  # pragma: no cover - E2EError is the last entry


def error_for(code: str, message: str, missing: Sequence[tuple[bytes, int]] = (),
              extra: Sequence[tuple[bytes, int]] = ()) -> E2EError:  # fmt: skip
    """The typed error a client raises for an error body's code (unknown codes: E2EError)."""
    entry = _BY_CODE.get(code)
    cls: type[E2EError] = entry[1] if entry else E2EError
    if cls is StaleDeviceList:
        return StaleDeviceList(list(missing), list(extra))
    if cls is E2EError or cls is PolicyError:
        return cls(f"{code}: {message}")
    return cls(message)


# -- canonical CBOR bodies ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class F:
    """Shape of one body value: ``int`` (0..max_int), ``bytes`` (length in [lo, hi]), or an
    array (``array=True``) of at most ``count`` such items."""

    kind: type
    lo: int = 0
    hi: int = MAX_REQUEST_BYTES
    required: bool = True
    array: bool = False
    count: int = 0
    max_int: int = _MAX_U63


def _head(raw: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """(major type, argument, next position) of the item head at ``pos``; definite only."""
    if pos >= end:
        raise DecodeError(f"{what} is truncated")
    b = raw[pos]
    major, info = b >> 5, b & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        raise DecodeError(f"{what} holds an indefinite or reserved item")
    size = 1 << (info - 24)
    if pos + size > end:
        raise DecodeError(f"{what} is truncated")
    return major, int.from_bytes(raw[pos : pos + size], "big"), pos + size


def _walk(raw: bytes, what: str, max_items: int) -> None:
    """Before decoding: one map whose keys are uints and values uints, byte strings or
    arrays of uints/byte strings; nothing truncated or trailing; at most ``max_items`` items."""
    end = len(raw)
    major, pairs, pos = _head(raw, 0, end, what)
    if major != 5:
        raise DecodeError(f"{what} is not a CBOR map")
    if pairs > 32:
        raise DecodeError(f"{what} has too many fields")
    items = 0
    for _ in range(pairs):
        major, _arg, pos = _head(raw, pos, end, what)
        if major != 0:
            raise DecodeError(f"{what} has a key that is not an unsigned integer")
        major, arg, pos = _head(raw, pos, end, what)
        if major == 4:
            if arg > max_items:
                raise LimitExceeded(f"{what} holds too many items")
            items += arg
            if items > max_items:
                raise LimitExceeded(f"{what} holds too many items")
            for _ in range(arg):
                m, a, pos = _head(raw, pos, end, what)
                if m == 2:
                    pos += a
                elif m != 0:
                    raise DecodeError(f"{what} array holds an item of the wrong type")
                if pos > end:
                    raise DecodeError(f"{what} is truncated")
        elif major == 2:
            pos += arg
            if pos > end:
                raise DecodeError(f"{what} is truncated")
        elif major != 0:
            raise DecodeError(f"{what} holds a value of the wrong type")
    if pos != end:
        raise DecodeError(f"{what} has trailing bytes")


def _reject_tag(decoder: Any, tag: Any) -> Any:
    raise DecodeError("CBOR tags are not allowed")


def encode_body(fields: Mapping[int, int | bytes | Sequence[int] | Sequence[bytes]]) -> bytes:
    """Canonical encoding of a body map (keys ascending, arrays as lists)."""
    return cbor2.dumps({k: list(v) if isinstance(v, (list, tuple)) else v
                        for k, v in sorted(fields.items())})  # fmt: skip


def _check_value(item: object, spec: F, what: str, key: int) -> None:
    if item.__class__ is not spec.kind:
        raise DecodeError(f"{what} field {key} has the wrong type")
    value: Any = item
    if spec.kind is int:
        if not 0 <= value <= spec.max_int:
            raise DecodeError(f"{what} field {key} is out of range")
    elif not spec.lo <= len(value) <= spec.hi:
        raise DecodeError(f"{what} field {key} has the wrong length")


def decode_body(
    raw: object, schema: Mapping[int, F], what: str, max_bytes: int = MAX_REQUEST_BYTES
) -> dict[int, Any]:
    """Strictly decode a body of exactly ``schema``'s shape; raises :class:`DecodeError`."""
    if type(raw) is not bytes:
        raise DecodeError(f"{what} must be bytes")
    if len(raw) > max_bytes:
        raise LimitExceeded(f"{what} larger than {max_bytes} bytes")
    max_items = sum(s.count for s in schema.values() if s.array)
    _walk(raw, what, max_items)
    try:
        obj = cbor2.loads(raw, tag_hook=_reject_tag)
    except DecodeError:
        raise
    except Exception:  # cbor2 raises several types on malformed input; all mean the same
        raise DecodeError(f"{what} is not well-formed CBOR") from None
    if type(obj) is not dict:
        raise DecodeError(f"{what} is not a CBOR map")
    if obj.get(0).__class__ is not int:
        raise DecodeError(f"{what} has no version")
    if obj[0] != WIRE_VERSION:
        raise UnsupportedVersion(f"{what} version is not supported")
    for key, value in obj.items():
        if key == 0:
            continue
        spec = schema.get(key) if key.__class__ is int else None
        if spec is None:
            raise DecodeError(f"{what} has an unexpected key")
        if spec.array:
            if value.__class__ is not list:
                raise DecodeError(f"{what} field {key} is not an array")
            if len(value) > spec.count:
                raise LimitExceeded(f"{what} field {key} holds too many items")
            for item in value:
                _check_value(item, spec, what, key)
        else:
            _check_value(value, spec, what, key)
    for key, spec in schema.items():
        if spec.required and key not in obj:
            raise DecodeError(f"{what} lacks field {key}")
    if cbor2.dumps(dict(sorted(obj.items()))) != raw:
        raise DecodeError(f"{what} is not canonical CBOR")
    return obj


# -- bodies ---------------------------------------------------------------------------------

_B = TypeVar("_B", bound="_Body")


class _Body:
    """A request or response body: a frozen dataclass whose fields map to keys 1, 2, ..."""

    WHAT: ClassVar[str] = "body"
    SCHEMA: ClassVar[Mapping[int, F]] = {}

    def _fields(self) -> dict[int, Any]:  # pragma: no cover - every body overrides it
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        fields = {k: v for k, v in self._fields().items() if v is not None}
        return encode_body({0: WIRE_VERSION, **fields})

    @classmethod
    def _build(cls: type[_B], obj: dict[int, Any]) -> _B:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[_B], raw: object) -> _B:
        return cls._build(decode_body(raw, cls.SCHEMA, cls.WHAT))


def _acct(**kw: Any) -> F:
    return F(bytes, 1, 64, **kw)


def _addrs(accounts: Sequence[bytes], devices: Sequence[int], what: str) -> list[tuple[bytes, int]]:
    if len(accounts) != len(devices):
        raise DecodeError(f"{what}: account and device arrays differ in length")
    return [(check_account(a), d) for a, d in zip(accounts, devices, strict=True)]


@dataclass(frozen=True, slots=True)
class Ok(_Body):
    """An empty success body ``{0: 1}``."""

    WHAT: ClassVar[str] = "ok"
    SCHEMA: ClassVar[Mapping[int, F]] = {}

    def _fields(self) -> dict[int, Any]:
        return {}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Ok:
        return cls()


def account_signature_message(name: bytes, kind: int, identity: bytes, tier: int) -> bytes:
    """What an account key signs to register its account (proof of possession)."""
    return ACCOUNT_LABEL + encode_body({0: 1, 1: name, 2: kind, 3: identity, 4: tier})


@dataclass(frozen=True, slots=True)
class RegisterAccount(_Body):
    """``{1: name, 2: kind (0 customer, 1 business), 3: account identity key, 4: tier
    (0 free, 1 API; customers 0), 5: XEdDSA signature by the identity key over
    account_signature_message}``. Unauthenticated; idempotent for the same name and key."""

    WHAT: ClassVar[str] = "account registration"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: _acct(),
        2: F(int, max_int=1),
        3: F(bytes, X25519_LEN, X25519_LEN),
        4: F(int, max_int=1),
        5: F(bytes, 64, 64),
    }
    name: bytes
    kind: int
    identity: bytes
    tier: int
    signature: bytes

    @classmethod
    def create(cls, name: bytes, kind: int, identity: KeyPair, tier: int = 0,
               rng: Callable[[int], bytes] = os.urandom) -> RegisterAccount:  # fmt: skip
        msg = account_signature_message(name, kind, identity.public, tier)
        sig = xeddsa.sign(identity.private_bytes(), msg, rng(64))
        return cls(name, kind, identity.public, tier, sig)

    def verify(self) -> None:
        xeddsa.verify(
            self.identity,
            account_signature_message(self.name, self.kind, self.identity, self.tier),
            self.signature,
        )

    def _fields(self) -> dict[int, Any]:
        return {1: self.name, 2: self.kind, 3: self.identity, 4: self.tier, 5: self.signature}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> RegisterAccount:
        return cls(obj[1], obj[2], obj[3], obj[4], obj[5])


@dataclass(frozen=True, slots=True)
class RegisterDevice(_Body):
    """``{1: device certificate}`` (SPEC §10.1); authenticated as the certified device."""

    WHAT: ClassVar[str] = "device registration"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, 1024)}
    certificate: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.certificate}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> RegisterDevice:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class RemoveDevice(_Body):
    """``{1: device id}``: remove a device of the caller's own account."""

    WHAT: ClassVar[str] = "device removal"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int, max_int=2**32 - 1)}
    device_id: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.device_id}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> RemoveDevice:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class ListDevices(_Body):
    """``{1: account, 2?: chat}``. With ``chat`` (a customer) and ``account`` a business, only
    the business devices that receive that chat: its route plus the designated devices, or
    every device if the chat has no route (SPEC §10.10)."""

    WHAT: ClassVar[str] = "device list query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct(), 2: _acct(required=False)}
    account: bytes
    chat: bytes | None = None

    def _fields(self) -> dict[int, Any]:
        return {1: self.account, 2: self.chat}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ListDevices:
        return cls(obj[1], obj.get(2))


@dataclass(frozen=True, slots=True)
class Route(_Body):
    """``{1: customer, 2: [device ids]}``: (a business device) the devices of the caller's
    business that receive the chat with ``customer``; an empty list removes the route."""

    WHAT: ClassVar[str] = "chat route"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: _acct(),
        2: F(int, array=True, count=MAX_BATCH, max_int=2**32 - 1),
    }
    customer: bytes
    devices: tuple[int, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.customer, 2: self.devices}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Route:
        return cls(obj[1], tuple(obj[2]))


@dataclass(frozen=True, slots=True)
class Designate(_Body):
    """``{1: [device ids]}``: (a business device) devices of the caller's business that
    receive every routed chat (an archive, a supervisor); replaces the previous set."""

    WHAT: ClassVar[str] = "designated devices"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int, array=True, count=MAX_BATCH,
                                             max_int=2**32 - 1)}  # fmt: skip
    devices: tuple[int, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.devices}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Designate:
        return cls(tuple(obj[1]))


@dataclass(frozen=True, slots=True)
class DeviceList(_Body):
    """``{1: account identity key, 2: kind, 3: [device certificates, by device id]}``."""

    WHAT: ClassVar[str] = "device list"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, X25519_LEN, X25519_LEN),
        2: F(int, max_int=1),
        3: F(bytes, 1, 1024, array=True, count=MAX_BATCH),
    }
    identity: bytes
    kind: int
    certificates: tuple[bytes, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.identity, 2: self.kind, 3: self.certificates}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> DeviceList:
        return cls(obj[1], obj[2], tuple(obj[3]))


@dataclass(frozen=True, slots=True)
class UploadPrekeys(_Body):
    """``{1: [one-time prekey bundles], 2?: last-resort bundle}``. Each one-time bundle must
    carry a one-time prekey id; uploading an id again (a retry) changes nothing, and an id once
    handed out is never handed out again. A new last-resort bundle replaces the old one."""

    WHAT: ClassVar[str] = "prekey upload"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, MAX_BUNDLE_BYTES, array=True, count=MAX_PREKEYS_PER_UPLOAD),
        2: F(bytes, 1, MAX_BUNDLE_BYTES, required=False),
    }
    one_time: tuple[bytes, ...]
    last_resort: bytes | None = None

    def _fields(self) -> dict[int, Any]:
        return {1: self.one_time, 2: self.last_resort}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> UploadPrekeys:
        return cls(tuple(obj[1]), obj.get(2))


@dataclass(frozen=True, slots=True)
class CountPrekeys(_Body):
    """``{}``: how many one-time prekeys of the caller are left."""

    WHAT: ClassVar[str] = "prekey count query"
    SCHEMA: ClassVar[Mapping[int, F]] = {}

    def _fields(self) -> dict[int, Any]:
        return {}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> CountPrekeys:
        return cls()


@dataclass(frozen=True, slots=True)
class PrekeyCount(_Body):
    """``{1: one-time prekeys not yet handed out, 2: 1 if a last-resort bundle is held}``."""

    WHAT: ClassVar[str] = "prekey count"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int), 2: F(int, max_int=1)}
    one_time: int
    last_resort: bool

    def _fields(self) -> dict[int, Any]:
        return {1: self.one_time, 2: int(self.last_resort)}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> PrekeyCount:
        return cls(obj[1], bool(obj[2]))


@dataclass(frozen=True, slots=True)
class ClaimPrekey(_Body):
    """``{1: account, 2: device id}``: hand out one bundle of that device."""

    WHAT: ClassVar[str] = "prekey claim"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct(), 2: F(int, max_int=2**32 - 1)}
    account: bytes
    device_id: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.account, 2: self.device_id}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ClaimPrekey:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class ClaimedPrekey(_Body):
    """``{1: bundle, 2: 1 if it is a one-time bundle (0: the last-resort one)}``."""

    WHAT: ClassVar[str] = "claimed prekey"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, MAX_BUNDLE_BYTES), 2: F(int, max_int=1)}
    bundle: bytes
    one_time: bool

    def _fields(self) -> dict[int, Any]:
        return {1: self.bundle, 2: int(self.one_time)}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ClaimedPrekey:
        return cls(obj[1], bool(obj[2]))


@dataclass(frozen=True, slots=True)
class Precheck(_Body):
    """``{1: class, 2: to account, 3: [destination accounts], 4: [destination devices]}``:
    the refusal a submission would get, changing nothing (devices ask before encrypting)."""

    WHAT: ClassVar[str] = "precheck"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(int, max_int=255),
        2: _acct(),
        3: F(bytes, 1, 64, array=True, count=MAX_BATCH),
        4: F(int, array=True, count=MAX_BATCH, max_int=2**32 - 1),
    }
    cls: int
    to_account: bytes
    dest_accounts: tuple[bytes, ...]
    dest_devices: tuple[int, ...]

    @classmethod
    def of(cls, msg_cls: int, to_account: bytes, dests: Sequence[tuple[bytes, int]]) -> Precheck:
        return cls(msg_cls, to_account, tuple(a for a, _ in dests), tuple(d for _, d in dests))

    @property
    def dests(self) -> list[tuple[bytes, int]]:
        return _addrs(self.dest_accounts, self.dest_devices, self.WHAT)

    def _fields(self) -> dict[int, Any]:
        return {1: self.cls, 2: self.to_account, 3: self.dest_accounts, 4: self.dest_devices}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Precheck:
        return cls(obj[1], obj[2], tuple(obj[3]), tuple(obj[4]))


@dataclass(frozen=True, slots=True)
class Submit(_Body):
    """``{1: [envelopes]}``: one logical message as its device copies (SPEC §10.2).

    Accepted or refused whole. Submitting the same batch again (a retry) returns the first
    receipt and stores nothing; the same message id with other content is DuplicateSubmission.
    """

    WHAT: ClassVar[str] = "submission"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, MAX_ENVELOPE_BYTES, array=True, count=MAX_BATCH),
    }
    envelopes: tuple[bytes, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.envelopes}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Submit:
        return cls(tuple(obj[1]))


@dataclass(frozen=True, slots=True)
class Receipt(_Body):
    """``{1: message id, 2: relay receive time (s), 3: copies, 4: price charged}``."""

    WHAT: ClassVar[str] = "receipt"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN),
        2: F(int),
        3: F(int),
        4: F(int),
    }
    message_id: bytes
    received_at: int
    copies: int
    price: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.message_id, 2: self.received_at, 3: self.copies, 4: self.price}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Receipt:
        return cls(obj[1], obj[2], obj[3], obj[4])


@dataclass(frozen=True, slots=True)
class Fetch(_Body):
    """``{1: account, 2: device id, 3?: wait (ms, up to MAX_WAIT_MS), 4?: limit}``: the
    deliveries waiting for that device (which must be the caller), oldest first. With a wait,
    the relay holds the request until mail arrives or the wait ends (long-poll push)."""

    WHAT: ClassVar[str] = "mailbox fetch"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: _acct(),
        2: F(int, max_int=2**32 - 1),
        3: F(int, required=False, max_int=MAX_WAIT_MS),
        4: F(int, required=False, max_int=MAX_FETCH),
    }
    account: bytes
    device_id: int
    wait_ms: int = 0
    limit: int = MAX_FETCH

    def _fields(self) -> dict[int, Any]:
        return {
            1: self.account,
            2: self.device_id,
            3: self.wait_ms or None,
            4: None if self.limit == MAX_FETCH else self.limit,
        }

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Fetch:
        return cls(obj[1], obj[2], obj.get(3, 0), obj.get(4, MAX_FETCH))


@dataclass(frozen=True, slots=True)
class Mailbox(_Body):
    """``{1: [delivery records (SPEC §10.2)], 2: deliveries still waiting after these}``."""

    WHAT: ClassVar[str] = "mailbox"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, MAX_ENVELOPE_BYTES + 64, array=True, count=MAX_FETCH),
        2: F(int),
    }
    deliveries: tuple[bytes, ...]
    more: int = 0

    def _fields(self) -> dict[int, Any]:
        return {1: self.deliveries, 2: self.more}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Mailbox:
        return cls(tuple(obj[1]), obj[2])


@dataclass(frozen=True, slots=True)
class Ack(_Body):
    """``{1: account, 2: device id, 3: [sequence numbers]}``: delete those deliveries."""

    WHAT: ClassVar[str] = "mailbox ack"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: _acct(),
        2: F(int, max_int=2**32 - 1),
        3: F(int, array=True, count=MAX_FETCH),
    }
    account: bytes
    device_id: int
    seqs: tuple[int, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.account, 2: self.device_id, 3: self.seqs}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Ack:
        return cls(obj[1], obj[2], tuple(obj[3]))


@dataclass(frozen=True, slots=True)
class Control(_Body):
    """``{1: op (1 block, 2 limit, 3 marketing opt-in), 2: business, 3: on (0/1)}``: a
    customer's control over one business; the caller must be a customer's device."""

    BLOCK: ClassVar[int] = 1
    LIMIT: ClassVar[int] = 2
    OPT_IN: ClassVar[int] = 3
    WHAT: ClassVar[str] = "chat control"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(int, 1, max_int=3),
        2: _acct(),
        3: F(int, max_int=1),
    }
    op: int
    business: bytes
    on: bool

    def _fields(self) -> dict[int, Any]:
        return {1: self.op, 2: self.business, 3: int(self.on)}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> Control:
        if obj[1] == 0:
            raise DecodeError("chat control op 0 is not defined")
        return cls(obj[1], obj[2], bool(obj[3]))


@dataclass(frozen=True, slots=True)
class WindowQuery(_Body):
    """``{1: the other party}``: is the 24 h window of the caller's chat with it open?"""

    WHAT: ClassVar[str] = "window query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct()}
    peer: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.peer}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> WindowQuery:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class WindowState(_Body):
    """``{1: 1 if the window is open}``."""

    WHAT: ClassVar[str] = "window state"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int, max_int=1)}
    open: bool

    def _fields(self) -> dict[int, Any]:
        return {1: int(self.open)}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> WindowState:
        return cls(bool(obj[1]))


@dataclass(frozen=True, slots=True)
class SubmitReport(_Body):
    """``{1: report (SPEC §10.4), 2: block (0/1)}``; the caller must be the reporter's device."""

    WHAT: ClassVar[str] = "spam report"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, 6 * (MAX_ENVELOPE_BYTES + 4096)),
                                         2: F(int, max_int=1)}  # fmt: skip
    report: bytes
    block: bool = True

    def _fields(self) -> dict[int, Any]:
        return {1: self.report, 2: int(self.block)}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> SubmitReport:
        return cls(obj[1], bool(obj[2]))


@dataclass(frozen=True, slots=True)
class ReportVerdict(_Body):
    """``{1: [message ids verified], 2: [their receive times], 3: [their classes]}``."""

    WHAT: ClassVar[str] = "report verdict"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN, array=True, count=8),
        2: F(int, array=True, count=8),
        3: F(int, array=True, count=8, max_int=255),
    }
    message_ids: tuple[bytes, ...]
    received_at: tuple[int, ...]
    classes: tuple[int, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.message_ids, 2: self.received_at, 3: self.classes}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ReportVerdict:
        return cls(tuple(obj[1]), tuple(obj[2]), tuple(obj[3]))


@dataclass(frozen=True, slots=True)
class RegisterTemplate(_Body):
    """``{1: template id (1..32 bytes), 2: class (TEMPLATE or MARKETING), 3: text}``; the
    caller must be a device of the business. The relay keeps the text's SHA-256."""

    WHAT: ClassVar[str] = "template registration"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, MAX_TEMPLATE_ID_LEN),
        2: F(int, max_int=255),
        3: F(bytes, 0, MAX_BODY_BYTES),
    }
    template_id: bytes
    cls: int
    text: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.template_id, 2: self.cls, 3: self.text}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> RegisterTemplate:
        return cls(obj[1], obj[2], obj[3])


#: Most templates one business registers (a template list answers with all of them).
MAX_TEMPLATES: Final = 256


@dataclass(frozen=True, slots=True)
class ListTemplates(_Body):
    """``{1: business account}``: the templates it registered (public, like its devices)."""

    WHAT: ClassVar[str] = "template list query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct()}
    business: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.business}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ListTemplates:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class TemplateList(_Body):
    """``{1: [template ids], 2: [classes], 3: [SHA-256 of each text]}``, by id ascending."""

    WHAT: ClassVar[str] = "template list"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, MAX_TEMPLATE_ID_LEN, array=True, count=MAX_TEMPLATES),
        2: F(int, array=True, count=MAX_TEMPLATES, max_int=255),
        3: F(bytes, 32, 32, array=True, count=MAX_TEMPLATES),
    }
    template_ids: tuple[bytes, ...] = field(default=())
    classes: tuple[int, ...] = field(default=())
    text_hashes: tuple[bytes, ...] = field(default=())

    def _fields(self) -> dict[int, Any]:
        return {1: self.template_ids, 2: self.classes, 3: self.text_hashes}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> TemplateList:
        if not len(obj[1]) == len(obj[2]) == len(obj[3]):
            raise DecodeError("template list columns differ in length")
        return cls(tuple(obj[1]), tuple(obj[2]), tuple(obj[3]))


@dataclass(frozen=True, slots=True)
class SubmitClassReport(_Body):
    """``{1: one report item (SPEC §10.4: delivery record, franking key, text)}``; the caller
    must be a device of the customer the message was delivered to."""

    WHAT: ClassVar[str] = "class report"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, MAX_ENVELOPE_BYTES + 4096)}
    item: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.item}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> SubmitClassReport:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class ClassVerdict(_Body):
    """``{1: message id, 2: declared class, 3: class of the content, 4: penalty unit price}``:
    the verified mismatch and the penalty line the business was billed."""

    WHAT: ClassVar[str] = "class verdict"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, MESSAGE_ID_LEN, MESSAGE_ID_LEN),
        2: F(int, max_int=255),
        3: F(int, max_int=255),
        4: F(int),
    }
    message_id: bytes
    declared: int
    content: int
    price: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.message_id, 2: self.declared, 3: self.content, 4: self.price}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> ClassVerdict:
        return cls(obj[1], obj[2], obj[3], obj[4])


@dataclass(frozen=True, slots=True)
class BillQuery(_Body):
    """``{}``: the caller's (a business device's) billing ledger summary."""

    WHAT: ClassVar[str] = "bill query"
    SCHEMA: ClassVar[Mapping[int, F]] = {}

    def _fields(self) -> dict[int, Any]:
        return {}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> BillQuery:
        return cls()


@dataclass(frozen=True, slots=True)
class BillLines(_Body):
    """``{1: tier, 2: [classes], 3: [in window 0/1], 4: [message counts], 5: [unit prices]}``:
    one line per (class, in window, price) of the ledger, ascending; then the penalty lines
    of verified class reports, one per (declared class, content class, price), ascending:
    ``{6: [declared classes], 7: [content classes], 8: [counts], 9: [unit prices]}`` (keys
    6 to 9 absent when there are none)."""

    WHAT: ClassVar[str] = "bill"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(int, max_int=1),
        2: F(int, array=True, count=64, max_int=255),
        3: F(int, array=True, count=64, max_int=1),
        4: F(int, array=True, count=64),
        5: F(int, array=True, count=64),
        6: F(int, required=False, array=True, count=64, max_int=255),
        7: F(int, required=False, array=True, count=64, max_int=255),
        8: F(int, required=False, array=True, count=64),
        9: F(int, required=False, array=True, count=64),
    }
    tier: int
    classes: tuple[int, ...] = field(default=())
    in_window: tuple[int, ...] = field(default=())
    counts: tuple[int, ...] = field(default=())
    unit_prices: tuple[int, ...] = field(default=())
    penalty_declared: tuple[int, ...] = field(default=())
    penalty_content: tuple[int, ...] = field(default=())
    penalty_counts: tuple[int, ...] = field(default=())
    penalty_prices: tuple[int, ...] = field(default=())

    @property
    def total(self) -> int:
        lines = zip(self.counts, self.unit_prices, strict=True)
        penalties = zip(self.penalty_counts, self.penalty_prices, strict=True)
        return sum(c * p for c, p in lines) + sum(c * p for c, p in penalties)

    def _fields(self) -> dict[int, Any]:
        out: dict[int, Any] = {1: self.tier, 2: self.classes, 3: self.in_window,
                               4: self.counts, 5: self.unit_prices}  # fmt: skip
        if self.penalty_counts:
            out.update({6: self.penalty_declared, 7: self.penalty_content,
                        8: self.penalty_counts, 9: self.penalty_prices})  # fmt: skip
        return out

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> BillLines:
        n = len(obj[2])
        if not len(obj[3]) == len(obj[4]) == len(obj[5]) == n:
            raise DecodeError("bill arrays differ in length")
        pen = [tuple(obj.get(k, ())) for k in (6, 7, 8, 9)]
        if len({len(p) for p in pen}) != 1 or (any(k in obj for k in (6, 7, 8, 9)) and not pen[2]):
            raise DecodeError("bill penalty arrays differ in length or are empty")
        return cls(obj[1], tuple(obj[2]), tuple(obj[3]), tuple(obj[4]), tuple(obj[5]), *pen)


@dataclass(frozen=True, slots=True)
class WireError(_Body):
    """An error body: ``{1: code (ASCII), 2: message (UTF-8), 3?: [missing accounts],
    4?: [missing devices], 5?: [extra accounts], 6?: [extra devices]}`` (3..6 only for
    stale_device_list). Messages never contain key material or message content."""

    WHAT: ClassVar[str] = "error"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, 64),
        2: F(bytes, 0, 1024),
        3: F(bytes, 1, 64, required=False, array=True, count=MAX_BATCH),
        4: F(int, required=False, array=True, count=MAX_BATCH, max_int=2**32 - 1),
        5: F(bytes, 1, 64, required=False, array=True, count=MAX_BATCH),
        6: F(int, required=False, array=True, count=MAX_BATCH, max_int=2**32 - 1),
    }
    code: str
    message: str
    missing: tuple[tuple[bytes, int], ...] = ()
    extra: tuple[tuple[bytes, int], ...] = ()

    @classmethod
    def of(cls, exc: E2EError) -> tuple[int, WireError]:
        status, code = error_status(exc)
        missing: tuple[tuple[bytes, int], ...] = ()
        extra: tuple[tuple[bytes, int], ...] = ()
        if isinstance(exc, StaleDeviceList):
            missing, extra = tuple(exc.missing), tuple(exc.extra)
        return status, cls(code, str(exc)[:1024], missing, extra)

    def to_error(self) -> E2EError:
        return error_for(self.code, self.message, self.missing, self.extra)

    def _fields(self) -> dict[int, Any]:
        out: dict[int, Any] = {1: self.code.encode("ascii"),
                               2: self.message.encode("utf-8")[:1024]}  # fmt: skip
        if self.missing or self.extra:
            out[3] = tuple(a for a, _ in self.missing)
            out[4] = tuple(d for _, d in self.missing)
            out[5] = tuple(a for a, _ in self.extra)
            out[6] = tuple(d for _, d in self.extra)
        return out

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> WireError:
        try:
            code = obj[1].decode("ascii")
            message = obj[2].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("error body is not text") from None
        missing = _addrs(obj.get(3, []), obj.get(4, []), cls.WHAT)
        extra = _addrs(obj.get(5, []), obj.get(6, []), cls.WHAT)
        return cls(code, message, tuple(missing), tuple(extra))


# -- device authentication ------------------------------------------------------------------


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def auth_message(method: str, path: str, digest: bytes, account: bytes, device_id: int,
                 timestamp: int, nonce: bytes) -> bytes:  # fmt: skip
    """The bytes a device signs for one request."""
    return AUTH_LABEL + encode_body(
        {
            0: 1,
            1: method.encode("ascii"),
            2: path.encode("ascii"),
            3: digest,
            4: account,
            5: device_id,
            6: timestamp,
            7: nonce,
        }
    )


_AUTH_SCHEMA: Final = {
    1: _acct(),
    2: F(int, max_int=2**32 - 1),
    3: F(int),
    4: F(bytes, NONCE_LEN, NONCE_LEN),
    5: F(bytes, 64, 64),
}


@dataclass(frozen=True, slots=True)
class AuthToken:
    """The decoded ``authorization`` header of one request."""

    account: bytes
    device_id: int
    timestamp: int
    nonce: bytes
    signature: bytes

    def to_header(self) -> str:
        raw = encode_body({0: 1, 1: self.account, 2: self.device_id, 3: self.timestamp,
                           4: self.nonce, 5: self.signature})  # fmt: skip
        return f"{AUTH_SCHEME} " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, identity: bytes, method: str, path: str, body: bytes) -> None:
        """:class:`Unauthenticated` unless signed by ``identity`` for exactly this request."""
        msg = auth_message(method, path, body_digest(body), self.account, self.device_id,
                           self.timestamp, self.nonce)  # fmt: skip
        try:
            xeddsa.verify(identity, msg, self.signature)
        except E2EError:
            raise Unauthenticated("request signature does not verify") from None


def sign_request(identity: KeyPair, account: bytes, device_id: int, method: str, path: str,
                 body: bytes, timestamp: int,
                 rng: Callable[[int], bytes] = os.urandom) -> str:  # fmt: skip
    """The ``authorization`` header value for one request by this device."""
    nonce = rng(NONCE_LEN)
    msg = auth_message(method, path, body_digest(body), account, device_id, timestamp, nonce)
    sig = xeddsa.sign(identity.private_bytes(), msg, rng(64))
    return AuthToken(account, device_id, timestamp, nonce, sig).to_header()


def parse_auth(header: str | None) -> AuthToken:
    """Decode an ``authorization`` header; :class:`Unauthenticated` if absent or malformed."""
    if not header:
        raise Unauthenticated("request is not authenticated")
    scheme, _, value = header.partition(" ")
    if scheme != AUTH_SCHEME or not value or len(value) > 512:
        raise Unauthenticated("unknown authorization scheme")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != value:
            raise DecodeError("non-canonical base64")
        obj = decode_body(raw, _AUTH_SCHEMA, "authorization", 512)
    except (E2EError, ValueError):
        raise Unauthenticated("malformed authorization header") from None
    return AuthToken(obj[1], obj[2], obj[3], obj[4], obj[5])


# -- key directory (SPEC §13.4) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogHeadQuery(_Body):
    """``{}``: the key log's newest signed tree head."""

    WHAT: ClassVar[str] = "log head query"
    SCHEMA: ClassVar[Mapping[int, F]] = {}

    def _fields(self) -> dict[int, Any]:
        return {}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogHeadQuery:
        return cls()


@dataclass(frozen=True, slots=True)
class LogHead(_Body):
    """``{1: signed tree head (SPEC §13.2 wire form), 2: the log's Ed25519 public key}``.
    The key is informational: a client checks heads against the key it pinned, never
    against this field."""

    WHAT: ClassVar[str] = "log head"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, _MAX_HEAD), 2: F(bytes, 32, 32)}
    head: bytes
    log_key: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.head, 2: self.log_key}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogHead:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class LogLookup(_Body):
    """``{1: account, 2: tree size}``: the account's newest entry within that many leaves."""

    WHAT: ClassVar[str] = "log lookup"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct(), 2: F(int)}
    account: bytes
    size: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.account, 2: self.size}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogLookup:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class LogEntry(_Body):
    """``{1: directory entry, 2: inclusion proof}``."""

    WHAT: ClassVar[str] = "log entry"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, _MAX_ENTRY), 2: F(bytes, 1, _MAX_PROOF)}
    entry: bytes
    proof: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.entry, 2: self.proof}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogEntry:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class LogConsistencyQuery(_Body):
    """``{1: size1, 2: size2}``."""

    WHAT: ClassVar[str] = "log consistency query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int), 2: F(int)}
    size1: int
    size2: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.size1, 2: self.size2}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogConsistencyQuery:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class LogConsistency(_Body):
    """``{1: consistency proof}``."""

    WHAT: ClassVar[str] = "log consistency"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 1, _MAX_PROOF)}
    proof: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.proof}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogConsistency:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class LogEntriesQuery(_Body):
    """``{1: start, 2: tree size}``: entries from ``start`` (at most MAX_LOG_ENTRIES) with
    inclusion proofs in the tree of ``size`` leaves."""

    WHAT: ClassVar[str] = "log entries query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(int), 2: F(int)}
    start: int
    size: int

    def _fields(self) -> dict[int, Any]:
        return {1: self.start, 2: self.size}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogEntriesQuery:
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class LogEntries(_Body):
    """``{1: [entries], 2: [inclusion proofs]}``, equally long, in log order."""

    WHAT: ClassVar[str] = "log entries"
    SCHEMA: ClassVar[Mapping[int, F]] = {
        1: F(bytes, 1, _MAX_ENTRY, array=True, count=MAX_LOG_ENTRIES),
        2: F(bytes, 1, _MAX_PROOF, array=True, count=MAX_LOG_ENTRIES),
    }
    entries: tuple[bytes, ...]
    proofs: tuple[bytes, ...]

    def _fields(self) -> dict[int, Any]:
        return {1: self.entries, 2: self.proofs}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> LogEntries:
        if len(obj[1]) != len(obj[2]):
            raise DecodeError("log entries: entry and proof arrays differ in length")
        return cls(tuple(obj[1]), tuple(obj[2]))


#: Largest business certificate (SPEC §13.3).
_MAX_BUSINESS_CERT: Final = 512


@dataclass(frozen=True, slots=True)
class BusinessCertQuery(_Body):
    """``{1: account}``: the platform's certificate of a business account (SPEC §13.3)."""

    WHAT: ClassVar[str] = "business certificate query"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: _acct()}
    account: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.account}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> BusinessCertQuery:
        return cls(obj[1])


@dataclass(frozen=True, slots=True)
class BusinessCert(_Body):
    """``{1: certificate}``: the stored business certificate, empty if the account has none.
    The relay only stores and serves it; the client verifies it under the platform key."""

    WHAT: ClassVar[str] = "business certificate"
    SCHEMA: ClassVar[Mapping[int, F]] = {1: F(bytes, 0, _MAX_BUSINESS_CERT)}
    certificate: bytes

    def _fields(self) -> dict[int, Any]:
        return {1: self.certificate}

    @classmethod
    def _build(cls, obj: dict[int, Any]) -> BusinessCert:
        return cls(obj[1])
