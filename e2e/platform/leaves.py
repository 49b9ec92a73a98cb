"""What the key log's leaves show, and what the relay opens to whoever names the account
(SPEC.md §13.4, §13.5).

A leaf names no account: it is ``"E2E_KT_LEAF_v3" | CBOR {0: 3, 1: label, 2: commitment}``,
the label the first 32 bytes of the VRF output (:mod:`e2e.platform.vrf`) of
``"E2E_KT_LABEL_v1" | account`` under the relay's VRF key, the commitment
``SHA-256("E2E_KT_COMMIT_v1" | opening | entry)`` of the directory entry (account, version,
key, device list; :class:`~e2e.platform.transparency.DirectoryEntry`) under 32 random bytes
of opening. The relay keeps each leaf's *opening record* ``CBOR {0: 1, 1: entry, 2:
opening, 3: VRF proof}`` and hands it out only for a name the asker gives (a lookup) or to
the account's own devices (its monitor): reading the whole log yields labels and
commitments, from which neither a name nor a key can be recovered, so the directory cannot
be enumerated. Whoever holds an opening record checks it against the leaf: the VRF proof
under the relay's VRF key (which its log key signs, :func:`vrf_key_statement`), and the
commitment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from e2e.errors import InvalidProof
from e2e.frame import Field, decode_map, encode_map
from e2e.platform.vrf import PROOF_LEN, VrfKey, proof_to_hash, verify

__all__ = [
    "LEAF_LABEL",
    "LABEL_LEN",
    "MAX_LEAF_BYTES",
    "Leaf",
    "Opening",
    "label_input",
    "commitment",
    "vrf_key_statement",
]

LEAF_LABEL: Final = b"E2E_KT_LEAF_v3"
LEAF_VERSION: Final = 3
LABEL_LEN: Final = 32
MAX_LEAF_BYTES: Final = 128
_COMMIT: Final = b"E2E_KT_COMMIT_v1"
_NAME: Final = b"E2E_KT_LABEL_v1"
_VRF_KEY: Final = b"E2E_KT_VRF_KEY_v1"

_LEAF_SCHEMA: Final = {0: Field(int), 1: Field(bytes, LABEL_LEN), 2: Field(bytes, 32)}
_OPENING_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(bytes, 32),
    3: Field(bytes, PROOF_LEN),
}


def label_input(account: bytes) -> bytes:
    """The VRF input of an account's label."""
    return _NAME + account


def commitment(opening: bytes, entry: bytes) -> bytes:
    """``SHA-256("E2E_KT_COMMIT_v1" | opening | entry)``: hides the entry (a random
    32-byte opening), binds it (SHA-256's collision resistance)."""
    return hashlib.sha256(_COMMIT + opening + entry).digest()


def vrf_key_statement(vrf_public: bytes) -> bytes:
    """What the log key signs to vouch for the relay's VRF public key."""
    return _VRF_KEY + vrf_public


@dataclass(frozen=True, slots=True)
class Leaf:
    """One leaf of the key log: a label and a commitment, nothing else."""

    label: bytes
    commitment: bytes

    def to_bytes(self) -> bytes:
        return LEAF_LABEL + encode_map({0: LEAF_VERSION, 1: self.label, 2: self.commitment})

    @classmethod
    def from_bytes(cls, raw: object) -> Leaf:
        if type(raw) is not bytes or not raw.startswith(LEAF_LABEL):
            raise InvalidProof("key log leaf lacks its label")
        obj = decode_map(raw[len(LEAF_LABEL) :], _LEAF_SCHEMA, "key log leaf",
                         MAX_LEAF_BYTES, LEAF_VERSION)  # fmt: skip
        return cls(obj[1], obj[2])


@dataclass(frozen=True, slots=True)
class Opening:
    """What opens one leaf: its directory entry, the commitment's opening and the VRF proof
    of the account's label."""

    entry: bytes
    opening: bytes = field(repr=False)
    proof: bytes

    @classmethod
    def make(cls, vrf: VrfKey, account: bytes, entry: bytes, opening: bytes) -> Opening:
        """The relay's record of a new leaf for ``account``."""
        return cls(entry, opening, vrf.prove(label_input(account)))

    def to_bytes(self) -> bytes:
        return encode_map({0: 1, 1: self.entry, 2: self.opening, 3: self.proof})

    @classmethod
    def from_bytes(cls, raw: object, max_bytes: int) -> Opening:
        obj = decode_map(raw, _OPENING_SCHEMA, "key log opening", max_bytes, 1)
        return cls(obj[1], obj[2], obj[3])

    def leaf(self) -> Leaf:
        """The leaf this record opens (the label from the proof, not checked: the relay's
        own records)."""
        return Leaf(proof_to_hash(self.proof)[:LABEL_LEN], commitment(self.opening, self.entry))

    def checked_leaf(self, vrf_public: bytes, account: bytes) -> Leaf:
        """The leaf this record opens, its label proven for ``account`` under the relay's
        VRF key (:class:`~e2e.errors.InvalidProof` otherwise)."""
        label = verify(vrf_public, self.proof, label_input(account))[:LABEL_LEN]
        return Leaf(label, commitment(self.opening, self.entry))
