"""ML-KEM-768 with SPQR's incremental interface (SPEC.md §15.7.3).

SPQR sends an ML-KEM-768 encapsulation key in two parts and the ciphertext in two parts, so
that the encapsulating side can start before it has the whole key:

* header (64 bytes) = ``rho || SHA3-256(ek)``, where ``ek = t_hat (1152) || rho (32)`` is the
  FIPS 203 encapsulation key; the *encapsulation-key vector* is ``t_hat`` alone;
* ``ct1`` (960 bytes) = ``ByteEncode_10(Compress_10(u))`` needs only the header;
* ``ct2`` (128 bytes) = ``ByteEncode_4(Compress_4(v))`` needs ``t_hat`` too;
* ``ct1 || ct2`` is exactly the FIPS 203 ciphertext of ``ML-KEM.Encaps_internal(ek, m)``, and
  the shared secret is its ``K``.

Key generation and decapsulation are plain ML-KEM-768 and run in ``cryptography`` (the
decapsulation key is kept as its 64-byte seed). Only FIPS 203's K-PKE.Encrypt, split at the
point where ``t_hat`` is first needed, is written here: :func:`encaps1` computes
``(K, r) = G(m || H(ek))``, ``y``, ``e1`` and ``u``; :func:`encaps2` derives ``y`` and ``e2``
from ``r`` again (so the state kept between the two is ``m`` and the header) and computes
``v``. Checked against NIST's ACVP ML-KEM-768 encapsulation vectors and by ``cryptography``
decapsulating what it produces (tests/libsignal/test_spqr_mlkem.py).

This is pure Python: its running time depends on ``m`` and ``r``, secrets of one SPQR epoch
(SPEC.md §15.7.9 says why that is accepted).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import mlkem

from e2e.errors import DecodeError, InvalidKey
from e2e.keys import Rng, checked_rng

__all__ = [
    "HEADER_LEN",
    "EK_VECTOR_LEN",
    "CT1_LEN",
    "CT2_LEN",
    "SEED_LEN",
    "SECRET_LEN",
    "KeyPair",
    "header_of",
    "ek_matches_header",
    "encaps1",
    "encaps2",
    "decapsulate",
]

Q: Final = 3329
N: Final = 256
K: Final = 3
DU: Final = 10
DV: Final = 4
HEADER_LEN: Final = 64
EK_VECTOR_LEN: Final = 384 * K
CT1_LEN: Final = 32 * DU * K
CT2_LEN: Final = 32 * DV
SEED_LEN: Final = 64
SECRET_LEN: Final = 32
M_LEN: Final = 32


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


_ZETAS: Final = [pow(17, _bitrev7(i), Q) for i in range(128)]
_GAMMAS: Final = [pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128)]
_N_INV: Final = 3303  # 128^-1 mod q


def _ntt(f: list[int]) -> list[int]:
    a = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * a[j + length] % Q
                a[j + length] = (a[j] - t) % Q
                a[j] = (a[j] + t) % Q
        length //= 2
    return a


def _ntt_inv(f: list[int]) -> list[int]:
    a = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = a[j]
                a[j] = (t + a[j + length]) % Q
                a[j + length] = zeta * (a[j + length] - t) % Q
        length *= 2
    return [x * _N_INV % Q for x in a]


def _mul_ntt(f: list[int], g: list[int]) -> list[int]:
    h = [0] * N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def _sample_ntt(seed: bytes) -> list[int]:
    """FIPS 203 SampleNTT: rejection sampling from SHAKE128(seed)."""
    out: list[int] = []
    length = 3 * 168 * 4
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        out.clear()
        for p in range(0, length, 3):
            c0, c1, c2 = stream[p], stream[p + 1], stream[p + 2]
            d1 = c0 | (c1 & 0x0F) << 8
            d2 = c1 >> 4 | c2 << 4
            if d1 < Q:
                out.append(d1)
                if len(out) == N:
                    return out
            if d2 < Q:
                out.append(d2)
                if len(out) == N:
                    return out
        length *= 2  # pragma: no cover - needs > 2016 bytes of SHAKE output (p < 2^-100)


def _cbd2(seed: bytes, nonce: int) -> list[int]:
    """SamplePolyCBD_2(PRF_2(seed, nonce)): each coefficient from four bits."""
    data = hashlib.shake_256(seed + bytes((nonce,))).digest(128)
    out = []
    for byte in data:
        for nib in (byte & 0x0F, byte >> 4):
            out.append(((nib & 1) + (nib >> 1 & 1) - (nib >> 2 & 1) - (nib >> 3)) % Q)
    return out


def _encode(coeffs: list[int], d: int) -> bytes:
    acc = 0
    for i, c in enumerate(coeffs):
        acc |= c << (d * i)
    return acc.to_bytes(32 * d, "little")


def _decode(data: bytes, d: int) -> list[int]:
    acc = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    return [acc >> (d * i) & mask for i in range(N)]


def _compress(coeffs: list[int], d: int) -> list[int]:
    mask = (1 << d) - 1
    return [((x << d) + Q // 2) // Q & mask for x in coeffs]


def _g(data: bytes) -> tuple[bytes, bytes]:
    out = hashlib.sha3_512(data).digest()
    return out[:32], out[32:]


def _check_header(header: object) -> bytes:
    if type(header) is not bytes or len(header) != HEADER_LEN:
        raise InvalidKey("ML-KEM-768 header must be 64 bytes")
    return header


def _check_m(m: object) -> bytes:
    if type(m) is not bytes or len(m) != M_LEN:
        raise ValueError("ML-KEM-768 randomness m must be 32 bytes")
    return m


def _y_hat(r: bytes) -> list[list[int]]:
    return [_ntt(_cbd2(r, i)) for i in range(K)]


def header_of(ek: bytes) -> bytes:
    """The 64-byte header of a 1184-byte encapsulation key: rho || SHA3-256(ek)."""
    return ek[EK_VECTOR_LEN:] + hashlib.sha3_256(ek).digest()


def ek_matches_header(header: bytes, ek_vector: bytes) -> bool:
    """Whether ``ek_vector`` completes ``header`` into a valid FIPS 203 encapsulation key:
    SHA3-256(ek_vector || rho) equals the header's hash, and every 12-bit coefficient of
    ``ek_vector`` is below q (the FIPS 203 modulus check)."""
    if len(header) != HEADER_LEN or len(ek_vector) != EK_VECTOR_LEN:
        return False
    if hashlib.sha3_256(ek_vector + header[:32]).digest() != header[32:]:
        return False
    acc = int.from_bytes(ek_vector, "little")
    return all(acc >> (12 * i) & 0xFFF < Q for i in range(N * K))


def encaps1(header: bytes, m: bytes) -> tuple[bytes, bytes]:
    """(ct1, shared secret K) for the key ``header`` names and randomness ``m`` (32 bytes)."""
    rho, h_ek = _check_header(header)[:32], header[32:]
    secret, r = _g(_check_m(m) + h_ek)
    y_hat = _y_hat(r)
    ct1 = b""
    for i in range(K):
        acc = [0] * N
        for j in range(K):
            prod = _mul_ntt(_sample_ntt(rho + bytes((i, j))), y_hat[j])
            acc = [(x + p) % Q for x, p in zip(acc, prod, strict=True)]
        e1 = _cbd2(r, K + i)
        u = [(x + e) % Q for x, e in zip(_ntt_inv(acc), e1, strict=True)]
        ct1 += _encode(_compress(u, DU), DU)
    return ct1, secret


def encaps2(header: bytes, m: bytes, ek_vector: bytes) -> bytes:
    """ct2 for the same ``header`` and ``m`` as :func:`encaps1`, given the key's vector
    (which the caller has checked with :func:`ek_matches_header`)."""
    if type(ek_vector) is not bytes or len(ek_vector) != EK_VECTOR_LEN:
        raise InvalidKey("ML-KEM-768 encapsulation-key vector must be 1152 bytes")
    _, r = _g(_check_m(m) + _check_header(header)[32:])
    y_hat = _y_hat(r)
    acc = [0] * N
    for j in range(K):
        t_hat = _decode(ek_vector[384 * j : 384 * (j + 1)], 12)
        prod = _mul_ntt(t_hat, y_hat[j])
        acc = [(x + p) % Q for x, p in zip(acc, prod, strict=True)]
    e2 = _cbd2(r, 2 * K)
    bits = int.from_bytes(m, "little")
    v = [
        (x + e + (1665 if bits >> i & 1 else 0)) % Q
        for i, (x, e) in enumerate(zip(_ntt_inv(acc), e2, strict=True))
    ]
    return _encode(_compress(v, DV), DV)


@dataclass(frozen=True, slots=True, repr=False)
class KeyPair:
    """A fresh ML-KEM-768 key pair: its seed (the decapsulation key), header and vector."""

    seed: bytes
    header: bytes
    ek_vector: bytes

    @classmethod
    def generate(cls, rng: Rng) -> KeyPair:
        return cls.from_seed(checked_rng(rng)(SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if type(seed) is not bytes or len(seed) != SEED_LEN:
            raise InvalidKey("ML-KEM-768 seed must be 64 bytes")
        ek = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
        return cls(seed, header_of(ek), ek[:EK_VECTOR_LEN])

    def __repr__(self) -> str:
        return "mlkem768.KeyPair(<secret>)"


def decapsulate(seed: bytes, ct1: bytes, ct2: bytes) -> bytes:
    """ML-KEM-768.Decaps of ``ct1 || ct2`` under the key pair of ``seed`` (cryptography)."""
    if len(ct1) != CT1_LEN or len(ct2) != CT2_LEN:
        raise DecodeError("ML-KEM-768 ciphertext parts have the wrong length")
    key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    return key.decapsulate(ct1 + ct2)
