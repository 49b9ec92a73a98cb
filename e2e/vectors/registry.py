"""The verifier registry of the known-answer vectors: each vector module registers the
verifier of its concept here (a module of its own, so the vector modules need not import the
package that loads them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Verifier", "VERIFIERS", "verifier"]

Verifier = Callable[[dict[str, Any]], None]
VERIFIERS: dict[str, Verifier] = {}


def verifier(concept: str) -> Callable[[Verifier], Verifier]:
    """Register ``fn`` as the verifier of every case of ``concept``."""

    def register(fn: Verifier) -> Verifier:
        if concept in VERIFIERS:
            raise ValueError(f"verifier for {concept!r} registered twice")
        VERIFIERS[concept] = fn
        return fn

    return register
