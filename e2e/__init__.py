"""e2e: a Signal-style end-to-end encryption protocol for customer-business messaging.

The public API: sessions, keys and prekeys, suites and the error hierarchy.
"""

from __future__ import annotations

from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptError,
    DuplicateMessage,
    E2EError,
    InvalidKey,
    InvalidSignature,
    KeyAgreementError,
    LimitExceeded,
    NonContributory,
    PolicyError,
    PrekeyReused,
    RandomSourceRefused,
    RatchetStepRequired,
    StateError,
    StoreError,
    SuiteMismatch,
    TooManySkipped,
    UnknownPrekey,
    UnknownSuite,
    UnsupportedVersion,
)
from e2e.keys import KemKeyPair, KeyPair
from e2e.prekeys import LocalPrekeys, PrekeyBundle, PrekeySource
from e2e.session import Session
from e2e.suite import DEFAULT, PQ, Suite

__version__ = "0.1.0"

__all__ = [
    "Session",
    "KeyPair",
    "KemKeyPair",
    "PrekeyBundle",
    "PrekeySource",
    "LocalPrekeys",
    "Suite",
    "PQ",
    "DEFAULT",
    "E2EError",
    "DecodeError",
    "LimitExceeded",
    "UnsupportedVersion",
    "UnknownSuite",
    "InvalidKey",
    "InvalidSignature",
    "KeyAgreementError",
    "NonContributory",
    "UnknownPrekey",
    "PrekeyReused",
    "SuiteMismatch",
    "DecryptError",
    "AuthenticationFailed",
    "DuplicateMessage",
    "TooManySkipped",
    "RandomSourceRefused",
    "RatchetStepRequired",
    "StateError",
    "StoreError",
    "PolicyError",
]
