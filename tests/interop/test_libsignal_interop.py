"""e2e.libsignal against the official libsignal client (0.72.1, 0.90.0, 0.92.2 and 0.103.0,
through node).

Every pinned libsignal version talks to e2e both ways; the libsignal session record is read
after every message and its chain keys, indices and root keys (and, from 0.90 on, its SPQR
chain) must equal e2e's. SPQR-specific scenarios are in test_spqr_interop.py.
"""

from __future__ import annotations

import os

import pytest

from e2e.errors import AuthenticationFailed, E2EError, PrekeyReused, UnknownPrekey
from e2e.keys import KeyPair
from e2e.libsignal import (
    PREKEY_TYPE,
    WHISPER_TYPE,
    LibsignalBundle,
    LibsignalPrekeys,
    SessionRecord,
    initiate,
)
from interop.conversation import converse
from interop.harness import Harness
from interop.record import current_state

_counter = iter(range(1, 1_000_000))
#: Messages each way of the long conversations (E2E_INTEROP_MESSAGES; README: long mode).
MESSAGES = int(os.environ.get("E2E_INTEROP_MESSAGES", "1000"))


def versions(h: Harness) -> tuple[int, ...]:
    """0.72.1 still speaks X3DH (3) and PQXDH (4); 0.90.0 and later only PQXDH."""
    return (3, 4) if h.package == "libsignal-072" else (4,)


def spqr_min(h: Harness) -> int:
    """e2e's SPQR minimum version for a peer: 0 for 0.72.1 (no SPQR), else the default 1."""
    return 0 if h.package == "libsignal-072" else 1


class Peer:
    """The e2e side: identity, prekeys and one session record per libsignal party."""

    def __init__(self, version: int = 4, one_time: int = 5, spqr_min_version: int = 1) -> None:
        self.identity = KeyPair.generate()
        self.registration_id = 4000 + next(_counter)
        self.prekeys = LibsignalPrekeys.generate(
            self.identity, self.registration_id, one_time=one_time, kyber=version == 4
        )
        self.version = version
        self.spqr_min_version = spqr_min_version
        self.records: dict[str, SessionRecord] = {}

    def bundle(self) -> LibsignalBundle:
        return self.prekeys.bundle(kyber=self.version == 4)

    def decrypt(self, party: str, msg: tuple[int, bytes]) -> bytes:
        rec = self.records.setdefault(party, SessionRecord())
        out = rec.decrypt(
            msg[0],
            msg[1],
            prekeys=self.prekeys,
            local_identity=self.identity,
            local_registration_id=self.registration_id,
            allowed_versions=(3, 4),
            spqr_min_version=self.spqr_min_version,
        )
        if out.prekeys_used is not None:
            u = out.prekeys_used
            self.prekeys.mark_used(u.prekey_id, u.kyber_prekey_id, u.base_key)
        return out.plaintext

    def encrypt(self, party: str, plaintext: bytes) -> tuple[int, bytes]:
        return self.records[party].encrypt(plaintext)

    def start(self, party: str, bundle: dict[str, object], version: int) -> None:
        bundle = {k: v for k, v in bundle.items() if k != "ok"}
        state = initiate(
            self.identity,
            self.registration_id,
            LibsignalBundle.from_json(bundle),
            version=version,
            spqr_min_version=self.spqr_min_version,
        )
        self.records.setdefault(party, SessionRecord()).promote(state)


def new_party(h: Harness) -> str:
    name = f"p{next(_counter)}"
    h.call("init", party=name, registration_id=next(_counter) % 16000 + 1)
    return name


def libsignal_bundle(h: Harness, party: str, version: int, one_time: bool = True) -> dict:
    n = next(_counter)
    return h.call(
        "bundle",
        party=party,
        prekey_id=n,
        signed_prekey_id=n + 1,
        kyber_prekey_id=n + 2,
        kyber=version == 4,
        one_time=one_time,
    )


@pytest.mark.parametrize("version", [3, 4])
def test_libsignal_initiates_from_an_e2e_bundle(libsignal: Harness, version: int) -> None:
    if version not in versions(libsignal):
        pytest.skip("this libsignal version no longer starts X3DH sessions")
    me = Peer(version, spqr_min_version=spqr_min(libsignal))
    alice = new_party(libsignal)
    libsignal.call("process_bundle", party=alice, peer="e2e", bundle=me.bundle().to_json())
    first = libsignal.encrypt(alice, "e2e", b"hello", b"again")
    assert [t for t, _ in first] == [PREKEY_TYPE, PREKEY_TYPE]
    assert all(m[0] >> 4 == version for _, m in first)
    assert [me.decrypt(alice, m) for m in first] == [b"hello", b"again"]
    assert libsignal.decrypt(alice, "e2e", me.encrypt(alice, b"reply")) == [b"reply"]
    after = libsignal.encrypt(alice, "e2e", b"answered")
    assert after[0][0] == WHISPER_TYPE
    assert me.decrypt(alice, after[0]) == b"answered"


