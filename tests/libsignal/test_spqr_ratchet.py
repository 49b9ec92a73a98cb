"""SPQR's state machine, chain and negotiation (e2e.libsignal.spqr.braid, .chain, .ratchet).

Two e2e parties must agree on every message key under any delivery schedule, make exactly
the moves libsignal made under the schedule recorded in vectors/libsignal_spqr.json, keep
what libsignal keeps, refuse what SPQR's own checks refuse, and never change a state that a
refused message touched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import (
    E2EError,
    PeerLacksSpqr,
    PqRatchetError,
    StateError,
    TooManySkipped,
)
from e2e.libsignal.spqr import V0, V1, Spqr, braid, ratchet
from e2e.libsignal.spqr.chain import A2B, Chain
from e2e.libsignal.spqr.message import Message, MsgType, encode, parse

ROOT = Path(__file__).resolve().parents[2]


def _recorder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "record_libsignal_spqr", ROOT / "vectors" / "record_libsignal_spqr.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pair(min_version: int = V1) -> dict[str, Spqr]:
    key = os.urandom(32)
    return {"alice": Spqr.start(key, True, min_version), "bob": Spqr.start(key, False, min_version)}


def _roundtrip(s: Spqr) -> Spqr:
    return ratchet.from_obj(cbor2.loads(cbor2.dumps(ratchet.to_obj(s), canonical=True)))


def _run(schedule: list[tuple[str, int, list[int]]], min_version: int = V1,
         reload: bool = False) -> tuple[dict[str, Spqr], list[Message]]:  # fmt: skip
    """Play ``schedule`` (sender, count, delivered indexes in order); every key must agree."""
    parties = _pair(min_version)
    sent: list[Message] = []
    for sender, count, order in schedule:
        other = "bob" if sender == "alice" else "alice"
        batch = []
        for _ in range(count):
            parties[sender], field, key = parties[sender].send(os.urandom)
            msg = parse(field)
            assert isinstance(msg, Message)
            sent.append(msg)
            batch.append((field, key))
        for i in order:
            field, key = batch[i]
            got = parties[other].prepare(field)
            assert got.key == key
            new = got.commit()
            assert new is not None
            parties[other] = _roundtrip(new) if reload else new
    return parties, sent


def test_the_state_machine_moves_as_libsignal_did_under_the_same_schedule() -> None:
    """vectors/libsignal_spqr.json holds every pq_ratchet field two libsignal parties wrote
    under the recorder's script; two e2e parties under that script must write the same
    (epoch, index, type, chunk index) sequence: the same transitions, counters and streams."""
    script = _recorder().SCRIPT
    doc = json.loads((ROOT / "vectors" / "libsignal_spqr.json").read_text())
    _, ours = _run(script)
    mine = [(m.epoch, m.index, int(m.type), None if m.chunk is None else m.chunk[0]) for m in ours]
    for case in doc["cases"]:
        if case["kind"] != "messages":
            continue
        theirs = [
            (m["epoch"], m["index"], m["type"], m.get("chunk_index")) for m in case["messages"]
        ]
        assert mine == theirs, case["name"]
    assert max(m.epoch for m in ours) >= 3


@settings(max_examples=15)
@given(st.integers(0, 2**32), st.booleans())
def test_keys_agree_under_drops_reordering_and_reloads(seed: int, reload: bool) -> None:
    rnd = random.Random(seed)
    schedule = []
    for _ in range(60):
        count = rnd.randint(1, 8)
        keep = [i for i in range(count) if i == 0 or rnd.random() > 0.25]
        rnd.shuffle(keep)
        schedule.append((rnd.choice(["alice", "bob"]), count, keep))
    parties, _ = _run(schedule, reload=reload)
    assert parties["alice"].machine.epoch >= 1


def test_strict_ping_pong_completes_an_epoch_about_every_44_round_trips() -> None:
    parties, sent = _run([("alice", 1, [0]), ("bob", 1, [0])] * 300)
    assert 6 <= parties["alice"].machine.epoch <= 8
    first_epoch_2 = next(i for i, m in enumerate(sent) if m.epoch == 2)
    assert 85 <= first_epoch_2 <= 95  # libsignal: epoch 1 completes at message 89


def test_minimum_version_1_keys_the_first_message() -> None:
    p = _pair(V1)
    alice, field, key = p["alice"].send(os.urandom)
    assert field[:5] == b"\x01\x01\x01\x01\x00" and key is not None  # epoch 1, index 1, Hdr 0


def test_minimum_version_0_sends_index_0_until_the_first_receive() -> None:
    p = _pair(V0)
    alice, f1, k1 = p["alice"].send(os.urandom)
    alice, f2, k2 = alice.send(os.urandom)
    assert k1 is None and k2 is None and parse(f1).index == parse(f2).index == 0  # type: ignore[union-attr]
    bob = p["bob"].prepare(f1).commit()
    assert bob is not None and bob.negotiation is None and bob.chain is not None
    bob, back, key = bob.send(os.urandom)
    got = alice.prepare(back)
    assert got.key == key is not None
    alice2 = got.commit()
    assert alice2 is not None
    alice2, again, key2 = alice2.send(os.urandom)
    assert key2 is not None and parse(again).index == 1  # type: ignore[union-attr]


def test_negotiation_of_a_peer_without_spqr() -> None:
    required, optional = _pair(V1)["bob"], _pair(V0)["bob"]
    refused = required.prepare(b"")
    assert refused.key is None and isinstance(refused.refusal, PeerLacksSpqr)
    with pytest.raises(PeerLacksSpqr):
        refused.commit()
    lowered = optional.prepare(b"")
    assert lowered.key is None and lowered.commit() is None  # SPQR off for good
    # Once the negotiation closed, a peer that stops sending SPQR is refused too.
    p = _pair(V0)
    alice, field, _ = p["alice"].send(os.urandom)
    bob = p["bob"].prepare(field).commit()
    assert bob is not None
    with pytest.raises(PeerLacksSpqr):
        bob.prepare(b"").commit()


def test_a_later_version_is_keyed_while_negotiating_and_refused_after() -> None:
    """libsignal 0.103's behaviour (observed: it accepts a first message whose version byte
    is 2 but which is keyed as version 1, without running its state machine on the chunk,
    and refuses one once the negotiation is closed)."""
    p = _pair()
    alice, field, key = p["alice"].send(os.urandom)
    later = b"\x02" + field[1:]
    got = p["bob"].prepare(later)
    assert got.key == key is not None
    bob = got.commit()
    assert bob is not None and bob.negotiation is not None  # still open
    assert type(bob.machine) is type(p["bob"].machine)  # the chunk was not used
    alice, field, key = alice.send(os.urandom)
    bob = bob.prepare(field).commit()  # a version-1 message closes it
    assert bob is not None and bob.negotiation is None
    alice, field, key = alice.send(os.urandom)
    with pytest.raises(PqRatchetError):
        bob.prepare(b"\x02" + field[1:])


def test_prepare_changes_nothing_and_a_refused_commit_changes_nothing() -> None:
    p = _pair()
    alice, field, _ = p["alice"].send(os.urandom)
    before = ratchet.to_obj(p["bob"])
    got = p["bob"].prepare(field)
    assert ratchet.to_obj(p["bob"]) == before and got.key is not None
    # A header whose MAC fails is refused when it completes; bob's state is untouched.
    bob = p["bob"].prepare(field).commit()
    assert bob is not None
    for _ in range(2):
        alice, field, _ = alice.send(os.urandom)
        msg = parse(field)
        assert isinstance(msg, Message) and msg.chunk is not None
        tampered = encode(Message(msg.epoch, msg.index, msg.type, (msg.chunk[0], bytes(32))))
        got = bob.prepare(tampered)
        if msg.chunk[0] == 2:
            saved = ratchet.to_obj(bob)
            with pytest.raises(PqRatchetError):
                got.commit()
            assert ratchet.to_obj(bob) == saved
        else:
            bob = got.commit()  # type: ignore[assignment]


def _to_header_received() -> tuple[Spqr, Spqr]:
    p = _pair()
    alice, bob = p["alice"], p["bob"]
    for _ in range(3):
        alice, field, _ = alice.send(os.urandom)
        bob = bob.prepare(field).commit()  # type: ignore[assignment]
    assert isinstance(bob.machine, braid.HeaderReceived)
    return alice, bob


def test_a_key_vector_that_does_not_match_the_header_is_refused() -> None:
    alice, bob = _to_header_received()
    bob, field, _ = bob.send(os.urandom)
    alice = alice.prepare(field).commit()  # type: ignore[assignment]
    assert isinstance(alice.machine, braid.HeaderSent)
    for i in range(36):
        alice, field, _ = alice.send(os.urandom)
        msg = parse(field)
        assert isinstance(msg, Message) and msg.type == MsgType.EK and msg.chunk is not None
        if i == 35:
            field = encode(Message(msg.epoch, msg.index, msg.type, (msg.chunk[0], os.urandom(32))))
            with pytest.raises(PqRatchetError):
                bob.prepare(field).commit()
            return
        bob = bob.prepare(field).commit()  # type: ignore[assignment]


def test_a_tampered_ciphertext_fails_spqr_s_ciphertext_mac() -> None:
    parties = _pair()
    tampered_once = False
    for _ in range(200):
        for sender, other in (("alice", "bob"), ("bob", "alice")):
            parties[sender], field, _ = parties[sender].send(os.urandom)
            msg = parse(field)
            assert isinstance(msg, Message)
            if msg.type == MsgType.CT2 and msg.chunk is not None and msg.chunk[0] == 4:
                bad = encode(Message(msg.epoch, msg.index, msg.type, (4, os.urandom(32))))
                with pytest.raises(PqRatchetError):
                    parties[other].prepare(bad).commit()
                tampered_once = True
            parties[other] = parties[other].prepare(field).commit()  # type: ignore[assignment]
        if tampered_once:
            return
    raise AssertionError("no ct2 chunk 4 was sent")


def test_chain_limits_jump_duplicate_and_epoch_range() -> None:
    p = _pair()
    alice = p["alice"]
    fields = []
    for _ in range(ratchet.MAX_JUMP + 2):
        alice, field, _ = alice.send(os.urandom)
        fields.append(field)
    with pytest.raises(TooManySkipped):
        p["bob"].prepare(fields[-1])
    bob = p["bob"].prepare(fields[1]).commit()
    assert bob is not None
    bob = bob.prepare(fields[0]).commit()  # a skipped key, used once
    assert bob is not None
    with pytest.raises(PqRatchetError):  # a used SPQR key (the Double Ratchet's replay
        bob.prepare(fields[0])  # check comes first in a session)
    with pytest.raises(PqRatchetError):  # chain epoch 4 does not exist yet
        bob.prepare(encode(Message(5, 1, MsgType.NONE)))


def test_the_chain_keeps_what_libsignal_keeps() -> None:
    """Sending in epoch E forgets the epochs before E - 1 and the sending keys before E."""
    chain = Chain.start(os.urandom(32), A2B)
    for e in (1, 2, 3):
        chain = chain.add_epoch(e, os.urandom(32))
    chain, index, _ = chain.send_key(2)
    assert index == 1 and chain.oldest == 1 and chain.current == 3
    assert chain.epochs[0].send.key is None and chain.epochs[0].recv.key is not None
    assert chain.epochs[1].send.key is not None
    with pytest.raises(PqRatchetError):
        chain.recv_key(0, 1, 10)
    with pytest.raises(PqRatchetError):
        chain.send_key(1)
    with pytest.raises(PqRatchetError):
        chain.add_epoch(5, os.urandom(32))


@pytest.mark.parametrize(
    "obj",
    [None, [], [None, None, []], [None, None, [0, 1, b"x", b"y"]], [[b"k" * 32, 7, 1], None, []]],
)
def test_malformed_stored_state_is_a_state_error(obj: object) -> None:
    with pytest.raises(StateError):
        ratchet.from_obj(obj)


@given(st.binary(max_size=200))
def test_arbitrary_fields_give_a_typed_error_or_a_key(data: bytes) -> None:
    bob = _pair()["bob"]
    try:
        got = bob.prepare(data)
    except E2EError:
        return
    assert got.key is None or len(got.key) == 32


@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**32 - 1))
def test_the_chain_step_is_the_hkdf_the_chain_is_defined_by(key: bytes, counter: int) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from e2e.libsignal.spqr.chain import NEXT_INFO, step

    info = counter.to_bytes(4, "big") + NEXT_INFO
    out = HKDF(hashes.SHA256(), 64, bytes(32), info).derive(key)
    assert step(key, counter) == (out[:32], out[32:])
