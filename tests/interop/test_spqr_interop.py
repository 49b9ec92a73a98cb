"""SPQR against the official client: libsignal 0.90.0 (which offers it), 0.92.2 and 0.103.0
(which require it), both directions.

Long conversations (ping-pong and long one-sided bursts; random batches with drops are in
test_libsignal_interop.py) check the receiver's Double Ratchet and SPQR chain state after
every message; E2E_INTEROP_MESSAGES sets their length (default 1000 each way; the README's
long mode runs more). Then: negotiation per version, a message held back across an SPQR
epoch, tampering with the SPQR field, the typed errors for a peer without SPQR, and a
restored e2e record resuming with libsignal.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from e2e.errors import AuthenticationFailed, E2EError, PeerLacksSpqr, RatchetStepRequired
from e2e.libsignal.spqr import Spqr
from e2e.libsignal.spqr.message import Message, MsgType, encode, parse
from e2e.libsignal.wire import parse_prekey_message, parse_signal_message
from interop.conversation import converse, parse_any
from interop.harness import Harness, require_node
from interop.test_libsignal_interop import MESSAGES, Peer, libsignal_bundle, new_party


def _session(h: Harness, initiator: str) -> tuple[Peer, str]:
    me, other = Peer(4), new_party(h)
    if initiator == "libsignal":
        h.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    else:
        me.start(other, libsignal_bundle(h, other, 4), 4)
    return me, other


def _pq(msg: tuple[int, bytes]) -> Message:
    out = parse(parse_any(msg[1]).pq_ratchet)
    assert isinstance(out, Message)
    return out


@contextmanager
def _sending(rewrite: Any) -> Iterator[None]:
    """Rewrite e2e's SPQR output on the way out (field, key) -> (field, key)."""
    original = Spqr.send

    def send(self: Spqr, rng: Any) -> tuple[Spqr, bytes, bytes | None]:
        state, field, key = original(self, rng)
        field, key = rewrite(field, key)
        return state, field, key

    Spqr.send = send  # type: ignore[method-assign]
    try:
        yield
    finally:
        Spqr.send = original  # type: ignore[method-assign]


@pytest.mark.parametrize("pattern", ["pingpong", "bursts"])
@pytest.mark.parametrize("initiator", ["libsignal", "e2e"])
def test_long_conversation(spqr_peer: Harness, initiator: str, pattern: str) -> None:
    me, other = _session(spqr_peer, initiator)
    if initiator == "libsignal":  # the session exists on e2e's side after a first message
        me.decrypt(other, spqr_peer.encrypt(other, "e2e", b"hello")[0])
    log = converse(spqr_peer, me, other, "e2e", pattern, MESSAGES, spqr_peer.package + pattern)
    spqr = me.records[other].current.spqr  # type: ignore[union-attr]
    assert spqr is not None
    # ping-pong completes an epoch about every 44 round trips, bursts every few bursts
    assert spqr.machine.epoch >= MESSAGES // (50 if pattern == "pingpong" else 300)
    # every delivered message was checked (all but 0.90.0's first, sent before it heard
    # from e2e, carry an SPQR key)
    assert log.pq_checks >= log.delivered - 3 and log.root_checks >= 2


def test_first_messages_and_negotiation_per_version(spqr_peer: Harness) -> None:
    """0.90.0 starts at minimum version 0 (index 0, no key, until it hears from us);
    0.92.2 and later at 1 (the first message already has a key); e2e answers with SPQR and
    both sides keep it."""
    me, other = _session(spqr_peer, "libsignal")
    first = spqr_peer.encrypt(other, "e2e", b"one", b"two")
    keyed_first = spqr_peer.package != "libsignal-090"
    assert [_pq(m).index for m in first] == ([1, 2] if keyed_first else [0, 0])
    assert [_pq(m).type for m in first] == [MsgType.HDR, MsgType.HDR]
    assert [me.decrypt(other, m) for m in first] == [b"one", b"two"]
    reply = me.encrypt(other, b"back")
    assert _pq(reply).index == 1 and spqr_peer.decrypt(other, "e2e", reply) == [b"back"]
    later = spqr_peer.encrypt(other, "e2e", b"later")[0]
    assert _pq(later).index >= 1 and me.decrypt(other, later) == b"later"


