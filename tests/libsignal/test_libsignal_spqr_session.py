"""e2e.libsignal sessions with SPQR (no node): two e2e parties, hostile input, negotiation
errors, the bundle checks and the restored-state rule (SPEC.md §15.5-15.7)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cbor2
import pytest

from e2e.errors import (
    AuthenticationFailed,
    DecodeError,
    E2EError,
    InvalidKey,
    PeerLacksSpqr,
    PeerRequiresSpqr,
    PqRatchetError,
    RatchetStepRequired,
    RollbackDetected,
    TooManySkipped,
)
from e2e.keys import KeyPair
from e2e.libsignal import LibsignalBundle, LibsignalPrekeys, SessionRecord, initiate
from e2e.libsignal.session import SPQR_MAX_JUMP
from e2e.libsignal.spqr import Spqr, braid, ratchet
from e2e.libsignal.spqr.message import Message, encode, parse
from e2e.libsignal.wire import parse_prekey_message, parse_signal_message


def _inner(kind: int, body: bytes):  # noqa: ANN202
    return parse_prekey_message(body).message if kind == 3 else parse_signal_message(body)


def _pair(
    alice_min: int = 1, bob_min: int = 1
) -> tuple[SessionRecord, SessionRecord, LibsignalPrekeys, KeyPair]:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    keys = LibsignalPrekeys.generate(bob, 7)
    a = SessionRecord(initiate(alice, 5, keys.bundle(), spqr_min_version=alice_min))
    return a, SessionRecord(), keys, bob


def _first(a: SessionRecord, b: SessionRecord, keys: LibsignalPrekeys, bob: KeyPair,
           bob_min: int = 1) -> None:  # fmt: skip
    t, m = a.encrypt(b"hi")
    assert b.decrypt(t, m, keys, bob, 7, spqr_min_version=bob_min).plaintext == b"hi"


@contextmanager
def _sending(field: Callable[[bytes], bytes] | None = None, none: bool = False) -> Iterator[None]:
    """While active, every SPQR send's field is rewritten by ``field`` (the key is kept, so
    the Double Ratchet MAC stays valid), or with ``none`` the message carries no SPQR at all
    (empty field, no key), as a peer without SPQR sends."""
    original = Spqr.send

    def send(self: Spqr, rng):  # noqa: ANN001, ANN202
        state, out, key = original(self, rng)
        if none:
            return state, b"", None
        return state, field(out) if field else out, key

    Spqr.send = send  # type: ignore[method-assign]
    try:
        yield
    finally:
        Spqr.send = original  # type: ignore[method-assign]


def test_two_e2e_parties_through_several_spqr_epochs_with_loss_and_reloads() -> None:
    rnd = random.Random(7)
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    parties = {"a": a, "b": b}
    for _ in range(150):
        sender = rnd.choice("ab")
        other = "b" if sender == "a" else "a"
        batch = [parties[sender].encrypt(b"%d" % i) for i in range(rnd.randint(1, 12))]
        kept = batch[:1] + [m for m in batch[1:] if rnd.random() > 0.2]
        rnd.shuffle(kept[1:])
        for m in kept:
            parties[other].decrypt(*m)
        parties[other] = SessionRecord.from_bytes(parties[other].to_bytes())
    spqr = parties["a"].current.spqr  # type: ignore[union-attr]
    assert spqr is not None and spqr.machine.epoch >= 4


def test_the_first_message_is_keyed_with_spqr_and_written_as_libsignal_writes_it() -> None:
    a, _, _, _ = _pair()
    t, m = a.encrypt(b"x")
    field = _inner(t, m).pq_ratchet
    assert field[:5] == b"\x01\x01\x01\x01\x00" and len(field) == 37
    # Field 5 follows the ciphertext (field 4) and precedes the MAC.
    assert parse_prekey_message(m).message.serialized[-8 - 37 - 2 : -8 - 37] == b"\x2a\x25"


def test_a_forged_message_is_refused_before_any_spqr_state_machine_work() -> None:
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    a.decrypt(*b.encrypt(b"answer"))  # plain SignalMessages from here
    calls = []
    original = braid.receive

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return original(*args, **kwargs)

    braid.receive = counting  # type: ignore[assignment]
    try:
        t, m = a.encrypt(b"x")
        before = b.to_bytes()
        with pytest.raises(AuthenticationFailed):
            b.decrypt(t, m[:-1] + bytes([m[-1] ^ 1]))
        assert calls == [] and b.to_bytes() == before
        assert b.decrypt(t, m).plaintext == b"x" and calls == [1]
    finally:
        braid.receive = original  # type: ignore[assignment]


def test_an_spqr_jump_beyond_the_bound_is_refused_before_the_walk() -> None:
    """SPQR_MAX_JUMP (32) skipped SPQR keys are the most a message may cost before its MAC;
    the Double Ratchet's own bound (64) is the larger one."""
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    a.decrypt(*b.encrypt(b"answer"))
    msgs = [a.encrypt(b"%d" % i) for i in range(SPQR_MAX_JUMP + 2)]
    before = b.to_bytes()
    with pytest.raises(TooManySkipped):
        b.decrypt(*msgs[-1])  # 33 skipped
    assert b.to_bytes() == before
    assert b.decrypt(*msgs[-2]).plaintext == b"%d" % SPQR_MAX_JUMP  # 32 skipped
    for i, m in enumerate(msgs[:-2]):  # each skipped key, once
        assert b.decrypt(*m).plaintext == b"%d" % i
    assert b.decrypt(*msgs[-1]).plaintext == b"%d" % (SPQR_MAX_JUMP + 1)


