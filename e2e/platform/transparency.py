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
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from e2e.errors import (
    DecodeError,
    InvalidProof,
    InvalidSignature,
    KeyMismatch,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.frame import Field, decode_map, encode_map
from e2e.keys import X25519_LEN
from e2e.platform.directory import MAX_LIST_BYTES, SignedDeviceList, check_signed
from e2e.platform.envelope import check_account
from e2e.platform.leaves import Leaf, Opening, commitment, label_input, vrf_key_statement
from e2e.platform.merkle import (
    HEAD_SKEW,
    ConsistencyFetcher,
    ConsistencyProof,
    InclusionProof,
    LogSigner,
    MerkleTree,
    SignedTreeHead,
    TreeHead,
)
from e2e.platform.vrf import VrfKey

__all__ = [
    "ENTRY_LABEL",
    "MAX_ENTRY_BYTES",
    "MAX_OPENING_BYTES",
    "MAX_VIEW_HEADS",
    "DirectoryEntry",
    "KeyLog",
    "ForkEvidence",
    "LogView",
]

ENTRY_LABEL: Final = b"E2E_KT_ENTRY_v2"
ENTRY_VERSION: Final = 2
#: Largest entry: a label, the account, key and version, and a whole device list; and the
#: largest opening record (an entry, its opening and a VRF proof).
MAX_ENTRY_BYTES: Final = MAX_LIST_BYTES + 256
MAX_OPENING_BYTES: Final = MAX_ENTRY_BYTES + 160


# -- directory entries ----------------------------------------------------------------------

_ENTRY_SCHEMA: Final = {
    0: Field(int),
    1: Field(bytes),
    2: Field(int),
    3: Field(bytes, X25519_LEN),
    4: Field(bytes),
}


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One leaf: the ``version``-th state of ``account``: its identity key and its newest
    signed device list (SPEC §10.1; empty before its first device)."""

    account: bytes
    version: int
    identity: bytes
    device_list: bytes

    def to_bytes(self) -> bytes:
        """``"E2E_KT_ENTRY_v2" | CBOR {0: 2, 1: account, 2: version, 3: identity key,
        4: signed device list}`` (the leaf data)."""
        return ENTRY_LABEL + encode_map(
            {0: ENTRY_VERSION, 1: self.account, 2: self.version, 3: self.identity,
             4: self.device_list}
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: object) -> DirectoryEntry:
        if type(raw) is not bytes or not raw.startswith(ENTRY_LABEL):
            raise DecodeError("directory entry lacks its label")
        obj = decode_map(raw[len(ENTRY_LABEL) :], _ENTRY_SCHEMA, "directory entry",
                         MAX_ENTRY_BYTES, ENTRY_VERSION)  # fmt: skip
        return cls(check_account(obj[1]), obj[2], obj[3], obj[4])

    def signed_list(self) -> SignedDeviceList | None:
        """The entry's device list, checked under the entry's key (None: none yet);
        :class:`KeyMismatch` if it is not the account's, signed by that key."""
        if not self.device_list:
            return None
        try:
            return check_signed(self.device_list, self.account, self.identity)
        except (DecodeError, InvalidSignature):
            raise KeyMismatch("the log holds a device list its account key did not sign") from None


class KeyLog:
    """The relay's side: the log's leaves (labels and commitments, :mod:`e2e.platform.leaves`),
    the opening record of each, and its signed heads.

    ``records`` restores a persisted log (the opening records in order). Every change of an
    account's key or device list appends one leaf with the next version; :meth:`head` signs
    the current size and root at ``now``."""

    def __init__(self, signer: LogSigner, vrf: VrfKey, records: Iterable[bytes] = ()) -> None:
        self.signer = signer
        self.vrf = vrf
        self.tree = MerkleTree()
        self.records: list[bytes] = []
        self.leaves: list[bytes] = []
        self.accounts: list[bytes] = []
        #: Each account's leaf indices, ascending: a lookup at any tree size is a bisection
        #: of its own leaves, never a walk of the log (SPEC §10.13).
        self.indices: dict[bytes, list[int]] = {}
        self._proofs: dict[bytes, bytes] = {}
        #: account -> (VRF proof, label) last seen in a record: every record of an account
        #: carries the same proof (ECVRF is deterministic), so a restore hashes it once.
        self._labels: dict[bytes, tuple[bytes, bytes]] = {}
        self.extend(records)

    def __repr__(self) -> str:
        return f"KeyLog({len(self.records)} entries)"

    def extend(self, records: Iterable[bytes]) -> None:
        """Append already-made opening records (e.g. read back from a store), in order."""
        for raw in records:
            self._add(raw)

    def _add(self, raw: bytes) -> int:
        op = Opening.from_bytes(raw, MAX_OPENING_BYTES)
        account = DirectoryEntry.from_bytes(op.entry).account
        known = self._labels.get(account)
        if known is None or not hmac.compare_digest(known[0], op.proof):
            known = self._labels[account] = (op.proof, op.leaf().label)
        leaf = Leaf(known[1], commitment(op.opening, op.entry)).to_bytes()
        index = self.tree.append(leaf)
        self.records.append(raw)
        self.leaves.append(leaf)
        self.accounts.append(account)
        self.indices.setdefault(account, []).append(index)
        return index

    def vrf_statement(self) -> bytes:
        """The log key's signature vouching for the VRF public key."""
        return self.signer.vouch(vrf_key_statement(self.vrf.public))

    def record(self, account: bytes, version: int, identity: bytes, device_list: bytes,
               opening: bytes) -> bytes:  # fmt: skip
        """The opening record of a new leaf (the VRF proof of the account's label is
        deterministic, so made once per account)."""
        entry = DirectoryEntry(account, version, identity, device_list).to_bytes()
        proof = self._proofs.get(account)
        if proof is None:
            proof = self._proofs[account] = self.vrf.prove(label_input(account))
        return Opening(entry, opening, proof).to_bytes()

    def publish(self, account: bytes, identity: bytes, device_list: bytes,
                opening: bytes | None = None) -> int:  # fmt: skip
        """Append the new state of ``account``; returns the leaf index."""
        held = self.indices.get(account)
        version = 1 if not held else self.entry(held[-1]).version + 1
        opening = os.urandom(32) if opening is None else opening
        return self._add(self.record(account, version, identity, device_list, opening))

    def entry(self, index: int) -> DirectoryEntry:
        return DirectoryEntry.from_bytes(Opening.from_bytes(self.records[index],
                                                            MAX_OPENING_BYTES).entry)  # fmt: skip

    def head(self, now: int) -> SignedTreeHead:
        return self.signer.sign(TreeHead(len(self.tree), self.tree.root(), now))

    def _proof(self, index: int, size: int) -> InclusionProof:
        return InclusionProof(index, size, tuple(self.tree.inclusion_proof(index, size)))

    def lookup(self, account: bytes, size: int) -> tuple[bytes, InclusionProof]:
        """The opening record of the latest entry of ``account`` within the first ``size``
        leaves, and its leaf's inclusion proof (a bisection of the account's own leaf
        indices: a missing account costs nothing)."""
        held = self.indices.get(account, [])
        at = bisect.bisect_left(held, min(size, len(self.records)))
        if at == 0:
            raise KeyMismatch("account has no entry in the log")
        index = held[at - 1]
        return self.records[index], self._proof(index, size)

    def open(self, index: int, size: int) -> tuple[bytes, bytes, InclusionProof]:
        """(account, opening record, inclusion proof) of leaf ``index`` (for the account's
        own monitor: the caller checks the account is the asker's)."""
        if not 0 <= index < size <= len(self.records):
            raise InvalidProof("leaf outside the log")
        return self.accounts[index], self.records[index], self._proof(index, size)

    def consistency(self, size1: int, size2: int) -> ConsistencyProof:
        return ConsistencyProof(size1, size2, tuple(self.tree.consistency_proof(size1, size2)))

    def leaves_since(
        self, start: int, size: int, end: int | None = None
    ) -> list[tuple[bytes, InclusionProof]]:
        """Leaves ``start .. end-1`` (default ``size-1``) with their inclusion proofs in the
        tree of ``size`` leaves (for monitors): labels and commitments, no name."""
        end = size if end is None else end
        if not 0 <= start <= end <= size <= len(self.records):
            raise InvalidProof("range outside the log")
        return [(self.leaves[i], self._proof(i, size)) for i in range(start, end)]


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Proof that the relay showed a split view: two tree heads, both signed by the log key,
    that one append-only log cannot both have produced -- of one size with two roots, or of
    two sizes the relay could not prove consistent (an honest log always can). Anyone holding
    the pinned log key can check the signatures (:meth:`verify`); nothing a peer sends
    without the log key's signature can make one."""

    first: SignedTreeHead
    second: SignedTreeHead

    def verify(self, log_key: bytes) -> None:
        """:class:`InvalidProof` unless both heads are the log's and could be a fork."""
        self.first.verify(log_key)
        self.second.verify(log_key)
        if self.first.size == self.second.size and hmac.compare_digest(
            self.first.root, self.second.root
        ):
            raise InvalidProof("two equal heads are no fork")

    def to_bytes(self) -> bytes:
        """``u16(len) | first head | u16(len) | second head`` (SPEC §13.2 wire forms)."""
        a, b = self.first.to_bytes(), self.second.to_bytes()
        return len(a).to_bytes(2, "big") + a + len(b).to_bytes(2, "big") + b

    @classmethod
    def from_bytes(cls, raw: bytes) -> ForkEvidence:
        heads = []
        pos = 0
        for _ in range(2):
            n = int.from_bytes(raw[pos : pos + 2], "big")
            if pos + 2 + n > len(raw):
                raise DecodeError("fork evidence is truncated")
            heads.append(SignedTreeHead.from_bytes(raw[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        if pos != len(raw):
            raise DecodeError("fork evidence is malformed")
        return cls(heads[0], heads[1])


#: Most tree heads a client's view keeps (the newest).
MAX_VIEW_HEADS: Final = 64


@dataclass(slots=True)
class LogView:
    """A client's view of the log: the pinned log key, the newest :data:`MAX_VIEW_HEADS`
    heads it has accepted (sorted by size), the highest entry version seen per account, and
    how far its own account's entries have been audited. Serialise with :meth:`to_bytes` and
    keep it in the client store; a rejected head or proof leaves it unchanged."""

    log_key: bytes
    heads: list[SignedTreeHead] = field(default_factory=list)
    versions: dict[bytes, int] = field(default_factory=dict)
    audited: int = 0
    #: Set once a fork was proven (two signed heads, :class:`ForkEvidence`); every later
    #: check then raises :class:`LogForked`.
    evidence: ForkEvidence | None = None
    #: The version of our own account's newest device list the audit has seen.
    own_list: int = 0
    #: The relay's VRF public key (vouched for by the log key) and our account's label.
    vrf_key: bytes = b""
    own_label: bytes = b""

    @property
    def forked(self) -> bool:
        return self.evidence is not None

    def _fork(self, why: str, a: SignedTreeHead, b: SignedTreeHead) -> LogForked:
        self.evidence = ForkEvidence(a, b)
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
        if latest is not None and head.size > latest.size:
            if head.head.timestamp + HEAD_SKEW < latest.head.timestamp:
                raise LogRolledBack("larger tree head with a much older timestamp")
        self._join(head, prove)

    def _join(self, head: SignedTreeHead, prove: ConsistencyFetcher) -> None:
        """Add the signed ``head`` if it is consistent with every head seen; a fork (with
        its evidence) otherwise."""
        for seen in self.heads:
            if seen.size == head.size:
                if not hmac.compare_digest(seen.root, head.root):
                    raise self._fork("two signed tree heads of one size with different roots",
                                     seen, head)  # fmt: skip
                return
        below, above = self._neighbours(head.size)
        for a, b in ((below, head), (head, above)):
            if a is None or b is None or a.size == 0:
                continue
            try:
                prove(a.size, b.size).verify(a, b)
            except InvalidProof as exc:
                raise self._fork(f"tree heads are not consistent: {exc}", a, b) from None
        self.heads.append(head)
        self.heads.sort(key=lambda h: h.size)
        # Bounded (SPEC §13.4): the oldest heads go. Nothing is lost for fork detection: a
        # head is accepted only consistent with the next larger one kept, and a consistency
        # proof to a kept head fixes the root of every smaller size.
        del self.heads[:-MAX_VIEW_HEADS]

    def gossip(self) -> bytes:
        """What our messages carry (SPEC §13.4): the newest head we accepted, as signed by
        the log key, or empty before the first."""
        latest = self.latest
        return b"" if latest is None else latest.to_bytes()

    def peer_head(self, raw: bytes) -> SignedTreeHead:
        """A head a peer carried, decoded and checked against the pinned log key
        (:class:`DecodeError` or :class:`InvalidProof`: proof of nothing, to be dropped)."""
        head = SignedTreeHead.from_bytes(raw)
        head.verify(self.log_key)
        return head

    def check_peer(self, head: SignedTreeHead, prove: ConsistencyFetcher) -> None:
        """Compare a peer's signed log head (from inside an end-to-end message, checked by
        :meth:`peer_head`) with ours: one size needs one root; two sizes need the relay's
        proof that the smaller is a prefix of the larger (``prove``; the caller first
        accepts the relay's newest head when the peer saw a larger log). A failure means the
        relay signed two views of its log: :class:`LogForked` (sticky), with the two heads
        kept as :attr:`evidence`. A consistent head is kept like one of our own; an empty
        log's head is a prefix of every log."""
        self._check_not_forked()
        head.verify(self.log_key)
        if head.size == 0 or self.latest is None:
            return
        self._join(head, prove)

    def check_entry(
        self, account: bytes, raw: bytes, proof: InclusionProof, head: SignedTreeHead
    ) -> DirectoryEntry:
        """The entry of ``account`` that the opening record ``raw`` opens, its leaf proven
        in ``head`` (which must be the newest accepted head: a proof against an older head
        is :class:`StaleProof`) under the label the relay's VRF key gives ``account``
        (:class:`InvalidProof` otherwise). An entry older than one already seen for that
        account is :class:`StaleProof`; another account's entry is :class:`KeyMismatch`."""
        self._check_not_forked()
        latest = self.latest
        if latest is None or (head.size, head.root) != (latest.size, latest.root):
            raise StaleProof("inclusion proof is not against the newest tree head")
        if proof.size < head.size:
            raise StaleProof("inclusion proof against an older tree than the newest head")
        opened = Opening.from_bytes(raw, MAX_OPENING_BYTES)
        entry = DirectoryEntry.from_bytes(opened.entry)
        if entry.account != account:
            raise KeyMismatch("log entry of another account")
        if not self.vrf_key:
            raise InvalidProof("the relay's VRF key is not known yet")
        proof.verify(opened.checked_leaf(self.vrf_key, account).to_bytes(), head)
        if entry.version < self.versions.get(account, 0):
            raise StaleProof("log entry older than one already seen for this account")
        self.versions[account] = entry.version
        return entry

    def learn_vrf_key(self, vrf_public: bytes, signature: bytes) -> None:
        """The relay's VRF public key, vouched for by the pinned log key (SPEC §13.5);
        :class:`InvalidProof` if the log key did not sign it or another key was learnt."""
        try:
            Ed25519PublicKey.from_public_bytes(self.log_key).verify(
                signature, vrf_key_statement(vrf_public))  # fmt: skip
        except (_CryptoInvalidSignature, ValueError):
            raise InvalidProof("VRF key not vouched for by the log key") from None
        if self.vrf_key and not hmac.compare_digest(self.vrf_key, vrf_public):
            raise InvalidProof("the relay vouched for another VRF key")
        self.vrf_key = vrf_public

    def learn_own_label(self, account: bytes, raw: bytes) -> bytes:
        """Our account's label, from an opening record of one of its entries (its VRF proof
        checked); kept for :meth:`audit`."""
        opened = Opening.from_bytes(raw, MAX_OPENING_BYTES)
        self.own_label = opened.checked_leaf(self.vrf_key, account).label
        return self.own_label

    def own_leaves(self, leaves: Sequence[tuple[bytes, InclusionProof]]) -> list[int]:
        """The indices of ``leaves`` under our account's label: the ones :meth:`audit`
        needs opened."""
        return [p.index for raw, p in leaves if Leaf.from_bytes(raw).label == self.own_label]

    def audit(
        self,
        account: bytes,
        identity: bytes,
        entries: Sequence[tuple[bytes, InclusionProof]],
        openings: Mapping[int, bytes],
        *,
        partial: bool = False,
    ) -> None:
        """Monitor our own account: ``entries`` are all leaves from :attr:`audited` to the
        newest head's size with their proofs (``partial``: the first of them, a monitor
        bounding its work; the rest is audited by the next call), ``openings`` the relay's
        opening records of those under our label (:meth:`own_leaves`). Each such leaf must
        open to an entry of ``account`` with our ``identity`` key and a device list that key
        signed, each list a later version than the one before it (:attr:`own_list`: the last
        audited). Raises :class:`KeyMismatch` for any other (a leaf the relay does not open,
        a substituted key, a device list we never signed, an older list logged again to
        bring back a removed device) and :class:`InvalidProof` for a gap or a bad proof; on
        error :attr:`audited` and :attr:`own_list` stay where they were."""
        self._check_not_forked()
        latest = self.latest
        if latest is None or not self.own_label:
            raise StaleProof("no tree head, or our label unknown, to audit against")
        expected, own = self.audited, self.own_list
        for raw, proof in entries:
            if proof.index != expected:
                raise InvalidProof("audited entries are not contiguous")
            proof.verify(raw, latest)
            expected += 1
            if Leaf.from_bytes(raw).label != self.own_label:
                continue
            record = openings.get(proof.index)
            if record is None:
                raise KeyMismatch("the relay does not open an entry under our label")
            try:
                opened = Opening.from_bytes(record, MAX_OPENING_BYTES)
                leaf = opened.checked_leaf(self.vrf_key, account).to_bytes()
            except (DecodeError, InvalidProof):
                leaf = b""
            if leaf != raw:
                raise KeyMismatch("an entry under our label opens to something else")
            entry = DirectoryEntry.from_bytes(opened.entry)
            if entry.account != account or not hmac.compare_digest(entry.identity, identity):
                raise KeyMismatch("the log holds an account key this account never had")
            listed = entry.signed_list()
            if listed is None:
                if own:
                    raise KeyMismatch("the log holds an account state without its device list")
                continue
            if listed.version <= own:
                raise KeyMismatch("the log holds an older device list of this account again")
            own = listed.version
        if expected != latest.size and not partial:
            raise InvalidProof("audited entries do not reach the newest tree head")
        self.audited, self.own_list = expected, own

    def check_served(
        self,
        account: bytes,
        identity: bytes,
        device_list: bytes,
        raw: bytes,
        proof: InclusionProof,
        head: SignedTreeHead,
    ) -> DirectoryEntry:
        """:meth:`check_entry`, then the account key and signed device list the relay
        served must be exactly the logged ones (:class:`KeyMismatch` otherwise)."""
        entry = self.check_entry(account, raw, proof, head)
        if not hmac.compare_digest(entry.identity, identity):
            raise KeyMismatch("served account key is not the one in the log")
        if not hmac.compare_digest(entry.device_list, device_list):
            raise KeyMismatch("served device list is not the one in the log")
        return entry

    # -- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``u8(4) | log key | u16(len) | fork evidence (empty: none) | u64(audited) |
        u64(own list) | u8(len) | VRF key | u8(len) | own label | u32(#heads) | (u16(len) |
        head)* | u32(#accounts) | (u8(len) | account | u64(version))*``."""
        ev = b"" if self.evidence is None else self.evidence.to_bytes()
        out = bytearray(b"\x04" + self.log_key + len(ev).to_bytes(2, "big") + ev)
        out += self.audited.to_bytes(8, "big") + self.own_list.to_bytes(8, "big")
        out += bytes([len(self.vrf_key)]) + self.vrf_key
        out += bytes([len(self.own_label)]) + self.own_label
        out += len(self.heads).to_bytes(4, "big")
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

        if type(raw) is not bytes or raw[:1] not in (b"\x01", b"\x02", b"\x03", b"\x04"):
            raise DecodeError("log view record of an unknown version")
        form = take(1)[0]
        key = take(32)
        evidence = None
        if form < 3:
            # Before signed heads in messages a fork flag could be set by what any peer
            # sent (SPEC §13.4): it proves nothing, so it is dropped.
            if take(1)[0] > 1:
                raise DecodeError("log view record is malformed")
        else:
            ev = take(int.from_bytes(take(2), "big"))
            evidence = ForkEvidence.from_bytes(ev) if ev else None
        audited = int.from_bytes(take(8), "big")
        own_list = int.from_bytes(take(8), "big") if form >= 2 else 0
        vrf_key = take(take(1)[0]) if form >= 4 else b""
        own_label = take(take(1)[0]) if form >= 4 else b""
        if form < 4:  # before the VRF labels: the leaves audited were of another form
            audited = own_list = 0
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
        return cls(key, heads, versions, audited, evidence, own_list, vrf_key, own_label)
