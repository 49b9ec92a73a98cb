"""SPQR's wire codec (e2e.libsignal.spqr.message): strict, typed errors, libsignal's layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import DecodeError, E2EError
from e2e.libsignal.spqr.message import CHUNK_TYPES, Message, MsgType, Unknown, encode, parse

CHUNK = bytes(range(32))


def test_layout_of_the_first_messages_libsignal_sends() -> None:
    # Alice's first message at minimum version 1: epoch 1, index 1, header chunk 0.
    assert encode(Message(1, 1, MsgType.HDR, (0, CHUNK))) == b"\x01\x01\x01\x01\x00" + CHUNK
    # Bob's first reply: epoch 1, index 1, nothing to send.
    assert encode(Message(1, 1, MsgType.NONE)) == b"\x01\x01\x01\x00"
    # Multi-byte varints (LEB128) for the epoch, index and chunk index.
    big = Message(300, 2**32 - 1, MsgType.CT1, (65535, CHUNK))
    assert encode(big) == b"\x01\xac\x02\xff\xff\xff\xff\x0f\x05\xff\xff\x03" + CHUNK
    assert parse(encode(big)) == big


def test_empty_is_version_0_and_a_later_version_is_read_up_to_its_index() -> None:
    assert parse(b"") is None
    assert parse(b"\x02\x03\x07anything") == Unknown(2, 3, 7)
    assert parse(b"\xff\x01\x00") == Unknown(255, 1, 0)
    for bad in (b"\x02", b"\x02\x00\x01", b"\xff\x01"):
        with pytest.raises(DecodeError):
            parse(bad)


def test_trailing_bytes_are_allowed_as_libsignal_allows_them() -> None:
    msg = Message(3, 9, MsgType.CT1_ACK)
    assert parse(encode(msg) + b"future") == msg


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",  # version 0 must be empty
        b"\x01",  # truncated
        b"\x01\x00\x01\x00",  # epoch 0
        b"\x01\x01\x01",  # no type
        b"\x01\x01\x01\x07",  # unknown type
        b"\x01\x01\x01\x01\x00" + b"x" * 31,  # short chunk
        b"\x01\x01\x01\x01",  # chunk type without its chunk
        b"\x01\x81\x00\x01\x00",  # non-minimal varint
        b"\x01\x01\x80\x80\x80\x80\x10\x00",  # index above 2^32 - 1
        b"\x01\x01\x01\x05\x80\x80\x04" + CHUNK,  # chunk index above 65535
        b"\x01" + b"\xff" * 10 + b"\x01\x01\x00",  # varint longer than 10 bytes / 64 bits
    ],
)
def test_malformed_fields_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse(data)


@given(st.binary(max_size=80))
def test_arbitrary_bytes_give_a_message_or_a_typed_error(data: bytes) -> None:
    try:
        out = parse(data)
    except E2EError:
        return
    if isinstance(out, Message):
        # A parsed message re-encodes to a prefix of its input (the rest is ignored).
        assert data.startswith(encode(out))


@given(
    st.integers(1, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(MsgType)),
    st.integers(0, 65535),
    st.binary(min_size=32, max_size=32),
)
def test_round_trip(epoch: int, index: int, kind: MsgType, at: int, data: bytes) -> None:
    msg = Message(epoch, index, kind, (at, data) if kind in CHUNK_TYPES else None)
    assert parse(encode(msg)) == msg


def test_invalid_messages_cannot_be_built() -> None:
    for bad in (
        lambda: Message(0, 1, MsgType.NONE),
        lambda: Message(1, 2**32, MsgType.NONE),
        lambda: Message(1, 1, MsgType.HDR),
        lambda: Message(1, 1, MsgType.NONE, (0, CHUNK)),
        lambda: Message(1, 1, MsgType.HDR, (65536, CHUNK)),
    ):
        with pytest.raises(ValueError):
            bad()
