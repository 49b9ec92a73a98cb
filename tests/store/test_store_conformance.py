"""One conformance suite over the memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from e2e import PQ, KemKeyPair, KeyPair, Session
from e2e.errors import (
    DecodeError,
    DecryptError,
    E2EError,
    PrekeyReused,
    StoreError,
    UnknownPrekey,
    UntrustedIdentity,
)
from e2e.store import (
    MAX_ARCHIVED_SESSIONS,
    Address,
    Direction,
    Store,
    TrustResult,
    decrypt_and_store,
    encrypt_and_store,
    set_fault_hook,
    upkeep,
)
from e2e.store._core import StorePrekeys

ALICE = Address("alice@example.com", 1)
BOB = Address("bob|shop", 7)  # a "|" in the name is fine: the device part is digits only
T0 = 1_700_000_000
SUITES = [pytest.param(PQ, id="pq")]


def rows(store: Store) -> dict[tuple[str, str], bytes]:
    """Every raw row, to compare states byte for byte."""
    out = {}
    with store.transaction() as tx:
        for kind in ("meta", "local", "identity", "session", "archive", "opk", "spk", "kem",
                     "kemuse", "spkuse", "app"):  # fmt: skip
            for rid, value in tx._scan(kind):  # type: ignore[attr-defined]
                out[(kind, rid)] = value
    return out


def setup_device(store: Store, suite: Any, one_time: int = 3) -> KeyPair:
    with store.transaction() as tx:
        pair = upkeep.ensure_identity(tx)
        upkeep.rotate(tx, suite, now=T0)
        upkeep.replenish(tx, suite, target=one_time, now=T0)
    return pair


def get_bundle(store: Store, suite: Any, use_one_time: bool = True) -> bytes:
    with store.transaction() as tx:
        return upkeep.bundle(tx, suite, use_one_time=use_one_time).to_bytes()


def pair_up(a: Store, b: Store, suite: Any) -> bytes:
    """Alice (a) initiates to Bob (b); Bob receives; returns Alice's first frame."""
    setup_device(a, suite)
    setup_device(b, suite)
    bundle = get_bundle(b, suite)
    with a.transaction() as tx:
        tx.initiate(BOB, bundle, allowed_suites=(suite,))
    first = encrypt_and_store(a, BOB, b"hello bob")
    assert decrypt_and_store(b, ALICE, first, allowed_suites=(suite,)) == b"hello bob"
    return first


# -- basics ------------------------------------------------------------------------------


def test_address_validation() -> None:
    assert Address("x", 0).record_id == "x|0"
    for bad in [("", 1), ("a", -1), ("a", 2**31), ("a\x00b", 1), ("a" * 513, 1), ("\ud800", 1)]:
        with pytest.raises(StoreError):
            Address(*bad)
    with pytest.raises(StoreError):
        Address(b"a", 1)  # type: ignore[arg-type]


def test_local_identity(backend: Any) -> None:
    store = backend.open()
    with store.transaction() as tx, pytest.raises(StoreError) as e:
        tx.local_identity()
    assert e.value.record == "local/identity"
    with store.transaction() as tx:
        assert tx.get_local_identity() is None
        assert upkeep.ensure_identity(tx).public == tx.local_identity().public
    pair = KeyPair.generate()
    with store.transaction() as tx:
        tx.set_local_identity(pair)
    store.close()
    with backend.open().transaction() as tx:
        got = tx.local_identity()
    assert got.public == pair.public and got.private_bytes() == pair.private_bytes()


