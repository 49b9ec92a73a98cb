"""Key value types: X25519 key pairs, ML-KEM-1024 key pairs, and their public encodings
(SPEC.md §2.1).

Private key bytes stay inside :class:`KeyPair` / :class:`KemKeyPair`; their ``repr`` never
shows them. Public keys travel as raw bytes (32 for X25519, 1568 for ML-KEM-1024) and are
checked here, at the edge, so the rest of the code can trust their length.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings as _nacl
from cryptography.hazmat.primitives.asymmetric import mlkem
from nacl.exceptions import CryptoError as _CryptoError

from e2e import _testing
from e2e.errors import InvalidKey, NonContributory, RandomSourceRefused

__all__ = [
    "Rng",
    "KeyPair",
    "KemKeyPair",
    "X25519_LEN",
    "KEM_PUBLIC_LEN",
    "KEM_CIPHERTEXT_LEN",
    "KEM_SEED_LEN",
    "EC_TYPE",
    "KEM_TYPE",
    "encode_ec",
    "encode_kem",
    "check_x25519_public",
    "check_kem_public",
    "parse_kem_public",
    "dh",
    "kem_encapsulate",
    "checked_rng",
    "require_injection_allowed",
]

#: A source of random bytes: ``rng(n)`` returns n bytes. ``os.urandom`` outside of tests and
#: vectors: any other source is refused unless e2e._testing allows it (:func:`checked_rng`).
Rng = Callable[[int], bytes]


def checked_rng(rng: Rng) -> Rng:
    """``rng`` itself if it is ``os.urandom`` or the private test hook allows injection;
    else :class:`RandomSourceRefused` (an application must not pass its own generator)."""
    if rng is not os.urandom:
        require_injection_allowed()
    return rng


def require_injection_allowed() -> None:
    """:class:`RandomSourceRefused` unless e2e._testing allows injected randomness."""
    if not _testing.injection_allowed():
        raise RandomSourceRefused("e2e draws its randomness from os.urandom only")


X25519_LEN = 32
KEM_PUBLIC_LEN = 1568
KEM_CIPHERTEXT_LEN = 1568
KEM_SEED_LEN = 64
SHARED_SECRET_LEN = 32
#: Type bytes of the public key encodings (Encode_EC / Encode_KEM in SPEC.md §2).
EC_TYPE = b"\x05"
KEM_TYPE = b"\x0a"


def check_x25519_public(key: object) -> bytes:
    """Return ``key`` if it is 32 bytes, else raise :class:`InvalidKey`."""
    if type(key) is not bytes or len(key) != X25519_LEN:
        raise InvalidKey("X25519 public key must be 32 bytes")
    return key


def parse_kem_public(key: object) -> mlkem.MLKEM1024PublicKey:
    """Parse an ML-KEM-1024 encapsulation key (FIPS 203 checks), else :class:`InvalidKey`."""
    if type(key) is not bytes or len(key) != KEM_PUBLIC_LEN:
        raise InvalidKey("ML-KEM-1024 public key must be 1568 bytes")
    try:
        return mlkem.MLKEM1024PublicKey.from_public_bytes(key)
    except ValueError:
        raise InvalidKey("ML-KEM-1024 public key is malformed") from None


def check_kem_public(key: object) -> bytes:
    """Return ``key`` if it is an ML-KEM-1024 encapsulation key, else raise :class:`InvalidKey`."""
    parse_kem_public(key)
    assert type(key) is bytes
    return key


def encode_ec(public: bytes) -> bytes:
    """Encode_EC: the type byte 0x05 followed by the 32-byte X25519 u-coordinate."""
    return EC_TYPE + public


def encode_kem(public: bytes) -> bytes:
    """Encode_KEM: the type byte 0x0a followed by the 1568-byte ML-KEM-1024 key."""
    return KEM_TYPE + public


@dataclass(frozen=True, slots=True, eq=False)
class KeyPair:
    """An X25519 key pair. ``public`` is the raw u-coordinate.

    The private key is kept as its 32 raw bytes and used through libsodium's
    ``crypto_scalarmult`` (which clamps), so loading a stored pair costs no scalar
    multiplication.
    """

    _secret: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> KeyPair:
        return cls.from_private_bytes(checked_rng(rng)(32))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        if type(data) is not bytes or len(data) != 32:
            raise InvalidKey("X25519 private key must be 32 bytes")
        return cls(data, _nacl.crypto_scalarmult_base(data))

    @classmethod
    def from_stored(cls, secret: bytes, public: bytes) -> KeyPair:
        """Rebuild a pair from stored bytes without recomputing the public key."""
        if len(secret) != 32 or len(public) != 32:
            raise InvalidKey("X25519 key pair must be 32 + 32 bytes")
        return cls(secret, public)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key, for serialization and XEdDSA only."""
        return self._secret

    def exchange(self, public: bytes) -> bytes:
        """X25519 with ``public``; raises :class:`NonContributory` on an all-zero output."""
        if type(public) is not bytes or len(public) != X25519_LEN:
            raise InvalidKey("X25519 public key must be 32 bytes")
        try:
            return _nacl.crypto_scalarmult(self._secret, public)
        except _CryptoError:  # libsodium refuses an all-zero result (a low-order point)
            raise NonContributory("X25519 output is all zeros (low-order public key)") from None


def dh(pair: KeyPair, public: bytes) -> bytes:
    """DH(pair, public) as in the Signal specs."""
    return pair.exchange(public)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class KemKeyPair:
    """An ML-KEM-1024 key pair, held as its 64-byte seed (FIPS 203 (d, z))."""

    _private: mlkem.MLKEM1024PrivateKey
    public: bytes = field()

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> KemKeyPair:
        return cls.from_seed(checked_rng(rng)(KEM_SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> KemKeyPair:
        if type(seed) is not bytes or len(seed) != KEM_SEED_LEN:
            raise InvalidKey("ML-KEM-1024 seed must be 64 bytes")
        priv = mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed)
        return cls(priv, priv.public_key().public_bytes_raw())

    def seed(self) -> bytes:
        """The 64-byte seed, for serialization only."""
        return self._private.private_bytes_raw()

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if type(ciphertext) is not bytes or len(ciphertext) != KEM_CIPHERTEXT_LEN:
            raise InvalidKey("ML-KEM-1024 ciphertext must be 1568 bytes")
        try:
            return self._private.decapsulate(ciphertext)
        except ValueError:  # pragma: no cover - implicit rejection returns a value instead
            raise InvalidKey("ML-KEM-1024 ciphertext rejected") from None

    def __repr__(self) -> str:
        return f"KemKeyPair(public={self.public.hex()[:16]}...)"


def kem_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to ``public``: returns (shared secret, ciphertext)."""
    ss, ct = parse_kem_public(public).encapsulate()
    return ss, ct
