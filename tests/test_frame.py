"""The strict canonical-CBOR frame decoder: every malformed shape is a DecodeError subclass,
rejected before any state changes; the body is authenticated with the prefix as received."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from helpers import (
    body_offset,
    edit_frame,
    expect_unchanged,
    frame_fields,
    handshake,
    reencode,
    setup,
)

from e2e.constants import MAX_BUNDLE_BYTES, MAX_FRAME_BYTES
from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    LimitExceeded,
    UnknownSuite,
    UnsupportedVersion,
)
from e2e.frame import SEALED_HEADER_LEN, K, T, decode_message
from e2e.keys import KeyPair
from e2e.prekeys import LocalPrekeys, PrekeyBundle
from e2e.session import STATE_SCHEMA, Session
from e2e.suite import PQ, Suite

# --- a tiny CBOR writer that can also write what the protocol must refuse ------------------


def head(major: int, value: int, width: int | None = None) -> bytes:
    """A CBOR item head; ``width`` (0, 1, 2, 4, 8 extra bytes) forces a non-shortest form."""
    if width is None:
        width = 0 if value < 24 else 1 if value < 256 else 2 if value < 65536 else 4
    if width == 0:
        return bytes([major << 5 | value])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + value.to_bytes(width, "big")


def uint(value: int, width: int | None = None) -> bytes:
    return head(0, value, width)


def bstr(data: bytes, width: int | None = None) -> bytes:
    return head(2, len(data), width) + data


def item(value: Any) -> bytes:
    if type(value) is int:
        return uint(value)
    if type(value) is bytes:
        return bstr(value)
    return cbor2.dumps(value)


def cmap(pairs: list[tuple[bytes, bytes]], width: int | None = None) -> bytes:
    """A map from already-encoded (key, value) pairs, in the given order."""
    return head(5, len(pairs), width) + b"".join(k + v for k, v in pairs)


def pairs_of(frame: bytes) -> list[tuple[bytes, bytes]]:
    return [(uint(k), item(v)) for k, v in sorted(frame_fields(frame).items())]


def with_value(frame: bytes, key: int, encoded: bytes) -> bytes:
    return cmap([(k, encoded if k == uint(key) else v) for k, v in pairs_of(frame)])


# --- fixtures: one valid frame of each kind ---------------------------------------------


def frames(suite: Suite) -> dict[str, bytes]:
    pair = setup(suite)
    prekey_msg = pair.alice.encrypt(b"first")
    bob, _ = pair.respond(prekey_msg)
    pair.alice.decrypt(bob.encrypt(b"answer"))
    return {
        "message": pair.alice.encrypt(b"plain"),
        "prekey": prekey_msg,
        "bundle": pair.bob_keys.bundle().to_bytes(),
    }


def decoders() -> dict[str, Callable[[bytes], object]]:
    return {"message": decode_message, "prekey": decode_message, "bundle": PrekeyBundle.from_bytes}


KINDS = ["message", "prekey", "bundle"]


@pytest.fixture
def valid(suite: Suite) -> dict[str, bytes]:
    return frames(suite)


def assert_rejected(kind: str, raw: object, error: type[DecodeError] = DecodeError) -> None:
    with pytest.raises(error):
        decoders()[kind](raw)  # type: ignore[arg-type]


# --- layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_version_first_suite_second(suite: Suite, valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    assert 0xA0 <= raw[0] <= 0xB7  # a definite-length map with at most 23 entries
    assert raw[1:3] == b"\x00\x01"  # key 0 (version) = 1
    assert raw[3:5] == bytes([1, suite.id])  # key 1 (suite)
    assert list(frame_fields(raw)) == sorted(frame_fields(raw))
    assert reencode(frame_fields(raw)) == raw  # canonical
    decoders()[kind](raw)


def test_state_has_schema_first_suite_second(suite: Suite) -> None:
    raw = handshake(suite).alice.to_bytes()
    assert raw[1:3] == bytes([0, STATE_SCHEMA]) and raw[3:5] == bytes([1, suite.id])


def test_ad_prefix_is_everything_before_the_body(suite: Suite, valid: dict[str, bytes]) -> None:
    for kind in ("message", "prekey"):
        raw = valid[kind]
        parsed = decode_message(raw)
        assert parsed.raw == raw
        assert parsed.ad_prefix == raw[: body_offset(raw)]
        assert raw[len(parsed.ad_prefix) :] == parsed.body
        assert len(parsed.header) == SEALED_HEADER_LEN


# --- size first -------------------------------------------------------------------------


def test_oversize_frame_rejected_before_decoding(suite: Suite, valid: dict[str, bytes]) -> None:
    raw = valid["message"]
    off = body_offset(raw)
    body_len = len(raw) - off

    def grown(total: int) -> bytes:
        first = edit_frame(raw, body=bytes(body_len + total - len(raw)))
        # The body's length head grows with the body: correct for it.
        return edit_frame(raw, body=bytes(body_len + 2 * total - len(raw) - len(first)))

    at_limit = grown(MAX_FRAME_BYTES)
    assert len(at_limit) == MAX_FRAME_BYTES
    decode_message(at_limit)  # well-formed at exactly the limit
    over = grown(MAX_FRAME_BYTES + 3)
    assert len(over) > MAX_FRAME_BYTES
    assert_rejected("message", over, LimitExceeded)
    # Garbage and hostile nesting beyond the limit: still LimitExceeded (no decoding at all).
    assert_rejected("message", b"\xa1\x00" + b"\x81" * MAX_FRAME_BYTES, LimitExceeded)
    assert_rejected("message", b"\xff" * (MAX_FRAME_BYTES + 1), LimitExceeded)
    assert_rejected("bundle", b"\xa1\x00" + b"\x81" * MAX_BUNDLE_BYTES, LimitExceeded)
    session = handshake(suite).bob
    assert session is not None
    expect_unchanged(session, lambda: session.decrypt(over), LimitExceeded)


def test_oversize_frame_never_reaches_cbor(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> object:
        raise AssertionError("cbor2 called on an oversize frame")

    monkeypatch.setattr(cbor2, "loads", boom)
    with pytest.raises(LimitExceeded):
        decode_message(b"\xa5" + bytes(MAX_FRAME_BYTES))


# --- not canonical ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_non_canonical_encodings(suite: Suite, valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    pairs = pairs_of(raw)
    assert cmap(pairs) == raw  # our writer reproduces the canonical frame
    bad: dict[str, bytes] = {
        "map head 1-byte": cmap(pairs, 1),
        "map head 2-byte": cmap(pairs, 2),
        "indefinite map": b"\xbf" + b"".join(k + v for k, v in pairs) + b"\xff",
        "unsorted keys": cmap([pairs[1], pairs[0], *pairs[2:]]),
        "last two swapped": cmap([*pairs[:-2], pairs[-1], pairs[-2]]),
        "duplicate key": cmap([*pairs, pairs[2]]),
        "duplicate version": cmap([pairs[0], *pairs]),
        "version 1-byte int": with_value(raw, K.VERSION, uint(1, 1)),
        "version 8-byte int": with_value(raw, K.VERSION, uint(1, 8)),
        "suite 2-byte int": with_value(raw, K.SUITE, uint(suite.id, 2)),
        "type 4-byte int": with_value(raw, K.TYPE, uint(frame_fields(raw)[K.TYPE], 4)),
        "key 1-byte int": cmap([(uint(0, 1), pairs[0][1]), *pairs[1:]]),
        "trailing byte": raw + b"\x00",
        "two maps": raw + raw,
    }
    # Byte strings: non-shortest length heads and indefinite-length (chunked) strings.
    big_key = K.BODY if kind != "bundle" else K.SPK
    value = frame_fields(raw)[big_key]
    bad["bytes len 8-byte head"] = with_value(raw, big_key, bstr(value, 8))
    bad["bytes len 4-byte head"] = with_value(raw, big_key, bstr(value, 4))
    chunked = b"\x5f" + bstr(value[:10]) + bstr(value[10:]) + b"\xff"
    bad["indefinite bytes"] = with_value(raw, big_key, chunked)
    bad["indefinite bytes one chunk"] = with_value(raw, big_key, b"\x5f" + bstr(value) + b"\xff")
    for name, data in bad.items():
        with pytest.raises(DecodeError):
            decoders()[kind](data)
        assert data != raw, name


@pytest.mark.parametrize("kind", KINDS)
def test_tags_rejected(valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    for tag in (0, 2, 24, 55799, 258):
        # A tag around one value...
        tagged = cbor2.dumps(cbor2.CBORTag(tag, f[K.SPK_ID if kind != "message" else K.TYPE]))
        key = K.SPK_ID if kind != "message" else K.TYPE
        assert_rejected(kind, with_value(raw, key, tagged))
        # ...around a byte string value, and around the whole frame.
        key_b = K.IDENTITY if kind != "message" else K.HEADER
        assert_rejected(kind, with_value(raw, key_b, head(6, tag) + bstr(f[key_b])))
        assert_rejected(kind, head(6, tag) + raw)
    # The self-describe tag (0xd9d9f7) in front of a valid map.
    assert_rejected(kind, b"\xd9\xd9\xf7" + raw)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_value_types(valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    int_key, bytes_key = (K.TYPE, K.HEADER) if kind == "message" else (K.SPK_ID, K.IDENTITY)
    bvalue: bytes = f[bytes_key]
    wrong_for_bytes = [
        cbor2.dumps(bvalue.hex()),  # text instead of bytes
        cbor2.dumps(bvalue.decode("latin-1")),
        cbor2.dumps(list(bvalue)),
        cbor2.dumps(None),
        cbor2.dumps(True),
        cbor2.dumps(0),
        cbor2.dumps({0: bvalue}),
        cbor2.dumps(1.5),
    ]
    for enc in wrong_for_bytes:
        assert_rejected(kind, with_value(raw, bytes_key, enc))
    wrong_for_int = [
        cbor2.dumps(-1),
        cbor2.dumps(-(2**64)),
        cbor2.dumps(2**64),  # a bignum (tag 2)
        cbor2.dumps(2**32),  # beyond a 32-bit id
        cbor2.dumps(1.0),
        b"\xf9\x3c\x00",  # half-precision 1.0
        cbor2.dumps(True),
        cbor2.dumps(False),
        cbor2.dumps(None),
        b"\xf7",  # undefined
        b"\xe0",  # simple value 0
        cbor2.dumps(b"\x01"),
        cbor2.dumps("1"),
    ]
    for enc in wrong_for_int:
        assert_rejected(kind, with_value(raw, int_key, enc))
    # Version and suite of the wrong type are DecodeErrors too (not a crash).
    for enc in (cbor2.dumps(True), cbor2.dumps(1.0), cbor2.dumps(b"\x01"), cbor2.dumps(-1)):
        assert_rejected(kind, with_value(raw, K.VERSION, enc))
        assert_rejected(kind, with_value(raw, K.SUITE, enc))


@pytest.mark.parametrize("kind", KINDS)
def test_extra_missing_and_foreign_keys(valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    for extra in (16, 23, 24, 1000, 2**32):
        assert_rejected(kind, reencode({**f, extra: 0}))
    for key in f:
        if key not in (K.OPK_ID, K.OPK):
            assert_rejected(kind, reencode({k: v for k, v in f.items() if k != key}))
    # Keys that are not unsigned integers (text, negative, bytes) — appended at the end.
    for key_enc in (cbor2.dumps("a"), cbor2.dumps(-1), cbor2.dumps(b"\x00"), b"\xf4", b"\xf5"):
        assert_rejected(kind, cmap([*pairs_of(raw), (key_enc, uint(0))]))
    # A map with the "false" key in place of key 0 (equal to 0 in a Python dict).
    assert_rejected(kind, cmap([(b"\xf4", uint(1)), *pairs_of(raw)[1:]]))
    # Fields of another frame kind.
    if kind == "message":
        assert_rejected(kind, reencode({**f, K.SPK: bytes(32)}))
        assert_rejected(kind, reencode({**f, K.IDENTITY: bytes(32)}))
    if kind == "bundle":
        assert_rejected(kind, reencode({**f, K.HEADER: bytes(40)}))


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_lengths(suite: Suite, valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    sizes: dict[int, int] = {}
    if kind != "bundle":
        sizes[K.HEADER] = SEALED_HEADER_LEN
    if kind == "prekey":
        sizes |= {K.IDENTITY: 32, K.BASE_KEY: 32, K.KEM_CT: 1568}
    if kind == "bundle":
        sizes |= {K.IDENTITY: 32, K.SPK: 32, K.SPK_SIG: 64, K.OPK: 32}
        sizes |= {K.KEM_PK: 1568, K.KEM_SIG: 64}
    for key, size in sizes.items():
        assert len(f[key]) == size
        for n in (0, 1, size - 1, size + 1, 2 * size):
            assert_rejected(kind, reencode({**f, key: bytes(n)}))


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_version_and_suite(valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    for version in (0, 2, 23, 24, 255, 2**32 - 1):
        assert_rejected(kind, reencode({**f, K.VERSION: version}), UnsupportedVersion)
    # 1 and 2 are retired suites (libsignal's schedule in these frames; the HMAC key schedule
    # suite 3 replaced): as unknown as any other.
    for suite_id in (0, 1, 2, 4, 255, 2**16):
        assert_rejected(kind, reencode({**f, K.SUITE: suite_id}), UnknownSuite)
    assert issubclass(UnsupportedVersion, DecodeError) and issubclass(UnknownSuite, DecodeError)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_frame_type(valid: dict[str, bytes], kind: str) -> None:
    raw = valid[kind]
    f = frame_fields(raw)
    for t in (0, 4, 9, 2**32 - 1, T.MESSAGE, T.PREKEY_MESSAGE, T.BUNDLE):
        if t != f[K.TYPE]:
            assert_rejected(kind, reencode({**f, K.TYPE: t}))


def test_message_and_prekey_fields_must_match_type(suite: Suite, valid: dict[str, bytes]) -> None:
    msg, pre = frame_fields(valid["message"]), frame_fields(valid["prekey"])
    # A plain message carrying prekey fields, and a prekey message without them.
    for key in (K.IDENTITY, K.BASE_KEY, K.SPK_ID, K.OPK_ID, K.KEM_ID, K.KEM_CT):
        if key in pre:
            assert_rejected("message", reencode({**msg, key: pre[key]}))
    for key in (K.IDENTITY, K.BASE_KEY, K.SPK_ID):
        assert_rejected("prekey", reencode({k: v for k, v in pre.items() if k != key}))
    assert_rejected("prekey", reencode({**pre, K.TYPE: T.MESSAGE}))


@pytest.mark.parametrize("depth", [10, 399, 401, 5_000, 100_000])
def test_deeply_nested_input(suite: Suite, valid: dict[str, bytes], depth: int) -> None:
    raw = valid["message"]
    for opener in (b"\x81", b"\xa1\x00", b"\x9f", b"\xd8\x18"):  # arrays, maps, indef, tags
        nested = opener * depth + b"\x00" + (b"\xff" * depth if opener == b"\x9f" else b"")
        if len(nested) > MAX_FRAME_BYTES - 100:
            nested = nested[: MAX_FRAME_BYTES - 100]
        assert_rejected("message", with_value(raw, K.HEADER, nested))
        assert_rejected("message", cmap([(uint(0), nested)]))


def test_truncated_and_garbage(suite: Suite, valid: dict[str, bytes]) -> None:
    for kind in KINDS:
        raw = valid[kind]
        for cut in range(0, len(raw), max(1, len(raw) // 97)):
            assert_rejected(kind, raw[:cut])
    for junk in (b"", b"\x00", b"\xa0", b"\xa1", b"\xa1\x00", b"\xb7", b"\xff", b"\x80"):
        assert_rejected("message", junk)
        assert_rejected("bundle", junk)
    # Items that claim to be enormous: nothing is allocated up front, all are DecodeErrors.
    for major in (0x5B, 0x7B, 0x9B, 0xBB):  # bytes, text, array, map with 8-byte lengths
        for n in (2**32, 2**63, 2**64 - 1):
            huge = b"\xa1\x00" + bytes([major]) + struct.pack(">Q", n)
            for kind in KINDS:
                assert_rejected(kind, huge)
                assert_rejected(kind, with_value(valid[kind], K.TYPE, huge[2:]))


@pytest.mark.parametrize("value", [bytearray(b"\xa0"), memoryview(b"\xa0"), "a0", None, 5, [1]])
def test_non_bytes_input(value: object) -> None:
    assert_rejected("message", value)
    assert_rejected("bundle", value)


def test_session_entry_points_reject_malformed_frames(
    suite: Suite, valid: dict[str, bytes]
) -> None:
    """The same malformed frames through Session: DecodeError, state and prekeys unchanged."""
    pair = handshake(suite)
    bob = pair.bob
    assert bob is not None
    raw = pair.alice.encrypt(b"ok")
    pairs = pairs_of(raw)
    for bad in (
        cmap([pairs[1], pairs[0], *pairs[2:]]),
        with_value(raw, K.VERSION, uint(1, 1)),
        reencode({**frame_fields(raw), K.VERSION: 2}),
        reencode({**frame_fields(raw), K.SUITE: 9}),
        bytearray(raw),
    ):
        expect_unchanged(bob, lambda b=bad: bob.decrypt(b), DecodeError)  # type: ignore[arg-type]
        keys_before = pair.bob_keys.used_ids()
        with pytest.raises(DecodeError):
            Session.respond(pair.bob_id, pair.bob_keys, bad, allowed_suites=(suite,))  # type: ignore[arg-type]
        assert pair.bob_keys.used_ids() == keys_before
    assert bob.decrypt(raw) == b"ok"


# --- the body's AD is the received prefix ---------------------------------------------------


def test_prekey_fields_of_a_later_prekey_message_are_authenticated(suite: Suite) -> None:
    """Bob already holds the session; spk/opk/KEM fields of Alice's second prekey message are
    not used to derive anything, yet changing them fails authentication of the body."""
    pair = setup(suite)
    first, second = pair.alice.encrypt(b"1"), pair.alice.encrypt(b"2")
    bob, _ = pair.respond(first)
    f = frame_fields(second)
    changes: list[dict[str, Any]] = [
        {"spk_id": f[K.SPK_ID] + 1},
        {"opk_id": f[K.OPK_ID] + 1},
        {"opk_id": None},
    ]
    ct = f[K.KEM_CT]
    changes += [{"kem_id": f[K.KEM_ID] + 1}, {"kem_ct": bytes([ct[0] ^ 1]) + ct[1:]}]
    for change in changes:
        tampered = edit_frame(second, **change)
        decode_message(tampered)
        expect_unchanged(bob, lambda t=tampered: bob.decrypt(t), AuthenticationFailed)
    # Stripped of all prekey fields (turned into a plain message): the prefix differs.
    plain = reencode(
        {
            K.VERSION: 1,
            K.SUITE: suite.id,
            K.TYPE: T.MESSAGE,
            K.HEADER: f[K.HEADER],
            K.BODY: f[K.BODY],
        }
    )
    decode_message(plain)
    expect_unchanged(bob, lambda: bob.decrypt(plain), AuthenticationFailed)
    assert bob.decrypt(second) == b"2"


def test_bundle_decodes_only_its_own_kind() -> None:
    keys = LocalPrekeys.generate(KeyPair.generate(), PQ)
    raw = keys.bundle().to_bytes()
    assert_rejected("message", raw)
    assert_rejected("bundle", reencode({**frame_fields(raw), K.TYPE: T.MESSAGE}))
