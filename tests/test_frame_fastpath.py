"""The normal-message hot path of e2e.frame agrees with the strict CBOR path, byte for byte.

decode_message first matches a normal message frame against its exact canonical layout;
these tests check that it accepts exactly the frames the strict path (decode_map plus
re-encoding) accepts as normal messages, returns the same frame for them, and that the
hand-built encoder prefix equals cbor2's canonical encoding.
"""

from __future__ import annotations

import os
import random

import cbor2
import pytest

from e2e.errors import DecodeError
from e2e.frame import (
    _PREKEY,
    SEALED_HEADER_LEN,
    K,
    T,
    _decode_plain_message,
    decode_map,
    decode_message,
    encode_map,
    encode_message,
)
from e2e.suite import PQ, Suite

SIZES = [0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537]


def _frame(suite: Suite, body_len: int) -> bytes:
    header = os.urandom(SEALED_HEADER_LEN)
    body = os.urandom(body_len)
    return encode_message(suite, header, None, body_len, lambda _: body)


def _strict(raw: bytes) -> dict[int, object] | None:
    try:
        return decode_map(raw, _PREKEY, "message frame")
    except DecodeError:
        return None


@pytest.mark.parametrize("suite", [PQ], ids=["pq"])
@pytest.mark.parametrize("body_len", SIZES)
def test_encoder_matches_cbor2(suite: Suite, body_len: int) -> None:
    header = os.urandom(SEALED_HEADER_LEN)
    body = os.urandom(body_len)
    seen: list[bytes] = []

    def seal(prefix: bytes) -> bytes:
        seen.append(prefix)
        return body

    raw = encode_message(suite, header, None, body_len, seal)
    fields = {K.VERSION: 1, K.SUITE: suite.id, K.TYPE: T.MESSAGE, K.HEADER: header, K.BODY: body}
    assert raw == cbor2.dumps(fields) == encode_map(fields)
    assert seen == [raw[: len(raw) - body_len]]


@pytest.mark.parametrize("suite", [PQ], ids=["pq"])
@pytest.mark.parametrize("body_len", SIZES)
def test_fast_path_returns_the_strict_frame(suite: Suite, body_len: int) -> None:
    raw = _frame(suite, body_len)
    fast = _decode_plain_message(raw)
    assert fast is not None
    obj = _strict(raw)
    assert obj is not None
    assert (fast.suite, fast.header, fast.body, fast.prekey, fast.raw) == (
        suite,
        obj[K.HEADER],
        obj[K.BODY],
        None,
        raw,
    )
    assert decode_message(raw) == fast


def _mutations(raw: bytes, rng: random.Random) -> list[bytes]:
    out = [raw[:i] for i in range(0, len(raw), max(1, len(raw) // 40))]
    out += [raw + b"\x00", raw + os.urandom(3), b"\xbf" + raw[1:], b"\xa6" + raw[1:]]
    for _ in range(300):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(min(len(b), 160))
            b[i] = rng.randrange(256)
        out.append(bytes(b))
    # the same map with a non-shortest length head, or an indefinite-length string
    obj = cbor2.loads(raw)
    body, header = obj[K.BODY], obj[K.HEADER]
    head = raw[: raw.index(header) - 2]  # up to the header's 2-byte head
    n = len(body)
    body_heads = [
        bytes((0x58 + i,)) + n.to_bytes(1 << i, "big")
        for i in range(4)
        if n < 256 << (8 * ((1 << i) - 1))
    ]
    for body_head in body_heads:
        if body_head != raw[len(head) + 2 + len(header) + 1 : -n or None]:
            out.append(head + bytes((0x58, len(header))) + header + b"\x0a" + body_head + body)
    out.append(
        head + b"\x59\x00" + bytes((len(header),)) + header + raw[len(head) + 2 + len(header) :]
    )
    chunks = b"".join(b"\x5a" + len(c).to_bytes(4, "big") + c for c in (body[:10], body[10:]))
    out.append(head + bytes((0x58, len(header))) + header + b"\x0a\x5f" + chunks + b"\xff")
    return out


@pytest.mark.parametrize("suite", [PQ], ids=["pq"])
@pytest.mark.parametrize("body_len", [0, 20, 24, 300, 70000])
def test_fast_path_accepts_nothing_the_strict_path_rejects(suite: Suite, body_len: int) -> None:
    rng = random.Random(body_len * 10 + suite.id)
    raw = _frame(suite, body_len)
    for candidate in _mutations(raw, rng):
        fast = _decode_plain_message(candidate)
        if fast is None:
            continue
        obj = _strict(candidate)
        assert obj is not None, candidate[:16].hex()
        assert obj[K.TYPE] == T.MESSAGE and len(obj) == 5
        assert (fast.header, fast.body) == (obj[K.HEADER], obj[K.BODY])
        assert fast.suite.id == obj[K.SUITE]