def test_authentic_but_bad_spqr_data_is_refused_and_changes_nothing() -> None:
    """A header chunk altered by the sender itself (so the message MAC is valid) makes the
    header's own MAC fail when the header completes: that message is refused whole."""
    a, b, keys, bob = _pair()

    def spoil(field: bytes) -> bytes:
        msg = parse(field)
        assert isinstance(msg, Message) and msg.chunk is not None
        return encode(Message(msg.epoch, msg.index, msg.type, (msg.chunk[0], bytes(32))))

    with _sending(spoil):
        first = a.encrypt(b"0")
    assert b.decrypt(*first, keys, bob, 7).plaintext == b"0"  # the chunk is only held
    second = a.encrypt(b"1")
    assert b.decrypt(*second).plaintext == b"1"
    third = a.encrypt(b"2")
    before = b.to_bytes()
    with pytest.raises(PqRatchetError):
        b.decrypt(*third)
    assert b.to_bytes() == before


def test_a_peer_without_spqr_gets_a_typed_error_only_for_an_authentic_message() -> None:
    a, b, keys, bob = _pair()
    with _sending(none=True):
        t, m = a.encrypt(b"no spqr")
    assert _inner(t, m).pq_ratchet == b""
    with pytest.raises(AuthenticationFailed):  # a forgery is not "a peer without SPQR"
        b.decrypt(t, m[:-1] + bytes([m[-1] ^ 1]), keys, bob, 7)
    with pytest.raises(PeerLacksSpqr):
        b.decrypt(t, m, keys, bob, 7)
    assert b.current is None
    # Opting in to minimum version 0 accepts it and turns SPQR off for the session.
    out = SessionRecord()
    assert out.decrypt(t, m, keys, bob, 7, spqr_min_version=0).plaintext == b"no spqr"
    assert out.current is not None and out.current.spqr is None
    back = out.encrypt(b"reply")
    assert _inner(*back).pq_ratchet == b""


def test_a_peer_that_requires_spqr_gets_a_typed_error_in_a_session_without_it() -> None:
    a, b, keys, bob = _pair()
    with _sending(none=True):
        t, m = a.encrypt(b"first")
    b.decrypt(t, m, keys, bob, 7, spqr_min_version=0)  # bob: SPQR off for this session
    t, m = a.encrypt(b"keyed")  # alice (minimum version 1) keys her next one with SPQR
    before = b.to_bytes()
    with pytest.raises(PeerRequiresSpqr):
        b.decrypt(t, m)
    assert b.to_bytes() == before
    # Without SPQR, bob cannot tell such a message from a forgery carrying the same field;
    # a forgery whose field is not a keyed SPQR message stays a plain MAC failure.
    with _sending(none=True):
        t, m = a.encrypt(b"unkeyed")
    inner = _inner(t, m).serialized
    forged = m.replace(inner, inner[:-1] + bytes([inner[-1] ^ 1]))
    with pytest.raises(AuthenticationFailed):
        b.decrypt(t, forged)
    # And alice, which requires SPQR, refuses bob's answer without it.
    with pytest.raises(PeerLacksSpqr):
        a.decrypt(*b.encrypt(b"bob answers"))


def test_minimum_version_0_on_both_sides_still_speaks_spqr() -> None:
    a, b, keys, bob = _pair(alice_min=0)
    t, m = a.encrypt(b"x")
    assert parse(_inner(t, m).pq_ratchet).index == 0  # type: ignore[union-attr]
    b.decrypt(t, m, keys, bob, 7, spqr_min_version=0)
    a.decrypt(*b.encrypt(b"y"))
    t, m = a.encrypt(b"z")
    assert parse(_inner(t, m).pq_ratchet).index == 1  # type: ignore[union-attr]
    assert b.decrypt(t, m).plaintext == b"z"


# -- bundle fields ---------------------------------------------------------------------------

_HOSTILE = [None, True, -1, 2**32, 1.5, "7", b"7"]


@pytest.mark.parametrize("field", ["prekey_id", "signed_prekey_id", "kyber_prekey_id",
                                   "registration_id", "device_id"])  # fmt: skip
