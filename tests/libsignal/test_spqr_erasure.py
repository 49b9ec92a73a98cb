"""SPQR's field arithmetic and erasure code (e2e.libsignal.spqr.gf16, .erasure).

The recorded streams of the official client are checked by the vectors
(vectors/libsignal_spqr.json); these tests check the algebra and the decoder's contract.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import DecodeError
from e2e.libsignal.spqr import gf16
from e2e.libsignal.spqr.erasure import Decoder, Encoder, chunk

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "libsignal_spqr.json"
elements = st.integers(0, 0xFFFF)
nonzero = st.integers(1, 0xFFFF)


def _clmul_mod(a: int, b: int) -> int:
    """Schoolbook carry-less multiplication reduced by the modulus (independent of tables)."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a & 0x10000:
            a ^= gf16.MODULUS
    return r


@given(elements, elements)
def test_table_multiplication_is_polynomial_multiplication(a: int, b: int) -> None:
    assert gf16.mul(a, b) == _clmul_mod(a, b)


@given(elements, elements, elements)
def test_field_axioms(a: int, b: int, c: int) -> None:
    assert gf16.mul(a, b) == gf16.mul(b, a)
    assert gf16.mul(a, gf16.mul(b, c)) == gf16.mul(gf16.mul(a, b), c)
    assert gf16.mul(a, b ^ c) == gf16.mul(a, b) ^ gf16.mul(a, c)
    assert gf16.mul(a, 1) == a and gf16.mul(a, 0) == 0


@given(nonzero, elements)
def test_division_inverts_multiplication(b: int, a: int) -> None:
    assert gf16.mul(gf16.div(a, b), b) == a
    assert gf16.mul(b, gf16.inv(b)) == 1
    with pytest.raises(ZeroDivisionError):
        gf16.div(a, 0)


@pytest.mark.parametrize("n", [3, 5, 30, 36])
def test_any_n_distinct_chunks_give_the_message_back(n: int) -> None:
    rnd = random.Random(n)
    message = rnd.randbytes(32 * n)
    for _ in range(8):
        picks = rnd.sample(range(0, 2 * n + 70), n)
        dec = Decoder(32 * n)
        for k in picks:
            dec = dec.add(k, chunk(message, k))
        assert dec.complete and dec.message() == message


def test_systematic_chunks_are_the_message_and_parity_is_not() -> None:
    message = os.urandom(96)
    assert [chunk(message, k) for k in range(3)] == [message[:32], message[32:64], message[64:]]
    assert chunk(message, 3) not in (message[:32], message[32:64], message[64:])


def test_encoder_counts_and_wraps_its_index_at_16_bits() -> None:
    message = os.urandom(96)
    enc = Encoder(message)
    seen = []
    for _ in range(5):
        enc, index, data = enc.next_chunk()
        seen.append(index)
        assert data == chunk(message, index)
    assert seen == [0, 1, 2, 3, 4]
    enc, index, data = Encoder(message, 65536 + 1).next_chunk()
    assert index == 1 and data == message[32:64] and enc.sent == 65538


def test_decoder_keeps_the_first_chunk_of_an_index_and_stops_when_complete() -> None:
    message = os.urandom(96)
    dec = Decoder(96).add(0, chunk(message, 0))
    assert dec.add(0, bytes(32)) is dec  # a second chunk 0 is ignored
    dec = dec.add(7, chunk(message, 7)).add(4, chunk(message, 4))
    assert dec.complete and dec.message() == message
    assert dec.add(1, bytes(32)) is dec
    with pytest.raises(ValueError):
        Decoder(96).message()


def test_an_inconsistent_chunk_gives_a_different_message_not_a_crash() -> None:
    message = os.urandom(96)
    dec = Decoder(96).add(5, chunk(message, 5)).add(1, chunk(message, 1)).add(9, bytes(32))
    assert dec.message() != message


@pytest.mark.parametrize(
    "chunks",
    [((0, b"x" * 32),) * 2, ((70000, b"x" * 32),), ((0, b"short"),), ((0, b"a" * 32),) * 4],
)
def test_a_malformed_decoder_state_is_refused(chunks: tuple[tuple[int, bytes], ...]) -> None:
    with pytest.raises(DecodeError):
        Decoder(96, chunks)


def test_bad_message_sizes_are_refused() -> None:
    for size in (0, 31, 33):
        with pytest.raises(ValueError):
            Encoder(bytes(size))
        with pytest.raises(ValueError):
            Decoder(size)


def test_the_vectors_contain_parity_of_every_stream_kind() -> None:
    """The recorded streams must exercise parity, or the vector check would be hollow."""
    cases = json.loads(VECTORS.read_text())["cases"]
    parity = {
        (c["name"].split()[-2], c["libsignal_client"])
        for c in cases
        if c["kind"] == "erasure" and max(i for i, _ in c["chunks"]) >= c["size"] // 32
    }
    for version in ("0.92.2", "0.103.0"):
        assert {k for k, v in parity if v == version} >= {"hdr", "ek", "ct1", "ct2"}
