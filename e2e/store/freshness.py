"""Freshness of stored state (SPEC.md §9.7): the sealed epoch and where it is kept.

Every write transaction of a store advances one counter, the *epoch*, and seals it in the
record ``meta/epoch`` together with a set accumulator: the XOR of a keyed hash of (kind, id,
version, salt) over every sealed record (:meth:`StorageKey.accumulator_entry`). Each record
carries its version (the epoch that wrote it) bound into its AD. Together they detect:

* a single row put back from an older copy: its (version, salt) term is not the one in the
  accumulator (checked when the store is opened), and a store object that has already seen a
  newer version of the row refuses the older one at once;
* a deleted row (e.g. a peer's identity, so that an attacker's key would come back as NEW):
  the accumulator still holds its term (open), and a store object that saw the row refuses
  its absence at once;
* a whole database restored from an earlier state: consistent in itself, so the epoch is
  also kept *outside* the database by an :class:`EpochKeeper`, and an epoch behind the kept
  one is a rollback.

Detection raises :class:`~e2e.errors.RollbackDetected`. An application that restored a backup
on purpose reopens the store with ``accept_restore=True``: the accumulator is recomputed, the
epoch moves past the kept one, and every session stored at that point is marked *restored*
(it must take a fresh ratchet step before it sends, SPEC.md §6.5). The same marking happens
when the keeper cannot answer (rollback cannot be proven absent).

This module holds the keeper interface, three keepers, and :class:`Freshness`, the state one
store object keeps about its store (the last epoch it saw, the versions of the records it
has read or written).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Callable
from typing import Final, Protocol

from e2e.errors import RollbackDetected, StoreError
from e2e.store.atrest import VERSION_MAX, StorageKey

__all__ = [
    "EpochKeeper",
    "FileEpochKeeper",
    "MemoryEpochKeeper",
    "NoEpochKeeper",
    "Freshness",
    "EPOCH_RECORD",
    "MAX_REMEMBERED",
]

#: (kind, id) of the sealed epoch: u64 epoch | u64 restored_at | accumulator (32).
EPOCH_RECORD: Final = ("meta", "epoch")
#: Records whose last seen version one store object remembers (oldest forgotten first).
MAX_REMEMBERED: Final = 65_536
_EPOCH = struct.Struct(">QQ32s")
_FILE_MAGIC: Final = b"e2e-epoch-v1\x00\x00\x00\x00"
_FILE = struct.Struct(">16sQ")


class EpochKeeper(Protocol):
    """Keeps the highest committed epoch of one store outside its database.

    * ``load()``: the highest epoch kept, 0 if none was kept yet, or None if this keeper
      deliberately keeps nothing (:class:`NoEpochKeeper`); raise :class:`StoreError` if it
      cannot answer (unreachable server, missing file): the store then cannot prove that it
      was not rolled back, and marks its sessions restored.
    * ``advance(epoch)``: keep ``max(kept, epoch)``. Called after each commit, before the
      transaction's result (a frame) is handed out; several processes may call it
      concurrently with epochs in any order.
    """

    def load(self) -> int | None: ...

    def advance(self, epoch: int) -> None: ...


class MemoryEpochKeeper:
    """The epoch in process memory (MemoryStore's default): share one between the
    MemoryStores that reopen the same rows."""

    def __init__(self) -> None:
        self._epoch = 0
        self._lock = threading.Lock()

    def load(self) -> int:
        return self._epoch

    def advance(self, epoch: int) -> None:
        with self._lock:
            self._epoch = max(self._epoch, epoch)


class NoEpochKeeper:
    """Keeps nothing: a whole-database rollback is not detected (row rollbacks and deleted
    records still are). PostgresStore's default: a server database is restored by its
    operator, who supplies a keeper on another service to have restores detected."""

    def load(self) -> None:
        return None

    def advance(self, epoch: int) -> None:
        pass


class FileEpochKeeper:
    """The epoch in a small file (SqliteStore's default: ``<database>-epoch`` beside it; put
    it on another volume, or use a keyring or a server, to survive an attacker who restores
    the whole directory).

    File: 16-byte magic | u64 epoch, rewritten in place under an exclusive ``flock`` so
    concurrent processes keep the maximum. With ``sync`` each advance is ``fsync``-ed; without
    it (the default) a power loss may lose the last advances, which only weakens detection of
    a rollback to those last states (the database is never behind its keeper: the keeper is
    advanced after the commit).
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        self.path = os.fspath(path)
        self._sync = sync
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open the epoch file: {exc.strerror}", "epoch") from None
        return self._fd

    def _read(self, fd: int) -> int | None:
        data = os.pread(fd, _FILE.size, 0)
        if not data:
            return None
        if len(data) != _FILE.size:
            raise StoreError("the epoch file is malformed", "epoch")
        magic, epoch = _FILE.unpack(data)
        if magic != _FILE_MAGIC or epoch > VERSION_MAX:
            raise StoreError("the epoch file is malformed", "epoch")
        return int(epoch)

    def load(self) -> int:
        """The kept epoch; :class:`StoreError` if the file is missing, empty or malformed."""
        if self._fd is None and not os.path.exists(self.path):
            raise StoreError("the epoch file is missing", "epoch")
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                epoch = self._read(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise StoreError(f"cannot read the epoch file: {exc.strerror}", "epoch") from None
        if epoch is None:
            raise StoreError("the epoch file is empty", "epoch")
        return epoch

    def advance(self, epoch: int) -> None:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                try:
                    kept = self._read(fd) or 0
                except StoreError:
                    kept = 0
                if epoch > kept:
                    os.pwrite(fd, _FILE.pack(_FILE_MAGIC, epoch), 0)
                    if self._sync:
                        os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise StoreError(f"cannot write the epoch file: {exc.strerror}", "epoch") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Freshness:
    """What one store object knows about its store's freshness: the last epoch it saw
    committed, the epoch up to which stored sessions count as restored, and the version of
    every record it read or wrote (at most :data:`MAX_REMEMBERED`; absent records too)."""

    __slots__ = ("key", "keeper", "seen", "restored_at", "_versions", "_raw", "_value")

    def __init__(self, key: StorageKey, keeper: EpochKeeper) -> None:
        self.key = key
        self.keeper = keeper
        self.seen = 0
        self.restored_at = 0
        #: (kind, id) -> (version, present, epoch this object had seen when it noted it)
        self._versions: dict[tuple[str, str], tuple[int, bool, int]] = {}
        self._raw: bytes | None = None
        self._value: tuple[int, int, int] = (0, 0, 0)

    # -- the sealed epoch --------------------------------------------------------------

    def parse_epoch(self, raw: bytes | None) -> tuple[int, int, int]:
        """(epoch, restored_at, accumulator) of the ``meta/epoch`` row (all 0 for a store
        that has none yet); :class:`RollbackDetected` if it is older than one this object
        already saw."""
        if raw is None:
            value = (0, 0, 0)
        elif raw == self._raw:
            value = self._value
        else:
            version, plain = self.key.open_versioned(*EPOCH_RECORD, raw)
            if len(plain) != _EPOCH.size:
                raise StoreError("malformed record", "meta/epoch")
            epoch, restored, acc = _EPOCH.unpack(plain)
            if epoch != version or restored > epoch:
                raise StoreError("malformed record", "meta/epoch")
            value = (epoch, restored, int.from_bytes(acc, "big"))
            self._raw, self._value = raw, value
        if value[0] < self.seen:
            raise RollbackDetected("the store's epoch went back", "meta/epoch")
        return value

    def seal_epoch(self, epoch: int, restored_at: int, acc: int) -> bytes:
        raw = self.key.seal(
            *EPOCH_RECORD, _EPOCH.pack(epoch, restored_at, acc.to_bytes(32, "big")), epoch
        )
        self._raw, self._value = raw, (epoch, restored_at, acc)
        return raw

    def kept(self) -> int | None:
        """The keeper's epoch; None if it keeps none or cannot answer."""
        try:
            return self.keeper.load()
        except StoreError:
            return None

    def committed(self, epoch: int, restored_at: int) -> None:
        self.seen = max(self.seen, epoch)
        self.restored_at = restored_at
        try:
            self.keeper.advance(epoch)
        except StoreError:
            pass  # the database is ahead of its keeper: accepted at the next open

    # -- record versions ---------------------------------------------------------------

    def check(self, kind: str, rid: str, version: int | None, epoch_now: Callable[[], int]) -> None:
        """:class:`RollbackDetected` if the row read (``version``, or None for no row) is
        older than what this object saw of it: a lower version, or a row again at or below
        the version that deleted it (no writer ever does either); or a missing row it saw,
        if no transaction has committed since (``epoch_now()``, read only then, is still the
        epoch it had seen): with a commit in between, another store object may have deleted
        it, and the row is forgotten."""
        known = self._versions.get((kind, rid))
        if known is None:
            return
        seen, present, at = known
        if version is None:
            if present:
                if epoch_now() <= at:
                    raise RollbackDetected("a stored record is missing", f"{kind}/{rid}")
                del self._versions[(kind, rid)]
        elif version < seen or (not present and version <= seen):
            raise RollbackDetected("a stored record is older than its last write", f"{kind}/{rid}")

    def note(self, kind: str, rid: str, version: int, present: bool, at: int = -1) -> None:
        """Remember a record's version (``at``: the epoch this object knows it at; default
        the last one it saw committed)."""
        versions = self._versions
        key = (kind, rid)
        if key in versions:
            del versions[key]  # re-insert: the dict's order is the order of last use
        elif len(versions) >= MAX_REMEMBERED:
            del versions[next(iter(versions))]
        versions[key] = (version, present, self.seen if at < 0 else at)
