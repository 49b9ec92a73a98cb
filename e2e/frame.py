"""Canonical CBOR frames and their strict decoder (SPEC.md §5).

Every wire object is one CBOR map with small unsigned-integer keys and only unsigned
integers or byte strings as values, in RFC 8949 core deterministic encoding. Key 0 is the
frame version and key 1 the suite id, so they are the first bytes after the map head.

The decoder checks the size before anything else, decodes with cbor2 (tags refused,
nesting capped), then checks the exact key set, every value's type and length, and that
re-encoding reproduces the input byte for byte - which rejects indefinite lengths,
duplicate or unsorted keys and non-shortest integers. Authentication always covers the
bytes as received (``MessageFrame.ad_prefix``), never a re-encoding.

Normal messages (the per-message hot path) are first matched against their exact canonical
layout, built from the same items; only a byte-for-byte match is accepted there, and
everything else goes through the strict path above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import cbor2

from e2e.constants import FRAME_VERSION, MAX_FRAME_BYTES
from e2e.errors import DecodeError, LimitExceeded, UnsupportedVersion
from e2e.keys import KEM_CIPHERTEXT_LEN, X25519_LEN
from e2e.suite import SUITES, Suite, get_suite

__all__ = [
    "K",
    "T",
    "Field",
    "PrekeyFields",
    "MessageFrame",
    "decode_map",
    "encode_map",
    "decode_message",
    "encode_message",
    "load_map",
    "check_canonical",
    "message_prefix",
    "message_parts",
    "blank_header",
    "HEADER_LEN",
    "SEALED_HEADER_LEN",
]


class K:
    """Map keys shared by every frame kind."""

    VERSION: Final = 0
    SUITE: Final = 1
    TYPE: Final = 2
    IDENTITY: Final = 3
    BASE_KEY: Final = 4
    SPK_ID: Final = 5
    OPK_ID: Final = 6
    KEM_ID: Final = 7
    KEM_CT: Final = 8
    HEADER: Final = 9
    BODY: Final = 10
    SPK: Final = 11
    SPK_SIG: Final = 12
    OPK: Final = 13
    KEM_PK: Final = 14
    KEM_SIG: Final = 15


class T:
    """Frame types (key 2)."""

    MESSAGE: Final = 1
    PREKEY_MESSAGE: Final = 2
    BUNDLE: Final = 3


#: Header plaintext (sealed inside the frame's header): ratchet public key (32) | PN (u32
#: big-endian) | N (u32 big-endian) | the body key's commitment MC (32).
HEADER_LEN: Final = 72
#: Encrypted header, the frame's header field: nonce (12) | commitment (32) | ciphertext
#: (72) | tag (16).
SEALED_HEADER_LEN: Final = 132
_MAX_ID: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Field:
    """Shape of one map value: ``int`` in [0, max_int], or ``bytes`` of ``size`` (None: any)."""

    kind: type
    size: int | None = None
    required: bool = True
    max_int: int = _MAX_ID


def _reject_tag(decoder: Any, tag: Any) -> Any:
    raise DecodeError("CBOR tags are not allowed")


def encode_map(fields: Mapping[int, int | bytes]) -> bytes:
    """Deterministic encoding of a map of small int keys (given in ascending order)."""
    return cbor2.dumps(fields)


def _check_flat(raw: bytes, what: str) -> None:
    """Before any decoding: ``raw`` is one map of exactly its items, each an unsigned
    integer or a definite-length byte string (nesting depth 1, nothing truncated).

    This walks only the item heads (at most 2 * 23 of them), so a nested, indefinite,
    truncated or overlong input costs no decoder work at all.
    """
    end = len(raw)
    pos = 1
    for _ in range(2 * (raw[0] & 0x1F)):
        if pos >= end:
            raise DecodeError(f"{what} is truncated")
        head = raw[pos]
        major, info = head >> 5, head & 0x1F
        pos += 1
        if major > 2 or major == 1 or info > 27:  # only uint (0) and bytes (2), definite
            raise DecodeError(f"{what} holds an item that is not an integer or byte string")
        if info < 24:
            arg = info
        else:
            size = 1 << (info - 24)
            arg = int.from_bytes(raw[pos : pos + size], "big")
            pos += size
        if major == 2:
            pos += arg
        if pos > end:
            raise DecodeError(f"{what} is truncated")
    if pos != end:
        raise DecodeError(f"{what} has trailing bytes")


def decode_map(
    raw: object,
    schema: Mapping[int, Field],
    what: str,
    max_bytes: int = MAX_FRAME_BYTES,
    version: int = FRAME_VERSION,
) -> dict[int, Any]:
    """Strictly decode ``raw`` as a map of exactly ``schema``'s shape; :class:`DecodeError`."""
    if type(raw) is not bytes:
        raise DecodeError(f"{what} must be bytes")
    if len(raw) > max_bytes:
        raise LimitExceeded(f"{what} larger than {max_bytes} bytes")
    if not raw or not 0xA0 <= raw[0] <= 0xB7:
        raise DecodeError(f"{what} is not a small CBOR map")
    _check_flat(raw, what)
    obj = load_map(raw, what, version)
    for key, value in obj.items():
        spec = schema.get(key) if type(key) is int else None
        if spec is None:
            raise DecodeError(f"{what} has an unexpected key")
        if value.__class__ is not spec.kind:
            raise DecodeError(f"{what} field {key} has the wrong type")
        if spec.kind is int:
            if not 0 <= value <= spec.max_int:  # type: ignore[operator]
                raise DecodeError(f"{what} field {key} is out of range")
        elif spec.size is not None and len(value) != spec.size:  # type: ignore[arg-type]
            raise DecodeError(f"{what} field {key} has the wrong length")
    for key, spec in schema.items():
        if spec.required and key not in obj:
            raise DecodeError(f"{what} lacks field {key}")
    check_canonical(obj, raw, what)
    return obj


