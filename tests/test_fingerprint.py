"""Safety numbers (e2e.fingerprint): libsignal's vectors are in vectors/fingerprint.json;
these tests cover properties and bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError, E2EError, FingerprintVersionMismatch, InvalidKey
from e2e.fingerprint import (
    ScannableFingerprint,
    compare,
    logical_fingerprint,
    safety_number,
    serialize_identity,
)
from e2e.keys import KeyPair

A = KeyPair.generate().public
B = KeyPair.generate().public
EVE = KeyPair.generate().public


def test_both_sides_see_one_number_and_codes_cross_match() -> None:
    mine = safety_number(b"alice", A, b"acme", B, iterations=64)
    theirs = safety_number(b"acme", B, b"alice", A, iterations=64)
    assert mine.display == theirs.display and len(mine.display) == 60
    assert mine.display.isdigit()
    assert len(mine.grouped().split()) == 12
    assert compare(mine, theirs.scannable.to_bytes())
    assert compare(theirs, mine.scannable.to_bytes())
    assert not compare(mine, mine.scannable.to_bytes())


def test_substituted_key_changes_the_number() -> None:
    real = safety_number(b"alice", A, b"acme", B, iterations=64)
    mitm = safety_number(b"alice", A, b"acme", EVE, iterations=64)
    assert real.display != mitm.display
    victim_view = safety_number(b"acme", B, b"alice", A, iterations=64)
    assert not compare(mitm, victim_view.scannable.to_bytes())


def test_33_byte_key_equals_32_byte_key() -> None:
    assert logical_fingerprint(b"x", A, 10) == logical_fingerprint(b"x", b"\x05" + A, 10)
    with pytest.raises(InvalidKey):
        serialize_identity(b"\x06" + A)
    with pytest.raises(InvalidKey):
        serialize_identity(A[:31])


@pytest.mark.parametrize("iterations", [0, 1, 1_000_001])
def test_iteration_bounds(iterations: int) -> None:
    with pytest.raises(DecodeError):
        logical_fingerprint(b"x", A, iterations)


def test_version_mismatch_is_typed() -> None:
    mine = safety_number(b"alice", A, b"acme", B, iterations=8)
    theirs = safety_number(b"acme", B, b"alice", A, version=1, iterations=8)
    with pytest.raises(FingerprintVersionMismatch):
        compare(mine, theirs.scannable.to_bytes())


def _code() -> bytes:
    return safety_number(b"alice", A, b"acme", B, iterations=8).scannable.to_bytes()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c[:-1],  # truncated
        lambda c: c + b"\x00",  # trailing byte
        lambda c: c[2:],  # no version
        lambda c: c[:2] + c[2:] + c[2:38],  # repeated local field
        lambda c: b"\x08\x82\x00" + c[2:],  # non-minimal varint version
        lambda c: b"\x20\x01" + c,  # unknown field
        lambda c: c[:2] + b"\x12\x21\x0a\x1f" + c[6:37] + c[38:],  # 31-byte content
        lambda c: b"",
    ],
)
def test_malformed_codes_are_decode_errors(mutate: object) -> None:
    code = _code()
    bad = mutate(code)  # type: ignore[operator]
    with pytest.raises(DecodeError):
        ScannableFingerprint.from_bytes(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_scanner_never_crashes(data: bytes) -> None:
    try:
        sf = ScannableFingerprint.from_bytes(data)
    except E2EError:
        return
    assert sf.to_bytes() == data