@pytest.mark.parametrize("version", [3, 4])
def test_e2e_initiates_from_a_libsignal_bundle(libsignal: Harness, version: int) -> None:
    if version not in versions(libsignal):
        pytest.skip("this libsignal version no longer accepts X3DH sessions")
    me = Peer(version, spqr_min_version=spqr_min(libsignal))
    bob = new_party(libsignal)
    me.start(bob, libsignal_bundle(libsignal, bob, version), version)
    out = [me.encrypt(bob, b"m%d" % i) for i in range(3)]
    assert all(t == PREKEY_TYPE for t, _ in out)
    assert libsignal.decrypt(bob, "e2e", *out) == [b"m0", b"m1", b"m2"]
    back = libsignal.encrypt(bob, "e2e", b"b0", b"b1")
    assert [me.decrypt(bob, m) for m in back] == [b"b0", b"b1"]
    assert me.encrypt(bob, b"now whisper")[0] == WHISPER_TYPE


def test_only_072_still_accepts_x3dh(libsignal: Harness) -> None:
    """0.72.1 still accepts version 3; 0.90.0 and later accept only PQXDH."""
    me = Peer(3, spqr_min_version=spqr_min(libsignal))
    bob = new_party(libsignal)
    bundle = libsignal_bundle(libsignal, bob, 4)
    for k in ("kyber_prekey_id", "kyber_prekey", "kyber_prekey_signature"):
        bundle[k] = None
    me.start(bob, bundle, 3)
    result = libsignal.decrypt(bob, "e2e", me.encrypt(bob, b"x3dh"))[0]
    if libsignal.package == "libsignal-072":
        assert result == b"x3dh"
    else:
        assert isinstance(result, str)


@pytest.mark.parametrize("initiator", ["libsignal", "e2e"])
def test_a_conversation_each_way_with_reordering_drops_and_state_agreement(
    libsignal: Harness, initiator: str
) -> None:
    """E2E_INTEROP_MESSAGES messages each way in random batches (1-40, a tenth dropped, the
    rest reordered); after every message the receiver's chain state (Double Ratchet and
    SPQR) is found again in the sender's."""
    me = Peer(4, spqr_min_version=spqr_min(libsignal))
    other = new_party(libsignal)
    if initiator == "libsignal":
        libsignal.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    else:
        me.start(other, libsignal_bundle(libsignal, other, 4), 4)
    log = converse(libsignal, me, other, initiator, "lossy", MESSAGES, libsignal.package)
    assert log.root_checks > 5
    if spqr_min(libsignal):
        assert log.pq_checks > MESSAGES
        spqr = me.records[other].current.spqr  # type: ignore[union-attr]
        assert spqr is not None and spqr.machine.epoch >= 3


def test_simultaneous_initiation_converges(libsignal: Harness) -> None:
    me = Peer(4, spqr_min_version=spqr_min(libsignal))
    other = new_party(libsignal)
    libsignal.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    me.start(other, libsignal_bundle(libsignal, other, 4), 4)
    theirs = libsignal.encrypt(other, "e2e", b"from libsignal")
    mine = me.encrypt(other, b"from e2e")
    assert theirs[0][0] == PREKEY_TYPE and mine[0] == PREKEY_TYPE
    assert me.decrypt(other, theirs[0]) == b"from libsignal"
    assert libsignal.decrypt(other, "e2e", mine) == [b"from e2e"]
    # Both now hold two sessions; messages either way converge on one of them.
    for i in range(5):
        assert libsignal.decrypt(other, "e2e", me.encrypt(other, b"a%d" % i)) == [b"a%d" % i]
        back = libsignal.encrypt(other, "e2e", b"b%d" % i)
        assert me.decrypt(other, back[0]) == b"b%d" % i
    rec = libsignal.record(other, "e2e")
    assert rec is not None
    cur = me.records[other].current
    assert cur is not None and current_state(rec).base_key == cur.base_key


