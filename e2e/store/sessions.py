"""Session records of a key store (SPEC.md §9.1): the current session of each address, its
skipped message keys as records of their own beside it, and the archive of older sessions.

A mixin of :class:`~e2e.store._core.BaseTransaction`, over its sealed-record operations
(``_read_v``, ``_read_all``, ``_write``, ``_remove``, ``_lock``, ``_ids``); the record formats
are listed in :mod:`e2e.store._core`.
"""

from __future__ import annotations

import itertools
import struct
from typing import Final

from e2e.constants import MAX_STORED_SKIPPED
from e2e.errors import E2EError, StoreError
from e2e.ratchet import Ratchet
from e2e.session import Session
from e2e.store.freshness import Freshness
from e2e.store.interface import MAX_ARCHIVED_SESSIONS, Address

__all__ = ["SKIPPED_PER_RECORD", "SessionRecords", "mark_restored"]

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
#: Skipped message keys per ``skip`` record (SPEC.md §9.1).
SKIPPED_PER_RECORD: Final = 64
#: Per session: (sequence number of each skipped key, keys of each skip record).
_SkipSeen = dict[str, tuple[dict[tuple[bytes, int], int], dict[int, list[tuple[bytes, int]]]]]


def mark_restored(session: Session) -> Session:
    """Make ``session`` refuse to send until a fresh DH ratchet step (SPEC.md §6.5)."""
    session.require_ratchet_step()
    return session


