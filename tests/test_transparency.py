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
from e2e.platform.directory import DeviceCertificate, SignedDeviceList
from e2e.platform.leaves import Leaf, Opening, label_input
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
from e2e.platform.transparency import DirectoryEntry, ForkEvidence, KeyLog, LogView
from e2e.platform.vrf import VrfKey


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

ALICE_K, ACME_K, EVE_K = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
ALICE, ACME, EVE = ALICE_K.public, ACME_K.public, EVE_K.public


def _signed(key: KeyPair, name: bytes, version: int, devices: int) -> bytes:
    """``name``'s device list of version ``version`` with ``devices`` devices, signed by
    ``key``."""
    certs = [DeviceCertificate.issue(key, name, i, KeyPair.generate().public, i).to_bytes()
             for i in range(1, devices + 1)]  # fmt: skip
    return SignedDeviceList.sign(key, name, version, certs).to_bytes()


CERTS = _signed(ACME_K, b"acme", 1, 2)  # acme's first device list (two devices)
ONE = _signed(ALICE_K, b"alice", 1, 1)


VRF = VrfKey(bytes(range(32)))


def _view(log: KeyLog) -> LogView:
    """A client's view of ``log``, with the relay's VRF key learnt from the log key's word."""
    view = LogView(log.signer.public)
    view.learn_vrf_key(log.vrf.public, log.vrf_statement())
    return view


def _log() -> tuple[KeyLog, LogView]:
    log = KeyLog(LogSigner(), VRF)
    log.publish(b"alice", ALICE, ONE)
    log.publish(b"acme", ACME, CERTS)
    return log, _view(log)


def _audit(view: LogView, log: KeyLog, account: bytes, identity: bytes, start: int) -> None:
    """What a monitor does: the leaves from ``start``, and the openings of its own."""
    leaves = log.leaves_since(start, len(log.records))
    if not view.own_label:
        view.learn_own_label(account, log.lookup(account, len(log.records))[0])
    opened = {i: log.open(i, len(log.records))[1] for i in view.own_leaves(leaves)}
    view.audit(account, identity, leaves, opened)


def _fresh(view: LogView, log: KeyLog, now: int = 100) -> SignedTreeHead:
    head = log.head(now)
    view.check_head(head, log.consistency)
    return head


def test_lookup_verifies_and_versions_advance() -> None:
    log, view = _log()
    head = _fresh(view, log)
    raw, proof = log.lookup(b"acme", head.size)
    entry = view.check_entry(b"acme", raw, proof, head)
    assert (entry.identity, entry.device_list, entry.version) == (ACME, CERTS, 1)
    log.publish(b"acme", ACME, _signed(ACME_K, b"acme", 2, 1))
    head2 = _fresh(view, log, 200)
    raw2, proof2 = log.lookup(b"acme", head2.size)
    assert view.check_entry(b"acme", raw2, proof2, head2).version == 2
    # The older entry, with a valid proof against the new head, is stale now.
    old = log.records.index(raw)
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
    entry = DirectoryEntry(b"acme", 9, EVE, b"").to_bytes()
    fake = Opening(entry, bytes(32), VRF.prove(label_input(b"acme"))).to_bytes()
    with pytest.raises(InvalidProof):  # a well-labelled leaf that is not in the log
        view.check_entry(b"acme", fake, proof, head)
    other = Opening(entry, bytes(32), VrfKey(bytes(32)).prove(label_input(b"acme")))
    with pytest.raises(InvalidProof):  # a label another VRF key made
        view.check_entry(b"acme", other.to_bytes(), proof, head)
    assert view.versions == {}


def test_rollback_and_fork_are_detected_and_change_nothing() -> None:
    log, view = _log()
    old = _fresh(view, log, 100)
    log.publish(b"bob", EVE, b"")
    new = _fresh(view, log, 200)
    heads = list(view.heads)
    with pytest.raises(LogRolledBack):
        view.check_head(log.signer.sign(TreeHead(old.size, old.root, 300)), log.consistency)
    # A fork: the relay shows another log of the same size.
    fork = KeyLog(log.signer, VRF)
    fork.publish(b"alice", ALICE, ONE)
    fork.publish(b"acme", EVE, CERTS)
    fork.publish(b"bob", EVE, b"")
    with pytest.raises(LogForked):
        view.check_head(fork.head(300), fork.consistency)
    # ... or a larger one that does not extend what we saw.
    fork.publish(b"carol", EVE, b"")
    fresh = _view(log)
    fresh.check_head(new, log.consistency)
    with pytest.raises(LogForked):
        fresh.check_head(fork.head(300), fork.consistency)
    assert view.heads == heads
    # A head signed by another key is not the log's.
    assert view.forked
    with pytest.raises(InvalidProof):
        LogView(log.signer.public).check_head(
            KeyLog(LogSigner(), VRF, log.records).head(300), log.consistency
        )
    # A peer's older head (gossip) is accepted once proven consistent.
    view2 = _view(log)
    view2.check_head(new, log.consistency)
    view2.check_head(old, log.consistency, allow_older=True)
    assert [h.size for h in view2.heads] == [old.size, new.size]