def test_identity_trust(store: Store) -> None:
    k1, k2 = KeyPair.generate().public, KeyPair.generate().public
    with store.transaction() as tx:
        assert tx.get_identity(BOB) is None
        assert tx.is_trusted(BOB, k1, Direction.SENDING)  # trust on first use
        assert tx.is_trusted(BOB, k1, Direction.RECEIVING)
        assert tx.save_identity(BOB, k1) is TrustResult.NEW
        assert tx.save_identity(BOB, k1) is TrustResult.UNCHANGED
        assert tx.get_identity(BOB) == k1
        assert tx.is_trusted(BOB, k1, Direction.SENDING)
        assert not tx.is_trusted(BOB, k2, Direction.SENDING)
        assert not tx.is_trusted(BOB, k2, Direction.RECEIVING)
        assert tx.save_identity(BOB, k2) is TrustResult.REPLACED
        assert tx.get_identity(BOB) == k2
        assert tx.is_trusted(BOB, k2, Direction.RECEIVING)
        assert not tx.is_trusted(BOB, k2, Direction.SENDING)  # needs an explicit decision
        assert tx.save_identity(BOB, k2) is TrustResult.UNCHANGED
        assert not tx.is_trusted(BOB, k2, Direction.SENDING)
        tx.approve_identity(BOB, k2)
        assert tx.is_trusted(BOB, k2, Direction.SENDING)
        assert not tx.is_trusted(BOB, k1, Direction.RECEIVING)
        assert tx.get_identity(ALICE) is None
        with pytest.raises(StoreError):
            tx.save_identity(BOB, b"short")


# -- prekeys -----------------------------------------------------------------------------


def test_one_time_prekeys(backend: Any) -> None:
    store = backend.open()
    with store.transaction() as tx:
        a = tx.add_one_time_prekey(KeyPair.generate())
        b = tx.add_one_time_prekey(KeyPair.generate())
        assert b.id > a.id
        assert [p.id for p in tx.one_time_prekeys()] == [a.id, b.id]
        assert tx.load_one_time_prekey(a.id).pair.public == a.pair.public
        tx.mark_one_time_prekey_used(a.id)
        with pytest.raises(PrekeyReused):
            tx.load_one_time_prekey(a.id)
        with pytest.raises(PrekeyReused):
            tx.mark_one_time_prekey_used(a.id)
        with pytest.raises(UnknownPrekey):
            tx.load_one_time_prekey(b.id + 1000)
        with pytest.raises(UnknownPrekey):
            tx.load_one_time_prekey(-1)
        assert [p.id for p in tx.one_time_prekeys()] == [b.id]
    store.close()
    with backend.open().transaction() as tx:  # ids are never reused, even after reopening
        c = tx.add_one_time_prekey(KeyPair.generate())
        assert c.id > b.id
        with pytest.raises(PrekeyReused):
            tx.load_one_time_prekey(a.id)


def test_signed_prekeys(store: Store) -> None:
    with store.transaction() as tx:
        p = KeyPair.generate()
        s = tx.add_signed_prekey(p, bytes(64), T0)
        got = tx.load_signed_prekey(s.item.id)
        assert got.created == T0 and got.item.pair.public == p.public
        assert got.item.pair.private_bytes() == p.private_bytes()
        assert [d.item.id for d in tx.signed_prekeys()] == [s.item.id]
        tx.remove_signed_prekey(s.item.id)
        with pytest.raises(UnknownPrekey):
            tx.load_signed_prekey(s.item.id)
        with pytest.raises(StoreError):
            tx.add_signed_prekey(p, b"x", T0)


def test_kem_prekeys(store: Store) -> None:
    base1, base2 = bytes(range(32)), bytes(32)
    with store.transaction() as tx:
        one = tx.add_kem_prekey(KemKeyPair.generate(), bytes(64), False, T0)
        last = tx.add_kem_prekey(KemKeyPair.generate(), bytes(64), True, T0)
        assert tx.load_kem_prekey(one.item.id).item.pair.public == one.item.pair.public
        tx.mark_kem_prekey_used(one.item.id, base1)
        with pytest.raises(PrekeyReused):
            tx.load_kem_prekey(one.item.id, base2)
        tx.mark_kem_prekey_used(last.item.id, base1)
        with pytest.raises(PrekeyReused):
            tx.load_kem_prekey(last.item.id, base1)
        assert tx.load_kem_prekey(last.item.id, base2).item.last_resort
        assert [k.item.id for k in tx.kem_prekeys()] == [last.item.id]
        tx.remove_kem_prekey(last.item.id)
        with pytest.raises(UnknownPrekey):
            tx.load_kem_prekey(last.item.id, base2)
        assert tx._ids("kemuse") == []  # type: ignore[attr-defined]


