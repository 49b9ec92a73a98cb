"""ECVRF-EDWARDS25519-SHA512-TAI, the verifiable random function of RFC 9381 section 5 with the
ciphersuite of its section 5.5 (suite string 0x03), built on libsodium's edwards25519 point
operations (through PyNaCl); vectors/ecvrf.json holds RFC 9381 Appendix B.3's examples.

The key directory (:mod:`e2e.platform.transparency`, SPEC.md §13.5) hashes every account
name into a label with it: only the holder of the VRF secret key (the relay) can compute a
label, anyone with the public key can check one, so the log's leaves name no account.

Conventions of the suite: scalars and integers are little-endian; points are RFC 8032
encodings (section 5.1.2), decoded by :func:`string_to_point` as RFC 8032 section 5.1.3 does
(any point of the curve, not only of the prime-order subgroup: try-and-increment clears the
cofactor after decoding); the secret key is an Ed25519 seed, the secret scalar and public
key those of RFC 8032 section 5.1.5; cLen = 16, qLen = 32; the nonce is RFC 9381 section
5.4.2.2's.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Final

from nacl import bindings as _na
from nacl.exceptions import RuntimeError as _NaclRuntimeError

from e2e.errors import InvalidKey, InvalidProof

__all__ = [
    "SUITE",
    "PROOF_LEN",
    "OUTPUT_LEN",
    "VrfKey",
    "string_to_point",
    "encode_to_curve",
    "proof_to_hash",
    "verify",
]

SUITE: Final = b"\x03"
PROOF_LEN: Final = 80
OUTPUT_LEN: Final = 64
_P: Final = 2**255 - 19
_Q: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)
_C_LEN: Final = 16


def string_to_point(s: bytes) -> bytes | None:
    """``s`` if it is the RFC 8032 encoding of a point of edwards25519 (section 5.1.3: y < p, x
    recovered from y, no x = 0 with the sign bit set), else None."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little") & ((1 << 255) - 1)
    sign = s[31] >> 7
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    vx2 = (v * x * x) % _P
    if vx2 == (-u) % _P:
        x = (x * _SQRT_M1) % _P
    elif vx2 != u:
        return None
    if x == 0 and sign:
        return None
    return s


def _scalar(n: int) -> bytes:
    return n.to_bytes(32, "little")


def _mul(n: int, point: bytes) -> bytes:
    """``n · point`` (a point of the prime-order subgroup); InvalidProof if libsodium
    refuses (another point, or the identity as the result)."""
    try:
        return bytes(_na.crypto_scalarmult_ed25519_noclamp(_scalar(n % _Q), point))
    except (_NaclRuntimeError, ValueError, TypeError):
        raise InvalidProof("VRF point operation refused") from None


def _base(n: int) -> bytes:
    try:
        return bytes(_na.crypto_scalarmult_ed25519_base_noclamp(_scalar(n % _Q)))
    except (_NaclRuntimeError, ValueError, TypeError):
        raise InvalidProof("VRF point operation refused") from None


def _add(a: bytes, b: bytes) -> bytes:
    try:
        return bytes(_na.crypto_core_ed25519_add(a, b))
    except (_NaclRuntimeError, ValueError, TypeError):
        raise InvalidProof("VRF point operation refused") from None


def _sub(a: bytes, b: bytes) -> bytes:
    try:
        return bytes(_na.crypto_core_ed25519_sub(a, b))
    except (_NaclRuntimeError, ValueError, TypeError):
        raise InvalidProof("VRF point operation refused") from None


def _cofactor(point: bytes) -> bytes:
    """8 · point, by three doublings (any point of the curve)."""
    for _ in range(3):
        point = _add(point, point)
    return point


def encode_to_curve(public: bytes, alpha: bytes) -> bytes:
    """ECVRF_encode_to_curve_try_and_increment (RFC 9381 section 5.4.1.1), salt = the public key."""
    for ctr in range(256):
        h = hashlib.sha512(SUITE + b"\x01" + public + alpha + bytes([ctr]) + b"\x00").digest()
        point = string_to_point(h[:32])
        if point is not None:
            return _cofactor(point)
    raise InvalidProof("no point found for this input")  # pragma: no cover - 2^-256