@pytest.mark.parametrize("value", _HOSTILE)
def test_every_bundle_id_is_checked_before_a_session_exists(field: str, value: object) -> None:
    keys = LibsignalPrekeys.generate(KeyPair.generate(), 9)
    good = keys.bundle()
    if value is None and field in ("prekey_id",):
        return  # no one-time prekey is allowed, but then its key must go too (InvalidKey)
    bad = LibsignalBundle(**{**{k: getattr(good, k) for k in good.__slots__}, field: value})
    with pytest.raises((DecodeError, InvalidKey)):
        initiate(KeyPair.generate(), 5, bad)


@pytest.mark.parametrize("field", LibsignalBundle.__slots__)
def test_any_bundle_field_gives_a_typed_error_or_a_usable_session(field: str) -> None:
    """Every field of a bundle replaced by junk: initiate refuses it with a typed error, or
    the session it makes encrypts, saves, loads and encrypts again."""
    keys = LibsignalPrekeys.generate(KeyPair.generate(), 9)
    good = keys.bundle()
    for value in [*_HOSTILE, 0, 2**32 - 1, b"", bytes(33), [], {}]:
        bad = LibsignalBundle(**{**{k: getattr(good, k) for k in good.__slots__}, field: value})
        try:
            state = initiate(KeyPair.generate(), 5, bad)
        except E2EError:
            continue
        rec = SessionRecord(state)
        rec.encrypt(b"x")
        SessionRecord.from_bytes(rec.to_bytes()).encrypt(b"y")


@pytest.mark.parametrize("value", _HOSTILE)
def test_the_local_registration_id_is_checked(value: object) -> None:
    keys = LibsignalPrekeys.generate(KeyPair.generate(), 9)
    with pytest.raises(DecodeError):
        initiate(KeyPair.generate(), value, keys.bundle())  # type: ignore[arg-type]
    a, _, bkeys, bob = _pair()
    t, m = a.encrypt(b"x")
    with pytest.raises(DecodeError):
        SessionRecord().decrypt(t, m, bkeys, bob, value)  # type: ignore[arg-type]


def test_a_session_from_a_bundle_at_the_uint32_edges_saves_loads_and_sends() -> None:
    keys = LibsignalPrekeys.generate(KeyPair.generate(), 2**32 - 1)
    good = keys.bundle()
    edge = LibsignalBundle(**{**{k: getattr(good, k) for k in good.__slots__}, "prekey_id": 0})
    rec = SessionRecord(initiate(KeyPair.generate(), 2**32 - 1, edge))
    rec.encrypt(b"x")
    SessionRecord.from_bytes(rec.to_bytes()).encrypt(b"y")


# -- restored state --------------------------------------------------------------------------


def _blocks(body: bytes) -> set[bytes]:
    ct = parse_signal_message(body).ciphertext
    return {ct[i : i + 16] for i in range(0, len(ct), 16)}


def test_a_restored_record_does_not_send_until_a_fresh_dh_step() -> None:
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    a.decrypt(*b.encrypt(b"answered"))
    backup = a.to_bytes()
    text = b"A" * 48
    sent = a.encrypt(text)
    assert b.decrypt(*sent).plaintext == text
    # Loaded as if fresh, the backup would send under the used key (same AES key and IV):
    stale = SessionRecord.from_bytes(backup).encrypt(text)
    assert _blocks(stale[1]) == _blocks(sent[1])
    restored = SessionRecord.from_bytes(backup, fresh=False)
    with pytest.raises(RatchetStepRequired):
        restored.encrypt(text)
    assert SessionRecord.from_bytes(restored.to_bytes()).current.must_ratchet  # type: ignore[union-attr]
    # A message that does not make a DH step does not unblock it ...
    restored.decrypt(*b.encrypt(b"same chain?"))  # b's chain for a's key is new: a DH step
    again = restored.encrypt(text)
    assert not _blocks(again[1]) & _blocks(sent[1])


def test_a_restored_record_stays_blocked_until_the_peer_ratchets() -> None:
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    a.decrypt(*b.encrypt(b"1"))
    m1 = b.encrypt(b"late")  # b's chain under a's current key ...
    backup = a.to_bytes()
    a.decrypt(*m1)
    restored = SessionRecord.from_bytes(backup, fresh=False)
    restored.decrypt(*m1)  # ... a message on a chain the restored state already knows
    with pytest.raises(RatchetStepRequired):
        restored.encrypt(b"still blocked")
    restored.require_ratchet_step()
    with pytest.raises(RatchetStepRequired):
        restored.encrypt(b"x")


