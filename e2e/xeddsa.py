"""XEdDSA (XEd25519) signatures with X25519 keys (SPEC.md §2.2).

Implements Signal's XEdDSA specification (revision 1, 2016-10-20,
https://signal.org/docs/specifications/xeddsa/) so that one X25519 key pair serves both
Diffie-Hellman and signatures.

Contract
--------
``sign(private_key, message, random) -> bytes``
    ``private_key`` is a 32-byte X25519 private key; it is clamped first (as X25519 does),
    so any 32 bytes are accepted. ``random`` is the 64-byte secret nonce input Z; callers
    pass 64 fresh bytes from a CSPRNG (a repeated Z with the same key and message only
    repeats the signature, but a weak Z weakens the nonce). The result is the 64-byte
    signature ``R || s`` of the spec: the Edwards key pair is derived with
    ``calculate_key_pair`` (``a`` negated when ``kB`` has sign bit 1, so ``A`` has sign bit
    0), ``r = hash1(a || M || Z) mod q``, ``h = SHA512(R || A || M) mod q``,
    ``s = r + h*a mod q``. ``a`` is always the *reduced* scalar ``k mod q`` or
    ``-k mod q`` as the spec says. (libsignal-protocol-c hashes the unreduced clamped ``k``
    when no negation is needed, so its signatures differ from ours for such keys; both
    verify everywhere.) The top bit of ``s`` is always 0.

    Every secret scalar operation and hash goes through libsodium via
    :mod:`nacl.bindings`; no secret value becomes a Python int. The choice between ``a``
    and ``-a`` is a libsodium scalar multiplication by ``+1`` or ``-1``, not a branch.

``verify(public_key, message, signature) -> None``
    Returns on success and raises :class:`~e2e.errors.InvalidSignature` otherwise.
    ``public_key`` is the 32-byte X25519 public key (Montgomery ``u``).

    Two conventions for the Edwards sign bit of ``A`` are accepted:

    * the spec's: ``A`` always has sign bit 0 and the top bit of ``s`` is 0;
    * libsignal's (Rust ``curve25519.rs``, libsignal-protocol-java / curve25519-java,
      libsignal-protocol-c ``curve25519_sign``): the signer does not negate ``a`` but stores
      ``A``'s sign bit in the otherwise unused top bit of ``s`` (``signature[63] & 0x80``).

    So verification takes ``sign_bit = signature[63] >> 7``, clears it from ``s``, and
    checks the signature against the Edwards point with ``y = (u - 1) / (u + 1)`` and that
    sign bit. Spec signatures always carry 0 there, so they verify as before.

    Rejected (``InvalidSignature``): a signature that is not 64 bytes; ``u >= p`` (the whole
    32-byte little-endian value, bit 255 included; libsignal's Rust code would mask that
    bit, the spec and libsignal-protocol-c reject it); ``u = p - 1``, which has no Edwards
    image; ``s`` with any of its top three bits set after the sign bit is removed (spec:
    ``s >= 2^|q|``); and everything libsodium's Ed25519 verification rejects: a
    non-canonical ``s`` (``s >= q``; stricter than the spec, which tolerates
    ``q <= s < 2^253``, and never produced by a conforming signer), a small-order or
    non-canonical ``R`` or ``A``, and a wrong equation ``sB = R + hA`` (checked without
    cofactor, as the spec does).

    ``InvalidKey`` is raised for a ``public_key`` that is not 32 bytes.

Errors never carry key bytes, nonces or signatures.
"""

from __future__ import annotations

import functools
from typing import Final

from nacl import bindings as _nacl
from nacl.exceptions import CryptoError

from e2e.errors import InvalidKey, InvalidSignature

__all__ = [
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "RANDOM_BYTES",
    "SIGNATURE_BYTES",
    "sign",
    "verify",
]

PRIVATE_KEY_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
RANDOM_BYTES: Final = 64
SIGNATURE_BYTES: Final = 64

#: p = 2^255 - 19, the field prime of Curve25519.
_P: Final = 2**255 - 19