def test_store_prekeys_is_a_prekey_source(store: Store) -> None:
    setup_device(store, PQ, one_time=1)
    with store.transaction() as tx:
        src = StorePrekeys(tx)  # type: ignore[arg-type]
        opk = tx.one_time_prekeys()[0]
        kem = [k for k in tx.kem_prekeys() if not k.item.last_resort][0]
        assert src.one_time_prekey(opk.id).public == opk.pair.public
        src.mark_used(opk.id, kem.item.id, bytes(32))
        with pytest.raises(PrekeyReused):
            src.one_time_prekey(opk.id)
        with pytest.raises(PrekeyReused):
            src.kem_prekey(kem.item.id, bytes(32))
        with pytest.raises(UnknownPrekey):
            src.signed_prekey(10**9)


# -- upkeep ------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_replenish_and_rotate_with_grace(store: Store, suite: Any) -> None:
    day = upkeep.DAY
    with store.transaction() as tx:
        upkeep.ensure_identity(tx)
        r = upkeep.replenish(tx, suite, target=4, now=T0)
        assert len(r.one_time) == 4 and len(r.kem) == 4
        assert upkeep.replenish(tx, suite, target=4, now=T0).one_time == []
        tx.mark_one_time_prekey_used(r.one_time[0].id)
        assert len(upkeep.replenish(tx, suite, target=4, now=T0).one_time) == 1
        first = upkeep.rotate(tx, suite, now=T0)
        assert first.signed is not None and first.last_resort is not None
        assert upkeep.rotate(tx, suite, now=T0 + day).signed is None
    old_bundle = get_bundle(store, suite, use_one_time=False)
    with store.transaction() as tx:
        second = upkeep.rotate(tx, suite, now=T0 + 7 * day, grace=3 * day)
        assert second.signed is not None and second.removed_signed == []
        assert len(tx.signed_prekeys()) == 2
    # a message built from the bundle fetched before the rotation still sets up a session
    peer = KeyPair.generate()
    alice = Session.initiate(peer, old_bundle, allowed_suites=(suite,))
    with store.transaction() as tx:
        assert tx.decrypt(ALICE, alice.encrypt(b"late"), allowed_suites=(suite,)) == b"late"
    with store.transaction() as tx:
        third = upkeep.rotate(tx, suite, now=T0 + 10 * day, grace=3 * day)
        assert third.removed_signed == [first.signed.item.id]
        assert third.removed_kem == ([first.last_resort.item.id] if first.last_resort else [])
        assert tx._ids("spkuse") == []  # type: ignore[attr-defined]
    alice2 = Session.initiate(KeyPair.generate(), old_bundle, allowed_suites=(suite,))
    before = rows(store)
    with pytest.raises(UnknownPrekey), store.transaction() as tx:
        tx.decrypt(BOB, alice2.encrypt(b"too late"), allowed_suites=(suite,))
    assert rows(store) == before


def test_bundle_needs_keys(store: Store) -> None:
    with store.transaction() as tx:
        upkeep.ensure_identity(tx)
        with pytest.raises(StoreError):
            upkeep.bundle(tx, PQ)


# -- sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_conversation_and_persistence(backend: Any, suite: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, suite)
    for i in range(3):
        f = encrypt_and_store(b, ALICE, b"reply %d" % i)
        assert decrypt_and_store(a, BOB, f, allowed_suites=(suite,)) == b"reply %d" % i
        f = encrypt_and_store(a, BOB, b"more %d" % i)
        assert decrypt_and_store(b, ALICE, f, allowed_suites=(suite,)) == b"more %d" % i
    with b.transaction() as tx:
        assert len(tx.one_time_prekeys()) == 2  # the first message used one
        assert tx.device_ids("alice@example.com") == [1]
        assert tx.device_ids("alice") == []
        assert tx.get_identity(ALICE) is not None
    a.close()
    b.close()
    a, b = backend.open(name="a"), backend.open(name="b")
    f = encrypt_and_store(a, BOB, b"after reopen")
    assert decrypt_and_store(b, ALICE, f, allowed_suites=(suite,)) == b"after reopen"


