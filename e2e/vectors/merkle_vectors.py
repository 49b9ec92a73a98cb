"""Verifier for RFC 6962/9162 Merkle tree test data (vectors/merkle.json, concept "merkle").

``tree`` cases give leaf inputs and the root of every prefix: each root must match
:meth:`MerkleTree.root`, and every inclusion and consistency proof the tree generates for
it must verify. ``inclusion`` and ``consistency`` cases are published probes: a ``valid``
one must verify and an invalid one must raise :class:`~e2e.errors.InvalidProof`; a valid
probe about the reference tree must also equal the proof :class:`MerkleTree` generates.

One deliberate difference: the published data treats two equal placeholder "roots" that are
not 32-byte hashes as consistent at equal sizes; e2e refuses any root that is not a 32-byte
hash, so such a probe is expected to fail here.
"""

from __future__ import annotations

from typing import Any

from e2e.errors import InvalidProof
from e2e.platform.merkle import MerkleTree, verify_consistency, verify_inclusion
from e2e.vectors.registry import verifier

__all__: list[str] = []

# The reference tree (testonly/constants.go), against which happy-path probes are generated.
_REFERENCE = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]


def _h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def _tree(case: dict[str, Any]) -> None:
    tree = MerkleTree()
    roots = _h(case["roots"])
    assert tree.root() == roots[0], "empty root differs"
    for data in _h(case["leaves"]):
        tree.append(data)
        n = len(tree)
        assert tree.root() == roots[n], f"root of size {n} differs"
    for n in range(1, len(tree) + 1):
        for i in range(n):
            verify_inclusion(i, n, tree.leaf(i), tree.inclusion_proof(i, n), roots[n])
        for m in range(1, n + 1):
            verify_consistency(m, n, tree.consistency_proof(m, n), roots[m], roots[n])


def _expect(valid: bool, check: Any) -> None:
    try:
        check()
    except InvalidProof:
        assert not valid, "a valid probe was rejected"
        return
    assert valid, "an invalid probe was accepted"


def _reference() -> MerkleTree:
    return MerkleTree(_h(_REFERENCE))


def _inclusion(case: dict[str, Any]) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    leaf, root = bytes.fromhex(case["leaf_hash"]), bytes.fromhex(case["root"])
    proof = _h(case["proof"])
    _expect(case["valid"], lambda: verify_inclusion(index, size, leaf, proof, root))
    if case["valid"]:
        ref = _reference()
        if size <= len(ref) and ref.root(size) == root and ref.leaf(index) == leaf:
            assert ref.inclusion_proof(index, size) == proof, "generated proof differs"


def _consistency(case: dict[str, Any]) -> None:
    s1, s2 = case["size1"], case["size2"]
    r1, r2 = bytes.fromhex(case["root1"]), bytes.fromhex(case["root2"])
    proof = _h(case["proof"])
    valid = case["valid"] and len(r1) == len(r2) == 32
    _expect(valid, lambda: verify_consistency(s1, s2, proof, r1, r2))
    if valid:
        ref = _reference()
        if s2 <= len(ref) and ref.root(s2) == r2:
            assert ref.consistency_proof(s1, s2) == proof, "generated proof differs"


@verifier("merkle")
def _merkle(case: dict[str, Any]) -> None:
    {"tree": _tree, "inclusion": _inclusion, "consistency": _consistency}[case["kind"]](case)
