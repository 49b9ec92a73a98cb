"""ECVRF's refusals (SPEC §13.5): malformed proofs and keys raise InvalidProof, never crash.

The known answers are RFC 9381's (vectors/ecvrf.json, checked by tests/test_vectors.py);
here: a proof whose Γ is moved off the prime-order subgroup, not canonical, or whose s is
not reduced, and a public key that is not a point, are refused; the RFC's proof still
verifies after every refusal (the public-key cache holds only what decoded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl import bindings

from e2e.errors import InvalidProof
from e2e.platform.vrf import verify

_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_CASE = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "ecvrf.json").read_text())


def _example() -> tuple[bytes, bytes, bytes, bytes]:
    c = _CASE["cases"][0]
    return (bytes.fromhex(c["pk"]), bytes.fromhex(c["pi"]), bytes.fromhex(c["alpha"]),
            bytes.fromhex(c["beta"]))  # fmt: skip


def test_malformed_proofs_and_keys_are_refused() -> None:
    pk, pi, alpha, beta = _example()
    order2 = (_P - 1).to_bytes(32, "little")  # (0, -1), a point of order 2
    moved = bytes(bindings.crypto_core_ed25519_add(pi[:32], order2)) + pi[32:]
    not_canonical = (int.from_bytes(pi[:32], "little") + _P).to_bytes(32, "little")
    s_too_big = pi[:48] + ((int.from_bytes(pi[48:], "little") + _Q) % 2**256).to_bytes(32, "little")
    for bad in (moved, not_canonical + pi[32:], s_too_big, pi[:79], pi + b"\x00", b"", order2 * 3):
        with pytest.raises(InvalidProof):
            verify(pk, bad, alpha)
    for bad_key in (order2[:31] + b"\x80", (_P + 1).to_bytes(32, "little"), b"", pk[:31]):
        with pytest.raises(InvalidProof):
            verify(bad_key, pi, alpha)
    assert verify(pk, pi, alpha) == beta