@pytest.mark.parametrize("sender", ["e2e", "libsignal"])
def test_a_message_held_back_across_an_spqr_epoch_is_still_read(
    spqr_peer: Harness, sender: str
) -> None:
    """Each turn the sender sends two messages; the first is delivered, the second only after
    the first of the sender's next turn. Whenever that next turn is in a new SPQR epoch, the
    held message (keyed from the previous epoch's chain) arrives after the new epoch began."""
    me, other = _session(spqr_peer, "e2e")
    spqr_peer.decrypt(other, "e2e", me.encrypt(other, b"start"))

    def send(who: str, n: int) -> list[tuple[int, bytes]]:
        if who == "e2e":
            return [me.encrypt(other, b"e2e") for _ in range(n)]
        return spqr_peer.encrypt(other, "e2e", *[b"ls"] * n)

    def receive(who: str, msgs: list[tuple[int, bytes]]) -> None:
        if who == "e2e":
            assert all(me.decrypt(other, m) == b"ls" for m in msgs)
        else:
            assert spqr_peer.decrypt(other, "e2e", *msgs) == [b"e2e"] * len(msgs)

    receiver = "libsignal" if sender == "e2e" else "e2e"
    held = None
    crossings = 0
    for _ in range(400):
        first, second = send(sender, 2)
        receive(receiver, [first])
        if held is not None:
            crossings += _pq(first).epoch > _pq(held).epoch
            receive(receiver, [held])
        held = second
        receive(sender, send(receiver, 1))
        if crossings >= 3:
            return
    raise AssertionError(f"only {crossings} epoch crossings")


def _field5(body: bytes) -> tuple[int, int]:
    """(start, end) of the pq_ratchet bytes inside a serialized SignalMessage."""
    msg = parse_signal_message(body)
    start = body.index(msg.pq_ratchet)
    return start, start + len(msg.pq_ratchet)


def test_tampering_with_the_spqr_field_is_refused_by_both(spqr_peer: Harness) -> None:
    me, other = _session(spqr_peer, "libsignal")
    me.decrypt(other, spqr_peer.encrypt(other, "e2e", b"hi")[0])
    assert spqr_peer.decrypt(other, "e2e", me.encrypt(other, b"ok")) == [b"ok"]
    # e2e's message, SPQR field altered on the way: libsignal refuses it, then reads it whole.
    t, body = me.encrypt(other, b"secret")
    start, end = _field5(body)
    for pos in (start, start + 2, end - 1):
        bad = bytearray(body)
        bad[pos] ^= 0x40
        assert isinstance(spqr_peer.decrypt(other, "e2e", (t, bytes(bad)))[0], str)
    assert spqr_peer.decrypt(other, "e2e", (t, body)) == [b"secret"]
    # libsignal's message, likewise: e2e refuses it with a typed error, its record unchanged.
    t, body = spqr_peer.encrypt(other, "e2e", b"from libsignal")[0]
    start, end = _field5(body)
    before = me.records[other].to_bytes()
    for pos in (start, start + 1, start + 3, end - 1):
        bad = bytearray(body)
        bad[pos] ^= 0x40
        with pytest.raises(E2EError):
            me.decrypt(other, (t, bytes(bad)))
        assert me.records[other].to_bytes() == before
    # The field cut out (a downgrade attempt): a forgery, not "a peer without SPQR".
    stripped = body[: start - 2] + body[end:]
    with pytest.raises(AuthenticationFailed):
        me.decrypt(other, (t, stripped))
    assert me.records[other].to_bytes() == before
    assert me.decrypt(other, (t, body)) == b"from libsignal"


