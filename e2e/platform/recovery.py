"""Recovering an account whose devices are all lost (SPEC.md §10.1, "Recovery").

At account creation the first device makes a *recovery key* ``R`` (32 random bytes) and
shows it to the user once (``E2EREC1`` and the base32 of ``R`` with 2 check bytes). From
it::

    auth seed | wrap key = HKDF-SHA256(R, salt = "", info = "E2E_RECOVERY_v1" | account, 64)

The relay keeps the Ed25519 public key of the auth seed and the account key sealed under the
wrap key: ``nonce (12) | AES-256-GCM(wrap key, nonce, account key secret | public,
"E2E_RECOVERY_BLOB_v1" | account)``. To recover, a new device proves it holds the auth key
(an Ed25519 signature over ``"E2E_RECOVERY_FETCH_v1" | CBOR {0: 1, 1: account, 2: time,
3: nonce}``), receives the sealed account key and opens it with the wrap key: it can then
sign the account's next device list, which revokes every lost device. The relay alone
holds neither key: it cannot open the sealed account key, nor sign a device list. It counts
failed proofs and refuses more than :data:`MAX_FAILURES` an hour for an account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from e2e.errors import AuthenticationFailed, InvalidSignature
from e2e.frame import encode_map
from e2e.keys import KeyPair, Rng
from e2e.platform.codes import decode_code, encode_code

__all__ = [
    "MAX_FAILURES",
    "FAILURE_WINDOW",
    "RecoveryKey",
    "fetch_message",
    "verify_fetch",
]

#: Failed recovery proofs the relay accepts per account within :data:`FAILURE_WINDOW` s.
MAX_FAILURES: Final = 5
FAILURE_WINDOW: Final = 3600
_LABEL: Final = b"E2E_RECOVERY_v1"
_BLOB: Final = b"E2E_RECOVERY_BLOB_v1"
_FETCH: Final = b"E2E_RECOVERY_FETCH_v1"
_PREFIX: Final = "E2EREC1"
_CHECK: Final = 2


def fetch_message(account: bytes, time: int, nonce: bytes) -> bytes:
    """What a recovering device signs with the auth key."""
    return _FETCH + encode_map({0: 1, 1: account, 2: time, 3: nonce})


def verify_fetch(auth_key: bytes, account: bytes, time: int, nonce: bytes, sig: bytes) -> None:
    """:class:`~e2e.errors.InvalidSignature` unless ``sig`` is the auth key's."""
    try:
        key = Ed25519PublicKey.from_public_bytes(auth_key)
        key.verify(sig, fetch_message(account, time, nonce))
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature("recovery proof does not verify") from None


@dataclass(frozen=True, slots=True)
class RecoveryKey:
    """The user's recovery key for one account. Its ``repr`` shows no key material."""

    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> RecoveryKey:
        return cls(rng(32))

    def text(self) -> str:
        """What the user writes down: ``E2EREC1`` then base32 of the key and 2 check bytes
        (SHA-256), in groups of five."""
        body = encode_code(self.secret, _CHECK)
        return " ".join([_PREFIX, *(body[i : i + 5] for i in range(0, len(body), 5))])

    @classmethod
    def parse(cls, text: str) -> RecoveryKey:
        """Inverse of :meth:`text` (spaces and case ignored); :class:`DecodeError` for a
        mistyped key, before anything is sent to the relay."""
        return cls(decode_code(text, _PREFIX, 32, _CHECK, "recovery key"))

    def _keys(self, account: bytes) -> tuple[Ed25519PrivateKey, bytes]:
        out = HKDF(hashes.SHA256(), 64, b"", _LABEL + account).derive(self.secret)
        return Ed25519PrivateKey.from_private_bytes(out[:32]), out[32:]

    def auth_public(self, account: bytes) -> bytes:
        """The public key the relay checks recovery proofs with."""
        return self._keys(account)[0].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def prove(self, account: bytes, time: int, nonce: bytes) -> bytes:
        """The signature of a recovery fetch."""
        return self._keys(account)[0].sign(fetch_message(account, time, nonce))

    def seal(self, account: bytes, account_key: KeyPair, rng: Rng = os.urandom) -> bytes:
        """The account key sealed under the wrap key."""
        nonce = rng(12)
        aead = AESGCM(self._keys(account)[1])
        plain = account_key.private_bytes() + account_key.public
        return nonce + aead.encrypt(nonce, plain, _BLOB + account)

    def open(self, account: bytes, sealed: bytes) -> KeyPair:
        """The account key from its sealed form; :class:`AuthenticationFailed` if it was not
        sealed under this recovery key for this account."""
        if len(sealed) != 12 + 64 + 16:
            raise AuthenticationFailed("a sealed account key of the wrong length")
        try:
            plain = AESGCM(self._keys(account)[1]).decrypt(sealed[:12], sealed[12:],
                                                            _BLOB + account)  # fmt: skip
        except InvalidTag:
            raise AuthenticationFailed("not sealed under this recovery key") from None
        pair = KeyPair.from_private_bytes(plain[:32])
        if pair.public != plain[32:]:
            raise AuthenticationFailed("a sealed account key that does not match itself")
        return pair
