"""The relay's blob store: attachment ciphertexts, uploaded resumably (SPEC.md §10.12).

A blob is bytes the relay cannot read (an attachment's ciphertext, §16), owned by the
account whose device created its upload. The store keeps, per blob, its owner, its declared
length (or none yet: told with the last bytes), the offset up to which its bytes are durable,
and when it was created, last written, completed and last referenced by a message; and who
else may read it (the recipients of a message that referenced it).

Rules every backend follows (:class:`BlobStore` holds them; a backend stores bytes and rows):

* **Caps.** A blob longer than ``max_blob_bytes`` is refused (:class:`BlobTooLarge`, 413),
  and an account's blobs together may not exceed ``quota_bytes`` (:class:`QuotaExceeded`,
  507): a declared length counts in full from the upload's creation, a deferred one as its
  bytes arrive.
* **Offsets.** Bytes are written in order: a write for another offset than the durable one,
  or while another writer holds the blob, is an :class:`OffsetConflict` (409). The durable
  offset moves only after the bytes are synced; bytes past it (a crash mid-write) are cut
  off when the blob is next written.
* **Reading.** Only a complete blob is read, by its owner or an account a message granted it
  to; anything else is :class:`NoSuchBlob` (404), the same answer as for an id that never
  existed. There is no listing.
* **Expiry.** An upload unfinished ``upload_ttl`` after its last write, a complete blob that
  no message referenced ``unreferenced_ttl`` after it completed, and any blob ``max_age``
  after its creation are deleted, rows and bytes.

:func:`e2e.relay.backends.open_blob_store` picks the backend: files in a directory beside a
SQLite relay database (:mod:`e2e.relay.blobs.fs`), or tables in the relay's PostgreSQL
database (:mod:`e2e.relay.blobs.postgres`).
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from e2e.attachment import BlobDigest
from e2e.errors import (
    BlobTooLarge,
    DecodeError,
    NoSuchBlob,
    OffsetConflict,
    QuotaExceeded,
)

__all__ = [
    "BLOB_ID_LEN",
    "BlobLimits",
    "BlobInfo",
    "BlobStore",
    "BlobWriter",
]

T = TypeVar("T")
#: Runs one statement in the current transaction and returns its rows.
Exec = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

#: Blob ids are 16 random bytes.
BLOB_ID_LEN: Final = 16
#: Bytes per piece a reader yields and per part row a database backend stores.
PIECE: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class BlobLimits:
    """The store's caps and lifetimes (seconds)."""

    max_blob_bytes: int = 1 << 30
    quota_bytes: int = 5 << 30
    upload_ttl: int = 24 * 3600
    unreferenced_ttl: int = 24 * 3600
    max_age: int = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One blob's row."""

    blob_id: bytes
    owner: bytes
    length: int | None
    offset: int
    created: int
    touched: int
    completed: int | None
    referenced: int | None

    @property
    def complete(self) -> bool:
        return self.completed is not None


def check_blob_id(value: object) -> bytes:
    if type(value) is not bytes or len(value) != BLOB_ID_LEN:
        raise DecodeError("a blob id is 16 bytes")
    return value


