"""Skipped message keys stored as their own records (issue: with 2,000 skipped keys held,
every message rewrote about 136 KB of session state). The state written per message stays a
few KiB however many keys are held, and the semantics -- bounded count, eviction order
(oldest first), a failed decrypt changes nothing -- are exactly those of an in-memory
session, checked message by message against one."""

from __future__ import annotations

from typing import Any

import pytest
from test_store_conformance import ALICE, BOB, pair_up, rows

from e2e import PQ, Session
from e2e.constants import MAX_SKIP, MAX_STORED_SKIPPED
from e2e.errors import E2EError
from e2e.store import Address, encrypt_and_store


def receive(store: Any, frame: bytes) -> tuple[bytes | str, int]:
    """(plaintext or error class name, sealed bytes the commit wrote)."""
    try:
        with store.transaction() as tx:
            out: bytes | str = tx.decrypt(ALICE, frame)
            seen = tx
    except E2EError as exc:
        return type(exc).__name__, 0
    return out, seen.bytes_written


def reference_result(ref: Session, frame: bytes) -> bytes | str:
    try:
        return ref.decrypt(frame)
    except E2EError as exc:
        return type(exc).__name__


def bob_session(store: Any) -> Session:
    with store.transaction() as tx:
        s = tx.load_session(ALICE)
    assert s is not None
    return s


@pytest.mark.parametrize("backend", ["memory", "sqlite"], indirect=True)
def test_skipped_keys_as_records_match_an_in_memory_session(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    ref = bob_session(b)  # the same state, run in memory beside the store
    baseline = encrypt_and_store(a, BOB, b"no keys held")
    got, written_0 = receive(b, baseline)
    assert got == reference_result(ref, baseline) == b"no keys held"
    # the peer skips MAX_SKIP counters twice: MAX_STORED_SKIPPED keys are held
    frames = [encrypt_and_store(a, BOB, b"m%d" % i) for i in range(2 * (MAX_SKIP + 1) + 60)]
    held: list[bytes] = []
    for i in (MAX_SKIP, 2 * MAX_SKIP + 1):
        got, _ = receive(b, frames[i])
        assert got == reference_result(ref, frames[i]) == b"m%d" % i
        held = [f for j, f in enumerate(frames[: i]) if j not in (MAX_SKIP,)]
    held_now = len(bob_session(b).ratchet.skipped)
    assert held_now == len(ref.ratchet.skipped)  # (the oldest may have aged out already)
    assert held_now > MAX_STORED_SKIPPED - 10
    # an in-order message with 2,000 keys held writes about as much as with none
    nxt = frames[2 * MAX_SKIP + 2]
    got, written_2000 = receive(b, nxt)
    assert got == reference_result(ref, nxt)
    # (at most the session row and a skip record or two: keys used, aged out or added)
    assert written_2000 < written_0 + 2 * 6 * 1024, (written_0, written_2000)
    # out-of-order delivery of held keys, a replay, a forgery, and eviction of the oldest
    # by a further skip: the same answer as the in-memory session, and the same state
    forged = frames[5][:-1] + bytes([frames[5][-1] ^ 1])
    before = rows(b)
    assert receive(b, forged)[0] == reference_result(ref, forged) != b"m5"
    assert rows(b) == before  # a failed decrypt changes nothing
    order = [frames[5], frames[5], frames[MAX_SKIP + 7], frames[0], frames[-1], frames[1],
             frames[2], frames[MAX_SKIP + 1], frames[2 * MAX_SKIP], frames[-30]]  # fmt: skip
    for f in order:
        got, written = receive(b, f)
        assert got == reference_result(ref, f)
        assert written < 16 * 1024
    assert bob_session(b).to_bytes() == ref.to_bytes()  # skipped keys in the same order
    del held


def test_skip_records_are_removed_with_the_session(store: Any) -> None:
    a = store
    from e2e.store.memory import MemoryStore

    peer = MemoryStore()
    pair_up(peer, a, PQ)
    frames = [encrypt_and_store(peer, BOB, b"x%d" % i) for i in range(100)]
    with a.transaction() as tx:
        tx.decrypt(ALICE, frames[-1])
    with a.transaction() as tx:
        assert tx._ids("skip")  # type: ignore[attr-defined]
        tx.delete_session(ALICE)
    with a.transaction() as tx:
        assert tx._ids("skip") == []  # type: ignore[attr-defined]
        assert tx.load_session(ALICE) is None
    assert Address("x", 1)