def load_map(raw: bytes, what: str, version: int) -> dict[Any, Any]:
    """CBOR-decode ``raw`` (whose item heads were walked already; tags refused) as a map
    whose key 0 is ``version``; :class:`DecodeError` (:class:`UnsupportedVersion`)."""
    try:
        obj = cbor2.loads(raw, tag_hook=_reject_tag)
    except DecodeError:
        raise
    except Exception:  # cbor2 raises several types on malformed input; all mean the same
        raise DecodeError(f"{what} is not well-formed CBOR") from None
    if type(obj) is not dict:
        raise DecodeError(f"{what} is not a CBOR map")
    if type(obj.get(K.VERSION)) is not int:
        raise DecodeError(f"{what} has no version")
    if obj[K.VERSION] != version:
        raise UnsupportedVersion(f"{what} version {obj[K.VERSION]} is not supported")
    return obj


def check_canonical(obj: Mapping[Any, Any], raw: bytes, what: str) -> None:
    """:class:`DecodeError` unless ``raw`` is the canonical encoding of the decoded ``obj``
    (shortest heads, keys sorted, no duplicate keys)."""
    if cbor2.dumps(dict(sorted(obj.items()))) != raw:
        raise DecodeError(f"{what} is not canonical CBOR")


@dataclass(frozen=True, slots=True)
class PrekeyFields:
    """What an initial (prekey) message adds: the X3DH / PQXDH parameters of the initiator."""

    identity_key: bytes
    base_key: bytes
    spk_id: int
    opk_id: int | None
    kem_id: int | None
    kem_ciphertext: bytes | None


class MessageFrame(NamedTuple):
    """A decoded message frame, holding the bytes as received.

    An immutable named tuple: built for every received message, so it is cheap to build.
    """

    suite: Suite
    header: bytes
    body: bytes
    prekey: PrekeyFields | None
    #: Every received byte before the body's content: authenticated as AD.
    ad_prefix: bytes

    @property
    def raw(self) -> bytes:
        """The frame as received: ``ad_prefix`` followed by ``body``."""
        return self.ad_prefix + self.body


_COMMON: Final = {
    K.VERSION: Field(int),
    K.SUITE: Field(int),
    K.TYPE: Field(int),
    K.HEADER: Field(bytes),
    K.BODY: Field(bytes),
}
_PREKEY: Final = {
    **_COMMON,
    K.IDENTITY: Field(bytes, X25519_LEN, required=False),
    K.BASE_KEY: Field(bytes, X25519_LEN, required=False),
    K.SPK_ID: Field(int, required=False),
    K.OPK_ID: Field(int, required=False),
    K.KEM_ID: Field(int, required=False),
    K.KEM_CT: Field(bytes, KEM_CIPHERTEXT_LEN, required=False),
}


