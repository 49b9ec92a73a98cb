"""e2e.libsignal without node: the strict protobuf codec, wire parsing, limits and state."""

from __future__ import annotations

import pytest

from e2e.errors import (
    DecodeError,
    DecryptError,
    DuplicateMessage,
    InvalidSignature,
    StateError,
    TooManySkipped,
    UnsupportedVersion,
)
from e2e.keys import KemKeyPair, KeyPair
from e2e.libsignal import (
    MAX_JUMP,
    LibsignalPrekeys,
    SessionRecord,
    initiate,
    kyber,
    proto,
)
from e2e.libsignal.wire import parse_prekey_message, parse_signal_message

SCHEMA = ((1, proto.BYTES), (2, proto.UINT32))


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x01a\x0a\x01b",  # field 1 twice
        b"\x1a\x01a",  # unknown field 3
        b"\x0a\x05ab",  # length past the end
        b"\x10\x80\x00",  # non-minimal varint
        b"\x10\xff\xff\xff\xff\x1f",  # > 32 bits
        b"\x10",  # truncated
        b"\x08\x01",  # field 1 with the wrong wire type
    ],
)
def test_strict_proto_rejects(data: bytes) -> None:
    with pytest.raises(DecodeError):
        proto.decode(data, SCHEMA)


def test_proto_round_trip() -> None:
    raw = proto.encode(SCHEMA, {1: b"xy", 2: 300})
    assert raw == b"\x0a\x02xy\x10\xac\x02"
    assert proto.decode(raw, SCHEMA) == {1: b"xy", 2: 300}


def test_kyber_conversion_is_consistent() -> None:
    pair = KemKeyPair.generate()
    ss, ct = kyber.encapsulate(kyber.serialize_public(pair.public))
    assert ct[0] == 0x08 and len(ct) == 1569
    assert kyber.decapsulate(pair, ct) == ss


def _pair(
    version: int = 4, spqr: bool = True
) -> tuple[SessionRecord, SessionRecord, LibsignalPrekeys, KeyPair]:
    """Two records after one message; ``spqr`` False turns SPQR off in both (as a
    negotiation to version 0 does), for tests of the Double Ratchet's own bounds (SPQR's
    smaller jump bound is tested in tests/libsignal/)."""
    alice, bob = KeyPair.generate(), KeyPair.generate()
    keys = LibsignalPrekeys.generate(bob, 7, kyber=version == 4)
    a = SessionRecord(initiate(alice, 5, keys.bundle(kyber=version == 4), version=version))
    b = SessionRecord()
    t, m = a.encrypt(b"hi")
    assert b.decrypt(t, m, keys, bob, 7, allowed_versions=(3, 4)).plaintext == b"hi"
    if not spqr:
        for rec in (a, b):
            assert rec.current is not None
            rec.current.spqr = None
    return a, b, keys, bob


def test_tampered_bundle_signature_is_refused() -> None:
    keys = LibsignalPrekeys.generate(KeyPair.generate(), 1)
    b = keys.bundle()
    bad = type(b)(
        **{**{k: getattr(b, k) for k in b.__slots__}, "signed_prekey_signature": bytes(64)}
    )
    with pytest.raises(InvalidSignature):
        initiate(KeyPair.generate(), 2, bad)


def test_version_3_is_opt_in() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    keys = LibsignalPrekeys.generate(bob, 7, kyber=False)
    a = SessionRecord(initiate(alice, 5, keys.bundle(kyber=False), version=3))
    t, m = a.encrypt(b"legacy")
    assert m[0] == 0x34
    with pytest.raises(UnsupportedVersion):
        SessionRecord().decrypt(t, m, keys, bob, 7)  # default: version 4 only
    assert SessionRecord().decrypt(t, m, keys, bob, 7, allowed_versions=(3,)).plaintext == b"legacy"


def test_jump_limit_duplicates_and_unchanged_state() -> None:
    a, b, _, _ = _pair(spqr=False)
    msgs = [a.encrypt(b"%d" % i) for i in range(MAX_JUMP + 3)]
    before = b.to_bytes()
    with pytest.raises(TooManySkipped):
        b.decrypt(*msgs[MAX_JUMP + 2])
    assert b.to_bytes() == before
    assert b.decrypt(*msgs[MAX_JUMP]).plaintext == b"%d" % MAX_JUMP
    assert b.decrypt(*msgs[3]).plaintext == b"3"  # a skipped key
    with pytest.raises(DuplicateMessage):
        b.decrypt(*msgs[3])
    after = b.to_bytes()
    with pytest.raises(DuplicateMessage):
        b.decrypt(*msgs[MAX_JUMP])
    assert b.to_bytes() == after


def test_record_serialization_round_trip_and_garbage() -> None:
    a, b, _, _ = _pair()
    t, m = b.encrypt(b"x")
    a2 = SessionRecord.from_bytes(a.to_bytes())
    assert a2.to_bytes() == a.to_bytes()
    assert a2.decrypt(t, m).plaintext == b"x"
    for junk in (b"", b"\x80", b"\xa0", a.to_bytes()[:-3]):
        with pytest.raises(StateError):
            SessionRecord.from_bytes(junk)


def test_wire_parsers_reject_garbage() -> None:
    a, _, _, _ = _pair()
    t, m = a.encrypt(b"y")
    pkm = parse_prekey_message(m)
    assert pkm.message.counter == 1
    for junk in (b"", b"\x44", b"\x24" + m[1:], m[:-1] + b"\x00\x00", bytes(9)):
        with pytest.raises(DecodeError):
            parse_prekey_message(junk)
        with pytest.raises(DecodeError):
            parse_signal_message(junk)