def test_audit_finds_a_substituted_key_and_a_rogue_device() -> None:
    log, view = _log()
    _fresh(view, log)
    _audit(view, log, b"acme", ACME, 0)
    assert (view.audited, view.own_list) == (2, 1)
    log.publish(b"acme", ACME, _signed(ACME_K, b"acme", 2, 1))  # acme removes a device
    _fresh(view, log, 150)
    _audit(view, log, b"acme", ACME, 2)
    assert (view.audited, view.own_list) == (3, 2)
    # The relay logs the older list again (the removed device back): found.
    log.publish(b"acme", ACME, CERTS)
    _fresh(view, log, 200)
    with pytest.raises(KeyMismatch):
        _audit(view, log, b"acme", ACME, 3)
    assert (view.audited, view.own_list) == (3, 2)
    # A list acme's key never signed, under acme's key: found.
    log.publish(b"acme", ACME, _signed(EVE_K, b"acme", 9, 1))
    _fresh(view, log, 250)
    with pytest.raises(KeyMismatch):
        _audit(view, log, b"acme", ACME, 3)
    # Another account key: found.
    log.publish(b"acme", EVE, _signed(EVE_K, b"acme", 10, 1))
    _fresh(view, log, 300)
    with pytest.raises(KeyMismatch):
        _audit(view, log, b"acme", ACME, 3)
    # A monitor that is shown only part of the log notices the gap.
    with pytest.raises(InvalidProof):
        _audit(view, log, b"acme", ACME, 4)


def test_log_restores_from_its_leaves() -> None:
    log, _ = _log()
    again = KeyLog(log.signer, VRF, log.records)
    assert again.tree.root() == log.tree.root()
    assert again.lookup(b"acme", 2) == log.lookup(b"acme", 2)


def test_a_lookup_at_an_older_size_answers_the_entry_of_then() -> None:
    """The latest entry of an account within the first ``size`` leaves, for every size: the
    bisection of its own leaf indices picks what a walk of the log would."""
    log, _ = _log()  # alice at 0, acme at 1
    log.publish(b"bob", EVE, b"")  # 2
    log.publish(b"acme", ACME, _signed(ACME_K, b"acme", 2, 1))  # 3
    log.publish(b"bob", EVE, b"")  # 4
    log.publish(b"acme", ACME, _signed(ACME_K, b"acme", 3, 1))  # 5
    for size in range(1, 7):
        for name in (b"alice", b"acme", b"bob", b"nobody"):
            walked = [i for i in range(size) if log.accounts[i] == name]
            if not walked:
                with pytest.raises(KeyMismatch):
                    log.lookup(name, size)
                continue
            raw, proof = log.lookup(name, size)
            assert (raw, proof.index, proof.size) == (log.records[walked[-1]], walked[-1], size)


def test_served_state_must_equal_the_logged_state() -> None:
    log, view = _log()
    head = _fresh(view, log)
    raw, proof = log.lookup(b"acme", head.size)
    view.check_served(b"acme", ACME, CERTS, raw, proof, head)
    with pytest.raises(KeyMismatch):
        view.check_served(b"acme", EVE, CERTS, raw, proof, head)
    with pytest.raises(KeyMismatch):
        view.check_served(b"acme", ACME, _signed(ACME_K, b"acme", 1, 3), raw, proof, head)


def test_a_fork_is_sticky_and_the_view_persists() -> None:
    log, view = _log()
    _fresh(view, log)
    again = LogView.from_bytes(view.to_bytes())
    assert again == view
    fork = KeyLog(log.signer, VRF)
    fork.publish(b"alice", EVE, b"")
    fork.publish(b"acme", EVE, b"")
    with pytest.raises(LogForked):
        view.check_head(fork.head(500), fork.consistency)
    # Even the honest log is refused from now on: the relay was caught.
    with pytest.raises(LogForked):
        view.check_head(log.head(600), log.consistency)
    assert LogView.from_bytes(view.to_bytes()).forked
    for bad in (b"", b"\x05" + view.to_bytes()[1:], view.to_bytes()[:-1], view.to_bytes() + b"x"):
        with pytest.raises(DecodeError):
            LogView.from_bytes(bad)


