"""KDF_CK: the symmetric-key ratchet step (SPEC.md §4.2), and libsignal's (§15.3).

:func:`kdf_ck` is this protocol's: one SHAKE256 call gives the next chain key and the whole
message key (the body's AES-256-GCM key and its commitment). :func:`chain_step` is
libsignal's KDF_CK (two HMAC-SHA256), which :mod:`e2e.libsignal` speaks on libsignal's wire.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

from e2e.suite import SUITES, Suite

__all__ = ["kdf_ck", "chain_step", "labelled_shake256", "MESSAGE_KEY_LEN"]

_SHA256 = hashes.SHA256()


def labelled_shake256(label: bytes, length: int) -> hashes.Hash:
    """A SHAKE256 hash (``length``-byte output) that has absorbed ``label``. A KDF step copies
    it and absorbs its secret input: the same bytes as hashing label | input afresh, without
    building a new hash object per step."""
    h = hashes.Hash(hashes.SHAKE256(length))
    h.update(label)
    return h


#: Per suite id, SHAKE256 (96-byte output) that has absorbed the suite's chain label.
_LABELLED = {s.id: labelled_shake256(s.chain_info, 96) for s in SUITES.values()}
#: A message key: the body's AES-256-GCM key (32) | its commitment MC (32).
MESSAGE_KEY_LEN = 64


def kdf_ck(suite: Suite, chain_key: bytes) -> tuple[bytes, bytes]:
    """Return (next chain key, message key) of a 32-byte chain key.

    SHAKE256(the suite's chain label | CK) to 96 bytes: CK' = [0:32], MK = [32:96], the body
    key EK = MK[0:32] and its commitment MC = MK[32:64] (SPEC.md §4.2).
    """
    h = _LABELLED[suite.id].copy()
    h.update(chain_key)
    out = h.finalize()
    return out[:32], out[32:]


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """libsignal's KDF_CK (SPEC.md §15.3): return (next chain key, message key seed).

    message key seed = HMAC-SHA256(chain key, 0x01); next chain key = HMAC-SHA256(chain key,
    0x02), as in libsignal and the Double Ratchet spec's recommendation.
    """
    h = hmac.HMAC(chain_key, _SHA256)
    h2 = h.copy()
    h.update(b"\x01")
    h2.update(b"\x02")
    return h2.finalize(), h.finalize()