def test_prekey_exhaustion(libsignal: Harness) -> None:
    # e2e publishes one one-time prekey and one one-time Kyber prekey (plus a last resort).
    me = Peer(4, one_time=1, spqr_min_version=spqr_min(libsignal))
    first, second = new_party(libsignal), new_party(libsignal)
    b1 = me.bundle()
    assert b1.prekey_id is not None
    libsignal.call("process_bundle", party=first, peer="e2e", bundle=b1.to_json())
    m1 = libsignal.encrypt(first, "e2e", b"first")[0]
    assert me.decrypt(first, m1) == b"first"
    # The one-time keys are gone: the next bundle has no one-time prekey and the last
    # resort Kyber prekey, and still works.
    b2 = me.bundle()
    assert b2.prekey is None and b2.kyber_prekey_id != b1.kyber_prekey_id
    libsignal.call("process_bundle", party=second, peer="e2e", bundle=b2.to_json())
    m2 = libsignal.encrypt(second, "e2e", b"second")[0]
    assert me.decrypt(second, m2) == b"second"
    # A third session from the stale first bundle is refused: its one-time prekey is used.
    third = new_party(libsignal)
    libsignal.call("process_bundle", party=third, peer="e2e", bundle=b1.to_json())
    m3 = libsignal.encrypt(third, "e2e", b"stale")[0]
    with pytest.raises((PrekeyReused, UnknownPrekey)):
        me.decrypt(third, m3)
    assert third not in me.records or me.records[third].current is None
    # And the other way: libsignal refuses a second session on its consumed one-time prekey.
    bob = new_party(libsignal)
    bundle = libsignal_bundle(libsignal, bob, 4)
    me.start(bob, bundle, 4)
    assert libsignal.decrypt(bob, "e2e", me.encrypt(bob, b"ok")) == [b"ok"]
    again = Peer(4, spqr_min_version=spqr_min(libsignal))
    again.start(bob + "x", bundle, 4)
    result = libsignal.decrypt(bob, "e2e-again", again.encrypt(bob + "x", b"reuse"))
    assert isinstance(result[0], str)


def test_tampered_messages_are_rejected_by_both_sides(libsignal: Harness) -> None:
    me = Peer(4, spqr_min_version=spqr_min(libsignal))
    other = new_party(libsignal)
    libsignal.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    assert me.decrypt(other, libsignal.encrypt(other, "e2e", b"hi")[0]) == b"hi"
    assert libsignal.decrypt(other, "e2e", me.encrypt(other, b"ok")) == [b"ok"]
    # libsignal rejects e2e's tampered message and still reads the untampered one.
    t, body = me.encrypt(other, b"secret")
    for pos in (len(body) - 1, len(body) - 20, 5):
        bad = bytearray(body)
        bad[pos] ^= 1
        assert isinstance(libsignal.decrypt(other, "e2e", (t, bytes(bad)))[0], str)
    assert libsignal.decrypt(other, "e2e", (t, body)) == [b"secret"]
    # e2e rejects libsignal's tampered message and its record stays byte for byte the same.
    t, body = libsignal.encrypt(other, "e2e", b"from libsignal")[0]
    before = me.records[other].to_bytes()
    for pos in (len(body) - 1, len(body) - 20, 5):
        bad = bytearray(body)
        bad[pos] ^= 1
        with pytest.raises(E2EError):
            me.decrypt(other, (t, bytes(bad)))
        assert me.records[other].to_bytes() == before
    with pytest.raises(AuthenticationFailed):
        bad = bytearray(body)
        bad[-1] ^= 0x80
        me.decrypt(other, (t, bytes(bad)))
    assert me.decrypt(other, (t, body)) == b"from libsignal"


def test_sessions_with_libsignal_live_in_an_e2e_store(libsignal: Harness, tmp_path) -> None:  # noqa: ANN001
    """The e2e side keeps its libsignal session in a SQLite store, reopened between messages."""
    from e2e.libsignal.store import decrypt_and_store, encrypt_and_store
    from e2e.store import Address, SqliteStore, StorageKey

    me = Peer(4, spqr_min_version=spqr_min(libsignal))
    other = new_party(libsignal)
    libsignal.call("process_bundle", party=other, peer="e2e", bundle=me.bundle().to_json())
    key, addr, path = StorageKey.generate(), Address(other, 1), tmp_path / "e2e.db"
    for i in range(20):
        store = SqliteStore(path, key)
        try:
            for t, body in libsignal.encrypt(other, "e2e", b"in %d" % i, b"in %d'" % i):
                out = decrypt_and_store(
                    store,
                    addr,
                    t,
                    body,
                    prekeys=me.prekeys,
                    local_identity=me.identity,
                    spqr_min_version=me.spqr_min_version,
                )
                if out.prekeys_used is not None:
                    u = out.prekeys_used
                    me.prekeys.mark_used(u.prekey_id, u.kyber_prekey_id, u.base_key)
            reply = encrypt_and_store(store, addr, b"out %d" % i)
        finally:
            store.close()
        assert libsignal.decrypt(other, "e2e", reply) == [b"out %d" % i]
