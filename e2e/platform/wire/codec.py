"""The body rules of the relay's wire API (SPEC.md §10.7): one canonical CBOR map per body.

Every request and response body is one canonical CBOR map (the rules of SPEC §5.1) with small
unsigned-integer keys, key 0 the wire version (1). A value is an unsigned integer, a byte
string, or a definite-length array of unsigned integers or of byte strings (one level, never
mixed). :func:`decode_body` walks the item heads before any decoder runs (so a nested,
indefinite, truncated or oversized input costs nothing), decodes and checks the version and
the canonical form with the frame decoder's own steps (:func:`e2e.frame.load_map`,
:func:`e2e.frame.check_canonical`), and checks the exact key set and types.

A body is a frozen dataclass deriving from :class:`Body` whose fields are declared with
:func:`key` (their map key and :class:`F` shape): :meth:`Body.to_bytes` and
:meth:`Body.from_bytes` follow from the declaration, and an optional field is absent exactly
when it holds its default, so every accepted body re-encodes to its own bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import cbor2

from e2e.errors import DecodeError, LimitExceeded
from e2e.frame import check_canonical, load_map
from e2e.platform.envelope import check_account

__all__ = [
    "WIRE_VERSION",
    "CONTENT_TYPE",
    "MAX_REQUEST_BYTES",
    "MAX_BATCH",
    "F",
    "key",
    "account_field",
    "device_field",
    "Body",
    "Ok",
    "addresses",
    "decode_body",
    "encode_body",
    "max_body_size",
]

WIRE_VERSION: Final = 1
CONTENT_TYPE: Final = "application/cbor"
#: Largest request body: a batch of MAX_BATCH top-bucket envelopes would not fit; the relay
#: caps the whole body (413) before reading further.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
#: Most envelopes in one submission (devices of the recipient plus the sender's own others),
#: and most devices in one device list, route or error.
MAX_BATCH: Final = 64
_MAX_U63: Final = 2**63 - 1
_MAX_U32: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class F:
    """Shape of one body value: ``int`` (``min_int``..``max_int``), ``bytes`` (length in
    [lo, hi]), or an array (``array=True``) of at most ``count`` such items."""

    kind: type
    lo: int = 0
    hi: int = MAX_REQUEST_BYTES
    required: bool = True
    array: bool = False
    count: int = 0
    max_int: int = _MAX_U63
    min_int: int = 0


def key(n: int, spec: F, default: Any = dataclasses.MISSING) -> Any:
    """Declare a body field: map key ``n`` with shape ``spec``. An optional field
    (``spec.required`` false) needs a ``default``, and is absent from the map exactly when it
    holds it. A field annotated ``bool`` travels as 0/1."""
    if not spec.required and default is dataclasses.MISSING:
        raise TypeError("an optional body field needs a default")
    return dataclasses.field(default=default, metadata={"wire": (n, spec)})


def max_body_size(schema: Mapping[int, F]) -> int:
    """An upper bound of the encoding of a body of ``schema``: the map head and version,
    then per field its key and, at most, a 9-byte head and ``hi`` bytes per item (arrays at
    most ``count`` items); capped at MAX_REQUEST_BYTES."""
    total = 1 + 2
    for spec in schema.values():
        item = 9 + (spec.hi if spec.kind is bytes else 0)
        total += 1 + (9 + spec.count * item if spec.array else item)
    return min(total, MAX_REQUEST_BYTES)


def account_field(n: int, *, required: bool = True) -> Any:
    """An account name field (1..64 bytes); optional ones default to None."""
    return key(n, F(bytes, 1, 64, required=required), dataclasses.MISSING if required else None)


def device_field(n: int) -> Any:
    """A device id field (u32)."""
    return key(n, F(int, max_int=_MAX_U32))


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


def encode_body(fields: Mapping[int, int | bytes | Sequence[int] | Sequence[bytes]]) -> bytes:
    """Canonical encoding of a body map (keys ascending, arrays as lists)."""
    return cbor2.dumps({k: list(v) if isinstance(v, (list, tuple)) else v
                        for k, v in sorted(fields.items())})  # fmt: skip


def _check_value(item: object, spec: F, what: str, key: int) -> None:
    if item.__class__ is not spec.kind:
        raise DecodeError(f"{what} field {key} has the wrong type")
    value: Any = item
    if spec.kind is int:
        if not spec.min_int <= value <= spec.max_int:
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
    obj = load_map(raw, what, WIRE_VERSION)
    for k, value in obj.items():
        if k == 0:
            continue
        spec = schema.get(k) if k.__class__ is int else None
        if spec is None:
            raise DecodeError(f"{what} has an unexpected key")
        if spec.array:
            if value.__class__ is not list:
                raise DecodeError(f"{what} field {k} is not an array")
            if len(value) > spec.count:
                raise LimitExceeded(f"{what} field {k} holds too many items")
            for item in value:
                _check_value(item, spec, what, k)
        else:
            _check_value(value, spec, what, k)
    for k, spec in schema.items():
        if spec.required and k not in obj:
            raise DecodeError(f"{what} lacks field {k}")
    check_canonical(obj, raw, what)
    return obj


@dataclass(frozen=True, slots=True)
class _Slot:
    """One declared field of a body: attribute name, map key, shape, default, bool-typed."""

    name: str
    key: int
    spec: F
    default: Any
    flag: bool


_LAYOUTS: dict[type, tuple[tuple[_Slot, ...], dict[int, F]]] = {}


def _slots(cls: type[Body]) -> tuple[tuple[_Slot, ...], dict[int, F]]:
    """The declared fields of a body class and its schema (computed once per class)."""
    found = _LAYOUTS.get(cls)
    if found is None:
        slots = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            n, spec = f.metadata["wire"]
            slots.append(_Slot(f.name, n, spec, f.default, f.type in ("bool", bool)))
        found = _LAYOUTS[cls] = (tuple(slots), {s.key: s.spec for s in slots})
    return found


_B = TypeVar("_B", bound="Body")


class Body:
    """A request or response body: a frozen dataclass whose fields are declared with
    :func:`key` (its class name names it in error messages)."""

    @classmethod
    def schema(cls) -> dict[int, F]:
        """Map key -> shape of every field (key 0, the version, is implied)."""
        return _slots(cls)[1]

    def to_bytes(self) -> bytes:
        fields: dict[int, Any] = {0: WIRE_VERSION}
        for s in _slots(type(self))[0]:
            value = getattr(self, s.name)
            if not s.spec.required and value == s.default:
                continue  # an optional field at its default is absent
            fields[s.key] = int(value) if s.flag else value
        return encode_body(fields)

    @classmethod
    def from_bytes(cls: type[_B], raw: object) -> _B:
        slots, schema = _slots(cls)
        obj = decode_body(raw, schema, cls.__name__)
        cls.check(obj)
        kw: dict[str, Any] = {}
        for s in slots:
            if s.key not in obj:
                continue
            value = obj[s.key]
            if s.spec.array:
                value = tuple(value)
            elif s.flag:
                value = bool(value)
            if not s.spec.required and value == s.default:
                raise DecodeError(f"{cls.__name__} field {s.key} is present at its default")
            kw[s.name] = value
        return cls(**kw)

    @classmethod
    def check(cls, obj: dict[int, Any]) -> None:
        """Rules across fields of a decoded map (equal array lengths...): DecodeError."""

    @classmethod
    def max_size(cls) -> int:
        """The largest encoding a body of this class can have (at most MAX_REQUEST_BYTES):
        what the relay reads of a request before refusing it (413), so an endpoint whose
        bodies are small never buffers a large one (SPEC §10.7)."""
        return max_body_size(cls.schema())


@dataclass(frozen=True, slots=True)
class Ok(Body):
    """An empty success body ``{0: 1}``."""


def addresses(
    accounts: Sequence[bytes], devices: Sequence[int], what: str
) -> list[tuple[bytes, int]]:
    """Pair an array of account names with an equally long array of device ids."""
    if len(accounts) != len(devices):
        raise DecodeError(f"{what}: account and device arrays differ in length")
    return [(check_account(a), d) for a, d in zip(accounts, devices, strict=True)]
