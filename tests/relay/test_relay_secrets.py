"""The relay's own secrets at rest (franking keys, the key-log key): sealed under the relay
secret key, so the database alone does not reveal them; bound to their row; and the same keys
come back after a restart with that key, and none without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.errors import StoreError
from e2e.relay.secrets import SecretSealer
from e2e.relay.service import RelayService
from e2e.relay.sqlite import SqliteRelayStore


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def _stored(path: Path) -> tuple[list[bytes], bytes]:
    store = SqliteRelayStore(str(path))
    try:
        rows = store.read(lambda tx: tx.fetchall("SELECT secret FROM franking_keys"))
        log = store.read(lambda tx: tx.fetchone("SELECT secret FROM log_keys WHERE id = 1"))
    finally:
        store.close()
    assert log is not None
    return [bytes(r[0]) for r in rows], bytes(log[0])


def _open(path: Path, key: bytes | None) -> tuple[bytes, bytes]:
    """(current franking key, log public key) of a relay opened on the file."""
    service = RelayService(SqliteRelayStore(str(path)), secret_key=key)
    try:
        return service._current_key(), service.log_public_key
    finally:
        service.store.close()


def test_sealer_binds_kind_and_id_and_refuses_other_keys() -> None:
    key, secret = os.urandom(32), os.urandom(32)
    sealer = SecretSealer(key)
    sealed = sealer.seal(b"franking", 7, secret)
    assert len(sealed) == 61 and secret not in sealed
    assert sealer.open(b"franking", 7, sealed) == secret
    for kind, ident in ((b"franking", 8), (b"log", 7)):  # moved to another row
        with pytest.raises(StoreError):
            sealer.open(kind, ident, sealed)
    with pytest.raises(StoreError):
        SecretSealer(os.urandom(32)).open(b"franking", 7, sealed)
    with pytest.raises(StoreError):
        SecretSealer().open(b"franking", 7, sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(StoreError):
        sealer.open(b"franking", 7, tampered)
    with pytest.raises(StoreError):
        SecretSealer(b"short")


def test_sealed_at_rest_and_the_same_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    key = os.urandom(32)
    service = RelayService(SqliteRelayStore(str(path)), secret_key=key)
    franking, log_public = service._current_key(), service.log_public_key
    rotated = service.rotate_franking_key()
    service.store.close()

    frankings, log_stored = _stored(path)
    assert len(frankings) == 2 and all(len(s) == 61 for s in frankings) and len(log_stored) == 61
    assert franking not in _db_bytes(path)  # not in the database file nor its journal
    assert rotated == 2

    current, public = _open(path, key)
    assert public == log_public and current != franking  # the rotated key is current
    with pytest.raises(StoreError):
        _open(path, None)
    with pytest.raises(StoreError):
        _open(path, os.urandom(32))


def test_a_key_given_later_seals_what_was_stored_before(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    franking, log_public = _open(path, None)
    frankings, log_stored = _stored(path)
    assert frankings == [franking] and len(log_stored) == 32  # stored unsealed without a key
    key = os.urandom(32)
    assert _open(path, key) == (franking, log_public)
    frankings, log_stored = _stored(path)
    assert [len(s) for s in frankings] == [61] and len(log_stored) == 61
    assert franking not in _db_bytes(path)
    assert _open(path, key) == (franking, log_public)