def test_libsignal_refuses_authentic_but_corrupted_spqr_data(spqr_peer: Harness) -> None:
    """e2e's own header chunk 0, corrupted before the message MAC is computed: libsignal
    holds the chunk (a chunk cannot be checked alone) and refuses the message that completes
    the header, whose SPQR MAC then fails. (Without the corruption that message is read:
    every other test.)"""
    me, other = _session(spqr_peer, "e2e")

    def spoil(field: bytes, key: bytes | None) -> tuple[bytes, bytes | None]:
        msg = parse(field)
        assert isinstance(msg, Message) and msg.chunk is not None
        return encode(Message(msg.epoch, msg.index, msg.type, (msg.chunk[0], bytes(32)))), key

    with _sending(spoil):
        first = me.encrypt(other, b"0")
    assert spqr_peer.decrypt(other, "e2e", first) == [b"0"]  # a chunk alone is not checked
    me.decrypt(other, spqr_peer.encrypt(other, "e2e", b"reply")[0])  # SignalMessages now
    rest = [me.encrypt(other, b"%d" % i) for i in (1, 2)]
    got = spqr_peer.decrypt(other, "e2e", *rest)
    assert got[0] == b"1"
    assert isinstance(got[1], str)  # libsignal reports it as "decryption failed"


def test_a_peer_that_requires_spqr_refuses_a_message_without_it(spqr_peer: Harness) -> None:
    me, other = _session(spqr_peer, "e2e")
    with _sending(lambda field, key: (b"", None)):
        msg = me.encrypt(other, b"no spqr")
    result = spqr_peer.decrypt(other, "e2e", msg)[0]
    if spqr_peer.package == "libsignal-090":  # minimum version 0: accepted, SPQR off
        assert result == b"no spqr"
    else:
        assert isinstance(result, str)


def test_a_peer_without_spqr_is_a_typed_error_unless_opted_in() -> None:
    require_node("libsignal-072")
    h = Harness("libsignal-072")
    try:
        me, other = Peer(4), new_party(h)  # SPQR minimum version 1, the default
        h.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
        first = h.encrypt(other, "e2e", b"from 0.72.1")[0]
        assert parse_prekey_message(first[1]).message.pq_ratchet == b""
        with pytest.raises(PeerLacksSpqr):
            me.decrypt(other, first)
        assert me.records[other].current is None
        me.spqr_min_version = 0  # the opt-in for peers without SPQR
        assert me.decrypt(other, first) == b"from 0.72.1"
        assert h.decrypt(other, "e2e", me.encrypt(other, b"reply")) == [b"reply"]
    finally:
        h.close()


def test_a_restored_record_resumes_with_libsignal(spqr_peer: Harness, tmp_path: Path) -> None:
    """An e2e store put back from a backup (accept_restore): the record does not send until
    libsignal's next message makes a DH step, then resumes (its SPQR past the indices the
    lost copy used) and libsignal reads it."""
    from e2e.libsignal.store import decrypt_and_store, encrypt_and_store
    from e2e.store import Address, SqliteStore, StorageKey

    me, other = Peer(4), new_party(spqr_peer)
    spqr_peer.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    key, addr, path = StorageKey.generate(), Address(other, 1), tmp_path / "e2e.db"

    def receive(store: SqliteStore, *msgs: tuple[int, bytes]) -> None:
        for t, body in msgs:
            decrypt_and_store(store, addr, t, body, prekeys=me.prekeys, local_identity=me.identity)

    store = SqliteStore(path, key)
    receive(store, *spqr_peer.encrypt(other, "e2e", b"a", b"b"))
    for i in range(3):
        assert spqr_peer.decrypt(other, "e2e", encrypt_and_store(store, addr, b"%d" % i))
        receive(store, *spqr_peer.encrypt(other, "e2e", b"r%d" % i))
    store.close()
    backup = path.read_bytes()
    store = SqliteStore(path, key)
    lost = [encrypt_and_store(store, addr, b"lost %d" % i) for i in range(5)]
    assert spqr_peer.decrypt(other, "e2e", *lost) == [b"lost %d" % i for i in range(5)]
    store.close()
    for f in tmp_path.glob("e2e.db-*"):
        if not f.name.endswith("-epoch"):
            f.unlink()
    path.write_bytes(backup)
    store = SqliteStore(path, key, accept_restore=True)
    try:
        with pytest.raises(RatchetStepRequired):
            encrypt_and_store(store, addr, b"would reuse a key")
        receive(store, *spqr_peer.encrypt(other, "e2e", b"a DH step"))
        for i in range(20):
            msg = encrypt_and_store(store, addr, b"after %d" % i)
            assert spqr_peer.decrypt(other, "e2e", msg) == [b"after %d" % i]
            receive(store, *spqr_peer.encrypt(other, "e2e", b"back %d" % i))
    finally:
        store.close()
