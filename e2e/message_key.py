"""The body AEAD under a message key (SPEC.md §4.3) and the header AEAD (§4.4).

A message key MK (64 bytes, from KDF_CK, e2e.chain_key) is EK (an AES-256-GCM key) | MC (its
32-byte commitment). A body is AES-256-GCM(EK, nonce, plaintext, ad) under the frame's fresh
random header nonce, so a message key used twice (a rolled-back state) never repeats a GCM
nonce. MC travels inside the sealed header; opening compares it with the key's own MC in
constant time before GCM, so a frame opens under at most one message key (SHAKE256 is
collision resistant) and nothing on the wire repeats when a key is used twice.

A header key HK gives the header AEAD through HMAC-SHA256 keyed with the public label
HEADER_LABEL (HKDF-Extract with that salt): EKh = HMAC(label, HK | 0x01) once per key, and each
header's commitment Ch = HMAC(label, HK | 0x02 | nonce) over its fresh 12-byte nonce, so no
byte of a sealed header is constant across a chain and a header opens under at most one header
key (SHA-256 is collision resistant).
"""

from __future__ import annotations

import hmac as _hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e2e.errors import AuthenticationFailed

__all__ = [
    "seal",
    "open_",
    "seal_header",
    "open_header",
    "HeaderCipher",
    "HEADER_LABEL",
    "NONCE_LEN",
    "COMMITMENT_LEN",
    "TAG_LEN",
]

_SHA256 = hashes.SHA256()
#: The public HMAC-SHA256 key (an HKDF-Extract salt) through which header keys are used.
HEADER_LABEL = b"E2E_HeaderKey"
#: Length of a frame's random nonce: the first bytes of its sealed header, and the GCM nonce
#: of both its header and its body.
NONCE_LEN = 12
#: Length of a commitment: a body key's MC, a header's HMAC of its nonce.
COMMITMENT_LEN = 32
#: AES-GCM tag length (full 16 bytes, never truncated).
TAG_LEN = 16
_COMMIT_END = NONCE_LEN + COMMITMENT_LEN


def seal(message_key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """Encrypt a message body: AES-256-GCM(EK, nonce, plaintext, ad), len(plaintext) + 16.

    ``message_key`` is MK (64 bytes: EK | MC); ``nonce`` the frame's fresh 12-byte nonce.
    The commitment MC goes into the header (SPEC.md §4.4), not here.
    """
    if len(nonce) != NONCE_LEN:
        raise ValueError("a body is sealed under the frame's fresh 12-byte nonce")
    return AESGCM(message_key[:32]).encrypt(nonce, plaintext, ad)


def open_(message_key: bytes, commitment: bytes, nonce: bytes, ad: bytes, body: bytes) -> bytes:
    """Decrypt a body sealed by :func:`seal`; :class:`AuthenticationFailed` if it fails.

    ``commitment`` is the MC the frame's header carries: it must equal ``message_key``'s own
    (checked in constant time, before GCM runs).
    """
    if not _hmac.compare_digest(message_key[32:], commitment):
        raise AuthenticationFailed("message key commitment mismatch")
    try:
        return AESGCM(message_key[:32]).decrypt(nonce, body, ad)
    except InvalidTag:
        raise AuthenticationFailed("message body failed authentication") from None


#: HMAC-SHA256 keyed with the public HEADER_LABEL; header keys enter through its message.
#: Copied for every use, never updated itself.
_HEADER_MAC = hmac.HMAC(HEADER_LABEL, _SHA256)


class HeaderCipher:
    """The AEAD of one header key, derived once and reused for every header of its chain.

    EKh = HMAC-SHA256(HEADER_LABEL, HK | 0x01) keys the AES-256-GCM object (made once); each
    header's commitment is HMAC-SHA256(HEADER_LABEL, HK | 0x02 | nonce), a copy of one HMAC
    object shared by all header keys, so no byte of a sealed header is the same across a
    chain (SPEC.md §4.4).
    """

    __slots__ = ("key", "_aead", "_prefix")

    def __init__(self, key: bytes) -> None:
        h = _HEADER_MAC.copy()
        h.update(key + b"\x01")
        #: The header key this cipher was derived from (the ratchet's cache tag).
        self.key = key
        self._aead = AESGCM(h.finalize())
        #: HK | 0x02: what each header's commitment input starts with.
        self._prefix = key + b"\x02"

    def __repr__(self) -> str:
        return "HeaderCipher(<secret>)"

    def commitment(self, nonce: bytes) -> bytes:
        """HMAC-SHA256(HEADER_LABEL, HK | 0x02 | nonce): the commitment of a header."""
        h = _HEADER_MAC.copy()
        h.update(self._prefix + nonce)
        return h.finalize()

    def seal(self, nonce: bytes, ad: bytes, header: bytes) -> bytes:
        """nonce (12) | commitment (32) | GCM ciphertext and tag of ``header``."""
        if len(nonce) != NONCE_LEN:
            raise ValueError("a header is sealed under a fresh 12-byte nonce")
        h = _HEADER_MAC.copy()
        h.update(self._prefix + nonce)
        return nonce + h.finalize() + self._aead.encrypt(nonce, header, ad)

    def open(self, ad: bytes, sealed: bytes) -> bytes | None:
        """The header sealed by :meth:`seal`; None when it is not under this key."""
        nonce = sealed[:NONCE_LEN]
        h = _HEADER_MAC.copy()
        h.update(self._prefix + nonce)
        if not _hmac.compare_digest(h.finalize(), sealed[NONCE_LEN:_COMMIT_END]):
            return None
        try:
            return self._aead.decrypt(nonce, sealed[_COMMIT_END:], ad)
        except InvalidTag:
            return None


def seal_header(header_key: bytes, nonce: bytes, ad: bytes, header: bytes) -> bytes:
    """Encrypt a header: nonce (12) | commitment (32) | GCM ciphertext and tag."""
    return HeaderCipher(header_key).seal(nonce, ad, header)


def open_header(header_key: bytes, ad: bytes, sealed: bytes) -> bytes | None:
    """Decrypt a header sealed by :func:`seal_header`; None when it is not under ``header_key``."""
    return HeaderCipher(header_key).open(ad, sealed)
