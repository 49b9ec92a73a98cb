"""ML-KEM-768 split in two encapsulation steps (e2e.libsignal.spqr.mlkem768).

NIST's ACVP vectors (vectors/mlkem768.json) and libsignal's own exchanges
(vectors/libsignal_spqr.json, kind split_encaps) pin the bytes; here ``cryptography``
decapsulates everything the split encapsulation makes, and the key checks refuse what FIPS
203 refuses.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import DecodeError, InvalidKey
from e2e.libsignal.spqr import mlkem768 as M


@settings(max_examples=25)
@given(st.binary(min_size=64, max_size=64), st.binary(min_size=32, max_size=32))
def test_cryptography_decapsulates_every_split_ciphertext(seed: bytes, m: bytes) -> None:
    keys = M.KeyPair.from_seed(seed)
    ct1, shared = M.encaps1(keys.header, m)
    ct2 = M.encaps2(keys.header, m, keys.ek_vector)
    assert len(ct1) == M.CT1_LEN and len(ct2) == M.CT2_LEN
    private = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    assert private.decapsulate(ct1 + ct2) == shared
    assert M.decapsulate(seed, ct1, ct2) == shared


def test_header_and_vector_are_the_fips_203_key_split() -> None:
    keys = M.KeyPair.generate(os.urandom)
    ek = mlkem.MLKEM768PrivateKey.from_seed_bytes(keys.seed).public_key().public_bytes_raw()
    assert keys.ek_vector + keys.header[:32] == ek  # t_hat || rho
    assert M.ek_matches_header(keys.header, keys.ek_vector)
    assert "secret" in repr(keys) and keys.seed.hex() not in repr(keys)


def test_the_same_m_gives_the_same_ciphertext_and_another_m_another() -> None:
    keys = M.KeyPair.generate(os.urandom)
    m = os.urandom(32)
    assert M.encaps1(keys.header, m) == M.encaps1(keys.header, m)
    assert M.encaps1(keys.header, m)[0] != M.encaps1(keys.header, os.urandom(32))[0]


def test_a_ct2_from_another_m_decapsulates_to_a_different_secret() -> None:
    keys = M.KeyPair.generate(os.urandom)
    m1, m2 = os.urandom(32), os.urandom(32)
    ct1, shared = M.encaps1(keys.header, m1)
    wrong = M.encaps2(keys.header, m2, keys.ek_vector)
    assert M.decapsulate(keys.seed, ct1, wrong) != shared


def _with_coefficient(vector: bytes, index: int, value: int) -> bytes:
    acc = int.from_bytes(vector, "little")
    acc &= ~(0xFFF << (12 * index))
    acc |= value << (12 * index)
    return acc.to_bytes(len(vector), "little")


@pytest.mark.parametrize(("index", "value"), [(0, 3329), (255, 4095), (767, 3330)])
def test_a_vector_with_a_coefficient_not_below_q_fails_the_modulus_check(
    index: int, value: int
) -> None:
    keys = M.KeyPair.generate(os.urandom)
    bad = _with_coefficient(keys.ek_vector, index, value)
    header = M.header_of(bad + keys.header[:32])  # its hash matches: only the modulus fails
    assert not M.ek_matches_header(header, bad)
    assert M.ek_matches_header(header, _with_coefficient(bad, index, 3328)) is False
    ok = _with_coefficient(keys.ek_vector, index, 3328)
    assert M.ek_matches_header(M.header_of(ok + keys.header[:32]), ok)
    with pytest.raises(ValueError):
        mlkem.MLKEM768PublicKey.from_public_bytes(bad + keys.header[:32])  # FIPS 203 agrees


def test_a_vector_of_another_key_or_length_does_not_match() -> None:
    a, b = M.KeyPair.generate(os.urandom), M.KeyPair.generate(os.urandom)
    assert not M.ek_matches_header(a.header, b.ek_vector)
    assert not M.ek_matches_header(a.header, a.ek_vector[:-1])
    assert not M.ek_matches_header(a.header[:-1], a.ek_vector)


def test_bad_inputs_are_typed_errors() -> None:
    keys = M.KeyPair.generate(os.urandom)
    with pytest.raises(InvalidKey):
        M.encaps1(keys.header[:63], bytes(32))
    with pytest.raises(InvalidKey):
        M.encaps2(keys.header, bytes(32), keys.ek_vector[:10])
    with pytest.raises(InvalidKey):
        M.KeyPair.from_seed(bytes(63))
    with pytest.raises(DecodeError):
        M.decapsulate(keys.seed, bytes(959), bytes(128))
    with pytest.raises(ValueError):
        M.encaps1(keys.header, bytes(31))
