"""Ciphersuites (SPEC.md §1). Every frame and bundle carries its suite id.

``PQ`` (id 3, the default and only registered suite) is PQXDH over X25519 + ML-KEM-1024,
a Double Ratchet whose root and chain steps are SHAKE256 (each chain step gives the next
chain key and a message key: an AES-256-GCM key and its 32-byte commitment), full 16-byte GCM
tags and encrypted headers that carry the body's commitment.

Ids 1 and 2 are retired: they are unknown like any other id. Id 1 put libsignal's key
schedule in e2e's own frames; id 2 had the HMAC key schedule (a chain step, then an
HMAC-SHA512 per body) that suite 3 replaced (SPEC.md §12). libsignal compatibility is
:mod:`e2e.libsignal` (SPEC.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from e2e.errors import UnknownSuite

__all__ = ["Suite", "PQ", "DEFAULT", "SUITES", "get_suite"]


@dataclass(frozen=True, slots=True)
class Suite:
    """One ciphersuite: its wire id and the labels its KDFs use (its algorithms are fixed:
    PQXDH, the Double Ratchet with header encryption and the key schedule of SPEC.md §4)."""

    id: int
    name: str
    #: HKDF info of the initial key agreement.
    agreement_info: bytes
    #: Label of the root-key step (KDF_RK), after RK | dh_out in its SHAKE256 input.
    root_info: bytes
    #: Label of the chain step (KDF_CK), after CK in its SHAKE256 input.
    chain_info: bytes


PQ: Final = Suite(
    id=3,
    name="E2E_PQXDH_X25519_MLKEM1024_SHAKE256_CMTAES256GCM_HE",
    agreement_info=b"E2E_PQXDH_X25519_SHA-256_ML-KEM-1024",
    root_info=b"E2E_RootStep",
    chain_info=b"E2E_ChainStep",
)

DEFAULT: Final = PQ
SUITES: Final = {PQ.id: PQ}


def get_suite(suite_id: object) -> Suite:
    """The suite registered under ``suite_id``; :class:`UnknownSuite` otherwise."""
    suite = SUITES.get(suite_id) if type(suite_id) is int else None
    if suite is None:
        raise UnknownSuite(f"unknown ciphersuite id {suite_id!r}")
    return suite
