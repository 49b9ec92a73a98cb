"""The Merkle log's primitives (SPEC.md §13.2): tree hashing, inclusion and consistency
proofs, signed tree heads and the Ed25519 signers.

Tree hashing, inclusion proofs and consistency proofs are RFC 9162 §2.1 (identical to
RFC 6962 with SHA-256): ``leaf = SHA-256(0x00 | data)``, ``node = SHA-256(0x01 | l | r)``,
the empty tree's root is ``SHA-256("")``. Proof generation follows §2.1.3.1 / §2.1.4.1 and
verification §2.1.3.2 / §2.1.4.2 step for step; vectors/merkle.json holds published test
data. The relay signs tree heads (size, root, time) with an Ed25519 log key that clients pin.
The key directory on top of it is :mod:`e2e.platform.transparency`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from e2e.errors import (
    DecodeError,
    InvalidKey,
    InvalidProof,
)
from e2e.frame import Field, decode_map, encode_map

__all__ = [
    "HASH_LEN",
    "MAX_SIZE",
    "ConsistencyFetcher",
    "EMPTY_ROOT",
    "HEAD_LABEL",
    "LOG_VERSION",
    "HEAD_SKEW",
    "MAX_PROOF_HASHES",
    "leaf_hash",
    "node_hash",
    "MerkleTree",
    "root_from_inclusion",
    "verify_inclusion",
    "verify_consistency",
    "TreeHead",
    "SignedTreeHead",
    "Ed25519Signer",
    "LogSigner",
    "InclusionProof",
    "ConsistencyProof",
]

HASH_LEN: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
HEAD_LABEL: Final = b"E2E_TREE_HEAD_v1"
LOG_VERSION: Final = 1
#: Relay processes' clocks may differ this much (s): a larger head may be this much older.
HEAD_SKEW: Final = 300
#: A proof longer than this many hashes cannot belong to a tree of at most 2**63 leaves.
MAX_PROOF_HASHES: Final = 128
#: Largest tree size (u63).
MAX_SIZE: Final = 2**63 - 1


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 | data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 | left | right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only list of leaves with RFC 9162 roots and proofs for any past size.

    Hashes of complete (power-of-two, aligned) subtrees never change in an append-only
    tree, so they are cached: a root or proof costs O(log^2 n) hashes after the first."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._cache: dict[tuple[int, int], bytes] = {}
        for data in leaves:
            self.append(data)

    def __len__(self) -> int:
        return len(self._leaves)

    def append(self, data: bytes) -> int:
        """Append a leaf (its data, not its hash); return its index."""
        self._leaves.append(leaf_hash(data))
        return len(self._leaves) - 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self._leaves[index]

    def _mth(self, start: int, n: int) -> bytes:
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return self._leaves[start]
        perfect = n & (n - 1) == 0
        if perfect:
            hit = self._cache.get((start, n))
            if hit is not None:
                return hit
        k = _split(n)
        out = node_hash(self._mth(start, k), self._mth(start + k, n - k))
        if perfect:
            self._cache[(start, n)] = out
        return out

    def _check_size(self, size: int | None) -> int:
        size = len(self._leaves) if size is None else size
        if not 0 <= size <= len(self._leaves):
            raise InvalidProof("tree size beyond the log")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all)."""
        return self._mth(0, self._check_size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size])."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise InvalidProof("leaf index outside the tree")
        out: list[bytes] = []
        start, n, m = 0, size, index
        while n > 1:
            k = _split(n)
            if m < k:
                out.append(self._mth(start + k, n - k))
                n = k
            else:
                out.append(self._mth(start, k))
                start, n, m = start + k, n - k, m - k
        out.reverse()
        return out

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2]); empty when the sizes are equal."""
        size2 = self._check_size(size2)
        if not 0 < size1 <= size2:
            raise InvalidProof("consistency proof needs 0 < size1 <= size2")
        out: list[bytes] = []
        start, n, m, complete = 0, size2, size1, True
        while m != n:
            k = _split(n)
            if m <= k:
                out.append(self._mth(start + k, n - k))
                n = k
            else:
                out.append(self._mth(start, k))
                start, n, m, complete = start + k, n - k, m - k, False
        if not complete:
            out.append(self._mth(start, n))
        out.reverse()
        return out


def _check_hashes(values: Sequence[bytes], what: str) -> None:
    if len(values) > MAX_PROOF_HASHES:
        raise InvalidProof(f"{what} has too many hashes")
    for v in values:
        if type(v) is not bytes or len(v) != HASH_LEN:
            raise InvalidProof(f"{what} holds a value that is not a 32-byte hash")


def _check_sizes(*sizes: int) -> None:
    for s in sizes:
        if type(s) is not int or not 0 <= s <= MAX_SIZE:
            raise InvalidProof("tree size or index out of range")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` (RFC 9162 §2.1.3.2) yields for leaf hash ``leaf`` at
    ``index`` in a tree of ``size`` leaves; :class:`InvalidProof` if it yields none."""
    _check_sizes(index, size)
    _check_hashes([leaf, *proof], "inclusion proof")
    if index >= size:
        raise InvalidProof("leaf index beyond tree size")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """:class:`InvalidProof` unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the
    tree of ``size`` leaves with root ``root``."""
    got = root_from_inclusion(index, size, leaf, proof)
    if type(root) is not bytes or not hmac.compare_digest(got, root):
        raise InvalidProof("inclusion proof does not lead to the tree head's root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """:class:`InvalidProof` unless ``proof`` (RFC 9162 §2.1.4.2) shows the tree of
    ``size2`` leaves and root ``root2`` extends the tree of ``size1`` leaves and ``root1``.

    Equal sizes need an empty proof and equal roots; ``size1 == 0`` proves nothing and is
    refused, as is ``size1 > size2``."""
    _check_sizes(size1, size2)
    _check_hashes([root1, root2, *proof], "consistency proof")
    if size1 == 0 or size1 > size2:
        raise InvalidProof("consistency proof needs 0 < size1 <= size2")
    if size1 == size2:
        if proof or not hmac.compare_digest(root1, root2):
            raise InvalidProof("equal sizes need equal roots and an empty proof")
        return
    if not proof:
        raise InvalidProof("empty consistency proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    ok1 = hmac.compare_digest(fr, root1)
    ok2 = hmac.compare_digest(sr, root2)
    if not (ok1 and ok2 and sn == 0):
        raise InvalidProof("consistency proof does not join the two roots")


# -- signed tree heads ----------------------------------------------------------------------

_HEAD_SCHEMA: Final = {
    0: Field(int),
    1: Field(int, max_int=MAX_SIZE),
    2: Field(bytes, HASH_LEN),
    3: Field(int, max_int=MAX_SIZE),
    4: Field(bytes, 64),
}


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What the log commits to at one moment: its size, root and time (seconds)."""

    size: int
    root: bytes
    timestamp: int

    def signed_bytes(self) -> bytes:
        """``"E2E_TREE_HEAD_v1" | CBOR {0: 1, 1: size, 2: root, 3: timestamp}``."""
        return HEAD_LABEL + encode_map(
            {0: LOG_VERSION, 1: self.size, 2: self.root, 3: self.timestamp}
        )


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A tree head with the log key's Ed25519 signature over :meth:`TreeHead.signed_bytes`."""

    head: TreeHead
    signature: bytes

    @property
    def size(self) -> int:
        return self.head.size

    @property
    def root(self) -> bytes:
        return self.head.root

    def to_bytes(self) -> bytes:
        h = self.head
        return encode_map({0: LOG_VERSION, 1: h.size, 2: h.root, 3: h.timestamp, 4: self.signature})

    @classmethod
    def from_bytes(cls, raw: object) -> SignedTreeHead:
        obj = decode_map(raw, _HEAD_SCHEMA, "signed tree head", 256, LOG_VERSION)
        return cls(TreeHead(obj[1], obj[2], obj[3]), obj[4])

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: names this head (in messages, in the store)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def verify(self, log_key: bytes) -> None:
        """:class:`InvalidProof` unless signed by the pinned Ed25519 ``log_key``."""
        try:
            Ed25519PublicKey.from_public_bytes(log_key).verify(
                self.signature, self.head.signed_bytes()
            )
        except (_CryptoInvalidSignature, ValueError):
            raise InvalidProof("tree head signature does not verify under the log key") from None


class Ed25519Signer:
    """An Ed25519 signing key held by a platform role (a fresh one, or one loaded from its
    32 private bytes); ``public`` is its public key. Its ``repr`` shows no key material."""

    _what = "signing key"

    def __init__(self, private: bytes | None = None) -> None:
        try:
            self._key = (
                Ed25519PrivateKey.generate()
                if private is None
                else Ed25519PrivateKey.from_private_bytes(private)
            )
        except ValueError:
            raise InvalidKey(f"{self._what} must be 32 bytes") from None
        self.public = self._key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(...)"

    def private_bytes(self) -> bytes:
        return self._key.private_bytes_raw()


class LogSigner(Ed25519Signer):
    """The relay's log key (Ed25519), signing tree heads."""

    _what = "log key"

    def sign(self, head: TreeHead) -> SignedTreeHead:
        return SignedTreeHead(head, self._key.sign(head.signed_bytes()))

    def vouch(self, statement: bytes) -> bytes:
        """Sign a statement that is not a tree head (its own label keeps it apart from the
        heads' ``"E2E_TREE_HEAD_v1"``)."""
        if statement.startswith(HEAD_LABEL):
            raise InvalidKey("a statement must not look like a tree head")
        return self._key.sign(statement)


# -- proofs on the wire ---------------------------------------------------------------------

_PROOF_SCHEMA: Final = {
    0: Field(int),
    1: Field(int, max_int=MAX_SIZE),
    2: Field(int, max_int=MAX_SIZE),
    3: Field(bytes),
}


def _encode_proof(a: int, b: int, path: Sequence[bytes]) -> bytes:
    """The wire form both proofs share: CBOR {0: 1, 1: a, 2: b, 3: the hashes joined}."""
    return encode_map({0: LOG_VERSION, 1: a, 2: b, 3: b"".join(path)})


def _decode_proof(raw: object, what: str) -> tuple[int, int, tuple[bytes, ...]]:
    obj = decode_map(raw, _PROOF_SCHEMA, what, 8192, LOG_VERSION)
    joined: bytes = obj[3]
    if len(joined) % HASH_LEN or len(joined) > HASH_LEN * MAX_PROOF_HASHES:
        raise DecodeError(f"{what} path is not a whole number of hashes")
    return obj[1], obj[2], tuple(joined[i : i + HASH_LEN] for i in range(0, len(joined), HASH_LEN))


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf ``index`` is in the tree of ``size`` leaves: CBOR {0: 1, 1: index, 2: size,
    3: the path's hashes concatenated}."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return _encode_proof(self.index, self.size, self.path)

    @classmethod
    def from_bytes(cls, raw: object) -> InclusionProof:
        return cls(*_decode_proof(raw, "inclusion proof"))

    def verify(self, data: bytes, head: SignedTreeHead) -> None:
        """:class:`InvalidProof` unless leaf data ``data`` is at :attr:`index` in ``head``."""
        if self.size != head.size:
            raise InvalidProof("inclusion proof is for another tree size than the head")
        verify_inclusion(self.index, self.size, leaf_hash(data), self.path, head.root)


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """The tree of ``size2`` leaves extends the tree of ``size1``: CBOR {0: 1, 1: size1,
    2: size2, 3: the path's hashes concatenated}."""

    size1: int
    size2: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return _encode_proof(self.size1, self.size2, self.path)

    @classmethod
    def from_bytes(cls, raw: object) -> ConsistencyProof:
        return cls(*_decode_proof(raw, "consistency proof"))

    def verify(self, old: SignedTreeHead, new: SignedTreeHead) -> None:
        if (self.size1, self.size2) != (old.size, new.size):
            raise InvalidProof("consistency proof is for other tree sizes than the heads")
        verify_consistency(old.size, new.size, self.path, old.root, new.root)


#: ``prove(size1, size2)`` asks the relay for a consistency proof.
ConsistencyFetcher = Callable[[int, int], ConsistencyProof]