def test_peer_heads_catch_a_split_view() -> None:
    log, alice = _log()
    _fresh(alice, log)
    bob = _view(log)
    _fresh(bob, log)
    # The relay forks the log for bob only: each side's view is internally consistent.
    fork = KeyLog(log.signer, VRF, log.records)
    fork.publish(b"acme", EVE, CERTS)
    log.publish(b"carol", ALICE, b"")
    log.publish(b"dave", ALICE, b"")
    alice.check_head(log.head(200), log.consistency)
    bob.check_head(fork.head(200), fork.consistency)
    # Same tree size is not needed: alice's size-4 head against bob's size-3 head.
    bob.check_peer(bob.peer_head(bob.gossip()), fork.consistency)  # his own head is fine
    with pytest.raises(LogForked):
        bob.check_peer(bob.peer_head(alice.gossip()), fork.consistency)
    # The evidence is the two signed heads, and it checks under the log key alone.
    assert bob.evidence is not None
    bob.evidence.verify(log.signer.public)
    again = LogView.from_bytes(bob.to_bytes())
    assert again.evidence == bob.evidence and again.forked
    with pytest.raises(LogForked):
        alice.check_peer(alice.peer_head(fork.head(300).to_bytes()), log.consistency)
    # An honest, older or newer peer head passes; an empty log's head is anyone's prefix.
    carol = _view(log)
    carol.check_head(log.head(100), log.consistency)
    for size in (2, 4, 0):
        head = log.signer.sign(TreeHead(size, log.tree.root(size), 100))
        carol.check_peer(carol.peer_head(head.to_bytes()), log.consistency)
    assert not carol.forked


def test_no_unsigned_head_proves_a_fork() -> None:
    """What a peer can send without the log key -- a made-up root, a size of 0, a head
    signed by another key, bytes that are no head -- is refused as proof of nothing and
    leaves the view as it was (issue 25 item 2)."""
    log, view = _log()
    _fresh(view, log)
    before = view.to_bytes()
    root = log.tree.root()
    made_up = [
        len(log.records).to_bytes(8, "big") + bytes(32),  # the old unsigned form
        bytes(40),
        LogSigner().sign(TreeHead(len(log.records), bytes(32), 100)).to_bytes(),
        LogSigner().sign(TreeHead(0, root, 100)).to_bytes(),
        b"",
    ]
    for raw in made_up:
        with pytest.raises((DecodeError, InvalidProof)):
            view.peer_head(raw)
    assert view.to_bytes() == before and not view.forked
    # Heads of equal roots are no evidence of anything.
    head = log.head(100)
    with pytest.raises(InvalidProof):
        ForkEvidence(head, log.head(200)).verify(log.signer.public)


def test_an_old_fork_flag_is_dropped() -> None:
    """A view stored before heads were signed in messages may be marked forked by what any
    peer sent: read now, the mark is gone (the way out for a device wrongly marked)."""
    log, view = _log()
    _fresh(view, log)
    view.vrf_key = b""  # form 2 had no VRF key (nor label): lay the record out as it was
    new = view.to_bytes()
    assert new[33:35] == bytes(2) and new[51:53] == bytes(2)  # no evidence, key, label
    old = b"\x02" + new[1:33] + b"\x01" + new[35:51] + new[53:]  # form 2, fork flag set
    again = LogView.from_bytes(old)
    assert not again.forked and again.heads == view.heads


def test_a_larger_head_from_the_past_is_a_rollback_beyond_the_skew() -> None:
    log, view = _log()
    _fresh(view, log, 10_000)
    log.publish(b"bob", EVE, b"")
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
        log.publish(b"u%d" % i, EVE, b"")
        sizes.append(_fresh(view, log, 100 + i).size)
    assert len(view.heads) == MAX_VIEW_HEADS == 64
    assert [h.size for h in view.heads] == sizes[-64:]
    assert LogView.from_bytes(view.to_bytes()).heads == view.heads
    # A relay showing another log at a size the view dropped (the 10th) is caught.
    fork = KeyLog(log.signer, VRF, log.records[: sizes[9] - 1])
    fork.publish(b"mallory", EVE, b"")
    with pytest.raises(LogForked):
        view.check_head(fork.head(400), fork.consistency, allow_older=True)


def test_leaves_name_no_account_and_every_own_leaf_must_open() -> None:
    """What the log shows is labels and commitments (SPEC §13.5); an entry under the
    monitor's label must be opened, and open to what the leaf commits to."""
    log, view = _log()
    _fresh(view, log)
    for raw, _ in log.leaves_since(0, len(log.records)):
        assert b"acme" not in raw and b"alice" not in raw and ACME not in raw
        assert Leaf.from_bytes(raw).to_bytes() == raw
    view.learn_own_label(b"acme", log.lookup(b"acme", 2)[0])
    leaves = log.leaves_since(0, 2)
    assert view.own_leaves(leaves) == [1]
    with pytest.raises(KeyMismatch):  # the relay keeps an entry under acme's label closed
        view.audit(b"acme", ACME, leaves, {})
    with pytest.raises(KeyMismatch):  # ... or opens it to another entry
        view.audit(b"acme", ACME, leaves, {1: log.records[0]})
    assert view.audited == 0
    view.audit(b"acme", ACME, leaves, {1: log.records[1]})
    assert view.audited == 2
