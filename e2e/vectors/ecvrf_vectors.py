"""Verifier for RFC 9381 Appendix B.3's ECVRF-EDWARDS25519-SHA512-TAI examples
(vectors/ecvrf.json, concept "ecvrf"): the public key of the secret key, the proof the
secret key makes for alpha (byte for byte: the suite's nonce is deterministic), its output,
and the proof verifying under the public key; where published, the encode_to_curve point H.
Every proof with one bit flipped, or checked against another alpha, must fail."""

from __future__ import annotations

from typing import Any

from e2e.errors import InvalidProof
from e2e.platform.vrf import VrfKey, encode_to_curve, proof_to_hash, verify
from e2e.vectors.registry import verifier

__all__: list[str] = []


@verifier("ecvrf")
def _ecvrf(case: dict[str, Any]) -> None:
    sk, pk = bytes.fromhex(case["sk"]), bytes.fromhex(case["pk"])
    alpha, pi, beta = (bytes.fromhex(case[k]) for k in ("alpha", "pi", "beta"))
    key = VrfKey(sk)
    assert key.public == pk, "public key differs"
    if "h" in case:
        assert encode_to_curve(pk, alpha) == bytes.fromhex(case["h"]), "H differs"
    assert key.prove(alpha) == pi, "proof differs"
    assert proof_to_hash(pi) == beta, "output differs"
    assert verify(pk, pi, alpha) == beta, "the proof does not verify"
    for bad in (pi[:5] + bytes([pi[5] ^ 1]) + pi[6:], pi[:40] + bytes([pi[40] ^ 0x80]) + pi[41:]):
        try:
            verify(pk, bad, alpha)
        except InvalidProof:
            continue
        raise AssertionError("a proof with a flipped bit verified")
    try:
        verify(pk, pi, alpha + b"x")
    except InvalidProof:
        return
    raise AssertionError("a proof verified for another alpha")
