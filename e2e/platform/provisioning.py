"""Linking a new device from an existing one (SPEC.md §10.1, "Linking"): the new device's
code and the sealed grant the existing device sends through the relay.

The new device shows a *link code*: a random provisioning id, a fresh X25519 key (its
ephemeral key, kept only until the grant arrives) and its identity key. An admin device of
the account reads it (a QR code, a typed string: never through the relay), certifies the
identity key and seals the grant to the ephemeral key::

    shared = X25519(x, ephemeral key), x a fresh key of the sender
    key    = HKDF-SHA256(shared, salt = provisioning id,
                         info = "E2E_PROVISION_v1" | ephemeral key | X | identity key)
    sealed = X | nonce (12) | AES-256-GCM(key, nonce, grant, "E2E_PROVISION_v1" | id)

The relay stores ``sealed`` under the provisioning id until the new device fetches it: it
learns the id, the sealed length and the sender, never the grant, and cannot make a grant
the new device accepts (it never sees the ephemeral key, and everything the grant carries
is signed by the account key).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.errors import AuthenticationFailed
from e2e.keys import X25519_LEN, KeyPair, Rng, check_x25519_public
from e2e.platform.codes import decode_code, encode_code

__all__ = ["LABEL", "ID_LEN", "MAX_SEALED", "LinkCode", "seal_grant", "open_grant"]

LABEL: Final = b"E2E_PROVISION_v1"
ID_LEN: Final = 16
#: Largest sealed grant the relay keeps (a grant holds a device list, SPEC §10.1).
MAX_SEALED: Final = 160 * 1024
_PREFIX: Final = "E2ELINK1"
_CHECK: Final = 4


@dataclass(frozen=True, slots=True)
class LinkCode:
    """What a new device shows: its provisioning id, ephemeral key and identity key."""

    provisioning_id: bytes
    ephemeral: bytes
    identity: bytes

    def text(self) -> str:
        """``E2ELINK1`` and the base32 of id | ephemeral key | identity key | 4 check bytes
        (SHA-256), so a mistyped code is refused before anything is sent."""
        return _PREFIX + encode_code(self.provisioning_id + self.ephemeral + self.identity, _CHECK)

    @classmethod
    def parse(cls, text: str) -> LinkCode:
        """Inverse of :meth:`text` (spaces and case ignored); :class:`DecodeError`."""
        raw = decode_code(text, _PREFIX, ID_LEN + 2 * X25519_LEN, _CHECK, "link code")
        pid, eph = raw[:ID_LEN], raw[ID_LEN : ID_LEN + X25519_LEN]
        ident = raw[ID_LEN + X25519_LEN :]
        return cls(pid, check_x25519_public(eph), check_x25519_public(ident))


def _key(shared: bytes, code: LinkCode, sender: bytes) -> bytes:
    info = LABEL + code.ephemeral + sender + code.identity
    return HKDF(hashes.SHA256(), 32, code.provisioning_id, info).derive(shared)


def seal_grant(code: LinkCode, grant: bytes, rng: Rng = os.urandom) -> bytes:
    """Seal ``grant`` to the new device of ``code`` (the existing device's side)."""
    x = KeyPair.generate(rng)
    key = _key(x.exchange(code.ephemeral), code, x.public)
    nonce = rng(12)
    return x.public + nonce + AESGCM(key).encrypt(nonce, grant, LABEL + code.provisioning_id)


def open_grant(code: LinkCode, ephemeral: KeyPair, sealed: bytes) -> bytes:
    """Open a sealed grant with the new device's ephemeral key;
    :class:`~e2e.errors.AuthenticationFailed` for anything not sealed to it."""
    if len(sealed) < X25519_LEN + 12 + 16 or len(sealed) > MAX_SEALED:
        raise AuthenticationFailed("a sealed grant of an impossible length")
    sender = check_x25519_public(sealed[:X25519_LEN])
    key = _key(ephemeral.exchange(sender), code, sender)
    nonce, body = sealed[X25519_LEN : X25519_LEN + 12], sealed[X25519_LEN + 12 :]
    try:
        return AESGCM(key).decrypt(nonce, body, LABEL + code.provisioning_id)
    except InvalidTag:
        raise AuthenticationFailed("the grant was not sealed to this device") from None
