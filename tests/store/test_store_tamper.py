"""Corrupted, tampered, swapped or wrongly keyed records give a StoreError naming the record,
never a fresh session, and leave every row as it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_store_conformance import ALICE, BOB, get_bundle, pair_up, rows, setup_device

from e2e import PQ, KeyPair, Session
from e2e.errors import StoreError
from e2e.store import Address, Direction, decrypt_and_store, encrypt_and_store
from e2e.store.atrest import RECORD_OVERHEAD, KdfParams, StorageKey, record_ad, record_header
from e2e.store.sqlite import SqliteStore

CAROL = Address("carol", 2)


@pytest.fixture(autouse=True)
def fast_scrypt() -> Iterator[None]:
    """This module creates passphrase stores with scrypt n as low as 2^10, through the
    private hook that lowers the creation floor (SPEC.md §9.2)."""
    from e2e.store import atrest

    previous = atrest._set_scrypt_floor(2**10)
    yield
    atrest._set_scrypt_floor(previous)


def put_raw(store: Any, kind: str, rid: str, value: bytes) -> None:
    with store.transaction() as tx:
        tx._put(kind, rid, value)


def get_raw(store: Any, kind: str, rid: str) -> bytes:
    with store.transaction() as tx:
        value = tx._get(kind, rid)
    assert value is not None
    return bytes(value)


def flip(value: bytes, at: int) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


def expect_store_error(store: Any, record: str, action: Any) -> None:
    before = rows(store)
    with pytest.raises(StoreError) as e:
        action()
    assert e.value.record == record, e.value
    assert rows(store) == before


# -- sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["format", "salt", "body", "tag", "truncated", "empty"])
def test_tampered_session_row(backend: Any, where: str) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    f = encrypt_and_store(a, BOB, b"m")
    good = get_raw(b, "session", ALICE.record_id)
    bad = {
        "format": flip(good, 0),
        "salt": flip(good, 5),
        "body": flip(good, len(good) // 2),
        "tag": flip(good, len(good) - 1),
        "truncated": good[: RECORD_OVERHEAD - 1],
        "empty": b"",
    }[where]
    put_raw(b, "session", ALICE.record_id, bad)
    record = f"session/{ALICE.record_id}"
    expect_store_error(b, record, lambda: decrypt_and_store(b, ALICE, f))
    expect_store_error(b, record, lambda: encrypt_and_store(b, ALICE, b"x"))
    put_raw(b, "session", ALICE.record_id, good)  # restored: the frame still decrypts
    assert decrypt_and_store(b, ALICE, f) == b"m"


def test_swapped_session_rows(backend: Any) -> None:
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    with b.transaction() as tx:
        s = tx.load_session(ALICE)
        assert s is not None
        tx.save_session(CAROL, s)
    alice_row = get_raw(b, "session", ALICE.record_id)
    carol_row = get_raw(b, "session", CAROL.record_id)
    put_raw(b, "session", ALICE.record_id, carol_row)
    put_raw(b, "session", CAROL.record_id, alice_row)
    expect_store_error(b, f"session/{CAROL.record_id}", lambda: encrypt_and_store(b, CAROL, b"x"))
    # a session row moved into another table fails too
    put_raw(b, "archive", ALICE.record_id, alice_row)
    with pytest.raises(StoreError) as e, b.transaction() as tx:
        tx.archived_sessions(ALICE)
    assert e.value.record == f"archive/{ALICE.record_id}"


def test_corrupt_session_never_replaced_by_a_fresh_one(backend: Any) -> None:
    """A prekey message arriving while the current session row is unreadable is refused."""
    a, b = backend.open(name="a"), backend.open(name="b")
    pair_up(a, b, PQ)
    a2 = backend.open(name="a2")
    setup_device(a2, PQ)
    with a2.transaction() as tx:
        tx.initiate(BOB, get_bundle(b, PQ))
    f = encrypt_and_store(a2, BOB, b"new session")
    good = get_raw(b, "session", ALICE.record_id)
    put_raw(b, "session", ALICE.record_id, flip(good, 20))
    expect_store_error(b, f"session/{ALICE.record_id}", lambda: decrypt_and_store(b, ALICE, f))


def test_authentic_but_invalid_session_state(backend: Any) -> None:
    store = backend.open()
    rid = BOB.record_id
    for junk in [b"", b"\xa0", b"\x00" * 600]:
        put_raw(store, "session", rid, backend.key.seal("session", rid, junk))
        with pytest.raises(StoreError) as e, store.transaction() as tx:
            tx.load_session(BOB)
        assert e.value.record == f"session/{rid}"
    put_raw(store, "archive", rid, backend.key.seal("archive", rid, b"\x02\x00\x00\x00\x09abc"))
    with pytest.raises(StoreError) as e, store.transaction() as tx:
        tx.archived_sessions(BOB)
    assert e.value.record == f"archive/{rid}"


# -- other records -----------------------------------------------------------------------


def test_tampered_records_of_every_kind(backend: Any) -> None:
    store = backend.open()
    setup_device(store, PQ, one_time=1)
    with store.transaction() as tx:
        tx.save_identity(BOB, KeyPair.generate().public)
        opk = tx.one_time_prekeys()[0].id
        spk = tx.signed_prekeys()[0].item.id
        kem = tx.kem_prekeys()[0].item.id
        tx.app_put("note", b"secret note")
    checks: list[tuple[str, str, Any]] = [
        ("local", "identity", lambda tx: tx.local_identity()),
        ("identity", BOB.record_id, lambda tx: tx.is_trusted(BOB, bytes(32), Direction.SENDING)),
        ("opk", str(opk), lambda tx: tx.load_one_time_prekey(opk)),
        ("spk", str(spk), lambda tx: tx.load_signed_prekey(spk)),
        ("kem", str(kem), lambda tx: tx.load_kem_prekey(kem)),
        ("meta", "next_id", lambda tx: tx.add_one_time_prekey(KeyPair.generate())),
        ("app", "note", lambda tx: tx.app_get("note")),
    ]
    for kind, rid, action in checks:
        good = get_raw(store, kind, rid)
        for bad in (flip(good, len(good) - 3), backend.key.seal(kind, rid, b"\x07" * 3)):
            if kind == "app" and bad != flip(good, len(good) - 3):
                continue  # any authentic application value is valid
            put_raw(store, kind, rid, bad)

            def run(action: Any = action) -> None:
                with store.transaction() as tx:
                    action(tx)

            expect_store_error(store, f"{kind}/{rid}", run)
        put_raw(store, kind, rid, good)


# -- keys --------------------------------------------------------------------------------


def test_wrong_storage_key(backend: Any) -> None:
    store = backend.open()
    setup_device(store, PQ)
    store.close()
    with pytest.raises(StoreError) as e:
        backend.open(StorageKey.generate())
    assert e.value.record == "meta/keycheck"
    backend.open().close()  # the right key still opens it


def test_passphrase(backend: Any) -> None:
    store = backend.open(passphrase="correct horse")
    setup_device(store, PQ)
    store.close()
    with pytest.raises(StoreError) as e:
        backend.open(passphrase="wrong horse")
    assert e.value.record == "meta/keycheck"
    with backend.open(passphrase="correct horse").transaction() as tx:
        tx.local_identity()


def test_scrypt_floor_on_creation(tmp_path: Path) -> None:
    """A store cannot be created from a passphrase with scrypt costs below the floor."""
    from e2e.errors import WeakKdfParameters
    from e2e.store import atrest

    previous = atrest._set_scrypt_floor(atrest.SCRYPT_MIN_N)
    try:
        for n in (2**10, 2**14, atrest.SCRYPT_MIN_N // 2):
            with pytest.raises(WeakKdfParameters) as e:
                SqliteStore(tmp_path / "weak.db", passphrase="pw", scrypt_n=n)
            assert e.value.record == "meta/kdf"
        with pytest.raises(WeakKdfParameters):
            atrest.KdfParams.generate(atrest.SCRYPT_MIN_N, r=4)
        assert atrest.KdfParams.generate().n >= atrest.SCRYPT_MIN_N
    finally:
        atrest._set_scrypt_floor(previous)
    conn = sqlite3.connect(tmp_path / "weak.db")  # nothing was kept from the refused creations
    assert conn.execute("SELECT count(*) FROM records WHERE id = 'kdf'").fetchone()[0] == 0
    conn.close()


def test_sqlite_open_errors(tmp_path: Path) -> None:
    key = StorageKey.generate()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SqliteStore(junk, key)
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "x.db", key, passphrase="both")
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "x.db")
    store = SqliteStore(tmp_path / "p.db", passphrase="pw", scrypt_n=2**10)
    store.close()
    conn = sqlite3.connect(tmp_path / "p.db")
    conn.execute("UPDATE records SET value = x'00' WHERE kind = 'meta' AND id = 'kdf'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as e:
        SqliteStore(tmp_path / "p.db", passphrase="pw")
    assert e.value.record == "meta/kdf"


def test_sqlite_durability_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "d.db", StorageKey.generate())
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    store.close()
    conn = sqlite3.connect(tmp_path / "d.db")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError) as e:
        SqliteStore(tmp_path / "d.db", StorageKey.generate())
    assert e.value.record == "sqlite"


def test_sqlite_file_holds_no_secret(tmp_path: Path) -> None:
    a = SqliteStore(tmp_path / "a.db", StorageKey.generate())
    b = SqliteStore(tmp_path / "b.db", StorageKey.generate())
    pair_up(a, b, PQ)
    with a.transaction() as tx:
        s = tx.load_session(BOB)
        ident = tx.local_identity()
    assert s is not None
    a.close()
    data = b"".join(p.read_bytes() for p in tmp_path.glob("a.db*"))
    for secret in (s.ratchet.rk, s.ratchet.dhs.private_bytes(), ident.private_bytes(), b"hello"):
        assert secret not in data
    assert isinstance(Session.from_bytes(s.to_bytes()), Session)


# -- the sealing itself --------------------------------------------------------------------


def test_record_sealing() -> None:
    key = StorageKey(bytes(range(32)))
    sealed = key.seal("session", "bob|1", b"state")
    assert len(sealed) == len(b"state") + RECORD_OVERHEAD and sealed[0] == 2
    assert key.open("session", "bob|1", sealed) == b"state"
    v7 = key.seal("session", "bob|1", b"state", 7)
    assert key.open_versioned("session", "bob|1", v7) == (7, b"state")
    assert record_header("session", "bob|1", v7) == (7, v7[9:25])
    for forged in (v7[:8] + b"\x08" + v7[9:], v7[:1] + b"\x01" + v7[2:]):  # version in the AD
        with pytest.raises(StoreError):
            key.open("session", "bob|1", forged)
    assert key.open("session", "bob|1", memoryview(sealed)) == b"state"
    assert key.seal("session", "bob|1", b"state") != sealed  # a fresh salt each time
    for kind, rid in [("session", "bob|2"), ("archive", "bob|1"), ("sessio", "nbob|1")]:
        with pytest.raises(StoreError) as e:
            key.open(kind, rid, sealed)
        assert e.value.record == f"{kind}/{rid}"
    with pytest.raises(StoreError):
        StorageKey(bytes(31)).open("a", "b", sealed)
    with pytest.raises(StoreError):
        StorageKey(bytes(32)).open("session", "bob|1", sealed)
    assert record_ad("ab", "c") != record_ad("a", "bc")
    assert record_ad("s", "x", 1) != record_ad("s", "x", 2)
    assert record_ad("s", "x", 0, 1) != record_ad("s", "x", 0, 2)
    with pytest.raises(StoreError):
        record_ad("s", "x" * 70000)


def test_kdf_params() -> None:
    p = KdfParams.generate(2**10)
    assert KdfParams.from_bytes(p.to_bytes()) == p
    for bad in [b"", p.to_bytes()[:-1], b"\x02" + p.to_bytes()[1:]]:
        with pytest.raises(StoreError):
            KdfParams.from_bytes(bad)
    for n, r in ((3, 8), (2**21, 8), (2**20, 16)):
        with pytest.raises(StoreError):
            KdfParams.from_bytes(KdfParams(p.salt, n, r).to_bytes())
    assert KdfParams.from_bytes(KdfParams(p.salt, 2**20, 8).to_bytes()).n == 2**20
    k1 = StorageKey.from_passphrase("pw", p)
    assert k1.same_as(StorageKey.from_passphrase(b"pw", p))
    assert not k1.same_as(StorageKey.from_passphrase("pw2", p))
    with pytest.raises(StoreError):
        StorageKey.from_passphrase("", p)