#: hash1 prefix: 2^b - 1 - 1 little-endian, i.e. 0xFE followed by 31 0xFF bytes.
_HASH1_PREFIX: Final = b"\xfe" + b"\xff" * 31
#: 32 zero bytes: pad a 32-byte scalar to the 64 bytes scalar_reduce takes.
_ZERO32: Final = bytes(32)
#: Scalars +1 and -1 mod q, indexed by the sign bit of kB.
_SIGN_SCALARS: Final = (
    (1).to_bytes(32, "little"),
    (2**252 + 27742317777372353535851937790883648493 - 1).to_bytes(32, "little"),
)


def sign(private_key: bytes, message: bytes, random: bytes) -> bytes:
    """Sign ``message`` with X25519 ``private_key`` and 64 random bytes; return ``R || s``.

    Raises :class:`~e2e.errors.InvalidKey` when ``private_key`` is not 32 bytes or
    ``random`` is not 64 bytes (``random`` is secret nonce material, so it is treated as
    key input). See the module docstring for the exact algorithm.
    """
    if len(private_key) != PRIVATE_KEY_BYTES:
        raise InvalidKey("XEdDSA private key must be 32 bytes")
    if len(random) != RANDOM_BYTES:
        raise InvalidKey("XEdDSA random input must be 64 bytes")
    k = bytearray(private_key)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k_bytes = bytes(k)

    # calculate_key_pair: E = kB; A = E with sign bit 0; a = k or -k (mod q) accordingly.
    e_point = _nacl.crypto_scalarmult_ed25519_base_noclamp(k_bytes)
    k_reduced = _nacl.crypto_core_ed25519_scalar_reduce(k_bytes + _ZERO32)
    a = _nacl.crypto_core_ed25519_scalar_mul(k_reduced, _SIGN_SCALARS[e_point[31] >> 7])
    a_point = e_point[:31] + bytes((e_point[31] & 0x7F,))

    # r = hash1(a || M || Z) mod q; R = rB.
    r = _nacl.crypto_core_ed25519_scalar_reduce(
        _nacl.crypto_hash_sha512(b"".join((_HASH1_PREFIX, a, message, random)))
    )
    r_point = _nacl.crypto_scalarmult_ed25519_base_noclamp(r)

    # h = hash(R || A || M) mod q; s = r + h*a mod q.
    h = _nacl.crypto_core_ed25519_scalar_reduce(
        _nacl.crypto_hash_sha512(b"".join((r_point, a_point, message)))
    )
    s = _nacl.crypto_core_ed25519_scalar_add(r, _nacl.crypto_core_ed25519_scalar_mul(h, a))
    return r_point + s


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an XEdDSA signature; return None or raise :class:`~e2e.errors.InvalidSignature`.

    Accepts both the spec's convention and libsignal's (``A``'s sign bit in the top bit of
    ``s``). Raises :class:`~e2e.errors.InvalidKey` when ``public_key`` is not 32 bytes.
    See the module docstring for everything that is rejected.
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKey("XEdDSA public key must be 32 bytes")
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature("XEdDSA signature must be 64 bytes")
    last = signature[63]
    if last & 0x60:
        # s >= 2^253 once the sign bit (bit 7 of the last byte) is removed.
        raise InvalidSignature("XEdDSA signature does not verify")
    y = _edwards_y(public_key)
    if y is None:
        raise InvalidSignature("XEdDSA signature does not verify")
    ed_public = (y | ((last >> 7) << 255)).to_bytes(32, "little")
    signed = b"".join((signature[:63], bytes((last & 0x7F,)), message))
    try:
        _nacl.crypto_sign_open(signed, ed_public)
    except (CryptoError, ValueError, TypeError):
        raise InvalidSignature("XEdDSA signature does not verify") from None


@functools.lru_cache(maxsize=1024)
def _edwards_y(public_key: bytes) -> int | None:
    """y = (u - 1) / (u + 1) mod p for a public Montgomery u (None if u >= p - 1).

    A modular inverse costs ~35 us in Python and a PQ bundle verifies two signatures by
    the same identity key, so it is cached per (public) key.
    """
    u = int.from_bytes(public_key, "little")  # public value: Python ints are fine here
    if u >= _P - 1:  # u >= p, or u = p - 1 (u + 1 = 0 has no inverse)
        return None
    return (u - 1) * pow(u + 1, -1, _P) % _P