def test_initiator_state_persists_before_reply(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    setup_device(a, PQ)
    setup_device(b, PQ)
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ))
    a.close()
    a = backend.open(name="a")
    f1 = encrypt_and_store(a, BOB, b"one")
    f2 = encrypt_and_store(a, BOB, b"two")
    assert decrypt_and_store(b, ALICE, f2) == b"two"
    assert decrypt_and_store(b, ALICE, f1) == b"one"


def test_rejected_input_changes_nothing(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    first = pair_up(a, b, PQ)
    before = rows(b)
    for bad in [first, first[:-1] + bytes([first[-1] ^ 1]), b"\x00garbage", b""]:
        with pytest.raises(E2EError), b.transaction() as tx:
            tx.decrypt(ALICE, bad)
        assert rows(b) == before
    # a replay of the first (prekey) message never sets up a fresh session
    with pytest.raises((DecryptError, PrekeyReused)), b.transaction() as tx:
        tx.decrypt(Address("mallory", 1), first)
    assert rows(b) == before


def test_replay_of_prekey_message_without_one_time_key(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    setup_device(a, PQ)
    setup_device(b, PQ, one_time=0)
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ), allowed_suites=(PQ,))
    first = encrypt_and_store(a, BOB, b"x")
    assert decrypt_and_store(b, ALICE, first, allowed_suites=(PQ,)) == b"x"
    before = rows(b)
    for addr in (ALICE, Address("other", 3)):
        with pytest.raises((DecryptError, PrekeyReused)), b.transaction() as tx:
            tx.decrypt(addr, first, allowed_suites=(PQ,))
        assert rows(b) == before


def test_session_archive_is_bounded(store: Store) -> None:
    setup_device(store, PQ)
    bundle = get_bundle(store, PQ, use_one_time=False)
    made = []
    with store.transaction() as tx:
        assert tx.load_session(BOB) is None
        assert tx.archived_sessions(BOB) == []
        for _ in range(MAX_ARCHIVED_SESSIONS + 3):
            made.append(tx.initiate(BOB, bundle, allowed_suites=(PQ,)))
        current = tx.load_session(BOB)
        assert current is not None and current.to_bytes() == made[-1].to_bytes()
        archived = tx.archived_sessions(BOB)
        assert [s.to_bytes() for s in archived] == [
            s.to_bytes() for s in made[-2 : -2 - MAX_ARCHIVED_SESSIONS : -1]
        ]
        tx.delete_session(BOB)
        assert tx.load_session(BOB) is None and tx.archived_sessions(BOB) == []


