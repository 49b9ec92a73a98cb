"""KDF_CK: the symmetric-key ratchet step (SPEC.md §4.2)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

__all__ = ["chain_step"]

_SHA256 = hashes.SHA256()


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """Return (next chain key, message key seed).

    message key seed = HMAC-SHA256(chain key, 0x01); next chain key = HMAC-SHA256(chain key, 0x02),
    as in libsignal and the Double Ratchet spec's recommendation.
    """
    h = hmac.HMAC(chain_key, _SHA256)
    h2 = h.copy()
    h.update(b"\x01")
    h2.update(b"\x02")
    return h2.finalize(), h.finalize()