#: The metadata tables, in the SQL both backends speak ("?" placeholders; the PostgreSQL
#: backend rewrites them). ``{bytes}`` is the byte-string type.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS relay_blobs (
    id {bytes} PRIMARY KEY,
    owner {bytes} NOT NULL,
    length BIGINT,
    durable BIGINT NOT NULL,
    created BIGINT NOT NULL,
    touched BIGINT NOT NULL,
    completed BIGINT,
    referenced BIGINT
);
CREATE INDEX IF NOT EXISTS relay_blobs_owner ON relay_blobs (owner);
CREATE TABLE IF NOT EXISTS relay_blob_grants (
    blob_id {bytes} NOT NULL,
    account {bytes} NOT NULL,
    PRIMARY KEY (blob_id, account)
)
"""


class BlobWriter(ABC):
    """Writes one upload request's bytes at the blob's durable offset, holding the blob
    against other writers until :meth:`close`."""

    def __init__(self, store: BlobStore, info: BlobInfo, most: int) -> None:
        self.store = store
        self.info = info
        #: The durable offset.
        self.offset = info.offset
        #: Bytes written since the last sync.
        self.unsynced = 0
        self.length = info.length
        #: Most bytes the blob may grow to (its length, the cap, the owner's quota).
        cap = info.length if info.length is not None else store.limits.max_blob_bytes
        self._limit = min(cap, most)

    def set_length(self, length: int) -> None:
        """The length of a deferred upload, told with its last bytes."""
        if type(length) is not int or length < self.offset + self.unsynced:
            raise DecodeError("a length shorter than the bytes already sent")
        if self.length is not None:
            if length != self.length:
                raise DecodeError("a length other than the one declared")
            return
        if length > self.store.limits.max_blob_bytes:
            raise BlobTooLarge("blob larger than the store's cap")
        if length > self._limit:
            raise QuotaExceeded("the account's storage quota is used up")
        self.length = length
        self._limit = length

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (not durable until :meth:`sync`)."""
        end = self.offset + self.unsynced + len(data)
        if end > self._limit:
            if self.length is not None and end > self.length:
                raise BlobTooLarge("bytes past the blob's length")
            if end > self.store.limits.max_blob_bytes:
                raise BlobTooLarge("blob larger than the store's cap")
            raise QuotaExceeded("the account's storage quota is used up")
        if data:
            self._write(data)
            self.unsynced += len(data)

    def sync(self, now: int) -> int:
        """Make the bytes written so far durable, then record the new offset (and the
        blob's completion, when its last byte is in); returns the durable offset."""
        if self.unsynced or (self.length is not None and self.length != self.info.length):
            self._sync()
            self.offset += self.unsynced
            self.unsynced = 0
            completed = now if self.length is not None and self.offset == self.length else None
            self._record(self.offset, self.length, now, completed)
        return self.offset

    def close(self, now: int) -> int:
        """Sync, then release the blob. Returns the durable offset."""
        try:
            return self.sync(now)
        finally:
            self._release()

    @abstractmethod
    def _start(self) -> None:
        """Once the blob is held: drop any bytes past the durable offset (a crash mid-write)."""

    @abstractmethod
    def _write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def _sync(self) -> None: ...

    @abstractmethod
    def _record(self, offset: int, length: int | None, now: int, completed: int | None) -> None:
        """Record the durable offset (with the length and completion time) in the row."""

    @abstractmethod
    def _release(self) -> None: ...

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