@pytest.mark.parametrize("suite", SUITES)
def test_simultaneous_initiation_resolves(backend: Any, suite: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    setup_device(a, suite)
    setup_device(b, suite)
    ba, bb = get_bundle(a, suite), get_bundle(b, suite)
    with a.transaction() as tx:
        tx.initiate(BOB, bb, allowed_suites=(suite,))
    with b.transaction() as tx:
        tx.initiate(ALICE, ba, allowed_suites=(suite,))
    fa = encrypt_and_store(a, BOB, b"from alice")
    fb = encrypt_and_store(b, ALICE, b"from bob")
    assert decrypt_and_store(b, ALICE, fa, allowed_suites=(suite,)) == b"from alice"
    assert decrypt_and_store(a, BOB, fb, allowed_suites=(suite,)) == b"from bob"
    # each side now talks on the session the other started; both keep going
    for i in range(4):
        f = encrypt_and_store(a, BOB, b"a%d" % i)
        assert decrypt_and_store(b, ALICE, f, allowed_suites=(suite,)) == b"a%d" % i
        f = encrypt_and_store(b, ALICE, b"b%d" % i)
        assert decrypt_and_store(a, BOB, f, allowed_suites=(suite,)) == b"b%d" % i
    with a.transaction() as tx:
        cur_a = tx.load_session(BOB)
    with b.transaction() as tx:
        cur_b = tx.load_session(ALICE)
    assert cur_a is not None and cur_b is not None and cur_a.base_key == cur_b.base_key


def test_re_setup_keeps_late_messages_decryptable(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    late = encrypt_and_store(a, BOB, b"late, old session")
    # Alice reinstalls: new identity, new store; Bob accepts the new session
    a2 = backend.open(name="a2")
    setup_device(a2, PQ)
    with a2.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ))
    f = encrypt_and_store(a2, BOB, b"new install")
    assert decrypt_and_store(b, ALICE, f) == b"new install"
    with b.transaction() as tx:
        assert len(tx.archived_sessions(ALICE)) == 1
        ident = tx.get_identity(ALICE)
        assert ident is not None
        assert not tx.is_trusted(ALICE, ident, Direction.SENDING)
    with pytest.raises(UntrustedIdentity):
        encrypt_and_store(b, ALICE, b"needs approval")
    with b.transaction() as tx:
        tx.approve_identity(ALICE, ident)
    reply = encrypt_and_store(b, ALICE, b"welcome back")
    assert decrypt_and_store(a2, BOB, reply) == b"welcome back"
    # the late message of the old install decrypts through the archive; the new install's
    # session stays current, so replies still go to it
    assert decrypt_and_store(b, ALICE, late) == b"late, old session"
    with b.transaction() as tx:
        cur = tx.load_session(ALICE)
        assert cur is not None and cur.remote_identity == ident
        assert len(tx.archived_sessions(ALICE)) == 1
    before = rows(b)
    with pytest.raises(DecryptError), b.transaction() as tx:
        tx.decrypt(ALICE, late)  # a replay of it is refused and changes nothing
    assert rows(b) == before
    reply = encrypt_and_store(b, ALICE, b"still you")
    assert decrypt_and_store(a2, BOB, reply) == b"still you"


def test_initiate_refuses_replaced_identity(store: Store) -> None:
    setup_device(store, PQ)
    with store.transaction() as tx:
        tx.save_identity(BOB, KeyPair.generate().public)
    bundle = get_bundle(store, PQ)
    with pytest.raises(UntrustedIdentity), store.transaction() as tx:
        tx.initiate(BOB, bundle)


def test_encrypt_without_session(store: Store) -> None:
    with pytest.raises(StoreError) as e:
        encrypt_and_store(store, BOB, b"x")
    assert e.value.record == f"session/{BOB.record_id}"
    with pytest.raises(DecodeError), store.transaction() as tx:
        tx.decrypt(BOB, b"not a frame")


# -- ordering ----------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_encrypt_commits_before_frame_exists(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    before = rows(a)

    def hook(name: str) -> None:
        if name == "after_encrypt_before_commit":
            raise Boom

    set_fault_hook(hook)
    try:
        with pytest.raises(Boom):
            encrypt_and_store(a, BOB, b"never sent")
    finally:
        set_fault_hook(None)
    assert rows(a) == before  # no frame was returned and nothing was written
    f = encrypt_and_store(a, BOB, b"sent")
    a.close()
    with backend.open(name="a").transaction() as tx:  # durable once the frame exists
        s = tx.load_session(BOB)
        assert s is not None and s.ratchet.ns == 2
    assert decrypt_and_store(b, ALICE, f) == b"sent"


