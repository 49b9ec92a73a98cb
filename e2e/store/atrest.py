"""Encryption of store records at rest (SPEC.md §9.2).

Every record value is sealed under the storage key before it reaches a backend:

    record = FORMAT (1 byte, 0x02) | version (u64) | salt (16 random bytes)
             | AES-256-GCM(k, nonce, pt, ad) | tag
    k      = HMAC-SHA256(storage key, "e2e-store-record-v1" | salt)
    nonce  = 12 zero bytes (every k seals exactly one value)
    ad     = "e2e-store-v2" | u8 len(kind) | kind | u16 len(id) | id | u16 schema version
             | u64 version

A fresh key per write lifts AES-GCM's 2^32-messages-per-key limit for random nonces (a
backend with millions of sessions writes far more than that); the 128-bit salt makes a key
collision negligible (q^2 / 2^129 for q writes). The AD binds the table (kind), the record id
and the record's version (the store epoch of the transaction that wrote it), so a row copied
under another id or into another table fails authentication, and a row's version cannot be
changed without the storage key. Whether a version is the *current* one is the job of the
store's sealed epoch (:mod:`e2e.store.freshness`, SPEC.md §9.7).

The storage key is either 32 raw bytes or derived from a passphrase with scrypt
(cryptography's :class:`Scrypt`); the salt and cost parameters are kept beside the data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from e2e.errors import StoreError, WeakKdfParameters

__all__ = [
    "StorageKey",
    "RECORD_SCHEMA",
    "RECORD_FORMAT",
    "RECORD_OVERHEAD",
    "SCRYPT_N",
    "SCRYPT_MIN_N",
    "SCRYPT_MIN_R",
    "KdfParams",
    "record_ad",
    "record_header",
    "VERSION_MAX",
]

#: Schema version of record plaintexts, bound into every record's AD.
RECORD_SCHEMA: Final = 1
#: First byte of every sealed record.
RECORD_FORMAT: Final = 2
_SALT_LEN: Final = 16
_TAG_LEN: Final = 16
_HEAD_LEN: Final = 1 + 8 + _SALT_LEN
#: Bytes a sealed record adds to its plaintext.
RECORD_OVERHEAD: Final = _HEAD_LEN + _TAG_LEN
#: Largest record version (store epoch).
VERSION_MAX: Final = 2**63 - 1
_NONCE: Final = bytes(12)
_AD_LABEL: Final = b"e2e-store-v2"
_KEY_LABEL: Final = b"e2e-store-record-v1"
_ACC_LABEL: Final = b"e2e-store-accumulator-v1"
_U64 = struct.Struct(">Q")
#: Default scrypt cost (2^17 x 8 x 1: 128 MiB, about a third of a second).
SCRYPT_N: Final = 2**17
#: The floor for a store created from a passphrase: scrypt n >= 2^17 and r >= 8 (128 MiB),
#: the minimum current password-storage guidance gives for scrypt. Creating a store with less
#: raises :class:`~e2e.errors.WeakKdfParameters`.
SCRYPT_MIN_N: Final = 2**17
SCRYPT_MIN_R: Final = 8
_scrypt_floor: int = SCRYPT_MIN_N


def _set_scrypt_floor(n: int) -> int:
    """Test hook only: lower the n floor (tests create stores with n = 2^10 for speed).
    Returns the previous floor so a fixture can restore it."""
    global _scrypt_floor
    previous, _scrypt_floor = _scrypt_floor, n
    return previous


_KDF_FORMAT: Final = 1


def _name(kind: str, record_id: str) -> bytes:
    k = kind.encode()
    i = record_id.encode()
    if len(k) > 0xFF or len(i) > 0xFFFF:
        raise StoreError("record name too long", f"{kind[:32]}/{record_id[:64]}")
    return bytes([len(k)]) + k + struct.pack(">H", len(i)) + i


def record_ad(kind: str, record_id: str, version: int = 0, schema: int = RECORD_SCHEMA) -> bytes:
    """The associated data binding a record to its table, id, schema and version."""
    return _AD_LABEL + _name(kind, record_id) + struct.pack(">HQ", schema, version)


def record_header(kind: str, record_id: str, sealed: object) -> tuple[int, bytes]:
    """(version, salt) from a sealed record's clear header, unauthenticated (the AD binds
    both, so a forged header fails when the record is opened); :class:`StoreError` naming
    the record if it is not a sealed record of this format."""
    if isinstance(sealed, memoryview | bytearray):
        sealed = bytes(sealed)
    if type(sealed) is not bytes or len(sealed) < _HEAD_LEN:
        raise StoreError("record is truncated or not bytes", f"{kind}/{record_id}")
    if sealed[0] != RECORD_FORMAT:
        raise StoreError("record has an unknown format", f"{kind}/{record_id}")
    return _U64.unpack_from(sealed, 1)[0], sealed[9:_HEAD_LEN]


@dataclass(frozen=True, slots=True)
class KdfParams:
    """scrypt parameters stored (in clear) beside the data: format | n | r | p | salt."""

    salt: bytes
    n: int = SCRYPT_N
    r: int = 8
    p: int = 1

    def to_bytes(self) -> bytes:
        return struct.pack(">BIHH", _KDF_FORMAT, self.n, self.r, self.p) + self.salt

    @classmethod
    def from_bytes(cls, data: bytes) -> KdfParams:
        """Decode and bound the costs (at most 1 GiB of scrypt memory: a tampered row must
        not make opening the store exhaust the machine)."""
        if len(data) != 9 + _SALT_LEN or data[0] != _KDF_FORMAT:
            raise StoreError("malformed key derivation parameters", "meta/kdf")
        _, n, r, p = struct.unpack(">BIHH", data[:9])
        if n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * r * n > 2**30:
            raise StoreError("key derivation parameters out of range", "meta/kdf")
        return cls(data[9:], n, r, p)

    @classmethod
    def generate(cls, n: int = SCRYPT_N, r: int = 8, p: int = 1) -> KdfParams:
        """Fresh parameters for a new store: :class:`~e2e.errors.WeakKdfParameters` if the
        costs are below the floor (n >= :data:`SCRYPT_MIN_N`, r >= :data:`SCRYPT_MIN_R`), or
        :class:`StoreError` if they are out of range."""
        if type(n) is not int or type(r) is not int or type(p) is not int:
            raise StoreError("scrypt costs are ints", "meta/kdf")
        if n < _scrypt_floor or r < SCRYPT_MIN_R:
            raise WeakKdfParameters(
                f"scrypt costs below the floor (n >= 2^{_scrypt_floor.bit_length() - 1}, "
                f"r >= {SCRYPT_MIN_R})",
                "meta/kdf",
            )
        params = cls(os.urandom(_SALT_LEN), n, r, p)
        return cls.from_bytes(params.to_bytes())  # the same range checks as a stored row


class StorageKey:
    """The key that seals store records. Never printed; compare with :meth:`same_as`."""

    __slots__ = ("_key", "_acc")

    def __init__(self, key: bytes) -> None:
        if type(key) is not bytes or len(key) != 32:
            raise StoreError("a storage key is 32 bytes")
        self._key = key
        self._acc = hmac.new(key, _ACC_LABEL, hashlib.sha256).digest()

    @classmethod
    def generate(cls) -> StorageKey:
        return cls(os.urandom(32))

    @classmethod
    def from_passphrase(cls, passphrase: str | bytes, params: KdfParams) -> StorageKey:
        """scrypt(passphrase, salt, n, r, p) -> 32 bytes."""
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        if not secret:
            raise StoreError("empty passphrase")
        try:
            key = Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p).derive(
                secret
            )
        except (ValueError, MemoryError):
            raise StoreError("scrypt failed for these parameters", "meta/kdf") from None
        return cls(key)

    @classmethod
    def resolve(
        cls,
        key: StorageKey | bytes | None,
        passphrase: str | bytes | None,
        kdf_params: Callable[[], KdfParams],
    ) -> StorageKey:
        """The store's key from a passphrase (``kdf_params`` reads or creates the store's
        scrypt parameters) or else from ``key`` (raw 32 bytes or a StorageKey). The stores
        check that exactly one was given before they open anything."""
        if passphrase is not None:
            return cls.from_passphrase(passphrase, kdf_params())
        return key if isinstance(key, StorageKey) else cls(key)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "StorageKey(<secret>)"

    def same_as(self, other: StorageKey) -> bool:
        return hmac.compare_digest(self._key, other._key)

    def _record_key(self, salt: bytes) -> AESGCM:
        return AESGCM(hmac.new(self._key, _KEY_LABEL + salt, hashlib.sha256).digest())

    def seal(self, kind: str, record_id: str, plaintext: bytes, version: int = 0) -> bytes:
        """Seal one record value for (kind, record_id) at ``version`` (the store epoch of the
        transaction that writes it)."""
        if type(version) is not int or not 0 <= version <= VERSION_MAX:
            raise StoreError("record version out of range", f"{kind}/{record_id}")
        salt = os.urandom(_SALT_LEN)
        ad = record_ad(kind, record_id, version)
        ct = self._record_key(salt).encrypt(_NONCE, plaintext, ad)
        return bytes([RECORD_FORMAT]) + _U64.pack(version) + salt + ct

    def open_versioned(self, kind: str, record_id: str, sealed: object) -> tuple[int, bytes]:
        """(version, plaintext) of a record; :class:`StoreError` naming it if it is malformed
        or fails to authenticate (tampered, moved from another id, its version changed, or a
        wrong storage key)."""
        if isinstance(sealed, memoryview | bytearray):
            sealed = bytes(sealed)
        version, salt = record_header(kind, record_id, sealed)
        assert isinstance(sealed, bytes)
        if len(sealed) < RECORD_OVERHEAD:
            raise StoreError("record is truncated or not bytes", f"{kind}/{record_id}")
        try:
            return version, self._record_key(salt).decrypt(
                _NONCE, sealed[_HEAD_LEN:], record_ad(kind, record_id, version)
            )
        except InvalidTag:
            raise StoreError(
                "record failed authentication (tampered, moved, or wrong storage key)",
                f"{kind}/{record_id}",
            ) from None

    def open(self, kind: str, record_id: str, sealed: object) -> bytes:
        """The plaintext of a record (:meth:`open_versioned` without the version)."""
        return self.open_versioned(kind, record_id, sealed)[1]

    def accumulator_entry(self, kind: str, record_id: str, version: int, salt: bytes) -> int:
        """The record's term in the store's sealed set accumulator (SPEC.md §9.7): a keyed
        hash of its name, version and salt, as a 256-bit integer XORed into the set."""
        data = _name(kind, record_id) + _U64.pack(version) + salt
        return int.from_bytes(hmac.new(self._acc, data, hashlib.sha256).digest(), "big")
