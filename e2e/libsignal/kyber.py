"""libsignal's KEM, round-3 Kyber-1024 (key type 0x08), through FIPS 203 ML-KEM-1024.

libsignal serializes Kyber keys and ciphertexts with a type byte 0x08 and uses the round-3
Kyber-1024 KEM, whose shared secret differs from ML-KEM-1024's. The key and ciphertext formats
are the same, and the two KEMs differ only where the final secret is derived: with
``K`` the 32 bytes ML-KEM returns and ``c`` the ciphertext,

    Kyber-1024 shared secret = SHAKE-256(K || SHA3-256(c)), first 32 bytes.

So both directions run on ``cryptography``'s ML-KEM-1024, with no lattice code here:

* encapsulating to a Kyber public key: ML-KEM's ``(K, c)`` for that key gives the Kyber
  secret above (ML-KEM's ``m`` is Kyber's hashed ``m``; decapsulation recomputes the same);
* decapsulating with a key pair generated as ML-KEM (a valid Kyber key pair: the key
  generation differs only in how the seed is expanded): the ML-KEM output ``K`` for ``c``
  gives the Kyber secret above.

Checked against libsignal itself by the interoperability tests (tests/interop/) and the
recorded vectors (vectors/libsignal_wire.json). Only the implicit-rejection value for an
invalid ciphertext differs from Kyber's, and such a secret only ever fails a MAC.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes

from e2e.errors import DecodeError, E2EError, InvalidKey
from e2e.keys import KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, KemKeyPair, kem_encapsulate

__all__ = [
    "KYBER_TYPE",
    "KYBER1024_PUBLIC_LEN",
    "KYBER1024_CIPHERTEXT_LEN",
    "kyber_secret",
    "encapsulate",
    "decapsulate",
    "serialize_public",
    "parse_public",
    "parse_ciphertext",
]

#: libsignal's key type byte for Kyber-1024 keys and ciphertexts.
KYBER_TYPE: Final = 0x08
KYBER1024_PUBLIC_LEN: Final = 1 + KEM_PUBLIC_LEN
KYBER1024_CIPHERTEXT_LEN: Final = 1 + KEM_CIPHERTEXT_LEN


def kyber_secret(mlkem_secret: bytes, ciphertext: bytes) -> bytes:
    """SHAKE-256(ML-KEM secret || SHA3-256(ciphertext)) truncated to 32 bytes."""
    h = hashes.Hash(hashes.SHA3_256())
    h.update(ciphertext)
    shake = hashes.Hash(hashes.SHAKE256(32))
    shake.update(mlkem_secret + h.finalize())
    return shake.finalize()


def serialize_public(raw_public: bytes) -> bytes:
    """0x08 || the 1568-byte encapsulation key."""
    return bytes((KYBER_TYPE,)) + raw_public


def _unwrap(serialized: object, length: int, what: str, error: type[E2EError]) -> bytes:
    """The bytes after the type byte of a serialized Kyber-1024 ``what`` of ``length`` bytes
    (type byte included), else ``error``."""
    if type(serialized) is not bytes or len(serialized) != length or serialized[0] != KYBER_TYPE:
        raise error(f"not a serialized Kyber-1024 {what}")
    return serialized[1:]


def parse_public(serialized: object) -> bytes:
    """The raw 1568-byte key of a serialized Kyber-1024 public key, else :class:`InvalidKey`."""
    return _unwrap(serialized, KYBER1024_PUBLIC_LEN, "public key", InvalidKey)


def parse_ciphertext(serialized: object) -> bytes:
    """The raw 1568-byte ciphertext of a serialized Kyber-1024 ciphertext."""
    return _unwrap(serialized, KYBER1024_CIPHERTEXT_LEN, "ciphertext", DecodeError)


def encapsulate(serialized_public: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to a serialized Kyber public key: (Kyber secret, serialized ciphertext)."""
    ss, ct = kem_encapsulate(parse_public(serialized_public))
    return kyber_secret(ss, ct), bytes((KYBER_TYPE,)) + ct


def decapsulate(pair: KemKeyPair, serialized_ciphertext: bytes) -> bytes:
    """The Kyber secret of a serialized ciphertext under ``pair``."""
    ct = parse_ciphertext(serialized_ciphertext)
    return kyber_secret(pair.decapsulate(ct), ct)