def test_store_integration_round_trip_and_rollback() -> None:
    from e2e.libsignal.store import decrypt_and_store, encrypt_and_store, load_record, save_record
    from e2e.store import Address, MemoryStore

    a, b, _, _ = _pair()
    sa, sb = MemoryStore(), MemoryStore()
    addr_a, addr_b = Address("alice", 1), Address("bob", 1)
    with sa.transaction() as tx:
        save_record(tx, addr_b, a)
    with sb.transaction() as tx:
        save_record(tx, addr_a, b)
    t, m = encrypt_and_store(sb, addr_a, b"stored")
    assert decrypt_and_store(sa, addr_b, t, m).plaintext == b"stored"
    with sa.transaction() as tx:
        before = load_record(tx, addr_b).to_bytes()
    bad = m[:-1] + bytes([m[-1] ^ 1])
    with pytest.raises(DuplicateMessage):
        decrypt_and_store(sa, addr_b, t, m)
    with pytest.raises(Exception):  # noqa: B017 - any E2EError; the record must not change
        decrypt_and_store(sa, addr_b, t, bad)
    with sa.transaction() as tx:
        assert load_record(tx, addr_b).to_bytes() == before


def test_recorded_libsignal_vectors_detect_corruption() -> None:
    import copy
    import json
    from pathlib import Path

    from e2e.errors import E2EError
    from e2e.vectors.libsignal_wire_vectors import verify_libsignal_wire

    doc = json.loads((Path(__file__).parent.parent / "vectors/libsignal_wire.json").read_text())
    clients = {c["libsignal_client"] for c in doc["cases"]}
    assert clients == {"0.72.1", "0.90.0", "0.92.2", "0.103.0"}
    for case in (
        next(c for c in doc["cases"] if c.get("session_version") == 4),  # 0.72.1, no SPQR
        next(c for c in doc["cases"] if c["libsignal_client"] == "0.103.0" and "steps" in c),
    ):
        verify_libsignal_wire(case)
        first_e2e = next(i for i, s in enumerate(case["steps"]) if s["from"] == "e2e")
        for i, field, pos, exc in (
            (0, "plaintext", -4, AssertionError),  # libsignal's plaintext
            (0, "message", -4, E2EError),  # libsignal's message bytes
            (first_e2e, "message", -4, AssertionError),  # e2e must reproduce its message
            (first_e2e, "message", 20, AssertionError),  # (the start of its SPQR field)
        ):
            bad = copy.deepcopy(case)
            value = bad["steps"][i][field]
            pos %= len(value)
            bad["steps"][i][field] = (
                value[:pos] + ("0" if value[pos] != "0" else "1") + value[pos + 1 :]
            )
            with pytest.raises(exc):
                verify_libsignal_wire(bad)


def test_archived_state_has_a_smaller_jump_bound() -> None:
    from e2e.libsignal.session import MAX_ARCHIVED_JUMP

    alice_id, bob_id = KeyPair.generate(), KeyPair.generate()
    bob = SessionRecord()
    senders = []
    for _ in range(2):
        keys = LibsignalPrekeys.generate(bob_id, 2, one_time=1)
        alice = SessionRecord(initiate(alice_id, 1, keys.bundle()))
        bob.decrypt(*alice.encrypt(b"hi"), prekeys=keys, local_identity=bob_id)
        bob.encrypt(b"ack")  # bob answers in this session ...
        senders.append(alice)
        for state in (alice.current, bob.current):  # the Double Ratchet's bound alone
            assert state is not None
            state.spqr = None
    first = senders[0]
    assert first.current is not None
    first.current.pending = None  # ... as if its answer had arrived: plain SignalMessages now
    msgs = [first.encrypt(b"%d" % i) for i in range(MAX_ARCHIVED_JUMP + 3)]
    before = bob.to_bytes()
    with pytest.raises(DecryptError):  # the current state fails its MAC, the archived one
        bob.decrypt(*msgs[MAX_ARCHIVED_JUMP + 1])  # refuses the jump (index 1, counter 10)
    assert bob.to_bytes() == before
    assert bob.decrypt(*msgs[MAX_ARCHIVED_JUMP]).plaintext == b"%d" % MAX_ARCHIVED_JUMP
    assert bob.current is not None and bob.current.remote_identity == alice_id.public
    assert len(bob.previous) == 1  # the archived state was promoted


def test_libsignal_generated_bundles_verify_and_a_flipped_signature_does_not() -> None:
    import json
    from pathlib import Path

    from e2e.libsignal import LibsignalBundle

    doc = json.loads((Path(__file__).parent.parent / "vectors/libsignal_wire.json").read_text())
    bundles = [c["bundle"] for c in doc["cases"] if c.get("kind") == "bundle"]
    assert len(bundles) == 6  # 0.72.1, 0.90.0 and 0.103.0, with and without a one-time prekey
    for raw in bundles:
        LibsignalBundle.from_json(raw).verify()
        for field in ("signed_prekey_signature", "kyber_prekey_signature"):
            bad = dict(raw)
            bad[field] = ("0" if raw[field][0] != "0" else "1") + raw[field][1:]
            with pytest.raises(InvalidSignature):
                LibsignalBundle.from_json(bad).verify()