class BlobStore(ABC):
    """The rules of SPEC.md §10.12 over a backend's rows and bytes. Methods are synchronous
    (the relay calls them on its worker threads) and take the time ``now`` in Unix seconds."""

    limits: BlobLimits

    # -- backend primitives ---------------------------------------------------------------

    @abstractmethod
    def _transaction(self, fn: Callable[[Exec], T], lock: bytes = b"") -> T:
        """Run ``fn(execute)`` in one transaction (committed if it returns), serialized with
        every other transaction that names the same ``lock`` (an owner: its quota)."""

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._transaction(lambda execute: execute(sql, params))

    @abstractmethod
    def _open_writer(self, info: BlobInfo, most: int) -> BlobWriter:
        """A writer holding the blob against every other writer, in any process
        (:class:`OffsetConflict` if one holds it); its ``_start`` runs once the row is
        checked again."""

    @abstractmethod
    def _read(self, info: BlobInfo, start: int, end: int) -> Iterator[bytes]: ...

    @abstractmethod
    def _delete_bytes(self, blob_ids: Sequence[bytes]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- the rules ------------------------------------------------------------------------

    def _row(self, blob_id: bytes) -> BlobInfo | None:
        rows = self._query(
            "SELECT id, owner, length, durable, created, touched, completed, referenced"
            " FROM relay_blobs WHERE id = ?",
            (blob_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return BlobInfo(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])

    def _usage(self, execute: Exec, owner: bytes) -> int:
        rows = execute(
            "SELECT COALESCE(SUM(COALESCE(length, durable)), 0) FROM relay_blobs WHERE owner = ?",
            (owner,),
        )
        return int(rows[0][0])

    def usage(self, owner: bytes) -> int:
        """Bytes the owner's blobs take: declared lengths in full, deferred ones as written."""
        return self._transaction(lambda execute: self._usage(execute, owner))

    def create(self, owner: bytes, length: int | None, now: int) -> bytes:
        """Open an upload of ``length`` bytes (None: told with the last bytes); its id."""
        if length is not None:
            if type(length) is not int or length < 1:
                raise DecodeError("a blob length is a positive integer")
            if length > self.limits.max_blob_bytes:
                raise BlobTooLarge("blob larger than the store's cap")
        blob_id = os.urandom(BLOB_ID_LEN)
        self._create(owner, blob_id, length, now)
        return blob_id

    def _create(self, owner: bytes, blob_id: bytes, length: int | None, now: int) -> None:
        """Insert the row if the owner's quota allows it, in one transaction with the usage it
        reads (serialized per owner)."""

        def create(execute: Exec) -> None:
            if self._usage(execute, owner) + (length or 0) > self.limits.quota_bytes:
                raise QuotaExceeded("the account's storage quota is used up")
            execute(
                "INSERT INTO relay_blobs (id, owner, length, durable, created, touched)"
                " VALUES (?, ?, ?, 0, ?, ?)",
                (blob_id, owner, length, now, now),
            )

        self._transaction(create, lock=owner)

    def status(self, blob_id: bytes, owner: bytes) -> BlobInfo:
        """An upload's row, for its owner only (else NoSuchBlob)."""
        info = self._row(check_blob_id(blob_id))
        if info is None or info.owner != owner:
            raise NoSuchBlob("no such blob")
        return info

    def writer(self, blob_id: bytes, owner: bytes, offset: int) -> BlobWriter:
        """A writer of the owner's upload at ``offset``, which must be its durable offset
        (else OffsetConflict: ask again); held until closed."""
        info = self.status(blob_id, owner)
        if info.complete:
            raise OffsetConflict("the blob is complete")
        if offset != info.offset:
            raise OffsetConflict(f"the blob's offset is {info.offset}")
        # the most this blob may hold: the quota less the owner's other blobs
        most = self.limits.quota_bytes - self.usage(owner) + (info.length or info.offset)
        w = self._open_writer(info, most)
        try:
            # another writer may have moved the blob before ours held it
            again = self._row(blob_id)
            if again is None or again.offset != offset or again.complete:
                raise OffsetConflict("the blob moved")
            w._start()
        except BaseException:
            w._release()
            raise
        return w

    def may_read(self, info: BlobInfo, account: bytes) -> bool:
        if info.owner == account:
            return True
        rows = self._query(
            "SELECT 1 FROM relay_blob_grants WHERE blob_id = ? AND account = ?",
            (info.blob_id, account),
        )
        return bool(rows)

    def readable(self, blob_id: bytes, account: bytes) -> BlobInfo:
        """A complete blob ``account`` may read (else NoSuchBlob)."""
        info = self._row(check_blob_id(blob_id))
        if info is None or not info.complete or not self.may_read(info, account):
            raise NoSuchBlob("no such blob")
        return info

    def read(self, info: BlobInfo, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of a readable blob, a piece at a time."""
        size = info.offset
        stop = size if end is None else min(end, size)
        if not 0 <= start <= stop:
            raise DecodeError("a range outside the blob")
        return self._read(info, start, stop)

    def reference(
        self, blob_ids: Sequence[bytes], sender: bytes, recipients: Sequence[bytes], now: int
    ) -> None:
        """A message from ``sender`` to ``recipients`` references the blobs: each must be
        complete and readable by the sender (NoSuchBlob, and nothing changes, otherwise); they
        become referenced and readable by the recipients."""
        for blob_id in blob_ids:
            self.readable(blob_id, sender)

        def mark(execute: Exec) -> None:
            for blob_id in blob_ids:
                execute("UPDATE relay_blobs SET referenced = ? WHERE id = ?", (now, blob_id))
                for account in recipients:
                    execute(
                        "INSERT INTO relay_blob_grants (blob_id, account) VALUES (?, ?)"
                        " ON CONFLICT DO NOTHING",
                        (blob_id, account),
                    )

        self._transaction(mark)

    def digest(self, info: BlobInfo) -> bytes:
        """The digest of a stored blob (SPEC.md §16.4), computed without its key."""
        d = BlobDigest()
        for piece in self._read(info, 0, info.offset):
            d.update(piece)
        return d.finish()[0]

    def expire(self, now: int) -> int:
        """Delete what SPEC.md §10.12's lifetimes end; the number of blobs deleted."""
        lim = self.limits
        rows = self._query(
            "SELECT id FROM relay_blobs WHERE (completed IS NULL AND touched < ?)"
            " OR (completed IS NOT NULL AND referenced IS NULL AND completed < ?)"
            " OR created < ?",
            (now - lim.upload_ttl, now - lim.unreferenced_ttl, now - lim.max_age),
        )
        return self._delete([bytes(r[0]) for r in rows])

    def forget(self, owner: bytes) -> int:
        """A deleted account (SPEC.md §10.1): every blob it uploaded goes, and every grant
        it held; the number of blobs deleted."""
        ids = [bytes(r[0]) for r in self._query("SELECT id FROM relay_blobs WHERE owner = ?",
                                                (owner,))]  # fmt: skip
        self._transaction(
            lambda execute: execute("DELETE FROM relay_blob_grants WHERE account = ?", (owner,))
        )
        return self._delete(ids)

    def _delete(self, ids: list[bytes]) -> int:
        for at in range(0, len(ids), 500):
            batch = ids[at : at + 500]
            self._transaction(functools.partial(_delete_rows, blob_ids=batch))
            self._delete_bytes(batch)
        return len(ids)


def _delete_rows(execute: Exec, *, blob_ids: Sequence[bytes]) -> None:
    for blob_id in blob_ids:
        execute("DELETE FROM relay_blob_grants WHERE blob_id = ?", (blob_id,))
        execute("DELETE FROM relay_blobs WHERE id = ?", (blob_id,))
