"""Envelope, delivery record, inner message and padding: exact shapes, strict decoding."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError, E2EError, LimitExceeded, UnsupportedVersion
from e2e.platform import Delivery, Envelope, Inner, MessageClass, pad, unpad
from e2e.platform.envelope import MAX_BODY_BYTES, PAD_BUCKETS

ENV = Envelope(
    MessageClass.TEMPLATE, b"shop", 2, b"alice", b"alice", 1, bytes(range(16)), bytes(32), b"F" * 40
)


def test_envelope_roundtrip_and_exact_encoding() -> None:
    raw = ENV.to_bytes()
    assert Envelope.from_bytes(raw) == ENV
    assert cbor2.loads(raw) == {
        0: 1, 1: 2, 2: b"shop", 3: 2, 4: b"alice", 5: b"alice", 6: 1,
        7: bytes(range(16)), 8: bytes(32), 9: b"F" * 40,
    }  # fmt: skip
    assert raw[:3] == bytes([0xAA, 0x00, 0x01])  # map of 10, key 0 = version 1


@pytest.mark.parametrize(
    "change",
    [
        {1: 9},  # unknown class
        {1: 0},
        {2: b""},  # empty account
        {4: b"x" * 65},  # account too long
        {7: bytes(15)},  # message id length
        {8: bytes(31)},  # commitment length
        {3: b"1"},  # wrong type
        {10: 1},  # unknown key
    ],
)
def test_envelope_rejects_bad_fields(change: dict[int, object]) -> None:
    obj = cbor2.loads(ENV.to_bytes())
    obj.update(change)
    with pytest.raises(DecodeError):
        Envelope.from_bytes(cbor2.dumps(dict(sorted(obj.items()))))


def test_envelope_rejects_version_and_non_canonical() -> None:
    obj = cbor2.loads(ENV.to_bytes())
    obj[0] = 2
    with pytest.raises(UnsupportedVersion):
        Envelope.from_bytes(cbor2.dumps(obj))
    raw = ENV.to_bytes()
    # The same map with keys out of order is not canonical.
    reordered = cbor2.dumps(dict(reversed(list(cbor2.loads(raw).items()))))
    with pytest.raises(DecodeError):
        Envelope.from_bytes(reordered)
    with pytest.raises(DecodeError):
        Envelope.from_bytes(raw[:-1])
    with pytest.raises(DecodeError):
        Envelope.from_bytes(bytearray(raw))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_envelope_and_delivery_decoders_raise_only_typed_errors(data: bytes) -> None:
    for decode in (Envelope.from_bytes, Delivery.from_bytes):
        try:
            decode(data)
        except E2EError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_every_single_byte_change_is_rejected_or_reencodes(pos: int, value: int) -> None:
    raw = bytearray(ENV.to_bytes())
    pos %= len(raw)
    raw[pos] = value
    try:
        env = Envelope.from_bytes(bytes(raw))
    except E2EError:
        return
    assert env.to_bytes() == bytes(raw)  # accepted only if canonical: re-encodes exactly


def test_delivery_roundtrip() -> None:
    d = Delivery(ENV.to_bytes(), 1_767_225_600, bytes(range(32)), 7)
    assert Delivery.from_bytes(d.to_bytes()) == d
    assert d.open_envelope() == ENV
    with pytest.raises(DecodeError):
        Delivery.from_bytes(d.to_bytes()[:-2])


@pytest.mark.parametrize("n", [0, 1, 126, 127, 128, 129, 255, 256, 1000, 5000])
def test_padding_to_buckets(n: int) -> None:
    data = bytes([0x41]) * n
    padded = pad(data)
    assert len(padded) in PAD_BUCKETS
    assert len(padded) == min(b for b in PAD_BUCKETS if b > n)
    assert unpad(padded) == data


def test_unpad_rejects_malformed() -> None:
    with pytest.raises(DecodeError):
        unpad(b"\x80" + bytes(126))  # not a bucket size
    with pytest.raises(DecodeError):
        unpad(bytes(128))  # no mark
    with pytest.raises(DecodeError):
        unpad(b"abc" + bytes(125))  # mark missing before zeros
    with pytest.raises(LimitExceeded):
        pad(bytes(PAD_BUCKETS[-1]))


def test_inner_roundtrip_hides_content_in_repr() -> None:
    inner = Inner(MessageClass.SERVICE, b"alice", b"shop", bytes(16), b"K" * 32, b"secret text")
    padded = inner.to_padded()
    assert len(padded) == 128
    back = Inner.from_padded(padded)
    assert back.body == b"secret text" and back.franking_key == b"K" * 32
    assert "secret" not in repr(back) and "KKKK" not in repr(back)
    assert back.matches(ENV) is False
    with pytest.raises(LimitExceeded):
        Inner(
            MessageClass.SERVICE, b"a", b"b", bytes(16), bytes(32), bytes(MAX_BODY_BYTES + 1)
        ).to_padded()
    with pytest.raises(DecodeError):
        Inner.from_padded(pad(b"\xa0"))  # an empty map: no fields


def test_frames_reveal_only_the_bucket(tmp_path: Path) -> None:
    """Through the relay service: what it holds of a message's length is its padding bucket."""
    from world import Service, run

    async def go() -> None:
        svc = Service(tmp_path)
        (shop,) = await svc.account("shop", "business", auto_receipts=False)
        (alice,) = await svc.account("alice", "customer", auto_receipts=False)
        await alice.send("shop", "hi")
        await shop.sync()

        async def frame_size(text: str) -> int:
            await shop.send("alice", text)
            raw = (await alice.transport.fetch())[-1]
            return len(Delivery.from_bytes(raw).open_envelope().frame)

        sizes = {await frame_size("x" * n) for n in (1, 10, 25, 40)}
        assert len(sizes) == 1
        grown = await frame_size("x" * 100) - sizes.pop()
        assert grown in (128, 129)  # the next bucket (and perhaps one more CBOR length byte)
        await svc.aclose()

    run(go)
