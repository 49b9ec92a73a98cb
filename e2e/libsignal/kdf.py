"""libsignal's ratchet KDFs: the root step and the message-key expansion (SPEC.md §15.4, §15.7.8).

These are libsignal's own labels, not a registered e2e suite: the frame suites (SPEC.md §1)
never use them.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["ROOT_INFO", "MESSAGE_INFO", "root_step", "expand_message_key"]

#: HKDF info of libsignal's root-key step (KDF_RK).
ROOT_INFO: Final = b"WhisperRatchet"
#: HKDF info of libsignal's message-key expansion.
MESSAGE_INFO: Final = b"WhisperMessageKeys"
_SHA256 = hashes.SHA256()


def root_step(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """(next root key, chain key) = HKDF-SHA256(salt = root key, IKM = DH output,
    info = "WhisperRatchet")[:64], split 32/32."""
    out = HKDF(_SHA256, 64, root_key, ROOT_INFO).derive(dh_out)
    return out[:32], out[32:]


def expand_message_key(seed: bytes, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256(salt, IKM = message key seed, info = "WhisperMessageKeys")[:80]:
    AES-256 key (32) || HMAC-SHA256 key (32) || CBC IV (16). The salt is the message's SPQR
    key (SPEC.md §15.7.8), or none for a message without one."""
    return HKDF(_SHA256, 80, salt, MESSAGE_INFO).derive(seed)
