"""Verifier of the ``xeddsa`` concept (vectors/xeddsa.json).

A case has hex ``public_key``, ``message`` and ``signature`` and a boolean ``valid``.
Valid cases must pass :func:`e2e.xeddsa.verify`; invalid ones must raise the
:mod:`e2e.errors` class named by ``error`` (default ``InvalidSignature``). When
``private_key`` is given, X25519 of it (libsodium) must equal ``public_key``; when
``random`` is given too, :func:`e2e.xeddsa.sign` must reproduce ``signature`` exactly.
"""

from __future__ import annotations

from typing import Any

from nacl.bindings import crypto_scalarmult_base

from e2e import errors, xeddsa
from e2e.vectors.registry import verifier

__all__ = ["verify_xeddsa_case"]


def _hex(case: dict[str, Any], field: str) -> bytes:
    return bytes.fromhex(str(case[field]))


@verifier("xeddsa")
def verify_xeddsa_case(case: dict[str, Any]) -> None:
    public_key = _hex(case, "public_key")
    message = _hex(case, "message")
    signature = _hex(case, "signature")
    valid = case["valid"]
    if not isinstance(valid, bool):
        raise TypeError("case field 'valid' must be a boolean")

    if "private_key" in case:
        private_key = _hex(case, "private_key")
        if crypto_scalarmult_base(private_key) != public_key:
            raise AssertionError("public_key is not X25519(private_key)")
        if "random" in case and xeddsa.sign(private_key, message, _hex(case, "random")) != (
            signature
        ):
            raise AssertionError("sign() does not reproduce the signature")

    if valid:
        xeddsa.verify(public_key, message, signature)
        return
    expected = getattr(errors, str(case.get("error", "InvalidSignature")))
    if not (isinstance(expected, type) and issubclass(expected, errors.E2EError)):
        raise TypeError("case field 'error' must name an e2e.errors class")
    try:
        xeddsa.verify(public_key, message, signature)
    except expected:
        return
    raise AssertionError(f"invalid signature accepted (expected {expected.__name__})")