def test_the_store_loads_a_restored_record_marked_and_a_fresh_one_not(tmp_path: Path) -> None:
    from e2e.libsignal.store import decrypt_and_store, encrypt_and_store, load_record, save_record
    from e2e.store import Address, SqliteStore, StorageKey

    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    key, addr, path = StorageKey.generate(), Address("bob", 1), tmp_path / "a.db"
    store = SqliteStore(path, key)
    with store.transaction() as tx:
        save_record(tx, addr, a)
    store.close()
    snapshot = path.read_bytes()
    store = SqliteStore(path, key)
    b.decrypt(*encrypt_and_store(store, addr, b"sent after the backup"))
    store.close()
    for f in tmp_path.glob("a.db-*"):
        if not f.name.endswith("-epoch"):
            f.unlink()
    path.write_bytes(snapshot)
    with pytest.raises(RollbackDetected):
        SqliteStore(path, key)
    store = SqliteStore(path, key, accept_restore=True)
    with pytest.raises(RatchetStepRequired):
        encrypt_and_store(store, addr, b"would reuse a key")
    with store.transaction() as tx:
        assert load_record(tx, addr).current.must_ratchet  # type: ignore[union-attr]
    out = decrypt_and_store(store, addr, *b.encrypt(b"a DH step"))
    assert out.plaintext == b"a DH step"
    t, m = encrypt_and_store(store, addr, b"fresh chain")
    assert b.decrypt(t, m).plaintext == b"fresh chain"
    store.close()
    store = SqliteStore(path, key)  # accepted: a normal open, the record is fresh again
    with store.transaction() as tx:
        assert not load_record(tx, addr).current.must_ratchet  # type: ignore[union-attr]
    store.close()


def test_a_record_written_before_spqr_still_loads_without_it() -> None:
    a, _, _, _ = _pair()
    state = a.current
    assert state is not None
    old = state.to_obj()[:14]  # schema 1: no SPQR state, no restored flag
    rec = SessionRecord.from_bytes(cbor2.dumps([1, old, []], canonical=True))
    assert rec.current is not None and rec.current.spqr is None
    assert _inner(*rec.encrypt(b"x")).pq_ratchet == b""


def test_spqr_state_survives_the_record_codec_at_every_state() -> None:
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    kinds = set()
    for i in range(120):
        for s, r in ((a, b), (b, a)):
            r.decrypt(*s.encrypt(b"%d" % i))
            for rec in (s, r):
                spqr = rec.current.spqr  # type: ignore[union-attr]
                assert spqr is not None
                kinds.add(type(spqr.machine).__name__)
                copy = SessionRecord.from_bytes(rec.to_bytes())
                assert copy.to_bytes() == rec.to_bytes()
                assert ratchet.to_obj(copy.current.spqr) == ratchet.to_obj(spqr)  # type: ignore[union-attr,arg-type]
    assert len(kinds) >= 9, kinds


def test_spqr_randomness_comes_from_the_given_source_only() -> None:
    a, b, keys, bob = _pair()
    seen = []

    def rng(n: int) -> bytes:
        seen.append(n)
        return os.urandom(n)

    a.encrypt(b"x", rng)
    assert seen == [64]  # the first send samples epoch 1's ML-KEM key pair from it


def _leaves(obj: object, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if isinstance(obj, list):
        out = [path]
        for i, x in enumerate(obj):
            out += _leaves(x, (*path, i))
        return out
    return [path]


def _replace(obj: object, path: tuple[int, ...], value: object) -> object:
    if not path:
        return value
    assert isinstance(obj, list)
    out = list(obj)
    out[path[0]] = _replace(out[path[0]], path[1:], value)
    return out


def _spqr_record_mid_epoch() -> bytes:
    a, b, keys, bob = _pair()
    _first(a, b, keys, bob)
    for i in range(8):
        a.decrypt(*b.encrypt(b"%d" % i))
        b.decrypt(*a.encrypt(b"%d" % i))
    return a.to_bytes()


_RECORD = _spqr_record_mid_epoch()
_TREE = cbor2.loads(_RECORD)
_PATHS = _leaves(_TREE)
_JUNK = [None, True, 0, -1, 2**64, b"", bytes(31), bytes(32), bytes(33), [], [None], "x", 1.5]


@pytest.mark.parametrize("seed", range(40))
def test_a_stored_record_with_any_field_replaced_loads_or_is_a_state_error(seed: int) -> None:
    from e2e.errors import StateError

    rnd = random.Random(seed)
    for path in rnd.sample(_PATHS, 25):
        data = cbor2.dumps(_replace(_TREE, path, rnd.choice(_JUNK)), canonical=True)
        try:
            rec = SessionRecord.from_bytes(data)
        except StateError:
            continue
        assert SessionRecord.from_bytes(rec.to_bytes()).to_bytes() == rec.to_bytes()
        for _ in range(3):  # whatever loads, sending from it fails only with a typed error
            try:
                rec.encrypt(b"x")
            except E2EError:
                break