def test_decrypt_commits_with_application_write(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    f = encrypt_and_store(a, BOB, b"order #1")
    before = rows(b)

    def fail(tx: Any, pt: bytes) -> None:
        tx.app_put("inbox/1", pt)
        raise Boom

    with pytest.raises(Boom):
        decrypt_and_store(b, ALICE, f, fail)
    assert rows(b) == before  # the application's write and the new state roll back together

    def keep(tx: Any, pt: bytes) -> None:
        tx.app_put("inbox/1", pt)

    assert decrypt_and_store(b, ALICE, f, keep) == b"order #1"
    with b.transaction() as tx:
        assert tx.app_get("inbox/1") == b"order #1"
        assert tx.app_keys("inbox/") == ["inbox/1"]
        tx.app_delete("inbox/1")
        assert tx.app_get("inbox/1") is None
        with pytest.raises(StoreError):
            tx.app_put("", b"x")


def test_transaction_rollback_and_nesting(store: Store) -> None:
    before = rows(store)
    with pytest.raises(Boom), store.transaction() as tx:
        tx.set_local_identity(KeyPair.generate())
        tx.add_one_time_prekey(KeyPair.generate())
        raise Boom
    assert rows(store) == before
    with store.transaction(), pytest.raises(StoreError):
        with store.transaction():
            pass


def test_two_workers_never_advance_one_session_concurrently(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    setup_device(a, PQ)
    setup_device(b, PQ)
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ), allowed_suites=(PQ,))
    workers = [a] if backend.kind == "memory" else [backend.open(name="a") for _ in range(2)]
    frames: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        store = workers[i % len(workers)]
        try:
            for n in range(15):
                f = encrypt_and_store(store, BOB, b"w%d-%d" % (i, n))
                with lock:
                    frames.append(f)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(frames) == 30
    with a.transaction() as tx:
        s = tx.load_session(BOB)
        assert s is not None and s.ratchet.ns == 30
    # Every frame decrypts, each to its own plaintext: no message key (chain, N) went out
    # twice (a second frame under a used key would be refused as a duplicate).
    got = {decrypt_and_store(b, ALICE, f, allowed_suites=(PQ,)) for f in frames}
    assert len(got) == 30


# -- secrets -----------------------------------------------------------------------------


def test_no_secret_in_repr(backend: Any) -> None:
    store = backend.open()
    pair = KeyPair.generate()
    with store.transaction() as tx:
        tx.set_local_identity(pair)
        text = repr(store) + repr(tx) + repr(tx.local_identity())
    assert pair.private_bytes().hex() not in text
    assert backend.key._key.hex() not in text
    assert repr(backend.key) == "StorageKey(<secret>)"
    assert backend.key.same_as(backend.key)


@pytest.mark.parametrize("suite", SUITES)
def test_session_respond_against_store_prekeys(store: Store, suite: Any) -> None:
    bob_id = setup_device(store, suite, one_time=1)
    alice = Session.initiate(KeyPair.generate(), get_bundle(store, suite), allowed_suites=(suite,))
    first = alice.encrypt(b"direct")
    with store.transaction() as tx:
        bob, pt = Session.respond(bob_id, StorePrekeys(tx), first, allowed_suites=(suite,))
        assert pt == b"direct"
        assert tx.one_time_prekeys() == []
    with pytest.raises(PrekeyReused), store.transaction() as tx:
        Session.respond(bob_id, StorePrekeys(tx), first, allowed_suites=(suite,))
    assert alice.decrypt(bob.encrypt(b"ok")) == b"ok"


def test_misuse_gives_store_errors(store: Store) -> None:
    with store.transaction() as tx:
        for bad in (-1, 2**63, "0", 1.5):
            with pytest.raises(StoreError):
                tx.add_signed_prekey(KeyPair.generate(), bytes(64), bad)
        with pytest.raises(StoreError):
            tx.add_kem_prekey(KemKeyPair.generate(), bytes(64), True, -5)
        with pytest.raises(StoreError):
            tx.load_kem_prekey(1, b"short")
        with pytest.raises(StoreError):
            tx.app_put("k", bytearray(b"x"))  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            tx.device_ids("")
        with pytest.raises(UnknownPrekey):
            tx.load_signed_prekey("1")  # type: ignore[arg-type]
