"""KDF_RK: the root-key step of the Double Ratchet (SPEC.md §4.1)."""

from __future__ import annotations

from e2e.chain_key import labelled_shake256
from e2e.suite import SUITES, Suite

__all__ = ["root_step"]

#: Per suite id, SHAKE256 (96-byte output) that has absorbed the suite's root label.
_LABELLED = {s.id: labelled_shake256(s.root_info, 96) for s in SUITES.values()}


def root_step(suite: Suite, root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (next root key, chain key, next header key).

    SHAKE256(the suite's root label | RK | dh_out) to 96 bytes, split 32/32/32 (SPEC.md
    §4.1). Both inputs are 32 bytes (a stored root key, an X25519 output), so the input is
    unambiguous.
    """
    h = _LABELLED[suite.id].copy()
    h.update(root_key + dh_out)
    out = h.finalize()
    return out[:32], out[32:64], out[64:]
