"""Fuzz target: decrypting a frame with established sessions, and responding to it.

The parties are fixed (``fuzz/decrypt_fixture.cbor``, written by ``fuzz/make_corpus.py``):
for each suite, Bob's and Alice's serialized states in the middle of a conversation (Bob
holds two skipped message keys), and Bob's deterministic prekeys. Every input is tried as

* ``bob.decrypt`` and ``alice.decrypt`` on fresh copies of the stored states, and
* ``Session.respond`` with Bob's prekeys (through a recorder of ``mark_used``).

Invariants: only E2EError escapes; a rejected frame leaves the state byte-identical and
marks no prekey used; an accepted frame, replayed, raises DuplicateMessage and leaves the
state byte-identical; ``respond`` marks its prekeys used exactly once, on success only.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

import cbor2

from e2e import PQ, DuplicateMessage, E2EError, KeyPair, LocalPrekeys, Session
from fuzz._harness import FIXTURE, SUITE_OF, bob_prekeys, identity, main


class RecordingPrekeys:
    """Bob's prekeys, read-only: lookups pass through, ``mark_used`` is only recorded."""

    def __init__(self, inner: LocalPrekeys) -> None:
        self.inner = inner
        self.marked: list[tuple[int | None, int | None, bytes]] = []

    def signed_prekey(self, spk_id: int) -> KeyPair:
        return self.inner.signed_prekey(spk_id)

    def one_time_prekey(self, opk_id: int) -> KeyPair:
        return self.inner.one_time_prekey(opk_id)

    def kem_prekey(self, kem_id: int, base_key: bytes):  # type: ignore[no-untyped-def]
        return self.inner.kem_prekey(kem_id, base_key)

    def mark_used(self, opk_id: int | None, kem_id: int | None, base_key: bytes) -> None:
        self.marked.append((opk_id, kem_id, base_key))


def load_fixture() -> dict[str, dict[str, bytes]]:
    data: dict[str, dict[str, bytes]] = cbor2.loads(FIXTURE.read_bytes())
    return data


_FIXTURE = load_fixture()
_BOB = identity("bob")
_PREKEYS = {name: bob_prekeys(SUITE_OF[name]) for name in _FIXTURE}


def check_decrypt(state: bytes, data: bytes) -> None:
    session = Session.from_bytes(state)
    try:
        session.decrypt(data)
    except E2EError:
        assert session.to_bytes() == state, "a rejected frame changed the session state"
        return
    after = session.to_bytes()
    try:
        session.decrypt(data)
    except DuplicateMessage:
        pass
    else:
        raise AssertionError("a replayed frame decrypted twice")
    assert session.to_bytes() == after, "a rejected replay changed the session state"


def check_respond(prekeys: LocalPrekeys, data: bytes) -> None:
    rec = RecordingPrekeys(prekeys)
    try:
        session, _ = Session.respond(_BOB, rec, data, allowed_suites=(PQ,))
    except E2EError:
        assert rec.marked == [], "a rejected initial message marked prekeys used"
        return
    assert len(rec.marked) == 1, "an accepted initial message must mark its prekeys once"
    try:
        session.decrypt(data)
    except DuplicateMessage:
        pass
    else:
        raise AssertionError("an initial message decrypted twice")


def test_one_input(data: bytes) -> None:
    for name, states in _FIXTURE.items():
        check_decrypt(states["bob"], data)
        check_decrypt(states["alice"], data)
        check_respond(_PREKEYS[name], data)


if __name__ == "__main__":
    main(test_one_input, "decrypt")