def _bytes_head(n: int) -> bytes:
    """The shortest CBOR head of a byte string of ``n`` bytes (RFC 8949 §4.2.1)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x5a" + n.to_bytes(4, "big")
    return b"\x5b" + n.to_bytes(8, "big")


#: Length of a byte string head by its first byte (major type 2, definite lengths only).
_BYTES_HEAD_LEN: Final = {**{0x40 + n: 1 for n in range(24)}, 0x58: 2, 0x59: 3, 0x5A: 5, 0x5B: 9}
_BODY_KEY: Final = bytes((K.BODY,))


def _message_head(suite: Suite) -> bytes:
    """Canonical bytes of a normal message frame up to its header's content:
    map(5) {0: FRAME_VERSION, 1: suite id, 2: MESSAGE, 9: bytes(header length) ..."""
    items = (K.VERSION, FRAME_VERSION, K.SUITE, suite.id, K.TYPE, T.MESSAGE, K.HEADER)
    return b"\xa5" + b"".join(cbor2.dumps(i) for i in items) + _bytes_head(SEALED_HEADER_LEN)


#: For each suite, the canonical head of its normal message frames -> (suite, header length).
_MESSAGE_HEADS: Final = {_message_head(s): (s, SEALED_HEADER_LEN) for s in SUITES.values()}
_MESSAGE_HEAD_LEN: Final = 10
assert all(len(head) == _MESSAGE_HEAD_LEN for head in _MESSAGE_HEADS)


#: The same heads -> (suite, offset of the body key K.BODY, right after the header).
_FAST_LAYOUTS: Final = {h: (s, _MESSAGE_HEAD_LEN + n) for h, (s, n) in _MESSAGE_HEADS.items()}
_BODY_KEY_BYTE: Final = _BODY_KEY[0]
#: ``tuple.__new__``: builds the hot path's MessageFrame without NamedTuple's Python __new__.
_new_frame: Final = tuple.__new__


def _decode_plain_message(raw: bytes) -> MessageFrame | None:
    """The hot path: a normal message frame matched against its exact canonical layout.

    Accepts ``raw`` only if it is byte for byte the canonical encoding of
    {0: FRAME_VERSION, 1: suite, 2: MESSAGE, 9: header, 10: body} with the suite's header
    length - then the strict path would return the very same frame. Anything else
    (prekey messages, every malformed or non-canonical input) returns None, and the strict
    path decides.
    """
    layout = _FAST_LAYOUTS.get(raw[:_MESSAGE_HEAD_LEN])
    if layout is None:
        return None
    suite, body_key = layout
    start = body_key + 1
    if len(raw) <= start or raw[body_key] != _BODY_KEY_BYTE:
        return None
    head_len = _BYTES_HEAD_LEN.get(raw[start])
    if head_len is None:
        return None
    body_start = start + head_len
    body_len = len(raw) - body_start
    if body_len < 0 or raw[start:body_start] != _bytes_head(body_len):
        return None
    return _new_frame(
        MessageFrame,
        (suite, raw[_MESSAGE_HEAD_LEN:body_key], raw[body_start:], None, raw[:body_start]),
    )


def decode_message(raw: object) -> MessageFrame:
    """Decode a message or prekey-message frame; raises only :class:`DecodeError` subclasses."""
    if type(raw) is bytes and len(raw) <= MAX_FRAME_BYTES:
        frame = _decode_plain_message(raw)
        if frame is not None:
            return frame
    # One schema covers both types; the type then decides which fields must be there.
    obj = decode_map(raw, _PREKEY, "message frame")
    assert type(raw) is bytes
    suite = get_suite(obj[K.SUITE])
    ftype = obj[K.TYPE]
    header = obj[K.HEADER]
    if len(header) != SEALED_HEADER_LEN:
        raise DecodeError("message header has the wrong length")
    prekey = None
    if ftype == T.MESSAGE:
        if len(obj) != len(_COMMON):
            raise DecodeError("message frame carries prekey fields")
    elif ftype == T.PREKEY_MESSAGE:
        if K.IDENTITY not in obj or K.BASE_KEY not in obj or K.SPK_ID not in obj:
            raise DecodeError("prekey message lacks its key agreement fields")
        if K.KEM_ID not in obj or K.KEM_CT not in obj:
            raise DecodeError("prekey message lacks its KEM fields")
        prekey = PrekeyFields(
            obj[K.IDENTITY],
            obj[K.BASE_KEY],
            obj[K.SPK_ID],
            obj.get(K.OPK_ID),
            obj.get(K.KEM_ID),
            obj.get(K.KEM_CT),
        )
    else:
        raise DecodeError("unknown frame type")
    body = obj[K.BODY]
    return MessageFrame(suite, header, body, prekey, raw[: len(raw) - len(body)])


def encode_message(
    suite: Suite,
    header: bytes,
    prekey: PrekeyFields | None,
    body_len: int,
    seal_body: Callable[[bytes], bytes],
) -> bytes:
    """Encode a frame whose body is ``seal_body(ad_prefix)`` of exactly ``body_len`` bytes."""
    prefix = message_prefix(suite, header, prekey, body_len)
    body = seal_body(prefix)
    if len(body) != body_len:  # pragma: no cover - a programming error, not bad input
        raise AssertionError("sealed body length differs from its prediction")
    return prefix + body


def message_prefix(
    suite: Suite, header: bytes, prekey: PrekeyFields | None, body_len: int
) -> bytes:
    """The frame's bytes before its body's content (its AD prefix) for a body of
    ``body_len`` bytes; the frame is this prefix followed by the body."""
    if prekey is None:
        head, header_len = _HEADS_BY_SUITE[suite.id]
        if len(header) == header_len:  # the hot path: the same bytes as encode_map below
            return head + header + _BODY_KEY + _bytes_head(body_len)
    fields: dict[int, int | bytes] = {
        K.VERSION: FRAME_VERSION,
        K.SUITE: suite.id,
        K.TYPE: T.MESSAGE if prekey is None else T.PREKEY_MESSAGE,
    }
    if prekey is not None:
        fields[K.IDENTITY] = prekey.identity_key
        fields[K.BASE_KEY] = prekey.base_key
        fields[K.SPK_ID] = prekey.spk_id
        if prekey.opk_id is not None:
            fields[K.OPK_ID] = prekey.opk_id
        if prekey.kem_id is not None and prekey.kem_ciphertext is not None:
            fields[K.KEM_ID] = prekey.kem_id
            fields[K.KEM_CT] = prekey.kem_ciphertext
    fields[K.HEADER] = header
    # Encode with a placeholder body of the right length: its head is then exact, and the
    # prefix before the body's content is what the receiver will authenticate.
    fields[K.BODY] = bytes(body_len)
    prefix = encode_map(fields)
    return prefix[:-body_len] if body_len else prefix


_HEADS_BY_SUITE: Final = {suite.id: (head, n) for head, (suite, n) in _MESSAGE_HEADS.items()}

#: The sealed header's stand-in while the body is sealed (SPEC.md §5.2).
BLANK_SEALED_HEADER: Final = bytes(SEALED_HEADER_LEN)


def header_end(prefix_len: int, body_len: int) -> int:
    """Offset just past the header's value in a frame prefix of ``prefix_len`` bytes whose
    body has ``body_len`` bytes: the header field is always followed by the body key (one
    byte) and the body's byte-string head (SPEC.md §5.2), whose length is that of
    ``_bytes_head(body_len)``, computed here without building it."""
    if body_len < 24:
        return prefix_len - 2
    if body_len < 0x100:
        return prefix_len - 3
    if body_len < 0x10000:
        return prefix_len - 4
    return prefix_len - (6 if body_len < 0x100000000 else 10)


def message_parts(suite: Suite, prekey: PrekeyFields | None, body_len: int) -> tuple[bytes, bytes]:
    """(before, after): the prefix of a frame whose body has ``body_len`` bytes is ``before``,
    then the sealed header's bytes, then ``after`` (the body key and the body's head), the
    same bytes as :func:`message_prefix` with that header."""
    if prekey is None:
        return _HEADS_BY_SUITE[suite.id][0], _BODY_KEY + _bytes_head(body_len)
    prefix = message_prefix(suite, BLANK_SEALED_HEADER, prekey, body_len)
    end = header_end(len(prefix), body_len)
    return prefix[: end - SEALED_HEADER_LEN], prefix[end:]


def blank_header(prefix: bytes, body_len: int) -> bytes:
    """``prefix`` with its sealed header's bytes replaced by zeros: the frame prefix a body
    is sealed with, since the header itself authenticates the body (SPEC.md §5.2)."""
    end = header_end(len(prefix), body_len)
    return prefix[: end - SEALED_HEADER_LEN] + BLANK_SEALED_HEADER + prefix[end:]
