"""An append-only Merkle log of account keys and device lists (SPEC.md §13.2, §13.4).

Tree hashing, inclusion proofs and consistency proofs are RFC 9162 §2.1 (identical to
RFC 6962 with SHA-256): ``leaf = SHA-256(0x00 | data)``, ``node = SHA-256(0x01 | l | r)``,
the empty tree's root is ``SHA-256("")``. Proof generation follows §2.1.3.1 / §2.1.4.1 and
verification §2.1.3.2 / §2.1.4.2 step for step; vectors/merkle.json holds published test
data.

The relay signs tree heads (size, root, time) with an Ed25519 log key that clients pin. The
key directory on top (:class:`KeyLog` at the relay, :class:`LogView` at a client) commits
every account's identity key and certified device list as one leaf; a client accepts a key
or device list only with an inclusion proof against a signed head it has checked for
consistency with every head it saw before, and an account finds any entry under its name
that it did not publish (:meth:`LogView.audit`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    KeyMismatch,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN
from e2e.platform.envelope import check_account

__all__ = [
    "HASH_LEN",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "MerkleTree",
    "root_from_inclusion",
    "verify_inclusion",
    "verify_consistency",
    "TreeHead",
    "SignedTreeHead",
    "LogSigner",
    "InclusionProof",
    "ConsistencyProof",
    "DirectoryEntry",
    "devices_hash",
    "KeyLog",
    "LogView",
]

HASH_LEN: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
HEAD_LABEL: Final = b"E2E_TREE_HEAD_v1"
ENTRY_LABEL: Final = b"E2E_KT_ENTRY_v1"
DEVICES_LABEL: Final = b"E2E_KT_DEVICES_v1"
LOG_VERSION: Final = 1
#: Relay processes' clocks may differ this much (s): a larger head may be this much older.
HEAD_SKEW: Final = 300
#: A proof longer than this many hashes cannot belong to a tree of at most 2**63 leaves.
MAX_PROOF_HASHES: Final = 128
_MAX_SIZE: Final = 2**63 - 1


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
        if type(s) is not int or not 0 <= s <= _MAX_SIZE:
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
    1: Field(int, max_int=_MAX_SIZE),
    2: Field(bytes, HASH_LEN),
    3: Field(int, max_int=_MAX_SIZE),
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


# -- proofs on the wire ---------------------------------------------------------------------

_INCL_SCHEMA: Final = {
    0: Field(int),
    1: Field(int, max_int=_MAX_SIZE),
    2: Field(int, max_int=_MAX_SIZE),
    3: Field(bytes),
}
_CONS_SCHEMA: Final = _INCL_SCHEMA


def _join(hashes: Sequence[bytes]) -> bytes:
    return b"".join(hashes)


def _cut(raw: bytes, what: str) -> tuple[bytes, ...]:
    if len(raw) % HASH_LEN or len(raw) > HASH_LEN * MAX_PROOF_HASHES:
        raise DecodeError(f"{what} path is not a whole number of hashes")
    return tuple(raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN))


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf ``index`` is in the tree of ``size`` leaves: CBOR {0: 1, 1: index, 2: size,
    3: the path's hashes concatenated}."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return encode_map({0: LOG_VERSION, 1: self.index, 2: self.size, 3: _join(self.path)})

    @classmethod
    def from_bytes(cls, raw: object) -> InclusionProof:
        obj = decode_map(raw, _INCL_SCHEMA, "inclusion proof", 8192, LOG_VERSION)
        return cls(obj[1], obj[2], _cut(obj[3], "inclusion proof"))

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
        return encode_map({0: LOG_VERSION, 1: self.size1, 2: self.size2, 3: _join(self.path)})

    @classmethod
    def from_bytes(cls, raw: object) -> ConsistencyProof:
        obj = decode_map(raw, _CONS_SCHEMA, "consistency proof", 8192, LOG_VERSION)
        return cls(obj[1], obj[2], _cut(obj[3], "consistency proof"))

    def verify(self, old: SignedTreeHead, new: SignedTreeHead) -> None:
        if (self.size1, self.size2) != (old.size, new.size):
            raise InvalidProof("consistency proof is for other tree sizes than the heads")
        verify_consistency(old.size, new.size, self.path, old.root, new.root)


#: ``prove(size1, size2)`` asks the relay for a consistency proof.
ConsistencyFetcher = Callable[[int, int], ConsistencyProof]


# -- directory entries ----------------------------------------------------------------------

_ENTRY_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(int),
    3: Field(bytes, X25519_LEN),
    4: Field(bytes, HASH_LEN),
    5: Field(int),
}


def devices_hash(certificates: Iterable[bytes]) -> bytes:
    """Commitment to a certified device list: ``SHA-256("E2E_KT_DEVICES_v1" |
    u32(n) | for each certificate in the given order: u32(len) | certificate)``.

    Callers pass the certificates sorted by device id (the relay's listing order)."""
    certs = list(certificates)
    h = hashlib.sha256(DEVICES_LABEL + len(certs).to_bytes(4, "big"))
    for c in certs:
        h.update(len(c).to_bytes(4, "big"))
        h.update(c)
    return h.digest()


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One leaf: the ``version``-th state of ``account``: its identity key and the hash of
    its certified device list (``devices`` entries)."""

    account: bytes
    version: int
    identity: bytes
    devices: bytes
    device_count: int

    def to_bytes(self) -> bytes:
        """``"E2E_KT_ENTRY_v1" | CBOR {0: 1, 1: account, 2: version, 3: identity key,
        4: devices hash, 5: device count}`` (the leaf data)."""
        return ENTRY_LABEL + encode_map(
            {
                0: LOG_VERSION,
                1: self.account,
                2: self.version,
                3: self.identity,
                4: self.devices,
                5: self.device_count,
            }
        )

    @classmethod
    def from_bytes(cls, raw: object) -> DirectoryEntry:
        if type(raw) is not bytes or not raw.startswith(ENTRY_LABEL):
            raise DecodeError("directory entry lacks its label")
        obj = decode_map(raw[len(ENTRY_LABEL) :], _ENTRY_SCHEMA, "directory entry", 512, 1)
        return cls(check_account(obj[1]), obj[2], obj[3], obj[4], obj[5])


class KeyLog:
    """The relay's side: the log of directory entries and its signed heads.

    ``leaves`` restores a persisted log (the entries' bytes in order). Every change of an
    account's key or device list appends one entry with the next version; :meth:`head`
    signs the current size and root at ``now``."""

    def __init__(self, signer: LogSigner, leaves: Iterable[bytes] = ()) -> None:
        self.signer = signer
        self.tree = MerkleTree()
        self.entries: list[bytes] = []
        self.latest: dict[bytes, int] = {}
        for raw in leaves:
            self._add(raw)

    def __repr__(self) -> str:
        return f"KeyLog({len(self.entries)} entries)"

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append already-made entries (e.g. read back from a store), in order."""
        for raw in leaves:
            self._add(raw)

    def _add(self, raw: bytes) -> int:
        entry = DirectoryEntry.from_bytes(raw)
        index = self.tree.append(raw)
        self.entries.append(raw)
        self.latest[entry.account] = index
        return index

    def publish(self, account: bytes, identity: bytes, certificates: Sequence[bytes]) -> int:
        """Append the new state of ``account``; returns the leaf index."""
        prev = self.latest.get(account)
        version = 1 if prev is None else DirectoryEntry.from_bytes(self.entries[prev]).version + 1
        entry = DirectoryEntry(
            account, version, identity, devices_hash(certificates), len(certificates)
        )
        return self._add(entry.to_bytes())

    def head(self, now: int) -> SignedTreeHead:
        return self.signer.sign(TreeHead(len(self.tree), self.tree.root(), now))

    def lookup(self, account: bytes, size: int) -> tuple[bytes, InclusionProof]:
        """The latest entry of ``account`` within the first ``size`` leaves, and its proof."""
        index = self.latest.get(account)
        if index is None or index >= size:
            index = next(
                (
                    i
                    for i in range(min(size, len(self.entries)) - 1, -1, -1)
                    if DirectoryEntry.from_bytes(self.entries[i]).account == account
                ),
                None,
            )
        if index is None:
            raise KeyMismatch("account has no entry in the log")
        path = tuple(self.tree.inclusion_proof(index, size))
        return self.entries[index], InclusionProof(index, size, path)

    def consistency(self, size1: int, size2: int) -> ConsistencyProof:
        return ConsistencyProof(size1, size2, tuple(self.tree.consistency_proof(size1, size2)))

    def entries_since(
        self, start: int, size: int, end: int | None = None
    ) -> list[tuple[bytes, InclusionProof]]:
        """Entries ``start .. end-1`` (default ``size-1``) with their inclusion proofs in
        the tree of ``size`` leaves (for monitors)."""
        end = size if end is None else end
        if not 0 <= start <= end <= size <= len(self.entries):
            raise InvalidProof("range outside the log")
        return [
            (self.entries[i], InclusionProof(i, size, tuple(self.tree.inclusion_proof(i, size))))
            for i in range(start, end)
        ]


@dataclass(slots=True)
class LogView:
    """A client's view of the log: the pinned log key, every head it has accepted (sorted by
    size), the highest entry version seen per account, and how far its own account's
    entries have been audited. Serialise with :meth:`to_bytes` and keep it in the client
    store; a rejected head or proof leaves it unchanged."""

    log_key: bytes
    heads: list[SignedTreeHead] = field(default_factory=list)
    versions: dict[bytes, int] = field(default_factory=dict)
    audited: int = 0
    #: Set once a fork was proven; every later check then raises :class:`LogForked`.
    forked: bool = False

    def _fork(self, why: str) -> LogForked:
        self.forked = True
        return LogForked(why)

    def _check_not_forked(self) -> None:
        if self.forked:
            raise LogForked("this log was caught showing a split view; refusing it")

    @property
    def latest(self) -> SignedTreeHead | None:
        return self.heads[-1] if self.heads else None

    def _neighbours(self, size: int) -> tuple[SignedTreeHead | None, SignedTreeHead | None]:
        below = [h for h in self.heads if h.size < size]
        above = [h for h in self.heads if h.size > size]
        return (below[-1] if below else None), (above[0] if above else None)

    def proofs_needed(self, size: int) -> list[tuple[int, int]]:
        """The consistency proofs :meth:`check_head` will ask for to accept a head of
        ``size`` (fetch them first when the relay is reached asynchronously)."""
        if any(h.size == size for h in self.heads):
            return []
        below, above = self._neighbours(size)
        out = []
        if below is not None and below.size > 0:
            out.append((below.size, size))
        if above is not None and size > 0:
            out.append((size, above.size))
        return out

    def check_head(
        self,
        head: SignedTreeHead,
        prove: ConsistencyFetcher,
        *,
        allow_older: bool = False,
    ) -> None:
        """Accept ``head`` once it is signed by the log key and consistent with the heads
        seen so far (with the nearest smaller and larger one: append-only is transitive,
        so that makes it consistent with every pair). ``prove(size1, size2)`` returns a
        consistency proof from the relay.

        :class:`LogForked` for another root at a size already seen or a proof that fails
        (a split view or a rewritten log), :class:`LogRolledBack` for a head smaller than
        the newest seen unless ``allow_older`` (heads gossiped by peers may be older)."""
        self._check_not_forked()
        head.verify(self.log_key)
        latest = self.latest
        if latest is not None and head.size < latest.size and not allow_older:
            raise LogRolledBack("tree head smaller than one already seen")
        for seen in self.heads:
            if seen.size == head.size:
                if not hmac.compare_digest(seen.root, head.root):
                    raise self._fork("two signed tree heads of one size with different roots")
                return
        if latest is not None and head.size > latest.size:
            if head.head.timestamp + HEAD_SKEW < latest.head.timestamp:
                raise LogRolledBack("larger tree head with a much older timestamp")
        below, above = self._neighbours(head.size)
        try:
            if below is not None and below.size > 0:
                prove(below.size, head.size).verify(below, head)
            if above is not None and head.size > 0:
                prove(head.size, above.size).verify(head, above)
        except InvalidProof as exc:
            raise self._fork(f"tree heads are not consistent: {exc}") from None
        self.heads.append(head)
        self.heads.sort(key=lambda h: h.size)

    def gossip(self) -> bytes:
        """What our messages carry (SPEC §13.4): ``u64(size) | root`` of the newest head we
        accepted, or empty before the first."""
        latest = self.latest
        if latest is None:
            return b""
        return latest.size.to_bytes(8, "big") + latest.root

    def check_peer(
        self, gossip: bytes, prove: ConsistencyFetcher, refresh: Callable[[], object]
    ) -> None:
        """Compare a peer's log head (from inside an end-to-end message) with ours: same
        size needs the same root; otherwise the relay must prove the smaller consistent with
        the larger (``refresh()`` first fetches and checks the relay's newest head when the
        peer saw a larger log than we did). Anything else means the relay showed the two
        of us different logs: :class:`LogForked` (sticky)."""
        self._check_not_forked()
        if len(gossip) != 8 + HASH_LEN:
            raise DecodeError("peer log head must be 40 bytes")
        size, root = int.from_bytes(gossip[:8], "big"), gossip[8:]
        if size == 0 or size > _MAX_SIZE:
            raise DecodeError("peer log head size out of range")
        latest = self.latest
        if latest is None or size > latest.size:
            refresh()
            latest = self.latest
        if latest is None:
            return
        for seen in self.heads:
            if seen.size == size:
                if not hmac.compare_digest(seen.root, root):
                    raise self._fork("a peer saw another root at a size we saw")
                return
        try:
            if size < latest.size:
                proof = prove(size, latest.size)
                if (proof.size1, proof.size2) != (size, latest.size):
                    raise InvalidProof("consistency proof for other sizes")
                verify_consistency(size, latest.size, proof.path, root, latest.root)
            else:
                proof = prove(latest.size, size)
                if (proof.size1, proof.size2) != (latest.size, size):
                    raise InvalidProof("consistency proof for other sizes")
                verify_consistency(latest.size, size, proof.path, latest.root, root)
        except InvalidProof as exc:
            raise self._fork(f"a peer's log head is not consistent with ours: {exc}") from None

    def check_entry(
        self, account: bytes, raw: bytes, proof: InclusionProof, head: SignedTreeHead
    ) -> DirectoryEntry:
        """The entry of ``account`` proven in ``head`` (which must be the newest accepted
        head: a proof against an older head is :class:`StaleProof`). An entry older than
        one already seen for that account is :class:`StaleProof`; another account's entry
        is :class:`KeyMismatch`."""
        self._check_not_forked()
        latest = self.latest
        if latest is None or (head.size, head.root) != (latest.size, latest.root):
            raise StaleProof("inclusion proof is not against the newest tree head")
        if proof.size < head.size:
            raise StaleProof("inclusion proof against an older tree than the newest head")
        entry = DirectoryEntry.from_bytes(raw)
        if entry.account != account:
            raise KeyMismatch("log entry of another account")
        proof.verify(raw, head)
        if entry.version < self.versions.get(account, 0):
            raise StaleProof("log entry older than one already seen for this account")
        self.versions[account] = entry.version
        return entry

    def audit(
        self,
        account: bytes,
        identity: bytes,
        published: Mapping[int, bytes] | None,
        entries: Sequence[tuple[bytes, InclusionProof]],
    ) -> None:
        """Monitor our own account: ``entries`` are all leaves from :attr:`audited` to the
        newest head's size with their proofs. Every entry naming ``account`` must carry our
        ``identity`` key and, for its version, the hash (:func:`devices_hash`) of the device
        list we certified as that version (``published``: version -> devices hash). Raises
        :class:`KeyMismatch` for any other (a substituted key, a rogue or re-added device)
        and :class:`InvalidProof` for a gap or a bad proof; on error :attr:`audited` stays
        where it was."""
        self._check_not_forked()
        latest = self.latest
        if latest is None:
            raise StaleProof("no tree head to audit against")
        expected = self.audited
        for raw, proof in entries:
            if proof.index != expected:
                raise InvalidProof("audited entries are not contiguous")
            proof.verify(raw, latest)
            expected += 1
            entry = DirectoryEntry.from_bytes(raw)
            if entry.account != account:
                continue
            if not hmac.compare_digest(entry.identity, identity):
                raise KeyMismatch("the log holds an account key this account never had")
            if published is None:  # an account that does not track its versions
                continue
            want = published.get(entry.version)
            if want is None or not hmac.compare_digest(want, entry.devices):
                raise KeyMismatch("the log holds a device list this account never certified")
        if expected != latest.size:
            raise InvalidProof("audited entries do not reach the newest tree head")
        self.audited = expected

    def check_served(
        self,
        account: bytes,
        identity: bytes,
        certificates: Sequence[bytes],
        raw: bytes,
        proof: InclusionProof,
        head: SignedTreeHead,
    ) -> DirectoryEntry:
        """:meth:`check_entry`, then the account key and device certificates the relay
        served must be exactly the logged ones (:class:`KeyMismatch` otherwise)."""
        entry = self.check_entry(account, raw, proof, head)
        if not hmac.compare_digest(entry.identity, identity):
            raise KeyMismatch("served account key is not the one in the log")
        if entry.device_count != len(certificates) or not hmac.compare_digest(
            entry.devices, devices_hash(certificates)
        ):
            raise KeyMismatch("served device list is not the one in the log")
        return entry

    # -- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``u8(1) | log key | u8(forked) | u64(audited) | u32(#heads) | (u16(len) |
        head)* | u32(#accounts) | (u8(len) | account | u64(version))*``."""
        out = bytearray(b"\x01" + self.log_key + bytes([int(self.forked)]))
        out += self.audited.to_bytes(8, "big") + len(self.heads).to_bytes(4, "big")
        for h in self.heads:
            raw = h.to_bytes()
            out += len(raw).to_bytes(2, "big") + raw
        out += len(self.versions).to_bytes(4, "big")
        for name, version in sorted(self.versions.items()):
            out += bytes([len(name)]) + name + version.to_bytes(8, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> LogView:
        """Inverse of :meth:`to_bytes`; :class:`DecodeError` for anything else."""
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if n < 0 or pos + n > len(raw):
                raise DecodeError("log view record is truncated")
            pos += n
            return raw[pos - n : pos]

        if type(raw) is not bytes or take(1) != b"\x01":
            raise DecodeError("log view record of an unknown version")
        key = take(32)
        forked = take(1)[0]
        if forked > 1:
            raise DecodeError("log view record is malformed")
        audited = int.from_bytes(take(8), "big")
        heads = [
            SignedTreeHead.from_bytes(take(int.from_bytes(take(2), "big")))
            for _ in range(int.from_bytes(take(4), "big"))
        ]
        versions: dict[bytes, int] = {}
        for _ in range(int.from_bytes(take(4), "big")):
            name = check_account(take(take(1)[0]))
            versions[name] = int.from_bytes(take(8), "big")
        if pos != len(raw) or [h.size for h in heads] != sorted({h.size for h in heads}):
            raise DecodeError("log view record is malformed")
        return cls(key, heads, versions, audited, bool(forked))
