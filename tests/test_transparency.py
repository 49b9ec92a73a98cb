"""Merkle log and key directory (e2e.platform.transparency). Published RFC 6962/9162 test
data is checked in vectors/merkle.json; these tests cover bigger trees against the RFC's
recursive definitions, the wire forms and the client's view of the log."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import (
    DecodeError,
    E2EError,
    InvalidProof,
    KeyMismatch,
    LogForked,
    LogRolledBack,
    StaleProof,
)
from e2e.keys import KeyPair
from e2e.platform.merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    InclusionProof,
    LogSigner,
    MerkleTree,
    SignedTreeHead,
    TreeHead,
    verify_consistency,
    verify_inclusion,
)
from e2e.platform.transparency import DirectoryEntry, KeyLog, LogView, devices_hash


# RFC 9162 §2.1.1-§2.1.4, written as the RFC states them (recursively), as a reference.
def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(d[:k]) + _mth(d[k:])).digest()


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


DATA = [bytes([i]) * (i % 7) for i in range(70)]


def test_roots_and_proofs_match_the_rfc_definitions() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT
    for i, leaf in enumerate(DATA):
        tree.append(leaf)
        n = i + 1
        assert tree.root() == _mth(DATA[:n])
    for n in (1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 70):
        root = _mth(DATA[:n])
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == _path(m, DATA[:n])
            verify_inclusion(m, n, tree.leaf(m), proof, root)
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == _subproof(m, DATA[:n], True)
            verify_consistency(m, n, proof, _mth(DATA[:m]), root)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_any_changed_proof_is_rejected(n: int, data: st.DataObject) -> None:
    tree = MerkleTree(DATA[:n])
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m, n)
    root = tree.root(n)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        with pytest.raises(InvalidProof):
            verify_inclusion(m, n, tree.leaf(m), bad, root)
        with pytest.raises(InvalidProof):
            verify_inclusion(m, n, tree.leaf(m), proof[:-1], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(m, n, tree.leaf(m), [*proof, root], root)
    other = data.draw(st.integers(0, n))
    if other != m and other < n and tree.leaf(other) != tree.leaf(m):
        with pytest.raises(InvalidProof):
            verify_inclusion(other, n, tree.leaf(m), proof, root)


def test_bad_sizes_are_invalid_proofs() -> None:
    tree = MerkleTree(DATA[:5])
    with pytest.raises(InvalidProof):
        tree.inclusion_proof(5, 5)
    with pytest.raises(InvalidProof):
        tree.consistency_proof(0, 5)
    with pytest.raises(InvalidProof):
        tree.root(6)
    with pytest.raises(InvalidProof):
        verify_consistency(5, 3, [], tree.root(5), tree.root(3))
    with pytest.raises(InvalidProof):
        verify_inclusion(-1, 5, tree.leaf(0), [], tree.root())


def test_signed_tree_head_round_trip_and_signature() -> None:
    signer = LogSigner()
    sth = signer.sign(TreeHead(3, b"\x11" * 32, 1_767_225_600))
    again = SignedTreeHead.from_bytes(sth.to_bytes())
    assert again == sth
    again.verify(signer.public)
    with pytest.raises(InvalidProof):
        again.verify(LogSigner().public)
    forged = SignedTreeHead(TreeHead(4, sth.root, sth.head.timestamp), sth.signature)
    with pytest.raises(InvalidProof):
        forged.verify(signer.public)
    raw = bytearray(sth.to_bytes())
    raw[-1] ^= 1
    with pytest.raises(InvalidProof):
        SignedTreeHead.from_bytes(bytes(raw)).verify(signer.public)
    assert "LogSigner(...)" == repr(signer)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_wire_decoders_raise_only_e2e_errors(raw: bytes) -> None:
    for cls in (SignedTreeHead, InclusionProof, ConsistencyProof, DirectoryEntry):
        try:
            cls.from_bytes(raw)  # type: ignore[attr-defined]
        except E2EError:
            pass


def test_proof_wire_round_trip() -> None:
    tree = MerkleTree(DATA[:9])
    p = InclusionProof(3, 9, tuple(tree.inclusion_proof(3, 9)))
    assert InclusionProof.from_bytes(p.to_bytes()) == p
    c = ConsistencyProof(3, 9, tuple(tree.consistency_proof(3, 9)))
    assert ConsistencyProof.from_bytes(c.to_bytes()) == c
    bad = p.to_bytes()[:-1]
    with pytest.raises(DecodeError):
        InclusionProof.from_bytes(bad)


# -- key directory ---------------------------------------------------------------------------

ALICE, ACME = KeyPair.generate().public, KeyPair.generate().public
EVE = KeyPair.generate().public
CERTS = [b"cert-1", b"cert-2"]


def _log() -> tuple[KeyLog, LogView]:
    log = KeyLog(LogSigner())
    log.publish(b"alice", ALICE, CERTS[:1])
    log.publish(b"acme", ACME, CERTS)
    return log, LogView(log.signer.public)


def _fresh(view: LogView, log: KeyLog, now: int = 100) -> SignedTreeHead:
    head = log.head(now)
    view.check_head(head, log.consistency)
    return head


def test_lookup_verifies_and_versions_advance() -> None:
    log, view = _log()
    head = _fresh(view, log)
    raw, proof = log.lookup(b"acme", head.size)
    entry = view.check_entry(b"acme", raw, proof, head)
    assert (entry.identity, entry.devices, entry.version) == (ACME, devices_hash(CERTS), 1)
    log.publish(b"acme", ACME, CERTS[:1])
    head2 = _fresh(view, log, 200)
    raw2, proof2 = log.lookup(b"acme", head2.size)
    assert view.check_entry(b"acme", raw2, proof2, head2).version == 2
    # The older entry, with a valid proof against the new head, is stale now.
    old = log.entries.index(raw)
    stale = InclusionProof(old, head2.size, tuple(log.tree.inclusion_proof(old, head2.size)))
    with pytest.raises(StaleProof):
        view.check_entry(b"acme", raw, stale, head2)
    # A proof against an older head is stale too.
    with pytest.raises(StaleProof):
        view.check_entry(b"acme", raw, proof, head)


def test_entry_of_another_account_or_unproven_entry_is_refused() -> None:
    log, view = _log()
    head = _fresh(view, log)
    raw, proof = log.lookup(b"alice", head.size)
    with pytest.raises(KeyMismatch):
        view.check_entry(b"acme", raw, proof, head)
    fake = DirectoryEntry(b"acme", 9, EVE, devices_hash([b"x"]), 1).to_bytes()
    with pytest.raises(InvalidProof):
        view.check_entry(b"acme", fake, proof, head)
    assert view.versions == {}


def test_rollback_and_fork_are_detected_and_change_nothing() -> None:
    log, view = _log()
    old = _fresh(view, log, 100)
    log.publish(b"bob", EVE, [])
    new = _fresh(view, log, 200)
    heads = list(view.heads)
    with pytest.raises(LogRolledBack):
        view.check_head(log.signer.sign(TreeHead(old.size, old.root, 300)), log.consistency)
    # A fork: the relay shows another log of the same size.
    fork = KeyLog(log.signer)
    fork.publish(b"alice", ALICE, CERTS[:1])
    fork.publish(b"acme", EVE, CERTS)
    fork.publish(b"bob", EVE, [])
    with pytest.raises(LogForked):
        view.check_head(fork.head(300), fork.consistency)
    # ... or a larger one that does not extend what we saw.
    fork.publish(b"carol", EVE, [])
    fresh = LogView(log.signer.public)
    fresh.check_head(new, log.consistency)
    with pytest.raises(LogForked):
        fresh.check_head(fork.head(300), fork.consistency)
    assert view.heads == heads
    # A head signed by another key is not the log's.
    assert view.forked
    with pytest.raises(InvalidProof):
        LogView(log.signer.public).check_head(
            KeyLog(LogSigner(), log.entries).head(300), log.consistency
        )
    # A peer's older head (gossip) is accepted once proven consistent.
    view2 = LogView(log.signer.public)
    view2.check_head(new, log.consistency)
    view2.check_head(old, log.consistency, allow_older=True)
    assert [h.size for h in view2.heads] == [old.size, new.size]


def test_audit_finds_a_substituted_key_and_a_rogue_device() -> None:
    log, view = _log()
    _fresh(view, log)
    mine = {1: devices_hash(CERTS)}
    view.audit(b"acme", ACME, mine, log.entries_since(0, len(log.entries)))
    assert view.audited == 2
    log.publish(b"acme", ACME, [*CERTS, b"rogue"])
    _fresh(view, log, 200)
    with pytest.raises(KeyMismatch):
        view.audit(b"acme", ACME, mine, log.entries_since(2, len(log.entries)))
    assert view.audited == 2
    log.publish(b"acme", EVE, CERTS)
    _fresh(view, log, 300)
    with pytest.raises(KeyMismatch):
        view.audit(
            b"acme",
            ACME,
            {**mine, 2: devices_hash([*CERTS, b"rogue"])},
            log.entries_since(2, len(log.entries)),
        )
    # A monitor that is shown only part of the log notices the gap.
    with pytest.raises(InvalidProof):
        view.audit(b"acme", ACME, mine, log.entries_since(3, len(log.entries)))


def test_log_restores_from_its_leaves() -> None:
    log, _ = _log()
    again = KeyLog(log.signer, log.entries)
    assert again.tree.root() == log.tree.root()
    assert again.lookup(b"acme", 2) == log.lookup(b"acme", 2)


def test_served_state_must_equal_the_logged_state() -> None:
    log, view = _log()
    head = _fresh(view, log)
    raw, proof = log.lookup(b"acme", head.size)
    view.check_served(b"acme", ACME, CERTS, raw, proof, head)
    with pytest.raises(KeyMismatch):
        view.check_served(b"acme", EVE, CERTS, raw, proof, head)
    with pytest.raises(KeyMismatch):
        view.check_served(b"acme", ACME, [*CERTS, b"rogue"], raw, proof, head)


def test_a_fork_is_sticky_and_the_view_persists() -> None:
    log, view = _log()
    _fresh(view, log)
    again = LogView.from_bytes(view.to_bytes())
    assert again == view
    fork = KeyLog(log.signer)
    fork.publish(b"alice", EVE, [])
    fork.publish(b"acme", EVE, [])
    with pytest.raises(LogForked):
        view.check_head(fork.head(500), fork.consistency)
    # Even the honest log is refused from now on: the relay was caught.
    with pytest.raises(LogForked):
        view.check_head(log.head(600), log.consistency)
    assert LogView.from_bytes(view.to_bytes()).forked
    for bad in (b"", b"\x02" + view.to_bytes()[1:], view.to_bytes()[:-1], view.to_bytes() + b"x"):
        with pytest.raises(DecodeError):
            LogView.from_bytes(bad)


def test_peer_heads_catch_a_split_view() -> None:
    log, alice = _log()
    _fresh(alice, log)
    bob = LogView(log.signer.public)
    _fresh(bob, log)
    # The relay forks the log for bob only: each side's view is internally consistent.
    fork = KeyLog(log.signer, log.entries)
    fork.publish(b"acme", EVE, CERTS)
    log.publish(b"carol", ALICE, [])
    log.publish(b"dave", ALICE, [])
    alice.check_head(log.head(200), log.consistency)
    bob.check_head(fork.head(200), fork.consistency)
    # Same tree size is not needed: alice's size-4 head against bob's size-3 head.
    bob.check_peer(bob.gossip(), fork.consistency, lambda: None)  # his own head is fine
    with pytest.raises(LogForked):
        bob.check_peer(alice.gossip(), fork.consistency, lambda: None)
    with pytest.raises(LogForked):
        alice.check_peer(_gossip_of(fork, 3), log.consistency, lambda: None)
    # An honest, older or newer peer head passes.
    carol = LogView(log.signer.public)
    carol.check_head(log.head(100), log.consistency)
    carol.check_peer(_gossip_of(log, 2), log.consistency, lambda: None)
    carol.check_peer(_gossip_of(log, 4), log.consistency, lambda: None)
    with pytest.raises(DecodeError):
        carol.check_peer(b"short", log.consistency, lambda: None)


def _gossip_of(log: KeyLog, size: int) -> bytes:
    return size.to_bytes(8, "big") + log.tree.root(size)


def test_a_larger_head_from_the_past_is_a_rollback_beyond_the_skew() -> None:
    log, view = _log()
    _fresh(view, log, 10_000)
    log.publish(b"bob", EVE, [])
    with pytest.raises(LogRolledBack):
        view.check_head(log.head(10_000 - 301), log.consistency)
    view.check_head(log.head(10_000 - 300), log.consistency)  # within the skew: accepted


def test_the_view_keeps_a_bounded_number_of_heads_and_still_catches_forks() -> None:
    """A client that saw the log grow 100 times keeps its 64 newest heads (on main, all of
    them, for ever); a fork at a size whose head it dropped is still caught."""
    from e2e.platform.transparency import MAX_VIEW_HEADS

    log, view = _log()
    sizes = []
    for i in range(100):
        log.publish(b"u%d" % i, EVE, [])
        sizes.append(_fresh(view, log, 100 + i).size)
    assert len(view.heads) == MAX_VIEW_HEADS == 64
    assert [h.size for h in view.heads] == sizes[-64:]
    assert LogView.from_bytes(view.to_bytes()).heads == view.heads
    # A relay showing another log at a size the view dropped (the 10th) is caught.
    fork = KeyLog(log.signer, log.entries[: sizes[9] - 1])
    fork.publish(b"mallory", EVE, [])
    with pytest.raises(LogForked):
        view.check_head(fork.head(400), fork.consistency, allow_older=True)
