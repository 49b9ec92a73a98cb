"""Blobs as files, the default beside a SQLite relay database (SPEC.md §10.12).

``<dir>/index.sqlite`` holds the rows (WAL, ``synchronous=FULL``); each blob's bytes are the
file ``<dir>/<first two hex digits>/<32 hex digits>`` (mode 0600, the directories 0700). A
writer takes an exclusive ``flock`` on the file (so one writer per blob across processes),
cuts the file back to the durable offset (bytes a crash left past it), appends, and on sync
calls ``fsync`` before it records the new offset: the row never claims bytes the disk does
not hold.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from e2e.errors import OffsetConflict, StoreError
from e2e.relay.blobs import PIECE, SCHEMA, BlobInfo, BlobLimits, BlobStore, BlobWriter, Exec

__all__ = ["FilesystemBlobStore"]

T = TypeVar("T")


class FilesystemBlobStore(BlobStore):
    """Blob rows in ``<directory>/index.sqlite``, bytes in files beside it."""

    def __init__(self, directory: str, limits: BlobLimits | None = None) -> None:
        self.limits = limits or BlobLimits()
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.directory / "index.sqlite"),
                isolation_level=None,
                check_same_thread=False,
                timeout=30,
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            for stmt in SCHEMA.format(bytes="BLOB").split(";"):
                self._conn.execute(stmt)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the blob store: {type(exc).__name__}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, fn: Callable[[Exec], T], lock: bytes = b"") -> T:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return self._conn.execute(sql, params).fetchall()

        with self._lock:  # one connection; BEGIN IMMEDIATE serializes with other processes
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"blob store: {type(exc).__name__}") from None
            try:
                out = fn(execute)
                self._conn.execute("COMMIT")
                return out
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"blob store: {type(exc).__name__}") from None
                raise

    def path(self, blob_id: bytes) -> Path:
        """Where the blob's bytes live."""
        name = blob_id.hex()
        return self.directory / name[:2] / name

    def _open_writer(self, info: BlobInfo, most: int) -> BlobWriter:
        return _FileWriter(self, info, most)

    def _read(self, info: BlobInfo, start: int, end: int) -> Iterator[bytes]:
        try:
            f = open(self.path(info.blob_id), "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise StoreError(f"blob bytes missing: {type(exc).__name__}") from None
        return _pieces(f, start, end)

    def _delete_bytes(self, blob_ids: Sequence[bytes]) -> None:
        for blob_id in blob_ids:
            self.path(blob_id).unlink(missing_ok=True)


def _pieces(f: Any, start: int, end: int) -> Iterator[bytes]:
    with f:
        f.seek(start)
        at = start
        while at < end:
            piece = f.read(min(PIECE, end - at))
            if not piece:
                raise StoreError("blob file shorter than its row says")
            at += len(piece)
            yield piece


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter(BlobWriter):
    def __init__(self, store: FilesystemBlobStore, info: BlobInfo, most: int) -> None:
        super().__init__(store, info, most)
        self._store = store
        path = store.path(info.blob_id)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            new = not path.exists()
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open blob file: {type(exc).__name__}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            raise OffsetConflict("another upload request holds the blob") from None
        if new:
            _fsync_dir(path.parent)

    def _start(self) -> None:
        os.ftruncate(self._fd, self.offset)
        os.lseek(self._fd, self.offset, os.SEEK_SET)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _sync(self) -> None:
        os.fsync(self._fd)

    def _record(self, offset: int, length: int | None, now: int, completed: int | None) -> None:
        blob_id = self.info.blob_id
        self._store._transaction(
            lambda execute: execute(
                "UPDATE relay_blobs SET durable = ?, length = ?, touched = ?, completed = ?"
                " WHERE id = ?",
                (offset, length, now, completed, blob_id),
            )
        )

    def _release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing drops the flock
