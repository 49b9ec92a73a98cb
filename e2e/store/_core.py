"""The store logic shared by every backend, over five raw record operations (SPEC.md §9.1,
§9.2).

A backend provides a transaction class with ``_get``, ``_put``, ``_delete``, ``_scan`` and
``_lock`` on (kind, id) -> bytes rows; everything else -- sealing, record formats, trust
decisions, prekey bookkeeping -- lives here, and the session records (current session, skipped
keys, archive) in :mod:`e2e.store.sessions`, so the conformance suite tests one behaviour over
all backends.

Record plaintexts (all integers big-endian):

=========  ==========================  ==============================================
kind       id                          plaintext
=========  ==========================  ==============================================
meta       keycheck                    b"e2e-store-key-check"
meta       next_id                     u64: the next prekey id (shared by all kinds)
meta       epoch                       u64 epoch | u64 restored_at | accumulator (32)
local      identity                    secret (32) | public (32)
identity   name|device                 flags (1: bit 0 approved for sending) | key (32)
session    name|device                 Session.to_bytes() without its skipped keys
skip       name|device|NNNNNNNNNN      u16 count | count x u64 sequence number |
                                       Ratchet.skipped_bytes() of those keys, in
                                       sequence order; a key with sequence number q
                                       is in record NNNNNNNNNN = q // 64 (10 digits)
archive    name|device                 count (1) | count x (u32 length | Session bytes)
opk        decimal id                  0x00 | secret (32) | public (32), or 0x01 (used)
spk        decimal id                  created (u64) | secret | public | signature (64)
kem        decimal id                  flags (1: bit 0 last resort, bit 1 used) |
                                       created (u64) | seed (64) | signature (64)
kemuse     kem id|base key hex         empty: a last-resort KEM prekey used with it
spkuse     spk id|base key hex         empty: a session set up with this base key
app        application key             application bytes
=========  ==========================  ==============================================

The ``kdf`` row of kind ``meta`` (scrypt salt and costs) is the one row kept in clear.

Writes are buffered in the transaction (reads see them) and sealed at commit, all with the
version ``epoch + 1``, together with the new sealed epoch (:mod:`e2e.store.freshness`): the
only lock a write transaction takes on shared state is the epoch's, at its very end.
"""

from __future__ import annotations

import hmac
import struct
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Final, TypeVar

from e2e.errors import (
    DecryptError,
    DuplicateMessage,
    E2EError,
    PrekeyReused,
    RollbackDetected,
    StateError,
    StoreError,
    UnknownPrekey,
    UntrustedIdentity,
)
from e2e.frame import decode_message
from e2e.keys import KemKeyPair, KeyPair
from e2e.prekeys import KemPrekey, OneTimePrekey, PrekeyBundle, SignedPrekey
from e2e.session import Session
from e2e.store.atrest import KdfParams, StorageKey, record_header
from e2e.store.freshness import EPOCH_RECORD, EpochKeeper, Freshness
from e2e.store.interface import (
    Address,
    Dated,
    Direction,
    StoreTransaction,
    TrustResult,
)
from e2e.store.sessions import SKIPPED_PER_RECORD, SessionRecords
from e2e.suite import DEFAULT, Suite

__all__ = [
    "BaseTransaction",
    "DatabaseStore",
    "overlay",
    "record_bytes",
    "StorePrekeys",
    "KEYCHECK",
    "SKIPPED_PER_RECORD",
    "check_key",
    "open_checks",
]

KEYCHECK: Final = b"e2e-store-key-check"
_MAX_ID: Final = 2**63 - 1
_U64 = struct.Struct(">Q")
_APPROVED: Final = 1
_LAST_RESORT: Final = 1
_USED: Final = 2
_MAX_APP_KEY: Final = 1024


_V = TypeVar("_V")


def overlay(
    rows: dict[str, _V], writes: Mapping[tuple[str, str], _V | None], kind: str, prefix: str
) -> dict[str, _V]:
    """``rows`` (ids of ``kind`` starting with ``prefix``) as a transaction sees them: its
    buffered ``writes`` of that kind and prefix applied (None: deleted). Updates ``rows``."""
    for (k, i), v in writes.items():
        if k == kind and i.startswith(prefix):
            if v is None:
                rows.pop(i, None)
            else:
                rows[i] = v
    return rows


