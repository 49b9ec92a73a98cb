"""Ciphersuites (SPEC.md §1). Every frame and bundle carries its suite id.

``SIGNAL`` (id 1) reproduces libsignal's key schedule: X3DH over X25519 with XEdDSA,
HKDF-SHA256 with the labels "WhisperText", "WhisperRatchet" and "WhisperMessageKeys",
AES-256-CBC with an HMAC-SHA256 tag truncated to 8 bytes, plaintext headers.

``PQ`` (id 2, the default) is PQXDH over X25519 + ML-KEM-1024, a key-committing AEAD
(HKDF-Expand-SHA512 splits each key into an AES-256-GCM key and a 32-byte commitment),
full 16-byte GCM tags and encrypted headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.errors import UnknownSuite

__all__ = ["Suite", "SIGNAL", "PQ", "DEFAULT", "SUITES", "get_suite"]


@dataclass(frozen=True, slots=True)
class Suite:
    """One ciphersuite: its wire id and the constants its KDFs and AEAD use."""

    id: int
    name: str
    #: PQXDH (X25519 + ML-KEM-1024) instead of X3DH.
    pq: bool
    #: Double Ratchet with header encryption.
    header_encryption: bool
    #: HKDF info of the initial key agreement.
    agreement_info: bytes
    #: HKDF info of the root-key step (KDF_RK).
    root_info: bytes
    #: HKDF info of the message-key expansion.
    message_info: bytes
    #: Length of the authentication tag of a message body.
    tag_len: int


SIGNAL: Final = Suite(
    id=1,
    name="SIGNAL_X3DH_X25519_AES256CBC_HMACSHA256",
    pq=False,
    header_encryption=False,
    agreement_info=b"WhisperText",
    root_info=b"WhisperRatchet",
    message_info=b"WhisperMessageKeys",
    tag_len=8,
)

PQ: Final = Suite(
    id=2,
    name="E2E_PQXDH_X25519_MLKEM1024_CMTAES256GCM_HE",
    pq=True,
    header_encryption=True,
    agreement_info=b"E2E_PQXDH_X25519_SHA-256_ML-KEM-1024",
    root_info=b"E2E_Ratchet_HE",
    message_info=b"E2E_MessageKeys",
    tag_len=16,
)

DEFAULT: Final = PQ
SUITES: Final = {SIGNAL.id: SIGNAL, PQ.id: PQ}


def get_suite(suite_id: object) -> Suite:
    """The suite registered under ``suite_id``; :class:`UnknownSuite` otherwise."""
    suite = SUITES.get(suite_id) if type(suite_id) is int else None
    if suite is None:
        raise UnknownSuite(f"unknown ciphersuite id {suite_id!r}")
    return suite
