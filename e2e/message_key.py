"""Message keys: expansion of a message key seed and the suite's AEAD (SPEC.md §4.3).

Suite 2, a key-committing AEAD. For a 32-byte key K and label L,
HKDF-Expand-SHA512(K, L, 64) -> AES-256-GCM key (32) | commitment (32). A body draws a fresh
16-byte random value R that is mixed into L, so every body has its own GCM key and
commitment even if a restored (rolled-back) state uses its message key twice: body =
R | commitment | GCM ciphertext | 16-byte tag, under the zero nonce. A header draws a fresh
12-byte nonce and commits with HMAC-SHA256(commit key, nonce), so no header byte is constant
across a chain. Opening checks the commitment first, so a ciphertext opens under at most one
key (HMAC is collision resistant).
"""

from __future__ import annotations

import hmac as _hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e2e.errors import AuthenticationFailed
from e2e.suite import Suite

__all__ = [
    "expand_message_key",
    "committing_keys",
    "seal",
    "open_",
    "seal_header",
    "open_header",
    "HeaderCipher",
    "HEADER_LABEL",
    "GCM_ZERO_NONCE",
    "BODY_NONCE_LEN",
    "HEADER_NONCE_LEN",
]

_SHA256 = hashes.SHA256()
_SHA512 = hashes.SHA512()
HEADER_LABEL = b"E2E_HeaderKeys"
#: Every suite-2 body GCM key (derived from a message key and a fresh random value R)
#: seals exactly one body, so its GCM nonce is fixed.
GCM_ZERO_NONCE = bytes(12)
#: Length of a body's random value R (suite 2), the first bytes of the sealed body.
BODY_NONCE_LEN = 16
#: Length of a header's random GCM nonce (suite 2), the first bytes of the sealed header.
HEADER_NONCE_LEN = 12
_COMMIT_LEN = 32
_GCM_TAG = 16
_BODY_COMMIT_END = BODY_NONCE_LEN + _COMMIT_LEN
_HEADER_NONCE = HEADER_NONCE_LEN
_HEADER_COMMIT_END = _HEADER_NONCE + _COMMIT_LEN
#: HKDF-Expand's info for the header AEAD keys: label | 0x01 (see committing_keys).
_HEADER_INFO = HEADER_LABEL + b"\x01"


def committing_keys(key: bytes, label: bytes) -> tuple[bytes, bytes]:
    """HKDF-Expand-SHA512(key, label, 64) split into (AES-256-GCM key, commitment).

    With L = 64 = HashLen, HKDF-Expand is exactly one HMAC-SHA512(key, label | 0x01).
    """
    h = hmac.HMAC(key, _SHA512)
    h.update(label + b"\x01")
    out = h.finalize()
    return out[:32], out[32:]


def expand_message_key(suite: Suite, seed: bytes, nonce: bytes = b"") -> bytes:
    """The suite's expansion of a message key seed: 64 bytes, GCM key | commitment.

    Mixes the body's random value ``nonce`` (R, 16 bytes) into the label:
    HKDF-Expand-SHA512(seed, message_info | R, 64).
    """
    enc, commit = committing_keys(seed, suite.message_info + nonce)
    return enc + commit


def seal(suite: Suite, seed: bytes, ad: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Encrypt a message body under the message key ``seed`` with associated data ``ad``.

    ``nonce`` is R: BODY_NONCE_LEN fresh random bytes, sent first in the body.
    """
    if len(nonce) != BODY_NONCE_LEN:
        raise ValueError("a body is sealed with a fresh 16-byte random value")
    # committing_keys(seed, suite.message_info | R), inlined on the per-message path
    h = hmac.HMAC(seed, _SHA512)
    h.update(suite.message_info + nonce + b"\x01")
    keys = h.finalize()
    return nonce + keys[32:] + AESGCM(keys[:32]).encrypt(GCM_ZERO_NONCE, plaintext, ad)


def open_(suite: Suite, seed: bytes, ad: bytes, sealed: bytes) -> bytes:
    """Decrypt a body sealed by :func:`seal`; :class:`AuthenticationFailed` if it fails."""
    if len(sealed) < _BODY_COMMIT_END + _GCM_TAG:
        raise AuthenticationFailed("message body too short")
    h = hmac.HMAC(seed, _SHA512)  # committing_keys(seed, message_info | R), inlined
    h.update(suite.message_info + sealed[:BODY_NONCE_LEN] + b"\x01")
    keys = h.finalize()
    if not _hmac.compare_digest(keys[32:], sealed[BODY_NONCE_LEN:_BODY_COMMIT_END]):
        raise AuthenticationFailed("message key commitment mismatch")
    try:
        return AESGCM(keys[:32]).decrypt(GCM_ZERO_NONCE, sealed[_BODY_COMMIT_END:], ad)
    except InvalidTag:
        raise AuthenticationFailed("message body failed authentication") from None


class HeaderCipher:
    """The AEAD of one header key, derived once and reused for every header of its chain.

    ``HKDF-Expand-SHA512(header key, HEADER_LABEL, 64)`` -> AES-256-GCM key | commitment key,
    as in :func:`committing_keys`; a header key is fixed for a whole chain, so the ratchet
    keeps one of these per current header key instead of re-deriving per message. Each header
    has a fresh random nonce and its commitment is HMAC-SHA256(commitment key, nonce), so no
    byte of a sealed header is the same across a chain (SPEC.md §4.4).
    """

    __slots__ = ("key", "_aead", "_mac")

    def __init__(self, key: bytes) -> None:
        h = hmac.HMAC(key, _SHA512)  # committing_keys(key, HEADER_LABEL), inlined
        h.update(_HEADER_INFO)
        out = h.finalize()
        #: The header key this cipher was derived from (the ratchet's cache tag).
        self.key = key
        self._aead = AESGCM(out[:32])
        #: HMAC-SHA256 keyed with the commitment key, copied for each header.
        self._mac = hmac.HMAC(out[32:], _SHA256)

    def __repr__(self) -> str:
        return "HeaderCipher(<secret>)"

    def commitment(self, nonce: bytes) -> bytes:
        """HMAC-SHA256(commitment key, nonce): the commitment of a header with ``nonce``."""
        h = self._mac.copy()
        h.update(nonce)
        return h.finalize()

    def seal(self, nonce: bytes, ad: bytes, header: bytes) -> bytes:
        """nonce (12) | commitment (32) | GCM ciphertext and tag of ``header``."""
        h = self._mac.copy()
        h.update(nonce)
        return nonce + h.finalize() + self._aead.encrypt(nonce, header, ad)

    def open(self, ad: bytes, sealed: bytes) -> bytes | None:
        """The header sealed by :meth:`seal`; None when it is not under this key."""
        nonce = sealed[:_HEADER_NONCE]
        h = self._mac.copy()
        h.update(nonce)
        if not _hmac.compare_digest(h.finalize(), sealed[_HEADER_NONCE:_HEADER_COMMIT_END]):
            return None
        try:
            return self._aead.decrypt(nonce, sealed[_HEADER_COMMIT_END:], ad)
        except InvalidTag:
            return None


def seal_header(header_key: bytes, nonce: bytes, ad: bytes, header: bytes) -> bytes:
    """Encrypt a header: nonce (12) | commitment (32) | GCM ciphertext and tag."""
    return HeaderCipher(header_key).seal(nonce, ad, header)


def open_header(header_key: bytes, ad: bytes, sealed: bytes) -> bytes | None:
    """Decrypt a header sealed by :func:`seal_header`; None when it is not under ``header_key``."""
    return HeaderCipher(header_key).open(ad, sealed)