def record_bytes(value: object, kind: str, record_id: str) -> bytes:
    """A row's value as the database driver returned it, as bytes; :class:`StoreError`
    for anything else (a row a foreign writer put there)."""
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise StoreError("record value is not bytes", f"{kind}/{record_id}")
    return value


def _prekey_id(prekey_id: object) -> str:
    if type(prekey_id) is not int or not 0 <= prekey_id <= _MAX_ID:
        raise UnknownPrekey("prekey id out of range")
    return str(prekey_id)


def _check_time(created: object) -> int:
    if type(created) is not int or not 0 <= created < 2**63:
        raise StoreError("a creation time is an int of Unix seconds")
    return created


def _check_key32(key: object, what: str) -> bytes:
    if type(key) is not bytes or len(key) != 32:
        raise StoreError(f"{what} must be 32 bytes")
    return key


class BaseTransaction(SessionRecords):
    """One open transaction of a store. Backends implement the raw operations; this class
    buffers sealed-record writes and applies them, with the new epoch, in
    :meth:`_prepare_commit` (called by the backend right before COMMIT) and
    :meth:`_committed` (right after)."""

    #: True if a transaction holds the whole store (rows read are current until the commit).
    _serialized = True

    def __init__(self, key: StorageKey, fresh: Freshness) -> None:
        self._key = key
        self._fresh = fresh
        self._pending: dict[tuple[str, str], bytes | None] = {}
        self._raw_seen: dict[tuple[str, str], bytes | None] = {}
        self._claimed: set[tuple[str, str]] = set()
        self._done: tuple[int, int] | None = None
        self._force: tuple[int, int, int] | None = None
        self._skip_seen = {}
        #: Sealed bytes this transaction wrote at its commit (records and epoch).
        self.bytes_written = 0

    # -- raw operations (backend) ------------------------------------------------------

    def _get(self, kind: str, record_id: str) -> bytes | None:
        raise NotImplementedError

    def _put(self, kind: str, record_id: str, value: bytes) -> None:
        raise NotImplementedError

    def _delete(self, kind: str, record_id: str) -> None:
        raise NotImplementedError

    def _scan(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Rows of ``kind`` whose id starts with ``prefix``, sorted by id (code points)."""
        raise NotImplementedError

    def _lock(self, kind: str, record_id: str) -> None:
        """Hold (kind, id) exclusively until the transaction ends, even if no row exists."""
        raise NotImplementedError

    def _insert_new(self, kind: str, record_id: str, value: bytes) -> bool:
        """Insert the row only if (kind, id) has none, atomically: False if a row exists or
        another open transaction is inserting it and then commits (the caller waits for it).
        Of concurrent transactions claiming one id, exactly one gets True."""
        raise NotImplementedError

    def _lock_epoch(self) -> None:
        """Hold the epoch record until the transaction ends (taken at commit, last)."""
        raise NotImplementedError

    def _headers(self) -> list[tuple[str, str, bytes]]:
        """(kind, id, first 25 bytes of the value) of every row but meta/kdf and meta/epoch."""
        raise NotImplementedError

    # -- sealed records ------------------------------------------------------------------

    def _read_v(self, kind: str, record_id: str) -> tuple[int | None, bytes | None]:
        """(version, plaintext) of a record, (None, value) for one written in this
        transaction, (None, None) if there is none; :class:`RollbackDetected` if the row is
        older than what this store object saw of it."""
        key = (kind, record_id)
        if key in self._pending:
            return None, self._pending[key]
        raw = self._get(kind, record_id)
        self._raw_seen[key] = raw
        if raw is None:
            self._fresh.check(kind, record_id, None, self._epoch_now)
            return None, None
        version, plain = self._key.open_versioned(kind, record_id, raw)
        self._fresh.check(kind, record_id, version, self._epoch_now)
        self._fresh.note(kind, record_id, version, True)
        return version, plain

    def _epoch_now(self) -> int:
        return self._fresh.parse_epoch(self._get(*EPOCH_RECORD))[0]

    def _read(self, kind: str, record_id: str) -> bytes | None:
        return self._read_v(kind, record_id)[1]

    def _write(self, kind: str, record_id: str, plaintext: bytes) -> None:
        self._pending[(kind, record_id)] = bytes(plaintext)

    def _remove(self, kind: str, record_id: str) -> None:
        self._pending[(kind, record_id)] = None

    def _claim(self, kind: str, record_id: str, plaintext: bytes) -> bool:
        """Create a record that must not exist yet, atomically across workers (the replay
        guard): False if it exists or a concurrent transaction created it first."""
        if self._read(kind, record_id) is not None:
            return False
        if not self._insert_new(kind, record_id, b"\x00"):  # sealed at commit
            return False
        self._claimed.add((kind, record_id))
        self._write(kind, record_id, plaintext)
        return True

    def _ids(self, kind: str, prefix: str = "") -> list[str]:
        found = {i: raw for i, raw in self._scan(kind, prefix)}
        return sorted(overlay(found, self._pending, kind, prefix))

    def _read_all(self, kind: str, prefix: str = "") -> list[tuple[str, bytes]]:
        out: dict[str, bytes] = {}
        for i, raw in self._scan(kind, prefix):
            version, plain = self._key.open_versioned(kind, i, raw)
            self._fresh.check(kind, i, version, self._epoch_now)
            out[i] = plain
        return sorted(overlay(out, self._pending, kind, prefix).items())

    # -- commit ------------------------------------------------------------------------

    def _prepare_commit(self) -> None:
        """Seal the buffered writes at version epoch + 1 and write the new sealed epoch,
        under the epoch lock; nothing if the transaction wrote nothing."""
        if not self._pending and self._force is None:
            return
        self._lock_epoch()
        fresh, key = self._fresh, self._key
        epoch, restored, acc = fresh.parse_epoch(self._get(*EPOCH_RECORD))
        kept = None if self._force is not None else fresh.kept()
        if kept is not None and epoch < kept:
            raise RollbackDetected("the store's epoch is behind the one kept outside", "epoch")
        if self._force is not None:  # accept the rows as they are (open_checks)
            epoch, restored, acc = self._force
        version = epoch + 1
        for (kind, rid), plain in self._pending.items():
            if (kind, rid) in self._claimed:
                old: bytes | None = None
            elif self._serialized and (kind, rid) in self._raw_seen:
                old = self._raw_seen[(kind, rid)]
            else:
                old = self._get(kind, rid)
            if old is not None:
                acc ^= key.accumulator_entry(kind, rid, *record_header(kind, rid, old))
            if plain is None:
                if old is not None or (kind, rid) in self._claimed:
                    self._delete(kind, rid)
                continue
            sealed = key.seal(kind, rid, plain, version)
            acc ^= key.accumulator_entry(kind, rid, *record_header(kind, rid, sealed))
            self._put(kind, rid, sealed)
            self.bytes_written += len(sealed)
        epoch_row = fresh.seal_epoch(version, restored, acc)
        self._put(*EPOCH_RECORD, epoch_row)
        self.bytes_written += len(epoch_row)
        self._done = (version, restored)

    def _committed(self) -> None:
        """After COMMIT: remember the written versions and advance the epoch keeper."""
        if self._done is None:
            return
        version, restored = self._done
        for (kind, rid), plain in self._pending.items():
            self._fresh.note(kind, rid, version, plain is not None, version)
        self._fresh.committed(version, restored)

    def _next_id(self) -> int:
        self._lock("meta", "next_id")  # two processes on one store never take the same id
        raw = self._read("meta", "next_id")
        if raw is None:
            value = 1
        elif len(raw) != 8:
            raise StoreError("malformed record", "meta/next_id")
        else:
            value = _U64.unpack(raw)[0]
        if value >= _MAX_ID:
            raise StoreError("prekey ids exhausted", "meta/next_id")
        self._write("meta", "next_id", _U64.pack(value + 1))
        return value

    # -- identity ------------------------------------------------------------------------

    def get_local_identity(self) -> KeyPair | None:
        raw = self._read("local", "identity")
        if raw is None:
            return None
        if len(raw) != 64:
            raise StoreError("malformed record", "local/identity")
        return KeyPair.from_stored(raw[:32], raw[32:])

    def local_identity(self) -> KeyPair:
        pair = self.get_local_identity()
        if pair is None:
            raise StoreError("no local identity", "local/identity")
        return pair

    def set_local_identity(self, pair: KeyPair) -> None:
        self._write("local", "identity", pair.private_bytes() + pair.public)

    def _identity(self, addr: Address) -> tuple[int, bytes] | None:
        raw = self._read("identity", addr.record_id)
        if raw is None:
            return None
        if len(raw) != 33 or raw[0] & ~_APPROVED:
            raise StoreError("malformed record", f"identity/{addr.record_id}")
        return raw[0], raw[1:]

    def get_identity(self, addr: Address) -> bytes | None:
        found = self._identity(addr)
        return None if found is None else found[1]

    def save_identity(self, addr: Address, key: bytes) -> TrustResult:
        key = _check_key32(key, "identity key")
        found = self._identity(addr)
        if found is None:
            self._write("identity", addr.record_id, bytes([_APPROVED]) + key)
            return TrustResult.NEW
        if hmac.compare_digest(found[1], key):
            return TrustResult.UNCHANGED
        self._write("identity", addr.record_id, bytes([0]) + key)
        return TrustResult.REPLACED

    def approve_identity(self, addr: Address, key: bytes) -> None:
        self._write("identity", addr.record_id, bytes([_APPROVED]) + _check_key32(key, "key"))

    def is_trusted(self, addr: Address, key: bytes, direction: Direction) -> bool:
        key = _check_key32(key, "identity key")
        found = self._identity(addr)
        if found is None:
            return True
        if not hmac.compare_digest(found[1], key):
            return False
        return direction is Direction.RECEIVING or bool(found[0] & _APPROVED)

    # -- one-time prekeys ------------------------------------------------------------------

    def add_one_time_prekey(self, pair: KeyPair) -> OneTimePrekey:
        pid = self._next_id()
        self._write("opk", str(pid), b"\x00" + pair.private_bytes() + pair.public)
        return OneTimePrekey(pid, pair)

    def _opk(self, rid: str, raw: bytes) -> OneTimePrekey | None:
        if raw == b"\x01":
            return None
        if len(raw) != 65 or raw[0] != 0:
            raise StoreError("malformed record", f"opk/{rid}")
        return OneTimePrekey(int(rid), KeyPair.from_stored(raw[1:33], raw[33:]))

    def _prekey_record(self, kind: str, rid: str, what: str) -> bytes:
        """The stored record ``kind/rid`` of a prekey; :class:`UnknownPrekey` if there is none."""
        raw = self._read(kind, rid)
        if raw is None:
            raise UnknownPrekey(f"unknown {what} id")
        return raw

    def _remove_prekey(self, kind: str, uses: str, prekey_id: int) -> None:
        """Remove prekey ``prekey_id`` of ``kind`` and its records of the base keys it was
        used with (``uses``)."""
        rid = _prekey_id(prekey_id)
        self._remove(kind, rid)
        for use in self._ids(uses, rid + "|"):
            self._remove(uses, use)

    def load_one_time_prekey(self, prekey_id: int) -> OneTimePrekey:
        rid = _prekey_id(prekey_id)
        opk = self._opk(rid, self._prekey_record("opk", rid, "one-time prekey"))
        if opk is None:
            raise PrekeyReused("one-time prekey already used")
        return opk

    def mark_one_time_prekey_used(self, prekey_id: int) -> None:
        self.load_one_time_prekey(prekey_id)
        self._write("opk", _prekey_id(prekey_id), b"\x01")

    def one_time_prekeys(self) -> list[OneTimePrekey]:
        found = (self._opk(rid, raw) for rid, raw in self._read_all("opk"))
        return sorted((p for p in found if p is not None), key=lambda p: p.id)

    # -- signed prekeys --------------------------------------------------------------------

    def add_signed_prekey(
        self, pair: KeyPair, signature: bytes, created: int
    ) -> Dated[SignedPrekey]:
        if type(signature) is not bytes or len(signature) != 64:
            raise StoreError("a prekey signature is 64 bytes")
        _check_time(created)
        pid = self._next_id()
        self._write(
            "spk",
            str(pid),
            _U64.pack(created) + pair.private_bytes() + pair.public + signature,
        )
        return Dated(SignedPrekey(pid, pair, signature), created)

    def _spk(self, rid: str, raw: bytes) -> Dated[SignedPrekey]:
        if len(raw) != 8 + 32 + 32 + 64:
            raise StoreError("malformed record", f"spk/{rid}")
        pair = KeyPair.from_stored(raw[8:40], raw[40:72])
        return Dated(SignedPrekey(int(rid), pair, raw[72:]), _U64.unpack(raw[:8])[0])

    def load_signed_prekey(self, prekey_id: int) -> Dated[SignedPrekey]:
        rid = _prekey_id(prekey_id)
        return self._spk(rid, self._prekey_record("spk", rid, "signed prekey"))

    def signed_prekeys(self) -> list[Dated[SignedPrekey]]:
        return sorted(
            (self._spk(rid, raw) for rid, raw in self._read_all("spk")), key=lambda d: d.item.id
        )

    def remove_signed_prekey(self, prekey_id: int) -> None:
        self._remove_prekey("spk", "spkuse", prekey_id)

    # -- KEM prekeys -----------------------------------------------------------------------

    def add_kem_prekey(
        self, pair: KemKeyPair, signature: bytes, last_resort: bool, created: int
    ) -> Dated[KemPrekey]:
        if type(signature) is not bytes or len(signature) != 64:
            raise StoreError("a prekey signature is 64 bytes")
        _check_time(created)
        pid = self._next_id()
        flags = _LAST_RESORT if last_resort else 0
        self._write("kem", str(pid), bytes([flags]) + _U64.pack(created) + pair.seed() + signature)
        return Dated(KemPrekey(pid, pair, signature, last_resort), created)

    def _kem(self, rid: str, raw: bytes) -> Dated[KemPrekey] | None:
        if raw == bytes([_USED]):
            return None
        if len(raw) != 1 + 8 + 64 + 64 or raw[0] & ~_LAST_RESORT:
            raise StoreError("malformed record", f"kem/{rid}")
        try:
            pair = KemKeyPair.from_seed(raw[9:73])
        except E2EError:
            raise StoreError("malformed record", f"kem/{rid}") from None
        prekey = KemPrekey(int(rid), pair, raw[73:], bool(raw[0] & _LAST_RESORT))
        return Dated(prekey, _U64.unpack(raw[1:9])[0])

    def load_kem_prekey(self, prekey_id: int, base_key: bytes | None = None) -> Dated[KemPrekey]:
        """The KEM prekey ``prekey_id``; with ``base_key``, :class:`PrekeyReused` if it was
        already used (one-time) or already used with that base key (last resort)."""
        rid = _prekey_id(prekey_id)
        if base_key is not None:
            _check_key32(base_key, "base key")
        found = self._kem(rid, self._prekey_record("kem", rid, "KEM prekey"))
        if found is None:
            raise PrekeyReused("KEM prekey already used")
        if (
            base_key is not None
            and found.item.last_resort
            and self._read("kemuse", f"{rid}|{base_key.hex()}") is not None
        ):
            raise PrekeyReused("KEM prekey already used")
        return found

    def mark_kem_prekey_used(self, prekey_id: int, base_key: bytes) -> None:
        rid = _prekey_id(prekey_id)
        found = self.load_kem_prekey(prekey_id, base_key)
        if found.item.last_resort:
            self._write("kemuse", f"{rid}|{base_key.hex()}", b"")
        else:
            self._write("kem", rid, bytes([_USED]))

    def kem_prekeys(self) -> list[Dated[KemPrekey]]:
        found = (self._kem(rid, raw) for rid, raw in self._read_all("kem"))
        return sorted((k for k in found if k is not None), key=lambda d: d.item.id)

    def remove_kem_prekey(self, prekey_id: int) -> None:
        self._remove_prekey("kem", "kemuse", prekey_id)

    # -- application data ------------------------------------------------------------------

    @staticmethod
    def _app_key(key: object) -> str:
        if type(key) is not str or not key or len(key.encode(errors="replace")) > _MAX_APP_KEY:
            raise StoreError("application key must be a non-empty str of at most 1 KiB")
        if "\x00" in key:
            raise StoreError("application key contains NUL")
        return key

    def app_get(self, key: str) -> bytes | None:
        return self._read("app", self._app_key(key))

    def app_get_fresh(self, key: str) -> tuple[bytes | None, bool]:
        version, value = self._read_v("app", self._app_key(key))
        return value, not self._restored(version)

    def app_put(self, key: str, value: bytes) -> None:
        if type(value) is not bytes:
            raise StoreError("application value must be bytes")
        self._write("app", self._app_key(key), value)

    def app_delete(self, key: str) -> None:
        self._remove("app", self._app_key(key))

    def app_keys(self, prefix: str = "") -> list[str]:
        return self._ids("app", prefix)

    def app_lock(self, key: str) -> None:
        self._lock("app", self._app_key(key))

    # -- session operations ------------------------------------------------------------------

    def encrypt(self, addr: Address, plaintext: bytes) -> bytes:
        """Encrypt with the current session and save it, in this transaction."""
        session = self.load_session(addr)
        if session is None:
            raise StoreError("no session", f"session/{addr.record_id}")
        if not self.is_trusted(addr, session.remote_identity, Direction.SENDING):
            raise UntrustedIdentity("the peer's identity key changed: approve it first")
        frame = session.encrypt(plaintext)
        self.save_session(addr, session)
        return frame

    def decrypt(
        self,
        addr: Address,
        frame: bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
        accept_replaced_identity: bool = True,
    ) -> bytes:
        """Decrypt with the current session, else an archived one (which then becomes current,
        unless it belongs to another identity key than the current one: a late message of the
        peer's previous install), else -- for a prekey message of a new session -- set one up
        with the stored prekeys. On any error nothing is written."""
        parsed = decode_message(frame)
        rid = addr.record_id
        self._lock("session", rid)
        current = self._current(rid)
        error: E2EError | None = None
        if current is not None:
            try:
                plaintext = current.decrypt(frame)
            except DuplicateMessage:
                raise
            except (DecryptError, StateError) as exc:
                error = exc
            else:
                self.save_session(addr, current)
                return plaintext
        # a failed decrypt changed nothing: this is the stored state, skipped keys included
        current_raw = None if current is None else current.to_bytes()
        archive = self._archive(addr)
        name = f"archive/{rid}"
        for i, state in enumerate(archive):
            old = self._session(name, state)
            try:
                plaintext = old.decrypt(frame)
            except DuplicateMessage as exc:
                error = exc  # the most telling answer: this message was already read
                continue
            except (DecryptError, StateError):
                continue
            if current is not None and not hmac.compare_digest(
                current.remote_identity, old.remote_identity
            ):
                # a late message of the peer's previous install: keep the current session
                self._set_archive(addr, archive[:i] + [old.to_bytes()] + archive[i + 1 :])
                return plaintext
            rest = archive[:i] + archive[i + 1 :]
            self._set_archive(addr, ([current_raw] if current_raw else []) + rest)
            self.save_session(addr, old)  # simultaneous initiation: the peer uses this one
            return plaintext
        pre = parsed.prekey
        if pre is None:
            raise error or DecryptError("no session with this address")
        if any(
            hmac.compare_digest(self._session(name, s).base_key, pre.base_key)
            for s in ([current_raw] if current_raw else []) + archive
        ):
            raise error or DecryptError("message of a known session does not decrypt")
        use = f"{pre.spk_id}|{pre.base_key.hex()}"
        # the replay guard claims its row atomically: of two workers handling one initial
        # message, one inserts the row and the other waits for its commit and is refused
        if not self._claim("spkuse", use, b""):
            raise PrekeyReused("a session was already set up with this base key")
        try:
            trusted = self.is_trusted(addr, pre.identity_key, Direction.RECEIVING)
            if not trusted and not accept_replaced_identity:
                raise UntrustedIdentity("the peer's identity key changed")
            session, plaintext = Session.respond(
                self.local_identity(), StorePrekeys(self), frame, allowed_suites=allowed_suites
            )
            self.save_identity(addr, session.remote_identity)
            self.promote_session(addr, session)
        except BaseException:
            self._remove("spkuse", use)  # a refused message leaves no claim behind
            raise
        return plaintext

    def initiate(
        self,
        addr: Address,
        bundle: PrekeyBundle | bytes,
        *,
        allowed_suites: Collection[Suite] = (DEFAULT,),
    ) -> Session:
        """Start a session with ``addr`` from its bundle; it becomes the current session."""
        if not isinstance(bundle, PrekeyBundle):
            bundle = PrekeyBundle.from_bytes(bundle)
        if not self.is_trusted(addr, bundle.identity_key, Direction.SENDING):
            raise UntrustedIdentity("the peer's identity key changed: approve it first")
        session = Session.initiate(self.local_identity(), bundle, allowed_suites=allowed_suites)
        self.promote_session(addr, session)  # checks the current record before any write
        self.save_identity(addr, session.remote_identity)
        return session


class StorePrekeys:
    """A :class:`~e2e.prekeys.PrekeySource` over a store transaction, for ``Session.respond``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: StoreTransaction) -> None:
        self._tx = tx

    def signed_prekey(self, spk_id: int) -> KeyPair:
        return self._tx.load_signed_prekey(spk_id).item.pair

    def one_time_prekey(self, opk_id: int) -> KeyPair:
        return self._tx.load_one_time_prekey(opk_id).pair

    def kem_prekey(self, kem_id: int, base_key: bytes) -> KemKeyPair:
        return self._tx.load_kem_prekey(kem_id, base_key).item.pair

    def mark_used(self, opk_id: int | None, kem_id: int | None, base_key: bytes) -> None:
        if opk_id is not None:
            self._tx.mark_one_time_prekey_used(opk_id)
        if kem_id is not None:
            self._tx.mark_kem_prekey_used(kem_id, base_key)


def open_checks(tx: BaseTransaction, *, accept_restore: bool = False) -> None:
    """Run when a store object opens: verify the storage key, then the sealed epoch against
    the epoch keeper and against every row (SPEC.md §9.7). :class:`RollbackDetected` if the
    database is behind its keeper, or a record was rolled back, deleted or added behind the
    store's back. With ``accept_restore`` (a restore the application made on purpose), or
    when the keeper cannot answer, the rows are accepted as they are and every session
    stored so far is marked restored; the epoch moves past everything seen."""
    check_key(tx)
    fresh = tx._fresh
    tx._lock_epoch()  # no commit between reading the epoch and the rows (PostgreSQL)
    epoch, restored, acc = fresh.parse_epoch(tx._get(*EPOCH_RECORD))
    try:
        kept = fresh.keeper.load()
        unavailable = False
    except StoreError:
        kept, unavailable = None, True
    computed = 0
    newest = 0
    entry = tx._key.accumulator_entry
    for kind, rid, head in tx._headers():
        version, salt = record_header(kind, rid, head)
        newest = max(newest, version)
        computed ^= entry(kind, rid, version, salt)
    problem = ""
    if kept is not None and epoch < kept:
        problem = "the store's epoch is behind the one kept outside: the database was restored"
    elif not hmac.compare_digest(computed.to_bytes(32, "big"), acc.to_bytes(32, "big")):
        problem = "stored records differ from the sealed set: a record was put back or deleted"
    elif newest > epoch:
        problem = "a record is newer than the store's epoch"
    if problem and not accept_restore:
        raise RollbackDetected(problem, "meta/epoch")
    fresh.seen = epoch
    fresh.restored_at = restored
    if problem or (unavailable and epoch > 0):
        top = max(epoch, kept or 0, newest)
        tx._force = (top, top, computed)


def check_key(tx: BaseTransaction) -> None:
    """Create the key-check record, or verify it: a wrong key raises :class:`StoreError`."""
    found = tx._get("meta", "keycheck")
    if found is None:
        tx._write("meta", "keycheck", KEYCHECK)
        return
    try:
        value = tx._read("meta", "keycheck")
    except StoreError:
        raise StoreError("wrong storage key or passphrase", "meta/keycheck") from None
    if value is None or not hmac.compare_digest(value, KEYCHECK):
        raise StoreError("wrong storage key or passphrase", "meta/keycheck")


class DatabaseStore:
    """What the database backends share: opening (schema, storage key, the open checks)
    and one transaction at a time per store object. A backend sets ``keeper`` and a
    connection, then calls :meth:`_open`; it supplies ``_setup``, ``_kdf_params``,
    ``_locked_begin`` and ``close``."""

    keeper: EpochKeeper
    _key: StorageKey
    _fresh: Freshness

    def __init__(self) -> None:
        self._owner: int | None = None
        self._mutex = threading.Lock()

    def _open(
        self,
        key: StorageKey | bytes | None,
        passphrase: str | bytes | None,
        scrypt_n: int,
        accept_restore: bool,
    ) -> None:
        """Create the schema, resolve the storage key and run :func:`open_checks`; closes
        the store if any of it fails."""
        try:
            self._setup()
            self._key = StorageKey.resolve(key, passphrase, lambda: self._kdf_params(scrypt_n))
            self._fresh = Freshness(self._key, self.keeper)
            with self._begin() as tx:
                open_checks(tx, accept_restore=accept_restore)
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        raise NotImplementedError

    def _kdf_params(self, scrypt_n: int) -> KdfParams:
        raise NotImplementedError

    def _locked_begin(self) -> Iterator[BaseTransaction]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def _begin(self) -> Iterator[BaseTransaction]:
        if self._owner == threading.get_ident():
            raise StoreError("nested transaction")
        with self._mutex:
            yield from self._locked_begin()

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """Open a transaction: it commits when the block exits, and rolls back if it raises."""
        return self._begin()
