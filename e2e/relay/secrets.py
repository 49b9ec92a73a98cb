"""The relay's own secrets at rest: franking keys and the key-log signing key (SPEC.md §10.8).

With a relay secret key (32 bytes, from ``--secret-key-file``; every relay process on one
database needs the same one) each secret is stored sealed:
``0x01 | nonce (12) | AES-256-GCM(key, nonce, secret, "E2E_RELAY_SECRET_v1" | kind | u64 id)``,
so a copy of the database alone (a backup, a replica, a dump) reveals neither the franking keys
(which would let its holder forge or verify franking tags) nor the log key (which would let it
sign tree heads). The kind and id are bound, so a sealed value moved to another row does not
open. Without a key, secrets are stored as they are (32 bytes), which the relay logs as a
warning at start; a database holding sealed secrets does not open without its key.
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e2e.errors import StoreError

__all__ = ["SecretSealer", "SECRET_KEY_LEN"]

SECRET_KEY_LEN: Final = 32
_SEALED: Final = 0x01
_LABEL: Final = b"E2E_RELAY_SECRET_v1"
_SEALED_LEN: Final = 1 + 12 + 32 + 16


class SecretSealer:
    """Seals and opens the relay's 32-byte secrets under an optional relay secret key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != SECRET_KEY_LEN:
            raise StoreError("the relay secret key must be 32 bytes")
        self._aead = AESGCM(key) if key is not None else None

    def __repr__(self) -> str:
        return f"SecretSealer(sealed={self._aead is not None})"

    @property
    def sealing(self) -> bool:
        return self._aead is not None

    @staticmethod
    def _aad(kind: bytes, ident: int) -> bytes:
        return _LABEL + kind + ident.to_bytes(8, "big")

    def seal(self, kind: bytes, ident: int, secret: bytes) -> bytes:
        """What to store for ``secret``: sealed with the key, else the secret itself."""
        if self._aead is None:
            return secret
        nonce = os.urandom(12)
        return bytes([_SEALED]) + nonce + self._aead.encrypt(nonce, secret, self._aad(kind, ident))

    def open(self, kind: bytes, ident: int, stored: bytes) -> bytes:
        """The secret behind a stored value; :class:`StoreError` if it is sealed and there
        is no key, or it does not open under this key (another key, another row, altered)."""
        if len(stored) == SECRET_KEY_LEN:
            return stored  # stored before the relay had a key
        if len(stored) != _SEALED_LEN or stored[0] != _SEALED:
            raise StoreError("a relay secret in the database is malformed")
        if self._aead is None:
            raise StoreError("the relay's secrets are sealed: start it with its secret key")
        try:
            return self._aead.decrypt(stored[1:13], stored[13:], self._aad(kind, ident))
        except InvalidTag:
            raise StoreError("a relay secret does not open under this secret key") from None

    def is_sealed(self, stored: bytes) -> bool:
        return len(stored) == _SEALED_LEN and hmac.compare_digest(stored[:1], bytes([_SEALED]))
