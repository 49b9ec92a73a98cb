"""KDF_RK: the root-key step of the Double Ratchet (SPEC.md §4.1)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from e2e.suite import Suite

__all__ = ["root_step"]


def root_step(suite: Suite, root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (next root key, chain key, next header key).

    HKDF-SHA256 with salt = the current root key, IKM = the DH output and the suite's
    root label; 96 bytes split 32/32/32.
    """
    out = HKDF(hashes.SHA256(), 96, root_key, suite.root_info).derive(dh_out)
    return out[:32], out[32:64], out[64:]