def _challenge(*points: bytes) -> int:
    h = hashlib.sha512(SUITE + b"\x02" + b"".join(points) + b"\x00").digest()
    return int.from_bytes(h[:_C_LEN], "little")


def _output(gamma: bytes) -> bytes:
    return hashlib.sha512(SUITE + b"\x03" + _cofactor(gamma) + b"\x00").digest()


def proof_to_hash(pi: bytes) -> bytes:
    """The 64-byte VRF output of a proof (RFC 9381 section 5.2), without verifying it."""
    return _output(_decode(pi)[0])


def _decode(pi: bytes) -> tuple[bytes, int, int]:
    if type(pi) is not bytes or len(pi) != PROOF_LEN:
        raise InvalidProof("a VRF proof is 80 bytes")
    gamma = string_to_point(pi[:32])
    s = int.from_bytes(pi[48:], "little")
    if gamma is None or s >= _Q:
        raise InvalidProof("a VRF proof that does not decode")
    return gamma, int.from_bytes(pi[32:48], "little"), s


@functools.lru_cache(maxsize=16)
def _valid_public(public: bytes) -> bool:
    """Whether ``public`` decodes (a verifier checks the same few keys over and over)."""
    return type(public) is bytes and string_to_point(public) is not None


def verify(public: bytes, pi: bytes, alpha: bytes) -> bytes:
    """ECVRF_verify (RFC 9381 section 5.3): the VRF output for ``alpha`` under ``public`` if ``pi``
    proves it, else :class:`~e2e.errors.InvalidProof`. The public key must be a point of
    the prime-order subgroup that is not of small order (section 5.4.5's key validation)."""
    if not _valid_public(public):
        raise InvalidProof("a VRF public key that does not decode")
    if type(pi) is not bytes or len(pi) != PROOF_LEN:
        raise InvalidProof("a VRF proof is 80 bytes")
    gamma, c, s = pi[:32], int.from_bytes(pi[32:48], "little"), int.from_bytes(pi[48:], "little")
    # libsodium's scalar multiplication below refuses a Γ that is not a canonical point of
    # the prime-order subgroup (stricter than decoding; an honest Γ always is): only a
    # zero challenge, which skips it, needs the decoding check here.
    if s >= _Q or (c == 0 and string_to_point(gamma) is None):
        raise InvalidProof("a VRF proof that does not decode")
    h = encode_to_curve(public, alpha)
    u = _sub(_base(s), _mul(c, public)) if c else _base(s)
    v = _sub(_mul(s, h), _mul(c, gamma)) if c else _mul(s, h)
    if _challenge(public, h, gamma, u, v) != c:
        raise InvalidProof("VRF proof does not verify")
    return _output(gamma)


@dataclass(frozen=True, slots=True)
class VrfKey:
    """A VRF secret key (a 32-byte Ed25519 seed, RFC 8032 section 5.1.5). ``repr`` shows no key."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != 32:
            raise InvalidKey("a VRF secret key is 32 bytes")

    def _expanded(self) -> tuple[int, bytes]:
        h = hashlib.sha512(self.seed).digest()
        a = bytearray(h[:32])
        a[0] &= 248
        a[31] &= 127
        a[31] |= 64
        return int.from_bytes(a, "little"), h[32:]

    @property
    def public(self) -> bytes:
        """Y = x · B, the Ed25519 public key of the seed."""
        return bytes(_na.crypto_sign_seed_keypair(self.seed)[0])

    def prove(self, alpha: bytes) -> bytes:
        """ECVRF_prove (RFC 9381 section 5.1): the 80-byte proof for ``alpha``."""
        x, prefix = self._expanded()
        public = self.public
        h = encode_to_curve(public, alpha)
        gamma = _mul(x, h)
        k = int.from_bytes(hashlib.sha512(prefix + h).digest(), "little") % _Q
        c = _challenge(public, h, gamma, _base(k), _mul(k, h))
        s = (k + c * x) % _Q
        return gamma + c.to_bytes(_C_LEN, "little") + _scalar(s)

    def output(self, alpha: bytes) -> tuple[bytes, bytes]:
        """(the VRF output, its proof) for ``alpha``."""
        pi = self.prove(alpha)
        return proof_to_hash(pi), pi
