"""libsignal session records in an :mod:`e2e.store` (SPEC.md §15.6).

A :class:`~e2e.libsignal.session.SessionRecord` (its Double Ratchet and SPQR states alike)
is kept as one application record, ``libsignal/session/<name>|<device>``, sealed at rest
like every store record. The helpers follow the store's ordering rule:
:func:`encrypt_and_store` commits the advanced record before the message exists outside the
transaction; :func:`decrypt_and_store` loads, decrypts and saves in one transaction, so a
rejected message (an exception) rolls everything back. A record the store cannot prove
fresh (written at or before a restore it accepted, SPEC.md §9.7) is loaded marked restored:
it does not send until a received message has made a DH ratchet step (§6.5).
"""

from __future__ import annotations

from e2e.errors import StateError, StoreError
from e2e.libsignal.session import Decrypted, SessionRecord
from e2e.store import Address, Store, StoreTransaction

__all__ = ["record_key", "load_record", "save_record", "encrypt_and_store", "decrypt_and_store"]

_PREFIX = "libsignal/session/"


def record_key(addr: Address) -> str:
    """The application-record key of ``addr``'s libsignal session record."""
    return _PREFIX + addr.record_id


def load_record(tx: StoreTransaction, addr: Address) -> SessionRecord:
    """``addr``'s record (marked restored if the store cannot prove it fresh), or a new
    empty one; :class:`StoreError` if it cannot be read."""
    raw, fresh = tx.app_get_fresh(record_key(addr))
    if raw is None:
        return SessionRecord()
    try:
        return SessionRecord.from_bytes(raw, fresh=fresh)
    except StateError:
        raise StoreError("libsignal session record is malformed", record_key(addr)) from None


def save_record(tx: StoreTransaction, addr: Address, record: SessionRecord) -> None:
    tx.app_put(record_key(addr), record.to_bytes())


def encrypt_and_store(store: Store, addr: Address, plaintext: bytes) -> tuple[int, bytes]:
    """Encrypt for ``addr``; the advanced record is committed before the message is returned."""
    with store.transaction() as tx:
        record = load_record(tx, addr)
        out = record.encrypt(plaintext)
        save_record(tx, addr, record)
    return out


def decrypt_and_store(
    store: Store, addr: Address, message_type: int, data: bytes, **kwargs: object
) -> Decrypted:
    """Decrypt from ``addr`` (``kwargs`` as :meth:`SessionRecord.decrypt`) and save, atomically."""
    with store.transaction() as tx:
        record = load_record(tx, addr)
        out = record.decrypt(message_type, data, **kwargs)  # type: ignore[arg-type]
        save_record(tx, addr, record)
    return out
