"""e2e: a Signal-style end-to-end encryption protocol for customer-business messaging.

The public API of the core: sessions, keys and prekeys, suites, and the one error hierarchy
(:mod:`e2e.errors`, SPEC.md §8). The relay service is :mod:`e2e.relay`, a client device
:mod:`e2e.client`, the formats they share :mod:`e2e.platform`, libsignal's wire format
:mod:`e2e.libsignal`, key storage :mod:`e2e.store`.
"""

from __future__ import annotations

from e2e import errors
from e2e.errors import *  # noqa: F403 - the whole hierarchy is public
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
    *errors.__all__,  # the one error hierarchy (SPEC.md §8)
]
