"""The relay's blob store (e2e.relay.blobs, SPEC.md §10.12) on both backends: files beside a
SQLite database and tables in PostgreSQL. Uploads in several requests, offsets that must
match, one writer per blob across store instances (relay processes), bytes a crash left past
the durable offset cut off, the caps (413) and quotas (507), reading only complete blobs one
may read, grants by reference, expiry, and the key-less digest of a stored blob."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import errors
from e2e.attachment import encrypt
from e2e.relay.backends import open_blob_store
from e2e.relay.blobs import BlobLimits, BlobStore
from e2e.relay.blobs.fs import FilesystemBlobStore

ALICE, SHOP, BOB = b"alice", b"shop", b"bob"
LIMITS = BlobLimits(max_blob_bytes=8 << 20, quota_bytes=12 << 20, upload_ttl=100,
                    unreferenced_ttl=200, max_age=1000)  # fmt: skip
T0 = 1_800_000_000


@pytest.fixture
def store(relay_db: str) -> Iterator[BlobStore]:
    s = open_blob_store(relay_db, LIMITS)
    try:
        yield s
    finally:
        s.close()


def upload(store: BlobStore, owner: bytes, data: bytes, pieces: int = 3, now: int = T0) -> bytes:
    blob_id = store.create(owner, len(data), now)
    step = -(-len(data) // pieces)
    for at in range(0, len(data), step):
        with store.writer(blob_id, owner, at) as w:
            w.write(data[at : at + step])
            assert w.close(now) == min(at + step, len(data))
    return blob_id


def read_all(store: BlobStore, blob_id: bytes, account: bytes, start: int = 0) -> bytes:
    return b"".join(store.read(store.readable(blob_id, account), start))


def test_upload_in_requests_and_read_ranges(store: BlobStore) -> None:
    data = os.urandom(3 << 20 | 12345)
    blob_id = upload(store, ALICE, data, pieces=5)
    info = store.status(blob_id, ALICE)
    assert info.complete and info.offset == info.length == len(data)
    assert read_all(store, blob_id, ALICE) == data
    assert read_all(store, blob_id, ALICE, 1_500_001) == data[1_500_001:]
    assert b"".join(store.read(info, 10, 2_000_000)) == data[10:2_000_000]
    assert b"".join(store.read(info, len(data))) == b""
    with pytest.raises(errors.DecodeError):
        list(store.read(info, len(data) + 1))


def test_an_upload_is_written_in_order(store: BlobStore) -> None:
    blob_id = store.create(ALICE, 1000, T0)
    with pytest.raises(errors.OffsetConflict):
        store.writer(blob_id, ALICE, 10)
    w = store.writer(blob_id, ALICE, 0)
    with pytest.raises(errors.OffsetConflict):  # one writer at a time
        store.writer(blob_id, ALICE, 0)
    w.write(b"a" * 400)
    assert w.sync(T0) == 400
    w.write(b"b" * 100)
    w.close(T0)
    assert store.status(blob_id, ALICE).offset == 500
    with store.writer(blob_id, ALICE, 500) as w2:
        w2.write(b"c" * 500)
        w2.close(T0)
    with pytest.raises(errors.OffsetConflict):  # complete
        store.writer(blob_id, ALICE, 1000)
    assert read_all(store, blob_id, ALICE) == b"a" * 400 + b"b" * 100 + b"c" * 500


def test_one_writer_per_blob_across_relay_processes(relay_db: str) -> None:
    a, b = open_blob_store(relay_db, LIMITS), open_blob_store(relay_db, LIMITS)
    try:
        blob_id = a.create(ALICE, 100, T0)
        w = a.writer(blob_id, ALICE, 0)
        with pytest.raises(errors.OffsetConflict):
            b.writer(blob_id, ALICE, 0)
        w.write(b"x" * 60)
        w.close(T0)
        with pytest.raises(errors.OffsetConflict):  # the other process sees the new offset
            b.writer(blob_id, ALICE, 0)
        with b.writer(blob_id, ALICE, 60) as w2:
            w2.write(b"y" * 40)
            w2.close(T0)
        assert read_all(a, blob_id, ALICE) == b"x" * 60 + b"y" * 40
    finally:
        a.close()
        b.close()


def test_bytes_not_synced_are_not_kept(store: BlobStore) -> None:
    """A request that dies before its sync (a crash) leaves the durable offset where it was,
    and the next writer cuts whatever it left past it."""
    blob_id = store.create(ALICE, 300, T0)
    w = store.writer(blob_id, ALICE, 0)
    w.write(b"a" * 100)
    w.sync(T0)
    w.write(b"garbage" * 10)
    w._release()  # dies: no sync, no record
    if isinstance(store, FilesystemBlobStore):  # the garbage did reach the file
        assert store.path(blob_id).stat().st_size == 170
    assert store.status(blob_id, ALICE).offset == 100
    with store.writer(blob_id, ALICE, 100) as w2:
        w2.write(b"b" * 200)
        w2.close(T0)
    assert read_all(store, blob_id, ALICE) == b"a" * 100 + b"b" * 200


def test_the_cap_and_the_quota(store: BlobStore) -> None:
    with pytest.raises(errors.BlobTooLarge):
        store.create(ALICE, (8 << 20) + 1, T0)
    first = store.create(ALICE, 8 << 20, T0)
    with pytest.raises(errors.QuotaExceeded):  # 8 + 5 > 12 MiB, reserved at creation
        store.create(ALICE, 5 << 20, T0)
    store.create(SHOP, 8 << 20, T0)  # another account's quota
    second = store.create(ALICE, 4 << 20, T0)
    with pytest.raises(errors.QuotaExceeded):
        store.create(ALICE, 1, T0)
    assert store.usage(ALICE) == 12 << 20
    # bytes past the declared length
    with store.writer(second, ALICE, 0) as w:
        with pytest.raises(errors.BlobTooLarge):
            w.write(bytes((4 << 20) + 1))
        w.write(bytes(4 << 20))
        w.close(T0)
    assert store.status(second, ALICE).complete and store.status(first, ALICE).offset == 0


def test_a_deferred_length(store: BlobStore) -> None:
    blob_id = store.create(BOB, None, T0)
    with store.writer(blob_id, BOB, 0) as w:
        w.write(b"z" * 5000)
        w.close(T0)
    assert store.usage(BOB) == 5000 and not store.status(blob_id, BOB).complete
    with store.writer(blob_id, BOB, 5000) as w:
        with pytest.raises(errors.DecodeError):
            w.set_length(4999)
        w.write(b"z" * 1000)
        w.set_length(6000)
        w.close(T0)
    info = store.status(blob_id, BOB)
    assert info.complete and info.length == 6000
    big = store.create(BOB, None, T0)
    with store.writer(big, BOB, 0) as w:
        w.write(bytes(8 << 20))
        with pytest.raises(errors.BlobTooLarge):
            w.write(b"!")
        with pytest.raises(errors.BlobTooLarge):
            w.set_length((8 << 20) + 1)
        w.close(T0)
    quota = store.create(BOB, None, T0)
    with store.writer(quota, BOB, 0) as w:
        with pytest.raises(errors.QuotaExceeded):  # 6000 + 8 MiB held by the other two
            w.write(bytes(4 << 20))


def test_who_may_read(store: BlobStore) -> None:
    data = b"ciphertext" * 100
    blob_id = upload(store, ALICE, data)
    unfinished = store.create(ALICE, 100, T0)
    for account, blob in ((SHOP, blob_id), (ALICE, unfinished), (ALICE, os.urandom(16))):
        with pytest.raises(errors.NoSuchBlob):
            store.readable(blob, account)
    with pytest.raises(errors.NoSuchBlob):  # an upload is its owner's only
        store.status(blob_id, SHOP)
    with pytest.raises(errors.DecodeError):
        store.readable(b"short", ALICE)
    # a message from alice to the shop references it: the shop may read it
    store.reference([blob_id], ALICE, [SHOP], T0)
    assert read_all(store, blob_id, SHOP) == data
    with pytest.raises(errors.NoSuchBlob):
        store.readable(blob_id, BOB)
    # the shop forwards it to bob; bob cannot reference what he may not read
    store.reference([blob_id], SHOP, [BOB], T0)
    assert read_all(store, blob_id, BOB) == data
    with pytest.raises(errors.NoSuchBlob):
        store.reference([blob_id, unfinished], ALICE, [BOB], T0)
    other = upload(store, SHOP, b"other")
    with pytest.raises(errors.NoSuchBlob):  # all or nothing
        store.reference([other, os.urandom(16)], SHOP, [ALICE], T0)
    with pytest.raises(errors.NoSuchBlob):
        store.readable(other, ALICE)


def _parts_or_file(store: BlobStore, blob_id: bytes) -> bool:
    if isinstance(store, FilesystemBlobStore):
        return store.path(blob_id).exists()
    rows = store._query("SELECT count(*) FROM relay_blob_parts WHERE blob_id = ?", (blob_id,))
    return bool(rows[0][0])


def test_expiry(store: BlobStore) -> None:
    stale_upload = store.create(ALICE, 100, T0)
    with store.writer(stale_upload, ALICE, 0) as w:
        w.write(b"x" * 10)
        w.close(T0)
    unreferenced = upload(store, ALICE, b"u" * 100, now=T0)
    referenced = upload(store, ALICE, b"r" * 100, now=T0)
    store.reference([referenced], ALICE, [SHOP], T0 + 50)
    assert _parts_or_file(store, stale_upload) and _parts_or_file(store, unreferenced)
    assert store.expire(T0 + 100) == 0
    assert store.expire(T0 + 101) == 1  # the upload unfinished for 100 s
    with pytest.raises(errors.NoSuchBlob):
        store.status(stale_upload, ALICE)
    assert not _parts_or_file(store, stale_upload)
    assert store.expire(T0 + 201) == 1  # complete, never referenced for 200 s
    assert read_all(store, referenced, SHOP) == b"r" * 100
    assert store.expire(T0 + 1001) == 1  # any blob after max_age
    with pytest.raises(errors.NoSuchBlob):
        store.readable(referenced, SHOP)
    assert not _parts_or_file(store, referenced) and store.usage(ALICE) == 0


def test_the_digest_of_a_stored_blob(store: BlobStore) -> None:
    blob, _key, digest = encrypt(os.urandom(700_000))
    blob_id = upload(store, ALICE, blob, pieces=4)
    assert store.digest(store.readable(blob_id, ALICE)) == digest


def test_files_are_private(tmp_path: Path) -> None:
    store = FilesystemBlobStore(str(tmp_path / "relay.db.blobs"), LIMITS)
    try:
        blob_id = upload(store, ALICE, b"x" * 10)
        path = store.path(blob_id)
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "relay.db.blobs").stat().st_mode & 0o777 == 0o700
    finally:
        store.close()


@pytest.mark.parametrize("relay_db", ["pg"], indirect=True)
def test_postgres_blob_connections_have_tcp_timeouts(store: BlobStore) -> None:
    """A database that silently stops answering must fail a blob request, not hold it: the
    blob store's connections carry the relay store's keepalives, ``tcp_user_timeout`` and
    ``connect_timeout`` (SPEC §10.8), as the server sees them."""
    from psycopg.conninfo import conninfo_to_dict

    from e2e.relay.blobs.postgres import PostgresBlobStore
    from e2e.relay.pglink import CONNECTION_DEFAULTS

    assert isinstance(store, PostgresBlobStore)
    with store.pool.connection() as conn:
        used = conninfo_to_dict(conn.info.dsn)
    for key, value in CONNECTION_DEFAULTS.items():
        assert str(used.get(key)) == value, (key, used.get(key))
