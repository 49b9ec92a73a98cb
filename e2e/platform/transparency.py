"""The key directory (SPEC.md §13.4): an append-only Merkle log (:mod:`e2e.platform.merkle`)
of account keys and device lists.

The key directory (:class:`KeyLog` at the relay, :class:`LogView` at a client) commits every
account's identity key and certified device list as one leaf; a client accepts a key or device
list only with an inclusion proof against a signed head it has checked for consistency with
every head it saw before, and an account finds any entry under its name that it did not
publish (:meth:`LogView.audit`).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from e2e.errors import (
    DecodeError,
    InvalidProof,
    KeyMismatch,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN
from e2e.platform.envelope import check_account
from e2e.platform.merkle import (
    HASH_LEN,
    HEAD_SKEW,
    LOG_VERSION,
    MAX_SIZE,
    ConsistencyFetcher,
    ConsistencyProof,
    InclusionProof,
    LogSigner,
    MerkleTree,
    SignedTreeHead,
    TreeHead,
    verify_consistency,
)

__all__ = [
    "ENTRY_LABEL",
    "DEVICES_LABEL",
    "DirectoryEntry",
    "devices_hash",
    "KeyLog",
    "LogView",
]

ENTRY_LABEL: Final = b"E2E_KT_ENTRY_v1"
DEVICES_LABEL: Final = b"E2E_KT_DEVICES_v1"


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
        #: Each account's leaf indices, ascending: a lookup at any tree size is a bisection
        #: of its own entries, never a walk of the log (SPEC §10.13).
        self.indices: dict[bytes, list[int]] = {}
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
        self.indices.setdefault(entry.account, []).append(index)
        return index

    def publish(self, account: bytes, identity: bytes, certificates: Sequence[bytes]) -> int:
        """Append the new state of ``account``; returns the leaf index."""
        held = self.indices.get(account)
        version = 1 if not held else DirectoryEntry.from_bytes(self.entries[held[-1]]).version + 1
        entry = DirectoryEntry(
            account, version, identity, devices_hash(certificates), len(certificates)
        )
        return self._add(entry.to_bytes())

    def head(self, now: int) -> SignedTreeHead:
        return self.signer.sign(TreeHead(len(self.tree), self.tree.root(), now))

    def lookup(self, account: bytes, size: int) -> tuple[bytes, InclusionProof]:
        """The latest entry of ``account`` within the first ``size`` leaves, and its proof
        (a bisection of the account's own leaf indices: a missing account costs nothing)."""
        held = self.indices.get(account, [])
        at = bisect.bisect_left(held, min(size, len(self.entries)))
        if at == 0:
            raise KeyMismatch("account has no entry in the log")
        index = held[at - 1]
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


#: Most tree heads a client's view keeps (the newest).
MAX_VIEW_HEADS: Final = 64


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
        # Bounded (SPEC §13.4): the oldest heads go. Nothing is lost for fork detection: a
        # head is accepted only consistent with the next larger one kept, and a consistency
        # proof to a kept head fixes the root of every smaller size.
        del self.heads[:-MAX_VIEW_HEADS]

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
        if size == 0 or size > MAX_SIZE:
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
