"""Ciphersuites (SPEC.md §1). Every frame and bundle carries its suite id.

``PQ`` (id 2, the default and only registered suite) is PQXDH over X25519 + ML-KEM-1024,
a key-committing AEAD (HKDF-Expand-SHA512 splits each key into an AES-256-GCM key and a
32-byte commitment), full 16-byte GCM tags and encrypted headers.

Id 1 (a former suite that put libsignal's key schedule in e2e's own frames) is retired: it
is unknown like any other id. libsignal compatibility is :mod:`e2e.libsignal` (SPEC.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.errors import UnknownSuite

__all__ = ["Suite", "PQ", "DEFAULT", "SUITES", "get_suite"]


@dataclass(frozen=True, slots=True)
class Suite:
    """One ciphersuite: its wire id and the labels its KDFs use (its algorithms are fixed:
    PQXDH, the Double Ratchet with header encryption, the committing AEAD of SPEC.md §4.3)."""

    id: int
    name: str
    #: HKDF info of the initial key agreement.
    agreement_info: bytes
    #: HKDF info of the root-key step (KDF_RK).
    root_info: bytes
    #: HKDF info of the message-key expansion.
    message_info: bytes


PQ: Final = Suite(
    id=2,
    name="E2E_PQXDH_X25519_MLKEM1024_CMTAES256GCM_HE",
    agreement_info=b"E2E_PQXDH_X25519_SHA-256_ML-KEM-1024",
    root_info=b"E2E_Ratchet_HE",
    message_info=b"E2E_MessageKeys",
)

DEFAULT: Final = PQ
SUITES: Final = {PQ.id: PQ}


def get_suite(suite_id: object) -> Suite:
    """The suite registered under ``suite_id``; :class:`UnknownSuite` otherwise."""
    suite = SUITES.get(suite_id) if type(suite_id) is int else None
    if suite is None:
        raise UnknownSuite(f"unknown ciphersuite id {suite_id!r}")
    return suite
