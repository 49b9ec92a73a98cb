"""Freshness of stored state (SPEC.md §9.7): each test runs a rollback attack on a store --
an older copy of a row put back, a peer's identity row deleted, the whole database restored
-- and shows that the store now refuses it with RollbackDetected instead of reusing old state
(a two-time pad), trusting an attacker's key as NEW, or accepting a replayed initial message.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from test_store_conformance import ALICE, BOB, get_bundle, pair_up, rows, setup_device
from test_store_tamper import get_raw, put_raw

from e2e import PQ, KeyPair, Session
from e2e.errors import RollbackDetected, StoreError
from e2e.store import Address, decrypt_and_store, encrypt_and_store
from e2e.store.atrest import StorageKey
from e2e.store.freshness import FileEpochKeeper, MemoryEpochKeeper
from e2e.store.memory import MemoryStore
from e2e.store.sqlite import SqliteStore


def delete_raw(store: Any, kind: str, rid: str) -> None:
    with store.transaction() as tx:
        tx._delete(kind, rid)


def reopen(backend: Any, name: str) -> Any:
    """The same data under a new store object (MemoryStore: with the same keeper)."""
    if backend.kind == "memory":
        keeper = backend.__dict__.setdefault("keeper_" + name, MemoryEpochKeeper())
        rows_ = backend.rows if name == "a" else backend.__dict__.setdefault("rows_" + name, {})
        return MemoryStore(backend.key, rows=rows_, keeper=keeper)
    return backend.open(name=name)


def test_row_rollback_is_detected(backend: Any) -> None:
    a, b = reopen(backend, "a"), reopen(backend, "b")
    pair_up(a, b, PQ)
    old_row = get_raw(a, "session", BOB.record_id)
    sent = encrypt_and_store(a, BOB, b"first message")
    put_raw(a, "session", BOB.record_id, old_row)  # the attacker puts the older copy back
    before = rows(a)
    # the store object that wrote the newer row refuses the old one: no second message
    # under the first one's key (the two-time pad of the issue) ...
    with pytest.raises(RollbackDetected) as e:
        encrypt_and_store(a, BOB, b"another message")
    assert e.value.record == f"session/{BOB.record_id}"
    assert rows(a) == before
    a.close()
    # ... and so does any store opened later: the row is not the one in the sealed set
    with pytest.raises(RollbackDetected) as e:
        reopen(backend, "a")
    assert e.value.record == "meta/epoch"
    assert decrypt_and_store(b, ALICE, sent) == b"first message"


def test_deleted_identity_does_not_come_back_as_new(backend: Any) -> None:
    a, b = reopen(backend, "a"), reopen(backend, "b")
    pair_up(a, b, PQ)  # Bob (b) trusts Alice's identity key
    mallory = MemoryStore()
    setup_device(mallory, PQ)
    with mallory.transaction() as tx:  # Mallory starts a session with Bob as "Alice"
        tx.initiate(BOB, get_bundle(b, PQ))
    forged = encrypt_and_store(mallory, BOB, b"it's me, Alice, new phone")
    # the attacker deletes Bob's identity row for Alice (and her session) so that Mallory's
    # key would come back as NEW and be trusted for sending
    delete_raw(b, "identity", ALICE.record_id)
    delete_raw(b, "session", ALICE.record_id)
    before = rows(b)
    with pytest.raises(RollbackDetected) as e:
        decrypt_and_store(b, ALICE, forged)
    assert e.value.record in (f"identity/{ALICE.record_id}", f"session/{ALICE.record_id}")
    assert rows(b) == before
    with pytest.raises(RollbackDetected), b.transaction() as tx:
        tx.save_identity(ALICE, KeyPair.generate().public)
    b.close()
    with pytest.raises(RollbackDetected):
        reopen(backend, "b")


def test_deleted_identity_detected_by_a_fresh_store_object(backend: Any) -> None:
    a, b = reopen(backend, "a"), reopen(backend, "b")
    pair_up(a, b, PQ)
    b.close()
    raw = reopen(backend, "b")
    delete_raw(raw, "identity", ALICE.record_id)  # with the store closed, then reopened
    raw.close()
    with pytest.raises(RollbackDetected) as e:
        reopen(backend, "b")
    assert e.value.record == "meta/epoch"


def _snapshot(backend: Any, store: Any) -> Any:
    if backend.kind == "sqlite":
        store.close()
        snap = backend.tmp / "snap"
        snap.mkdir(exist_ok=True)
        for f in backend.tmp.glob("b.db*"):
            if not f.name.endswith("-epoch"):
                shutil.copy(f, snap / f.name)
        return snap
    return dict(rows_of(backend, store))


def rows_of(backend: Any, store: Any) -> dict[tuple[str, str], bytes]:
    with store.transaction() as tx:
        if backend.kind == "memory":
            return dict(store.rows)
        out = {}
        for kind in ("meta", "local", "identity", "session", "archive", "opk", "spk", "kem",
                     "kemuse", "spkuse", "app"):  # fmt: skip
            for rid, value in tx._scan(kind):
                out[(kind, rid)] = value
        return out


def _restore(backend: Any, store: Any, snap: Any) -> None:
    if backend.kind == "sqlite":
        store.close()
        for f in backend.tmp.glob("b.db*"):
            if not f.name.endswith("-epoch"):
                f.unlink()
        for f in snap.iterdir():
            shutil.copy(f, backend.tmp / f.name)
        return
    if backend.kind == "memory":
        store.rows.clear()
        store.rows.update(snap)
        return
    now = rows_of(backend, store)
    with store.transaction() as tx:
        for key in now:
            if key not in snap and key != ("meta", "kdf"):
                tx._delete(*key)
        for key, value in snap.items():
            tx._put(*key, value)
    store.close()


def test_whole_database_rollback_and_replayed_initial_message(backend: Any) -> None:
    if backend.kind == "postgres":
        pytest.skip("PostgresStore keeps no epoch outside by default (see the keeper test)")
    a, b = reopen(backend, "a"), reopen(backend, "b")
    setup_device(a, PQ)
    setup_device(b, PQ, one_time=0)
    snap = _snapshot(backend, b)
    b = reopen(backend, "b")
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ))
    first = encrypt_and_store(a, BOB, b"hello bob")
    assert decrypt_and_store(b, ALICE, first) == b"hello bob"
    _restore(backend, b, snap)  # the attacker restores the database as it was before
    with pytest.raises(RollbackDetected) as e:
        b = reopen(backend, "b")
    assert e.value.record == "meta/epoch"
    if backend.kind == "sqlite":  # the replay never reaches a store that opened
        with pytest.raises(RollbackDetected):
            SqliteStore(backend.tmp / "b.db", backend.key)


def test_postgres_rollback_detected_with_a_keeper(backend: Any) -> None:
    if backend.kind != "postgres":
        pytest.skip("PostgreSQL only")
    from e2e.store.postgres import PostgresStore

    keeper = MemoryEpochKeeper()  # stands in for a keeper on another service

    def open_b() -> Any:
        s = PostgresStore(backend.dsn, backend.key, schema=f"{backend.schema}_b", keeper=keeper)
        backend.opened.append(s)
        return s

    a, b = backend.open(name="a"), open_b()
    setup_device(a, PQ)
    setup_device(b, PQ, one_time=0)
    snap = rows_of(backend, b)
    with a.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ))
    first = encrypt_and_store(a, BOB, b"hello bob")
    assert decrypt_and_store(b, ALICE, first) == b"hello bob"
    _restore(backend, b, snap)
    with pytest.raises(RollbackDetected):
        open_b()


def test_file_keeper_beside_sqlite(tmp_path: Path) -> None:
    key = StorageKey.generate()
    store = SqliteStore(tmp_path / "s.db", key)
    with store.transaction() as tx:
        tx.app_put("x", b"1")
    keeper = FileEpochKeeper(tmp_path / "s.db-epoch")
    kept = keeper.load()
    assert kept >= 2
    with store.transaction() as tx:
        tx.app_put("x", b"2")
    assert keeper.load() == kept + 1
    keeper.advance(kept)  # never goes back
    assert keeper.load() == kept + 1
    keeper.close()
    store.close()
    (tmp_path / "s.db-epoch").write_bytes(b"junk")
    with pytest.raises(StoreError):
        FileEpochKeeper(tmp_path / "s.db-epoch").load()


def test_accept_restore_marks_sessions(tmp_path: Path) -> None:
    """A restore made on purpose opens with accept_restore; its sessions must take a fresh
    ratchet step before they send. The same when the keeper cannot answer."""
    key = StorageKey.generate()
    a = MemoryStore()
    b = SqliteStore(tmp_path / "b.db", key)
    pair_up(a, b, PQ)
    b.close()
    snap = (tmp_path / "b.db").read_bytes()
    b = SqliteStore(tmp_path / "b.db", key)
    encrypt_and_store(b, ALICE, b"after the backup")
    b.close()
    for f in tmp_path.glob("b.db-*"):
        if not f.name.endswith("-epoch"):
            f.unlink()
    (tmp_path / "b.db").write_bytes(snap)
    with pytest.raises(RollbackDetected):
        SqliteStore(tmp_path / "b.db", key)
    b = SqliteStore(tmp_path / "b.db", key, accept_restore=True)
    with b.transaction() as tx:
        s = tx.load_session(ALICE)
    assert s is not None
    if hasattr(Session, "require_ratchet_step"):
        assert s.needs_ratchet_step  # type: ignore[attr-defined]
    b.close()
    SqliteStore(tmp_path / "b.db", key).close()  # accepted: it opens again normally
    # a missing keeper file: rollback cannot be proven absent, so sessions are marked
    (tmp_path / "b.db-epoch").unlink()
    b = SqliteStore(tmp_path / "b.db", key)
    with b.transaction() as tx:
        s = tx.load_session(ALICE)
    assert s is not None
    if hasattr(Session, "require_ratchet_step"):
        assert s.needs_ratchet_step  # type: ignore[attr-defined]
    b.close()
    assert Address("x", 1)


def test_changes_by_another_store_object_are_not_rollbacks(backend: Any) -> None:
    """Two store objects (two workers or processes) on the same data: a record one of them
    deleted or rewrote is not a rollback for the other, which saw the older state."""
    if backend.kind == "memory":
        keeper = MemoryEpochKeeper()
        w1 = MemoryStore(backend.key, rows=backend.rows, keeper=keeper)
        w2 = MemoryStore(backend.key, rows=backend.rows, keeper=keeper)
    else:
        w1, w2 = backend.open(name="w"), backend.open(name="w")
    with w1.transaction() as tx:
        tx.app_put("x", b"1")
    with w2.transaction() as tx:
        assert tx.app_get("x") == b"1"
    with w1.transaction() as tx:
        tx.app_delete("x")
        tx.app_put("y", b"2")
    with w2.transaction() as tx:
        assert tx.app_get("x") is None
        assert tx.app_get("y") == b"2"
    with w1.transaction() as tx:
        tx.app_put("x", b"3")
    with w2.transaction() as tx:
        assert tx.app_get("x") == b"3"
        tx.app_put("y", b"4")
    with w1.transaction() as tx:
        assert tx.app_get("y") == b"4"
