"""SPQR's key derivations and MACs: the authenticator, the epoch secret (SPEC.md §15.7.4).

All are HKDF-SHA256 or HMAC-SHA256 under SPQR's own labels, with epochs written as 8-byte
big-endian numbers. Pure functions over bytes; the authenticator is a small immutable value.
"""

from __future__ import annotations

import hmac as _hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "AUTH_UPDATE_INFO",
    "HEADER_MAC_LABEL",
    "CT_MAC_LABEL",
    "EPOCH_SECRET_INFO",
    "MAC_LEN",
    "hkdf",
    "epoch_secret",
    "Authenticator",
]

_PREFIX: Final = b"Signal_PQCKA_V1_MLKEM768:"
AUTH_UPDATE_INFO: Final = _PREFIX + b"Authenticator Update"
HEADER_MAC_LABEL: Final = _PREFIX + b"ekheader"
CT_MAC_LABEL: Final = _PREFIX + b"ciphertext"
EPOCH_SECRET_INFO: Final = _PREFIX + b"SCKA Key"
MAC_LEN: Final = 32
_SHA256 = hashes.SHA256()
_ZERO32: Final = bytes(32)


def hkdf(salt: bytes | None, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (no salt is the same as 32 zero bytes)."""
    return HKDF(_SHA256, length, salt, info).derive(ikm)


def _be64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def epoch_secret(shared_secret: bytes, epoch: int) -> bytes:
    """The secret an epoch's ML-KEM exchange contributes: HKDF(salt = 0^32, ikm = K,
    info = "...SCKA Key" || be64(epoch))[:32]."""
    return hkdf(_ZERO32, shared_secret, EPOCH_SECRET_INFO + _be64(epoch), 32)


def _mac(key: bytes, label: bytes, epoch: int, *parts: bytes) -> bytes:
    h = hmac.HMAC(key, _SHA256)
    h.update(label + _be64(epoch))
    for p in parts:
        h.update(p)
    return h.finalize()


@dataclass(frozen=True, slots=True, repr=False)
class Authenticator:
    """The running (root key, MAC key) pair that authenticates each epoch's header and
    ciphertext; every epoch secret is folded into it."""

    root_key: bytes
    mac_key: bytes

    @classmethod
    def start(cls, auth_key: bytes, epoch: int) -> Authenticator:
        """From PQXDH's SPQR key: a zero root key updated with ``auth_key`` at ``epoch``."""
        return cls(_ZERO32, _ZERO32).update(epoch, auth_key)

    def update(self, epoch: int, key: bytes) -> Authenticator:
        """(root, mac) = HKDF(salt = 0^32, ikm = root || key,
        info = "...Authenticator Update" || be64(epoch))[:64]."""
        out = hkdf(_ZERO32, self.root_key + key, AUTH_UPDATE_INFO + _be64(epoch), 64)
        return Authenticator(out[:32], out[32:])

    def header_mac(self, epoch: int, header: bytes) -> bytes:
        return _mac(self.mac_key, HEADER_MAC_LABEL, epoch, header)

    def ciphertext_mac(self, epoch: int, ct1: bytes, ct2: bytes) -> bytes:
        return _mac(self.mac_key, CT_MAC_LABEL, epoch, ct1, ct2)

    def header_ok(self, epoch: int, header: bytes, tag: bytes) -> bool:
        return _hmac.compare_digest(self.header_mac(epoch, header), tag)

    def ciphertext_ok(self, epoch: int, ct1: bytes, ct2: bytes, tag: bytes) -> bool:
        return _hmac.compare_digest(self.ciphertext_mac(epoch, ct1, ct2), tag)

    def __repr__(self) -> str:
        return "Authenticator(<secret>)"
