"""e2e.libsignal with SPQR against without, interleaved (benches/README.md).

* ``libsignal-spqr-<workload>-256B``: a 256-byte message through an established
  e2e.libsignal session that speaks SPQR (side A) and through the same kind of session with
  SPQR off (side B: negotiated to version 0, as with a peer without SPQR). ``oneway`` is
  encrypt then decrypt, one direction only (SPQR cannot advance: the sender keeps sending
  header chunks); ``ping_pong`` alternates direction every message, so SPQR runs its epochs
  (about one per 90 messages) and their cost is spread over the messages.
* ``libsignal-spqr-epoch``: one whole SPQR epoch (both parties' SPQR sends and receives,
  through key generation, both encapsulation steps, decapsulation and every chunk, from a
  new session to the second epoch) against one ``oneway`` message without SPQR: the ratio
  is what an epoch costs, counted in messages.
* ``libsignal-spqr-hostile_forged-256B``: the costliest message e2e.libsignal refuses with
  SPQR on (a new ratchet key, MAX_JUMP ahead in its chain and SPQR_MAX_JUMP ahead in its
  SPQR chain, tried against the current and the archived state) against an in-order
  decryption with SPQR; issue 11's bound of 10 (SPEC.md §12).
* state sizes (``state_bytes``): the serialized record, idle, with and without SPQR, and
  the largest it gets during an epoch.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from benches.conftest import BOUNDS, run_pair
from benches.interleave import side
from e2e.errors import E2EError
from e2e.keys import KeyPair
from e2e.libsignal import MAX_JUMP, LibsignalPrekeys, SessionRecord, initiate
from e2e.libsignal.session import MAX_PREVIOUS_STATES, SPQR_MAX_JUMP
from e2e.libsignal.spqr import Spqr
from e2e.libsignal.spqr.chain import step
from e2e.libsignal.spqr.message import Message, MsgType, encode
from e2e.libsignal.wire import encode_signal_message

SIZE = 256


def _no_setup() -> tuple[()]:
    return ()


def established(spqr: bool = True) -> tuple[SessionRecord, SessionRecord, KeyPair, KeyPair]:
    """Alice and Bob after one message each way; with ``spqr`` False both states have SPQR
    off, as after a negotiation to version 0."""
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    keys = LibsignalPrekeys.generate(bob_id, 2, one_time=1)
    alice, bob = SessionRecord(initiate(alice_id, 1, keys.bundle())), SessionRecord()
    bob.decrypt(*alice.encrypt(b"hi"), prekeys=keys, local_identity=bob_id)
    alice.decrypt(*bob.encrypt(b"hello"))
    if not spqr:
        for rec in (alice, bob):
            assert rec.current is not None
            rec.current.spqr = None
    return alice, bob, alice_id, bob_id


def message(workload: str, spqr: bool) -> tuple[Any, Any]:
    alice, bob, _, _ = established(spqr)
    pt = os.urandom(SIZE)
    if workload == "oneway":
        return _no_setup, lambda: bob.decrypt(*alice.encrypt(pt))
    turn = [alice, bob]

    def ping() -> None:
        sender, receiver = turn
        receiver.decrypt(*sender.encrypt(pt))
        turn.reverse()

    return _no_setup, ping


def epoch() -> tuple[Any, Any]:
    """One SPQR epoch between two new SPQR states, messages alternating."""

    def setup() -> tuple[Spqr, Spqr]:
        key = os.urandom(32)
        return Spqr.start(key, True), Spqr.start(key, False)

    def run(alice: Spqr, bob: Spqr) -> None:
        parties = [alice, bob]
        while parties[0].machine.epoch < 2 or parties[1].machine.epoch < 2:
            sender, receiver = parties
            sender, field, _ = sender.send(os.urandom)
            received = receiver.prepare(field).commit()
            assert received is not None
            parties = [received, sender]

    return setup, run


def forged() -> tuple[Any, Any]:
    """A forged message: new ratchet key, MAX_JUMP ahead, SPQR_MAX_JUMP ahead in its SPQR
    chain, against a record with MAX_PREVIOUS_STATES archived states (all speak SPQR)."""
    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    bob = SessionRecord()
    for _ in range(MAX_PREVIOUS_STATES + 1):
        keys = LibsignalPrekeys.generate(bob_id, 2, one_time=1)
        alice = SessionRecord(initiate(alice_id, 1, keys.bundle()))
        bob.decrypt(*alice.encrypt(b"hi"), prekeys=keys, local_identity=bob_id)
    assert len(bob.previous) == MAX_PREVIOUS_STATES
    ct = os.urandom(SIZE + 16)
    pq = encode(Message(1, 1 + SPQR_MAX_JUMP, MsgType.NONE))

    def setup() -> tuple[int, bytes]:
        body = encode_signal_message(4, os.urandom(32), KeyPair.generate().public, MAX_JUMP, 0,
                                     ct, alice_id.public, bob_id.public, pq)  # fmt: skip
        return 2, body

    def target(kind: int, body: bytes) -> None:
        try:
            bob.decrypt(kind, body)
        except E2EError:
            return
        raise AssertionError("a forged message was accepted")

    return setup, target


def in_order_decrypt() -> tuple[Any, Any]:
    alice, bob, _, _ = established(True)
    pt = os.urandom(SIZE)
    return lambda: alice.encrypt(pt), bob.decrypt


@pytest.mark.parametrize("workload", ["oneway", "ping_pong"])
def test_spqr_message(benchmark: Any, workload: str) -> None:
    name = f"libsignal-spqr-{workload}-256B"
    run_pair(
        benchmark, name, side(*message(workload, True)), side(*message(workload, False)),
        BOUNDS["ratios"].get(name), case=name, sides=["with SPQR", "without SPQR"],
    )  # fmt: skip


def test_spqr_epoch(benchmark: Any) -> None:
    name = "libsignal-spqr-epoch"
    run_pair(
        benchmark, name, side(*epoch()), side(*message("oneway", False)),
        BOUNDS["ratios"].get(name), case=name,
        sides=["one SPQR epoch", "one message without SPQR"],
    )  # fmt: skip


def test_spqr_hostile(benchmark: Any) -> None:
    name = "libsignal-spqr-hostile_forged-256B"
    run_pair(
        benchmark, name, side(*forged()), side(*in_order_decrypt()),
        BOUNDS["ratios"].get(name), case=name, sides=["e2e rejecting", "e2e normal decrypt"],
    )  # fmt: skip


def test_spqr_state_size(benchmark: Any) -> None:
    """Serialized record sizes, with and without SPQR; the largest during one epoch."""
    alice, bob, _, _ = established(True)
    plain, _, _, _ = established(False)
    idle = len(alice.to_bytes()), len(bob.to_bytes())
    largest = 0
    turn = [alice, bob]
    while min(r.current.spqr.machine.epoch for r in turn) < 2:  # type: ignore[union-attr]
        sender, receiver = turn
        receiver.decrypt(*sender.encrypt(b"x"))
        largest = max(largest, len(sender.to_bytes()), len(receiver.to_bytes()))
        turn.reverse()
    benchmark.group = "libsignal-spqr-state"
    benchmark.extra_info["state_bytes"] = {
        "libsignal-idle-without-spqr": len(plain.to_bytes()),
        "libsignal-spqr-idle-initiator": idle[0],
        "libsignal-spqr-idle-responder": idle[1],
        "libsignal-spqr-largest-in-epoch": largest,
    }
    assert step(bytes(32), 1)  # the chain step used by the forged-message bound
    benchmark(alice.to_bytes)
