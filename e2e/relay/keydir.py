"""The relay's key directory and business certificates (SPEC.md §13.2-§13.4): the key log
(one entry appended in the same transaction as each account or device change), its signed
heads, proofs and entries, and the platform certificates it stores and serves.

A mixin of :class:`~e2e.relay.service.RelayService`; its handlers run in the request's
transaction like every other.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable

from e2e.errors import (
    CertificateError,
    DecodeError,
    Forbidden,
)
from e2e.platform.certificates import BusinessCertificate
from e2e.platform.merkle import TreeHead
from e2e.platform.transparency import KeyLog
from e2e.platform.wire import (
    MAX_LOG_ENTRIES,
    BusinessCert,
    BusinessCertQuery,
    LogConsistency,
    LogConsistencyQuery,
    LogEntries,
    LogEntriesQuery,
    LogEntry,
    LogHead,
    LogLookup,
    LogOpen,
)
from e2e.relay.secrets import SecretSealer
from e2e.relay.store import (
    BUSINESS,
    Caller,
    RelayStore,
    Tx,
    account_of,
)

__all__ = ["KeyDirectory"]


class KeyDirectory:
    """The key log's handlers (:class:`~e2e.platform.transparency.KeyLog`, cached in memory,
    caught up with the store at each request) and the business certificates'."""

    store: RelayStore
    clock: Callable[[], int]
    _sealer: SecretSealer
    _log: KeyLog
    _log_lock: threading.Lock

    # -- key directory (SPEC §13.4) ------------------------------------------------------

    def _log_secret(self, given: bytes | None, slot: int = 1, kind: bytes = b"log") -> bytes:
        """A key of the key directory (slot 1: the log key; 2: the VRF key, SPEC §13.5):
        ``given``, else the stored one, else a new one (stored, sealed as ``kind``)."""
        if given is not None:
            return given

        def step(tx: Tx) -> bytes:
            stored = tx.log_secret(slot)
            if stored is None:
                secret = os.urandom(32)
                tx.set_log_secret(self._sealer.seal(kind, slot, secret), slot)
                stored = tx.log_secret(slot)
            assert stored is not None  # noqa: S101 - just written in this transaction
            secret = self._sealer.open(kind, slot, stored)
            if self._sealer.sealing and not self._sealer.is_sealed(stored):
                tx.replace_log_secret(self._sealer.seal(kind, slot, secret), slot)
            return secret

        return self.store.run(step)

    @property
    def log_public_key(self) -> bytes:
        """The Ed25519 key clients pin to check tree heads."""
        return self._log.signer.public

    def _log_account(self, tx: Tx, name: bytes, identity: bytes) -> None:
        """Append the account's current key and signed device list to the key log (same
        tx)."""
        version = tx.log_version(name) + 1
        record = self._log.record(name, version, identity, tx.device_list(name) or b"",
                                  os.urandom(32))  # fmt: skip
        tx.append_log(name, version, record)

    def _synced_log(self, tx: Tx) -> tuple[KeyLog, int]:
        """The cached log, caught up with this transaction's view, and that view's size.
        Call with ``_log_lock`` held; only committed entries ever reach the cache."""
        size = tx.log_size()
        have = len(self._log.records)
        if have < size:
            self._log.extend(tx.log_entries(have, size))
        return self._log, size

    def log_head(self, tx: Tx, caller: Caller, req: object = None) -> LogHead:
        with self._log_lock:
            log, size = self._synced_log(tx)
            head = log.signer.sign(TreeHead(size, log.tree.root(size), self.clock()))
            vouched = log.vrf_statement()
        return LogHead(head.to_bytes(), self.log_public_key, log.vrf.public, vouched)

    def log_lookup(self, tx: Tx, caller: Caller, req: LogLookup) -> LogEntry:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 < req.size <= size:
                raise DecodeError("tree size beyond the log")
            raw, proof = log.lookup(req.account, req.size)
        return LogEntry(raw, proof.to_bytes())

    def log_consistency(self, tx: Tx, caller: Caller, req: LogConsistencyQuery) -> LogConsistency:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 < req.size1 <= req.size2 <= size:
                raise DecodeError("consistency proof needs 0 < size1 <= size2 <= log size")
            proof = log.consistency(req.size1, req.size2)
        return LogConsistency(proof.to_bytes())

    def log_entries(self, tx: Tx, caller: Caller, req: LogEntriesQuery) -> LogEntries:
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 <= req.start <= req.size <= size:
                raise DecodeError("entries outside the log")
            end = min(req.size, req.start + MAX_LOG_ENTRIES)
            got = log.leaves_since(req.start, req.size, end)
        return LogEntries(tuple(r for r, _ in got), tuple(p.to_bytes() for _, p in got))

    def log_open(self, tx: Tx, caller: Caller, req: LogOpen) -> LogEntry:
        """The opening record of a leaf of the caller's own account (its monitor); any
        other account's is :class:`~e2e.errors.Forbidden`, so the log cannot be read out
        (SPEC §13.5)."""
        with self._log_lock:
            log, size = self._synced_log(tx)
            if not 0 <= req.index < req.size <= size:
                raise DecodeError("leaf outside the log")
            account, raw, proof = log.open(req.index, req.size)
        if account != caller[0]:
            raise Forbidden("a leaf of another account")
        return LogEntry(raw, proof.to_bytes())

    # -- verified businesses (SPEC §13.3) ----------------------------------------------------

    def business_certificate(self, tx: Tx, caller: Caller, req: BusinessCertQuery) -> BusinessCert:
        """The stored platform certificate of a business (empty: none). The relay does not
        vouch for it: clients verify it under the platform key they pin."""
        account_of(tx, req.account)
        return BusinessCert(tx.business_certificate(req.account) or b"")

    def store_business_certificate(self, raw: bytes) -> BusinessCertificate:
        """Store a platform certificate of a business (the operator's ``certify-business``).
        It must name a business account of this relay and that account's current key
        (:class:`~e2e.errors.CertificateError` otherwise); its signature is the client's
        to check."""
        cert = BusinessCertificate.from_bytes(raw)

        def step(tx: Tx) -> None:
            acct = account_of(tx, cert.account)
            if acct.kind != BUSINESS:
                raise CertificateError("only a business account is certified")
            if not hmac.compare_digest(acct.identity, cert.identity):
                raise CertificateError("certificate of another account key")
            tx.put_business_certificate(cert.account, raw)

        self.store.run(step)
        return cert
