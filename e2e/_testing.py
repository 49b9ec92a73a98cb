"""Private test hook for injected randomness. Not part of the API.

Every public function of e2e that draws random bytes (key generation, session set-up, the
ratchet's key pairs and nonces) uses ``os.urandom`` unless a caller passes another source;
it refuses any other source with :class:`~e2e.errors.RandomSourceRefused` unless injection
was allowed here. Only tests, the vector verifier (``python -m e2e vectors verify``, whose
known answers need a deterministic source, SPEC.md §11) and the fuzz corpus writer allow it,
so an application cannot hand e2e a non-cryptographic generator by mistake.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["allow_injected_rng", "injected_rng", "injection_allowed"]

_state = threading.local()
_global = [False]


def injection_allowed() -> bool:
    """True while a caller may pass e2e a random source other than ``os.urandom``."""
    allowed: bool | None = getattr(_state, "allowed", None)
    return _global[0] if allowed is None else allowed


def allow_injected_rng(allowed: bool = True) -> None:
    """Allow (or forbid again) injected random sources in this process (test suites)."""
    _global[0] = allowed


@contextmanager
def injected_rng(allowed: bool = True) -> Iterator[None]:
    """Allow (or forbid) injected random sources in this thread for the ``with`` block."""
    before = getattr(_state, "allowed", None)
    _state.allowed = allowed
    try:
        yield
    finally:
        _state.allowed = before
