"""Codes a person reads, shows or types (SPEC.md §10.1): the link code of a new device and
the recovery key of an account.

A code is a fixed prefix, then the unpadded base32 of a fixed-length payload followed by the
first bytes of its SHA-256 (the check bytes). Spaces and letter case are ignored on input,
so a code may be grouped for reading; a mistyped code fails its check bytes here, before
anything is sent to the relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from e2e.errors import DecodeError

__all__ = ["encode_code", "decode_code"]


def _check(payload: bytes, check: int) -> bytes:
    return hashlib.sha256(payload).digest()[:check]


def encode_code(payload: bytes, check: int) -> str:
    """The base32 body of a code: ``payload`` and its ``check`` check bytes (no prefix)."""
    return base64.b32encode(payload + _check(payload, check)).decode().rstrip("=")


def decode_code(text: str, prefix: str, length: int, check: int, what: str) -> bytes:
    """The ``length``-byte payload of ``text`` (``prefix`` then :func:`encode_code`'s body;
    spaces and case ignored); :class:`DecodeError` naming ``what`` for anything else."""
    body = "".join(text.split()).upper()
    if not body.startswith(prefix):
        raise DecodeError(f"not a {what}")
    body = body[len(prefix) :]
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise DecodeError(f"a {what} is base32") from None
    if len(raw) != length + check:
        raise DecodeError(f"a {what} has the wrong length")
    payload = raw[:length]
    if not hmac.compare_digest(_check(payload, check), raw[length:]):
        raise DecodeError(f"the {what}'s check bytes do not match: mistyped?")
    return payload