class SessionRecords:
    """Sessions, skipped keys and archives over a transaction's sealed records."""

    _fresh: Freshness
    _skip_seen: _SkipSeen

    # -- the sealed-record operations of the transaction (BaseTransaction) ---------------------

    def _lock(self, kind: str, record_id: str) -> None:
        raise NotImplementedError

    def _read_v(self, kind: str, record_id: str) -> tuple[int | None, bytes | None]:
        raise NotImplementedError

    def _read_all(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _write(self, kind: str, record_id: str, plaintext: bytes) -> None:
        raise NotImplementedError

    def _remove(self, kind: str, record_id: str) -> None:
        raise NotImplementedError

    def _ids(self, kind: str, prefix: str = "") -> list[str]:
        raise NotImplementedError

    # -- sessions --------------------------------------------------------------------------

    @staticmethod
    def _session(name: str, data: bytes) -> Session:
        try:
            return Session.from_bytes(data)
        except E2EError:
            raise StoreError("session state is invalid", name) from None

    def _restored(self, version: int | None) -> bool:
        """A record written at or before the store's restore point (SPEC.md §9.7)."""
        return version is not None and version <= self._fresh.restored_at

    def _current(self, rid: str) -> Session | None:
        """The current session with its skipped keys (their own records), marked as needing
        a fresh ratchet step (SPEC.md §6.5) if it was stored before the store's restore
        point."""
        version, raw = self._read_v("session", rid)
        if raw is None:
            return None
        name = f"session/{rid}"
        session = self._session(name, raw)
        skipped = self._load_skipped(rid)
        if skipped:
            if session.ratchet.skipped:
                raise StoreError("skipped keys both in the session and beside it", name)
            session.ratchet.skipped = skipped
        if self._restored(version):
            mark_restored(session)
        return session

    def load_session(self, addr: Address) -> Session | None:
        rid = addr.record_id
        self._lock("session", rid)
        return self._current(rid)

    def save_session(self, addr: Address, session: Session) -> None:
        """Save the session row without its skipped keys, and the skipped keys as records
        of up to :data:`SKIPPED_PER_RECORD` keys (only the records that changed are written,
        so a message costs a few KiB however many keys are held; SPEC.md §9.1)."""
        rid = addr.record_id
        ratchet = session.ratchet
        self._save_skipped(rid, ratchet)
        held = ratchet.skipped
        ratchet.skipped = {}
        try:
            data = session.to_bytes()
        finally:
            ratchet.skipped = held
        self._write("session", rid, data)

    # -- skipped keys as records -----------------------------------------------------------

    def _skip_records(self, rid: str) -> list[tuple[int, bytes]]:
        """(record number, plaintext) of the skipped-key records of session ``rid``."""
        out = []
        for cid, plain in self._read_all("skip", rid + "|"):
            tail = cid[len(rid) + 1 :]
            if len(tail) == 10 and tail.isdigit() and tail.isascii():
                out.append((int(tail), plain))
        return out

    def _load_skipped(self, rid: str) -> dict[tuple[bytes, int], bytes]:
        """The skipped keys of session ``rid`` in their order (oldest first)."""
        out: dict[tuple[bytes, int], bytes] = {}
        seq_of: dict[tuple[bytes, int], int] = {}
        groups: dict[int, list[tuple[bytes, int]]] = {}
        last = -1
        for number, plain in self._skip_records(rid):  # in record-number order
            name = f"skip/{rid}|{number:010d}"
            try:
                (count,) = _U16.unpack_from(plain, 0)
                seqs = struct.unpack_from(f">{count}Q", plain, 2)
                keys = Ratchet.skipped_from_bytes(plain[2 + 8 * count :])
            except (struct.error, E2EError):
                raise StoreError("malformed record", name) from None
            lo = number * SKIPPED_PER_RECORD
            if (
                not count
                or len(keys) != count
                or seqs[0] <= last
                or not lo <= seqs[0] <= seqs[-1] < lo + SKIPPED_PER_RECORD
                or (count > 1 and sorted(set(seqs)) != list(seqs))
            ):
                raise StoreError("malformed record", name)
            last = seqs[-1]
            out.update(keys)
            seq_of.update(zip(keys, seqs, strict=True))
            groups[number] = list(keys)
        if len(out) != len(seq_of) or len(seq_of) != sum(len(g) for g in groups.values()):
            raise StoreError("repeated skipped key", f"skip/{rid}")
        if len(out) > MAX_STORED_SKIPPED:
            raise StoreError("too many skipped keys", f"skip/{rid}")
        self._skip_seen[rid] = (seq_of, groups)
        return out

    def _save_skipped(self, rid: str, ratchet: Ratchet) -> None:
        """Write the skip records whose keys changed since they were loaded or saved in this
        transaction. The ratchet only removes keys and appends new ones (its map keeps
        insertion order); anything else renumbers all keys."""
        if rid not in self._skip_seen:
            self._load_skipped(rid)
        seq_of, groups = self._skip_seen[rid]
        new = ratchet.skipped
        if len(new) == len(seq_of) and new.keys() == seq_of.keys():
            return  # the common case: no key used, dropped or added
        removed = seq_of.keys() - new.keys()
        added = new.keys() - seq_of.keys()
        tail = set(itertools.islice(reversed(new.keys()), len(added)))
        dirty: set[int] = set()
        if tail == added:
            seq_of = dict(seq_of)
            groups = {n: list(g) for n, g in groups.items()}
            for key in removed:
                number = seq_of.pop(key) // SKIPPED_PER_RECORD
                groups[number].remove(key)
                dirty.add(number)
            next_seq = max(seq_of.values(), default=-1) + 1
            for key in itertools.islice(new.keys(), len(new) - len(added), None):
                number = next_seq // SKIPPED_PER_RECORD
                seq_of[key] = next_seq
                groups.setdefault(number, []).append(key)
                dirty.add(number)
                next_seq += 1
        else:  # not the order the ratchet keeps: renumber every key
            dirty = set(groups)
            seq_of = {key: i for i, key in enumerate(new)}
            groups = {}
            for key, q in seq_of.items():
                groups.setdefault(q // SKIPPED_PER_RECORD, []).append(key)
            dirty |= set(groups)
        held = ratchet.skipped
        try:
            for number in sorted(dirty):
                cid = f"{rid}|{number:010d}"
                keys = groups.get(number, [])
                if not keys:
                    groups.pop(number, None)
                    self._remove("skip", cid)
                    continue
                ratchet.skipped = {k: held[k] for k in keys}
                seqs = struct.pack(f">{len(keys)}Q", *(seq_of[k] for k in keys))
                self._write("skip", cid, _U16.pack(len(keys)) + seqs + ratchet.skipped_bytes())
        finally:
            ratchet.skipped = held
        self._skip_seen[rid] = (seq_of, groups)

    def _archive(self, addr: Address) -> list[bytes]:
        rid = addr.record_id
        version, raw = self._read_v("archive", rid)
        if raw is None:
            return []
        out: list[bytes] = []
        pos = 1
        try:
            for _ in range(raw[0]):
                (size,) = _U32.unpack_from(raw, pos)
                out.append(raw[pos + 4 : pos + 4 + size])
                pos += 4 + size
                if pos > len(raw):
                    raise ValueError
        except (struct.error, IndexError, ValueError):
            raise StoreError("malformed record", f"archive/{rid}") from None
        if pos != len(raw) or len(out) > MAX_ARCHIVED_SESSIONS:
            raise StoreError("malformed record", f"archive/{rid}")
        if self._restored(version):
            name = f"archive/{rid}"
            out = [mark_restored(self._session(name, state)).to_bytes() for state in out]
        return out

    def _set_archive(self, addr: Address, states: list[bytes]) -> None:
        states = states[:MAX_ARCHIVED_SESSIONS]
        if not states:
            self._remove("archive", addr.record_id)
            return
        body = b"".join(_U32.pack(len(s)) + s for s in states)
        self._write("archive", addr.record_id, bytes([len(states)]) + body)

    def archived_sessions(self, addr: Address) -> list[Session]:
        name = f"archive/{addr.record_id}"
        return [self._session(name, s) for s in self._archive(addr)]

    def promote_session(self, addr: Address, session: Session) -> None:
        """Make ``session`` current; the current one (if any) becomes the newest archived."""
        rid = addr.record_id
        self._lock("session", rid)
        current = self._current(rid)  # refuses to archive a bad record
        if current is not None:
            self._set_archive(addr, [current.to_bytes(), *self._archive(addr)])
        self.save_session(addr, session)

    def delete_session(self, addr: Address) -> None:
        rid = addr.record_id
        self._lock("session", rid)
        self._remove("session", rid)
        self._remove("archive", rid)
        for number, _ in self._skip_records(rid):
            self._remove("skip", f"{rid}|{number:010d}")
        self._skip_seen[rid] = ({}, {})

    def device_ids(self, name: str) -> list[int]:
        Address(name, 0)  # validates the name
        out = []
        for rid in self._ids("session", name + "|"):
            tail = rid[len(name) + 1 :]
            if tail.isdigit() and tail.isascii():
                out.append(int(tail))
        return sorted(out)
